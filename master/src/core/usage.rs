//! Container usage reported by agents (cpu time, memory, pids).
//!
//! Kept in memory only, never in the Raft log: it is a measurement that the
//! next report replaces, and a new leader learns it again within a
//! heartbeat. Each agent's report is complete, so it replaces that agent's
//! previous figures; entries for tasks the master does not place on that
//! agent (or that have ended) are dropped.

use foldhash::HashMap;
use std::time::Instant;

use mezzo_proto::ids::{FrameworkId, TaskId};
use serde::{Deserialize, Serialize};

use super::{ConnId, Master};

/// One container's usage, validated by the API layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    pub usage: Usage,
}

/// What one container (or, summed, one agent) uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_time_secs: f64,
    pub memory_rss_bytes: u64,
    pub memory_cache_bytes: u64,
    pub pids: u64,
}

/// An agent's figures summed over its reporting containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentUsage {
    #[serde(flatten)]
    pub total: Usage,
    /// Containers that reported.
    pub containers: u64,
    /// Seconds since the agent's latest report (`None`: never reported).
    pub age_secs: Option<f64>,
}

/// The latest report of one agent.
#[derive(Debug, Clone, Default)]
pub(crate) struct AgentUsageTable {
    pub tasks: HashMap<(FrameworkId, TaskId), Usage>,
    pub at: Option<Instant>,
}

impl AgentUsageTable {
    pub(crate) fn total(&self, now: Instant) -> AgentUsage {
        let mut total = Usage::default();
        for u in self.tasks.values() {
            total.cpu_time_secs += u.cpu_time_secs;
            total.memory_rss_bytes = total.memory_rss_bytes.saturating_add(u.memory_rss_bytes);
            total.memory_cache_bytes = total.memory_cache_bytes.saturating_add(u.memory_cache_bytes);
            total.pids = total.pids.saturating_add(u.pids);
        }
        AgentUsage {
            total,
            containers: self.tasks.len() as u64,
            age_secs: self.at.map(|at| now.saturating_duration_since(at).as_secs_f64()),
        }
    }
}

impl Master {
    /// An agent's periodic usage report: replaces what it reported before.
    pub fn agent_usage(&mut self, conn: ConnId, report: Vec<ContainerUsage>, now: Instant) {
        let Some(id) = self.agent_seen(conn, now) else { return };
        let live: HashMap<(FrameworkId, TaskId), Usage> = report
            .into_iter()
            .map(|c| ((c.framework_id, c.task_id), c.usage))
            .filter(|(key, _)| self.task_runs_on(key, &id))
            .collect();
        if let Some(agent) = self.agents.get_mut(&id) {
            agent.usage = AgentUsageTable {
                tasks: live,
                at: Some(now),
            };
        }
    }

    /// Whether the master places this live task on `agent`.
    fn task_runs_on(&self, (fid, tid): &(FrameworkId, TaskId), agent: &mezzo_proto::ids::AgentId) -> bool {
        self.frameworks
            .get(fid)
            .and_then(|f| f.tasks.get(tid))
            .is_some_and(|t| &t.agent_id == agent && !t.state.is_terminal())
    }

    /// The latest usage of a live task, if its agent reported one.
    pub(crate) fn task_usage(
        &self,
        agent: &mezzo_proto::ids::AgentId,
        fid: &FrameworkId,
        tid: &TaskId,
    ) -> Option<Usage> {
        let a = self.agents.get(agent)?;
        a.usage.tasks.get(&(fid.clone(), tid.clone())).copied()
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
