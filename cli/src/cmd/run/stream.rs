//! A running task's stdout and stderr, copied to ours as it writes them
//! (as `srun` and `docker run` do), through the master's files proxy.

use std::io::Write;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cmd::ops::follow::{Follow, Until};
use crate::cmd::ops::{ApiError, Client};

/// Time between reads while the task runs.
const EVERY: Duration = Duration::from_millis(200);
/// Reads that may fail in a row once the task has ended (its agent may
/// be gone with it) before the rest of its output is given up.
const TRIES_AFTER_END: u32 = 10;
/// Longest wait for the rest of the output after the task's end.
const DRAIN_LIMIT: Duration = Duration::from_secs(15);

/// The followers of one task's stdout and stderr.
#[derive(Debug)]
pub struct Stream {
    task: String,
    ended: watch::Sender<bool>,
    followers: Vec<JoinHandle<()>>,
}

impl Stream {
    /// Starts following `task`'s stdout and stderr.
    pub fn start(client: &Client, framework: &str, task: &str) -> Stream {
        let (ended, rx) = watch::channel(false);
        let followers = [Out::Stdout, Out::Stderr]
            .into_iter()
            .map(|out| {
                let follow = Follow::new(framework, task, out.file()).every(EVERY);
                tokio::spawn(copy(client.clone(), follow, rx.clone(), out))
            })
            .collect();
        Stream {
            task: task.to_owned(),
            ended,
            followers,
        }
    }

    pub fn task(&self) -> &str {
        &self.task
    }

    /// The task has ended: copies what it wrote since the last read and
    /// returns once both files are drained.
    pub async fn finish(mut self) {
        self.ended.send_replace(true);
        let followers = std::mem::take(&mut self.followers);
        let aborts: Vec<_> = followers.iter().map(JoinHandle::abort_handle).collect();
        let all = async {
            for f in followers {
                let _ = f.await;
            }
        };
        if tokio::time::timeout(DRAIN_LIMIT, all).await.is_err() {
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
            tracing::warn!(task = %self.task, "gave up on the rest of the task's output after {DRAIN_LIMIT:?}");
        }
    }
}

/// A run that ends otherwise (a timeout, an error) stops copying.
impl Drop for Stream {
    fn drop(&mut self) {
        self.followers.iter().for_each(JoinHandle::abort);
    }
}

/// Which of our outputs a sandbox file goes to.
#[derive(Debug, Clone, Copy)]
enum Out {
    Stdout,
    Stderr,
}

impl Out {
    fn file(self) -> &'static str {
        match self {
            Out::Stdout => "stdout",
            Out::Stderr => "stderr",
        }
    }

    fn write(self, data: &str) {
        let _ = match self {
            Out::Stdout => write_all(std::io::stdout().lock(), data),
            Out::Stderr => write_all(std::io::stderr().lock(), data),
        };
    }
}

fn write_all(mut w: impl Write, data: &str) -> std::io::Result<()> {
    w.write_all(data.as_bytes())?;
    w.flush()
}

/// Copies one file until the task has ended and the file is drained.
/// Reads that fail are retried where they left off (a master failover, or
/// the file not made yet); a refusal ends the copy.
async fn copy(client: Client, mut follow: Follow, ended: watch::Receiver<bool>, out: Out) {
    let mut failed_after_end = 0;
    let mut until = Until::Finished(ended.clone());
    loop {
        let e = match follow.run(&client, &mut until, |c| out.write(&c.data)).await {
            Ok(()) => return,
            Err(e) => e,
        };
        if let ApiError::Refused(_) | ApiError::Bad(_) = e {
            tracing::warn!("cannot read the task's {}: {e}", out.file());
            return;
        }
        let after_end = *ended.borrow();
        if after_end {
            failed_after_end += 1;
            if failed_after_end >= TRIES_AFTER_END {
                tracing::warn!("the rest of the task's {} cannot be read: {e}", out.file());
                return;
            }
        }
        tracing::debug!("reading the task's {}: {e}; trying again", out.file());
        tokio::time::sleep(EVERY).await;
    }
}
