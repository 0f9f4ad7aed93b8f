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
        self.kill_task(fid, tid, grace)
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
        self.observed.event(move || ClusterEvent::AgentDraining {
            agent_id: id.to_string(),
            draining,
        });
        tracing::info!(agent = %id, draining, "agent drain changed");
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
            for (fid, tid) in tasks {
                if let Err(e) = self.kill_task(&fid, &tid, None) {
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
