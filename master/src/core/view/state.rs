//! `/state`: the whole leader in one snapshot (every agent, framework,
//! active and completed task, and offer).

use std::borrow::Cow;

use mezzo_proto::ids::{AgentId, FrameworkId};
use mezzo_proto::reservation::ReservedResources;
use mezzo_proto::resources::Resources;
use serde::{Deserialize, Serialize};

use super::StateName;
use super::roles::AllocationView;
use crate::core::usage::{AgentUsage, Usage};
use crate::core::{AgentStatus, Counters, Master, Task};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateView {
    pub master_id: String,
    pub leader: bool,
    pub uptime_secs: f64,
    pub registry_ops_applied: u64,
    pub totals: Totals,
    pub agents: Vec<AgentView>,
    pub frameworks: Vec<FrameworkView>,
    pub tasks: Vec<TaskView>,
    pub completed_tasks: Vec<TaskView>,
    pub offers: Vec<OfferView>,
    pub counters: Counters,
    /// Roles, weights, quotas and reservations (see [`super::roles()`]).
    pub allocation: AllocationView,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Totals {
    pub total: Resources,
    pub used: Resources,
    pub offered: Resources,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentView {
    pub id: String,
    pub hostname: String,
    pub http_address: String,
    pub status: AgentStatus,
    pub connected: bool,
    pub total: Resources,
    /// `total` split into unreserved and reserved per role.
    pub resources_by_role: ReservedResources,
    pub used: Resources,
    pub offered: Resources,
    pub attributes: Vec<(String, String)>,
    pub active_tasks: usize,
    /// Summed container usage from the agent's latest report.
    pub usage: AgentUsage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameworkView {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub connected: bool,
    pub suppressed: bool,
    pub failover_timeout_secs: f64,
    pub allocated: Resources,
    pub offered: Resources,
    pub active_tasks: usize,
    pub outstanding_offers: usize,
    pub registered_at: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub name: String,
    pub framework_id: String,
    /// Its framework's name and its agent's hostname, shown beside the
    /// ids (UUIDs mean nothing to people); empty once forgotten.
    #[serde(default)]
    pub framework_name: String,
    pub agent_id: String,
    #[serde(default)]
    pub agent_hostname: String,
    pub state: StateName,
    pub reason: String,
    pub message: String,
    pub exit_code: Option<i32>,
    pub role: String,
    pub resources: Resources,
    pub launched_at: f64,
    /// Unix seconds when it ended (finished tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<f64>,
    pub awaiting_ack: bool,
    /// Latest container usage its agent reported (live isolated tasks).
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfferView {
    pub id: String,
    pub framework_id: String,
    /// As in [`TaskView`]: names beside the ids.
    #[serde(default)]
    pub framework_name: String,
    pub agent_id: String,
    #[serde(default)]
    pub agent_hostname: String,
    pub role: String,
    pub resources: Resources,
    /// `resources` split into unreserved and reserved per role.
    pub resources_by_role: ReservedResources,
}

pub(super) fn task_view(m: &Master, t: &Task, usage: Option<Usage>) -> TaskView {
    let reason = t
        .last_status
        .as_ref()
        .and_then(|s| mezzo_proto::v1::StatusReason::try_from(s.reason).ok())
        .map(|r| r.as_str_name().to_owned())
        .unwrap_or_default();
    TaskView {
        id: t.id.to_string(),
        name: t.info.name.clone(),
        framework_id: t.framework_id.to_string(),
        framework_name: framework_name(m, &t.framework_id),
        agent_id: t.agent_id.to_string(),
        agent_hostname: agent_hostname(m, &t.agent_id),
        state: Cow::Borrowed(t.state.name()),
        reason,
        message: t.last_status.as_ref().map(|s| s.message.clone()).unwrap_or_default(),
        exit_code: t.last_status.as_ref().and_then(|s| s.exit_code),
        role: t.role.to_string(),
        resources: t.resources.total(),
        launched_at: t.launched_at,
        ended_at: t.ended_at,
        awaiting_ack: t.unacked.is_some(),
        usage,
    }
}

/// A framework's name, registered or remembered as removed.
fn framework_name(m: &Master, id: &FrameworkId) -> String {
    match m.frameworks.get(id) {
        Some(f) => f.info.name.clone(),
        None => m
            .registry
            .history
            .removed
            .iter()
            .find(|f| &f.id == id)
            .map(|f| f.name.clone())
            .unwrap_or_default(),
    }
}

/// An agent's hostname, connected or only in the registry.
fn agent_hostname(m: &Master, id: &AgentId) -> String {
    match m.agents.get(id) {
        Some(a) => a.hostname.clone(),
        None => m
            .registry
            .agents
            .get(id)
            .map(|a| a.hostname.clone())
            .unwrap_or_default(),
    }
}

impl Master {
    pub fn view(&self, leader: bool) -> StateView {
        let mut totals = Totals::default();
        let agents = self
            .agents
            .values()
            .map(|a| {
                if a.status == AgentStatus::Active {
                    totals.total.add(&a.total.total());
                    totals.used.add(&a.used);
                    totals.offered.add(&a.offered);
                }
                AgentView {
                    id: a.id.to_string(),
                    hostname: a.hostname.clone(),
                    http_address: a.http_address.clone(),
                    status: a.status,
                    connected: a.conn.is_some(),
                    total: a.total.total(),
                    resources_by_role: a.total.clone(),
                    used: a.used.clone(),
                    offered: a.offered.clone(),
                    attributes: a.attributes.clone(),
                    active_tasks: a.tasks.len(),
                    usage: a.usage.total(std::time::Instant::now()),
                }
            })
            .collect();
        let frameworks = self
            .frameworks
            .values()
            .map(|f| FrameworkView {
                id: f.id.to_string(),
                name: f.info.name.clone(),
                roles: f.info.roles.clone(),
                connected: f.conn.is_some(),
                suppressed: f.suppressed,
                failover_timeout_secs: f.info.failover_timeout_secs,
                allocated: f.allocated.clone(),
                offered: f.offered.clone(),
                active_tasks: f.tasks.values().filter(|t| !t.state.is_terminal()).count(),
                outstanding_offers: f.offers.len(),
                registered_at: f.registered_at,
            })
            .collect();
        let mut tasks: Vec<TaskView> = self
            .frameworks
            .values()
            .flat_map(|f| {
                f.tasks
                    .values()
                    .map(|t| task_view(self, t, self.task_usage(&t.agent_id, &t.framework_id, &t.id)))
            })
            .collect();
        tasks.sort_by(|a, b| a.launched_at.total_cmp(&b.launched_at));
        let completed_tasks = self
            .frameworks
            .values()
            .flat_map(|f| f.completed.iter().map(|t| task_view(self, t, None)))
            .collect();
        let offers = self
            .offers
            .values()
            .map(|o| OfferView {
                id: o.id.to_string(),
                framework_id: o.framework_id.to_string(),
                framework_name: framework_name(self, &o.framework_id),
                agent_id: o.agent_id.to_string(),
                agent_hostname: agent_hostname(self, &o.agent_id),
                role: o.role.to_string(),
                resources: o.resources.total(),
                resources_by_role: o.resources.clone(),
            })
            .collect();
        StateView {
            master_id: self.cfg.master_id.clone(),
            leader,
            uptime_secs: self.started.elapsed().as_secs_f64(),
            registry_ops_applied: self.registry.applied,
            totals,
            agents,
            frameworks,
            tasks,
            completed_tasks,
            offers,
            counters: self.counters.clone(),
            allocation: super::roles(self),
        }
    }
}
