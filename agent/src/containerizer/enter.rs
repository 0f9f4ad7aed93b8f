//! One more process in a running container: `mezzo __container-enter
//! RUN_DIR BASE ARGV...` (BASE: the container's [`EnterBase`] as JSON), as `nsenter` or `runc exec` start one. The agent runs
//! a task's command health checks this way (and `mezzo exec` will), so
//! they see what the task sees: its cgroup (and limits), namespaces, root,
//! user, capabilities and seccomp filter.
//!
//! The agent is multi-threaded, and a multi-threaded process may not join
//! a user namespace, so a fresh process of the `mezzo` binary does it:
//!
//! ```text
//! mezzo __container-enter   reads RUN_DIR/init.pid,
//!   │                       checks the pid is still the container's init,
//!   │                       joins its cgroups, then setns: user, ipc, uts, net, pid, mnt
//!   └─fork─▶ child          pid 1's child in the task's pid namespace: dies with its
//!                           parent (pdeathsig), new session, cwd, confinement, user, execve
//! ```
//!
//! The parent waits and exits with the child's status (128+N for signal
//! N), or [`ENTER_FAILED`] when it could not enter; killing it kills the
//! child.

// `fork` is an `unsafe fn`; the one block below says why it is sound.
#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, fork};
use serde::{Deserialize, Serialize};

/// Exit status of `mezzo __container-enter` when it could not enter the
/// container (Docker's `docker exec` uses 126 and 127 for the command).
pub const ENTER_FAILED: i32 = 125;

/// What entering a container needs besides its init's pid, kept in the
/// containerizer's record of the container, so that containers found
/// again after an agent restart can be entered too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnterBase {
    /// The container's cgroup's name, by which its init is recognised.
    pub cgroup: String,
    /// `cgroup.procs` files to join (the container's own cgroups).
    pub cgroup_procs: Vec<PathBuf>,
    /// The container has a user namespace of its own: join it first.
    pub userns: bool,
    /// Ids inside the container (inside its user namespace, if it has one).
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Working directory, as the task sees it.
    pub cwd: PathBuf,
    pub confinement: super::harden::Confinement,
    /// The task's environment, without the variables that hold secrets.
    pub env: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    #[error("invalid enter spec: {0}")]
    Spec(String),
    #[error("the container's init is not running")]
    NoInit,
    #[error("the container's task has not started yet")]
    NotStarted,
    #[error("pid {0} is no longer the container's init")]
    NotTheInit(i32),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Sys { what: &'static str, source: Errno },
    #[error("no command given")]
    NoCommand,
    #[error("a NUL byte in the command or its environment")]
    Nul,
}

/// Entry point of `mezzo __container-enter RUN_DIR BASE ARGV...`. Call it
/// before any other thread exists (no tokio runtime).
pub fn main(run_dir: &Path, base: &OsString, argv: &[OsString]) -> ! {
    let code = match enter(run_dir, base, argv) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mezzo: cannot enter the container: {e}");
            ENTER_FAILED
        }
    };
    std::process::exit(code)
}

fn enter(run_dir: &Path, base: &OsString, argv: &[OsString]) -> Result<i32, EnterError> {
    if argv.is_empty() {
        return Err(EnterError::NoCommand);
    }
    if fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1) != 1 {
        return Err(EnterError::Sys {
            what: "entering needs a single-threaded process",
            source: Errno::EINVAL,
        });
    }
    let base: EnterBase = serde_json::from_slice(base.as_bytes()).map_err(|e| EnterError::Spec(e.to_string()))?;
    // A task just reported running may be a few steps from its claim.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let pid = loop {
        match init_of(run_dir, &base.cgroup) {
            Err(EnterError::NotStarted) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => break other?,
        }
    };
    let mut kinds = Vec::new();
    if base.userns {
        kinds.push(("user", CloneFlags::CLONE_NEWUSER));
    }
    kinds.extend([
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ]);
    // All opened before any is joined: joining the mount namespace changes
    // what /proc is. The ones this process is in already are left out: the
    // host's network of a task without its own is not the user
    // namespace's to join.
    let mut namespaces = Vec::new();
    for (name, flag) in kinds {
        let path = format!("/proc/{pid}/ns/{name}");
        let file = File::open(&path).map_err(|source| EnterError::Io { what: path, source })?;
        if !same_file(&file, &format!("/proc/self/ns/{name}")) {
            namespaces.push((file, flag, name));
        }
    }
    // As host root, before the user namespace: "0" is this process.
    for path in &base.cgroup_procs {
        fs::write(path, b"0").map_err(|source| EnterError::Io {
            what: format!("joining {}", path.display()),
            source,
        })?;
    }
    for (file, flag, name) in &namespaces {
        setns(file, *flag).map_err(|source| EnterError::Io {
            what: format!("joining the {name} namespace"),
            source: source.into(),
        })?;
    }
    drop(namespaces);
    let exec = Exec::prepare(&base, argv)?;
    // SAFETY: this process is single-threaded (checked above), so the
    // child is an exact copy with no lock held by a vanished thread.
    match unsafe { fork() }.map_err(|source| EnterError::Sys { what: "fork", source })? {
        ForkResult::Child => {
            let e = exec.run();
            eprintln!("mezzo: cannot run {:?} in the container: {e}", argv[0]);
            // SAFETY: _exit ends the child at once, as after a failed exec.
            unsafe { nix::libc::_exit(if e == Errno::ENOENT { 127 } else { 126 }) }
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(source) => {
                    return Err(EnterError::Sys {
                        what: "waitpid",
                        source,
                    });
                }
            }
        },
    }
}

/// The pid of the container's init, checked: a pid the init had once but
/// another process has now is never entered (its cgroup must be the
/// container's, named `cgroup`).
pub fn init_of(run_dir: &Path, cgroup: &str) -> Result<i32, EnterError> {
    // Until the init has taken the launch claim, its namespaces, root and
    // cgroups may be half made: entering then could see the host's root.
    if super::claim::read(run_dir) != Some(super::claim::Claim::Started) {
        return Err(EnterError::NotStarted);
    }
    let pid = super::init::read_init_pid(run_dir).ok_or(EnterError::NoInit)?;
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|_| EnterError::NoInit)?;
    if !cgroups.lines().any(|l| l.ends_with(&format!("/{cgroup}"))) {
        return Err(EnterError::NotTheInit(pid));
    }
    Ok(pid)
}

/// Whether `file` is the file at `path` (a namespace is its inode).
fn same_file(file: &File, path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// The child's program, built before the fork.
struct Exec {
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: PathBuf,
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    confinement: super::harden::Prepared,
}

impl Exec {
    fn prepare(base: &EnterBase, argv: &[OsString]) -> Result<Exec, EnterError> {
        let cstring = |b: &[u8]| CString::new(b).map_err(|_| EnterError::Nul);
        let path = base.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str());
        // Looked up in the container's own root and PATH (this process is
        // in its mount namespace now).
        let program = match argv[0].to_str() {
            Some(p) if !p.contains('/') => which::which_in(p, path, &base.cwd)
                .map(|p| p.into_os_string())
                .unwrap_or_else(|_| argv[0].clone()),
            _ => argv[0].clone(),
        };
        let argv = std::iter::once(&program)
            .chain(&argv[1..])
            .map(|a| cstring(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let env = base
            .env
            .iter()
            .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let confinement =
            super::harden::Prepared::new(&base.confinement, base.uid, true).map_err(|e| EnterError::Io {
                what: "confinement".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
        Ok(Exec {
            argv,
            env,
            cwd: base.cwd.clone(),
            uid: Uid::from_raw(base.uid),
            gid: Gid::from_raw(base.gid),
            groups: base.groups.iter().copied().map(Gid::from_raw).collect(),
            confinement,
        })
    }

    /// In the child: returns only on failure.
    fn run(&self) -> Errno {
        let steps = || -> Result<(), Errno> {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The Rust runtime of `mezzo` ignores SIGPIPE; the command must not.
            // SAFETY: restoring the default disposition installs no handler.
            unsafe {
                nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl)
            }?;
            // The parent is outside this pid namespace: 0 while it lives.
            if nix::unistd::getppid().as_raw() != 0 {
                return Err(Errno::ESRCH);
            }
            nix::unistd::setsid()?;
            // A terminal on stdin (`mezzo exec -t`) becomes the session's.
            if nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
                // SAFETY: TIOCSCTTY takes an integer argument only.
                Errno::result(unsafe { nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) })?;
            }
            nix::unistd::chdir(&self.cwd)?;
            self.confinement.before_user()?;
            nix::unistd::setgroups(&self.groups)?;
            nix::unistd::setgid(self.gid)?;
            nix::unistd::setuid(self.uid)?;
            self.confinement.after_user()?;
            nix::unistd::execve(&self.argv[0], &self.argv, &self.env)?;
            Ok(())
        };
        match steps() {
            Ok(()) => Errno::UnknownErrno,
            Err(e) => e,
        }
    }
}
