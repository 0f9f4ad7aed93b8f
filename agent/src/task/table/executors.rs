//! Custom executors (Mesos' `ExecutorInfo`), owned by the task table: one
//! process per (framework, executor id) that runs the tasks naming it and
//! talks to the agent over the Mesos v1 executor API
//! ([`crate::executor_api`]).
//!
//! An executor's process is run by an ordinary supervisor, with a task
//! synthesised from its `ExecutorInfo`, its own sandbox (which its tasks
//! share) and checkpoint dir, and its own reports channel so that its
//! state changes are never taken for a task's. Its tasks have no container
//! of their own: the agent hands them to the executor (LAUNCH, queued
//! until it subscribes) and relays the updates it sends.
//!
//! A child of the table, not a sibling: it is the table's own state, and
//! a sibling would import the table that imports it.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use mezzo_proto::ids::{ExecutorId, FrameworkId, TaskId};
use mezzo_proto::mesos::executor as mx;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1::{self, StatusReason};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Table;

mod calls;
mod launch;
mod recover;
use crate::key::TaskKey;
use crate::task::supervisor::{self, Kill, SupervisorHandle, SupervisorSpec};
use crate::task::{StatusReport, agent_status};
use crate::{AgentError, paths};

/// An executor is unique within its framework on an agent.
pub(crate) type ExecKey = (FrameworkId, ExecutorId);

/// Secret name the executor's token is passed under (never written).
const TOKEN_SECRET: &str = "mesos-executor-token";
/// Grace between SHUTDOWN and the kill when the executor names none.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Longest grace an executor may name: one that ignores SHUTDOWN is
/// killed within the hour (the master refuses more too).
const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3600);
/// Events buffered for one subscription: an executor that does not read
/// its stream has it ended (it resubscribes) rather than grow the agent.
pub(crate) const EVENTS_CAPACITY: usize = 1024;
/// Largest `data` of an executor's MESSAGE or UPDATE status, as the
/// master caps a framework's.
pub const MAX_EXECUTOR_DATA: usize = 1 << 20;

/// What the table needs to run executors.
#[derive(Debug, Clone)]
pub struct ExecutorDeps {
    /// Where the executor API listens (`MESOS_AGENT_ENDPOINT`).
    pub endpoint: std::net::SocketAddr,
    /// An executor that has not subscribed by then is killed.
    pub registration_timeout: Duration,
    /// This agent, as executors are told on SUBSCRIBED.
    pub agent_info: v1::AgentInfo,
    /// The current master stream, while registered: executors' messages
    /// go there (best effort), and their exits (kept until sent).
    pub outbound: watch::Receiver<Option<mpsc::Sender<v1::AgentMessage>>>,
    /// The executor API could not listen on its former port (someone else
    /// holds it): recovered executors get new tokens, so that whoever
    /// collected their old ones when they reconnected there cannot use
    /// them here.
    pub rotate_tokens: bool,
}

impl Default for ExecutorDeps {
    fn default() -> Self {
        ExecutorDeps {
            endpoint: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            registration_timeout: Duration::from_secs(60),
            agent_info: v1::AgentInfo::default(),
            outbound: watch::channel(None).1,
            rotate_tokens: false,
        }
    }
}

/// Why an executor's call is refused, as the executor API answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// 400: malformed, invalid, or naming no executor of this agent.
    #[error("{0}")]
    BadRequest(String),
    /// 403: the wrong token, or a call before SUBSCRIBE.
    #[error("{0}")]
    Forbidden(String),
}

/// A call of the executor API, once its JSON is parsed; `token` is the
/// bearer credential it came with.
#[derive(Debug)]
pub enum ExecutorCall {
    Subscribe {
        framework_id: String,
        executor_id: String,
        token: String,
        subscribe: mx::Subscribe,
        reply: tokio::sync::oneshot::Sender<Result<mpsc::Receiver<mx::Event>, CallError>>,
    },
    Update {
        framework_id: String,
        executor_id: String,
        token: String,
        status: mezzo_proto::mesos::types::TaskStatus,
        reply: tokio::sync::oneshot::Sender<Result<(), CallError>>,
    },
    Message {
        framework_id: String,
        executor_id: String,
        token: String,
        data: Vec<u8>,
        reply: tokio::sync::oneshot::Sender<Result<(), CallError>>,
    },
    /// Answered once the token is checked.
    Heartbeat {
        framework_id: String,
        executor_id: String,
        token: String,
        reply: tokio::sync::oneshot::Sender<Result<(), CallError>>,
    },
}

/// One executor as `/state` and `Reregister` see it.
#[derive(Debug, Clone)]
pub struct ExecutorView {
    pub framework_id: String,
    pub info: v1::ExecutorInfo,
    /// `launching`, `running` (its process runs), `subscribed` or
    /// `shutting down`.
    pub state: &'static str,
    pub tasks: Vec<String>,
    pub sandbox: PathBuf,
}

pub(crate) struct ExecutorEntry {
    info: v1::ExecutorInfo,
    framework: v1::FrameworkInfo,
    sandbox: PathBuf,
    run_dir: PathBuf,
    token: String,
    supervisor: SupervisorHandle,
    /// Its process was reported running (or was found again).
    running: bool,
    /// Events for its current subscription; `None` until it subscribes.
    stream: Option<mpsc::Sender<mx::Event>>,
    /// Its tasks not yet handed over (it has not subscribed since).
    queued: Vec<TaskId>,
    /// Killed unless subscribed by then.
    register_by: Option<Instant>,
    /// Shut down: killed at this time unless it exits first.
    kill_at: Option<Instant>,
    /// Why its tasks fail when it ends, if not its own exit.
    end_reason: Option<(StatusReason, String)>,
    /// The uuids of every update it sent, per task: a resubscription's
    /// unacknowledged updates are taken once (and acknowledged again).
    uuids: BTreeMap<TaskId, HashSet<Vec<u8>>>,
}

impl ExecutorEntry {
    /// Never waits: a full stream is ended (the executor resubscribes and
    /// is sent its pending LAUNCHes again), so that one executor that does
    /// not read cannot hold the table or grow the agent.
    fn send(&mut self, event: mx::Event) -> bool {
        let Some(stream) = &self.stream else { return false };
        match stream.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(executor = %self.info.executor_id, "the executor does not read its events: its subscription is ended");
                self.stream = None;
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stream = None;
                false
            }
        }
    }

    fn state_name(&self) -> &'static str {
        match (self.kill_at.is_some(), self.stream.is_some(), self.running) {
            (true, _, _) => "shutting down",
            (_, true, _) => "subscribed",
            (_, _, true) => "running",
            _ => "launching",
        }
    }
}

/// A random 32-byte token in hex.
fn new_token() -> Result<String, AgentError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| AgentError::Security("no randomness for an executor's token".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn tokens_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Mesos' duration notation, as its executors parse it.
fn mesos_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The executor's process as a task its supervisor can run: its command
/// with the Mesos environment, its resources, container and labels, and
/// the executor itself (so that its checkpoint says what it is).
fn executor_task(
    key: &ExecKey,
    info: &v1::ExecutorInfo,
    agent_id: &str,
    endpoint: std::net::SocketAddr,
    sandbox: &std::path::Path,
) -> v1::TaskInfo {
    let (fid, eid) = key;
    let mut command = info.command.clone().unwrap_or_default();
    let grace = shutdown_grace(info);
    let dir = sandbox.display().to_string();
    // As the executor sees it: elsewhere in its own root when it has an
    // image.
    let seen = match info.container.as_ref().and_then(|c| c.image.as_ref()) {
        Some(_) => crate::containerizer::rootfs::SANDBOX_IN_IMAGE.to_owned(),
        None => dir.clone(),
    };
    let vars = [
        ("MESOS_FRAMEWORK_ID", fid.to_string()),
        ("MESOS_EXECUTOR_ID", eid.to_string()),
        ("MESOS_DIRECTORY", dir),
        ("MESOS_SANDBOX", seen),
        ("MESOS_SLAVE_ID", agent_id.to_owned()),
        ("MESOS_AGENT_ID", agent_id.to_owned()),
        ("MESOS_AGENT_ENDPOINT", endpoint.to_string()),
        ("MESOS_SLAVE_PID", format!("slave(1)@{endpoint}")),
        ("MESOS_CHECKPOINT", "1".to_owned()),
        ("MESOS_HTTP_COMMAND_EXECUTOR", "0".to_owned()),
        ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", mesos_duration(grace)),
        ("MESOS_RECOVERY_TIMEOUT", "15mins".to_owned()),
        ("MESOS_SUBSCRIPTION_BACKOFF_MAX", "2secs".to_owned()),
    ];
    command
        .environment
        .extend(vars.into_iter().map(|(name, value)| v1::EnvVar {
            name: name.to_owned(),
            value,
            secret: String::new(),
        }));
    v1::TaskInfo {
        task_id: eid.to_string(),
        name: info.name.clone(),
        resources: info.resources.clone(),
        command: Some(command),
        container: info.container.clone().map(Box::new),
        labels: info.labels.clone(),
        kill_grace_period_ms: Some(grace.as_millis() as u64),
        executor: Some(Box::new(info.clone())),
        ..Default::default()
    }
}

/// The grace between SHUTDOWN and the kill: the executor's, at most
/// [`MAX_SHUTDOWN_GRACE`].
fn shutdown_grace(info: &v1::ExecutorInfo) -> Duration {
    info.shutdown_grace_period_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_SHUTDOWN_GRACE)
        .min(MAX_SHUTDOWN_GRACE)
}

/// Whether `a` and `b` run the same executor (what every task naming it
/// must agree on).
fn same_executor(a: &v1::ExecutorInfo, b: &v1::ExecutorInfo) -> bool {
    a.command == b.command && a.resources == b.resources && a.container == b.container
}

/// How a supervisor's end report reads for the executor's tasks, and the
/// wait(2) status for the master.
fn ended(report: &StatusReport) -> (String, Option<i32>) {
    let s = &report.status;
    let status = s.exit_code.map(|c| if c >= 0 { (c & 0xff) << 8 } else { -c });
    let how = match s.exit_code {
        Some(c) if c >= 0 => format!("the executor exited with status {c}"),
        Some(c) => format!("the executor was killed by signal {}", -c),
        None if s.message.is_empty() => format!("the executor ended ({})", report.state().map_or("?", |x| x.name())),
        None => format!("the executor ended: {}", s.message),
    };
    (how, status)
}

impl Table {
    /// An executor's bytes for its framework, best effort as in Mesos:
    /// dropped unless connected, and while the master stream is more than
    /// half full, so that messages never crowd out status updates.
    fn executor_message(&self, message: v1::ExecutorMessage) {
        let Some(tx) = self.deps.executors.outbound.borrow().clone() else {
            tracing::debug!("not connected to a master: executor message dropped");
            return;
        };
        if tx.capacity() * 2 < tx.max_capacity() {
            tracing::debug!("the master stream is more than half full: executor message dropped");
            return;
        }
        let message = v1::agent_message::Message::ExecutorMessage(message);
        if tx.try_send(v1::AgentMessage { message: Some(message) }).is_err() {
            tracing::debug!("the master stream is full: executor message dropped");
        }
    }

    /// An executor ended (or never started): the master frees its
    /// resources when it hears, so the news is kept until it is sent.
    fn executor_exited(&mut self, exited: v1::ExecutorExited) {
        self.pending_exits.push(exited);
        self.flush_exits();
    }

    /// An executor the master booked with a task is not started: it frees
    /// its resources once it hears.
    fn never_started(&mut self, (fid, eid): &ExecKey, message: &str) {
        self.executor_exited(v1::ExecutorExited {
            framework_id: fid.to_string(),
            executor_id: eid.to_string(),
            status: None,
            message: message.to_owned(),
        });
    }

    /// Sends the executor exits not sent yet: called when a master has
    /// registered the agent and on the executors' timer.
    pub(super) fn flush_exits(&mut self) {
        if self.pending_exits.is_empty() {
            return;
        }
        let Some(tx) = self.deps.executors.outbound.borrow().clone() else {
            return;
        };
        while let Some(exited) = self.pending_exits.first() {
            let message = v1::agent_message::Message::ExecutorExited(exited.clone());
            if tx.try_send(v1::AgentMessage { message: Some(message) }).is_err() {
                tracing::debug!(
                    pending = self.pending_exits.len(),
                    "executor exits not sent yet: the master stream is full or closed"
                );
                return;
            }
            self.pending_exits.remove(0);
        }
    }

    /// Launches an executor's process (its supervisor checkpoints it, with
    /// no token, before the launch; the token goes to a root-only file).
    fn start_executor(
        &mut self,
        ekey: &ExecKey,
        info: &v1::ExecutorInfo,
        framework: v1::FrameworkInfo,
    ) -> Result<(), AgentError> {
        let (fid, eid) = ekey;
        let sandbox = paths::executor_sandbox_dir(&self.deps.work_dir, fid, eid);
        let run_dir = paths::executor_meta_dir(&self.deps.runtime_dir, fid, eid);
        let token = new_token()?;
        if let Err(e) = write_token(&run_dir, &token) {
            let _ = std::fs::remove_dir_all(&run_dir);
            return Err(e);
        }
        let agent_id = self.agent_id();
        let mut task = executor_task(ekey, info, &agent_id, self.deps.executors.endpoint, &sandbox);
        let mut secrets = supervisor::take_secrets(&mut task);
        if let Some(cmd) = task.command.as_mut() {
            cmd.environment.push(v1::EnvVar {
                name: "MESOS_EXECUTOR_AUTHENTICATION_TOKEN".into(),
                value: String::new(),
                secret: TOKEN_SECRET.into(),
            });
        }
        secrets.push_env(token.clone());
        self.deps.gc.launched(&sandbox);
        self.deps.writeback.mark();
        let sup = self.supervise_executor(ekey, task, secrets, None);
        tracing::info!(framework = %fid, executor = %eid, "starting a custom executor");
        self.executors.insert(
            ekey.clone(),
            ExecutorEntry {
                info: info.clone(),
                framework,
                sandbox,
                run_dir,
                token,
                supervisor: sup,
                running: false,
                stream: None,
                queued: Vec::new(),
                register_by: Some(Instant::now() + self.deps.executors.registration_timeout),
                kill_at: None,
                end_reason: None,
                uuids: BTreeMap::new(),
            },
        );
        Ok(())
    }

    fn supervise_executor(
        &self,
        (fid, eid): &ExecKey,
        task: v1::TaskInfo,
        secrets: supervisor::Secrets,
        adopted: Option<Box<dyn crate::containerizer::Container>>,
    ) -> SupervisorHandle {
        let spec = SupervisorSpec {
            key: TaskKey {
                framework_id: fid.clone(),
                task_id: TaskId::parse(eid.as_str()).unwrap_or_else(|_| TaskId::generate()),
            },
            task,
            secrets,
            agent_id: self.agent_id(),
            sandbox: paths::executor_sandbox_dir(&self.deps.work_dir, fid, eid),
            run_dir: paths::executor_meta_dir(&self.deps.runtime_dir, fid, eid),
            default_kill_grace: DEFAULT_SHUTDOWN_GRACE,
            launched_at: mezzo_proto::clock::unix_now(),
            fetcher: self.deps.fetcher.clone(),
            volumes: self.deps.volumes.clone(),
            busy_volume: None,
            container_id: Some(container_id(fid, eid)),
        };
        supervisor::spawn(
            spec,
            self.deps.containerizer.clone(),
            self.exec_reports_tx.clone(),
            self.deps.metrics.clone(),
            adopted,
        )
    }

    /// A state change of an executor's process.
    pub(super) async fn on_executor_report(&mut self, report: StatusReport) -> Result<(), AgentError> {
        let Ok(eid) = ExecutorId::parse(report.key.task_id.as_str()) else {
            return Ok(());
        };
        let ekey = (report.key.framework_id.clone(), eid);
        let Some(state) = report.state() else { return Ok(()) };
        if state == TaskState::Running {
            if let Some(e) = self.executors.get_mut(&ekey) {
                e.running = true;
            }
            return Ok(());
        }
        if !state.is_terminal() {
            return Ok(());
        }
        let Some(exec) = self.executors.remove(&ekey) else {
            return Ok(());
        };
        let (how, wait_status) = ended(&report);
        tracing::info!(framework = %ekey.0, executor = %ekey.1, "{how}");
        let (reason, message) = exec
            .end_reason
            .clone()
            .unwrap_or((StatusReason::ReasonExecutorTerminated, how.clone()));
        self.fail_executor_tasks(&ekey, reason, &message).await?;
        // Its files go before the master hears: a relaunch it answers
        // with finds the run dir free.
        self.executor_gone(&ekey, &exec.sandbox, &exec.run_dir);
        self.executor_exited(v1::ExecutorExited {
            framework_id: ekey.0.to_string(),
            executor_id: ekey.1.to_string(),
            status: wait_status,
            message: how,
        });
        Ok(())
    }

    /// Every task of the executor that has not ended: FAILED.
    async fn fail_executor_tasks(
        &mut self,
        (fid, eid): &ExecKey,
        reason: StatusReason,
        message: &str,
    ) -> Result<(), AgentError> {
        let agent_id = self.agent_id();
        let doomed: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(k, e)| k.framework_id == *fid && e.executor.as_ref() == Some(eid) && !e.state.is_terminal())
            .map(|(k, _)| k.clone())
            .collect();
        for key in doomed {
            let status = agent_status(&key, &agent_id, TaskState::Failed, reason, message);
            if let Some(entry) = self.tasks.get_mut(&key) {
                self.deps.metrics.task_state(entry.state).dec();
                self.deps.metrics.task_state(TaskState::Failed).inc();
                entry.state = TaskState::Failed;
                entry.statuses.push(&status);
            }
            self.deps.status.update(key, status).await?;
        }
        Ok(())
    }

    /// The executor's files go: its checkpoint now, synchronously, since
    /// the next incarnation of the same executor id writes its token and
    /// checkpoint there; its sandbox to the collector once no task of it
    /// is left in the table.
    fn executor_gone(&mut self, (fid, eid): &ExecKey, sandbox: &std::path::Path, run_dir: &std::path::Path) {
        let has_tasks = self
            .tasks
            .iter()
            .any(|(k, e)| k.framework_id == *fid && e.executor.as_ref() == Some(eid));
        if !has_tasks {
            self.deps.gc.done(sandbox);
        }
        if let Err(e) = std::fs::remove_dir_all(run_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove the executor's checkpoint {}: {e}", run_dir.display());
        }
    }

    /// A task of an executor was forgotten: the uuids of its updates are
    /// no longer needed, and its sandbox (the executor's) is done once the
    /// executor has ended and no task of it is left.
    pub(super) fn executor_task_forgotten(&mut self, key: &TaskKey, eid: &ExecutorId, sandbox: &std::path::Path) {
        let fid = &key.framework_id;
        let ekey = (fid.clone(), eid.clone());
        if let Some(e) = self.executors.get_mut(&ekey) {
            e.uuids.remove(&key.task_id);
        }
        let in_use = self.executors.contains_key(&ekey)
            || self
                .tasks
                .iter()
                .any(|(k, e)| k.framework_id == *fid && e.executor.as_ref() == Some(eid));
        if !in_use {
            self.deps.gc.done(sandbox);
        }
    }

    /// Kills executors that did not subscribe in time and those whose
    /// shutdown grace is over.
    pub(super) fn executor_timers(&mut self) {
        self.flush_exits();
        let now = Instant::now();
        for ((fid, eid), e) in self.executors.iter_mut() {
            if e.register_by.is_some_and(|t| t <= now) && e.stream.is_none() {
                tracing::warn!(framework = %fid, executor = %eid, "the executor did not subscribe in time; killing it");
                e.register_by = None;
                e.end_reason = Some((
                    StatusReason::ReasonExecutorRegistrationTimeout,
                    format!(
                        "executor {eid} did not subscribe within {:?}",
                        self.deps.executors.registration_timeout
                    ),
                ));
                e.supervisor.kill(Some(Duration::ZERO));
            }
            if e.kill_at.is_some_and(|t| t <= now) {
                e.kill_at = Some(now + Duration::from_secs(3600));
                e.supervisor.kill(Some(Duration::from_secs(1)));
            }
        }
    }

    /// SHUTDOWN to the executor, then a kill once its grace is over.
    pub(super) fn shutdown_executor(&mut self, ekey: &ExecKey) {
        let Some(e) = self.executors.get_mut(ekey) else {
            tracing::debug!(framework = %ekey.0, executor = %ekey.1, "shutdown of an unknown executor ignored");
            return;
        };
        if e.kill_at.is_some() {
            return;
        }
        let grace = shutdown_grace(&e.info);
        let subscribed = e.send(mx::Event::of("SHUTDOWN"));
        e.register_by = None;
        e.kill_at = Some(if subscribed {
            Instant::now() + grace
        } else {
            Instant::now()
        });
        tracing::info!(framework = %ekey.0, executor = %ekey.1, ?grace, subscribed, "shutting down the executor");
    }

    pub(super) fn shutdown_framework_executors(&mut self, fid: &str) {
        let keys: Vec<ExecKey> = self
            .executors
            .keys()
            .filter(|(f, _)| f.as_str() == fid)
            .cloned()
            .collect();
        for k in keys {
            self.shutdown_executor(&k);
        }
    }

    /// A kill of a task of an executor: KILL to the executor, or, while
    /// the task still waits for it, TASK_KILLED from the agent.
    pub(super) async fn kill_executor_task(&mut self, key: &TaskKey, kill: Kill) -> Result<(), AgentError> {
        let Some(entry) = self.tasks.get(key) else {
            return Ok(());
        };
        let Some(eid) = entry.executor.clone() else {
            return Ok(());
        };
        let grace = kill
            .grace
            .map(|g| g.as_millis() as u64)
            .or(entry.info.kill_grace_period_ms);
        let ekey = (key.framework_id.clone(), eid);
        let Some(exec) = self.executors.get_mut(&ekey) else {
            return Ok(());
        };
        if exec.queued.contains(&key.task_id) {
            // Not handed over yet: killed here, and with it the rest of its
            // group, which is handed over whole or not at all (as Mesos
            // kills a group one of whose tasks is killed before delivery).
            let group: Vec<TaskKey> = std::iter::once(key.clone()).chain(self.siblings(key)).collect();
            return self.kill_queued(&ekey, &group, kill.why).await;
        }
        if !exec.send(mx::kill(key.task_id.as_str(), grace)) {
            tracing::info!(task = %key, "kill of a task whose executor is not subscribed now: not passed on");
        }
        Ok(())
    }

    /// `key` is no longer to be handed to its executor `eid`.
    pub(super) fn unqueue(&mut self, key: &TaskKey, eid: ExecutorId) {
        if let Some(exec) = self.executors.get_mut(&(key.framework_id.clone(), eid)) {
            exec.queued.retain(|t| *t != key.task_id);
        }
    }

    /// Kills `keys` that still wait for their executor `ekey` (the first
    /// is the one asked for; the others are its group): TASK_KILLED from
    /// the agent.
    async fn kill_queued(
        &mut self,
        ekey: &ExecKey,
        keys: &[TaskKey],
        why: Option<(StatusReason, String)>,
    ) -> Result<(), AgentError> {
        let agent_id = self.agent_id();
        let (reason, message) = why.unwrap_or((
            StatusReason::ReasonTaskKilledDuringLaunch,
            "killed before its executor took it".to_owned(),
        ));
        for (i, key) in keys.iter().enumerate() {
            let Some(exec) = self.executors.get_mut(ekey) else {
                break;
            };
            let Some(at) = exec.queued.iter().position(|t| *t == key.task_id) else {
                continue;
            };
            exec.queued.remove(at);
            let message = match i {
                0 => message.clone(),
                _ => format!("killed with its task group: task {} was {message}", keys[0].task_id),
            };
            let status = agent_status(key, &agent_id, TaskState::Killed, reason, message);
            if let Some(entry) = self.tasks.get_mut(key) {
                self.deps.metrics.task_state(entry.state).dec();
                self.deps.metrics.task_state(TaskState::Killed).inc();
                entry.state = TaskState::Killed;
                entry.statuses.push(&status);
            }
            self.deps.status.update(key.clone(), status).await?;
        }
        Ok(())
    }

    /// Bytes from the framework to one of its executors (dropped unless it
    /// is subscribed, as Mesos does).
    pub(super) fn on_framework_message(&mut self, m: v1::FrameworkMessage) {
        let (Ok(fid), Ok(eid)) = (FrameworkId::parse(&m.framework_id), ExecutorId::parse(&m.executor_id)) else {
            return;
        };
        let sent = self
            .executors
            .get_mut(&(fid, eid))
            .is_some_and(|e| e.send(mx::message(&m.data)));
        if !sent {
            tracing::debug!(executor = %m.executor_id, "framework message dropped: the executor is not subscribed");
        }
    }

    pub(super) fn executor_views(&self) -> Vec<ExecutorView> {
        self.executors
            .iter()
            .map(|((fid, eid), e)| ExecutorView {
                framework_id: fid.to_string(),
                info: e.info.clone(),
                state: e.state_name(),
                tasks: self
                    .tasks
                    .iter()
                    .filter(|(k, t)| k.framework_id == *fid && t.executor.as_ref() == Some(eid))
                    .map(|(k, _)| k.task_id.to_string())
                    .collect(),
                sandbox: e.sandbox.clone(),
            })
            .collect()
    }
}

/// The container id of an executor: no task's key can be it.
fn container_id(fid: &FrameworkId, eid: &ExecutorId) -> String {
    format!("{fid}/executors/{eid}")
}

/// Writes the executor's token to its checkpoint dir, readable by root
/// only, for a restarted agent to check the executor's calls with.
fn write_token(run_dir: &std::path::Path, token: &str) -> Result<(), AgentError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(run_dir)
        .map_err(AgentError::io("create", run_dir))?;
    let path = run_dir.join(paths::EXECUTOR_TOKEN);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(AgentError::io("create", &path))?;
    f.write_all(token.as_bytes()).map_err(AgentError::io("write", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_executors_shutdown_grace_is_capped_at_an_hour() {
        let mut info = v1::ExecutorInfo {
            executor_id: "ex-1".into(),
            shutdown_grace_period_ms: Some(u64::MAX),
            ..Default::default()
        };
        let key = (FrameworkId::generate(), ExecutorId::parse("ex-1").expect("id"));
        let task = executor_task(
            &key,
            &info,
            "agent-1",
            ([127, 0, 0, 1], 1).into(),
            std::path::Path::new("/s"),
        );
        assert_eq!(task.kill_grace_period_ms, Some(3_600_000));
        info.shutdown_grace_period_ms = Some(2000);
        assert_eq!(shutdown_grace(&info), Duration::from_secs(2));
    }
}
