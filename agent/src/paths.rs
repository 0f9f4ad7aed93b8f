//! The agent's on-disk layout, in one place.
//!
//! ```text
//! <work_dir>/
//! ├── agent_id                  id assigned by the master (written tmp + fsync + rename)
//! ├── status/
//! │   ├── updates.log           append-only journal: status updates and their acks
//! │   └── updates.log.tmp       a compaction in progress (renamed over updates.log)
//! ├── meta/tasks/
//! │   └── <framework_id>/
//! │       └── <task_id>/        checkpoint of one task, removed once its last update is acked
//! │           ├── task.pb       the RunTask it came with (written before launch)
//! │           └── ...           the containerizer's own records (pids, spec, exit status)
//! └── sandboxes/
//!     └── <framework_id>/
//!         └── <task_id>/        the task's working directory
//!             ├── stdout
//!             └── stderr
//! ```
//!
//! Framework and task ids are validated ([`mezzo_proto::ids`]) before they
//! become path components, so they cannot escape the work dir.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use mezzo_proto::ids::{FrameworkId, TaskId};

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
pub fn tasks_meta_root(work_dir: &Path) -> PathBuf {
    work_dir.join("meta").join("tasks")
}

/// Checkpoint directory of one task (also its container's run dir).
pub fn task_meta_dir(work_dir: &Path, framework_id: &FrameworkId, task_id: &TaskId) -> PathBuf {
    tasks_meta_root(work_dir)
        .join(framework_id.as_str())
        .join(task_id.as_str())
}

/// File name of a task's checkpointed `RunTask`.
pub const TASK_CHECKPOINT: &str = "task.pb";

pub fn sandbox_dir(work_dir: &Path, framework_id: &FrameworkId, task_id: &TaskId) -> PathBuf {
    work_dir
        .join("sandboxes")
        .join(framework_id.as_str())
        .join(task_id.as_str())
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
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(AgentError::io("fsync directory", dir))
}
