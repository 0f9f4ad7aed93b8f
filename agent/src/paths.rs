//! The agent's on-disk layout, in one place.
//!
//! ```text
//! <work_dir>/
//! ├── agent_id                  id assigned by the master (written tmp + fsync + rename)
//! ├── status/
//! │   ├── updates.log           append-only journal: status updates and their acks
//! │   └── updates.log.tmp       a compaction in progress (renamed over updates.log)
//! ├── artifacts/                the artifact cache, see [`crate::fetch::cache`]
//! ├── volumes/                  persistent volumes, see [`crate::volumes`]; never collected
//! │   ├── <volume_id>/          one volume's data (root's until a task mounts it)
//! │   └── +removed/             volumes being removed (a name no id can have)
//! ├── executor_port            the executor API's port chosen on the first start, reused
//! │                             after a restart so that running executors reconnect
//! └── sandboxes/
//!     └── <framework_id>/
//!         ├── <task_id>/        the task's working directory
//!         │   ├── stdout
//!         │   └── stderr
//!         └── +executors/       (a name no task id can have)
//!             └── <executor_id>/  a custom executor's, shared by its tasks (as in Mesos)
//!
//! <runtime_dir>/                on a tmpfs by default (see [`default_runtime_dir`])
//! ├── checkpoints.marker        written once a master accepted this agent: if the agent has
//! │                             an id but no marker, its checkpoints were lost (a reboot)
//! ├── executors/
//! │   └── <framework_id>/
//! │       └── <executor_id>/    a custom executor's checkpoint: its task.pb (the ExecutorInfo as a
//! │                             task), its token (`token`, 0600) and the containerizer's records
//! └── tasks/
//!     └── <framework_id>/
//!         └── <task_id>/        checkpoint of one task, removed once its last update is acked
//!             ├── task.pb       the RunTask it came with (written before launch)
//!             ├── claim         "started" (by the container init, just before the task's
//!             │                 process) or "dropped" (by recovery), whichever came first
//!             └── ...           the containerizer's own records (pids, spec, exit status)
//! ```
//!
//! What recovery concludes from them, for a task not known to be over:
//! no `task.pb` (but intact checkpoints) or a `claim` taken by recovery:
//! it never started (DROPPED); a `claim` of `started` and a container
//! found: watched again; otherwise it may have run (LOST).
//!
//! Task checkpoints are kept apart from the work dir because they only have
//! to outlive the agent process, not the machine (the containers they
//! describe die with it), and because creating and removing a few files per
//! task on a disk file system is the agent's largest per-task cost at
//! 1,000 tasks/s (ext4 inode allocation slows as freed inodes pile up).
//!
//! Framework, task and volume ids are validated ([`mezzo_proto::ids`]) before they
//! become path components, so they cannot escape the work dir.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use mezzo_proto::ids::{ExecutorId, FrameworkId, TaskId, VolumeId};

use crate::AgentError;

pub fn agent_id_file(work_dir: &Path) -> PathBuf {
    work_dir.join("agent_id")
}

pub fn status_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("status")
}

pub fn status_journal(work_dir: &Path) -> PathBuf {
    status_dir(work_dir).join("updates.log")
}

/// Root of the task checkpoints.
pub fn tasks_meta_root(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("tasks")
}

/// Checkpoint directory of one task (also its container's run dir).
pub fn task_meta_dir(runtime_dir: &Path, framework_id: &FrameworkId, task_id: &TaskId) -> PathBuf {
    tasks_meta_root(runtime_dir)
        .join(framework_id.as_str())
        .join(task_id.as_str())
}

/// Root of the custom executors' checkpoints.
pub fn executors_meta_root(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("executors")
}

/// Checkpoint directory of one custom executor (also its container's run
/// dir).
pub fn executor_meta_dir(runtime_dir: &Path, framework_id: &FrameworkId, executor_id: &ExecutorId) -> PathBuf {
    executors_meta_root(runtime_dir)
        .join(framework_id.as_str())
        .join(executor_id.as_str())
}

/// File name of an executor's API token in its checkpoint dir.
pub const EXECUTOR_TOKEN: &str = "token";

/// Where the executor API's port is kept across restarts.
pub fn executor_port_file(work_dir: &Path) -> PathBuf {
    work_dir.join("executor_port")
}

/// The sandbox of a custom executor, which its tasks share. Under
/// `+executors`, a name no task id can have, so that it never clashes
/// with a task's sandbox.
pub fn executor_sandbox_dir(work_dir: &Path, framework_id: &FrameworkId, executor_id: &ExecutorId) -> PathBuf {
    sandboxes_root(work_dir)
        .join(framework_id.as_str())
        .join("+executors")
        .join(executor_id.as_str())
}

/// The runtime dir of an agent whose configuration names none: on the
/// first tmpfs of `/run` and `/dev/shm` (as runc and crun keep their state
/// in `/run`), else in the work dir. The name is derived from the work dir,
/// so a restarted agent finds its checkpoints and two agents on one host
/// keep theirs apart.
pub fn default_runtime_dir(work_dir: &Path) -> PathBuf {
    let name = format!("agent-{}", work_dir_tag(work_dir));
    [Path::new("/run"), Path::new("/dev/shm")]
        .into_iter()
        .find(|p| is_tmpfs(p))
        .map(|p| p.join("mezzo").join(name))
        .unwrap_or_else(|| work_dir.join("run"))
}

/// A short name for a work dir that stays the same across agent restarts
/// and upgrades (a CRC-32 of its path, not std's hasher, whose output may
/// change between Rust releases).
pub fn work_dir_tag(work_dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    format!("{:08x}", crc32fast::hash(work_dir.as_os_str().as_bytes()))
}

fn is_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// Removes what is empty of a runtime dir on a clean stop: the framework
/// dirs without checkpoints, then the dir itself if nothing is left (a
/// checkpoint of a task still running keeps it, and the marker with it).
pub fn prune_runtime_dir(runtime_dir: &Path) {
    let root = tasks_meta_root(runtime_dir);
    for fw in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let _ = std::fs::remove_dir(fw.path());
    }
    let _ = std::fs::remove_dir(&root);
    if !root.exists() {
        let _ = std::fs::remove_file(checkpoints_marker(runtime_dir));
    }
    let _ = std::fs::remove_dir(runtime_dir);
}

/// The marker that this runtime dir has kept every checkpoint since a
/// master last accepted the agent (see the tree above).
pub fn checkpoints_marker(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("checkpoints.marker")
}

/// File name of a task's checkpointed `RunTask`.
pub const TASK_CHECKPOINT: &str = "task.pb";

/// Beside a custom executor's task's checkpoint once the executor sent an
/// update for it: after a restart with nothing journaled, the task is
/// then known to have reached its executor (else it is STAGING and
/// launched again).
pub const EXECUTOR_TOOK: &str = "executor-took";

/// Beside each checkpoint of a custom executor's task group once every
/// task of the group is checkpointed: after a restart, a group none of
/// whose tasks has it (and some of whose tasks are missing) never
/// arrived whole, and its executor was never handed it.
pub const GROUP_WHOLE: &str = "group-whole";

/// Where every sandbox is (`<work_dir>/sandboxes`).
pub fn sandboxes_root(work_dir: &Path) -> PathBuf {
    work_dir.join("sandboxes")
}

pub fn sandbox_dir(work_dir: &Path, framework_id: &FrameworkId, task_id: &TaskId) -> PathBuf {
    sandboxes_root(work_dir)
        .join(framework_id.as_str())
        .join(task_id.as_str())
}

/// Where every persistent volume's data is (`<work_dir>/volumes`).
pub fn volumes_root(work_dir: &Path) -> PathBuf {
    work_dir.join("volumes")
}

pub fn volume_dir(work_dir: &Path, id: &VolumeId) -> PathBuf {
    volumes_root(work_dir).join(id.as_str())
}

/// Where a volume no longer listed is renamed before its data is deleted:
/// the rename is instant, the deletion may take long.
pub fn volumes_removed(work_dir: &Path) -> PathBuf {
    volumes_root(work_dir).join("+removed")
}

/// `path` with `suffix` appended to its file name (`updates.log` -> `updates.log.tmp`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the
/// new content: write a temporary file, fsync it, rename it over `path`,
/// fsync the directory.
/// Writes `bytes` to `path` so that a reader sees the old or the new
/// contents, never a mix (tmp + rename), without waiting for the disk.
///
/// For records that only have to outlive the agent *process*: what they
/// describe (a running container) does not outlive a machine crash either,
/// and the page cache survives the process. A torn file after a crash is
/// read as unreadable and skipped.
pub fn write_replace(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let tmp = with_suffix(path, ".tmp");
    std::fs::write(&tmp, bytes).map_err(AgentError::io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(AgentError::io("rename into place", path))
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    let tmp = with_suffix(path, ".tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(AgentError::io("create", &tmp))?;
    file.write_all(bytes).map_err(AgentError::io("write", &tmp))?;
    file.sync_all().map_err(AgentError::io("fsync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(AgentError::io("rename into place", path))?;
    sync_parent(path)
}

/// Makes a rename or create in `path`'s directory durable.
pub fn sync_parent(path: &Path) -> Result<(), AgentError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(dir).map_err(AgentError::io("fsync directory", dir))
}

/// Makes the creations, renames and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_dir_tag_is_stable_across_builds() {
        // A CRC-32 of the path: the same on every Rust release, so an
        // upgraded agent finds its runtime dir and parent cgroup again.
        assert_eq!(work_dir_tag(Path::new("/var/lib/mezzo/agent")), "1314aa45");
        assert_ne!(work_dir_tag(Path::new("/a")), work_dir_tag(Path::new("/b")));
    }

    #[test]
    fn default_runtime_dir_is_on_a_tmpfs_when_there_is_one() {
        let work = Path::new("/var/lib/mezzo/agent");
        let dir = default_runtime_dir(work);
        let on_tmpfs = dir.starts_with("/run/mezzo") || dir.starts_with("/dev/shm/mezzo");
        let any_tmpfs = is_tmpfs(Path::new("/run")) || is_tmpfs(Path::new("/dev/shm"));
        assert_eq!(on_tmpfs, any_tmpfs, "{}", dir.display());
        if !any_tmpfs {
            assert_eq!(dir, work.join("run"));
        }
        assert!(dir.ends_with(format!("agent-{}", work_dir_tag(work))) || dir == work.join("run"));
    }

    #[test]
    fn prune_keeps_checkpoints_and_removes_what_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("run");
        let live = tasks_meta_root(&run).join("fw1").join("t1");
        std::fs::create_dir_all(&live).expect("mkdir");
        std::fs::write(live.join(TASK_CHECKPOINT), b"x").expect("write");
        std::fs::create_dir_all(tasks_meta_root(&run).join("fw2")).expect("mkdir");
        prune_runtime_dir(&run);
        assert!(live.join(TASK_CHECKPOINT).exists(), "a live checkpoint is kept");
        assert!(
            !tasks_meta_root(&run).join("fw2").exists(),
            "an empty framework dir goes"
        );
        std::fs::remove_dir_all(tasks_meta_root(&run).join("fw1")).expect("rm");
        prune_runtime_dir(&run);
        assert!(!run.exists(), "an empty runtime dir goes");
    }
}
