//! Custom executors (Mesos' `ExecutorInfo`): one process per (framework,
//! executor id, agent) that runs the tasks naming it. Its resources are
//! held besides its tasks' from the launch of its first task until its
//! agent says it exited (or the agent or framework goes), as in Mesos.
//! The agent runs it and is the source of truth: a re-registration lists
//! the executors it runs and the books follow.

use mezzo_proto::ids::{AgentId, ExecutorId, FrameworkId};
use mezzo_proto::reservation::{ReservedResources, Role};
use mezzo_proto::v1;

use std::time::Instant;

use super::{ConnId, Master};
use crate::error::MasterError;

/// A custom executor the master holds resources for.
#[derive(Debug, Clone)]
pub(super) struct Executor {
    /// As its first task named it; later tasks must name the same.
    pub info: v1::ExecutorInfo,
    pub role: Role,
    pub resources: ReservedResources,
}

/// Executors of one agent, by framework and id.
pub(super) type Executors = std::collections::BTreeMap<(FrameworkId, ExecutorId), Executor>;

/// An executor an accept starts: its id, info and what it takes.
pub(super) type NewExecutor = (ExecutorId, v1::ExecutorInfo, ReservedResources);

/// Whether two tasks name the same executor: the same info but for the
/// form of its resources (as asked, or as taken of an offer and reported
/// back by its agent) and the role the master fills in.
pub(super) fn same_executor(a: &v1::ExecutorInfo, b: &v1::ExecutorInfo) -> bool {
    let bare = |e: &v1::ExecutorInfo| v1::ExecutorInfo {
        resources: Vec::new(),
        allocation_role: String::new(),
        ..e.clone()
    };
    let total = |e: &v1::ExecutorInfo| ReservedResources::from_proto(&e.resources).map(|r| r.total()).ok();
    bare(a) == bare(b) && total(a) == total(b)
}

/// An executor an agent reports on re-registration.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedExecutor {
    pub framework_id: FrameworkId,
    pub executor_id: ExecutorId,
    pub info: v1::ExecutorInfo,
    pub resources: ReservedResources,
    /// The role its resources were allocated to (empty: unknown).
    pub role: String,
}

impl Master {
    /// Books a new executor's resources as used on its agent.
    pub(super) fn add_executor(&mut self, fid: &FrameworkId, agent: &AgentId, role: &Role, new: NewExecutor) {
        let (eid, info, taken) = new;
        self.alloc.offer_used(fid, role, agent, &taken);
        self.hold_executor(fid, agent, role, eid, info, taken);
    }

    fn hold_executor(
        &mut self,
        fid: &FrameworkId,
        agent: &AgentId,
        role: &Role,
        eid: ExecutorId,
        info: v1::ExecutorInfo,
        resources: ReservedResources,
    ) {
        let flat = resources.total();
        if let Some(fw) = self.frameworks.get_mut(fid) {
            fw.allocated.add(&flat);
        }
        if let Some(a) = self.agents.get_mut(agent) {
            a.used.add(&flat);
            let role = role.clone();
            a.executors
                .insert((fid.clone(), eid), Executor { info, role, resources });
        }
    }

    /// Frees an executor's resources; tells its framework with a
    /// `Failure` naming it when `status` is given (it exited).
    fn release_executor(&mut self, agent: &AgentId, fid: &FrameworkId, eid: &ExecutorId, status: Option<Option<i32>>) {
        let Some(a) = self.agents.get_mut(agent) else { return };
        let Some(e) = a.executors.remove(&(fid.clone(), eid.clone())) else {
            return;
        };
        let flat = e.resources.total();
        a.used = a.used.saturating_sub(&flat);
        if let Some(fw) = self.frameworks.get_mut(fid) {
            fw.allocated = fw.allocated.saturating_sub(&flat);
        }
        self.alloc.recover_used(fid, &e.role, agent, &e.resources);
        self.allocation_needed = true;
        if let Some(status) = status {
            let failure = v1::Failure {
                agent_id: agent.to_string(),
                executor_id: eid.to_string(),
                status,
            };
            self.send_framework(fid, v1::event::Event::Failure(failure));
        }
    }

    /// The agent on `conn` says an executor exited.
    pub fn executor_exited(&mut self, conn: ConnId, e: v1::ExecutorExited, now: Instant) {
        let Some(agent) = self.agent_seen(conn, now) else {
            return;
        };
        let agent = &agent;
        let (Ok(fid), Ok(eid)) = (FrameworkId::parse(&e.framework_id), ExecutorId::parse(&e.executor_id)) else {
            tracing::warn!(agent = %agent, "executor exit with bad ids ignored");
            return;
        };
        tracing::info!(agent = %agent, framework = %fid, executor = %eid, status = ?e.status, message = %e.message, "executor exited");
        self.release_executor(agent, &fid, &eid, Some(e.status));
    }

    /// Bytes an executor on the agent on `conn` sent its framework.
    pub fn executor_message(&mut self, conn: ConnId, m: v1::ExecutorMessage, now: Instant) {
        let Some(agent) = self.agent_seen(conn, now) else {
            return;
        };
        let agent = &agent;
        let Ok(fid) = FrameworkId::parse(&m.framework_id) else {
            return;
        };
        let known = ExecutorId::parse(&m.executor_id).is_ok_and(|eid| {
            self.agents
                .get(agent)
                .is_some_and(|a| a.executors.contains_key(&(fid.clone(), eid)))
        });
        if !known {
            tracing::debug!(agent = %agent, framework = %fid, executor = %m.executor_id, "message from an unknown executor dropped");
            return;
        }
        let event = v1::Message {
            agent_id: agent.to_string(),
            executor_id: m.executor_id,
            data: m.data,
        };
        self.send_framework(&fid, v1::event::Event::Message(event));
    }

    /// The running executor `eid` of `fid` on `agent`, which must be
    /// connected: the target of a message or a shutdown.
    fn executor_target(&self, fid: &FrameworkId, agent: &AgentId, eid: &ExecutorId) -> Result<(), MasterError> {
        let a = self
            .agents
            .get(agent)
            .ok_or_else(|| MasterError::UnknownAgent(agent.to_string()))?;
        if !a.executors.contains_key(&(fid.clone(), eid.clone())) {
            return Err(MasterError::UnknownExecutor {
                agent: agent.to_string(),
                executor: eid.to_string(),
            });
        }
        if a.conn.is_none() {
            return Err(MasterError::AgentDisconnected(agent.to_string()));
        }
        Ok(())
    }

    /// A framework's bytes for one of its executors (best effort: the
    /// agent drops them if the executor is not subscribed).
    pub fn framework_message(
        &mut self,
        fid: &FrameworkId,
        agent: &AgentId,
        eid: &ExecutorId,
        data: Vec<u8>,
    ) -> Result<(), MasterError> {
        self.subscribed(fid)?;
        self.executor_target(fid, agent, eid)?;
        let msg = v1::master_message::Message::FrameworkMessage(v1::FrameworkMessage {
            framework_id: fid.to_string(),
            executor_id: eid.to_string(),
            data,
        });
        self.send_agent(agent, msg);
        Ok(())
    }

    /// A framework asks one of its executors to shut down; its resources
    /// are freed when the agent reports it exited.
    pub fn shutdown_executor(
        &mut self,
        fid: &FrameworkId,
        agent: &AgentId,
        eid: &ExecutorId,
    ) -> Result<(), MasterError> {
        self.subscribed(fid)?;
        self.executor_target(fid, agent, eid)?;
        let msg = v1::master_message::Message::ShutdownExecutor(v1::ShutdownExecutor {
            framework_id: fid.to_string(),
            executor_id: eid.to_string(),
        });
        self.send_agent(agent, msg);
        Ok(())
    }

    /// The agent re-registered listing `reported`: executors new to the
    /// books are held (their framework known), those it no longer runs
    /// freed and their frameworks told.
    pub(super) fn reconcile_agent_executors(&mut self, agent: &AgentId, reported: Vec<ReportedExecutor>) {
        let mut seen = std::collections::HashSet::new();
        for r in reported {
            let key = (r.framework_id.clone(), r.executor_id.clone());
            seen.insert(key.clone());
            let known = self.agents.get(agent).is_some_and(|a| a.executors.contains_key(&key));
            let Some(fw) = self.frameworks.get(&r.framework_id) else {
                // Removed while the agent was away: nothing else would
                // stop its executor.
                let msg = v1::master_message::Message::ShutdownFramework(v1::ShutdownFramework {
                    framework_id: r.framework_id.to_string(),
                });
                self.send_agent(agent, msg);
                continue;
            };
            if known {
                continue;
            }
            let role = Role::parse(&r.role)
                .ok()
                .or_else(|| fw.info.roles.first().and_then(|x| Role::parse(x).ok()))
                .unwrap_or_else(Role::star);
            self.alloc.track_used(&r.framework_id, &role, agent, &r.resources);
            self.hold_executor(&r.framework_id, agent, &role, r.executor_id, r.info, r.resources);
        }
        let gone: Vec<(FrameworkId, ExecutorId)> = self
            .agents
            .get(agent)
            .map(|a| a.executors.keys().filter(|k| !seen.contains(*k)).cloned().collect())
            .unwrap_or_default();
        for (fid, eid) in gone {
            self.release_executor(agent, &fid, &eid, Some(None));
        }
    }

    /// Frees every executor of a lost agent (its frameworks get the
    /// agent's own `Failure`); a re-registration holds them again. Returns
    /// the frameworks they were of.
    pub(super) fn release_agent_executors(&mut self, agent: &AgentId) -> Vec<FrameworkId> {
        let all: Vec<(FrameworkId, ExecutorId)> = self
            .agents
            .get(agent)
            .map(|a| a.executors.keys().cloned().collect())
            .unwrap_or_default();
        for (fid, eid) in &all {
            self.release_executor(agent, fid, eid, None);
        }
        all.into_iter().map(|(f, _)| f).collect()
    }

    /// Forgets the executors of a removed framework (its agents are told
    /// to shut it down); returns the agents they ran on.
    pub(super) fn drop_framework_executors(&mut self, fid: &FrameworkId) -> Vec<AgentId> {
        let mut on = Vec::new();
        for (id, a) in self.agents.iter_mut() {
            let mine: Vec<_> = a.executors.keys().filter(|(f, _)| f == fid).cloned().collect();
            for key in mine {
                if let Some(e) = a.executors.remove(&key) {
                    a.used = a.used.saturating_sub(&e.resources.total());
                    on.push(id.clone());
                }
            }
        }
        on
    }
}
