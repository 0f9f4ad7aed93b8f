//! Status updates from agents, acknowledgements from frameworks, kills and
//! reconciliation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;

use super::task_index::Table;
use super::{AgentStatus, ConnId, Effect, Master, Task};
use crate::error::MasterError;
use mezzo_proto::clock::unix_now;

/// How soon an agent's resend of an unacknowledged update is forwarded
/// again on the same framework stream (Mesos' agents wait this long
/// before their first resend).
pub const FORWARD_AGAIN_AFTER: Duration = Duration::from_secs(10);

/// An update's uuid as a key (16 bytes; others never match).
fn uuid_key(uuid: &[u8]) -> Option<u128> {
    <[u8; 16]>::try_from(uuid).ok().map(u128::from_le_bytes)
}

impl Master {
    /// An update from an agent. The master records the task's newest state
    /// (`latest`, which may be ahead of the update itself), frees resources
    /// when it turns terminal, and forwards the update to the framework.
    pub fn status_update(
        &mut self,
        conn: ConnId,
        fid: FrameworkId,
        status: v1::TaskStatus,
        latest: TaskState,
        now: Instant,
    ) -> Result<(), MasterError> {
        let agent_id = self
            .agent_seen(conn, now)
            .ok_or_else(|| MasterError::Invalid("update from an unregistered stream".into()))?;
        self.counters.status_updates += 1;
        let tid = TaskId::parse(&status.task_id)?;
        if !self.frameworks.contains_key(&fid) {
            // The framework is gone: nobody will acknowledge, so the master does.
            self.ack_to_agent(&agent_id, &fid, &tid, &status.uuid);
            return Ok(());
        }
        let placed = self
            .frameworks
            .get(&fid)
            .and_then(|f| f.tasks.get(&tid))
            .map(|t| t.agent_id.clone());
        let completed = match placed {
            None => self.completed_on(&fid, &tid, &agent_id),
            Some(_) => None,
        };
        match placed {
            Some(on) if on == agent_id && self.resend_answered(&agent_id, &fid, &tid, &status, now) => return Ok(()),
            Some(on) if on == agent_id => self.set_task_state(&fid, &tid, latest, Some(&status)),
            // An agent speaks only for the tasks placed on it: anything
            // else is dropped (never forwarded, never acknowledged).
            Some(on) => {
                return Err(MasterError::Denied(format!(
                    "agent {agent_id} sent an update for task {tid}, which runs on agent {on}"
                )));
            }
            // Completed already (e.g. adopted as ended when its agent
            // re-registered after a failover, while this update still
            // waited for its acknowledgement): forward it without a state
            // change, so that the framework acknowledges it and the agent
            // stops resending it.
            None if completed.is_some() => {
                let acked = completed.flatten();
                if acked.is_some() && acked == uuid_key(&status.uuid) {
                    self.counters.resends_held += 1;
                    self.ack_to_agent(&agent_id, &fid, &tid, &status.uuid);
                } else {
                    self.send_framework(&fid, v1::event::Event::Update(v1::Update { status: Some(status) }));
                }
                return Ok(());
            }
            None => {
                return Err(MasterError::Denied(format!(
                    "agent {agent_id} sent an update for task {tid}, which the master never placed on it"
                )));
            }
        }
        if status.uuid.is_empty() {
            self.send_framework(&fid, v1::event::Event::Update(v1::Update { status: Some(status) }));
            return Ok(());
        }
        if let Some(task) = self.frameworks.get_mut(&fid).and_then(|f| f.tasks.get_mut(&tid)) {
            Arc::make_mut(task).unacked = Some(Box::new(status.clone()));
        }
        self.forward_unacked(&fid, &tid, status, now);
        Ok(())
    }

    /// Sends the framework a task's update that waits for its
    /// acknowledgement, noting the stream and the time (see
    /// [`Master::resend_answered`]).
    pub(super) fn forward_unacked(&mut self, fid: &FrameworkId, tid: &TaskId, status: v1::TaskStatus, now: Instant) {
        if let Some(fw) = self.frameworks.get_mut(fid)
            && let Some(task) = fw.tasks.get_mut(tid)
        {
            Arc::make_mut(task).forwarded = fw.conn.map(|c| (c, now));
            self.observed.forwarded(fid, tid);
        }
        self.send_framework(fid, v1::event::Event::Update(v1::Update { status: Some(status) }));
    }

    /// True when `status` is an agent's resend that the master answers
    /// without the framework. Agents resend with backoff, and under load
    /// each resend went to the framework as a new update and was
    /// acknowledged again: a run with 4,000 frameworks made ten updates a
    /// task, and stayed busy with them minutes after its last launch.
    /// - A resend of the update the framework acknowledged (the agent had
    ///   not got that acknowledgement yet): the master acknowledges it.
    /// - A resend of the update the framework has not acknowledged yet:
    ///   applied when it first came, it goes to the framework again only
    ///   if the framework's stream changed since (a re-subscription
    ///   resends it anyway) or [`FORWARD_AGAIN_AFTER`] passed.
    fn resend_answered(
        &mut self,
        agent_id: &AgentId,
        fid: &FrameworkId,
        tid: &TaskId,
        status: &v1::TaskStatus,
        now: Instant,
    ) -> bool {
        let Some(fw) = self.frameworks.get_mut(fid) else {
            return false;
        };
        let conn = fw.conn;
        let Some(task) = fw.tasks.get_mut(tid) else {
            return false;
        };
        if status.uuid.is_empty() {
            return false;
        }
        if task.acked.is_some() && task.acked == uuid_key(&status.uuid) {
            self.counters.resends_held += 1;
            self.ack_to_agent(agent_id, fid, tid, &status.uuid);
            return true;
        }
        if task.unacked.as_ref().is_none_or(|u| u.uuid != status.uuid) {
            return false;
        }
        let recent = task
            .forwarded
            .is_some_and(|(c, at)| conn == Some(c) && now.saturating_duration_since(at) < FORWARD_AGAIN_AFTER);
        if recent {
            self.counters.resends_held += 1;
        } else {
            self.forward_unacked(fid, tid, status.clone(), now);
        }
        true
    }

    /// Whether `tid` is among the framework's completed tasks, placed on
    /// `agent_id`: then `Some` of the uuid its framework acknowledged last.
    fn completed_on(&self, fid: &FrameworkId, tid: &TaskId, agent_id: &AgentId) -> Option<Option<u128>> {
        let t = self.frameworks.get(fid)?.completed_by_id.get(tid)?;
        (&t.agent_id == agent_id).then_some(t.acked)
    }

    /// Tells `agent_id` that the update `uuid` of `tid` was acknowledged.
    fn ack_to_agent(&mut self, agent_id: &AgentId, fid: &FrameworkId, tid: &TaskId, uuid: &[u8]) {
        let ack = v1::master_message::Message::Acknowledge(v1::AcknowledgeUpdate {
            framework_id: fid.to_string(),
            task_id: tid.to_string(),
            uuid: uuid.to_vec(),
        });
        self.send_agent(agent_id, ack);
    }

    /// Moves a task to `state`, keeping resource accounting right.
    pub(crate) fn set_task_state(
        &mut self,
        fid: &FrameworkId,
        tid: &TaskId,
        state: TaskState,
        status: Option<&v1::TaskStatus>,
    ) {
        let Some(fw) = self.frameworks.get_mut(fid) else { return };
        let Some(task) = fw.tasks.get_mut(tid).map(Arc::make_mut) else {
            tracing::debug!(framework = %fid, task = %tid, "update for a task the master does not know");
            return;
        };
        let was_terminal = task.state.is_terminal();
        self.task_index.uncount(task);
        match task.state.transition(state) {
            Ok(s) => task.state = s,
            Err(e) => tracing::warn!(framework = %fid, task = %tid, error = %e, "ignoring an impossible state change"),
        }
        if let Some(s) = status {
            task.last_status = Some(s.clone());
            if s.healthy.is_some() {
                task.healthy = s.healthy;
            }
        }
        self.task_index.count(task);
        let split = task.resources.clone();
        let res = split.total();
        let agent_id = task.agent_id.clone();
        let role = task.role.clone();
        match (was_terminal, task.state.is_terminal()) {
            (false, true) => {
                fw.allocated = fw.allocated.saturating_sub(&res);
                if let Some(agent) = self.agents.get_mut(&agent_id) {
                    agent.used = agent.used.saturating_sub(&res);
                }
                self.alloc.recover_used(fid, &role, &agent_id, &split);
                self.allocation_needed = true;
            }
            (true, false) => {
                fw.allocated.add(&res);
                if let Some(agent) = self.agents.get_mut(&agent_id) {
                    agent.used.add(&res);
                }
                self.alloc.track_used(fid, &role, &agent_id, &split);
            }
            _ => {}
        }
        self.note_task_state(fid, tid, status);
    }

    /// A state change the master decides itself (agent lost, ...). Sent to
    /// the framework without a uuid: it needs no acknowledgement.
    pub(crate) fn master_update(
        &mut self,
        fid: &FrameworkId,
        tid: &TaskId,
        state: TaskState,
        reason: v1::StatusReason,
        message: &str,
    ) {
        let Some(agent_id) = self
            .frameworks
            .get(fid)
            .and_then(|f| f.tasks.get(tid))
            .map(|t| t.agent_id.clone())
        else {
            return;
        };
        let status = v1::TaskStatus {
            task_id: tid.to_string(),
            state: state.to_proto() as i32,
            reason: reason as i32,
            message: message.to_owned(),
            source: v1::StatusSource::SourceMaster as i32,
            agent_id: agent_id.to_string(),
            uuid: Vec::new(),
            timestamp: unix_now(),
            exit_code: None,
            framework_id: fid.to_string(),
            healthy: None,
            ..Default::default()
        };
        self.set_task_state(fid, tid, state, Some(&status));
        if state.is_terminal() && state != TaskState::Unreachable {
            self.complete_task(fid, tid);
        }
        self.send_framework(fid, v1::event::Event::Update(v1::Update { status: Some(status) }));
    }

    /// [`Master::master_update`] for a task whose current state passes
    /// `when`; returns whether it did.
    pub(crate) fn master_update_if(
        &mut self,
        fid: &FrameworkId,
        tid: &TaskId,
        when: impl Fn(TaskState) -> bool,
        state: TaskState,
        reason: v1::StatusReason,
        message: &str,
    ) -> bool {
        let matches = self
            .frameworks
            .get(fid)
            .and_then(|f| f.tasks.get(tid))
            .is_some_and(|t| when(t.state));
        if matches {
            self.master_update(fid, tid, state, reason, message);
        }
        matches
    }

    /// Moves a terminal task from the active table to the completed ring.
    fn complete_task(&mut self, fid: &FrameworkId, tid: &TaskId) {
        let Some(fw) = self.frameworks.get_mut(fid) else { return };
        let Some(task) = fw.tasks.remove(tid) else { return };
        self.task_index.remove(&task, Table::Active);
        if let Some(agent) = self.agents.get_mut(&task.agent_id) {
            agent.tasks.remove(&(fid.clone(), tid.clone()));
        }
        self.remember_completed(fid, task);
    }

    /// The framework acknowledges one update; the agent may now forget it.
    pub fn acknowledge(
        &mut self,
        fid: &FrameworkId,
        agent_id: &AgentId,
        tid: &TaskId,
        uuid: &[u8],
    ) -> Result<(), MasterError> {
        self.subscribed(fid)?;
        self.check_ack(agent_id, uuid)?;
        self.apply_ack(fid, agent_id, tid, uuid);
        Ok(())
    }

    /// Several acknowledgements in one call: all are checked before any is
    /// applied, so a refused call changes nothing.
    pub fn acknowledge_all(
        &mut self,
        fid: &FrameworkId,
        acks: &[(AgentId, TaskId, Vec<u8>)],
    ) -> Result<(), MasterError> {
        self.subscribed(fid)?;
        for (agent_id, _, uuid) in acks {
            self.check_ack(agent_id, uuid)?;
        }
        for (agent_id, tid, uuid) in acks {
            self.apply_ack(fid, agent_id, tid, uuid);
        }
        Ok(())
    }

    fn check_ack(&self, agent_id: &AgentId, uuid: &[u8]) -> Result<(), MasterError> {
        if uuid.len() != 16 {
            return Err(MasterError::Invalid(format!(
                "uuid must be 16 bytes, got {}",
                uuid.len()
            )));
        }
        if !self.agents.contains_key(agent_id) {
            return Err(MasterError::UnknownAgent(agent_id.to_string()));
        }
        Ok(())
    }

    fn apply_ack(&mut self, fid: &FrameworkId, agent_id: &AgentId, tid: &TaskId, uuid: &[u8]) {
        self.counters.acknowledgements += 1;
        let mut done = false;
        if let Some(task) = self.frameworks.get_mut(fid).and_then(|f| f.tasks.get_mut(tid))
            && task.unacked.as_ref().is_some_and(|s| s.uuid == uuid)
        {
            let task = Arc::make_mut(task);
            task.forwarded = None;
            task.acked = uuid_key(uuid);
            let acked = task.unacked.take();
            self.observed.acknowledged(fid, tid);
            let acked_state = acked.as_ref().and_then(|s| TaskState::from_proto(s.state));
            done = task.state.is_terminal() && acked_state.is_some_and(TaskState::is_terminal);
        }
        if done {
            self.complete_task(fid, tid);
        }
        // A disconnected agent resends the update later; it is acked again then.
        self.ack_to_agent(agent_id, fid, tid, uuid);
    }

    pub fn kill(&mut self, fid: &FrameworkId, tid: &TaskId, grace: Option<Duration>) -> Result<(), MasterError> {
        self.subscribed(fid)?;
        self.kill_task(fid, tid, grace)
    }

    /// Asks the task's agent to kill it.
    pub(crate) fn kill_task(
        &mut self,
        fid: &FrameworkId,
        tid: &TaskId,
        grace: Option<Duration>,
    ) -> Result<(), MasterError> {
        self.kill_task_because(fid, tid, grace, None)
    }

    /// Kills a task for someone other than its framework: the agent reports
    /// `why` (reason and message) on the `TASK_KILLED` update, so that the
    /// framework, the events and `mezzo why` say who stopped it.
    pub(crate) fn kill_task_because(
        &mut self,
        fid: &FrameworkId,
        tid: &TaskId,
        grace: Option<Duration>,
        why: Option<(v1::StatusReason, &str)>,
    ) -> Result<(), MasterError> {
        let fw = self
            .frameworks
            .get(fid)
            .ok_or_else(|| MasterError::NotSubscribed(fid.to_string()))?;
        let task: &Task = match fw.tasks.get(tid) {
            Some(t) => t,
            None => {
                return Err(match fw.completed_by_id.get(tid) {
                    Some(t) => MasterError::TaskTerminal {
                        task: tid.to_string(),
                        state: t.state.name(),
                    },
                    None => MasterError::UnknownTask(tid.to_string()),
                });
            }
        };
        if task.state.is_terminal() {
            return Err(MasterError::TaskTerminal {
                task: tid.to_string(),
                state: task.state.name(),
            });
        }
        let agent_id = task.agent_id.clone();
        let msg = v1::master_message::Message::KillTask(v1::KillTask {
            framework_id: fid.to_string(),
            task_id: tid.to_string(),
            kill_grace_period_ms: grace.map(|g| g.as_millis() as u64),
            reason: why.map_or(v1::StatusReason::ReasonUnspecified, |w| w.0) as i32,
            message: why.map(|w| w.1.to_owned()).unwrap_or_default(),
        });
        if !self.send_agent(&agent_id, msg) {
            return Err(MasterError::AgentDisconnected(agent_id.to_string()));
        }
        Ok(())
    }

    /// Sends the master's view of the named tasks (all active ones when
    /// `tasks` is empty, then `Reconciled`), without uuids. All of them
    /// cannot be told while agents known before a failover may still bring
    /// tasks back: the framework is asked to ask again.
    pub fn reconcile(&mut self, fid: &FrameworkId, tasks: &[(TaskId, Option<AgentId>)]) -> Result<(), MasterError> {
        self.subscribed(fid)?;
        if tasks.is_empty() && self.agents.values().any(|a| a.status == AgentStatus::Recovering) {
            return Err(MasterError::AgentsRecovering);
        }
        let fw = self
            .frameworks
            .get(fid)
            .ok_or_else(|| MasterError::NotSubscribed(fid.to_string()))?;
        let status_of = |t: &Task| v1::TaskStatus {
            task_id: t.id.to_string(),
            state: t.state.to_proto() as i32,
            reason: v1::StatusReason::ReasonReconciliation as i32,
            message: t.last_status.as_ref().map(|s| s.message.clone()).unwrap_or_default(),
            source: v1::StatusSource::SourceMaster as i32,
            agent_id: t.agent_id.to_string(),
            uuid: Vec::new(),
            timestamp: unix_now(),
            exit_code: t.last_status.as_ref().and_then(|s| s.exit_code),
            framework_id: fid.to_string(),
            healthy: t.healthy,
            ..Default::default()
        };
        let unknown = |tid: &TaskId, agent: &Option<AgentId>, state: v1::TaskState, message: &str| v1::TaskStatus {
            task_id: tid.to_string(),
            state: state as i32,
            reason: v1::StatusReason::ReasonReconciliation as i32,
            message: message.into(),
            source: v1::StatusSource::SourceMaster as i32,
            agent_id: agent.as_ref().map(|a| a.to_string()).unwrap_or_default(),
            timestamp: unix_now(),
            framework_id: fid.to_string(),
            ..Default::default()
        };
        let statuses: Vec<v1::TaskStatus> = if tasks.is_empty() {
            fw.tasks.values().map(|t| status_of(t)).collect()
        } else {
            // A task the master does not know is answered by what its agent
            // says: an agent that has re-registered does not run it (DROPPED
            // when its task list is complete: it never reached the agent,
            // which forgets a task only once its end was acknowledged; else
            // LOST); one that has not re-registered yet gets no answer now
            // (the framework asks again); an unreachable one makes it
            // UNREACHABLE.
            tasks
                .iter()
                .filter_map(|(tid, agent)| {
                    if let Some(t) = fw.tasks.get(tid).or_else(|| fw.completed_by_id.get(tid)) {
                        return Some(status_of(t));
                    }
                    let on = agent.as_ref().and_then(|a| self.agents.get(a));
                    match on.map(|a| (a.status, a.tasks_complete)) {
                        Some((AgentStatus::Active, true)) => Some(unknown(
                            tid,
                            agent,
                            v1::TaskState::TaskDropped,
                            "the task is not on its agent, which never received it",
                        )),
                        Some((AgentStatus::Active, false)) => Some(unknown(
                            tid,
                            agent,
                            v1::TaskState::TaskLost,
                            "the task is not on its agent",
                        )),
                        Some((AgentStatus::Recovering | AgentStatus::Disconnected, _)) => None,
                        Some((AgentStatus::Unreachable, _)) => Some(unknown(
                            tid,
                            agent,
                            v1::TaskState::TaskUnreachable,
                            "the task's agent is unreachable",
                        )),
                        None => Some(unknown(
                            tid,
                            agent,
                            v1::TaskState::TaskUnknown,
                            "the master knows no such task",
                        )),
                    }
                })
                .collect()
        };
        tracing::debug!(framework = %fid, asked = tasks.len(), answers = statuses.len(), "reconciliation");
        if let Some(conn) = fw.conn {
            for s in statuses {
                self.emit(Effect::ToFramework(
                    conn,
                    v1::Event {
                        event: Some(v1::event::Event::Update(v1::Update { status: Some(s) })),
                    },
                ));
            }
            if tasks.is_empty() {
                let done = v1::event::Event::Reconciled(v1::Reconciled {});
                self.emit(Effect::ToFramework(conn, v1::Event { event: Some(done) }));
            }
        }
        Ok(())
    }
}
