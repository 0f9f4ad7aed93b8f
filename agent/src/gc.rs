//! Sandbox garbage collection: removes the sandboxes of tasks that are done
//! (ended, and every update acknowledged) once they are old enough, sooner
//! when the disk fills up.
//!
//! The policy is Mesos's (`--gc_delay`, `--gc_disk_headroom`): a sandbox is
//! kept for `delay × max(0, 1 − headroom − usage)`, where `usage` is the
//! larger of the used fractions of the file system's blocks and inodes. So
//! with the defaults (one week, 0.1) an empty disk keeps sandboxes for 6.3
//! days, a half-full one for 2.8 days, and one 90% full removes every done
//! sandbox at the next check. Inodes count because a task's sandbox costs
//! three of them however little it writes.
//!
//! The task table tells the collector when a task is launched (its sandbox
//! is in use: never removed) and when it is done. At start the collector
//! also schedules every sandbox it finds on disk by its modification time,
//! and removes nothing until the table has said which of them belong to
//! tasks it recovered.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::AgentError;
use crate::metrics::Metrics;

/// When done sandboxes are removed.
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// How long a done sandbox is kept on an empty disk.
    pub delay: Duration,
    /// The fraction of the disk to keep free: the keeping time shrinks to
    /// nothing as usage approaches `1 − headroom`.
    pub disk_headroom: f64,
    /// How often the disk is measured and due sandboxes removed.
    pub interval: Duration,
}

impl Default for GcConfig {
    /// Mesos's defaults (one week, 10% headroom), checked every 10 s.
    fn default() -> Self {
        GcConfig {
            delay: Duration::from_secs(7 * 24 * 3600),
            disk_headroom: 0.1,
            interval: Duration::from_secs(10),
        }
    }
}

/// How long a done sandbox is kept at this disk `usage` (0–1).
pub fn keep_for(config: &GcConfig, usage: f64) -> Duration {
    let factor = (1.0 - config.disk_headroom - usage).clamp(0.0, 1.0);
    config.delay.mul_f64(factor)
}

/// The done sandboxes, oldest first. Pure: no I/O.
#[derive(Debug, Default)]
pub struct Schedule {
    by_age: BTreeSet<(SystemTime, PathBuf)>,
    since: HashMap<PathBuf, SystemTime>,
}

impl Schedule {
    /// `path` is done since `since` (replacing an earlier entry).
    pub fn add(&mut self, path: PathBuf, since: SystemTime) {
        self.remove(&path);
        self.by_age.insert((since, path.clone()));
        self.since.insert(path, since);
    }

    /// `path` is in use again (a task launched in it): keep it.
    pub fn remove(&mut self, path: &Path) {
        if let Some(since) = self.since.remove(path) {
            self.by_age.remove(&(since, path.to_path_buf()));
        }
    }

    /// Takes out every entry done for at least `keep` at `now`.
    pub fn take_due(&mut self, now: SystemTime, keep: Duration) -> Vec<PathBuf> {
        let mut due = Vec::new();
        while let Some((since, _)) = self.by_age.first() {
            if now.duration_since(*since).unwrap_or_default() < keep {
                break;
            }
            let Some((_, path)) = self.by_age.pop_first() else {
                break;
            };
            self.since.remove(&path);
            due.push(path);
        }
        due
    }

    pub fn len(&self) -> usize {
        self.since.len()
    }

    pub fn is_empty(&self) -> bool {
        self.since.is_empty()
    }
}

#[derive(Debug)]
enum GcCmd {
    Launched(PathBuf),
    Done(PathBuf),
    /// The table has reported every task it recovered.
    Recovered,
}

/// Tells the collector about sandboxes; cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct GcHandle {
    tx: mpsc::UnboundedSender<GcCmd>,
}

impl GcHandle {
    /// A task is (or, after a restart, still is) using this sandbox.
    pub fn launched(&self, sandbox: PathBuf) {
        let _ = self.tx.send(GcCmd::Launched(sandbox));
    }

    /// The task is done: its sandbox may go once old enough.
    pub fn done(&self, sandbox: PathBuf) {
        let _ = self.tx.send(GcCmd::Done(sandbox));
    }

    /// Every recovered task has been reported with [`GcHandle::launched`].
    pub fn recovered(&self) {
        let _ = self.tx.send(GcCmd::Recovered);
    }
}

/// Starts the collector for the sandboxes under `root` (`<work_dir>/sandboxes`).
pub fn start(
    root: PathBuf,
    config: GcConfig,
    metrics: Metrics,
) -> (GcHandle, tokio::task::JoinHandle<Result<(), AgentError>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let join = tokio::spawn(run(root, config, metrics, rx));
    (GcHandle { tx }, join)
}

async fn run(
    root: PathBuf,
    config: GcConfig,
    metrics: Metrics,
    mut rx: mpsc::UnboundedReceiver<GcCmd>,
) -> Result<(), AgentError> {
    let mut schedule = Schedule::default();
    let scan_root = root.clone();
    let found = tokio::task::spawn_blocking(move || scan(&scan_root))
        .await
        .map_err(|_| AgentError::ActorPanicked("sandbox gc"))?;
    for (path, mtime) in found {
        schedule.add(path, mtime);
    }
    let mut recovered = false;
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                Some(GcCmd::Launched(path)) => schedule.remove(&path),
                Some(GcCmd::Done(path)) => schedule.add(path, SystemTime::now()),
                Some(GcCmd::Recovered) => recovered = true,
                None => return Ok(()),
            },
            _ = tick.tick(), if recovered => {
                metrics.sandboxes_done.set(schedule.len() as i64);
                if schedule.is_empty() {
                    continue;
                }
                let usage = disk_usage(&root);
                let keep = keep_for(&config, usage);
                let due = schedule.take_due(SystemTime::now(), keep);
                if due.is_empty() {
                    continue;
                }
                tracing::debug!(count = due.len(), usage, ?keep, "removing done sandboxes");
                let removed = tokio::task::spawn_blocking(move || remove_all(&due))
                    .await
                    .map_err(|_| AgentError::ActorPanicked("sandbox gc"))?;
                metrics.sandboxes_removed.inc_by(removed);
                metrics.sandboxes_done.set(schedule.len() as i64);
            }
        }
    }
}

/// Every `<root>/<framework>/<task>` directory with its modification time.
fn scan(root: &Path) -> Vec<(PathBuf, SystemTime)> {
    let mut out = Vec::new();
    for fw in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for task in std::fs::read_dir(fw.path()).into_iter().flatten().flatten() {
            let Ok(meta) = task.metadata() else { continue };
            if meta.is_dir() {
                out.push((task.path(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
    }
    out
}

/// The used fraction of the file system's blocks or inodes, whichever is
/// larger; 0 when it cannot be measured (then only the delay applies).
fn disk_usage(path: &Path) -> f64 {
    match nix::sys::statvfs::statvfs(path) {
        Ok(fs) => {
            let frac = |avail: u64, total: u64| {
                if total == 0 {
                    0.0
                } else {
                    1.0 - avail as f64 / total as f64
                }
            };
            frac(fs.blocks_available() as u64, fs.blocks() as u64)
                .max(frac(fs.files_available() as u64, fs.files() as u64))
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot measure the sandboxes' disk: {e}");
            0.0
        }
    }
}

/// Removes the sandboxes, and their framework's directory once empty.
fn remove_all(due: &[PathBuf]) -> u64 {
    let mut removed = 0;
    for path in due {
        match std::fs::remove_dir_all(path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), "cannot remove a done sandbox: {e}"),
        }
        if let Some(fw) = path.parent() {
            let _ = std::fs::remove_dir(fw); // fails while other sandboxes are left
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn keeping_time_shrinks_with_disk_usage() {
        let c = GcConfig {
            delay: Duration::from_secs(1000),
            disk_headroom: 0.1,
            interval: Duration::from_secs(1),
        };
        assert_eq!(keep_for(&c, 0.0), Duration::from_secs(900));
        assert_eq!(keep_for(&c, 0.5), Duration::from_secs(400));
        assert_eq!(keep_for(&c, 0.9), Duration::ZERO);
        assert_eq!(keep_for(&c, 1.0), Duration::ZERO, "never negative");
        let none = GcConfig {
            disk_headroom: 0.0,
            ..c
        };
        assert_eq!(keep_for(&none, 0.0), Duration::from_secs(1000));
    }

    #[test]
    fn due_entries_come_out_oldest_first_and_relaunched_ones_never() {
        let mut s = Schedule::default();
        s.add("/s/fw/b".into(), at(20));
        s.add("/s/fw/a".into(), at(10));
        s.add("/s/fw/c".into(), at(30));
        s.add("/s/fw/d".into(), at(5));
        s.remove(Path::new("/s/fw/d")); // launched again
        s.add("/s/fw/c".into(), at(12)); // re-added: the new time counts
        assert_eq!(s.len(), 3);
        assert!(s.take_due(at(25), Duration::from_secs(20)).is_empty());
        let due = s.take_due(at(35), Duration::from_secs(20));
        assert_eq!(due, vec![PathBuf::from("/s/fw/a"), PathBuf::from("/s/fw/c")]);
        assert_eq!(s.take_due(at(100), Duration::ZERO), vec![PathBuf::from("/s/fw/b")]);
        assert!(s.is_empty());
        s.remove(Path::new("/s/fw/unknown"));
    }

    fn old_dir(path: &Path) {
        std::fs::create_dir_all(path).expect("mkdir");
        std::fs::write(path.join("stdout"), b"out").expect("write");
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::open(path)
            .and_then(|f| f.set_modified(old))
            .expect("set mtime");
    }

    async fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn removes_old_leftovers_after_recovery_and_done_sandboxes_after_the_delay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("sandboxes");
        let (left, live, other_fw) = (root.join("fw/left"), root.join("fw/live"), root.join("fw2/t"));
        for d in [&left, &live, &other_fw] {
            old_dir(d);
        }
        let config = GcConfig {
            delay: Duration::from_secs(60),
            disk_headroom: 0.0,
            interval: Duration::from_millis(20),
        };
        let metrics = Metrics::new();
        let (gc, join) = start(root.clone(), config, metrics);
        // Nothing goes before the table has reported what it recovered.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(left.exists() && other_fw.exists());
        gc.launched(live.clone());
        gc.recovered();
        wait_until("leftovers removed", || !left.exists() && !other_fw.exists()).await;
        assert!(!root.join("fw2").exists(), "an emptied framework dir goes too");
        assert!(live.exists(), "a recovered task's sandbox stays");
        // Done just now: kept for the delay (60 s here).
        gc.done(live.clone());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(live.exists(), "kept until it is old enough");
        join.abort();
    }

    #[tokio::test]
    async fn a_full_disk_removes_done_sandboxes_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("sandboxes");
        let done = root.join("fw/done");
        std::fs::create_dir_all(&done).expect("mkdir");
        // A headroom of 1 means "keep the whole disk free": keep for nothing.
        let config = GcConfig {
            delay: Duration::from_secs(3600),
            disk_headroom: 1.0,
            interval: Duration::from_millis(20),
        };
        let (gc, join) = start(root.clone(), config, Metrics::new());
        gc.launched(done.clone());
        gc.recovered();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(done.exists(), "in use: never removed");
        gc.done(done.clone());
        wait_until("done sandbox removed", || !done.exists()).await;
        join.abort();
    }
}
