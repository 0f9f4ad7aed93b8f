//! Containers: the seam between a task's supervisor and the isolation
//! technology.
//!
//! A [`Containerizer`] launches a [`ContainerSpec`] and hands back a
//! [`Container`]: something with a pid that can be signalled as a whole,
//! waited for, and cleaned up. [`PosixContainerizer`] runs the command in
//! its own process group; a Linux containerizer (cgroups + namespaces)
//! slots in behind the same trait, with `signal` and `cleanup` acting on
//! the cgroup instead of the process group.

pub mod claim;
mod ended;
pub mod enter;
pub mod harden;
pub mod image_task;
pub mod init;
pub mod launcher;
pub mod linux;
mod posix;
pub mod rootfs;
mod rotate;
pub mod userns;

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use mezzo_proto::resources::Resources;
pub use nix::sys::signal::Signal;

pub use crate::cgroups::Usage;
pub use ended::EndedContainer;
pub use linux::{LinuxConfig, LinuxContainerizer};
pub use posix::PosixContainerizer;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    /// `/bin/sh -c <script>`.
    Shell(String),
    /// `program` (looked up in the task's `PATH`) with `args`.
    Exec { program: String, args: Vec<String> },
    /// No command: the image's entrypoint, then `args` or else the
    /// image's `Cmd`.
    FromImage { args: Vec<String> },
}

/// Everything a containerizer needs to start one task's container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Unique among live containers, e.g. `<framework_id>/<task_id>`.
    pub id: String,
    /// Working directory; created by the containerizer; holds `stdout` and `stderr`.
    pub sandbox: PathBuf,
    pub command: CommandSpec,
    /// The complete environment of the command.
    pub env: Vec<(String, String)>,
    /// Limits an isolating containerizer enforces; the posix one ignores them.
    pub resources: Resources,
    /// Run as this user; `None` = the containerizer's default.
    pub user: Option<String>,
    /// A directory of this task's own, kept across agent restarts until the
    /// task is forgotten, where the containerizer records what it needs to
    /// find the container again.
    pub run_dir: PathBuf,
    /// Give the task a network namespace of its own with only loopback
    /// (task label `mezzo.network=isolated`).
    pub isolated_network: bool,
    /// The task's root from this image (`ContainerInfo.image`).
    pub image: Option<mezzo_proto::image::ImageRef>,
    /// The login to pull `image` with (`Image.credentials`), used for the
    /// pull only: never written to the run dir or the record.
    pub image_credentials: Option<crate::images::Credentials>,
    /// Messages about a slow step of the launch (an image's layer being
    /// downloaded), which the task's supervisor reports.
    pub progress: Option<image_task::Progress>,
    /// Run without the seccomp filter (`ContainerInfo.seccomp =
    /// "unconfined"`, allowed by the master's ACL; the agent also needs
    /// `--allow-unconfined`).
    pub unconfined: bool,
    /// Secret files to write into the sandbox before the task starts.
    pub secret_files: Vec<SecretFile>,
    /// Names of the `env` variables whose values are secrets: left out of
    /// what the containerizer records, and so of the environment of
    /// processes started by [`Container::entry`].
    pub secret_env: Vec<String>,
    /// Directories mounted into the task (`ContainerInfo.mounts`).
    pub mounts: Vec<TaskMount>,
}

pub use crate::volumes::TaskMount;

/// How to start one more process in a running container (a health check's
/// command): plain data, so that it can be used while the container's
/// supervisor waits on it.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A task run without isolation: a process alike, in its sandbox, in
    /// a process group of its own.
    Host {
        sandbox: PathBuf,
        env: Vec<(String, String)>,
    },
    /// A Linux container: `EXE __container-enter RUN_DIR ARGV...`
    /// ([`enter`]); `net`: it has a network namespace of its own.
    Linux {
        exe: PathBuf,
        run_dir: PathBuf,
        /// Its cgroup's name, by which its init is recognised.
        cgroup: String,
        net: bool,
    },
}

impl Entry {
    /// `argv` to be run in the container; the caller sets its stdio.
    pub fn command(&self, argv: &[String]) -> tokio::process::Command {
        match self {
            Entry::Host { sandbox, env } => {
                let mut cmd = tokio::process::Command::new(&argv[0]);
                cmd.args(&argv[1..])
                    .current_dir(sandbox)
                    .env_clear()
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .process_group(0);
                cmd
            }
            Entry::Linux { exe, run_dir, .. } => {
                let mut cmd = tokio::process::Command::new(exe);
                cmd.arg("__container-enter").arg(run_dir).args(argv).env_clear();
                cmd
            }
        }
    }

    /// The network namespace the task's ports are in, opened; `None`: the
    /// agent's own.
    pub fn open_net_ns(&self) -> Result<Option<std::fs::File>, enter::EnterError> {
        let Entry::Linux {
            run_dir,
            cgroup,
            net: true,
            ..
        } = self
        else {
            return Ok(None);
        };
        enter::init_of(run_dir, cgroup)?.open("ns/net").map(Some)
    }
}

/// A secret's value and where in the sandbox it goes (0400, the task's
/// user). Its `Debug` shows the path only.
#[derive(Clone, Default)]
pub struct SecretFile {
    /// Relative to the sandbox, checked ([`mezzo_proto::security::secret::sandbox_path`]).
    pub path: PathBuf,
    pub value: Vec<u8>,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Writes the secret files into a fresh sandbox, as `uid`:`gid` (None:
/// the agent's own user), refusing to follow any symlink on the way.
pub fn write_secret_files(
    sandbox: &std::path::Path,
    files: &[SecretFile],
    owner: Option<(u32, u32)>,
) -> Result<(), ContainerError> {
    use std::io::Write;
    for f in files {
        let err = |source| ContainerError::Sandbox {
            path: sandbox.join(&f.path),
            source,
        };
        let mut file = create_in_sandbox(sandbox, &f.path, (0o700, 0o400), owner).map_err(err)?;
        file.write_all(&f.value).map_err(err)?;
    }
    Ok(())
}

/// Creates the new file `relative` (plain components) in `sandbox`, with
/// its missing directories, with `modes` (directories', file's) and owned
/// by `owner` (None: the agent's own user), following no symlink.
pub fn create_in_sandbox(
    sandbox: &Path,
    relative: &Path,
    modes: (u32, u32),
    owner: Option<(u32, u32)>,
) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    make_dirs(sandbox, relative.parent().unwrap_or(Path::new("")), modes.0, owner)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(modes.1)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(sandbox.join(relative))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    Ok(file)
}

/// Makes the directories of `relative` (plain components) beneath
/// `sandbox`, missing ones with `mode` and owned by `owner` (None: the
/// agent's own user), refusing to go through anything but a directory
/// (a symlink); returns the last one.
pub fn make_dirs(sandbox: &Path, relative: &Path, mode: u32, owner: Option<(u32, u32)>) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut dir = sandbox.to_path_buf();
    for part in relative.components() {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_dir() => {}
            // ENOTDIR: a symlink is not gone through either.
            Ok(_) => return Err(std::io::Error::from_raw_os_error(nix::libc::ENOTDIR)),
            Err(_) => {
                std::fs::DirBuilder::new().mode(mode).create(&dir)?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::lchown(&dir, Some(uid), Some(gid))?;
                }
            }
        }
    }
    Ok(dir)
}

/// Task label asking for a private network namespace (loopback only).
pub const NETWORK_LABEL: &str = "mezzo.network";

/// A limit the container hit, which ended the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limitation {
    /// The kernel OOM-killed a process of the container (any of them, not
    /// only the main one). `limit_mib` is 0 when it is not known.
    Memory { limit_mib: u64 },
    /// The sandbox grew beyond the task's disk resource.
    Disk { used_mib: u64, limit_mib: u64 },
    /// A persistent volume the task mounts grew beyond its size.
    Volume {
        path: PathBuf,
        used_mib: u64,
        limit_mib: u64,
    },
}

/// How a container's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited by itself with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("cannot prepare sandbox {}: {source}", path.display())]
    Sandbox { path: PathBuf, source: std::io::Error },
    #[error("cannot start {program:?}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("running tasks as user {user:?} is not supported by this containerizer (agent runs as {agent_user:?})")]
    User { user: String, agent_user: String },
    #[error("cannot signal container {id}: {source}")]
    Signal { id: String, source: nix::Error },
    #[error("cannot wait for container {id}: {source}")]
    Wait { id: String, source: std::io::Error },
    #[error("isolation: {0}")]
    Isolation(String),
    #[error("this agent runs no task without its seccomp filter (start it with --allow-unconfined)")]
    Unconfined,
    /// The task's image cannot be found, read or used.
    #[error("{0}")]
    Image(String),
    /// The container was made but the task's process never started (its
    /// init failed first, or recovery dropped it): safe to launch again.
    #[error("the task never started: {0}")]
    NeverStarted(String),
    /// The task cannot run in this agent's user namespaces.
    #[error("{0}")]
    UserNamespace(String),
    /// A directory the task mounts cannot be mounted as asked.
    #[error("mount at {}: {why}", target.display())]
    Mount { target: PathBuf, why: String },
}

/// What recovery finds of a checkpointed task's container.
pub enum Recovery {
    /// Found again, live or ended while the agent was down: its `wait`
    /// gives the true exit status.
    Adopted(Box<dyn Container>),
    /// Its process never started, and now never will (the launch claim
    /// says so): the task is reported DROPPED.
    NeverStarted,
    /// It may have run, and nothing of it is left to tell how it ended:
    /// the task is reported LOST.
    Gone,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Recovery::Adopted(_) => "Adopted",
            Recovery::NeverStarted => "NeverStarted",
            Recovery::Gone => "Gone",
        })
    }
}

/// Starts containers. One per agent, chosen at start-up.
pub trait Containerizer: Send + Sync + 'static {
    fn launch(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<Box<dyn Container>, ContainerError>>;

    /// After an agent restart: finds the container of a checkpointed task
    /// from what was recorded in `run_dir` — a live one to watch again, or
    /// one that ended while the agent was down (its `wait` then returns the
    /// true exit status at once). A task that has not claimed its start
    /// ([`claim`]) is claimed as dropped here, so it never starts.
    fn recover(&self, id: String, run_dir: PathBuf) -> BoxFuture<'_, Result<Recovery, ContainerError>>;

    /// After recovery, before any launch: removes (killing what runs there)
    /// whatever this containerizer left behind that belongs to none of the
    /// `adopted` containers (their run dirs), e.g. the cgroup of a container
    /// whose record was never written. Returns how many it removed.
    fn sweep(&self, adopted: Vec<PathBuf>) -> BoxFuture<'_, Result<usize, ContainerError>> {
        let _ = adopted;
        Box::pin(async { Ok(0) })
    }

    /// The host uid and gid that will own the sandbox of a task run as
    /// `user` (`None`: the containerizer's default user), for the files
    /// the agent puts there before the launch (fetched artifacts); `None`:
    /// the agent's own user. A task whose image names its user gets the
    /// default user's ids here.
    fn sandbox_owner(&self, user: Option<&str>) -> Result<Option<(u32, u32)>, ContainerError> {
        let _ = user;
        Ok(None)
    }

    /// On a clean agent shutdown: releases what the containerizer holds for
    /// itself (running containers are left alone).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// One running container.
pub trait Container: Send {
    /// Pid of the container's main process (in the agent's pid namespace).
    fn pid(&self) -> u32;

    /// Sends `signal` to every process of the container.
    fn signal(&self, signal: Signal) -> Result<(), ContainerError>;

    /// Waits for the main process to end. Cancel-safe; once it has
    /// returned, later calls return the same status at once.
    fn wait(&mut self) -> BoxFuture<'_, Result<ExitStatus, ContainerError>>;

    /// Kills whatever is left of the container and releases its resources.
    /// Called once, after the task has ended.
    fn cleanup(&mut self) -> BoxFuture<'_, Result<(), ContainerError>>;

    /// A feed of the container's resource usage, refreshed every second or
    /// so, for containerizers that can measure it.
    fn usage_feed(&self) -> Option<tokio::sync::watch::Receiver<Option<Usage>>> {
        None
    }

    /// How to start another process in the container, where the
    /// containerizer can.
    fn entry(&self) -> Option<Entry> {
        None
    }

    /// The limit that ended the task, if one did; asked after `wait`.
    fn limitation(&mut self) -> BoxFuture<'_, Option<Limitation>> {
        Box::pin(async { None })
    }
}

/// `program` as an absolute path, looked up in the task's own `PATH` when it
/// has no `/`: with an absolute path std starts it with `posix_spawn`, and
/// an init can exec it directly.
pub(crate) fn resolve_program(spec: &ContainerSpec, program: &str) -> Result<PathBuf, ContainerError> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path_env = spec.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str());
    which::which_in(program, path_env, &spec.sandbox).map_err(|e| ContainerError::Spawn {
        program: program.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("not found in the task's PATH: {e}"),
        ),
    })
}
