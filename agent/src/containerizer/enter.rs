//! One more process in a running container: `mezzo __container-enter
//! RUN_DIR ARGV...` (the container's [`EnterBase`] is in RUN_DIR, root's
//! only: not on a command line every host user can read), as `nsenter` or `runc exec` start one. The agent runs
//! a task's command health checks this way (and `mezzo exec` will), so
//! they see what the task sees: its cgroup (and limits), namespaces, root,
//! user, capabilities and seccomp filter.
//!
//! The agent is multi-threaded, and a multi-threaded process may not join
//! a user namespace, so a fresh process of the `mezzo` binary does it:
//!
//! ```text
//! mezzo __container-enter   reads RUN_DIR/enter.json and init.pid, opens /proc/PID,
//!   │                       checks the pid is still the container's init,
//!   │                       joins its cgroups, then setns: user, ipc, uts, net, pid, mnt
//!   └─fork─▶ child          pid 1's child in the task's pid namespace: not dumpable, no fd
//!                           but stdio, new session, confinement and user, then (as the
//!                           task's user) dies with its parent (pdeathsig), cwd, execve
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

/// Entry point of `mezzo __container-enter RUN_DIR ARGV...`. Call it
/// before any other thread exists (no tokio runtime).
pub fn main(run_dir: &Path, argv: &[OsString]) -> ! {
    let code = match enter(run_dir, argv) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mezzo: cannot enter the container: {e}");
            ENTER_FAILED
        }
    };
    std::process::exit(code)
}

/// The file in a container's run dir holding its [`EnterBase`].
pub const BASE_FILE: &str = "enter.json";

/// Records how to enter the container of `run_dir` (root's only, as the
/// run dir).
pub fn write_base(run_dir: &Path, base: &EnterBase) -> Result<(), String> {
    let bytes = serde_json::to_vec(base).map_err(|e| e.to_string())?;
    crate::paths::write_replace(&run_dir.join(BASE_FILE), &bytes).map_err(|e| e.to_string())
}

fn enter(run_dir: &Path, argv: &[OsString]) -> Result<i32, EnterError> {
    if argv.is_empty() {
        return Err(EnterError::NoCommand);
    }
    if fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1) != 1 {
        return Err(EnterError::Sys {
            what: "entering needs a single-threaded process",
            source: Errno::EINVAL,
        });
    }
    let base_path = run_dir.join(BASE_FILE);
    let base = fs::read(&base_path).map_err(|source| EnterError::Io {
        what: base_path.display().to_string(),
        source,
    })?;
    let base: EnterBase = serde_json::from_slice(&base).map_err(|e| EnterError::Spec(e.to_string()))?;
    // Built before any namespace is joined: nothing read from the
    // container's files while this process is still root there.
    let exec = Exec::prepare(&base, argv)?;
    // A task just reported running may be a few steps from its claim.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let proc_dir = loop {
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
        let file = proc_dir.open(&format!("ns/{name}"))?;
        if !same_file(&file, &format!("/proc/self/ns/{name}")) {
            namespaces.push((file, flag, name));
        }
    }
    // Still the init (not a process that took its pid since): the
    // namespaces opened are the container's.
    proc_dir.check(&base.cgroup)?;
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
    drop(proc_dir);
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

/// The container's init's `/proc/PID`, opened and checked: a pid the
/// init had once but another process has now is never entered (its
/// cgroup must be the container's, named `cgroup`). Files read through
/// the directory are that process's, or fail once it is gone.
pub fn init_of(run_dir: &Path, cgroup: &str) -> Result<ProcDir, EnterError> {
    // Until the init has taken the launch claim, its namespaces, root and
    // cgroups may be half made: entering then could see the host's root.
    if super::claim::read(run_dir) != Some(super::claim::Claim::Started) {
        return Err(EnterError::NotStarted);
    }
    let pid = super::init::read_init_pid(run_dir).ok_or(EnterError::NoInit)?;
    let dir = File::open(format!("/proc/{pid}")).map_err(|_| EnterError::NoInit)?;
    let dir = ProcDir { pid, dir };
    dir.check(cgroup)?;
    Ok(dir)
}

/// An open `/proc/PID` directory.
pub struct ProcDir {
    pid: i32,
    dir: File,
}

impl ProcDir {
    /// `name` beneath it, read-only.
    pub fn open(&self, name: &str) -> Result<File, EnterError> {
        let fd = nix::fcntl::openat(
            &self.dir,
            name,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| EnterError::Io {
            what: format!("/proc/{}/{name}", self.pid),
            source: e.into(),
        })?;
        Ok(File::from(fd))
    }

    /// Its process is in the cgroup named `cgroup`.
    fn check(&self, cgroup: &str) -> Result<(), EnterError> {
        let mut text = String::new();
        use std::io::Read;
        self.open("cgroup")?
            .read_to_string(&mut text)
            .map_err(|_| EnterError::NoInit)?;
        match text.lines().any(|l| l.ends_with(&format!("/{cgroup}"))) {
            true => Ok(()),
            false => Err(EnterError::NotTheInit(self.pid)),
        }
    }
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
    /// Where to run `argv[0]` from: itself when it names a path, else
    /// each directory of the task's PATH in turn (looked up inside the
    /// container, as the task's user, by trying them).
    programs: Vec<CString>,
    cwd: PathBuf,
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    confinement: super::harden::Prepared,
}

impl Exec {
    fn prepare(base: &EnterBase, argv: &[OsString]) -> Result<Exec, EnterError> {
        let cstring = |b: &[u8]| CString::new(b).map_err(|_| EnterError::Nul);
        let path = base
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or("/usr/local/bin:/usr/bin:/bin", |(_, v)| v.as_str());
        let program = argv[0].as_bytes();
        let programs = match program.contains(&b'/') {
            true => vec![cstring(program)?],
            false => path
                .split(':')
                .filter(|d| !d.is_empty())
                .map(|d| cstring(&[d.as_bytes(), b"/", program].concat()))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let argv = argv
            .iter()
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
            programs,
            cwd: base.cwd.clone(),
            uid: Uid::from_raw(base.uid),
            gid: Gid::from_raw(base.gid),
            groups: base.groups.iter().copied().map(Gid::from_raw).collect(),
            confinement,
        })
    }

    /// In the child: returns only on failure.
    fn run(&self) -> Errno {
        use nix::sys::signal::{SigHandler, Signal, signal};
        let steps = || -> Result<(), Errno> {
            // Not to be ptraced or have /proc/PID/exe opened (the host's
            // `mezzo`) by the container until its execve.
            nix::sys::prctl::set_dumpable(false)?;
            // Only stdio goes on: nothing the agent or this process had
            // open (a pty of another session) reaches the container.
            // SAFETY: close_range takes integers only.
            Errno::result(unsafe { nix::libc::syscall(nix::libc::SYS_close_range, 3u32, u32::MAX, 0u32) })?;
            // The Rust runtime of `mezzo` ignores SIGPIPE; the command must not.
            // SAFETY: restoring the default disposition installs no handler.
            unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }?;
            nix::unistd::setsid()?;
            // A terminal on stdin (`mezzo exec -t`) becomes the session's.
            if nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
                // SAFETY: TIOCSCTTY takes an integer argument only.
                Errno::result(unsafe { nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) })?;
            }
            self.confinement.before_user()?;
            nix::unistd::setgroups(&self.groups)?;
            nix::unistd::setgid(self.gid)?;
            nix::unistd::setuid(self.uid)?;
            self.confinement.after_user()?;
            // A change of user clears the parent-death signal: set now,
            // then make sure the parent (outside this pid namespace, so
            // 0 here while it lives) has not gone meanwhile.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid().as_raw() != 0 {
                return Err(Errno::ESRCH);
            }
            // As the task's user, without capabilities: a working
            // directory the task swapped for a link out of its root is
            // followed no further than the task itself could.
            nix::unistd::chdir(&self.cwd)?;
            let mut last = Errno::ENOENT;
            for program in &self.programs {
                match nix::unistd::execve(program, &self.argv, &self.env) {
                    // Not there (or not a directory there): the next one.
                    Err(e @ (Errno::ENOENT | Errno::ENOTDIR)) => last = e,
                    Err(Errno::EACCES) => last = Errno::EACCES,
                    Err(e) => return Err(e),
                }
            }
            Err(last)
        };
        match steps() {
            Ok(()) => Errno::UnknownErrno,
            Err(e) => e,
        }
    }
}
