//! Operators' actions on the cluster, inside the core: drain and
//! reactivate an agent, mark it gone, kill a task or tear down a
//! framework on an operator's behalf. Durable ones are proposed as
//! registry ops and act when committed, like every registry change.

use std::time::Duration;

use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;

use super::observe::ClusterEvent;
use super::{AgentStatus, Effect, Master};
use crate::error::MasterError;
use crate::registry::RegistryOp;
use mezzo_proto::clock::unix_now;

/// An operator's action, with its inputs checked for syntax by the HTTP
/// layer.
#[derive(Debug, Clone, PartialEq)]
pub enum OperatorAction {
    /// Stop offering the agent; tasks still running after `deadline` are
    /// killed (none: they may run to completion).
    Drain {
        agent: AgentId,
        deadline: Option<Duration>,
    },
    Reactivate {
        agent: AgentId,
    },
    MarkGone {
        agent: AgentId,
    },
    KillTask {
        framework: FrameworkId,
        task: TaskId,
        grace: Option<Duration>,
    },
    Teardown {
        framework: FrameworkId,
    },
}

impl Master {
    /// Starts an operator's action. It is checked against the current
    /// state now; a durable one takes effect once its op commits.
    pub fn operator_action(&mut self, action: OperatorAction) -> Result<(), MasterError> {
        match action {
            OperatorAction::Drain { agent, deadline } => self.drain_agent(&agent, deadline),
            OperatorAction::Reactivate { agent } => self.reactivate_agent(&agent),
            OperatorAction::MarkGone { agent } => self.mark_agent_gone(&agent),
            OperatorAction::KillTask { framework, task, grace } => self.operator_kill(&framework, &task, grace),
            OperatorAction::Teardown { framework } => self.operator_teardown(&framework),
        }
    }

    /// True while an operator drains the agent: it gets no new offers.
    pub fn is_draining(&self, id: &AgentId) -> bool {
        self.registry.draining.contains_key(id)
    }

    /// Starts draining an agent (committed through the registry first).
    /// Its tasks may finish; those still running after `deadline` are
    /// killed.
    pub(super) fn drain_agent(&mut self, id: &AgentId, deadline: Option<Duration>) -> Result<(), MasterError> {
        self.known_agent(id)?;
        let at = unix_now();
        self.emit(Effect::Propose(RegistryOp::DrainAgent {
            id: id.clone(),
            deadline: deadline.map(|d| at + d.as_secs_f64()),
            at,
        }));
        Ok(())
    }

    /// Ends a drain.
    pub(super) fn reactivate_agent(&mut self, id: &AgentId) -> Result<(), MasterError> {
        self.known_agent(id)?;
        self.emit(Effect::Propose(RegistryOp::ReactivateAgent { id: id.clone() }));
        Ok(())
    }

    /// Marks an agent gone for good (committed first): its tasks become
    /// GONE and it may not register again.
    pub(super) fn mark_agent_gone(&mut self, id: &AgentId) -> Result<(), MasterError> {
        self.known_agent(id)?;
        self.emit(Effect::Propose(RegistryOp::MarkAgentGone {
            id: id.clone(),
            at: unix_now(),
        }));
        Ok(())
    }

    fn known_agent(&self, id: &AgentId) -> Result<(), MasterError> {
        if self.registry.gone.contains_key(id) {
            return Err(MasterError::AgentGone(id.to_string()));
        }
        if !self.agents.contains_key(id) {
            return Err(MasterError::UnknownAgent(id.to_string()));
        }
        Ok(())
    }

    /// Kills a task for an operator (the framework need not be connected).
    pub(super) fn operator_kill(
        &mut self,
        fid: &FrameworkId,
        tid: &TaskId,
        grace: Option<Duration>,
    ) -> Result<(), MasterError> {
        if !self.frameworks.contains_key(fid) {
            return Err(MasterError::UnknownFramework(fid.to_string()));
        }
        let why = (v1::StatusReason::ReasonKilledByOperator, "killed by an operator");
        self.kill_task_because(fid, tid, grace, Some(why))
    }

    /// Removes a framework for an operator, connected or not.
    pub(super) fn operator_teardown(&mut self, fid: &FrameworkId) -> Result<(), MasterError> {
        if !self.frameworks.contains_key(fid) {
            return Err(MasterError::UnknownFramework(fid.to_string()));
        }
        self.propose_framework_removal(fid.clone());
        Ok(())
    }

    /// A committed drain started or ended.
    pub(crate) fn agent_drain_changed(&mut self, id: &AgentId) {
        let draining = self.is_draining(id);
        if let Some(a) = self.agents.get(id) {
            // A draining agent gets no offers: the allocator leaves it out.
            let offerable = a.status == AgentStatus::Active && !draining;
            self.alloc.set_agent_active(id, offerable);
        }
        if draining {
            self.rescind_agent_offers(id);
        } else {
            self.drain_killed.remove(id);
        }
        self.allocation_needed = true;
        self.notify_drain(id, None);
        self.observed.event(move || ClusterEvent::AgentDraining {
            agent_id: id.to_string(),
            draining,
        });
        tracing::info!(agent = %id, draining, "agent drain changed");
    }

    /// Tells frameworks of an agent's drain (or its end), so that they can
    /// move their tasks before the deadline: every subscribed framework,
    /// or only `to` (one that just subscribed).
    pub(crate) fn notify_drain(&mut self, id: &AgentId, to: Option<&FrameworkId>) {
        let drain = self.registry.draining.get(id);
        let ev = v1::AgentDrain {
            agent_id: id.to_string(),
            draining: drain.is_some(),
            deadline: drain.and_then(|d| d.deadline),
        };
        let targets: Vec<FrameworkId> = match to {
            Some(f) => vec![f.clone()],
            None => self
                .frameworks
                .iter()
                .filter(|(_, f)| f.conn.is_some())
                .map(|(id, _)| id.clone())
                .collect(),
        };
        for fid in targets {
            self.send_framework(&fid, v1::event::Event::AgentDrain(ev.clone()));
        }
    }

    /// Tells a framework that just subscribed of every drain under way.
    pub(crate) fn notify_drains_to(&mut self, fid: &FrameworkId) {
        let draining: Vec<AgentId> = self.registry.draining.keys().cloned().collect();
        for id in draining {
            self.notify_drain(&id, Some(fid));
        }
    }

    /// Kills what still runs on draining agents past their deadline (once
    /// per drain; a task that ignores the kill is the agent's business).
    pub(crate) fn drain_tick(&mut self) {
        let now = unix_now();
        let due: Vec<AgentId> = self
            .registry
            .draining
            .iter()
            .filter(|(id, d)| d.deadline.is_some_and(|t| t <= now) && !self.drain_killed.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.drain_killed.insert(id.clone());
            let tasks: Vec<(FrameworkId, TaskId)> = self
                .agents
                .get(&id)
                .map(|a| a.tasks.iter().cloned().collect())
                .unwrap_or_default();
            tracing::info!(agent = %id, tasks = tasks.len(), "drain deadline passed; killing the agent's tasks");
            let why = (
                v1::StatusReason::ReasonAgentDraining,
                "killed: its agent is drained for maintenance and the drain's deadline passed",
            );
            for (fid, tid) in tasks {
                if let Err(e) = self.kill_task_because(&fid, &tid, None, Some(why)) {
                    tracing::debug!(task = %tid, error = %e, "drain kill skipped");
                }
            }
        }
    }

    /// A committed gone mark: every task on the agent becomes GONE, its
    /// stream is closed, and it is forgotten.
    pub(crate) fn agent_gone(&mut self, id: &AgentId) {
        if !self.agents.contains_key(id) {
            return;
        }
        let active = |s: TaskState| !s.is_terminal() || s == TaskState::Unreachable;
        let why = (
            TaskState::Gone,
            v1::StatusReason::ReasonAgentRemoved,
            "agent was marked gone",
        );
        self.lose_agent(id, active, why);
        self.agents.remove(id);
        self.alloc.remove_agent(id);
        self.drain_killed.remove(id);
        self.allocation_needed = true;
        self.note_agent_removed(id, "gone");
        tracing::warn!(agent = %id, "agent marked gone by an operator");
    }
}
