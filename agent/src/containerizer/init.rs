//! The container init (and, with a user namespace, its supervisor), and the
//! launcher process that starts them (`mezzo __container-init --launcher`,
//! whose agent side is [`super::launcher`]). Everything here runs in those
//! helper processes, never in the agent.
//!
//! The agent is a multi-threaded tokio process, so it never forks and then
//! sets up namespaces itself. Instead it hands an [`InitSpec`] to its
//! launcher (the `mezzo` binary started once in this internal mode, a
//! fresh single-threaded process, see [`super::launcher`]), which clones
//! the container's init straight into its namespaces ([`start_init`]):
//!
//! ```text
//! launcher ─clone(ns)─▶ init   setsid; writes run_dir/init.pid; "pid 1": joins the
//!                       │      cgroups, builds the view, sets the hostname, brings lo up,
//!                       │      takes the launch claim (`super::claim`); forwards signals
//!                       │      to the task, reaps orphans, writes run_dir/exit, exits
//!                       └─vfork─▶ task  stdio, chdir, setgroups/setgid/setuid, execve
//!                                       (clone(CLONE_VM|CLONE_VFORK), see `TaskExec`)
//! ```
//!
//! The agent waits for the init's end (a pidfd) and reads `exit`. An init
//! ends without one when it is killed (the agent's SIGKILL, the OOM killer,
//! an operator), and otherwise only if it cannot write it (its run dir, on
//! the agent's runtime dir, full) or crashes: the agent reports a kill.
//!
//! With a user namespace (`mezzo agent --user-namespaces`) someone outside
//! the namespace must write its id maps, move the init into the cgroups
//! and take the launch claim for it, so the launcher forks a supervisor
//! ([`supervise`]; `mezzo __container-init SPEC` does the same from a spec
//! file) that clones the init into the user namespace and the others at
//! once; the init becomes root of its namespace before it builds the view
//! (see [`super::userns`]), reports its end to the supervisor, and the
//! supervisor writes `exit`, also when the init was killed:
//!
//! ```text
//! launcher ─fork─▶ supervisor  setsid; ignores TERM/INT/HUP; writes supervisor.pid and
//!                  │           init.pid; maps the init's namespace; waits; writes exit
//!                  └─clone(userns, ns)─▶ init ─vfork─▶ task
//! ```
//!
//! Inits and supervisors live in sessions of their own and outlive the
//! agent and its launcher: `exit` is written even when no agent is
//! watching, and a restarted agent finds `init.pid` and `exit` in the run
//! directory (DESIGN.md, "Agent recovery"). The agent signals the *init*
//! pid; the init forwards TERM, INT, HUP, QUIT, USR1 and USR2 to the task.
//! SIGKILL to the init ends the whole pid namespace.
//!
//! Errors before the task starts are appended to the task's stderr file and
//! recorded as [`ExitRecord::Error`].

// `fork` is an `unsafe fn`, and so are setting signal dispositions and the
// ioctl that brings `lo` up. Every `unsafe` block below says why it is sound.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigHandler, SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use serde::{Deserialize, Serialize};

use super::ExitStatus;

mod netns_pool;
mod task_exec;
use task_exec::{Stdio, Step, TASK_STACK, TaskExec, TaskFailure};

/// Name of the file in `run_dir` holding the init's pid (host pid namespace).
pub const INIT_PID_FILE: &str = "init.pid";
/// Name of the file in `run_dir` holding the supervisor's own pid, written
/// first thing (the agent records it too, but only once the fork returned).
pub const SUPERVISOR_PID_FILE: &str = "supervisor.pid";
/// Name of the file in `run_dir` holding the [`ExitRecord`] as JSON.
pub const EXIT_FILE: &str = "exit";

/// Signals the init passes on to the task.
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];
/// Signals the supervisor ignores: the agent signals the init, never the
/// supervisor, and a terminal hang-up or Ctrl-C must not lose the exit record.
const IGNORED_BY_SUPERVISOR: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];
/// Exit code of the task process when it could not be started.
const EXEC_FAILED: i32 = 127;
/// The exit record of a container whose task the agent's recovery dropped
/// before it started.
pub const DROPPED_BY_RECOVERY: &str = "dropped by the agent's recovery before the task started";

/// Which namespaces the container gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    pub pid: bool,
    pub mount: bool,
    pub uts: bool,
    pub ipc: bool,
    pub net: bool,
}

/// Everything the supervisor needs; written by the agent with [`write_spec`].
/// Keep the spec file inside `run_dir`: if the spec cannot be read, the
/// error is recorded in the spec file's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitSpec {
    /// Container id, for messages.
    pub id: String,
    /// Per-container directory created by the agent; receives `init.pid` and `exit`.
    pub run_dir: PathBuf,
    /// Working directory of the task.
    pub sandbox: PathBuf,
    /// Opened `O_APPEND|O_CREAT` for the task, so the agent may rotate them
    /// by copy and truncate.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// `argv[0]` is the absolute path of the program.
    pub argv: Vec<String>,
    /// The complete environment.
    pub env: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Set in a new UTS namespace (implies `namespaces.uts`).
    pub hostname: Option<String>,
    pub namespaces: Namespaces,
    /// `cgroup.procs` (or v1 `tasks`) files the init joins before forking
    /// the task, so only the init and the task are in the cgroups.
    pub cgroup_procs: Vec<PathBuf>,
    /// `cgroup.procs` files the init moves itself to once the task has
    /// ended and every process of its pid namespace is gone, so the
    /// container's cgroups are empty before its namespaces are torn down.
    #[serde(default)]
    pub cgroup_leave: Vec<PathBuf>,
    /// Capabilities, no new privileges and the seccomp filter of the task
    /// (`super::harden`).
    #[serde(default)]
    pub confinement: super::harden::Confinement,
    /// The task's file system (`super::rootfs`); `None` keeps the host's
    /// (needs `namespaces.mount`).
    #[serde(default)]
    pub view: Option<super::rootfs::View>,
    /// The task's working directory inside its view (an image's
    /// `WorkingDir`, made if missing); `None`: its sandbox.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// A user namespace of its own, with these ids (`super::userns`);
    /// `uid`, `gid` and `groups` are then ids inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<super::userns::IdRange>,
}

impl InitSpec {
    /// Built by a supervisor process that records the exit (a container
    /// with a user namespace: someone outside it maps it and takes the
    /// launch claim), rather than by an init the launcher clones and that
    /// records the exit itself. The agent waits for the supervisor, or the
    /// init, to end.
    pub fn supervised(&self) -> bool {
        self.userns.is_some()
    }
}

/// How the task ended, as recorded in `run_dir/exit`:
/// `{"code": N}`, `{"signal": N}` or `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitRecord {
    /// The task exited with this code (127: the program could not be executed).
    Code(i32),
    /// The task was killed by this signal. Also recorded when the init
    /// itself was killed (SIGKILL to the init kills the whole container).
    Signal(i32),
    /// The container could not be started.
    Error(String),
}

impl ExitRecord {
    /// The task's exit status, or `None` if it never started.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match self {
            ExitRecord::Code(c) => Some(ExitStatus::Code(*c)),
            ExitRecord::Signal(s) => Some(ExitStatus::Signal(*s)),
            ExitRecord::Error(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot read init spec {}: {source}", path.display())]
    ReadSpec { path: PathBuf, source: io::Error },
    #[error("invalid init spec {}: {source}", path.display())]
    ParseSpec { path: PathBuf, source: serde_json::Error },
    #[error("invalid init spec for container {id}: {reason}")]
    InvalidSpec { id: String, reason: String },
    #[error("container init must start single-threaded, but has {0} threads")]
    NotSingleThreaded(usize),
    #[error("{op} failed: {source}")]
    Sys { op: &'static str, source: Errno },
    #[error("cannot join cgroup via {}: {source}", path.display())]
    Cgroup { path: PathBuf, source: io::Error },
    #[error("cannot mount proc on /proc: {0}")]
    MountProc(Errno),
    #[error(transparent)]
    View(#[from] super::rootfs::ViewError),
    #[error("cannot set hostname {hostname:?}: {source}")]
    Hostname { hostname: String, source: Errno },
    #[error("cannot bring up the loopback interface: {0}")]
    Loopback(Errno),
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot enter sandbox {}: {source}", path.display())]
    Sandbox { path: PathBuf, source: Errno },
    #[error("cannot switch to uid {uid} gid {gid} groups {groups:?}: {source}")]
    User {
        uid: u32,
        gid: u32,
        groups: Vec<u32>,
        source: Errno,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    /// Reported by the task process before it could exec.
    #[error("{0}")]
    Task(String),
    #[error(transparent)]
    Userns(#[from] super::userns::UsernsError),
}

fn sys(op: &'static str) -> impl FnOnce(Errno) -> InitError {
    move |source| InitError::Sys { op, source }
}

/// Entry point of `mezzo __container-init SPEC` (and of `mezzo
/// __container-init --launcher`, see [`serve_launcher`]). Call it before
/// any other thread exists (no tokio runtime). Exits 0 once the task's
/// status is recorded, 1 if the container could not be started.
pub fn main(spec_path: &Path) -> ! {
    if spec_path.as_os_str() == LAUNCHER_ARG {
        serve_launcher();
    }
    let spec = match read_spec(spec_path) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("mezzo container-init: {e}");
            if let Some(dir) = spec_path.parent() {
                let _ = write_exit(dir, &ExitRecord::Error(e.to_string()));
            }
            std::process::exit(1);
        }
    };
    // Alone (no launcher to reap it later): wait for the init.
    supervise(&spec, true)
}

/// The argument (after `__container-init`) that starts a launcher.
pub const LAUNCHER_ARG: &str = "--launcher";

/// The launcher's answer to one request, a JSON line on its stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LaunchReply {
    /// The pid whose end means the exit record is final: the init's, or
    /// with a supervisor ([`InitSpec::supervised`]) the supervisor's.
    Pid(u32),
    Error(String),
}

/// The launcher process (its agent side is [`super::launcher`]): reads
/// [`InitSpec`]s from stdin, one JSON line each, starts each container
/// ([`launch`]), answers the pid to wait for. Exits at EOF. Call only in a fresh,
/// single-threaded process (`mezzo __container-init --launcher`).
fn serve_launcher() -> ! {
    // The kernel reaps the inits and supervisors (they are waited for by
    // pidfd), and, as a subreaper, the inits a supervisor left behind once
    // it had their report (see `run`).
    if let Err(e) =
        set_disposition(Signal::SIGCHLD, SigHandler::SigIgn).and_then(|()| nix::sys::prctl::set_child_subreaper(true))
    {
        eprintln!("mezzo container launcher: {e}");
        std::process::exit(1);
    }
    // Compiled once here, inherited by every init this process clones.
    super::harden::warm();
    // Without it (no /proc?) every container makes its own namespace.
    let mut pool = netns_pool::NetnsPool::new().ok();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let reply = match serde_json::from_str::<InitSpec>(&line) {
            Ok(spec) => launch(&spec, &mut pool),
            Err(e) => LaunchReply::Error(format!("invalid init spec: {e}")),
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"error\":\"encoding\"}".to_vec());
        out.push(b'\n');
        if stdout.write_all(&out).and_then(|()| stdout.flush()).is_err() {
            break;
        }
    }
    std::process::exit(0);
}

/// Starts one container. Without a user namespace the launcher clones the
/// container's init itself, into its namespaces, and the init records the
/// task's exit ([`start_init`]); with one, a supervisor builds it
/// ([`fork_supervisor`]). Replies the pid whose end means the exit record
/// is final (or will never come).
fn launch(spec: &InitSpec, pool: &mut Option<netns_pool::NetnsPool>) -> LaunchReply {
    if let Err(e) = ensure_single_threaded() {
        return LaunchReply::Error(e.to_string());
    }
    if spec.supervised() {
        fork_supervisor(spec, pool)
    } else {
        start_init(spec, pool)
    }
}

/// A supervisor for a container with a user namespace (`supervise`): it
/// maps the namespace and takes the launch claim for the init, which
/// cannot, and records the exit.
fn fork_supervisor(spec: &InitSpec, pool: &mut Option<netns_pool::NetnsPool>) -> LaunchReply {
    // The user namespace image layers are mapped by, made once here and
    // inherited by every supervisor (`userns::layer_userns`); on failure the
    // supervisor tries again and reports it.
    if let (Some(range), true) = (spec.userns, spec.view.as_ref().is_some_and(|v| v.image.is_some())) {
        let _ = super::userns::layer_userns(range);
    }
    // SAFETY: the launcher is single-threaded (checked by `launch`), so the
    // child is an exact copy with no lock held by a vanished thread.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            leave_launcher(pool);
            supervise(spec, false)
        }
        Ok(ForkResult::Parent { child }) => LaunchReply::Pid(child.as_raw() as u32),
        Err(e) => LaunchReply::Error(format!("fork: {e}")),
    }
}

/// In a process the launcher just made: not the agent's pipes (the agent
/// must see EOF when the launcher goes, whatever containers do), SIGCHLD
/// back to its default (the launcher ignores it, a supervisor or init
/// waits for its child), and none of the pool's namespaces.
fn leave_launcher(pool: &mut Option<netns_pool::NetnsPool>) {
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
    }
    let _ = set_disposition(Signal::SIGCHLD, SigHandler::SigDfl);
    drop(pool.take());
}

/// The cloned init's work (see [`init_main`]); `run_dir` is a descriptor
/// of the run dir; returns its exit code.
fn run_alone(spec: &InitSpec, run_dir: BorrowedFd<'_>) -> i32 {
    // Its host pid, for whoever signals the container, before anything
    // else: before the launch claim, so that a task that may have started
    // always has it on disk. `/proc` is still the host's.
    let pid = match fs::read_link("/proc/self") {
        Ok(pid) => pid,
        Err(source) => {
            return fail_alone(
                spec,
                InitError::Open {
                    path: "/proc/self".into(),
                    source,
                },
            );
        }
    };
    let mut line = pid.into_os_string().into_encoded_bytes();
    line.push(b'\n');
    let pid_file = spec.run_dir.join(INIT_PID_FILE);
    if let Err(source) = write_atomic(&pid_file, &line) {
        return fail_alone(spec, InitError::Write { path: pid_file, source });
    }
    if let Err(e) = validate(spec) {
        return fail_alone(spec, e);
    }
    container_init(spec, Report::RunDir(run_dir), None, None)
}

/// A cloned init that could not start the container: the error goes to
/// the task's stderr and into its exit record.
fn fail_alone(spec: &InitSpec, error: InitError) -> i32 {
    let message = error.to_string();
    append_stderr(spec, &message);
    let _ = write_exit(&spec.run_dir, &ExitRecord::Error(message));
    1
}

/// The init, cloned straight into the container's namespaces: one process
/// fewer per container than a supervisor forking it (a fork, its page
/// faults and its exit: launches a quarter to a third faster two and eight
/// at a time, BENCHMARKS.md).
fn start_init(spec: &InitSpec, pool: &mut Option<netns_pool::NetnsPool>) -> LaunchReply {
    // A lent network namespace (see `netns_pool`) for a container with its
    // own pid namespace and a view; on any failure the init makes one.
    let lent = match pool {
        Some(pool) if spec.namespaces.net && spec.namespaces.pid && spec.view.is_some() => pool.take().ok(),
        _ => None,
    };
    let mut flags = clone_flags(spec);
    if lent.is_some() {
        flags.remove(CloneFlags::CLONE_NEWNET);
    }
    // Blocked before the clone, so the init starts with the mask it needs:
    // a signal the agent sends as soon as it has the pid stays pending
    // until the init collects it with sigwait.
    let old_mask = match init_mask().thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK) {
        Ok(old) => old,
        Err(e) => return LaunchReply::Error(format!("sigprocmask: {e}")),
    };
    // SAFETY: the launcher is single-threaded (checked by `launch`).
    match unsafe { clone_fork(flags, lent.is_some()) } {
        Ok(None) => init_main(spec, pool, lent),
        Ok(Some((child, pidfd))) => {
            let _ = old_mask.thread_set_mask();
            if let (Some(pool), Some(ns), Some(pidfd)) = (pool.as_mut(), lent, pidfd) {
                pool.lend(pidfd, ns);
            }
            LaunchReply::Pid(child.as_raw() as u32)
        }
        Err(e) => {
            let _ = old_mask.thread_set_mask();
            LaunchReply::Error(format!("clone: {e}"))
        }
    }
}

/// The cloned init's start: leaves the launcher's session and pipes,
/// records its pid, runs the container and records its exit itself.
fn init_main(spec: &InitSpec, pool: &mut Option<netns_pool::NetnsPool>, lent: Option<OwnedFd>) -> ! {
    // Its own session: signals to the agent's process group (a terminal's
    // Ctrl-C) do not reach the container.
    let _ = nix::unistd::setsid();
    leave_launcher(pool);
    // Opened while on the host's view: the exit is recorded through it,
    // also after a panic in the task's view.
    let code = match nix::fcntl::open(
        &spec.run_dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Err(source) => fail_alone(
            spec,
            InitError::Open {
                path: spec.run_dir.clone(),
                source: source.into(),
            },
        ),
        Ok(run_dir) => run_guarded(spec, lent, &run_dir),
    };
    // Without the C library's exit handlers and the loader's finalizers,
    // which fault in pages of this copy of the launcher for nothing:
    // everything the init wrote went straight to its files.
    // SAFETY: _exit ends this process at once; it touches no memory of ours.
    unsafe { nix::libc::_exit(code) }
}

/// [`run_alone`] with the lent network namespace joined, a panic recorded
/// through `run_dir` instead of unwinding.
fn run_guarded(spec: &InitSpec, lent: Option<OwnedFd>, run_dir: &OwnedFd) -> i32 {
    // A panic must not unwind into the launcher's loop, of which this
    // process is a copy.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let joined;
        let spec = match lent {
            None => spec,
            Some(ns) => match nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET) {
                Ok(()) => {
                    // `lo` is up already.
                    joined = InitSpec {
                        namespaces: Namespaces {
                            net: false,
                            ..spec.namespaces.clone()
                        },
                        ..spec.clone()
                    };
                    &joined
                }
                // Cloned without one for the lent one: a namespace of its own.
                Err(_) => match unshare(CloneFlags::CLONE_NEWNET) {
                    Ok(()) => spec,
                    Err(source) => return fail_alone(spec, InitError::Sys { op: "unshare", source }),
                },
            },
        };
        run_alone(spec, run_dir.as_fd())
    }))
    .unwrap_or_else(|_| {
        // Not to the task's stderr: after the view is entered its host
        // path may lead elsewhere.
        let _ = write_exit_at(run_dir, &ExitRecord::Error("the container's init panicked".into()));
        1
    })
}

/// The supervisor of one container, in a fresh single-threaded process:
/// leaves the agent's session, runs the container and records its exit.
/// `reap_init`: wait for the init to be gone before recording its end;
/// under the launcher, which reaps orphaned inits, the init's own report
/// is enough.
pub fn supervise(spec: &InitSpec, reap_init: bool) -> ! {
    // Leave the agent's session and process group, so signals to the
    // agent's group do not reach us. EPERM means we already lead a process
    // group (the agent spawned us with one of our own), which is as good.
    let _ = nix::unistd::setsid();
    let pid = std::process::id();
    let _ = write_atomic(&spec.run_dir.join(SUPERVISOR_PID_FILE), format!("{pid}\n").as_bytes());
    let record = match run(spec, reap_init) {
        Ok(record) => record,
        Err(e) => {
            let message = e.to_string();
            append_stderr(spec, &message);
            ExitRecord::Error(message)
        }
    };
    if let Err(e) = write_exit(&spec.run_dir, &record) {
        let message = e.to_string();
        append_stderr(spec, &message);
        std::process::exit(1);
    }
    std::process::exit(if matches!(record, ExitRecord::Error(_)) { 1 } else { 0 });
}

/// The supervisor's work without `setsid` and without writing `exit`:
/// unshares the namespaces, forks the init, writes `init.pid`, waits and
/// returns what to record. `Err` is a failure of the supervisor itself;
/// failures reported by the init come back as `Ok(ExitRecord::Error)`
/// (already written to the task's stderr file).
///
/// Changes this process's namespaces and signal state: only for a fresh,
/// single-threaded process.
pub fn run(spec: &InitSpec, reap_init: bool) -> Result<ExitRecord, InitError> {
    validate(spec)?;
    ensure_single_threaded()?;

    for signal in IGNORED_BY_SUPERVISOR {
        set_disposition(signal, SigHandler::SigIgn).map_err(sys("sigaction"))?;
    }
    // Blocked before fork, so the init starts with the mask it needs: a
    // signal the agent sends as soon as it reads `init.pid` stays pending
    // until the init collects it with sigwait.
    init_mask().thread_block().map_err(sys("sigprocmask"))?;

    // The mount namespace is the init's own (see `init_body`): the
    // supervisor keeps the host's view, where it writes `exit`. With a
    // user namespace the init is cloned into all of them at once, so that
    // they belong to it (`super::userns`).
    if spec.userns.is_none() {
        unshare(clone_flags(spec)).map_err(sys("unshare"))?;
    }

    // An image's layers, id-mapped for the container's user namespace:
    // only host root can make them, and the init inherits them.
    let idmapped = match (spec.userns, spec.view.as_ref().and_then(|v| v.image.as_ref())) {
        (Some(range), Some(image)) => Some(super::userns::idmapped_layers(range, &image.layers)?),
        _ => None,
    };
    let (report_read, report_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
    let handshake = match spec.userns {
        Some(_) => Some(super::userns::Handshake::new().map_err(sys("pipe2"))?),
        None => None,
    };
    let forked = match spec.userns {
        // SAFETY: `ensure_single_threaded` checked that this process has
        // one thread, so the child is an exact copy with no lock held by a
        // thread that no longer exists; it may allocate and do any other work.
        None => match unsafe { fork() }.map_err(sys("fork"))? {
            ForkResult::Child => None,
            ForkResult::Parent { child } => Some(child),
        },
        Some(_) => {
            let flags = clone_flags(spec) | CloneFlags::CLONE_NEWUSER;
            // SAFETY: as for `fork` above, which is all `clone_fork` requires.
            unsafe { clone_fork(flags, false) }
                .map_err(sys("clone"))?
                .map(|(child, _)| child)
        }
    };
    match forked {
        None => {
            drop(report_read);
            let code = container_init(
                spec,
                Report::Pipe(report_write),
                handshake.map(super::userns::Handshake::init),
                idmapped,
            );
            std::process::exit(code);
        }
        Some(child) => {
            drop((report_write, idmapped));
            let mut handshake = handshake.map(super::userns::Handshake::supervisor);
            let pid_file = spec.run_dir.join(INIT_PID_FILE);
            if let Err(source) = write_atomic(&pid_file, format!("{child}\n").as_bytes()) {
                // Without init.pid nobody could ever signal the container.
                let _ = kill(child, Signal::SIGKILL);
                let _ = wait_for(child);
                return Err(InitError::Write { path: pid_file, source });
            }
            if let (Some(handshake), Some(range)) = (handshake.as_mut(), spec.userns) {
                if let Err(e) = handshake.release(child, range, &spec.cgroup_procs) {
                    let _ = kill(child, Signal::SIGKILL);
                    let _ = wait_for(child);
                    return Err(e.into());
                }
                handshake.serve_claim(&spec.run_dir);
            }
            drop(handshake);
            // EOF once the init has written its report and closed the
            // pipe (or died): its record is final then.
            let mut report = Vec::new();
            let _ = File::from(report_read).read_to_end(&mut report);
            if !reap_init && let Ok(record) = serde_json::from_slice::<ExitRecord>(&report) {
                // Its namespaces are still being torn down: the launcher
                // (a subreaper) reaps it later.
                return Ok(record);
            }
            let status = wait_for(child)?;
            Ok(decode(&report, status))
        }
    }
}

/// Reads the spec the agent wrote.
pub fn read_spec(path: &Path) -> Result<InitSpec, InitError> {
    let bytes = fs::read(path).map_err(|source| InitError::ReadSpec {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| InitError::ParseSpec {
        path: path.to_owned(),
        source,
    })
}

/// Writes `spec` to `path` atomically, for the agent.
pub fn write_spec(path: &Path, spec: &InitSpec) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(spec).map_err(io::Error::other)?;
    write_atomic(path, &json)
}

/// The recorded exit of the container in `run_dir`, if it has ended.
pub fn read_exit(run_dir: &Path) -> Option<ExitRecord> {
    let bytes = fs::read(run_dir.join(EXIT_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The init's pid (host pid namespace), once the supervisor has forked it.
pub fn read_init_pid(run_dir: &Path) -> Option<i32> {
    read_pid(run_dir, INIT_PID_FILE).and_then(|p| i32::try_from(p).ok())
}

/// A pid recorded in `run_dir/name` (e.g. [`SUPERVISOR_PID_FILE`]).
pub fn read_pid(run_dir: &Path, name: &str) -> Option<u32> {
    fs::read_to_string(run_dir.join(name)).ok()?.trim().parse().ok()
}

fn write_exit(run_dir: &Path, record: &ExitRecord) -> Result<(), InitError> {
    let path = run_dir.join(EXIT_FILE);
    let json = serde_json::to_vec(record).map_err(|e| InitError::Write {
        path: path.clone(),
        source: io::Error::other(e),
    })?;
    write_atomic(&path, &json).map_err(|source| InitError::Write { path, source })
}

/// tmp + rename: a reader sees the old state or the whole new file. No
/// fsync: these records (pids, the exit status) only have to outlive the
/// agent process, and the container they describe does not outlive a
/// machine crash; a torn file after one reads as missing.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or(OsStr::new("file")).to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    drop(file);
    fs::rename(&tmp, path)
}

/// Best effort: the message goes where the user looks for the task's errors.
fn append_stderr(spec: &InitSpec, message: &str) {
    let line = format!("mezzo: container {}: {message}\n", spec.id);
    match OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(&spec.stderr)
    {
        Ok(mut file) => {
            let _ = file.write_all(line.as_bytes());
        }
        Err(_) => eprint!("{line}"),
    }
}

fn validate(spec: &InitSpec) -> Result<(), InitError> {
    let invalid = |reason: String| InitError::InvalidSpec {
        id: spec.id.clone(),
        reason,
    };
    let Some(program) = spec.argv.first() else {
        return Err(invalid("argv is empty".into()));
    };
    // In an image the init looks the program up in the image's own PATH.
    let in_image = spec.view.as_ref().is_some_and(|v| v.image.is_some());
    let resolvable = Path::new(program).is_absolute() || (in_image && !program.is_empty());
    if !resolvable {
        return Err(invalid(format!("argv[0] {program:?} is not an absolute path")));
    }
    if let Some(arg) = spec.argv.iter().find(|a| a.contains('\0')) {
        return Err(invalid(format!("argument {arg:?} contains a NUL byte")));
    }
    if let Some((k, _)) = spec
        .env
        .iter()
        .find(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
    {
        return Err(invalid(format!("invalid environment variable {k:?}")));
    }
    if spec.view.is_some() && !(spec.namespaces.mount && spec.namespaces.pid) {
        return Err(invalid("a file system view needs mount and pid namespaces".into()));
    }
    if spec.userns.is_some() && !(spec.namespaces.mount && spec.namespaces.pid) {
        return Err(invalid("a user namespace needs mount and pid namespaces".into()));
    }
    Ok(())
}

/// `fork` in a multi-threaded process leaves locks held by other threads
/// locked forever in the child; refuse rather than risk it.
fn ensure_single_threaded() -> Result<(), InitError> {
    match fs::read_dir("/proc/self/task") {
        Ok(entries) => match entries.count() {
            1 => Ok(()),
            n => Err(InitError::NotSingleThreaded(n)),
        },
        // No /proc to ask: trust the caller (documented precondition).
        Err(_) => Ok(()),
    }
}

fn clone_flags(spec: &InitSpec) -> CloneFlags {
    let ns = &spec.namespaces;
    let mut flags = CloneFlags::empty();
    for (wanted, flag) in [
        (ns.pid, CloneFlags::CLONE_NEWPID),
        (ns.uts || spec.hostname.is_some(), CloneFlags::CLONE_NEWUTS),
        (ns.ipc, CloneFlags::CLONE_NEWIPC),
        (ns.net, CloneFlags::CLONE_NEWNET),
    ] {
        if wanted {
            flags |= flag;
        }
    }
    flags
}

/// `fork`, but the child starts in new namespaces made by `clone`
/// (`flags`; with `CLONE_NEWUSER` the others belong to the new user
/// namespace), and with a pidfd of the child when `pidfd`. Returns the
/// child's pid (and pidfd) in the parent and `None` in the child.
///
/// # Safety
/// As `fork`: only in a single-threaded process.
unsafe fn clone_fork(flags: CloneFlags, pidfd: bool) -> Result<Option<(Pid, Option<OwnedFd>)>, Errno> {
    use nix::libc::{CLONE_PIDFD, SIGCHLD, c_int, c_ulong};
    let mut fd: c_int = -1;
    let mut bits = flags.bits() as c_ulong | SIGCHLD as c_ulong;
    if pidfd {
        bits |= CLONE_PIDFD as c_ulong;
    }
    // SAFETY: without CLONE_VM and with a null stack, clone is fork with
    // namespace flags: the child continues on a copy of this stack in a
    // copy of this memory. The caller guarantees a single thread, so no
    // lock is held by a thread the child lacks (what glibc's fork would
    // reset). The kernel writes the pidfd to `fd` (the parent_tid
    // argument, with CLONE_PIDFD), which lives across the call; the other
    // pointers are null.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_clone,
            bits,
            std::ptr::null_mut::<nix::libc::c_void>(),
            &mut fd as *mut c_int,
            std::ptr::null_mut::<c_int>(),
            0 as c_ulong,
        )
    };
    match Errno::result(rc)? {
        0 => Ok(None),
        // SAFETY: with CLONE_PIDFD the kernel made `fd` for us alone.
        child => Ok(Some((
            Pid::from_raw(child as i32),
            (pidfd && fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) }),
        ))),
    }
}

/// What the init waits for with sigwait: forwarded signals and SIGCHLD.
fn init_mask() -> SigSet {
    let mut mask = SigSet::empty();
    for signal in FORWARDED {
        mask.add(signal);
    }
    mask.add(Signal::SIGCHLD);
    mask
}

fn set_disposition(signal: Signal, handler: SigHandler) -> nix::Result<()> {
    debug_assert!(matches!(handler, SigHandler::SigIgn | SigHandler::SigDfl));
    // SAFETY: only SIG_IGN or SIG_DFL are installed, never a handler
    // function, so no code runs in signal context.
    unsafe { nix::sys::signal::signal(signal, handler) }.map(drop)
}

fn wait_for(pid: Pid) -> Result<WaitStatus, InitError> {
    loop {
        match waitpid(pid, None) {
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return Ok(status),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(source) => return Err(InitError::Sys { op: "waitpid", source }),
        }
    }
}

/// What the supervisor records: the init's report if it sent one,
/// otherwise the init's own status (128+N decoded back to signal N).
fn decode(report: &[u8], init_status: WaitStatus) -> ExitRecord {
    if let Ok(record) = serde_json::from_slice::<ExitRecord>(report) {
        return record;
    }
    match init_status {
        WaitStatus::Exited(_, code) if code > 128 && code < 128 + 65 => ExitRecord::Signal(code - 128),
        WaitStatus::Exited(_, code) => ExitRecord::Code(code),
        WaitStatus::Signaled(_, signal, _) => ExitRecord::Signal(signal as i32),
        other => ExitRecord::Error(format!("unexpected wait status of the init: {other:?}")),
    }
}

/// The status the init exits with: the task's code, or 128+signal (the
/// init cannot die of a signal it sends itself when it is pid 1).
fn init_exit_code(record: &ExitRecord) -> i32 {
    match record {
        ExitRecord::Code(code) => *code,
        ExitRecord::Signal(signal) => 128 + signal,
        ExitRecord::Error(_) => 1,
    }
}

// ---------------------------------------------------------------- the init

/// Runs in the forked init; returns its exit code. `report` carries the
/// exact [`ExitRecord`] to the supervisor.
fn container_init(
    spec: &InitSpec,
    report: Report<'_>,
    userns: Option<super::userns::InitSide>,
    idmapped: Option<super::rootfs::IdmappedLayers>,
) -> i32 {
    // The task's stderr, once open: after the view is entered its host
    // path may no longer lead to it.
    let mut stderr = None;
    let record = match init_body(spec, &mut stderr, userns, idmapped) {
        Ok(record) => record,
        Err(e) => {
            let message = e.to_string();
            report_error(spec, stderr.as_ref(), &message);
            ExitRecord::Error(message)
        }
    };
    match report {
        Report::Pipe(pipe) => {
            if let Ok(json) = serde_json::to_vec(&record) {
                let _ = File::from(pipe).write_all(&json);
            }
        }
        Report::RunDir(dir) => {
            if let Err(e) = write_exit_at(dir, &record) {
                report_error(spec, stderr.as_ref(), &format!("cannot record the task's exit: {e}"));
            }
        }
    }
    init_exit_code(&record)
}

/// Where the init reports the task's end.
enum Report<'a> {
    /// To its supervisor, which records it.
    Pipe(OwnedFd),
    /// Recorded by the init itself as `exit` in the run dir (an `O_PATH`
    /// descriptor, opened before the task's view hid the path).
    RunDir(BorrowedFd<'a>),
}

/// [`write_exit`] through a descriptor of the run dir.
fn write_exit_at(dir: impl AsFd, record: &ExitRecord) -> io::Result<()> {
    let dir = dir.as_fd();
    use nix::sys::stat::Mode;
    let json = serde_json::to_vec(record).map_err(io::Error::other)?;
    let tmp = "exit.tmp";
    let fd = nix::fcntl::openat(
        dir,
        tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )?;
    File::from(fd).write_all(&json)?;
    nix::fcntl::renameat(dir, tmp, dir, EXIT_FILE)?;
    Ok(())
}

/// Appends `message` to the task's stderr: `file` if open, else its path.
fn report_error(spec: &InitSpec, file: Option<&File>, message: &str) {
    match file {
        Some(mut file) => {
            let _ = writeln!(file, "mezzo: container {}: {message}", spec.id);
        }
        None => append_stderr(spec, message),
    }
}

fn init_body(
    spec: &InitSpec,
    stderr_sink: &mut Option<File>,
    mut userns: Option<super::userns::InitSide>,
    idmapped: Option<super::rootfs::IdmappedLayers>,
) -> Result<ExitRecord, InitError> {
    // Inherited SIG_IGN from the supervisor; the signals are still blocked,
    // so nothing is lost in between.
    for signal in IGNORED_BY_SUPERVISOR {
        set_disposition(signal, SigHandler::SigDfl).map_err(sys("sigaction"))?;
    }
    if let Some(userns) = userns.as_mut() {
        // Mapped, and moved into the cgroups, by the supervisor.
        userns.wait_go()?;
    }
    let join = if userns.is_some() {
        &[][..]
    } else {
        &spec.cgroup_procs[..]
    };
    for path in join {
        // "0" is the writing process, whatever pid namespace it is in.
        fs::write(path, b"0").map_err(|source| InitError::Cgroup {
            path: path.clone(),
            source,
        })?;
    }
    // The files to leave the cgroups by are opened now: the task's view
    // hides the cgroup file systems. A task must never follow these
    // descriptors through /proc/1/fd; it lacks the init's capabilities,
    // and, as with runc's init, the init is not dumpable either.
    nix::sys::prctl::set_dumpable(false).map_err(sys("prctl(PR_SET_DUMPABLE)"))?;
    let leave = if spec.namespaces.pid {
        spec.cgroup_leave
            .iter()
            .map(|path| {
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|source| InitError::Cgroup {
                        path: path.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<File>, InitError>>()?
    } else {
        Vec::new()
    };
    if spec.namespaces.mount {
        unshare(CloneFlags::CLONE_NEWNS).map_err(sys("unshare"))?;
        // Mounts made in the container must not propagate back.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(sys("making / private"))?;
    }
    // Opened while this process is still host root (with a user
    // namespace it is not for long): its mount point, and outside the
    // view the run dir, through which the claim is taken.
    let outside = match &spec.view {
        Some(view) => {
            let run_dir = nix::fcntl::open(
                &spec.run_dir,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|source| InitError::Open {
                path: spec.run_dir.clone(),
                source: source.into(),
            })?;
            Some((view, super::rootfs::Mountpoint::open(view, idmapped)?, run_dir))
        }
        None => None,
    };
    if let Some(userns) = &userns {
        userns.become_root()?;
    }
    let stdio = Stdio::open(spec)?;
    *stderr_sink = stdio.stderr.try_clone().ok();
    let mut run_dir = spec.run_dir.clone();
    let _run_dir_fd = match outside {
        Some((view, mountpoint, fd)) => {
            super::rootfs::enter(view, &spec.sandbox, mountpoint, userns.is_some())?;
            run_dir = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            Some(fd)
        }
        None if spec.namespaces.pid && spec.namespaces.mount => {
            // A proc that shows only this pid namespace. (Without a private
            // mount namespace this would cover the host's /proc: skipped.)
            mount(
                Some("proc"),
                "/proc",
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(InitError::MountProc)?;
            None
        }
        None => None,
    };
    if let Some(hostname) = &spec.hostname {
        nix::unistd::sethostname(hostname).map_err(|source| InitError::Hostname {
            hostname: hostname.clone(),
            source,
        })?;
    }
    if spec.namespaces.net {
        loopback_up().map_err(InitError::Loopback)?;
    }

    let init_pid = nix::unistd::getpid();
    let task = TaskExec::prepare(spec, stdio, init_pid)?;
    // The last step before the task's process exists: a restarted agent
    // that claimed the task first has reported it dropped, so it must
    // never start (see `super::claim`).
    crate::failpoint::hit_blocking("before_claim");
    let claim = match userns.as_mut() {
        // The run dir is host root's: the supervisor takes it for us.
        Some(userns) => Ok(userns.claim()?),
        None => super::claim::take(&run_dir, super::claim::Claim::Started),
    };
    match claim {
        Ok(super::claim::Claim::Started) => {}
        Ok(super::claim::Claim::Dropped) => return Ok(ExitRecord::Error(DROPPED_BY_RECOVERY.into())),
        Err(source) => {
            return Err(InitError::Write {
                path: spec.run_dir.join(super::claim::CLAIM_FILE),
                source,
            });
        }
    }
    let (failure_read, failure_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
    // The task is started the way posix_spawn starts a process: it shares
    // the init's memory until its execve (CLONE_VM), and the init waits
    // until then (CLONE_VFORK). No copy of the init's page tables is made
    // and torn down again, and nothing is copied on write: both cost more
    // than the rest of a launch. The child therefore only makes system
    // calls with what `prepare` built (see `TaskExec::run`).
    // Fresh zero pages from the kernel, of which only the few the child
    // touches are ever faulted in (a heap buffer is zeroed, every page of
    // it, in this copy of the launcher); unmapped when the init exits.
    // SAFETY: a new private anonymous mapping, aliased by nothing; the
    // slice over it lives in this function only, and zero bytes are
    // valid `u8`s.
    let stack = unsafe {
        let len = std::num::NonZeroUsize::new(TASK_STACK).ok_or(InitError::Sys {
            op: "mmap",
            source: Errno::EINVAL,
        })?;
        let map = nix::sys::mman::mmap_anonymous(
            None,
            len,
            nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
            nix::sys::mman::MapFlags::MAP_PRIVATE | nix::sys::mman::MapFlags::MAP_STACK,
        )
        .map_err(sys("mmap"))?;
        std::slice::from_raw_parts_mut(map.as_ptr().cast::<u8>(), TASK_STACK)
    };
    // SAFETY: with CLONE_VFORK this thread is suspended until the child
    // has exec'd or exited, so nothing else touches the shared memory
    // meanwhile; the child runs on `stack`, allocates nothing, takes no
    // lock and leaves by execve or _exit (see `TaskExec::run`).
    let pid = unsafe {
        nix::sched::clone(
            Box::new(|| task.run(&failure_write)),
            stack,
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
            Some(Signal::SIGCHLD as i32),
        )
    }
    .map_err(sys("clone"))?;
    drop(failure_write);

    // EOF: the task exec'd. Otherwise it says which step failed and why.
    let mut failure = Vec::new();
    let _ = File::from(failure_read).read_to_end(&mut failure);
    if let Some(failed) = TaskFailure::decode(&failure) {
        let error = failed.error(spec);
        if failed.step == Step::Exec {
            // The task has exited 127; its status is recorded as usual.
            report_error(spec, stderr_sink.as_ref(), &error.to_string());
        } else {
            let _ = wait_for(pid);
            return Err(error);
        }
    }
    let record = supervise_task(pid)?;
    wind_down(spec, leave);
    Ok(record)
}

/// After the task's main process ended: with a pid namespace, kills and
/// reaps what is left in it (which the kernel would do anyway once the
/// init exits), then leaves the container's cgroups. The supervisor has
/// the exit record as soon as the init reports it, and the agent can
/// remove the empty cgroups, without waiting for the kernel to tear down
/// the namespaces (the mount namespace's, with its many mounts, takes
/// RCU grace periods).
fn wind_down(spec: &InitSpec, leave: Vec<File>) {
    if spec.namespaces.pid {
        // As pid 1: every other process of this namespace.
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        // Until ECHILD: nothing is left.
        while let Ok(_) | Err(Errno::EINTR) = waitpid(None, None) {}
        // "0" is the writing process. Best effort: the agent's cleanup
        // kills and waits for whatever is still in the cgroups.
        for mut file in leave {
            let _ = file.write_all(b"0");
        }
    }
}

/// Forwards signals to the task and reaps every child until the task ends.
fn supervise_task(task: Pid) -> Result<ExitRecord, InitError> {
    let mask = init_mask();
    loop {
        let signal = mask.wait().map_err(sys("sigwait"))?;
        if signal != Signal::SIGCHLD {
            // ESRCH only if the task is already gone; its SIGCHLD is pending.
            let _ = kill(task, signal);
            continue;
        }
        // SIGCHLD does not queue: reap everything that has ended.
        let mut task_record = None;
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(WaitStatus::Exited(pid, code)) if pid == task => task_record = Some(ExitRecord::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == task => {
                    task_record = Some(ExitRecord::Signal(signal as i32))
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(source) => return Err(InitError::Sys { op: "waitpid", source }),
            }
        }
        if let Some(record) = task_record {
            return Ok(record);
        }
    }
}

/// A pidfd of process `pid` (Linux 5.3+): readable once it has exited;
/// close-on-exec.
pub(crate) fn pidfd_open(pid: nix::libc::pid_t) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file
    // descriptor or -1; it touches no memory of ours.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `ioctl(SIOCSIFFLAGS)` with IFF_UP on `lo` of the new network namespace.
fn loopback_up() -> Result<(), Errno> {
    use nix::libc;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: `ifreq` is a plain C struct (a name array and a union of
    // integers, addresses and pointers); all-zero is a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `sock` is an open socket and `req` a valid, writable ifreq
    // that lives across the call, as SIOCGIFFLAGS requires.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: SIOCGIFFLAGS succeeded, so the kernel initialised `ifru_flags`.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })?;
    Ok(())
}

#[cfg(test)]
#[path = "init_tests.rs"]
mod tests;
