//! The Linux containerizer: each task in its own cgroup (cpu, memory, pids
//! limits) and its own pid, mount, uts and ipc namespaces, as an
//! unprivileged user.
//!
//! The agent never forks a container itself: its launcher (a fresh,
//! single-threaded process, see [`super::launcher`]) starts each
//! container's init in its namespaces (see [`super::init`]), which runs the
//! task and records the task's exit status in the container's run dir.
//! The init outlives the agent, so a restarted agent finds the container
//! again ([`Containerizer::recover`]) and still learns how a task that
//! ended meanwhile exited.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use nix::sys::signal::kill;
use nix::unistd::{Pid, User};
use serde::{Deserialize, Serialize};

use super::claim::{self, Claim};
use super::harden::Confinement;
use super::image_task::Lease;
use super::init::{ExitRecord, InitSpec, Namespaces};
use super::launcher::{Launcher, PidFd};
use super::{
    CommandSpec, Container, ContainerError, ContainerSpec, Containerizer, EndedContainer, ExitStatus, Limitation,
    Recovery, Signal,
};
use crate::cgroups::{self, Cgroup, CgroupBackend, Limits};

/// How the agent isolates tasks.
#[derive(Debug, Clone)]
pub struct LinuxConfig {
    /// The cgroup filesystem, normally `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    /// Parent cgroup of every container of this agent.
    pub parent: String,
    /// The `mezzo` binary, started as `mezzo __container-init SPEC`.
    pub exe: PathBuf,
    /// User for tasks that name none.
    pub default_user: String,
    /// Users a task may ask for (the default user is always allowed).
    pub allowed_users: Vec<String>,
    /// Cap each task at its cpus with a CFS quota, not only weight it.
    pub cpu_hard_limit: bool,
    /// Most processes one task may have.
    pub pids_max: u64,
    /// How often the sandbox's disk use is measured and logs rotated.
    pub disk_check_interval: Duration,
    /// Size at which stdout and stderr are rotated (one old copy is kept).
    pub log_max_bytes: u64,
    /// The file system tasks see (`super::rootfs`); `None`: the host's.
    pub view: Option<super::rootfs::View>,
    /// Tasks may run without the seccomp filter when the master allowed it.
    pub allow_unconfined: bool,
    /// Where images come from; `None`: tasks with an image are refused.
    pub images: Option<super::image_task::ImageSource>,
    /// Each task in a user namespace of its own with these ids
    /// (`--user-namespaces`, `super::userns`); `None`: the host's.
    pub userns: Option<super::userns::IdRange>,
    /// What tasks on the host's network may reach on loopback
    /// (`cgroups::loopback`); `None`: anything.
    pub loopback: Option<cgroups::LoopbackFilter>,
}

/// What the containerizer records in a container's run dir.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    cgroup: String,
    /// The process whose end means the exit record is final: the init
    /// (`init_records_exit`) or its supervisor. 0 on disk (written before
    /// the launch; recovery reads the `init.pid` or `supervisor.pid` the
    /// process writes first thing); set in memory once the launch returned.
    /// Older agents recorded it after the fork.
    supervisor_pid: u32,
    /// The init records the exit itself and no supervisor watches it
    /// ([`InitSpec::supervised`]): an init gone without a record was killed.
    /// False in records of agents from before (a supervisor always).
    #[serde(default)]
    init_records_exit: bool,
    sandbox: PathBuf,
    disk_limit_mib: u64,
    /// For the memory limit's message; 0 in records of older agents.
    #[serde(default)]
    mem_limit_mib: u64,
    /// Its init takes the launch claim ([`claim`]). False in records of
    /// agents from before the claim: their tasks started without one, so
    /// recovery must not take a missing claim as proof of never starting.
    #[serde(default)]
    claims: bool,
    /// The manifest digest of its image, kept in the store while it lives
    /// (also after an agent restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<crate::images::Digest>,
    /// How to start another process in it (`super::enter`); none in
    /// records of older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enter: Option<super::enter::EnterBase>,
    /// The persistent volumes it mounts that have a size, and that size
    /// in MiB: held to it as the sandbox is to `disk_limit_mib`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    volume_limits: Vec<(PathBuf, u64)>,
    /// It has a network namespace of its own.
    #[serde(default)]
    net: bool,
}

#[derive(Debug)]
pub struct LinuxContainerizer {
    cfg: Arc<LinuxConfig>,
    backend: Arc<dyn CgroupBackend>,
    launcher: Arc<Launcher>,
    /// Launches in their blocking step at once ([`LAUNCHES_AT_ONCE`]).
    launch_slots: Arc<tokio::sync::Semaphore>,
}

/// Launches without an image whose blocking step (directories, cgroups,
/// the record, the launcher) runs at once; the others wait for a slot
/// without a thread.
/// The launcher takes one at a time anyway, and a burst of thousands
/// otherwise parked as many blocking-pool threads on its lock, which every
/// container's `pivot_root` then walked (it visits every thread of the
/// host) and the scheduler juggled.
const LAUNCHES_AT_ONCE: usize = 4;

impl LinuxContainerizer {
    /// Refuses to start when this agent cannot isolate (not root, or the
    /// cgroup controllers are missing), with what is missing.
    pub fn new(mut cfg: LinuxConfig) -> Result<Self, ContainerError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(ContainerError::Isolation(
                "isolating tasks needs root (cgroups and namespaces); run the agent as root or pass --isolation none"
                    .into(),
            ));
        }
        let mut backend = cgroups::detect(&cfg.cgroup_root).map_err(|e| {
            ContainerError::Isolation(format!("{e}; pass --isolation none to run tasks without isolation"))
        })?;
        if let Some(why) = backend.filter_loopback(cfg.loopback.clone()) {
            return Err(ContainerError::Isolation(format!(
                "{why}; pass --task-loopback all to run without the loopback filter"
            )));
        }
        if let Some(range) = cfg.userns {
            if let Some(why) = super::userns::unsupported() {
                return Err(ContainerError::Isolation(format!("--user-namespaces: {why}")));
            }
            let user = task_user(&cfg, None)?;
            if range.host(user.uid.as_raw()).is_none() || range.host(user.gid.as_raw()).is_none() {
                return Err(ContainerError::Isolation(format!(
                    "--user-namespace-ids {range}: the task user {:?} (uid {}, gid {}) is outside the range",
                    cfg.default_user, user.uid, user.gid
                )));
            }
        }
        tracing::info!(version = ?backend.version(), parent = %cfg.parent, userns = ?cfg.userns, "isolating tasks with cgroups and namespaces");
        if let (Some(view), Some(_)) = (&cfg.view, &cfg.images) {
            let dir = scaffold_dir(view);
            super::rootfs::build_scaffold(&dir, &view.host_paths).map_err(|e| {
                ContainerError::Isolation(format!("cannot make the image scaffold {}: {e}", dir.display()))
            })?;
            if let (Some(range), Some(images)) = (cfg.userns, cfg.images.as_mut()) {
                images.userns_unsupported = images_in_userns(range, &dir, &images.store.layers_root()).err();
                if let Some(why) = &images.userns_unsupported {
                    tracing::warn!("tasks with an image cannot run on this agent (--user-namespaces): {why}");
                }
            }
        }
        Ok(LinuxContainerizer {
            launcher: Arc::new(Launcher::new(cfg.exe.clone())),
            launch_slots: Arc::new(tokio::sync::Semaphore::new(LAUNCHES_AT_ONCE)),
            cfg: Arc::new(cfg),
            backend: Arc::from(backend),
        })
    }

    async fn launch_linux(&self, spec: ContainerSpec) -> Result<Box<dyn Container>, ContainerError> {
        // Everything up to the fork blocks (user lookup, directories,
        // cgroup files, the launcher's pipes, the record): one trip to the
        // blocking pool, off the async workers.
        let (cfg, backend, launcher) = (self.cfg.clone(), self.backend.clone(), self.launcher.clone());
        // A launch that may pull an image takes no slot: a pull may take
        // minutes, and must not hold back other tasks' launches.
        let slot = match spec.image {
            Some(_) => None,
            None => Some(
                self.launch_slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| ContainerError::Isolation(e.to_string()))?,
            ),
        };
        let (spec, record, cgroup, lease) = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let (spec, init, cgroup, name, lease) = prepare(&cfg, backend.as_ref(), spec)?;
            let enter = enter_base(&spec, &init, &name);
            // Recorded once, before the launch: a restart right after it
            // still finds the container of a task that may have started.
            // The pid to watch is not in it; recovery reads the `init.pid`
            // the init writes (or the `supervisor.pid` its supervisor
            // writes) before the init takes the launch claim, so a task
            // that may have started always has it on disk.
            let mut record = Record {
                cgroup: name,
                supervisor_pid: 0,
                init_records_exit: !init.supervised(),
                sandbox: spec.sandbox.clone(),
                disk_limit_mib: spec.resources.disk.0,
                mem_limit_mib: spec.resources.mem.0,
                claims: true,
                image: lease.as_ref().map(|l| l.digest().clone()),
                enter: Some(enter),
                net: spec.isolated_network,
                volume_limits: spec
                    .mounts
                    .iter()
                    .filter(|m| m.limit_mib > 0)
                    .map(|m| (m.source.clone(), m.limit_mib))
                    .collect(),
            };
            write_record(&spec, &record);
            if let Some(base) = &record.enter
                && let Err(e) = super::enter::write_base(&spec.run_dir, base)
            {
                tracing::warn!(container = %spec.id, "cannot record how to enter the container: {e}");
            }
            record.supervisor_pid = match launcher.launch(&init) {
                Ok(pid) => pid,
                Err(e) => {
                    let _ = cgroup.destroy();
                    return Err(e);
                }
            };
            Ok((spec, record, cgroup, lease))
        })
        .await
        .map_err(|e| ContainerError::Isolation(e.to_string()))??;
        let pidfd = open_pidfd(&spec.id, record.supervisor_pid);
        tracing::debug!(container = %spec.id, supervisor_pid = record.supervisor_pid, "launched");
        let mut container = LinuxContainer::new(spec.id, spec.run_dir, record, cgroup, pidfd, &self.cfg);
        container.image = lease;
        Ok(Box::new(container))
    }

    async fn recover_linux(&self, id: String, run_dir: PathBuf) -> Result<Recovery, ContainerError> {
        let record = std::fs::read(run_dir.join("container.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok());
        // No record: the agent died before it prepared the container (the
        // record is written before the fork), so nothing can have claimed.
        if record.as_ref().is_none_or(|r| r.claims) {
            match claim::take(&run_dir, Claim::Dropped) {
                Ok(Claim::Dropped) => return Ok(Recovery::NeverStarted),
                Ok(Claim::Started) => {}
                Err(e) => {
                    tracing::warn!(container = %id, "cannot take the launch claim ({e}); the task may have started")
                }
            }
        }
        let exit = super::init::read_exit(&run_dir);
        let Some(mut record) = record else {
            return Ok(ended_or_gone(id, exit));
        };
        // Recorded beside the record by agents from before `enter.json`.
        if let Some(base) = &record.enter
            && !run_dir.join(super::enter::BASE_FILE).exists()
            && let Err(e) = super::enter::write_base(&run_dir, base)
        {
            tracing::warn!(container = %id, "cannot record how to enter the container: {e}");
        }
        if record.supervisor_pid == 0 {
            // Recorded before the launch: the process says who it is.
            let file = if record.init_records_exit {
                super::init::INIT_PID_FILE
            } else {
                super::init::SUPERVISOR_PID_FILE
            };
            record.supervisor_pid = super::init::read_pid(&run_dir, file).unwrap_or(0);
        }
        let cgroup = self
            .backend
            .open(&self.cfg.parent, &record.cgroup)
            .map_err(|e| ContainerError::Isolation(e.to_string()))?;
        let alive = pid_alive(record.supervisor_pid);
        // Written since it was read above, by a process that ended since.
        let exit = if exit.is_none() && !alive {
            super::init::read_exit(&run_dir)
        } else {
            exit
        };
        // An init that records its own end and is gone without a record
        // was killed while the agent was away (the OOM killer, an
        // operator): adopted, so that its end is reported as that kill
        // (`wait_exit`), and an OOM kill as such (`limitation`).
        let killed = record.init_records_exit && record.supervisor_pid > 1 && !alive;
        match cgroup {
            Some(cgroup) if exit.is_some() || alive || killed => {
                let cgroup: Arc<dyn Cgroup> = Arc::from(cgroup);
                let pidfd = if exit.is_some() || !alive {
                    None
                } else {
                    open_pidfd(&id, record.supervisor_pid)
                };
                let image = record.image.clone();
                let mut container = LinuxContainer::new(id, run_dir, record, cgroup, pidfd, &self.cfg);
                container.image = image.zip(self.cfg.images.as_ref()).map(|(d, source)| source.lease(&d));
                Ok(Recovery::Adopted(Box::new(container)))
            }
            Some(cgroup) => {
                // No init or supervisor and no exit record: nothing can
                // report this container's end; stop it.
                tracing::warn!(container = %id, "container without its init or supervisor; destroying it");
                let _ = cgroup.destroy();
                Ok(Recovery::Gone)
            }
            None => Ok(ended_or_gone(id, exit)),
        }
    }
}

/// Writes the container's record to its run dir (where recovery finds it).
fn write_record(spec: &ContainerSpec, record: &Record) {
    let bytes = serde_json::to_vec(record).unwrap_or_default();
    if let Err(e) = crate::paths::write_replace(&spec.run_dir.join("container.json"), &bytes) {
        tracing::warn!(container = %spec.id, "cannot record the container: {e}");
    }
}

/// A container whose cgroup is gone: its recorded end if it has one (it
/// ended, and was cleaned up, before the agent died), else nothing is known.
fn ended_or_gone(id: String, exit: Option<ExitRecord>) -> Recovery {
    match exit {
        Some(exit) => Recovery::Adopted(Box::new(EndedContainer::new(id, exit_of(exit)))),
        None => Recovery::Gone,
    }
}

/// The task's exit status, or why it never started.
fn exit_of(record: ExitRecord) -> Result<ExitStatus, String> {
    match record {
        ExitRecord::Code(c) => Ok(ExitStatus::Code(c)),
        ExitRecord::Signal(s) => Ok(ExitStatus::Signal(s)),
        ExitRecord::Error(msg) => Err(msg),
    }
}

/// A pidfd on an init or supervisor, or `None` (already gone, or no pidfd
/// support: `wait` then polls).
fn open_pidfd(id: &str, pid: u32) -> Option<PidFd> {
    PidFd::open(pid).unwrap_or_else(|e| {
        tracing::debug!(container = %id, pid, "no pidfd ({e}); polling for the exit");
        None
    })
}

impl LinuxContainerizer {
    /// Destroys every child of the parent cgroup that no adopted container
    /// records (blocking: cgroup calls).
    fn sweep_blocking(backend: &dyn CgroupBackend, parent: &str, adopted: &[PathBuf]) -> Result<usize, ContainerError> {
        let iso = |e: cgroups::CgroupError| ContainerError::Isolation(e.to_string());
        let kept: std::collections::HashSet<String> = adopted
            .iter()
            .filter_map(|dir| std::fs::read(dir.join("container.json")).ok())
            .filter_map(|b| serde_json::from_slice::<Record>(&b).ok())
            .map(|r| r.cgroup)
            .collect();
        let mut removed = 0;
        for name in backend.list(parent).map_err(iso)? {
            if kept.contains(&name) {
                continue;
            }
            if let Some(cg) = backend.open(parent, &name).map_err(iso)? {
                tracing::warn!(parent, cgroup = %name, pids = ?cg.pids().unwrap_or_default(), "removing a cgroup that belongs to no checkpointed container");
                cg.destroy().map_err(iso)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The ids the host sees for the task's `uid` and `gid`: in a user
/// namespace, those they are mapped to (the sandbox belongs to them).
fn host_ids(cfg: &LinuxConfig, uid: u32, gid: u32) -> Result<(u32, u32), ContainerError> {
    match cfg.userns {
        None => Ok((uid, gid)),
        Some(range) => range.host(uid).zip(range.host(gid)).ok_or_else(|| {
            ContainerError::UserNamespace(format!(
                "uid {uid} and gid {gid} are not both mapped by this agent's user namespaces (ids 0 to {})",
                range.count - 1
            ))
        }),
    }
}

/// The task's user: `command.user`, or the default; another must be in the
/// allow-list and exist on the host.
fn task_user(cfg: &LinuxConfig, asked: Option<&str>) -> Result<User, ContainerError> {
    let name = asked.unwrap_or(&cfg.default_user);
    if name != cfg.default_user && !cfg.allowed_users.iter().any(|u| u == name) {
        return Err(ContainerError::User {
            user: name.to_owned(),
            agent_user: format!("allowed: {}, {}", cfg.default_user, cfg.allowed_users.join(", ")),
        });
    }
    User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| ContainerError::Isolation(format!("no such user {name:?} on this host")))
}

/// What [`prepare`] made: the spec, the init's spec, the cgroup and its
/// name, and the lease on the task's image.
type Prepared = (ContainerSpec, InitSpec, Arc<dyn Cgroup>, String, Option<Lease>);

/// Blocking part of a launch: the user, the sandbox (owned by the task's
/// user) and run dir, the cgroup with the task's limits, and the init spec.
fn prepare(cfg: &LinuxConfig, backend: &dyn CgroupBackend, spec: ContainerSpec) -> Result<Prepared, ContainerError> {
    if spec.unconfined && !cfg.allow_unconfined {
        return Err(ContainerError::Unconfined);
    }
    let sandbox_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ContainerError::Sandbox { path, source }
    };
    std::fs::create_dir_all(&spec.run_dir).map_err(sandbox_err(&spec.run_dir))?;
    let userns_unsupported = cfg
        .userns
        .and(cfg.images.as_ref())
        .and_then(|i| i.userns_unsupported.as_deref());
    let image = match (&spec.image, userns_unsupported) {
        (None, _) => None,
        (Some(r), Some(why)) => {
            return Err(ContainerError::Image(format!(
                "image {r}: cannot run in a user namespace on this host: {why}"
            )));
        }
        (Some(r), None) => {
            let source = cfg.images.as_ref().filter(|_| cfg.view.is_some()).ok_or_else(|| {
                ContainerError::Image(format!(
                    "image {r}: this agent cannot run images (no private task root)"
                ))
            })?;
            Some(source.prepare(
                (r, spec.image_credentials.as_ref()),
                &spec.command,
                &spec.env,
                &spec.run_dir,
                spec.progress.as_ref(),
            )?)
        }
    };
    // The task's user (the agent's policy) wins over the image's, which
    // wins over the agent's default.
    let (uid, gid) = match (spec.user.as_deref(), image.as_ref().and_then(|i| i.user)) {
        (None, Some(ids)) => ids,
        (asked, _) => {
            let user = task_user(cfg, asked)?;
            (user.uid.as_raw(), user.gid.as_raw())
        }
    };
    let (host_uid, host_gid) = host_ids(cfg, uid, gid)?;
    if let (Some(range), Some(image)) = (cfg.userns, &image) {
        // In a user namespace the overlay is the container root's (host
        // `base`): it writes the root's changes and overlayfs' scratch.
        for dir in [&image.root.upper, &image.root.work] {
            std::os::unix::fs::chown(dir, Some(range.base), Some(range.base)).map_err(sandbox_err(dir))?;
        }
        super::image_task::for_user_namespaces(&image.root.layers)?;
    }
    std::fs::create_dir_all(&spec.sandbox).map_err(sandbox_err(&spec.sandbox))?;
    std::os::unix::fs::chown(&spec.sandbox, Some(host_uid), Some(host_gid)).map_err(sandbox_err(&spec.sandbox))?;
    super::write_secret_files(&spec.sandbox, &spec.secret_files, Some((host_uid, host_gid)))?;
    own_volumes(&spec.mounts, (host_uid, host_gid))?;
    let argv = match &image {
        Some(image) => image.argv.clone(),
        None => argv(&spec)?,
    };
    let mut view = cfg.view.clone();
    if let (Some(view), Some(image)) = (view.as_mut(), &image) {
        let mut root = image.root.clone();
        root.layers.push(scaffold_dir(view));
        view.image = Some(root);
    }
    match (view.as_mut(), spec.mounts.first()) {
        (Some(view), _) => view.mounts = spec.mounts.clone(),
        (None, Some(m)) => {
            return Err(ContainerError::Mount {
                target: m.target.clone(),
                why: "this agent gives tasks no file system of their own to mount it in".into(),
            });
        }
        (None, None) => {}
    }
    let limits = Limits {
        cpu_shares: Limits::shares_for_cpus(spec.resources.cpus.0 as f64 / 1000.0),
        cpu_quota: (cfg.cpu_hard_limit && spec.resources.cpus.0 > 0)
            .then(|| Duration::from_micros(spec.resources.cpus.0 * 100)),
        memory_bytes: (spec.resources.mem.0 > 0).then(|| spec.resources.mem.0 * 1024 * 1024),
        pids_max: Some(cfg.pids_max),
    };
    let name = uuid::Uuid::new_v4().simple().to_string();
    let cgroup: Arc<dyn Cgroup> = backend
        .create(&cfg.parent, &name, &limits)
        .map(Arc::from)
        .map_err(|e| ContainerError::Isolation(e.to_string()))?;
    let hostname: String = spec.id.rsplit('/').next().unwrap_or("task").chars().take(63).collect();
    let init = InitSpec {
        id: spec.id.clone(),
        run_dir: spec.run_dir.clone(),
        sandbox: spec.sandbox.clone(),
        stdout: spec.sandbox.join("stdout"),
        stderr: spec.sandbox.join("stderr"),
        argv,
        env: image.as_ref().map_or_else(|| spec.env.clone(), |i| i.env.clone()),
        uid,
        gid,
        groups: vec![gid],
        hostname: Some(hostname),
        namespaces: Namespaces {
            pid: true,
            mount: true,
            uts: true,
            ipc: true,
            net: spec.isolated_network,
        },
        cgroup_procs: cgroup.procs_files(),
        cgroup_leave: cgroup.leave_files(),
        confinement: Confinement {
            seccomp: !spec.unconfined,
            ..Default::default()
        },
        view,
        cwd: image.as_ref().and_then(|i| i.cwd.clone()),
        userns: cfg.userns,
    };
    Ok((spec, init, cgroup, name, image.map(|i| i.lease)))
}

/// Gives the top directory of each persistent volume in `mounts` to the
/// task's host ids, as its sandbox is (not what is in it: files a task of
/// another user left keep their owner).
pub(crate) fn own_volumes(mounts: &[super::TaskMount], (uid, gid): (u32, u32)) -> Result<(), ContainerError> {
    for m in mounts.iter().filter(|m| m.owned_by_task) {
        std::os::unix::fs::lchown(&m.source, Some(uid), Some(gid)).map_err(|e| ContainerError::Mount {
            target: m.target.clone(),
            why: format!("cannot give {} to the task's user: {e}", m.source.display()),
        })?;
    }
    Ok(())
}

/// How to enter the container `init` starts: as its task, with the
/// task's environment less the variables that hold secrets.
fn enter_base(spec: &ContainerSpec, init: &InitSpec, cgroup: &str) -> super::enter::EnterBase {
    let cwd = match (&init.cwd, &init.view) {
        (Some(cwd), _) => cwd.clone(),
        (None, Some(view)) => view.sandbox_inside(&init.sandbox).to_owned(),
        (None, None) => init.sandbox.clone(),
    };
    super::enter::EnterBase {
        cgroup: cgroup.to_owned(),
        cgroup_procs: init.cgroup_procs.clone(),
        userns: init.userns.is_some(),
        uid: init.uid,
        gid: init.gid,
        groups: init.groups.clone(),
        cwd,
        confinement: init.confinement.clone(),
        env: init
            .env
            .iter()
            .filter(|(k, _)| !spec.secret_env.contains(k))
            .cloned()
            .collect(),
    }
}

fn pid_alive(pid: u32) -> bool {
    pid > 1 && kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// The task's argv with an absolute program path (resolved in the task's
/// own PATH; the init execs it directly).
fn argv(spec: &ContainerSpec) -> Result<Vec<String>, ContainerError> {
    Ok(match &spec.command {
        CommandSpec::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
        CommandSpec::FromImage { .. } => {
            return Err(ContainerError::Image("the task has no command and no image".into()));
        }
        CommandSpec::Exec { program, args } => {
            let resolved = super::resolve_program(spec, program)?;
            std::iter::once(resolved.display().to_string())
                .chain(args.iter().cloned())
                .collect()
        }
    })
}

impl Containerizer for LinuxContainerizer {
    fn launch(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<Box<dyn Container>, ContainerError>> {
        self.launch_linux(spec).boxed()
    }

    fn recover(&self, id: String, run_dir: PathBuf) -> BoxFuture<'_, Result<Recovery, ContainerError>> {
        self.recover_linux(id, run_dir).boxed()
    }

    fn sandbox_owner(&self, user: Option<&str>) -> Result<Option<(u32, u32)>, ContainerError> {
        let user = task_user(&self.cfg, user)?;
        host_ids(&self.cfg, user.uid.as_raw(), user.gid.as_raw()).map(Some)
    }

    fn sweep(&self, adopted: Vec<PathBuf>) -> BoxFuture<'_, Result<usize, ContainerError>> {
        let (backend, parent) = (self.backend.clone(), self.cfg.parent.clone());
        async move {
            tokio::task::spawn_blocking(move || Self::sweep_blocking(backend.as_ref(), &parent, &adopted))
                .await
                .map_err(|e| ContainerError::Isolation(e.to_string()))?
        }
        .boxed()
    }

    /// Removes the agent's parent cgroup if no container is left in it.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        let (backend, parent) = (self.backend.clone(), self.cfg.parent.clone());
        async move {
            let removed = tokio::task::spawn_blocking(move || match backend.list(&parent) {
                Ok(children) if children.is_empty() => backend.remove_parent(&parent).map(|()| true),
                Ok(_) => Ok(false),
                Err(e) => Err(e),
            })
            .await;
            match removed {
                Ok(Ok(true)) => tracing::info!(parent = %self.cfg.parent, "removed the agent's parent cgroup"),
                Ok(Ok(false)) => {
                    tracing::info!(parent = %self.cfg.parent, "containers still run: the parent cgroup stays")
                }
                Ok(Err(e)) => tracing::warn!("cannot remove the agent's parent cgroup: {e}"),
                Err(e) => tracing::warn!("cannot remove the agent's parent cgroup: {e}"),
            }
        }
        .boxed()
    }
}

struct LinuxContainer {
    id: String,
    run_dir: PathBuf,
    record: Record,
    cgroup: Arc<dyn Cgroup>,
    /// Readable once the init or supervisor has exited (without one, it is
    /// polled).
    supervisor: Option<PidFd>,
    status: Option<ExitStatus>,
    /// What the watcher found over its limit (the sandbox or a volume),
    /// and killed the container for.
    disk_over: Arc<std::sync::Mutex<Option<Limitation>>>,
    usage: tokio::sync::watch::Receiver<Option<crate::cgroups::Usage>>,
    watcher: tokio::task::JoinHandle<()>,
    /// Keeps its image in the store until the container is dropped.
    image: Option<Lease>,
    /// The `mezzo` binary, for `__container-enter`.
    exe: PathBuf,
}

impl LinuxContainer {
    fn new(
        id: String,
        run_dir: PathBuf,
        record: Record,
        cgroup: Arc<dyn Cgroup>,
        supervisor: Option<PidFd>,
        cfg: &LinuxConfig,
    ) -> Self {
        let disk_over = Arc::new(std::sync::Mutex::new(None));
        let (usage_tx, usage) = tokio::sync::watch::channel(None);
        let watcher = tokio::spawn(watch_sandbox(
            Watch {
                id: id.clone(),
                sandbox: record.sandbox.clone(),
                limit_mib: record.disk_limit_mib,
                volumes: record.volume_limits.clone(),
                interval: cfg.disk_check_interval,
                log_max: cfg.log_max_bytes,
            },
            cgroup.clone(),
            disk_over.clone(),
            usage_tx,
        ));
        LinuxContainer {
            id,
            run_dir,
            record,
            cgroup,
            supervisor,
            status: None,
            disk_over,
            usage,
            watcher,
            image: None,
            exe: cfg.exe.clone(),
        }
    }

    fn init_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.run_dir.join("init.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    async fn wait_exit(&mut self) -> Result<ExitStatus, ContainerError> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        if let Some(supervisor) = &self.supervisor {
            supervisor.exited().await.map_err(|source| ContainerError::Wait {
                id: self.id.clone(),
                source,
            })?;
        } else {
            // No pidfd: poll for the exit record.
            while super::init::read_exit(&self.run_dir).is_none() && pid_alive(self.record.supervisor_pid) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let status = match super::init::read_exit(&self.run_dir).map(exit_of) {
            Some(Ok(status)) => status,
            // The init failed before the task's process existed.
            Some(Err(msg)) => return Err(ContainerError::NeverStarted(msg)),
            None if self.record.init_records_exit => {
                let status = match &self.supervisor {
                    Some(init) => init_wait_status(init).await,
                    None => None,
                };
                unrecorded_end(&self.id, status)?
            }
            None => {
                return Err(ContainerError::Isolation(format!(
                    "the supervisor of container {} ended without recording the task's exit",
                    self.id
                )));
            }
        };
        self.status = Some(status);
        Ok(status)
    }
}

/// The init's wait status, once the launcher (which ignores SIGCHLD, so
/// the kernel reaps its children) has reaped it: a moment after its pidfd
/// turns readable.
async fn init_wait_status(init: &PidFd) -> Option<i32> {
    for _ in 0..20 {
        if let Some(status) = init.exit_status() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// What an init that left no exit record ended with. It records every end
/// it lives through and can write, so, by its wait status (`None`: the
/// kernel cannot tell, before Linux 6.15): killed with SIGKILL, the
/// agent's kill or the OOM killer's, and the whole pid namespace with it;
/// killed by another signal, which the init would have passed on to the
/// task, it crashed; exited, it could not write the record, and its exit
/// code stands for the task's (the task's code, or 128 + its signal, as
/// a shell's).
fn unrecorded_end(id: &str, wait_status: Option<i32>) -> Result<ExitStatus, ContainerError> {
    use nix::libc::{SIGKILL, WEXITSTATUS, WIFEXITED, WIFSIGNALED, WTERMSIG};
    match wait_status {
        None => Ok(ExitStatus::Signal(SIGKILL)),
        Some(ws) if WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL => Ok(ExitStatus::Signal(SIGKILL)),
        Some(ws) if WIFSIGNALED(ws) => Err(ContainerError::Isolation(format!(
            "the init of container {id} crashed (signal {}) before it recorded the task's exit",
            WTERMSIG(ws)
        ))),
        Some(ws) if WIFEXITED(ws) => {
            tracing::warn!(
                container = %id,
                code = WEXITSTATUS(ws),
                "the container's init could not record the task's exit; its own exit code stands for it"
            );
            Ok(ExitStatus::Code(WEXITSTATUS(ws)))
        }
        Some(ws) => Err(ContainerError::Isolation(format!(
            "the init of container {id} ended (wait status {ws:#x}) without recording the task's exit"
        ))),
    }
}

impl Container for LinuxContainer {
    fn pid(&self) -> u32 {
        self.init_pid().unwrap_or(self.record.supervisor_pid as i32) as u32
    }

    fn entry(&self) -> Option<super::Entry> {
        // Containers of agents from before `enter` cannot be entered.
        self.record.enter.as_ref()?;
        Some(super::Entry::Linux {
            exe: self.exe.clone(),
            run_dir: self.run_dir.clone(),
            cgroup: self.record.cgroup.clone(),
            net: self.record.net,
        })
    }

    /// SIGKILL takes the whole cgroup down (freeze, kill all, thaw); other
    /// signals go to the container's init, which passes them to the task.
    fn signal(&self, signal: Signal) -> Result<(), ContainerError> {
        if signal == Signal::SIGKILL {
            return self
                .cgroup
                .kill_all()
                .map_err(|e| ContainerError::Isolation(e.to_string()));
        }
        let to = |source| ContainerError::Signal {
            id: self.id.clone(),
            source,
        };
        // The init itself, by its pidfd: also in the moment before it has
        // joined the cgroups, when the membership check below would drop
        // the signal.
        if let (true, Some(init)) = (self.record.init_records_exit, &self.supervisor) {
            return init.send_signal(signal).map_err(to);
        }
        match self.init_pid() {
            Some(pid) => signal_member(pid, signal, || self.cgroup.pids()).map_err(to),
            // Not started yet: only a kill can stop it.
            None => Ok(()),
        }
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<ExitStatus, ContainerError>> {
        self.wait_exit().boxed()
    }

    fn cleanup(&mut self) -> BoxFuture<'_, Result<(), ContainerError>> {
        async move {
            self.watcher.abort();
            self.cgroup
                .destroy()
                .map_err(|e| ContainerError::Isolation(e.to_string()))
        }
        .boxed()
    }

    fn usage_feed(&self) -> Option<tokio::sync::watch::Receiver<Option<crate::cgroups::Usage>>> {
        Some(self.usage.clone())
    }

    fn limitation(&mut self) -> BoxFuture<'_, Option<Limitation>> {
        async move {
            if self.cgroup.oom_killed().unwrap_or(false) {
                return Some(Limitation::Memory {
                    limit_mib: self.record.mem_limit_mib,
                });
            }
            self.disk_over
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        }
        .boxed()
    }
}

/// The agent's scaffold layer, the topmost of every image root (see
/// [`super::rootfs::build_scaffold`]), beside the view's mount point.
/// Whether this host can run images in user namespaces: id-mapped mounts
/// of the runtime dir (the scaffold layer: tmpfs needs Linux 6.3) and of
/// the store, and `user.` xattrs where the containers' upper dirs are
/// (tmpfs: 6.6). Overlayfs on id-mapped layers (5.19) shows only at the
/// first launch, as a failed mount.
fn images_in_userns(range: super::userns::IdRange, scaffold: &Path, layers: &Path) -> Result<(), String> {
    super::userns::idmapped_layers(range, &[scaffold.to_owned(), layers.to_owned()]).map_err(|e| e.to_string())?;
    let probe = "user.mezzo.probe";
    xattr::set(scaffold, probe, b"1")
        .and_then(|()| xattr::remove(scaffold, probe))
        .map_err(|e| format!("{}: no user xattrs ({e})", scaffold.display()))
}

fn scaffold_dir(view: &super::rootfs::View) -> PathBuf {
    view.mountpoint.with_file_name("image-scaffold")
}

/// What one container's watcher looks after.
struct Watch {
    id: String,
    sandbox: PathBuf,
    limit_mib: u64,
    /// Persistent volumes and their sizes in MiB.
    volumes: Vec<(PathBuf, u64)>,
    interval: Duration,
    log_max: u64,
}

/// Every second: publish the cgroup's usage. Every `interval`: rotate
/// stdout/stderr past `log_max` (copy to `.1`, truncate; the task writes
/// with O_APPEND), and kill the container when the sandbox outgrows its
/// disk resource (Mesos' posix/disk isolator does the same periodic
/// measurement).
async fn watch_sandbox(
    w: Watch,
    cgroup: Arc<dyn Cgroup>,
    over: Arc<std::sync::Mutex<Option<Limitation>>>,
    usage: tokio::sync::watch::Sender<Option<crate::cgroups::Usage>>,
) {
    let tick = Duration::from_secs(1).min(w.interval);
    let mut last_disk = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let cg = cgroup.clone();
        if let Ok(Ok(u)) = tokio::task::spawn_blocking(move || cg.usage()).await {
            usage.send_replace(Some(u));
        }
        if last_disk.elapsed() < w.interval {
            continue;
        }
        last_disk = tokio::time::Instant::now();
        let (dir, log_max, volumes) = (w.sandbox.clone(), w.log_max, w.volumes.clone());
        let found = tokio::task::spawn_blocking(move || {
            for name in ["stdout", "stderr"] {
                let file = dir.join(name);
                if let Err(e) = super::rotate::rotate(&file, log_max) {
                    // The task removed or replaced its log: nothing to rotate.
                    tracing::debug!(file = %file.display(), "not rotated: {e}");
                }
            }
            let mib = |dir: &Path| du(dir).div_ceil(1024 * 1024);
            let used_mib = mib(&dir);
            if w.limit_mib > 0 && used_mib > w.limit_mib {
                return Some(Limitation::Disk {
                    used_mib,
                    limit_mib: w.limit_mib,
                });
            }
            volumes.into_iter().find_map(|(path, limit_mib)| {
                let used_mib = mib(&path);
                (used_mib > limit_mib).then_some(Limitation::Volume {
                    path,
                    used_mib,
                    limit_mib,
                })
            })
        })
        .await
        .unwrap_or(None);
        if let Some(found) = found {
            tracing::info!(container = %w.id, ?found, "over its disk limit; killing the task");
            *over.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(found);
            let cg = cgroup.clone();
            match tokio::task::spawn_blocking(move || cg.kill_all()).await {
                Ok(Ok(())) => return,
                // Still running: watched on, killed again at the next check.
                Ok(Err(e)) => tracing::warn!(container = %w.id, "cannot kill the task: {e}"),
                Err(e) => tracing::warn!(container = %w.id, "cannot kill the task: {e}"),
            }
        }
    }
}

/// Bytes of disk the files and directories under `dir` hold: allocated
/// blocks (a sparse file counts what it holds, a preallocated one what it
/// reserved), each inode once (hard links), on `dir`'s file system only,
/// symlinks not followed.
fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = dir.symlink_metadata() else { return 0 };
    let dev = top.dev();
    let mut seen = std::collections::HashSet::new();
    let mut total = top.blocks() * 512;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            if meta.dev() != dev || (meta.nlink() > 1 && !meta.is_dir() && !seen.insert(meta.ino())) {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Sends `signal` to the container's init `pid` only while the container's
/// cgroup still holds it. An init that has ended and been reaped leaves its
/// pid free for any new process of the host: a kill just after the task
/// ended went to whatever started next (in the test suite, where pids wrap
/// at 32,768 within minutes, another cluster's master, which a SIGTERM
/// stops without a word).
fn signal_member(
    pid: i32,
    signal: Signal,
    members: impl FnOnce() -> Result<Vec<u32>, crate::cgroups::CgroupError>,
) -> Result<(), nix::errno::Errno> {
    let member = u32::try_from(pid).is_ok_and(|p| members().is_ok_and(|m| m.contains(&p)));
    if !member {
        return Ok(()); // ended, or leaving its cgroups as it winds down
    }
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod signal_tests {
    use super::*;

    /// A pidfd signals exactly its process, and, once that has ended and
    /// been reaped, nothing (no error either).
    #[tokio::test]
    async fn a_pidfd_signals_its_process_and_nothing_once_it_is_gone() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let pidfd = PidFd::open(child.id()).expect("pidfd_open").expect("running");
        pidfd.send_signal(Signal::SIGTERM).expect("signalled");
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
        pidfd.send_signal(Signal::SIGTERM).expect("gone: no error");
    }

    /// A pidfd tells how its process ended once it is reaped, to any
    /// holder (the agent is not its containers' inits' parent), and
    /// nothing while it runs.
    #[tokio::test]
    async fn a_pidfd_tells_how_its_process_ended() {
        use std::io::Write;
        let mut crashed = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let pidfd = PidFd::open(crashed.id()).expect("pidfd_open").expect("running");
        assert_eq!(pidfd.exit_status(), None, "still running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(crashed.id() as i32), Signal::SIGSEGV).expect("kill");
        crashed.wait().expect("wait");
        let ws = pidfd.exit_status().expect("its end, on Linux 6.15+");
        assert!(
            nix::libc::WIFSIGNALED(ws) && nix::libc::WTERMSIG(ws) == nix::libc::SIGSEGV,
            "{ws:#x}"
        );

        let mut exited = std::process::Command::new("sh")
            .args(["-c", "read line; exit 3"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let pidfd = PidFd::open(exited.id()).expect("pidfd_open").expect("running");
        exited.stdin.take().expect("stdin").write_all(b"go\n").expect("go");
        exited.wait().expect("wait");
        let ws = pidfd.exit_status().expect("its end");
        assert!(nix::libc::WIFEXITED(ws) && nix::libc::WEXITSTATUS(ws) == 3, "{ws:#x}");
    }

    /// An init gone without a record: killed (by the agent or the OOM
    /// killer), crashed, or unable to write the record (its exit code then
    /// stands for the task's); a kernel that cannot tell, killed.
    #[test]
    fn an_init_gone_without_a_record_is_told_apart_by_its_wait_status() {
        let exited = |code: i32| code << 8;
        let killed_by = |signal: i32| signal;
        assert!(matches!(unrecorded_end("c", None), Ok(ExitStatus::Signal(9))));
        assert!(matches!(
            unrecorded_end("c", Some(killed_by(nix::libc::SIGKILL))),
            Ok(ExitStatus::Signal(9))
        ));
        assert!(matches!(unrecorded_end("c", Some(exited(3))), Ok(ExitStatus::Code(3))));
        assert!(matches!(unrecorded_end("c", Some(exited(0))), Ok(ExitStatus::Code(0))));
        let crashed = unrecorded_end("c", Some(killed_by(nix::libc::SIGSEGV)));
        assert!(
            matches!(&crashed, Err(ContainerError::Isolation(m)) if m.contains("crashed (signal 11)")),
            "{crashed:?}"
        );
    }

    /// A pid that is not in the container's cgroup is not signalled; one
    /// that is, is.
    #[test]
    fn only_a_member_of_the_cgroup_is_signalled() {
        let mut other = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = other.id();
        signal_member(pid as i32, Signal::SIGTERM, || Ok(vec![pid + 1])).expect("skipped");
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            other.try_wait().expect("try_wait").is_none(),
            "a process outside the cgroup was signalled"
        );
        signal_member(pid as i32, Signal::SIGTERM, || Ok(vec![pid])).expect("signalled");
        let status = other.wait().expect("wait");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(15));
    }
}
