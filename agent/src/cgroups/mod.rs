//! Control groups for containers: cpu shares and CFS quota, a hard memory
//! limit, a pids limit, usage, OOM detection and kill-everything.
//!
//! cgroup v1 and v2 sit behind one trait, [`CgroupBackend`], chosen once at
//! agent start by [`detect`]. Everything kernel-facing takes the root path
//! (normally `/sys/fs/cgroup`), so tests can lay out a fake hierarchy in a
//! temp dir. Every error names the file or directory involved.
//!
//! ```no_run
//! # fn run() -> Result<(), mezzo_agent::cgroups::CgroupError> {
//! use std::path::Path;
//! use std::time::Duration;
//! use mezzo_agent::cgroups::{detect, Limits};
//!
//! let backend = detect(Path::new("/sys/fs/cgroup"))?;
//! let limits = Limits {
//!     cpu_shares: 1024,
//!     cpu_quota: Some(Duration::from_millis(100)),
//!     memory_bytes: Some(256 << 20),
//!     pids_max: Some(512),
//! };
//! let cgroup = backend.create("mezzo-agent-1", "task-1", &limits)?;
//! // The container's init writes its own pid into each of these files.
//! let _files = cgroup.procs_files();
//! let _usage = cgroup.usage()?;
//! cgroup.destroy()?;
//! backend.remove_parent("mezzo-agent-1")?;
//! # Ok(()) }
//! ```
//!
//! All calls block (file I/O; `kill_all` waits up to [`KILL_TIMEOUT`]);
//! async callers use `spawn_blocking`.
//!
//! The control files are driven by cgroups-rs (`cgroups_rs::fs`): its
//! cpu, memory, pids and freezer controllers set the limits, freeze and
//! thaw, join processes, read `pids.current` and write v2's `cgroup.kill`.
//! They run over our own [`Hierarchy`](cgroups_rs::fs::Hierarchy), `layout.rs`,
//! rooted where we are told. What cgroups-rs cannot do the way the agent
//! needs stays by hand here, each place saying why (see also
//! ARCHITECTURE.md, "cgroups-rs and what stays by hand"): detection under a
//! given root, creating directories, v2's controller enabling, listing,
//! reading `cgroup.procs`, usage, OOM detection, the freeze-and-kill
//! protocol and removal.

mod bpf;
mod devices;
mod layout;
pub mod loopback;
mod v1;
mod v2;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod v2_kernel_tests;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub use loopback::LoopbackFilter;
pub use v1::V1Backend;
pub use v2::V2Backend;

/// How long `kill_all` waits for the cgroup to empty.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long freezing may take before we signal anyway.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `destroy` retries `rmdir` on EBUSY.
const RMDIR_TIMEOUT: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(10);
/// The CFS period every quota is expressed against.
pub const CPU_PERIOD: Duration = Duration::from_millis(100);
/// [`CPU_PERIOD`] as both versions write it.
const CPU_PERIOD_US: u64 = 100_000;
const _: () = assert!(CPU_PERIOD.as_micros() == CPU_PERIOD_US as u128);
/// The kernel refuses CFS quotas under 1 ms.
const MIN_CPU_QUOTA: Duration = Duration::from_millis(1);
const MIN_CPU_SHARES: u64 = 2;
const MAX_CPU_SHARES: u64 = 262_144;

/// Which cgroup hierarchy the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One hierarchy per controller.
    V1,
    /// The unified hierarchy.
    V2,
}

/// What a container may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Relative cpu weight, cpus × 1024; clamped to 2..=262144.
    pub cpu_shares: u64,
    /// CPU time allowed per 100 ms period; `None` = no hard cap.
    pub cpu_quota: Option<Duration>,
    /// Hard memory limit (swap included where the kernel accounts it).
    pub memory_bytes: Option<u64>,
    /// Maximum number of tasks (processes and threads).
    pub pids_max: Option<u64>,
}

impl Limits {
    /// Shares for `cpus` cpus (`cpus × 1024`, at least 2).
    pub fn shares_for_cpus(cpus: f64) -> u64 {
        // The float-to-int cast saturates; NaN becomes 0, then the minimum.
        ((cpus * 1024.0) as u64).clamp(MIN_CPU_SHARES, MAX_CPU_SHARES)
    }

    fn shares(&self) -> u64 {
        self.cpu_shares.clamp(MIN_CPU_SHARES, MAX_CPU_SHARES)
    }

    /// Rejects limits the kernel would refuse or that make no sense,
    /// naming the cgroup they were meant for.
    fn validate(&self, path: &Path) -> Result<(), CgroupError> {
        let invalid = |reason: String| CgroupError::InvalidLimit {
            path: path.to_owned(),
            reason,
        };
        if let Some(q) = self.cpu_quota
            && q < MIN_CPU_QUOTA
        {
            return Err(invalid(format!("cpu quota {q:?} is under the kernel minimum of 1ms")));
        }
        if self.memory_bytes == Some(0) {
            return Err(invalid("memory limit of 0 bytes".to_owned()));
        }
        if self.pids_max == Some(0) {
            return Err(invalid("pids limit of 0".to_owned()));
        }
        Ok(())
    }

    /// The quota in microseconds, as both versions write it (cgroups-rs
    /// takes an `i64`; no quota the kernel accepts comes near its end).
    fn quota_us(&self) -> Option<i64> {
        self.cpu_quota.map(|q| i64::try_from(q.as_micros()).unwrap_or(i64::MAX))
    }
}

/// What a cgroup has used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Total cpu time of everything that ran here.
    pub cpu_time: Duration,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub memory_rss: u64,
    /// Page cache (v1 `total_cache`, v2 `file`).
    pub memory_cache: u64,
    /// Tasks (processes and threads) in the cgroup now.
    pub pids: u64,
}

/// Errors of the cgroup layer; each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Neither a usable v2 nor a complete v1 hierarchy under `root`.
    #[error("no usable cgroup hierarchy under {}: {details}", root.display())]
    Unsupported {
        /// The root that was searched.
        root: PathBuf,
        /// What is missing, per version.
        details: String,
    },
    /// A parent or cgroup name that is not a plain relative path.
    #[error("invalid cgroup name {name:?} under {}: {reason}", root.display())]
    InvalidName {
        /// The hierarchy root the name would be joined to.
        root: PathBuf,
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Limits that cannot be applied.
    #[error("invalid limits for {}: {reason}", path.display())]
    InvalidLimit {
        /// The cgroup the limits were meant for.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `create` found the cgroup already there.
    #[error("cgroup {} already exists", path.display())]
    Exists {
        /// The existing directory.
        path: PathBuf,
    },
    /// A file or directory operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing ("read", "write 100000 to", "create", ...).
        op: String,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A control file held something we could not understand.
    #[error("unexpected contents in {}: {reason}", path.display())]
    Parse {
        /// The control file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Processes survived SIGKILL for the whole kill timeout.
    #[error("processes {pids:?} still in {} after {timeout:?}", path.display())]
    KillTimeout {
        /// The cgroup.
        path: PathBuf,
        /// Who is left.
        pids: Vec<u32>,
        /// How long we waited.
        timeout: Duration,
    },
    /// cgroups-rs failed without an I/O or parse cause.
    #[error("{op} {}: {source}", path.display())]
    Controller {
        /// What we were doing.
        op: String,
        /// The control file or cgroup.
        path: PathBuf,
        /// cgroups-rs's error.
        #[source]
        source: cgroups_rs::fs::error::Error,
    },
    /// The cgroups-rs handle lacks a controller its backend needs.
    #[error("no {controller} controller for cgroup {}", path.display())]
    NoController {
        /// The cgroup.
        path: PathBuf,
        /// The controller's name.
        controller: String,
    },
    /// A signal could not be sent.
    #[error("kill pid {pid} in {}: {source}", path.display())]
    Signal {
        /// The cgroup.
        path: PathBuf,
        /// The process.
        pid: u32,
        /// The errno.
        #[source]
        source: Errno,
    },
}

impl CgroupError {
    fn io(op: impl Into<String>, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
        let op = op.into();
        let path = path.to_owned();
        move |source| CgroupError::Io { op, path, source }
    }
}

/// Chosen once at agent start: a unified (v2) hierarchy at `root` with the
/// cpu, memory and pids controllers; else v1 hierarchies `root/<controller>`
/// for cpu, cpuacct, memory, pids and freezer; else (hybrid hosts) a v2
/// hierarchy at `root/unified` with the v2 controllers. Fails listing what
/// each candidate lacks.
pub fn detect(root: &Path) -> Result<Box<dyn CgroupBackend>, CgroupError> {
    let mut details = Vec::new();
    if root.join("cgroup.controllers").exists() {
        match V2Backend::probe(root)? {
            Ok(backend) => return Ok(Box::new(backend)),
            Err(missing) => details.push(format!("v2 at {} lacks {missing}", root.display())),
        }
    }
    match V1Backend::probe(root)? {
        Ok(backend) => return Ok(Box::new(backend)),
        Err(missing) => details.push(format!("v1 lacks {missing}")),
    }
    let unified = root.join("unified");
    if unified.join("cgroup.controllers").exists() {
        match V2Backend::probe(&unified)? {
            Ok(backend) => return Ok(Box::new(backend)),
            Err(missing) => details.push(format!("v2 at {} lacks {missing}", unified.display())),
        }
    }
    Err(CgroupError::Unsupported {
        root: root.to_owned(),
        details: details.join("; "),
    })
}

/// One way of making cgroups (v1 or v2), chosen by [`detect`].
pub trait CgroupBackend: Send + Sync + std::fmt::Debug {
    /// Which version this is.
    fn version(&self) -> CgroupVersion;
    /// Creates `<parent>/<name>` in every hierarchy (parent created if
    /// missing, e.g. "mezzo-<agent-id>"), applies limits. Fails with
    /// [`CgroupError::Exists`] if it is already there.
    fn create(&self, parent: &str, name: &str, limits: &Limits) -> Result<Box<dyn Cgroup>, CgroupError>;
    /// Opens an existing one (agent recovery); None if it does not exist in
    /// any hierarchy. A cgroup present in only some v1 hierarchies is
    /// opened; operations skip or report the missing directories.
    fn open(&self, parent: &str, name: &str) -> Result<Option<Box<dyn Cgroup>>, CgroupError>;
    /// Names of the child cgroups under `parent` (to clean up orphans);
    /// empty if `parent` does not exist.
    fn list(&self, parent: &str) -> Result<Vec<String>, CgroupError>;
    /// Removes `parent` itself if empty; fails (EBUSY) if it still has
    /// children; nothing to do if it does not exist.
    fn remove_parent(&self, parent: &str) -> Result<(), CgroupError>;
    /// What containers made from now on may reach on the host's loopback
    /// (`loopback.rs`); `None`: anything. Set before the first `create`,
    /// which puts it on the parent. Returns why it cannot be enforced
    /// here, if it cannot (the agent then refuses to start).
    fn filter_loopback(&mut self, filter: Option<LoopbackFilter>) -> Option<String>;
}

/// One container's cgroup.
pub trait Cgroup: Send + Sync + std::fmt::Debug {
    /// Files to write a pid into to move that process into this cgroup (one
    /// per v1 hierarchy, one on v2). Another process (the container's init,
    /// after fork) writes its own pid there.
    fn procs_files(&self) -> Vec<PathBuf>;
    /// Files the container's init writes its own pid into once its task
    /// has ended, so that the cgroup is empty at once (it is removed
    /// before the init's namespaces are torn down): the parents' on v1.
    /// None on v2, whose parent may hold no process.
    fn leave_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    /// Moves `pid` into this cgroup.
    fn add_pid(&self, pid: u32) -> Result<(), CgroupError>;
    /// The processes (thread-group ids) in this cgroup, sorted.
    fn pids(&self) -> Result<Vec<u32>, CgroupError>;
    /// What it has used.
    fn usage(&self) -> Result<Usage, CgroupError>;
    /// True when the kernel OOM-killed a process here.
    fn oom_killed(&self) -> Result<bool, CgroupError>;
    /// Freezes, SIGKILLs every process, thaws, and waits (at most
    /// [`KILL_TIMEOUT`]) until no process is left; never leaves it frozen.
    fn kill_all(&self) -> Result<(), CgroupError>;
    /// kill_all, then removes the cgroup directories (retrying rmdir
    /// briefly on EBUSY). Directories already gone are fine.
    fn destroy(&self) -> Result<(), CgroupError>;
}

/// Joins a validated `parent` and `name` to a hierarchy root.
fn cgroup_path(root: &Path, parent: &str, name: Option<&str>) -> Result<PathBuf, CgroupError> {
    let invalid = |name: &str, reason| CgroupError::InvalidName {
        root: root.to_owned(),
        name: name.to_owned(),
        reason,
    };
    check_relative(parent).map_err(|r| invalid(parent, r))?;
    let mut path = root.join(parent);
    if let Some(name) = name {
        check_relative(name).map_err(|r| invalid(name, r))?;
        if name.contains('/') {
            return Err(invalid(name, "a cgroup name is a single path component"));
        }
        path.push(name);
    }
    Ok(path)
}

fn check_relative(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.contains('\0') {
        return Err("contains NUL");
    }
    if s.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Err("must be a relative path without '.', '..' or empty components");
    }
    Ok(())
}

/// Writes a control file. It is not created if missing (the kernel makes
/// control files; a missing one means a controller is not enabled).
fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    use std::io::Write;
    let op = || format!("write {value:?} to");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(CgroupError::io(op(), path))?;
    f.write_all(value.as_bytes()).map_err(CgroupError::io(op(), path))
}

fn read_file(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(CgroupError::io("read", path))
}

fn parse_u64(path: &Path, s: &str) -> Result<u64, CgroupError> {
    s.trim().parse().map_err(|e| CgroupError::Parse {
        path: path.to_owned(),
        reason: format!("{:?} is not a number: {e}", s.trim()),
    })
}

fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    parse_u64(path, &read_file(path)?)
}

/// The value of `key` in a flat-keyed file ("key value" lines), if present.
fn keyed(path: &Path, contents: &str, key: &str) -> Result<Option<u64>, CgroupError> {
    for line in contents.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some(key) {
            let value = words.next().unwrap_or("");
            return parse_u64(path, value).map(Some);
        }
    }
    Ok(None)
}

fn keyed_required(path: &Path, contents: &str, key: &str) -> Result<u64, CgroupError> {
    keyed(path, contents, key)?.ok_or_else(|| CgroupError::Parse {
        path: path.to_owned(),
        reason: format!("no {key:?} line"),
    })
}

/// The pids listed in a `cgroup.procs` file.
fn read_procs(path: &Path) -> Result<Vec<u32>, CgroupError> {
    read_file(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse().map_err(|e| CgroupError::Parse {
                path: path.to_owned(),
                reason: format!("{l:?} is not a pid: {e}"),
            })
        })
        .collect()
}

/// Names of the subdirectories of `dir`; empty if `dir` does not exist.
fn child_dirs(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CgroupError::io("list", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(CgroupError::io("list", dir))?;
        let is_dir = entry
            .file_type()
            .map_err(CgroupError::io("stat", &entry.path()))?
            .is_dir();
        if is_dir && let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Removes a cgroup directory, retrying briefly while the kernel still
/// reports it busy (tasks that just died are released asynchronously).
///
/// By hand: cgroups-rs's `delete` gives up after about 150 ms of EBUSY,
/// then removes child directories recursively (for a parent, the cgroups
/// of containers about to start), and its error names no path.
fn rmdir_retry(path: &Path) -> Result<(), CgroupError> {
    let start = Instant::now();
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) && start.elapsed() < RMDIR_TIMEOUT => {
                thread::sleep(POLL);
            }
            Err(e) => return Err(CgroupError::io("remove", path)(e)),
        }
    }
}

/// Creates each missing directory from `root` down to `path`, calling
/// `on_new` for each one created (v2 enables controllers there).
fn mkdir_all(
    root: &Path,
    path: &Path,
    mut on_new: impl FnMut(&Path) -> Result<(), CgroupError>,
) -> Result<(), CgroupError> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut cur = root.to_owned();
    for c in rel.components() {
        cur.push(c);
        match fs::create_dir(&cur) {
            Ok(()) => on_new(&cur)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(CgroupError::io("create", &cur)(e)),
        }
    }
    Ok(())
}

/// Creates the leaf cgroup directory; `Exists` if it is already there.
fn mkdir_leaf(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            CgroupError::Exists { path: path.to_owned() }
        } else {
            CgroupError::io("create", path)(e)
        }
    })
}

/// The freezer of one cgroup, as the version exposes it.
trait Freezer {
    /// Asks for frozen (true) or thawed (false).
    fn request(&self, frozen: bool) -> Result<(), CgroupError>;
    /// Whether the kernel reports it fully frozen.
    fn is_frozen(&self) -> Result<bool, CgroupError>;
}

/// The shared kill protocol: freeze (so nothing forks while we signal),
/// SIGKILL everyone, thaw (always, even on error), then poll until empty,
/// re-sending SIGKILL to anyone still listed.
fn kill_all_with(
    path: &Path,
    freezer: &dyn Freezer,
    list: &dyn Fn() -> Result<Vec<u32>, CgroupError>,
) -> Result<(), CgroupError> {
    if list()?.is_empty() {
        return Ok(());
    }
    let frozen = freeze(freezer);
    let signalled = list().and_then(|pids| signal_all(path, &pids));
    // Thaw even when freezing or signalling failed: never leave it frozen.
    let thawed = freezer.request(false);
    if let Err(e) = frozen {
        tracing::warn!(path = %path.display(), error = %e, "could not freeze cgroup; killed it unfrozen");
    }
    signalled?;
    thawed?;
    wait_empty(path, list)
}

/// Polls until `list` is empty, re-sending SIGKILL to anyone still there;
/// gives up after [`KILL_TIMEOUT`].
fn wait_empty(path: &Path, list: &dyn Fn() -> Result<Vec<u32>, CgroupError>) -> Result<(), CgroupError> {
    let start = Instant::now();
    loop {
        let pids = list()?;
        if pids.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= KILL_TIMEOUT {
            return Err(CgroupError::KillTimeout {
                path: path.to_owned(),
                pids,
                timeout: KILL_TIMEOUT,
            });
        }
        signal_all(path, &pids)?;
        thread::sleep(POLL);
    }
}

fn freeze(freezer: &dyn Freezer) -> Result<(), CgroupError> {
    let start = Instant::now();
    loop {
        freezer.request(true)?;
        if freezer.is_frozen()? || start.elapsed() >= FREEZE_TIMEOUT {
            return Ok(());
        }
        thread::sleep(POLL);
    }
}

fn signal_all(path: &Path, pids: &[u32]) -> Result<(), CgroupError> {
    for &pid in pids {
        let Ok(raw) = i32::try_from(pid) else { continue };
        if raw <= 0 {
            continue;
        }
        match kill(Pid::from_raw(raw), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::Signal {
                    path: path.to_owned(),
                    pid,
                    source,
                });
            }
        }
    }
    Ok(())
}
