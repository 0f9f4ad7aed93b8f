//! Following a sandbox file through the master's files proxy
//! (`/api/v1/tasks/{fw}/{task}/files/read`) by offset, as `tail -f` does:
//! the one loop behind `mezzo logs [-f]` and `mezzo run`'s streaming.

use std::time::Duration;

use mezzo_agent::files::{Chunk, MAX_READ};
use tokio::sync::watch;

use super::{ApiError, Client, seg, with_query};

/// When a follow ends.
#[derive(Debug)]
pub enum Until {
    /// Once it has read what the file holds now (`mezzo logs`).
    CaughtUp,
    /// Never (`mezzo logs -f`).
    Never,
    /// Once it has read what the file holds after the value turns true
    /// (`mezzo run`: the task has ended, drain what it wrote).
    Finished(watch::Receiver<bool>),
}

impl Until {
    fn now(&self) -> bool {
        match self {
            Until::CaughtUp => true,
            Until::Never => false,
            Until::Finished(rx) => *rx.borrow(),
        }
    }

    /// Waits `every`, or less if the end is signalled meanwhile (a read
    /// then follows at once, to drain).
    async fn pause(&mut self, every: Duration) {
        if let Until::Finished(rx) = self {
            let ended = *rx.borrow();
            if !ended {
                let _ = tokio::time::timeout(every, rx.changed()).await;
            }
            return;
        }
        tokio::time::sleep(every).await;
    }
}

/// One file of one task's sandbox and how far it has been read. Kept
/// across calls to [`Follow::run`], so a follow that failed (a master
/// failover, an agent briefly away) resumes where it was.
#[derive(Debug, Clone)]
pub struct Follow {
    base: String,
    file: String,
    /// The next byte to read; `None` before the first read.
    offset: Option<u64>,
    /// Start with the last N bytes instead of the whole file.
    tail: Option<u64>,
    /// Time between reads once caught up.
    every: Duration,
}

impl Follow {
    pub fn new(framework: &str, task: &str, file: &str) -> Follow {
        Follow {
            base: format!("/api/v1/tasks/{}/{}/files/read", seg(framework), seg(task)),
            file: file.to_owned(),
            offset: None,
            tail: None,
            every: Duration::from_millis(500),
        }
    }

    pub fn tail(mut self, tail: Option<u64>) -> Follow {
        self.tail = tail;
        self
    }

    pub fn every(mut self, every: Duration) -> Follow {
        self.every = every;
        self
    }

    /// The next read's path and query.
    fn next_read(&self, file: &str, offset: Option<u64>) -> String {
        let q = match (offset, self.tail) {
            (None, Some(t)) => vec![("path", Some(file.to_owned())), ("tail", Some(t.to_string()))],
            (o, _) => vec![
                ("path", Some(file.to_owned())),
                ("offset", Some(o.unwrap_or(0).to_string())),
                ("length", Some(MAX_READ.to_string())),
            ],
        };
        with_query(&self.base, &q)
    }

    /// Reads the file from where it was left, handing each chunk to
    /// `sink`, until `until` says so. The agent rotates stdout and stderr by
    /// copying them to `<file>.1` and truncating: a file shorter than what
    /// was read was rotated, so the rest of the old one is read from
    /// `<file>.1` (if it is there) and the file again from its start.
    pub async fn run(
        &mut self,
        client: &Client,
        until: &mut Until,
        mut sink: impl FnMut(&Chunk),
    ) -> Result<(), ApiError> {
        loop {
            // Decided before the read: a read that starts after the end
            // was signalled sees everything written before it.
            let last = until.now();
            let chunk: Chunk = client.get_as(&self.next_read(&self.file, self.offset)).await?;
            if let Some(at) = self.offset
                && chunk.size < at
            {
                self.rotated(client, at, &mut sink).await;
                self.offset = Some(0);
                continue;
            }
            sink(&chunk);
            let next = chunk.offset + chunk.length;
            self.offset = Some(next);
            if chunk.length > 0 && next < chunk.size {
                continue; // more is there already
            }
            if last {
                return Ok(());
            }
            until.pause(self.every).await;
        }
    }

    /// What was appended to the file after `at` before it was rotated.
    async fn rotated(&self, client: &Client, mut at: u64, sink: &mut impl FnMut(&Chunk)) {
        let old = format!("{}.1", self.file);
        while let Ok(chunk) = client.get_as::<Chunk>(&self.next_read(&old, Some(at))).await {
            if chunk.length == 0 || chunk.offset != at {
                return;
            }
            sink(&chunk);
            at += chunk.length;
        }
    }
}
