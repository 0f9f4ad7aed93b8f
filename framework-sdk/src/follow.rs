//! Following a file of a task's sandbox through the masters, as `tail -f`
//! does: read by offset, hand each part over, wait, read again; a file that
//! shrank was rotated (the agent copies `stdout` and `stderr` to `.1` and
//! truncates them), so the rest of the old one is read from `<file>.1`
//! first. The loop behind `mezzo logs [-f]` and `mezzo run`'s streaming,
//! for any framework that shows its tasks' output.

use std::time::Duration;

use tokio::sync::watch;

pub use crate::master_http::MAX_READ;
use crate::master_http::{SandboxChunk, SandboxRead, sandbox_read_path};
use crate::{MasterHttp, SdkError};

/// When a follow ends.
#[derive(Debug)]
pub enum Until {
    /// Once it has read what the file holds now.
    CaughtUp,
    /// Never.
    Never,
    /// Once it has read what the file holds after the value turns true
    /// (the task has ended: drain what it wrote).
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
            if !*rx.borrow() {
                let _ = tokio::time::timeout(every, rx.changed()).await;
            }
            return;
        }
        tokio::time::sleep(every).await;
    }
}

/// One file of one task's sandbox and how far it has been read. Kept
/// across calls to [`SandboxFollow::run`], so a follow that failed (a
/// master failover, an agent briefly away) resumes where it was.
#[derive(Debug, Clone)]
pub struct SandboxFollow {
    framework_id: String,
    task_id: String,
    file: String,
    /// The next byte to read; `None` before the first read.
    offset: Option<u64>,
    /// Start with the last N bytes instead of the whole file.
    tail: Option<u64>,
    /// Time between reads once caught up.
    every: Duration,
}

impl SandboxFollow {
    /// Follows `file` (e.g. `stdout`) of a task, from its start, reading
    /// every 500 ms once caught up.
    pub fn new(framework_id: &str, task_id: &str, file: &str) -> SandboxFollow {
        SandboxFollow {
            framework_id: framework_id.to_owned(),
            task_id: task_id.to_owned(),
            file: file.to_owned(),
            offset: None,
            tail: None,
            every: Duration::from_millis(500),
        }
    }

    /// Starts with the last `tail` bytes instead of the whole file.
    pub fn tail(mut self, tail: Option<u64>) -> SandboxFollow {
        self.tail = tail;
        self
    }

    /// Time between reads once caught up.
    pub fn every(mut self, every: Duration) -> SandboxFollow {
        self.every = every;
        self
    }

    /// The path and query of the next read of `file` (the followed one or
    /// its rotated copy) at `offset`.
    pub fn read_path(&self, file: &str, offset: Option<u64>) -> String {
        let read = match (offset, self.tail) {
            (None, Some(t)) => SandboxRead::Tail(t),
            (o, _) => SandboxRead::From {
                offset: o.unwrap_or(0),
                length: MAX_READ,
            },
        };
        sandbox_read_path(&self.framework_id, &self.task_id, file, read)
    }

    /// Reads through the masters' HTTP API until `until` says so, handing
    /// each part to `sink`.
    pub async fn run(
        &mut self,
        http: &MasterHttp,
        until: &mut Until,
        sink: impl FnMut(&SandboxChunk),
    ) -> Result<(), SdkError> {
        self.run_with(
            |path| {
                let http = http.clone();
                async move { http.get_json::<SandboxChunk>(&path).await }
            },
            until,
            sink,
        )
        .await
    }

    /// As [`SandboxFollow::run`], with `read` fetching a path and query of
    /// the master's files route (for a client with its own errors).
    pub async fn run_with<E, F>(
        &mut self,
        mut read: impl FnMut(String) -> F,
        until: &mut Until,
        mut sink: impl FnMut(&SandboxChunk),
    ) -> Result<(), E>
    where
        F: std::future::Future<Output = Result<SandboxChunk, E>>,
    {
        loop {
            // Decided before the read: a read that starts after the end
            // was signalled sees everything written before it.
            let last = until.now();
            let chunk = read(self.read_path(&self.file, self.offset)).await?;
            if let Some(at) = self.offset
                && chunk.size < at
            {
                // Rotated: the rest of the old file, then this one anew.
                let old = format!("{}.1", self.file);
                let mut at = at;
                while let Ok(part) = read(self.read_path(&old, Some(at))).await {
                    if part.length == 0 || part.offset != at {
                        break;
                    }
                    sink(&part);
                    at += part.length;
                }
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
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use super::*;

    fn chunk(path: &str, offset: u64, data: &str, size: u64) -> SandboxChunk {
        SandboxChunk {
            path: path.into(),
            offset,
            length: data.len() as u64,
            size,
            data: data.into(),
        }
    }

    /// A rotated file is read to its end from `<file>.1`, then anew; the
    /// reads ask for the right paths, parts and offsets.
    #[tokio::test]
    async fn a_rotated_file_is_followed_without_a_gap() {
        let answers = RefCell::new(VecDeque::from([
            // More is there already (size 4): read on at once.
            ("path=stdout&offset=0", chunk("stdout", 0, "abc", 4)),
            // Rotated meanwhile: "stdout" now holds 2 bytes, "stdout.1" the old 6.
            ("path=stdout&offset=3", chunk("stdout", 3, "", 2)),
            ("path=stdout.1&offset=3", chunk("stdout.1", 3, "def", 6)),
            ("path=stdout.1&offset=6", chunk("stdout.1", 6, "", 6)),
            ("path=stdout&offset=0", chunk("stdout", 0, "gh", 2)),
        ]));
        let asked = RefCell::new(Vec::new());
        let read = |path: String| {
            let (want, answer) = answers.borrow_mut().pop_front().expect("no more reads expected");
            asked.borrow_mut().push((path.clone(), want));
            async move { Ok::<_, SdkError>(answer) }
        };
        let mut out = String::new();
        let mut f = SandboxFollow::new("f/1", "t 1", "stdout");
        f.run_with(read, &mut Until::CaughtUp, |c| out.push_str(&c.data))
            .await
            .expect("follow");
        assert_eq!(out, "abcdefgh");
        for (path, want) in asked.into_inner() {
            assert!(path.contains(want), "{path} lacks {want}");
            assert!(path.starts_with("/api/v1/tasks/f%2F1/t%201/files/read?"), "{path}");
        }
        assert!(answers.borrow().is_empty());
    }

    #[test]
    fn a_tail_comes_first_then_offsets() {
        let f = SandboxFollow::new("f", "t", "stderr").tail(Some(100));
        assert_eq!(
            f.read_path("stderr", None),
            "/api/v1/tasks/f/t/files/read?path=stderr&tail=100"
        );
        assert!(
            f.read_path("stderr", Some(7))
                .ends_with("path=stderr&offset=7&length=1048576")
        );
    }
}
