//! The task's process: what the init builds for it ([`TaskExec::prepare`])
//! and what it does between its `clone` and its `execve`
//! ([`TaskExec::run`]), and how it tells the init which step failed.

// The task process leaves by `_exit` and `execve`, raw calls on what
// `prepare` built; each `unsafe` block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{SigHandler, SigSet, Signal};
use nix::unistd::{Gid, Pid, Uid};

use super::{EXEC_FAILED, FORWARDED, InitError, InitSpec, set_disposition};

/// Stack of the task process between clone and execve.
pub(super) const TASK_STACK: usize = 64 * 1024;

/// Everything the task process needs, built by the init beforehand so that
/// the task process itself only makes system calls.
pub(super) struct TaskExec {
    /// NULL-terminated pointer arrays into `_argv` and `_env`; `argv[0]`
    /// is the program's absolute path.
    argv: Vec<*const nix::libc::c_char>,
    env: Vec<*const nix::libc::c_char>,
    _argv: Vec<CString>,
    _env: Vec<CString>,
    sandbox: CString,
    stdin: File,
    stdout: File,
    stderr: File,
    /// `None`: keep the init's user (an unprivileged agent running tasks as itself).
    user: Option<(Uid, Gid, Vec<Gid>)>,
    /// Without a pid namespace the task dies with the init instead.
    init_pid: Option<Pid>,
    /// Applied around the switch of user, just before `execve`.
    confinement: crate::containerizer::harden::Prepared,
}

/// `program` as execve needs it: itself if it names a path, else the
/// first executable of that name in the task's `PATH` (the image's, seen
/// from inside it), else itself again (execve then fails with ENOENT).
fn resolve_in_path(program: &str, env: &[(String, String)]) -> String {
    if program.contains('/') {
        return program.to_owned();
    }
    let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str());
    which::which_in(program, path, "/").map_or_else(|_| program.to_owned(), |p| p.display().to_string())
}

/// The step of [`TaskExec::run`] that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Step {
    Signals = 1,
    InitGone,
    Stdio,
    Sandbox,
    User,
    Exec,
    Confine,
}

impl Step {
    const ALL: [Step; 7] = [
        Step::Signals,
        Step::InitGone,
        Step::Stdio,
        Step::Sandbox,
        Step::User,
        Step::Exec,
        Step::Confine,
    ];
}

/// What the task process writes to the init when a step fails: the step
/// and the errno, six bytes that need no allocation.
pub(super) struct TaskFailure {
    pub(super) step: Step,
    errno: Errno,
}

impl TaskFailure {
    fn encode(step: Step, errno: Errno) -> [u8; 6] {
        let mut out = [0u8; 6];
        out[0] = b'F';
        out[1] = step as u8;
        out[2..].copy_from_slice(&(errno as i32).to_le_bytes());
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<TaskFailure> {
        let [b'F', step, e0, e1, e2, e3] = *bytes else {
            return None;
        };
        let step = Step::ALL.into_iter().find(|s| *s as u8 == step)?;
        Some(TaskFailure {
            step,
            errno: Errno::from_raw(i32::from_le_bytes([e0, e1, e2, e3])),
        })
    }

    pub(super) fn error(&self, spec: &InitSpec) -> InitError {
        let source = self.errno;
        match self.step {
            Step::Signals => InitError::Sys {
                op: "resetting signals",
                source,
            },
            Step::InitGone => InitError::Task("the container init died before the task started".into()),
            Step::Stdio => InitError::Sys { op: "dup2", source },
            Step::Sandbox => InitError::Sandbox {
                path: spec.sandbox.clone(),
                source,
            },
            Step::User => InitError::User {
                uid: spec.uid,
                gid: spec.gid,
                groups: spec.groups.clone(),
                source,
            },
            Step::Exec => InitError::Task(format!("cannot execute {}: {source}", spec.argv[0])),
            Step::Confine => InitError::Sys {
                op: "confining the task (capabilities, no_new_privs, seccomp)",
                source,
            },
        }
    }
}

/// The task's standard streams, opened by the init before it enters the
/// task's view.
pub(super) struct Stdio {
    stdin: File,
    stdout: File,
    pub(super) stderr: File,
}

impl Stdio {
    pub(super) fn open(spec: &InitSpec) -> Result<Stdio, InitError> {
        // Opened as root in a sandbox a task may have used before (a
        // relaunch under the same id): never through a link it left there.
        let open_out = |path: &Path| {
            OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o644)
                .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NOFOLLOW)
                .open(path)
                .map_err(|source| InitError::Open {
                    path: path.to_owned(),
                    source,
                })
        };
        let stdin = File::open("/dev/null").map_err(|source| InitError::Open {
            path: "/dev/null".into(),
            source,
        })?;
        Ok(Stdio {
            stdin,
            stdout: open_out(&spec.stdout)?,
            stderr: open_out(&spec.stderr)?,
        })
    }
}

impl TaskExec {
    pub(super) fn prepare(spec: &InitSpec, stdio: Stdio, init_pid: Pid) -> Result<TaskExec, InitError> {
        let cstring = |s: &[u8]| CString::new(s).map_err(|e| InitError::Task(format!("NUL byte in {e}")));
        let program = resolve_in_path(&spec.argv[0], &spec.env);
        let argv = std::iter::once(program.as_str())
            .chain(spec.argv[1..].iter().map(String::as_str))
            .map(|a| cstring(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let env = spec
            .env
            .iter()
            .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        if argv.is_empty() {
            return Err(InitError::Task("argv is empty".into()));
        }
        let pointers = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        use std::os::unix::ffi::OsStrExt;
        let sandbox = match (&spec.cwd, &spec.view) {
            (Some(cwd), _) => {
                // As Docker does: an image's working directory need not exist.
                fs::create_dir_all(cwd).map_err(|source| InitError::Open {
                    path: cwd.clone(),
                    source,
                })?;
                cwd.as_path()
            }
            (None, Some(view)) => view.sandbox_inside(&spec.sandbox),
            (None, None) => &spec.sandbox,
        };
        let sandbox = cstring(sandbox.as_os_str().as_bytes())?;
        let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
        // An unprivileged agent can only run tasks as itself: nothing to change.
        let unchanged = !nix::unistd::geteuid().is_root()
            && uid == nix::unistd::geteuid()
            && gid == nix::unistd::getegid()
            && spec.groups.is_empty();
        let user = (!unchanged).then(|| (uid, gid, spec.groups.iter().copied().map(Gid::from_raw).collect()));
        Ok(TaskExec {
            argv: pointers(&argv),
            env: pointers(&env),
            _argv: argv,
            _env: env,
            sandbox,
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            user,
            init_pid: (!spec.namespaces.pid).then_some(init_pid),
            confinement: crate::containerizer::harden::Prepared::new(
                &spec.confinement,
                spec.uid,
                nix::unistd::geteuid().is_root(),
            )
            .map_err(|e| InitError::Task(e.to_string()))?,
        })
    }

    /// In the task process, on its own small stack in the init's memory:
    /// only system calls on what `prepare` built; no allocation, no lock,
    /// no unwinding. Leaves by execve, or by `_exit(127)` after writing the
    /// failed step to `failure`.
    pub(super) fn run(&self, failure: &OwnedFd) -> isize {
        let fail = |step: Step, errno: Errno| -> isize {
            let _ = nix::unistd::write(failure, &TaskFailure::encode(step, errno));
            // SAFETY: _exit ends this process at once, without running
            // atexit handlers or flushing buffers that it shares with the init.
            unsafe { nix::libc::_exit(EXEC_FAILED) }
        };
        // The task starts with default signal handling and nothing blocked
        // (dispositions SIG_IGN and the mask survive exec). SIGPIPE: the
        // Rust runtime of `mezzo` ignores it.
        for signal in FORWARDED.into_iter().chain([Signal::SIGCHLD, Signal::SIGPIPE]) {
            if let Err(e) = set_disposition(signal, SigHandler::SigDfl) {
                return fail(Step::Signals, e);
            }
        }
        if let Err(e) = SigSet::empty().thread_set_mask() {
            return fail(Step::Signals, e);
        }
        if let Some(init_pid) = self.init_pid {
            // No pid namespace to end with the init: die with it instead.
            if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
                return fail(Step::Signals, e);
            }
            if nix::unistd::getppid() != init_pid {
                return fail(Step::InitGone, Errno::ESRCH);
            }
        }
        for result in [
            nix::unistd::dup2_stdin(&self.stdin),
            nix::unistd::dup2_stdout(&self.stdout),
            nix::unistd::dup2_stderr(&self.stderr),
        ] {
            if let Err(e) = result {
                return fail(Step::Stdio, e);
            }
        }
        if let Err(e) = nix::unistd::chdir(self.sandbox.as_c_str()) {
            return fail(Step::Sandbox, e);
        }
        if let Err(e) = self.confinement.before_user() {
            return fail(Step::Confine, e);
        }
        if let Some((uid, gid, groups)) = &self.user {
            let switched = nix::unistd::setgroups(groups)
                .and_then(|()| nix::unistd::setgid(*gid))
                .and_then(|()| nix::unistd::setuid(*uid));
            if let Err(e) = switched {
                return fail(Step::User, e);
            }
        }
        if let Err(e) = self.confinement.after_user() {
            return fail(Step::Confine, e);
        }
        // SAFETY: `argv` (non-empty, checked by `prepare`) and `env` are
        // NULL-terminated arrays of pointers to C strings that `self` keeps
        // alive; execve only reads them.
        unsafe { nix::libc::execve(self.argv[0], self.argv.as_ptr(), self.env.as_ptr()) };
        fail(Step::Exec, Errno::last())
    }
}
