//! A containerizer without isolation: the command runs in its own process
//! group in the sandbox directory, and the group is what gets signalled.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::claim::{self, Claim};
use super::init::DROPPED_BY_RECOVERY;
use super::{
    CommandSpec, Container, ContainerError, ContainerSpec, Containerizer, Entry, ExitStatus, Recovery, TaskMount,
};

/// How long `cleanup` keeps killing and reaping a process group.
const CLEANUP_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct PosixContainerizer {
    agent_user: String,
}

impl Default for PosixContainerizer {
    fn default() -> Self {
        Self::new()
    }
}

impl PosixContainerizer {
    /// Also makes this process a child subreaper, so that processes a task
    /// leaves behind are re-parented to the agent, which then reaps them in
    /// [`Container::cleanup`] instead of leaving zombies in the group.
    pub fn new() -> Self {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!("cannot become a child subreaper ({e}); orphaned task processes are reaped by init");
        }
        let agent_user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        PosixContainerizer { agent_user }
    }

    async fn launch_posix(&self, spec: ContainerSpec) -> Result<Box<dyn Container>, ContainerError> {
        if let Some(user) = spec.user.clone().filter(|u| *u != self.agent_user) {
            return Err(ContainerError::User {
                user,
                agent_user: self.agent_user.clone(),
            });
        }
        let sandbox_err = |path: &std::path::Path| {
            let path = path.to_owned();
            move |source| ContainerError::Sandbox { path, source }
        };
        tokio::fs::create_dir_all(&spec.sandbox)
            .await
            .map_err(sandbox_err(&spec.sandbox))?;
        super::write_secret_files(&spec.sandbox, &spec.secret_files, None)?;
        link_mounts(&spec.sandbox, &spec.mounts)?;
        let stdout_path = spec.sandbox.join("stdout");
        let stderr_path = spec.sandbox.join("stderr");
        let stdout = std::fs::File::create(&stdout_path).map_err(sandbox_err(&stdout_path))?;
        let stderr = std::fs::File::create(&stderr_path).map_err(sandbox_err(&stderr_path))?;

        let (mut cmd, program) = match &spec.command {
            CommandSpec::Shell(script) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(script);
                (c, "/bin/sh".to_owned())
            }
            CommandSpec::FromImage { .. } => return Err(no_images()),
            CommandSpec::Exec { program, args } => {
                // Resolve the program in the task's own PATH here: with an
                // absolute path std can use posix_spawn instead of forking
                // the whole agent (a fork copies its page tables per task).
                let resolved = super::resolve_program(&spec, program)?;
                let mut c = Command::new(resolved);
                c.args(args);
                (c, program.clone())
            }
        };
        cmd.current_dir(&spec.sandbox)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        // The last step before the task's process exists (see `super::claim`).
        match claim::take(&spec.run_dir, Claim::Started) {
            Ok(Claim::Started) => {}
            Ok(Claim::Dropped) => return Err(ContainerError::NeverStarted(DROPPED_BY_RECOVERY.into())),
            Err(source) => {
                return Err(ContainerError::Sandbox {
                    path: spec.run_dir.join(claim::CLAIM_FILE),
                    source,
                });
            }
        }
        let child = cmd
            .spawn()
            .map_err(|source| ContainerError::Spawn { program, source })?;
        // `id()` is only `None` after the child was reaped, which cannot have happened yet.
        let pid = child.id().unwrap_or_default();
        // Recorded so that a restarted agent can at least stop what it
        // cannot supervise any more (see `recover`).
        if let Err(e) = crate::paths::write_replace(&spec.run_dir.join("posix.pgid"), pid.to_string().as_bytes()) {
            tracing::warn!(container = %spec.id, "cannot record the process group: {e}");
        }
        tracing::debug!(container = %spec.id, pid, "launched");
        let entry = Entry::Host {
            env: spec
                .env
                .iter()
                .filter(|(k, _)| !spec.secret_env.contains(k))
                .cloned()
                .collect(),
            sandbox: spec.sandbox,
        };
        Ok(Box::new(PosixContainer {
            id: spec.id,
            pid,
            child,
            status: None,
            entry,
        }))
    }
}

impl Containerizer for PosixContainerizer {
    fn launch(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<Box<dyn Container>, ContainerError>> {
        self.launch_posix(spec).boxed()
    }

    /// A plain process cannot be waited for by a new agent (it is not its
    /// child), so its exit status would be lost: stop what is left of it
    /// and let the task be reported LOST rather than run unmanaged. One
    /// that never claimed its start (nor recorded its process group, as
    /// agents from before the claim did) is dropped instead.
    fn recover(&self, id: String, run_dir: std::path::PathBuf) -> BoxFuture<'_, Result<Recovery, ContainerError>> {
        async move {
            let pgid = std::fs::read_to_string(run_dir.join("posix.pgid")).ok().and_then(|s| s.trim().parse::<i32>().ok());
            if pgid.is_none() && matches!(claim::take(&run_dir, Claim::Dropped), Ok(Claim::Dropped)) {
                return Ok(Recovery::NeverStarted);
            }
            if let Some(pgid) = pgid.filter(|p| *p > 1)
                && killpg(Pid::from_raw(pgid), None).is_ok()
            {
                tracing::warn!(container = %id, pgid, "killing a task left from before the restart (isolation none cannot recover it)");
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
            Ok(Recovery::Gone)
        }
        .boxed()
    }
}

struct PosixContainer {
    id: String,
    /// Also the process group id (`process_group(0)`).
    pid: u32,
    child: Child,
    status: Option<ExitStatus>,
    entry: Entry,
}

impl PosixContainer {
    fn pgid(&self) -> Pid {
        Pid::from_raw(self.pid as i32)
    }

    async fn wait_main(&mut self) -> Result<ExitStatus, ContainerError> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let st = self.child.wait().await.map_err(|source| ContainerError::Wait {
            id: self.id.clone(),
            source,
        })?;
        let status = match (st.code(), st.signal()) {
            (Some(code), _) => ExitStatus::Code(code),
            (None, Some(sig)) => ExitStatus::Signal(sig),
            (None, None) => ExitStatus::Code(-1),
        };
        self.status = Some(status);
        Ok(status)
    }

    /// SIGKILLs the group until none of it is left, reaping the members that
    /// were re-parented to us. The main process must be reaped first, by
    /// tokio, so that this never steals its exit status.
    async fn kill_and_reap_group(&mut self) -> Result<(), ContainerError> {
        let _ = killpg(self.pgid(), Signal::SIGKILL);
        self.wait_main().await?;
        let group = Pid::from_raw(-(self.pid as i32));
        let deadline = tokio::time::Instant::now() + CLEANUP_LIMIT;
        loop {
            match waitpid(group, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(_) => continue,
                Err(Errno::ECHILD) => {
                    if killpg(self.pgid(), None) == Err(Errno::ESRCH) {
                        return Ok(());
                    }
                }
                Err(source) => {
                    return Err(ContainerError::Signal {
                        id: self.id.clone(),
                        source,
                    });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(container = %self.id, "processes of the container's group survive cleanup");
                return Ok(());
            }
            let _ = killpg(self.pgid(), Signal::SIGKILL);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Container for PosixContainer {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn signal(&self, signal: Signal) -> Result<(), ContainerError> {
        match killpg(self.pgid(), signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(ContainerError::Signal {
                id: self.id.clone(),
                source,
            }),
        }
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<ExitStatus, ContainerError>> {
        self.wait_main().boxed()
    }

    fn cleanup(&mut self) -> BoxFuture<'_, Result<(), ContainerError>> {
        self.kill_and_reap_group().boxed()
    }

    fn entry(&self) -> Option<Entry> {
        Some(self.entry.clone())
    }
}

/// Without isolation a mount is a symlink in the sandbox to its source:
/// there is no root of the task's own for an absolute path, and nothing
/// can make a directory read-only for the task alone.
fn link_mounts(sandbox: &std::path::Path, mounts: &[TaskMount]) -> Result<(), ContainerError> {
    for m in mounts {
        let refused = |why: String| ContainerError::Mount {
            target: m.target.clone(),
            why,
        };
        if m.target.is_absolute() {
            return Err(refused(
                "a task without isolation (--isolation none) has no root of its own; give a path relative to the sandbox".into(),
            ));
        }
        if !m.writable {
            return Err(refused(
                "a task without isolation (--isolation none) cannot be given a read-only mount".into(),
            ));
        }
        let parent = m.target.parent().unwrap_or(std::path::Path::new(""));
        let link = super::make_dirs(sandbox, parent, 0o755, None)
            .map(|dir| dir.join(m.target.file_name().unwrap_or_default()))
            .map_err(|e| refused(format!("cannot make its directory in the sandbox: {e}")))?;
        std::os::unix::fs::symlink(&m.source, &link)
            .map_err(|e| refused(format!("cannot link {} there: {e}", m.source.display())))?;
    }
    Ok(())
}

/// Images need the Linux containerizer's own root for each task.
fn no_images() -> ContainerError {
    ContainerError::Image("this agent runs tasks without isolation (--isolation none), which cannot use images".into())
}
