//! One supervisor per task: launch its container, report each state, and
//! carry out a kill (SIGTERM, grace period, SIGKILL).
//!
//! ```text
//! (invalid command) ------------------------------------------> ERROR (TASK_INVALID)
//! STARTING -- kill pending -----------------------------------> KILLED (KILLED_DURING_LAUNCH)
//!          -- an artifact cannot be fetched ------------------> FAILED (FETCH_FAILED)
//!                        (the agent's artifact cache failed: DROPPED (CONTAINER_LAUNCH_FAILED))
//!          -- kill while fetching ----------------------------> KILLED (KILLED_DURING_LAUNCH)
//!          -- a volume or host volume it mounts is not here --> FAILED (CONTAINER_LAUNCH_FAILED)
//!          -- checkpoint or launch error ---------------------> see `launch_outcome`:
//!                                 the task cannot run as given: ERROR (TASK_INVALID)
//!                                 a mount cannot be made as asked: FAILED (CONTAINER_LAUNCH_FAILED)
//!                                 the agent failed before it started: DROPPED (CONTAINER_LAUNCH_FAILED)
//!          -- launched --> RUNNING -- exit 0 -----------------> FINISHED
//!                                  -- exit N / signal --------> FAILED (exit_code N / -signal)
//!                                  -- init failed before exec -> DROPPED (CONTAINER_LAUNCH_FAILED)
//!                                  -- kill: TERM, grace, KILL -> KILLED
//!                                  -- health verdict changed -> RUNNING (healthy, HEALTH_CHECK_STATUS_UPDATED)
//! ```
//!
//! FAILED is only ever sent for a process that ran, but for FETCH_FAILED
//! and a mount that cannot be made (the master's view of this agent's
//! volumes was wrong, or the containerizer cannot make it as asked):
//! the artifacts (`CommandInfo.uris`, [`crate::fetch`]) are fetched after
//! the checkpoint and before the launch, and a fetch that fails (a wrong
//! URI or checksum, an unreachable server) is the task's input at fault,
//! reported as the contract says (`StatusReason.REASON_FETCH_FAILED`)
//! although its command never ran. DROPPED is only sent for a task that
//! never started, which a framework may launch again.

use mezzo_proto::image::ImageRef;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::reservation::ReservedResources;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1::{self, StatusReason};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{StatusReport, agent_status, health};
use crate::containerizer::{
    CommandSpec, Container, ContainerError, ContainerSpec, Containerizer, Entry, ExitStatus, Limitation, Signal, Usage,
};
use crate::key::TaskKey;
use crate::metrics::Metrics;

/// What a supervisor needs to run one task.
#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    pub key: TaskKey,
    /// Without its secrets' values ([`take_secrets`]): this is what the
    /// task's checkpoint holds.
    pub task: v1::TaskInfo,
    /// The values the leader filled in, taken out of `task`.
    pub secrets: Secrets,
    pub agent_id: String,
    pub sandbox: PathBuf,
    /// The task's checkpoint dir, handed to the containerizer as its run dir.
    pub run_dir: PathBuf,
    pub default_kill_grace: Duration,
    /// Unix seconds when the master launched it (its `RunTask`'s), kept in
    /// the checkpoint.
    pub launched_at: f64,
    /// Fetches the task's artifacts into its sandbox before the launch.
    pub fetcher: Arc<crate::fetch::Fetcher>,
    /// Where the directories the task mounts are.
    pub volumes: Arc<crate::volumes::Volumes>,
    /// A volume the task mounts that another live task of this agent
    /// still mounts (one the master thinks free while a task of a removed
    /// framework ends): the launch fails rather than share it.
    pub busy_volume: Option<(String, TaskKey)>,
    /// The container's id, if not the task's key (a custom executor's,
    /// `<framework>/executors/<executor>`, which no task key can be).
    pub container_id: Option<String>,
}

/// A kill request: the grace period to use instead of the task's, and why
/// when it is not the framework's own request (an operator's kill, a
/// drain's deadline), to be reported on the `TASK_KILLED` update.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Kill {
    pub grace: Option<Duration>,
    pub why: Option<(StatusReason, String)>,
}

impl Kill {
    /// From the master's message: an unspecified reason is the framework's
    /// own request.
    pub fn from_proto(k: &v1::KillTask) -> Kill {
        let reason = StatusReason::try_from(k.reason).unwrap_or(StatusReason::ReasonUnspecified);
        Kill {
            grace: k.kill_grace_period_ms.map(Duration::from_millis),
            why: (reason != StatusReason::ReasonUnspecified).then(|| (reason, k.message.clone())),
        }
    }
}

/// The table's handle on a running supervisor.
#[derive(Debug)]
pub struct SupervisorHandle {
    kill: mpsc::Sender<Kill>,
    join: JoinHandle<()>,
    usage: tokio::sync::watch::Receiver<Option<Usage>>,
    entry: tokio::sync::watch::Receiver<Option<Entry>>,
}

impl SupervisorHandle {
    /// Asks for a kill; `grace` overrides the task's grace period. A second
    /// request while one is pending changes nothing.
    pub fn kill(&self, grace: Option<Duration>) {
        self.kill_with(Kill { grace, why: None });
    }

    /// Asks for a kill that is reported with its own reason.
    pub fn kill_with(&self, kill: Kill) {
        let _ = self.kill.try_send(kill);
    }

    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    /// The container's latest measured usage, if its containerizer measures.
    pub fn usage(&self) -> Option<Usage> {
        *self.usage.borrow()
    }

    /// How to start another process in the task's container, while it
    /// runs (`mezzo exec`).
    pub fn entry(&self) -> Option<Entry> {
        self.entry.borrow().clone()
    }
}

/// Starts the supervisor of one task. Every state change is sent on
/// `reports`. With `adopted`, the container already runs (found again after
/// an agent restart): the supervisor only watches it.
pub fn spawn(
    spec: SupervisorSpec,
    containerizer: Arc<dyn Containerizer>,
    reports: mpsc::Sender<StatusReport>,
    metrics: Metrics,
    adopted: Option<Box<dyn Container>>,
) -> SupervisorHandle {
    let (kill, kill_rx) = mpsc::channel(1);
    let (usage_tx, usage) = tokio::sync::watch::channel(None);
    let (entry_tx, entry) = tokio::sync::watch::channel(None);
    let sup = Supervisor {
        spec,
        reports,
        kill_rx,
        metrics,
        usage: usage_tx,
        entry: entry_tx,
    };
    let join = match adopted {
        Some(container) => tokio::spawn(sup.adopt(container)),
        None => tokio::spawn(sup.run(containerizer)),
    };
    SupervisorHandle {
        kill,
        join,
        usage,
        entry,
    }
}

struct Supervisor {
    spec: SupervisorSpec,
    reports: mpsc::Sender<StatusReport>,
    kill_rx: mpsc::Receiver<Kill>,
    metrics: Metrics,
    usage: tokio::sync::watch::Sender<Option<Usage>>,
    entry: tokio::sync::watch::Sender<Option<Entry>>,
}

/// Copies a container's usage feed into the supervisor's own, until the
/// container goes away.
fn forward_usage(container: &dyn Container, to: &tokio::sync::watch::Sender<Option<Usage>>) {
    let Some(mut feed) = container.usage_feed() else { return };
    let to = to.clone();
    tokio::spawn(async move {
        while feed.changed().await.is_ok() {
            let u = *feed.borrow();
            to.send_replace(u);
        }
    });
}

impl Supervisor {
    async fn report(&self, state: TaskState, reason: StatusReason, message: impl Into<String>, exit_code: Option<i32>) {
        let mut status = agent_status(&self.spec.key, &self.spec.agent_id, state, reason, message);
        status.exit_code = exit_code;
        self.send(status).await;
    }

    /// A RUNNING update saying the task's health changed.
    async fn report_health(&self, change: health::Change) {
        let mut status = agent_status(
            &self.spec.key,
            &self.spec.agent_id,
            TaskState::Running,
            StatusReason::ReasonTaskHealthCheckStatusUpdated,
            change.message,
        );
        status.healthy = Some(change.healthy);
        self.send(status).await;
    }

    async fn send(&self, status: v1::TaskStatus) {
        let report = StatusReport {
            key: self.spec.key.clone(),
            status,
        };
        if self.reports.send(report).await.is_err() {
            tracing::debug!(task = %self.spec.key, "status report dropped: the task table is gone");
        }
    }

    fn grace(&self, requested: Option<Duration>) -> Duration {
        requested
            .or(self.spec.task.kill_grace_period_ms.map(Duration::from_millis))
            .unwrap_or(self.spec.default_kill_grace)
    }

    /// Writes the task's `RunTask` to its run dir, where a restarted agent
    /// finds it (see [`crate::paths::write_replace`] for why no fsync).
    async fn checkpoint(&self) -> Result<(), String> {
        let run = v1::RunTask {
            framework_id: self.spec.key.framework_id.to_string(),
            framework: None,
            task: Some(self.spec.task.clone()),
            launched_at: self.spec.launched_at,
        };
        let dir = self.spec.run_dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            crate::paths::write_replace(
                &dir.join(crate::paths::TASK_CHECKPOINT),
                &prost::Message::encode_to_vec(&run),
            )
            .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// The user the task asks to run as, if any.
    fn user(&self) -> Option<&str> {
        let cmd = self.spec.task.command.as_ref()?;
        Some(cmd.user.as_str()).filter(|u| !u.is_empty())
    }

    /// Fetches the task's artifacts into its sandbox, one after the other,
    /// each announced in a STARTING update (and its cache hit after it);
    /// or the end to report: a failed fetch, a kill meanwhile (the fetch
    /// is dropped), or a user the sandbox cannot be given to.
    async fn fetch_artifacts(
        &mut self,
        containerizer: &dyn Containerizer,
    ) -> Result<(), (TaskState, StatusReason, String)> {
        let uris = self
            .spec
            .task
            .command
            .as_ref()
            .map(|c| c.uris.as_slice())
            .unwrap_or_default();
        if uris.is_empty() {
            return Ok(());
        }
        // The agent's own failure (its cache) is no fault of the task's.
        let failed = |e: crate::fetch::FetchError| match e {
            crate::fetch::FetchError::Agent(_) => (
                TaskState::Dropped,
                StatusReason::ReasonContainerLaunchFailed,
                e.to_string(),
            ),
            e => (TaskState::Failed, StatusReason::ReasonFetchFailed, e.to_string()),
        };
        let artifacts = uris
            .iter()
            .map(crate::fetch::check)
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        let owner = containerizer.sandbox_owner(self.user()).map_err(|e| {
            let (state, reason) = launch_outcome(&e);
            (state, reason, e.to_string())
        })?;
        let fetcher = self.spec.fetcher.clone();
        for a in &artifacts {
            self.report(
                TaskState::Starting,
                StatusReason::ReasonUnspecified,
                format!("fetching {}", a.shown),
                None,
            )
            .await;
            let fetched = tokio::select! {
                fetched = fetcher.fetch(a, &self.spec.sandbox, owner) => fetched,
                Some(_) = self.kill_rx.recv() => {
                    return Err((
                        TaskState::Killed,
                        StatusReason::ReasonTaskKilledDuringLaunch,
                        format!("killed while fetching {}", a.shown),
                    ));
                }
            };
            match fetched {
                Ok(f) if f.from_cache => {
                    let message = format!("fetched {} from cache", a.shown);
                    self.report(TaskState::Starting, StatusReason::ReasonUnspecified, message, None)
                        .await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(task = %self.spec.key, "fetch failed: {e}");
                    return Err(failed(e));
                }
            }
        }
        // What the launch writes itself must still be free: the task's
        // input is at fault, not the agent (a DROPPED would be launched
        // again, and fail again).
        match collision(&self.spec.sandbox, &self.spec.task) {
            Some(why) => Err((TaskState::Failed, StatusReason::ReasonFetchFailed, why)),
            None => Ok(()),
        }
    }

    /// Watches a container that was already running when the agent started.
    async fn adopt(mut self, mut container: Box<dyn Container>) {
        tracing::info!(task = %self.spec.key, pid = container.pid(), "watching a recovered container");
        forward_usage(container.as_ref(), &self.usage);
        self.watch(container.as_mut()).await;
        if let Err(e) = container.cleanup().await {
            tracing::warn!(task = %self.spec.key, "container cleanup failed: {e}");
        }
    }

    async fn run(mut self, containerizer: Arc<dyn Containerizer>) {
        let checked = command_spec(&self.spec.task).and_then(|(command, image)| {
            let mounts = checked_mounts(&self.spec.task, image.is_some())?;
            Ok((command, image, mounts))
        });
        let (command, image, mounts) = match checked {
            Ok(c) => c,
            Err(why) => {
                self.report(TaskState::Error, StatusReason::ReasonTaskInvalid, why, None)
                    .await;
                return;
            }
        };
        self.report(TaskState::Starting, StatusReason::ReasonUnspecified, "", None)
            .await;
        // Checkpoint before launching: a restarted agent must know every
        // container it may have started.
        crate::failpoint::hit("before_checkpoint").await;
        if let Err(e) = self.checkpoint().await {
            tracing::error!(task = %self.spec.key, "cannot checkpoint the task; not launching it: {e}");
            let message = format!("the agent cannot checkpoint the task, which never started: {e}");
            self.report(
                TaskState::Dropped,
                StatusReason::ReasonContainerLaunchFailed,
                message,
                None,
            )
            .await;
            return;
        }
        crate::failpoint::hit("before_launch").await;
        if self.kill_rx.try_recv().is_ok() {
            self.report(
                TaskState::Killed,
                StatusReason::ReasonTaskKilledDuringLaunch,
                "killed before its container was launched",
                None,
            )
            .await;
            return;
        }
        if let Some((volume, user)) = &self.spec.busy_volume {
            let message = format!(
                "volume {volume} is still mounted by task {user} on this agent; launch again once that task has ended"
            );
            let reason = StatusReason::ReasonContainerLaunchFailed;
            self.report(TaskState::Failed, reason, message, None).await;
            return;
        }
        let mounts = match self.spec.volumes.resolve(&mounts) {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(task = %self.spec.key, "cannot mount: {e}");
                let reason = StatusReason::ReasonContainerLaunchFailed;
                self.report(TaskState::Failed, reason, e.to_string(), None).await;
                return;
            }
        };
        if let Err((state, reason, message)) = self.fetch_artifacts(containerizer.as_ref()).await {
            self.report(state, reason, message, None).await;
            return;
        }

        let secrets = std::mem::take(&mut self.spec.secrets);
        let mut container_spec = self.container_spec(command, image, secrets);
        container_spec.mounts = mounts;
        let (progress, mut progress_rx) = tokio::sync::mpsc::unbounded_channel();
        container_spec.progress = Some(progress);
        let launch = containerizer.launch(container_spec);
        tokio::pin!(launch);
        // A slow launch (an image pull) says what it is doing meanwhile.
        let launched = loop {
            tokio::select! {
                launched = &mut launch => break launched,
                Some(message) = progress_rx.recv() => {
                    self.report(TaskState::Starting, StatusReason::ReasonUnspecified, message, None).await;
                }
            }
        };
        let mut container = match launched {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(task = %self.spec.key, "launch failed: {e}");
                let (state, reason) = launch_outcome(&e);
                self.report(state, reason, e.to_string(), None).await;
                return;
            }
        };
        self.metrics.tasks_launched.inc();
        forward_usage(container.as_ref(), &self.usage);

        if let Ok(kill) = self.kill_rx.try_recv() {
            // The kill arrived while the container was being launched.
            self.kill(container.as_mut(), kill.grace).await;
            self.report(
                TaskState::Killed,
                StatusReason::ReasonTaskKilledDuringLaunch,
                "killed while its container was being launched",
                None,
            )
            .await;
        } else {
            self.report(TaskState::Running, StatusReason::ReasonUnspecified, "", None)
                .await;
            self.watch(container.as_mut()).await;
        }
        if let Err(e) = container.cleanup().await {
            tracing::warn!(task = %self.spec.key, "container cleanup failed: {e}");
        }
    }

    /// Waits for the task to end by itself or for a kill request, and
    /// meanwhile reports its health as it changes.
    async fn watch(&mut self, container: &mut dyn Container) {
        self.entry.send_replace(container.entry());
        let (health_tx, mut health_rx) = mpsc::channel(4);
        let checker = self.start_checks(container, health_tx);
        let kill = loop {
            tokio::select! {
                exit = container.wait() => break Err(exit),
                Some(kill) = self.kill_rx.recv() => break Ok(kill),
                Some(change) = health_rx.recv() => self.report_health(change).await,
            }
        };
        drop(checker);
        self.entry.send_replace(None);
        if kill.is_err()
            && let Some(limit) = container.limitation().await
        {
            let (reason, message) = match limit {
                Limitation::Memory { limit_mib } => {
                    (StatusReason::ReasonContainerLimitationMemory, memory_message(limit_mib))
                }
                Limitation::Disk { used_mib, limit_mib } => (
                    StatusReason::ReasonContainerLimitationDisk,
                    format!("the sandbox used {used_mib} MiB of disk, over the task's {limit_mib} MiB"),
                ),
                Limitation::Volume {
                    path,
                    used_mib,
                    limit_mib,
                } => {
                    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    (
                        StatusReason::ReasonContainerLimitationDisk,
                        format!("volume {name} holds {used_mib} MiB, over its {limit_mib} MiB"),
                    )
                }
            };
            let code = match kill {
                Err(Ok(ExitStatus::Code(c))) => Some(c),
                Err(Ok(ExitStatus::Signal(s))) => Some(-s),
                _ => None,
            };
            self.report(TaskState::Failed, reason, message, code).await;
            return;
        }
        match kill {
            Ok(kill) => {
                self.kill(container, kill.grace).await;
                let (reason, message) = kill
                    .why
                    .unwrap_or((StatusReason::ReasonTaskKilled, "killed on request".to_owned()));
                self.report(TaskState::Killed, reason, message, None).await;
            }
            Err(Ok(ExitStatus::Code(0))) => {
                self.report(
                    TaskState::Finished,
                    StatusReason::ReasonCommandExited,
                    "exited with status 0",
                    Some(0),
                )
                .await;
            }
            Err(Ok(ExitStatus::Code(code))) => {
                self.report(
                    TaskState::Failed,
                    StatusReason::ReasonCommandExited,
                    format!("exited with status {code}"),
                    Some(code),
                )
                .await;
            }
            Err(Ok(ExitStatus::Signal(sig))) => {
                self.report(
                    TaskState::Failed,
                    StatusReason::ReasonCommandExited,
                    format!("killed by signal {sig}"),
                    Some(-sig),
                )
                .await;
            }
            Err(Err(e @ ContainerError::NeverStarted(_))) => {
                let (state, reason) = launch_outcome(&e);
                self.report(state, reason, e.to_string(), None).await;
            }
            Err(Err(e)) => {
                // It ran, and how it ended cannot be known.
                let message = format!("the task's end cannot be known (it may have run): {e}");
                self.report(TaskState::Lost, StatusReason::ReasonUnspecified, message, None)
                    .await;
            }
        }
    }

    /// The task's health checker, if it has a check.
    fn start_checks(
        &self,
        container: &dyn Container,
        changes: mpsc::Sender<health::Change>,
    ) -> Option<health::Checker> {
        let check = match health::parse(self.spec.task.health_check.as_ref()?) {
            Ok(check) => check,
            Err(e) => {
                tracing::warn!(task = %self.spec.key, "not checking the task's health: {e}");
                return None;
            }
        };
        let Some(entry) = container.entry() else {
            tracing::warn!(task = %self.spec.key, "not checking the task's health: its container cannot be entered (started by an older agent?)");
            return None;
        };
        Some(health::spawn(check, entry, changes, self.metrics.clone()))
    }

    /// SIGTERM to the whole container, then SIGKILL once the grace period is over.
    async fn kill(&self, container: &mut dyn Container, requested: Option<Duration>) {
        let grace = self.grace(requested);
        tracing::debug!(task = %self.spec.key, ?grace, "killing");
        if let Err(e) = container.signal(Signal::SIGTERM) {
            tracing::warn!(task = %self.spec.key, "{e}");
        }
        if tokio::time::timeout(grace, container.wait()).await.is_err() {
            if let Err(e) = container.signal(Signal::SIGKILL) {
                tracing::warn!(task = %self.spec.key, "{e}");
            }
            let _ = container.wait().await;
        }
    }

    fn container_spec(
        &self,
        command: CommandSpec,
        image: Option<mezzo_proto::image::ImageRef>,
        secrets: Secrets,
    ) -> ContainerSpec {
        let key = &self.spec.key;
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned());
        // Checked by `command_spec` before a container is asked for.
        // An image brings its own PATH.
        let mut env = match image {
            Some(_) => Vec::new(),
            None => vec![("PATH".to_owned(), path)],
        };
        let sandbox = match image {
            Some(_) => crate::containerizer::rootfs::SANDBOX_IN_IMAGE.into(),
            None => self.spec.sandbox.display().to_string(),
        };
        if let Some(cmd) = &self.spec.task.command {
            let mut values = secrets.env.into_iter();
            env.extend(cmd.environment.iter().map(|e| {
                let value = match e.secret.is_empty() {
                    true => e.value.clone(),
                    false => values.next().unwrap_or_default(),
                };
                (e.name.clone(), value)
            }));
        }
        env.extend([
            ("MEZZO_TASK_ID".to_owned(), key.task_id.to_string()),
            ("MEZZO_FRAMEWORK_ID".to_owned(), key.framework_id.to_string()),
            ("MEZZO_AGENT_ID".to_owned(), self.spec.agent_id.clone()),
            ("MEZZO_SANDBOX".to_owned(), sandbox),
        ]);
        let user = self.user().map(str::to_owned);
        ContainerSpec {
            id: self.spec.container_id.clone().unwrap_or_else(|| key.to_string()),
            sandbox: self.spec.sandbox.clone(),
            command,
            env,
            // Limits count reserved resources too.
            resources: ReservedResources::from_proto(&self.spec.task.resources)
                .map(|r| r.total())
                .unwrap_or_default(),
            user,
            run_dir: self.spec.run_dir.clone(),
            secret_files: secret_files(&self.spec.task, secrets.files),
            secret_env: self
                .spec
                .task
                .command
                .iter()
                .flat_map(|c| &c.environment)
                .filter(|e| !e.secret.is_empty())
                .map(|e| e.name.clone())
                .collect(),
            isolated_network: self
                .spec
                .task
                .labels
                .iter()
                .any(|l| l.name == crate::containerizer::NETWORK_LABEL && l.value == "isolated"),
            image,
            image_credentials: secrets.image,
            progress: None,
            mounts: Vec::new(),
            unconfined: self
                .spec
                .task
                .container
                .as_ref()
                .is_some_and(|c| c.seccomp == "unconfined"),
        }
    }
}

/// Why the fetched artifacts leave no room for what the launch writes in
/// the sandbox: `stdout` and `stderr` as anything but plain files,
/// anything at a secret file's path, or at a mount's (relative) path or
/// other than a directory on the way to it (a link there would lead the
/// mount elsewhere).
fn collision(sandbox: &std::path::Path, task: &v1::TaskInfo) -> Option<String> {
    for name in ["stdout", "stderr"] {
        if let Ok(m) = std::fs::symlink_metadata(sandbox.join(name))
            && !m.file_type().is_file()
        {
            return Some(format!(
                "the artifacts put something other than a file at {name}, where the task's output goes"
            ));
        }
    }
    let secrets = task
        .command
        .as_ref()
        .map(|c| c.secret_files.as_slice())
        .unwrap_or_default();
    if let Some(f) = secrets
        .iter()
        .find(|f| std::fs::symlink_metadata(sandbox.join(&f.path)).is_ok())
    {
        return Some(format!(
            "the artifacts put something at {}, the path of a secret file",
            f.path
        ));
    }
    let in_the_way = |p: &std::path::Path| {
        let not_a_dir = |a: &std::path::Path| std::fs::symlink_metadata(sandbox.join(a)).is_ok_and(|m| !m.is_dir());
        let mut on_the_way = p.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty());
        std::fs::symlink_metadata(sandbox.join(p)).is_ok() || on_the_way.any(not_a_dir)
    };
    let mounts = task.container.iter().flat_map(|c| &c.mounts);
    mounts
        .map(|m| std::path::Path::new(&m.container_path))
        .find(|p| p.is_relative() && in_the_way(p))
        .map(|p| {
            format!(
                "the artifacts put something at or on the way to {}, where a volume is mounted",
                p.display()
            )
        })
}

/// The secrets' values the leader filled in for this agent only (DESIGN.md,
/// "Secrets"): needed to launch the task and nothing after, so they are
/// kept in no checkpoint, view or report. `Debug` shows none of them.
#[derive(Clone, Default)]
pub struct Secrets {
    /// The login for the task's image pull.
    image: Option<crate::images::Credentials>,
    /// The values of the environment variables that name a secret, in order.
    env: Vec<String>,
    /// The contents of the task's secret files, in order.
    files: Vec<Vec<u8>>,
}

impl Secrets {
    /// Adds the value of the next environment variable that names a
    /// secret (after the task's own): how a custom executor gets its API
    /// token without it being written in its checkpoint.
    pub fn push_env(&mut self, value: String) {
        self.env.push(value);
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("image", &self.image)
            .field("env", &self.env.len())
            .field("files", &self.files.len())
            .finish()
    }
}

/// Takes the secrets' values out of `task` (which then names its secrets
/// only, as the task the masters keep does).
pub fn take_secrets(task: &mut v1::TaskInfo) -> Secrets {
    let mut secrets = Secrets::default();
    if let Some(image) = task.container.as_mut().and_then(|c| c.image.as_mut()) {
        let value = std::mem::take(&mut image.credentials);
        secrets.image =
            (!value.is_empty()).then(|| crate::images::Credentials::new(image.credentials_secret.clone(), value));
    }
    if let Some(cmd) = task.command.as_mut() {
        secrets.env = cmd
            .environment
            .iter_mut()
            .filter(|e| !e.secret.is_empty())
            .map(|e| std::mem::take(&mut e.value))
            .collect();
        secrets.files = cmd
            .secret_files
            .iter_mut()
            .map(|f| std::mem::take(&mut f.value))
            .collect();
    }
    secrets
}

/// The task's secret files with their `values` (in order), paths checked
/// again here (the agent writes them as root).
fn secret_files(task: &v1::TaskInfo, values: Vec<Vec<u8>>) -> Vec<crate::containerizer::SecretFile> {
    let Some(cmd) = &task.command else { return Vec::new() };
    cmd.secret_files
        .iter()
        .zip(values.into_iter().chain(std::iter::repeat_with(Vec::new)))
        .filter_map(
            |(f, value)| match mezzo_proto::security::secret::sandbox_path(&f.path) {
                Ok(path) => Some(crate::containerizer::SecretFile { path, value }),
                Err(e) => {
                    tracing::warn!(task = %task.task_id, "{e}; not written");
                    None
                }
            },
        )
        .collect()
}

/// The state and reason a launch error is reported with, by whether the
/// task's process could have started: what the task asks for that cannot
/// be done is an ERROR (launching it again cannot help); a mount that
/// cannot be made as asked is FAILED, as a volume missing here is;
/// anything the agent failed at before the process existed is DROPPED
/// (safe to launch again, as Mesos reports it).
pub fn launch_outcome(e: &ContainerError) -> (TaskState, StatusReason) {
    let invalid = (TaskState::Error, StatusReason::ReasonTaskInvalid);
    let dropped = (TaskState::Dropped, StatusReason::ReasonContainerLaunchFailed);
    match e {
        ContainerError::User { .. }
        | ContainerError::Unconfined
        | ContainerError::Image(_)
        | ContainerError::UserNamespace(_) => invalid,
        ContainerError::Mount { .. } => (TaskState::Failed, StatusReason::ReasonContainerLaunchFailed),
        ContainerError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => invalid,
        ContainerError::Spawn { .. }
        | ContainerError::Sandbox { .. }
        | ContainerError::Isolation(_)
        | ContainerError::NeverStarted(_)
        | ContainerError::Signal { .. }
        | ContainerError::Wait { .. } => dropped,
    }
}

/// The command to run and the image to run it in, or why the task cannot
/// run.
fn command_spec(task: &v1::TaskInfo) -> Result<(CommandSpec, Option<ImageRef>), String> {
    if let Some(check) = &task.health_check {
        health::parse(check)?;
    }
    let image = image_of(task)
        .map(|r| ImageRef::parse(r).map_err(|e| e.to_string()))
        .transpose()?;
    let Some(cmd) = task.command.as_ref().filter(|c| !c.value.trim().is_empty()) else {
        if image.is_some() {
            let args = task.command.as_ref().map(|c| c.arguments.clone()).unwrap_or_default();
            return Ok((CommandSpec::FromImage { args }, image));
        }
        return Err("the task has no command to run".to_owned());
    };
    if let Some(e) = cmd
        .environment
        .iter()
        .find(|e| e.name.is_empty() || e.name.contains(['=', '\0']))
    {
        return Err(format!("invalid environment variable name {:?}", e.name));
    }
    let command = if cmd.shell {
        CommandSpec::Shell(cmd.value.clone())
    } else {
        CommandSpec::Exec {
            program: cmd.value.clone(),
            args: cmd.arguments.clone(),
        }
    };
    Ok((command, image))
}

/// The task's mounts, checked again here: the agent trusts nothing it
/// did not check ([`mezzo_proto::volume::check`]).
fn checked_mounts(task: &v1::TaskInfo, has_image: bool) -> Result<Vec<mezzo_proto::volume::Mount>, String> {
    let mounts = task.container.as_ref().map(|c| c.mounts.as_slice()).unwrap_or_default();
    mezzo_proto::volume::check(mounts, has_image).map_err(|e| e.to_string())
}

/// The image the task names, if any (checked by the master).
fn image_of(task: &v1::TaskInfo) -> Option<&str> {
    let image = task.container.as_ref()?.image.as_ref()?;
    Some(image.reference.as_str())
}

/// The memory limitation in words, with the limit (as `mezzo run` and
/// the dashboard show it): any process of the container counts.
fn memory_message(limit_mib: u64) -> String {
    match limit_mib {
        0 => "memory limit reached: a process of the task was OOM-killed".to_owned(),
        n => format!("memory limit of {n} MiB reached: a process of the task was OOM-killed"),
    }
}

#[cfg(test)]
#[test]
fn the_memory_message_names_the_limit() {
    assert_eq!(
        memory_message(32),
        "memory limit of 32 MiB reached: a process of the task was OOM-killed"
    );
    assert!(!memory_message(0).contains("MiB"));
}

#[cfg(test)]
#[test]
fn secrets_are_taken_out_of_the_task() {
    let mut task = v1::TaskInfo {
        container: Some(Box::new(v1::ContainerInfo {
            image: Some(v1::Image {
                reference: "127.0.0.1:5000/app:1".into(),
                credentials_secret: "regcreds".into(),
                credentials: b"alice:s3cret".to_vec(),
            }),
            ..Default::default()
        })),
        command: Some(v1::CommandInfo {
            environment: vec![
                v1::EnvVar {
                    name: "PLAIN".into(),
                    value: "visible".into(),
                    secret: String::new(),
                },
                v1::EnvVar {
                    name: "DB".into(),
                    value: "s3cret-env".into(),
                    secret: "db".into(),
                },
            ],
            secret_files: vec![v1::SecretFile {
                path: "conf/db".into(),
                secret: "db".into(),
                value: b"s3cret-file".to_vec(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let secrets = take_secrets(&mut task);
    let left = format!("{task:?} {secrets:?}");
    for value in ["s3cret", "s3cret-env", "s3cret-file"] {
        assert!(!left.contains(value), "{value} in {left}");
    }
    assert!(left.contains("regcreds") && left.contains("visible"), "{left}");
    assert_eq!(secrets.image.as_ref().map(|c| c.secret()), Some("regcreds"));
    assert_eq!(secrets.env, ["s3cret-env"]);
    let files = secret_files(&task, secrets.files);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].value, b"s3cret-file");
    assert!(take_secrets(&mut v1::TaskInfo::default()).image.is_none());
}

#[cfg(test)]
#[test]
fn artifacts_may_not_take_the_place_of_the_output_or_a_secret_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let task = v1::TaskInfo {
        command: Some(v1::CommandInfo {
            secret_files: vec![v1::SecretFile {
                path: "conf/db".into(),
                secret: "db".into(),
                value: Vec::new(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(collision(dir.path(), &task), None, "an empty sandbox");
    std::fs::write(dir.path().join("stdout"), b"earlier run").expect("stdout");
    assert_eq!(collision(dir.path(), &task), None, "a plain stdout is appended to");
    std::fs::create_dir(dir.path().join("stderr")).expect("stderr");
    assert!(collision(dir.path(), &task).is_some_and(|w| w.contains("at stderr")));
    std::fs::remove_dir(dir.path().join("stderr")).expect("rmdir");
    std::fs::create_dir_all(dir.path().join("conf/db")).expect("conf/db");
    assert!(collision(dir.path(), &task).is_some_and(|w| w.contains("conf/db")));
    std::fs::remove_dir_all(dir.path().join("conf")).expect("rm");

    let mounted = v1::TaskInfo {
        container: Some(Box::new(v1::ContainerInfo {
            mounts: vec![crate::volumes::tests::mount("db-0", "", "data/db", false)],
            ..Default::default()
        })),
        ..task
    };
    std::fs::create_dir(dir.path().join("data")).expect("data");
    assert_eq!(collision(dir.path(), &mounted), None, "a directory on the way is fine");
    std::fs::create_dir(dir.path().join("data/db")).expect("data/db");
    assert!(collision(dir.path(), &mounted).is_some_and(|w| w.contains("data/db")));
    std::fs::remove_dir_all(dir.path().join("data")).expect("rm");
    std::os::unix::fs::symlink("/etc", dir.path().join("data")).expect("link");
    assert!(collision(dir.path(), &mounted).is_some_and(|w| w.contains("a volume is mounted")));
}
