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
//! Safety: the table adds a sandbox to the collector's in-use set before
//! the task's container creates it, and takes it out when the task is done.
//! The collector checks that set, under its lock, and renames the sandbox
//! to a tombstone (`<root>/+gc/`, a name no id can have) before deleting
//! it, so a task launched again under the same id never loses its new
//! sandbox. At start the collector schedules every sandbox it finds on disk
//! by its last modification (of the directory or of the task's stdout or
//! stderr, whichever is newest: roughly when the task last wrote, or else
//! when it started) and removes nothing until the table has said which of
//! them belong to tasks it recovered.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::AgentError;
use crate::key::TaskKey;
use crate::metrics::Metrics;

/// When done sandboxes are removed.
#[derive(Debug, Clone)]
pub struct GcConfig {
    /// How long a done sandbox is kept on an empty disk.
    pub delay: Duration,
    /// The fraction of the disk to keep free: the keeping time shrinks to
    /// nothing as usage approaches `1 − headroom`.
    pub disk_headroom: f64,
    /// How often the disk is measured and due sandboxes removed (> 0).
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
    by_age: BTreeSet<(SystemTime, Arc<Path>)>,
    since: HashMap<Arc<Path>, SystemTime>,
}

impl Schedule {
    /// `path` is done since `since` (replacing an earlier entry: a task
    /// launched again under the same id ended again).
    pub fn add(&mut self, path: &Path, since: SystemTime) {
        let path: Arc<Path> = Arc::from(path);
        if let Some(old) = self.since.insert(path.clone(), since) {
            self.by_age.remove(&(old, path.clone()));
        }
        self.by_age.insert((since, path));
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
            due.push(path.to_path_buf());
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
    Done(PathBuf),
    /// The table has reported every task it recovered.
    Recovered,
}

/// Sandboxes in use: never removed.
type InUse = Arc<Mutex<HashSet<PathBuf>>>;

/// Tells the collector about sandboxes; cheap to clone, never blocks for
/// longer than a set insertion.
#[derive(Debug, Clone)]
pub struct GcHandle {
    tx: mpsc::UnboundedSender<GcCmd>,
    in_use: InUse,
}

impl GcHandle {
    /// A task is (or, after a restart, still is) using this sandbox. Call
    /// before the sandbox is created.
    pub fn launched(&self, sandbox: &Path) {
        lock(&self.in_use).insert(sandbox.to_path_buf());
    }

    /// The task is done: its sandbox may go once old enough.
    pub fn done(&self, sandbox: &Path) {
        lock(&self.in_use).remove(sandbox);
        let _ = self.tx.send(GcCmd::Done(sandbox.to_path_buf()));
    }

    /// Every recovered task has been reported with [`GcHandle::launched`].
    pub fn recovered(&self) {
        let _ = self.tx.send(GcCmd::Recovered);
    }
}

fn lock(in_use: &InUse) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
    // A panic while holding it leaves a set that is still valid.
    in_use.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where sandboxes go to be deleted; `+` is in no id, so no framework has
/// this name.
const TOMBSTONES: &str = "+gc";
/// Sandboxes removed per blocking call, so that a large backlog neither
/// holds a blocking thread for long nor delays the agent's stop.
const CHUNK: usize = 256;
/// The next tombstone's name.
static NEXT_GRAVE: AtomicU64 = AtomicU64::new(0);

/// The collector for the sandboxes under `root` (`<work_dir>/sandboxes`):
/// its handle, and the actor to run.
pub fn start(
    root: PathBuf,
    config: GcConfig,
    metrics: Metrics,
) -> Result<(GcHandle, impl Future<Output = Result<(), AgentError>>), AgentError> {
    if config.interval.is_zero() {
        return Err(AgentError::Config("the sandbox gc interval must be more than 0"));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let in_use = InUse::default();
    let handle = GcHandle {
        tx,
        in_use: in_use.clone(),
    };
    Ok((handle, run(root, config, metrics, rx, in_use)))
}

async fn run(
    root: PathBuf,
    config: GcConfig,
    metrics: Metrics,
    mut rx: mpsc::UnboundedReceiver<GcCmd>,
    in_use: InUse,
) -> Result<(), AgentError> {
    let mut schedule = Schedule::default();
    let scan_root = root.clone();
    let found = blocking(move || scan(&scan_root)).await?;
    for (path, mtime) in found {
        schedule.add(&path, mtime);
    }
    let mut recovered = false;
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                Some(GcCmd::Done(path)) => schedule.add(&path, SystemTime::now()),
                Some(GcCmd::Recovered) => recovered = true,
                None => return Ok(()),
            },
            _ = tick.tick(), if recovered => {
                metrics.sandboxes_done.set(schedule.len() as i64);
                if schedule.is_empty() {
                    continue;
                }
                let probe = root.clone();
                let usage = blocking(move || disk_usage(&probe)).await?;
                let keep = keep_for(&config, usage);
                let mut due = schedule.take_due(SystemTime::now(), keep);
                if !due.is_empty() {
                    tracing::debug!(count = due.len(), usage, ?keep, "removing done sandboxes");
                }
                while !due.is_empty() {
                    let chunk: Vec<PathBuf> = due.drain(..due.len().min(CHUNK)).collect();
                    let (root, in_use) = (root.clone(), in_use.clone());
                    let (removed, failed) = blocking(move || remove_chunk(&root, &in_use, chunk)).await?;
                    metrics.sandboxes_removed.inc_by(removed);
                    // Tried again after another keeping time.
                    for path in failed {
                        schedule.add(&path, SystemTime::now());
                    }
                }
                metrics.sandboxes_done.set(schedule.len() as i64);
            }
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| AgentError::ActorPanicked("sandbox gc"))
}

/// Every `<root>/<framework>/<task>` directory, and every custom
/// executor's (`<root>/<framework>/+executors/<executor>`), with the newest
/// modification time of it and its stdout and stderr; clears tombstones a
/// crash left behind.
fn scan(root: &Path) -> Vec<(PathBuf, SystemTime)> {
    let _ = std::fs::remove_dir_all(root.join(TOMBSTONES));
    let mut out = Vec::new();
    for fw in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let executors = std::fs::read_dir(fw.path().join("+executors"))
            .into_iter()
            .flatten()
            .flatten();
        for task in std::fs::read_dir(fw.path())
            .into_iter()
            .flatten()
            .flatten()
            .chain(executors)
        {
            // Not a sandbox (e.g. `lost+found` of a disk mounted here, or
            // `+executors` itself).
            if TaskKey::parse(&fw.file_name().to_string_lossy(), &task.file_name().to_string_lossy()).is_err() {
                continue;
            }
            let Ok(meta) = task.metadata() else { continue };
            if !meta.is_dir() {
                continue;
            }
            let path = task.path();
            let newest = ["stdout", "stderr"]
                .iter()
                .filter_map(|f| std::fs::metadata(path.join(f)).and_then(|m| m.modified()).ok())
                .chain(meta.modified().ok())
                .max()
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((path, newest));
        }
    }
    out
}

/// The used fraction of the file system's blocks or inodes, whichever is
/// larger; 0 when it cannot be measured (then only the delay applies).
fn disk_usage(path: &Path) -> f64 {
    match nix::sys::statvfs::statvfs(path) {
        Ok(fs) => {
            // The counts' integer types differ between platforms.
            let frac = |avail: f64, total: f64| if total == 0.0 { 0.0 } else { 1.0 - avail / total };
            frac(fs.blocks_available() as f64, fs.blocks() as f64)
                .max(frac(fs.files_available() as f64, fs.files() as f64))
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot measure the sandboxes' disk: {e}");
            0.0
        }
    }
}

/// Removes the sandboxes not in use (and their framework's directory once
/// empty and unused). Returns how many went and those that could not.
fn remove_chunk(root: &Path, in_use: &InUse, chunk: Vec<PathBuf>) -> (u64, Vec<PathBuf>) {
    let tombstones = root.join(TOMBSTONES);
    let _ = std::fs::create_dir(&tombstones);
    let (mut removed, mut failed) = (0, Vec::new());
    let mut parents = HashSet::new();
    for path in chunk {
        // Unique for the agent's life: a grave left by a failed deletion
        // never blocks the next one.
        let grave = tombstones.join(NEXT_GRAVE.fetch_add(1, Ordering::Relaxed).to_string());
        let moved = {
            let in_use = lock(in_use);
            if in_use.contains(&path) {
                continue; // launched again: done again later
            }
            std::fs::rename(&path, &grave)
        };
        match moved {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot remove a done sandbox: {e}");
                failed.push(path.clone());
            }
            Ok(()) => match std::fs::remove_dir_all(&grave) {
                Ok(()) => removed += 1,
                // Out of the way already; cleared at the next start.
                Err(e) => tracing::warn!(path = %path.display(), "cannot delete a done sandbox: {e}"),
            },
        }
        if let Some(fw) = path.parent() {
            parents.insert(fw.to_path_buf());
        }
    }
    let _ = std::fs::remove_dir(&tombstones); // fails while a grave is left
    let in_use = lock(in_use);
    let used: HashSet<&Path> = in_use.iter().filter_map(|p| p.parent()).collect();
    for fw in parents.iter().filter(|fw| !used.contains(fw.as_path())) {
        let _ = std::fs::remove_dir(fw); // fails while other sandboxes are left
    }
    (removed, failed)
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
    fn due_entries_come_out_oldest_first_and_a_later_end_counts() {
        let mut s = Schedule::default();
        s.add(Path::new("/s/fw/b"), at(20));
        s.add(Path::new("/s/fw/a"), at(10));
        s.add(Path::new("/s/fw/c"), at(30));
        s.add(Path::new("/s/fw/c"), at(12)); // re-added: the new time counts
        s.add(Path::new("/s/fw/a"), at(40)); // launched again, done again
        assert_eq!(s.len(), 3);
        assert!(s.take_due(at(25), Duration::from_secs(20)).is_empty());
        let due = s.take_due(at(45), Duration::from_secs(20));
        assert_eq!(due, vec![PathBuf::from("/s/fw/c"), PathBuf::from("/s/fw/b")]);
        assert_eq!(s.take_due(at(100), Duration::ZERO), vec![PathBuf::from("/s/fw/a")]);
        assert!(s.is_empty());
    }

    fn old_dir(path: &Path) {
        std::fs::create_dir_all(path).expect("mkdir");
        std::fs::write(path.join("stdout"), b"out").expect("write");
        let old = SystemTime::now() - Duration::from_secs(3600);
        for p in [path.join("stdout"), path.to_path_buf()] {
            std::fs::File::open(&p)
                .and_then(|f| f.set_modified(old))
                .expect("set mtime");
        }
    }

    async fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn config(delay: Duration, disk_headroom: f64) -> GcConfig {
        GcConfig {
            delay,
            disk_headroom,
            interval: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn removes_old_leftovers_after_recovery_and_done_sandboxes_after_the_delay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("sandboxes");
        let (left, live, other_fw) = (root.join("fw/left"), root.join("fw/live"), root.join("fw2/t"));
        // Custom executors' sandboxes too.
        let (left_exec, live_exec) = (root.join("fw/+executors/gone"), root.join("fw/+executors/live"));
        for d in [&left, &live, &other_fw, &left_exec, &live_exec] {
            old_dir(d);
        }
        // An old directory whose task wrote to stdout lately is not due.
        let chatty = root.join("fw/chatty");
        old_dir(&chatty);
        std::fs::write(chatty.join("stdout"), b"more").expect("write");
        // Not sandboxes: a disk's lost+found, a crash's tombstones.
        std::fs::create_dir_all(root.join("lost+found/x")).expect("mkdir");
        std::fs::create_dir_all(root.join(TOMBSTONES).join("0")).expect("mkdir");
        let (gc, actor) = start(root.clone(), config(Duration::from_secs(60), 0.0), Metrics::new()).expect("start");
        let join = tokio::spawn(actor);
        // Nothing goes before the table has reported what it recovered.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(left.exists() && other_fw.exists());
        gc.launched(&live);
        gc.launched(&live_exec);
        gc.recovered();
        // An emptied framework dir goes too, just after its last sandbox.
        let fw2 = root.join("fw2");
        wait_until("leftovers removed", || !left.exists() && !fw2.exists()).await;
        wait_until("an executor's leftover removed", || !left_exec.exists()).await;
        assert!(live.exists(), "a recovered task's sandbox stays");
        assert!(live_exec.exists(), "a recovered executor's sandbox stays");
        assert!(chatty.exists(), "aged from its latest output");
        assert!(root.join("lost+found/x").exists(), "not a sandbox: left alone");
        assert!(!root.join(TOMBSTONES).exists(), "old tombstones cleared");
        // Done just now: kept for the delay (60 s here).
        gc.done(&live);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(live.exists(), "kept until it is old enough");
        join.abort();
    }

    #[tokio::test]
    async fn a_full_disk_removes_done_sandboxes_at_once_but_not_one_launched_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("sandboxes");
        let (done, again) = (root.join("fw/done"), root.join("fw/again"));
        // A headroom of 1 means "keep the whole disk free": keep for nothing.
        let (gc, actor) = start(root.clone(), config(Duration::from_secs(3600), 1.0), Metrics::new()).expect("start");
        let join = tokio::spawn(actor);
        gc.recovered();
        for d in [&done, &again] {
            gc.launched(d);
            std::fs::create_dir_all(d).expect("mkdir");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(done.exists() && again.exists(), "in use: never removed");
        gc.done(&again);
        gc.launched(&again); // the same task id, launched again at once
        gc.done(&done);
        wait_until("done sandbox removed", || !done.exists()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(again.exists(), "a sandbox launched again is kept");
        assert!(root.join("fw").exists(), "its framework dir too");
        join.abort();
    }

    #[test]
    fn a_zero_interval_is_refused() {
        let c = GcConfig {
            interval: Duration::ZERO,
            ..GcConfig::default()
        };
        assert!(start(PathBuf::from("/nonexistent"), c, Metrics::new()).is_err());
    }
}
