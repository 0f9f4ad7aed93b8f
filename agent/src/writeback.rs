//! Sandbox writeback: writes the sandboxes' new metadata to disk a little
//! at a time, so that the kernel does not write it all at once.
//!
//! Each task's sandbox is a new directory with two new files: about 5 KiB
//! of metadata (mostly the directory's own block). The kernel writes dirty
//! metadata back once it is 30 s old (`vm.dirty_expire_centisecs`), checked
//! every 5 s, so at a thousand tasks a second it writes tens of MiB in one
//! go. The status journal's fsync, which every status update waits for,
//! then waits for that whole burst to reach the disk: on a test machine
//! (ext4 without a journal) such fsyncs took 50–60 ms where they otherwise
//! take under 1 ms. A journaling file system commits metadata every few
//! seconds and with each fsync anyway; elsewhere this actor does the same:
//! once an interval, if a task was launched since the last time, it calls
//! `syncfs(2)` on the sandboxes' file system from a blocking thread.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::AgentError;

/// Marks that sandboxes were created; cheap to clone and to call.
#[derive(Clone, Debug, Default)]
pub struct Writeback {
    dirty: Arc<AtomicBool>,
}

impl Writeback {
    /// A task is being launched: its sandbox is new metadata to write.
    pub fn mark(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }
}

/// Above this, a writeback is logged as a warning: the disk is slow or
/// something else on the file system writes a lot.
const SLOW: Duration = Duration::from_secs(1);

/// The writeback actor for the file system holding `sandboxes` (created
/// if missing), to run, and its handle. `interval: None` turns it off: the
/// handle's marks are then ignored.
pub fn start(
    sandboxes: &Path,
    interval: Option<Duration>,
) -> Result<(Writeback, Option<impl Future<Output = Result<(), AgentError>> + use<>>), AgentError> {
    let handle = Writeback::default();
    let Some(interval) = interval.filter(|i| !i.is_zero()) else {
        return Ok((handle, None));
    };
    std::fs::create_dir_all(sandboxes).map_err(AgentError::io("create", sandboxes))?;
    let dir = Arc::new(std::fs::File::open(sandboxes).map_err(AgentError::io("open", sandboxes))?);
    let dirty = handle.dirty.clone();
    let actor = async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !dirty.swap(false, Ordering::Relaxed) {
                continue;
            }
            let fd = dir.clone();
            let started = std::time::Instant::now();
            let result = tokio::task::spawn_blocking(move || nix::unistd::syncfs(fd.as_ref()))
                .await
                .map_err(|_| AgentError::ActorPanicked("sandbox writeback"))?;
            let took = started.elapsed();
            match result {
                Err(e) => tracing::warn!("syncfs of the sandboxes' file system failed: {e}"),
                Ok(()) if took > SLOW => {
                    tracing::warn!(?took, "writing the sandboxes' file system back was slow")
                }
                Ok(()) => tracing::trace!(?took, "wrote the sandboxes' file system back"),
            }
        }
    };
    Ok((handle, Some(actor)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marks_are_written_back_and_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sandboxes = dir.path().join("sandboxes");
        let (wb, actor) = start(&sandboxes, Some(Duration::from_millis(10))).expect("start");
        let join = tokio::spawn(actor.expect("an actor"));
        assert!(sandboxes.is_dir(), "the sandboxes' root is created");
        wb.mark();
        // The actor clears the mark once it has synced.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while wb.dirty.load(Ordering::Relaxed) {
            assert!(std::time::Instant::now() < deadline, "the mark was never taken");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!join.is_finished(), "the actor keeps running");
        join.abort();
    }

    #[tokio::test]
    async fn off_means_no_actor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wb, actor) = start(&dir.path().join("s"), None).expect("start");
        wb.mark();
        assert!(actor.is_none());
        let (_, actor) = start(&dir.path().join("s"), Some(Duration::ZERO)).expect("start");
        assert!(actor.is_none());
    }
}
