//! The task table's owner: the one actor that knows every task on the
//! agent, its latest state and its supervisor.
//!
//! Inputs: commands from the master connection and HTTP (bounded, awaited),
//! status reports from supervisors (bounded), and `forget` notices from the
//! status update manager (unbounded, so that the manager never waits on the
//! table while the table waits on the manager).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::ids::{AgentId, VolumeId};
use mezzo_proto::state::TaskState;
use mezzo_proto::v1::{self, StatusReason};
use mezzo_proto::volume::mounted_volumes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::supervisor::{self, Kill, SupervisorHandle, SupervisorSpec};
use super::{StatusReport, agent_status};
use crate::containerizer::Entry as ContainerEntry;
use crate::containerizer::{Containerizer, Recovery};
use crate::key::TaskKey;
use crate::metrics::Metrics;
use crate::status::{Recovered, StatusHandle};
use crate::{AgentError, paths};
pub use executors::{CallError, ExecutorCall, ExecutorDeps, ExecutorView, MAX_EXECUTOR_DATA};

mod executors;
mod group;

/// One task as `/state` and `Reregister` see it.
#[derive(Debug, Clone)]
pub struct TaskView {
    pub key: TaskKey,
    pub info: v1::TaskInfo,
    pub state: TaskState,
    pub sandbox: PathBuf,
    /// Latest measured usage of its container (isolated tasks only).
    pub usage: Option<crate::containerizer::Usage>,
    /// Ended, and the end is not acknowledged yet: the status manager still
    /// resends it (false for live tasks and for the completed ring).
    pub end_unacknowledged: bool,
    /// Unix seconds when the master launched it (0 if unknown).
    pub launched_at: f64,
    /// Its status updates, oldest first (see [`Statuses`]); only in a
    /// re-registration's views.
    pub statuses: Vec<v1::TaskStatus>,
}

/// Status updates kept per task, for a new leader: so many...
const STATUSES_KEPT: usize = 16;
/// ...with messages cut to so many bytes.
const STATUS_MESSAGE_BYTES: usize = 256;

/// A task's status updates as the agent saw them, the newest
/// [`STATUSES_KEPT`] with messages cut to [`STATUS_MESSAGE_BYTES`]:
/// reported when the agent re-registers, so that a new leader knows each
/// task's latest reason, message and exit code, and its history (as Mesos
/// agents re-register with their tasks' statuses).
#[derive(Debug, Clone, Default)]
pub struct Statuses(std::collections::VecDeque<v1::TaskStatus>);

impl Statuses {
    pub fn push(&mut self, status: &v1::TaskStatus) {
        let mut s = status.clone();
        s.uuid.clear();
        if s.timestamp == 0.0 {
            // As the status update manager stamps it.
            s.timestamp = mezzo_proto::clock::unix_now();
        }
        if s.message.len() > STATUS_MESSAGE_BYTES {
            let mut end = STATUS_MESSAGE_BYTES;
            while !s.message.is_char_boundary(end) {
                end -= 1;
            }
            s.message.truncate(end);
        }
        if self.0.len() == STATUSES_KEPT {
            self.0.pop_front();
        }
        self.0.push_back(s);
    }

    fn to_vec(&self) -> Vec<v1::TaskStatus> {
        self.0.iter().cloned().collect()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The reason of the latest status.
    fn last_reason(&self) -> StatusReason {
        self.0
            .back()
            .and_then(|s| StatusReason::try_from(s.reason).ok())
            .unwrap_or(StatusReason::ReasonUnspecified)
    }
}

#[derive(Debug)]
enum TableCmd {
    Run(Box<v1::RunTask>),
    Kill {
        framework_id: String,
        task_id: String,
        kill: Kill,
    },
    ShutdownFramework(String),
    Snapshot(oneshot::Sender<Vec<TaskView>>),
    /// Live tasks plus the recently completed ones (see `Table::completed`).
    Reregistration(oneshot::Sender<Vec<TaskView>>),
    /// The latest measured usage of every container that has one.
    Usage(oneshot::Sender<Vec<(TaskKey, crate::containerizer::Usage)>>),
    /// How to enter a running task's container.
    Entry(TaskKey, oneshot::Sender<Result<ContainerEntry, String>>),
    /// Every persistent volume this agent keeps, as the master says.
    Volumes(Vec<v1::Volume>),
    /// A call of a custom executor ([`crate::executor_api`]).
    Executor(Box<ExecutorCall>),
    /// A master registered this agent: executor exits not sent yet go.
    MasterRegistered,
    FrameworkMessage(v1::FrameworkMessage),
    ShutdownExecutor(v1::ShutdownExecutor),
    Executors(oneshot::Sender<Vec<ExecutorView>>),
}

/// Cloneable handle on the task table.
#[derive(Debug, Clone)]
pub struct TableHandle {
    tx: mpsc::Sender<TableCmd>,
}

impl TableHandle {
    async fn send(&self, cmd: TableCmd) -> Result<(), AgentError> {
        self.tx
            .send(cmd)
            .await
            .map_err(|_| AgentError::ActorStopped("task table"))
    }

    pub async fn run_task(&self, run: v1::RunTask) -> Result<(), AgentError> {
        self.send(TableCmd::Run(Box::new(run))).await
    }

    pub async fn kill(&self, framework_id: String, task_id: String, kill: Kill) -> Result<(), AgentError> {
        self.send(TableCmd::Kill {
            framework_id,
            task_id,
            kill,
        })
        .await
    }

    pub async fn shutdown_framework(&self, framework_id: String) -> Result<(), AgentError> {
        self.send(TableCmd::ShutdownFramework(framework_id)).await
    }

    /// The master's complete list of this agent's volumes: their
    /// directories are made, and those of volumes no longer listed removed
    /// once no live task mounts them ([`crate::volumes`]).
    pub async fn volumes(&self, volumes: Vec<v1::Volume>) -> Result<(), AgentError> {
        self.send(TableCmd::Volumes(volumes)).await
    }

    /// What a re-registration reports: every live task and the recently
    /// completed ones, so that a new leader can answer reconciliation of a
    /// task that finished before the failover with its true end.
    pub async fn reregistration(&self) -> Result<Vec<TaskView>, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(TableCmd::Reregistration(tx)).await?;
        rx.await.map_err(|_| AgentError::ActorStopped("task table"))
    }

    /// The latest measured usage of each container that has one (cheaper
    /// than a snapshot: no task infos are copied).
    pub async fn usage(&self) -> Result<Vec<(TaskKey, crate::containerizer::Usage)>, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(TableCmd::Usage(tx)).await?;
        rx.await.map_err(|_| AgentError::ActorStopped("task table"))
    }

    /// How to start a process in a running task's container (`mezzo
    /// exec`), or why not.
    pub async fn entry(&self, key: TaskKey) -> Result<Result<ContainerEntry, String>, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(TableCmd::Entry(key, tx)).await?;
        rx.await.map_err(|_| AgentError::ActorStopped("task table"))
    }

    /// A custom executor's call; its answer comes on the call's `reply`.
    pub async fn executor_call(&self, call: ExecutorCall) -> Result<(), AgentError> {
        self.send(TableCmd::Executor(Box::new(call))).await
    }

    /// A master registered this agent and its stream is the executors'
    /// outbound: the exits of executors that it could not be told of are
    /// sent now (the master holds their resources until it hears).
    pub async fn master_registered(&self) -> Result<(), AgentError> {
        self.send(TableCmd::MasterRegistered).await
    }

    pub async fn framework_message(&self, m: v1::FrameworkMessage) -> Result<(), AgentError> {
        self.send(TableCmd::FrameworkMessage(m)).await
    }

    pub async fn shutdown_executor(&self, s: v1::ShutdownExecutor) -> Result<(), AgentError> {
        self.send(TableCmd::ShutdownExecutor(s)).await
    }

    /// Every custom executor running here.
    pub async fn executors(&self) -> Result<Vec<ExecutorView>, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(TableCmd::Executors(tx)).await?;
        rx.await.map_err(|_| AgentError::ActorStopped("task table"))
    }

    pub async fn snapshot(&self) -> Result<Vec<TaskView>, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(TableCmd::Snapshot(tx)).await?;
        rx.await.map_err(|_| AgentError::ActorStopped("task table"))
    }
}

/// What the table needs from the rest of the agent.
pub struct TableDeps {
    /// Where sandboxes are.
    pub work_dir: PathBuf,
    /// Where task checkpoints are ([`crate::paths`]).
    pub runtime_dir: PathBuf,
    pub default_kill_grace: Duration,
    pub containerizer: Arc<dyn Containerizer>,
    /// Fetches tasks' artifacts before their launch.
    pub fetcher: Arc<crate::fetch::Fetcher>,
    /// The persistent volumes' directories and the host volumes.
    pub volumes: Arc<crate::volumes::Volumes>,
    pub status: StatusHandle,
    pub forget: mpsc::UnboundedReceiver<TaskKey>,
    pub agent_id: watch::Receiver<Option<AgentId>>,
    pub metrics: Metrics,
    /// Told of each launch: a new sandbox to write back.
    pub writeback: crate::writeback::Writeback,
    /// Told which sandboxes are in use and which tasks are done.
    pub gc: crate::gc::GcHandle,
    /// The runtime dir kept its checkpoints across the restart (see
    /// [`paths::checkpoints_marker`]): a task without one never started.
    pub checkpoints_intact: bool,
    /// How custom executors are run and reached.
    pub executors: ExecutorDeps,
}

/// Why recovery finds a task that was not over without a container to
/// watch, and what that proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// The launch claim was taken by recovery: the task never started.
    NeverStarted,
    /// The task is in the status journal but has no checkpoint, which is
    /// written before every launch: it never started.
    NoCheckpoint,
    /// It claimed its start, and nothing of its container is left.
    ContainerGone,
    /// The runtime dir lost its checkpoints: nothing can be known.
    CheckpointsLost,
}

impl Missing {
    /// The state to report and its message in words.
    pub(crate) fn status(self) -> (TaskState, &'static str) {
        match self {
            Missing::NeverStarted => (
                TaskState::Dropped,
                "the agent restarted before the task started; it never ran and is safe to launch again",
            ),
            Missing::NoCheckpoint => (
                TaskState::Dropped,
                "the agent restarted before the task was checkpointed; it never ran and is safe to launch again",
            ),
            Missing::ContainerGone => (
                TaskState::Lost,
                "the agent restarted and the task's container is gone; it may have run",
            ),
            Missing::CheckpointsLost => (
                TaskState::Lost,
                "the agent lost its task checkpoints (host rebooted or runtime dir wiped); the task may have run",
            ),
        }
    }
}

struct Entry {
    info: v1::TaskInfo,
    state: TaskState,
    sandbox: PathBuf,
    supervisor: Option<SupervisorHandle>,
    launched_at: f64,
    statuses: Statuses,
    /// The custom executor that runs it (its sandbox is the executor's).
    executor: Option<mezzo_proto::ids::ExecutorId>,
}

/// Completed tasks remembered after their last update was acknowledged.
const COMPLETED_KEPT: usize = 1000;

struct Table {
    deps: TableDeps,
    tasks: BTreeMap<TaskKey, Entry>,
    /// Recently completed tasks (newest last), reported on re-registration.
    completed: std::collections::VecDeque<TaskView>,
    reports_tx: mpsc::Sender<StatusReport>,
    executors: BTreeMap<executors::ExecKey, executors::ExecutorEntry>,
    /// The executors' supervisors report here, apart from tasks'.
    exec_reports_tx: mpsc::Sender<StatusReport>,
    /// Executor exits the master has not been sent yet, oldest first.
    pending_exits: Vec<v1::ExecutorExited>,
    /// Tasks of groups for a custom executor, kept until every task of
    /// their group has come ([`group`]).
    pending_groups: BTreeMap<group::GroupKey, Vec<v1::RunTask>>,
    /// Groups killed while they were gathered: the tasks of them still to
    /// come are killed as they come ([`group`]).
    killed_groups: BTreeMap<group::GroupKey, group::Killed>,
}

/// Starts the table, seeded with the tasks whose updates survived a restart.
pub async fn start(
    deps: TableDeps,
    recovered: Vec<Recovered>,
) -> Result<(TableHandle, JoinHandle<Result<(), AgentError>>), AgentError> {
    let (tx, rx) = mpsc::channel(1024);
    let (reports_tx, reports_rx) = mpsc::channel(1024);
    let (exec_reports_tx, exec_reports_rx) = mpsc::channel(256);
    let mut table = Table {
        deps,
        tasks: BTreeMap::new(),
        completed: std::collections::VecDeque::new(),
        reports_tx,
        executors: BTreeMap::new(),
        exec_reports_tx,
        pending_exits: Vec::new(),
        pending_groups: BTreeMap::new(),
        killed_groups: BTreeMap::new(),
    };
    table.recover(recovered).await?;
    let join = tokio::spawn(table.run(rx, reports_rx, exec_reports_rx));
    Ok((TableHandle { tx }, join))
}

impl Table {
    fn agent_id(&self) -> String {
        self.deps
            .agent_id
            .borrow()
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// The state of a checkpointed task with no update left in the
    /// journal: its updates were all acknowledged, so it reached RUNNING,
    /// unless it is a custom executor's that its executor never sent an
    /// update for (no [`paths::EXECUTOR_TOOK`]): STAGING, to be launched
    /// again when the executor resubscribes.
    fn unjournaled_state(&self, key: &TaskKey, of_executor: bool) -> TaskState {
        let dir = paths::task_meta_dir(&self.deps.runtime_dir, &key.framework_id, &key.task_id);
        if of_executor && !dir.join(paths::EXECUTOR_TOOK).exists() {
            TaskState::Staging
        } else {
            TaskState::Running
        }
    }

    /// Rebuilds the table after a restart from the task checkpoints and the
    /// status journal. A task whose container the containerizer finds again
    /// is watched by a new supervisor (its end is reported with its true
    /// exit status, also when it ended while the agent was down); one that
    /// never started is reported DROPPED, one whose container is gone LOST
    /// (see [`Missing`]); a finished one waits for the acknowledgements of
    /// its updates.
    async fn recover(&mut self, recovered: Vec<Recovered>) -> Result<(), AgentError> {
        let mut uuids: BTreeMap<TaskKey, Vec<Vec<u8>>> =
            recovered.iter().map(|r| (r.key.clone(), r.uuids.clone())).collect();
        let reasons: BTreeMap<TaskKey, StatusReason> =
            recovered.iter().map(|r| (r.key.clone(), r.latest_reason)).collect();
        let mut latest: BTreeMap<TaskKey, TaskState> = recovered.into_iter().map(|r| (r.key, r.latest_state)).collect();
        let mut adopted = Vec::new();
        // Executors first: their tasks' states depend on them.
        self.recover_executors(&mut adopted).await;
        for (key, run) in self.checkpoints() {
            let task = run.task.clone().unwrap_or_default();
            let mut state = latest
                .remove(&key)
                .unwrap_or_else(|| self.unjournaled_state(&key, task.executor.is_some()));
            let sandbox = paths::sandbox_dir(&self.deps.work_dir, &key.framework_id, &key.task_id);
            let run_dir = paths::task_meta_dir(&self.deps.runtime_dir, &key.framework_id, &key.task_id);
            let mut supervisor = None;
            let mut statuses = Statuses::default();
            let executor = task
                .executor
                .as_ref()
                .and_then(|e| mezzo_proto::ids::ExecutorId::parse(&e.executor_id).ok());
            if let Some(eid) = &executor {
                // It has no container of its own: its executor runs it.
                let pending = uuids.remove(&key).unwrap_or_default();
                state = self
                    .recover_executor_task(&key, &run, eid, state, pending, &mut statuses)
                    .await?;
                let sandbox = paths::executor_sandbox_dir(&self.deps.work_dir, &key.framework_id, eid);
                self.deps.metrics.task_state(state).inc();
                self.deps.gc.launched(&sandbox);
                self.tasks.insert(
                    key,
                    Entry {
                        info: task,
                        state,
                        sandbox,
                        supervisor: None,
                        launched_at: run.launched_at,
                        statuses,
                        executor,
                    },
                );
                continue;
            }
            if !state.is_terminal() {
                let found = match self.deps.containerizer.recover(key.to_string(), run_dir.clone()).await {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::warn!(task = %key, "cannot recover the container: {e}");
                        Recovery::Gone
                    }
                };
                match found {
                    Recovery::Adopted(container) => {
                        adopted.push(run_dir.clone());
                        let sup = self.supervise(
                            &key,
                            &task,
                            self.agent_id(),
                            Some(container),
                            Default::default(),
                            run.launched_at,
                        );
                        supervisor = Some(sup);
                        state = TaskState::Running;
                    }
                    Recovery::NeverStarted => {
                        state = self.report_lost(&key, Missing::NeverStarted, &mut statuses).await?
                    }
                    Recovery::Gone => state = self.report_lost(&key, Missing::ContainerGone, &mut statuses).await?,
                }
            }
            self.deps.metrics.task_state(state).inc();
            self.deps.gc.launched(&sandbox);
            self.tasks.insert(
                key,
                Entry {
                    info: task,
                    state,
                    sandbox,
                    supervisor,
                    launched_at: run.launched_at,
                    statuses,
                    executor: None,
                },
            );
        }
        // Whatever the containerizer finds that no adopted container owns
        // (e.g. a cgroup made just before the agent died) goes now.
        match self.deps.containerizer.sweep(adopted).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(removed = n, "removed orphan containers"),
            Err(e) => tracing::warn!("cannot sweep orphan containers: {e}"),
        }
        // Updates pending for tasks without a checkpoint (from before
        // checkpoints existed, or a damaged one): keep them until acked.
        for (key, state) in latest {
            let mut statuses = Statuses::default();
            let state = if state.is_terminal() {
                state
            } else if self.deps.checkpoints_intact {
                // A task is checkpointed before its launch: without one, it
                // never started.
                self.report_lost(&key, Missing::NoCheckpoint, &mut statuses).await?
            } else {
                self.report_lost(&key, Missing::CheckpointsLost, &mut statuses).await?
            };
            self.deps.metrics.task_state(state).inc();
            let sandbox = paths::sandbox_dir(&self.deps.work_dir, &key.framework_id, &key.task_id);
            self.deps.gc.launched(&sandbox);
            let info = v1::TaskInfo {
                task_id: key.task_id.to_string(),
                ..Default::default()
            };
            self.tasks.insert(
                key,
                Entry {
                    info,
                    state,
                    sandbox,
                    supervisor: None,
                    launched_at: 0.0,
                    statuses,
                    executor: None,
                },
            );
        }
        // Every task is in the table: its group is checked again.
        self.recover_groups(&reasons).await?;
        // Every sandbox still in use is now known to the collector.
        self.deps.gc.recovered();
        Ok(())
    }

    /// Reports a task that recovery could not find running (and keeps the
    /// update in `statuses`); returns the state it is now in.
    async fn report_lost(&self, key: &TaskKey, why: Missing, statuses: &mut Statuses) -> Result<TaskState, AgentError> {
        let (state, message) = why.status();
        tracing::info!(task = %key, state = state.name(), "{message}");
        let status = agent_status(
            key,
            &self.agent_id(),
            state,
            StatusReason::ReasonAgentRestarted,
            message,
        );
        statuses.push(&status);
        self.deps.status.update(key.clone(), status).await?;
        Ok(state)
    }

    /// Starts the supervisor of a task (launching it, pulling its image
    /// with the `secrets` it launches with, or watching an `adopted` container found
    /// again after a restart).
    fn supervise(
        &self,
        key: &TaskKey,
        task: &v1::TaskInfo,
        agent_id: String,
        adopted: Option<Box<dyn crate::containerizer::Container>>,
        secrets: supervisor::Secrets,
        launched_at: f64,
    ) -> SupervisorHandle {
        let spec = SupervisorSpec {
            secrets,
            key: key.clone(),
            task: task.clone(),
            agent_id,
            sandbox: paths::sandbox_dir(&self.deps.work_dir, &key.framework_id, &key.task_id),
            run_dir: paths::task_meta_dir(&self.deps.runtime_dir, &key.framework_id, &key.task_id),
            default_kill_grace: self.deps.default_kill_grace,
            launched_at,
            fetcher: self.deps.fetcher.clone(),
            volumes: self.deps.volumes.clone(),
            busy_volume: if adopted.is_none() {
                self.busy_volume(key, task)
            } else {
                None
            },
            container_id: None,
        };
        supervisor::spawn(
            spec,
            self.deps.containerizer.clone(),
            self.reports_tx.clone(),
            self.deps.metrics.clone(),
            adopted,
        )
    }

    /// Every readable task checkpoint.
    fn checkpoints(&self) -> Vec<(TaskKey, v1::RunTask)> {
        let mut out = Vec::new();
        let root = paths::tasks_meta_root(&self.deps.runtime_dir);
        for fw in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for t in std::fs::read_dir(fw.path()).into_iter().flatten().flatten() {
                let file = t.path().join(paths::TASK_CHECKPOINT);
                let run = std::fs::read(&file)
                    .ok()
                    .and_then(|b| <v1::RunTask as prost::Message>::decode(b.as_slice()).ok());
                let key = TaskKey::parse(&fw.file_name().to_string_lossy(), &t.file_name().to_string_lossy());
                match (run, key) {
                    (Some(run), Ok(key)) => out.push((key, run)),
                    _ => tracing::warn!(path = %file.display(), "unreadable task checkpoint skipped"),
                }
            }
        }
        out
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<TableCmd>,
        mut reports: mpsc::Receiver<StatusReport>,
        mut exec_reports: mpsc::Receiver<StatusReport>,
    ) -> Result<(), AgentError> {
        // Executors' registration deadlines and shutdown graces.
        let tick =
            (self.deps.executors.registration_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut timers = tokio::time::interval(tick);
        timers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await?,
                    None => return Ok(()),
                },
                Some(report) = reports.recv() => self.on_report(report).await?,
                Some(report) = exec_reports.recv() => self.on_executor_report(report).await?,
                Some(key) = self.deps.forget.recv() => self.on_forget(key),
                _ = timers.tick(), if !self.executors.is_empty() || !self.pending_exits.is_empty() => self.executor_timers(),
            }
        }
    }

    async fn handle(&mut self, cmd: TableCmd) -> Result<(), AgentError> {
        match cmd {
            TableCmd::Run(run) => self.on_run(*run).await?,
            TableCmd::Kill {
                framework_id,
                task_id,
                kill,
            } => self.on_kill(&framework_id, &task_id, kill).await?,
            TableCmd::ShutdownFramework(framework_id) => {
                let doomed = self
                    .tasks
                    .iter()
                    .filter(|(k, e)| k.framework_id.as_str() == framework_id && !e.state.is_terminal());
                for (key, entry) in doomed {
                    tracing::info!(task = %key, "killing: its framework is shut down");
                    if let Some(sup) = &entry.supervisor {
                        sup.kill(None);
                    }
                }
                // Their tasks end with them.
                self.shutdown_framework_executors(&framework_id);
            }
            TableCmd::Executor(call) => self.on_executor_call(*call).await?,
            TableCmd::MasterRegistered => {
                self.drop_partial_groups();
                self.flush_exits();
            }
            TableCmd::FrameworkMessage(m) => self.on_framework_message(m),
            TableCmd::ShutdownExecutor(s) => {
                match (
                    mezzo_proto::ids::FrameworkId::parse(&s.framework_id),
                    mezzo_proto::ids::ExecutorId::parse(&s.executor_id),
                ) {
                    (Ok(f), Ok(e)) => self.shutdown_executor(&(f, e)),
                    _ => tracing::warn!(executor = %s.executor_id, "ShutdownExecutor with invalid ids ignored"),
                }
            }
            TableCmd::Executors(reply) => {
                let _ = reply.send(self.executor_views());
            }
            TableCmd::Reregistration(reply) => {
                let mut views: Vec<TaskView> = self.completed.iter().cloned().collect();
                views.extend(self.views(true));
                let _ = reply.send(views);
            }
            TableCmd::Snapshot(reply) => {
                let _ = reply.send(self.views(false));
            }
            TableCmd::Entry(key, reply) => {
                let entry = match self.tasks.get(&key) {
                    None => Err(format!("no task {key} on this agent")),
                    Some(e) if e.state != TaskState::Running => {
                        Err(format!("task {key} is {}, not running", e.state.name()))
                    }
                    Some(e) => e
                        .supervisor
                        .as_ref()
                        .and_then(SupervisorHandle::entry)
                        .ok_or_else(|| format!("task {key}'s container cannot be entered")),
                };
                let _ = reply.send(entry);
            }
            TableCmd::Volumes(listed) => self.on_volumes(listed).await,
            TableCmd::Usage(reply) => {
                let usage = self
                    .tasks
                    .iter()
                    .filter(|(_, e)| !e.state.is_terminal())
                    .filter_map(|(k, e)| Some((k.clone(), e.supervisor.as_ref()?.usage()?)))
                    .collect();
                let _ = reply.send(usage);
            }
        }
        Ok(())
    }

    /// A volume `task` mounts that another live task mounts too.
    fn busy_volume(&self, key: &TaskKey, task: &v1::TaskInfo) -> Option<(String, TaskKey)> {
        let wanted: HashSet<&str> = mounted_volumes(task).collect();
        if wanted.is_empty() {
            return None;
        }
        self.tasks
            .iter()
            .filter(|(k, e)| *k != key && !e.state.is_terminal())
            .find_map(|(k, e)| {
                mounted_volumes(&e.info)
                    .find(|v| wanted.contains(v))
                    .map(|v| (v.to_owned(), k.clone()))
            })
    }

    /// Applies the master's list of volumes. Waits for the new directories
    /// (a launch that mounts one may be the next command), not for the
    /// deletion of removed ones, which may be large.
    async fn on_volumes(&self, listed: Vec<v1::Volume>) {
        let ids: Vec<VolumeId> = listed
            .iter()
            .filter_map(|v| {
                VolumeId::parse(&v.id)
                    .inspect_err(|e| tracing::warn!("volume ignored: {e}"))
                    .ok()
            })
            .collect();
        let in_use: HashSet<VolumeId> = self
            .tasks
            .values()
            .filter(|e| !e.state.is_terminal())
            .flat_map(|e| mounted_volumes(&e.info))
            .filter_map(|v| VolumeId::parse(v).ok())
            .collect();
        let sizes = listed
            .iter()
            .filter_map(|v| {
                let mib = v.disk_mib;
                let size = (mib.is_finite() && mib >= 0.0).then_some(mib as u64)?;
                Some((VolumeId::parse(&v.id).ok()?, size))
            })
            .collect();
        self.deps.volumes.set_sizes(sizes);
        let volumes = self.deps.volumes.clone();
        let synced = tokio::task::spawn_blocking(move || volumes.sync(&ids, &in_use))
            .await
            .map_err(|e| e.to_string())
            .and_then(|synced| synced.map_err(|e| e.to_string()));
        let synced = match synced {
            Ok(synced) => synced,
            Err(e) => {
                tracing::warn!("cannot apply the master's list of volumes: {e}");
                return;
            }
        };
        for id in &synced.removed_in_use {
            tracing::warn!(volume = %id, "volume destroyed by the master while a live task mounts it: the task writes into the removed copy, kept for --volume-retention");
        }
        if !synced.created.is_empty() || !synced.removed.is_empty() {
            tracing::info!(created = ?synced.created, removed = ?synced.removed, "volumes");
        }
        if !synced.removed.is_empty() {
            let volumes = self.deps.volumes.clone();
            tokio::task::spawn_blocking(move || volumes.purge());
        }
    }

    /// Every task in the table, with its status updates if `statuses`.
    fn views(&self, statuses: bool) -> Vec<TaskView> {
        self.tasks
            .iter()
            .map(|(key, e)| TaskView {
                key: key.clone(),
                info: e.info.clone(),
                state: e.state,
                sandbox: e.sandbox.clone(),
                usage: e.supervisor.as_ref().and_then(|s| s.usage()),
                // Forgotten only once its end is acknowledged.
                end_unacknowledged: e.state.is_terminal(),
                launched_at: e.launched_at,
                statuses: if statuses { e.statuses.to_vec() } else { Vec::new() },
            })
            .collect()
    }

    async fn on_run(&mut self, run: v1::RunTask) -> Result<(), AgentError> {
        let Some(mut task) = run.task.clone() else {
            tracing::warn!(framework_id = %run.framework_id, "RunTask without a task ignored");
            return Ok(());
        };
        let key = match TaskKey::parse(&run.framework_id, &task.task_id) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!("RunTask refused: {e}");
                return Ok(());
            }
        };
        if self.tasks.contains_key(&key) {
            tracing::warn!(task = %key, "RunTask for a task this agent already has; nothing launched");
            return Ok(());
        }
        if task.executor.is_some() {
            return self.on_run_executor_task(run, key, task).await;
        }
        let sandbox = paths::sandbox_dir(&self.deps.work_dir, &key.framework_id, &key.task_id);
        let mut agent_id = self.agent_id();
        if agent_id.is_empty() {
            agent_id = task.agent_id.clone();
        }
        // In use before its container creates it: the collector never
        // removes it from under the task.
        self.deps.gc.launched(&sandbox);
        // The supervisor checkpoints the task before launching it (off this
        // actor, so launches do not queue behind each other's writes).
        // Only the launch needs the secrets' values: the task the table
        // keeps, shows and reports, and its checkpoint, hold none.
        let secrets = supervisor::take_secrets(&mut task);
        let sup = self.supervise(&key, &task, agent_id, None, secrets, run.launched_at);
        self.deps.writeback.mark();
        tracing::debug!(task = %key, "launching");
        self.deps.metrics.task_state(TaskState::Staging).inc();
        self.tasks.insert(
            key.clone(),
            Entry {
                info: task,
                state: TaskState::Staging,
                sandbox,
                supervisor: Some(sup),
                launched_at: run.launched_at,
                statuses: Statuses::default(),
                executor: None,
            },
        );
        self.join_group(&key);
        Ok(())
    }

    async fn on_kill(&mut self, framework_id: &str, task_id: &str, kill: Kill) -> Result<(), AgentError> {
        let key = match TaskKey::parse(framework_id, task_id) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!("KillTask refused: {e}");
                return Ok(());
            }
        };
        if !self.tasks.contains_key(&key) && self.kill_gathered(&key, kill.why.clone()).await? {
            return Ok(());
        }
        match self.tasks.get(&key) {
            Some(entry) if entry.state.is_terminal() => {
                tracing::debug!(task = %key, "kill of a task that already ended ignored")
            }
            Some(Entry {
                supervisor: Some(sup), ..
            }) => sup.kill_with(kill),
            Some(Entry { executor: Some(_), .. }) => self.kill_executor_task(&key, kill).await?,
            Some(_) => tracing::debug!(task = %key, "kill of a task without a supervisor ignored"),
            None => {
                // The master believes the task is here; correct it.
                tracing::warn!(task = %key, "kill of an unknown task: reporting it lost");
                let status = agent_status(
                    &key,
                    &self.agent_id(),
                    TaskState::Lost,
                    StatusReason::ReasonTaskUnknown,
                    "the agent does not know this task",
                );
                self.deps.status.update(key, status).await?;
            }
        }
        Ok(())
    }

    async fn on_report(&mut self, report: StatusReport) -> Result<(), AgentError> {
        let Some(new) = report.state() else { return Ok(()) };
        if let Some(entry) = self.tasks.get_mut(&report.key) {
            if let Err(e) = entry.state.transition(new) {
                tracing::warn!(task = %report.key, "supervisor reported an unexpected change: {e}");
            }
            self.deps.metrics.task_state(entry.state).dec();
            self.deps.metrics.task_state(new).inc();
            entry.state = new;
            entry.statuses.push(&report.status);
        }
        // The failure is reported before the kills it causes.
        let reason = StatusReason::try_from(report.status.reason).unwrap_or(StatusReason::ReasonUnspecified);
        let key = report.key.clone();
        self.deps.status.update(report.key, report.status).await?;
        self.end_group_of(&key, new, reason);
        Ok(())
    }

    fn on_forget(&mut self, key: TaskKey) {
        let terminal = self.tasks.get(&key).is_some_and(|e| e.state.is_terminal());
        if !terminal {
            return;
        }
        if let Some(entry) = self.tasks.remove(&key) {
            self.deps.metrics.task_state(entry.state).dec();
            self.completed.push_back(TaskView {
                key: key.clone(),
                info: entry.info.clone(),
                state: entry.state,
                sandbox: entry.sandbox.clone(),
                usage: None,
                end_unacknowledged: false,
                launched_at: entry.launched_at,
                statuses: entry.statuses.to_vec(),
            });
            if self.completed.len() > COMPLETED_KEPT {
                self.completed.pop_front();
            }
            match &entry.executor {
                // Its sandbox is its executor's.
                Some(eid) => self.executor_task_forgotten(&key, eid, &entry.sandbox),
                None => self.deps.gc.done(&entry.sandbox),
            }
            let still_running = entry.supervisor.as_ref().is_some_and(|s| !s.is_finished());
            tracing::debug!(task = %key, still_running, "forgotten");
            let dir = paths::task_meta_dir(&self.deps.runtime_dir, &key.framework_id, &key.task_id);
            // The checkpoint first, here: a restart must not find a task
            // that was acknowledged and forgotten and report it again.
            if let Err(e) = std::fs::remove_file(dir.join(paths::TASK_CHECKPOINT))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(task = %key, "cannot remove the task's checkpoint: {e}");
            }
            // Off the owner task: removing files can take milliseconds on a
            // busy file system, and nothing waits for it. A crash before it
            // runs leaves the checkpoint behind, as a crash just before the
            // removal always could.
            tokio::task::spawn_blocking(move || {
                if let Err(e) = std::fs::remove_dir_all(&dir)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(task = %key, "cannot remove the task's checkpoint {}: {e}", dir.display());
                }
            });
        }
    }
}
