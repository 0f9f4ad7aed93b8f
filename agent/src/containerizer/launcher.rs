//! The container launcher: one long-lived `mezzo __container-init
//! --launcher` process per agent that starts each container's init. This
//! file is the agent's side; the launcher process itself runs in
//! [`super::init`] (`serve_launcher`), with the rest of the code that runs
//! outside the agent, so imports point one way: launcher → init.
//!
//! Re-executing the `mezzo` binary for every container (dynamic loading,
//! relocations and Rust start-up of a large binary, about 1.5 ms of CPU on
//! this kind of machine) was the largest cost of an isolated launch. The
//! launcher is started once, as a fresh single-threaded process (so `fork`
//! is safe there, as in [`super::init`]); for each container the agent
//! writes the [`InitSpec`] as one JSON line on the launcher's stdin and the
//! launcher clones the container's init into its namespaces (or, with a
//! user namespace, forks a supervisor that does), then answers the pid to
//! wait for as one line on its stdout ([`LaunchReply`]).
//!
//! ```text
//! agent ──spawn once──▶ launcher ──clone per container──▶ init ─vfork─▶ task
//!   (each launch's blocking step writes a spec and reads a pid, under a mutex)
//! ```
//!
//! The launcher ignores SIGCHLD, so the kernel reaps inits (and
//! supervisors) as they exit; the agent waits for one with a pidfd
//! ([`PidFd`]), which works for processes that are not its children (also
//! after a restart). Inits leave the launcher's session and outlive both
//! the agent and the launcher: the launcher exits at EOF on its stdin,
//! that is when the agent is gone, and a restarted agent starts a new one.

// `pidfd_open` and registering a pidfd with tokio are `unsafe`; every
// block says why it is sound.
#![allow(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use nix::errno::Errno;
use tokio::io::unix::AsyncFd;

use super::ContainerError;
use super::init::{InitSpec, LAUNCHER_ARG, LaunchReply};

/// The agent's handle on its launcher process, started on the first
/// launch (and again if it ever dies). A launch is a blocking call (write
/// the spec, read the pid) made from the blocking step of a container's
/// launch, so it costs no extra thread hand-off; the mutex only keeps one
/// request and its answer together on the pipes.
#[derive(Debug)]
pub struct Launcher {
    exe: PathBuf,
    process: Mutex<Option<Process>>,
}

impl Launcher {
    pub fn new(exe: PathBuf) -> Launcher {
        Launcher {
            exe,
            process: Mutex::new(None),
        }
    }

    /// Starts the container of `spec` and returns the pid whose end means
    /// its exit record is final (see [`LaunchReply`]). Blocks.
    pub fn launch(&self, spec: &InitSpec) -> Result<u32, ContainerError> {
        let mut process = self.process.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        launch_once(&self.exe, &mut process, spec).or_else(|e| {
            // A dead or broken launcher: start a new one and try once more.
            tracing::warn!("container launcher failed ({e}); restarting it");
            if let Some(p) = process.take() {
                p.stop();
            }
            launch_once(&self.exe, &mut process, spec)
        })
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let process = self.process.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(p) = process.take() {
            p.stop();
        }
    }
}

#[derive(Debug)]
struct Process {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Process {
    fn spawn(exe: &PathBuf) -> std::io::Result<Process> {
        let mut child = Command::new(exe)
            .arg("__container-init")
            .arg(LAUNCHER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(std::io::Error::other("launcher pipes missing"));
        };
        Ok(Process {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    /// Closes its stdin (it exits at EOF) and reaps it.
    fn stop(mut self) {
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

fn launch_once(exe: &PathBuf, process: &mut Option<Process>, spec: &InitSpec) -> Result<u32, ContainerError> {
    let io_err = |what: &str, e: std::io::Error| ContainerError::Spawn {
        program: format!("{} __container-init {LAUNCHER_ARG} ({what})", exe.display()),
        source: e,
    };
    if process.is_none() {
        *process = Some(Process::spawn(exe).map_err(|e| io_err("start", e))?);
    }
    let Some(p) = process.as_mut() else {
        return Err(ContainerError::Isolation("no container launcher".into()));
    };
    let mut line = serde_json::to_vec(spec).map_err(|e| ContainerError::Isolation(e.to_string()))?;
    line.push(b'\n');
    p.stdin.write_all(&line).map_err(|e| io_err("write", e))?;
    let mut answer = String::new();
    if p.stdout.read_line(&mut answer).map_err(|e| io_err("read", e))? == 0 {
        return Err(io_err("read", std::io::ErrorKind::UnexpectedEof.into()));
    }
    match serde_json::from_str::<LaunchReply>(&answer) {
        Ok(LaunchReply::Pid(pid)) => Ok(pid),
        Ok(LaunchReply::Error(e)) => Err(ContainerError::Isolation(format!("container launcher: {e}"))),
        Err(e) => Err(io_err("decode", std::io::Error::other(e))),
    }
}

/// A process to wait for that need not be our child (Linux 5.3+ pidfd):
/// readable once the process has exited.
#[derive(Debug)]
pub struct PidFd(AsyncFd<OwnedFd>);

impl PidFd {
    /// `Ok(None)` when no process has that pid (it already ended).
    pub fn open(pid: u32) -> std::io::Result<Option<PidFd>> {
        let Ok(raw_pid) = nix::libc::pid_t::try_from(pid) else {
            return Ok(None);
        };
        let owned = match super::init::pidfd_open(raw_pid) {
            Ok(fd) => fd,
            Err(Errno::ESRCH) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // SAFETY: the AsyncFd owns the descriptor, so it stays open for as
        // long as it is registered.
        let async_fd = unsafe { AsyncFd::register(owned) }?;
        Ok(Some(PidFd(async_fd)))
    }

    /// Sends `signal` to exactly this process (`pidfd_send_signal`, Linux
    /// 5.1+): never to another that reused its pid. `Ok` also when it has
    /// ended.
    pub fn send_signal(&self, signal: nix::sys::signal::Signal) -> Result<(), Errno> {
        use std::os::fd::AsRawFd;
        // SAFETY: a signal number, a descriptor this value owns, no
        // siginfo (NULL) and no flags; the kernel reads nothing of ours.
        let rc = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_pidfd_send_signal,
                self.0.get_ref().as_raw_fd(),
                signal as nix::libc::c_int,
                std::ptr::null::<nix::libc::siginfo_t>(),
                0 as nix::libc::c_uint,
            )
        };
        match Errno::result(rc) {
            Ok(_) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits until the process has exited. Cancel-safe.
    pub async fn exited(&self) -> std::io::Result<()> {
        self.0.readable().await.map(|mut guard| guard.retain_ready())
    }

    /// The process's wait status once it has ended and been reaped (see
    /// [`exit_status`]).
    pub fn exit_status(&self) -> Option<i32> {
        use std::os::fd::AsFd;
        exit_status(self.0.get_ref().as_fd())
    }
}

/// The wait status of the process `pidfd` refers to, once it has ended
/// and been reaped (`PIDFD_GET_INFO` asking for `PIDFD_INFO_EXIT`, Linux
/// 6.15+: any holder of the pidfd may ask, not only the parent). `None`
/// while it runs or is not reaped yet, and on an older kernel.
pub fn exit_status(pidfd: std::os::fd::BorrowedFd<'_>) -> Option<i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: `pidfd_info` is plain integers, for which all zeroes is a
    // valid value.
    let mut info: nix::libc::pidfd_info = unsafe { std::mem::zeroed() };
    info.mask = u64::from(nix::libc::PIDFD_INFO_EXIT);
    // SAFETY: the kernel writes at most a `pidfd_info` into `info`, which
    // lives across the call; the descriptor is borrowed, so open.
    let rc = unsafe {
        nix::libc::ioctl(
            pidfd.as_raw_fd(),
            nix::libc::PIDFD_GET_INFO,
            &mut info as *mut nix::libc::pidfd_info,
        )
    };
    (rc == 0 && info.mask & u64::from(nix::libc::PIDFD_INFO_EXIT) != 0).then_some(info.exit_code)
}
