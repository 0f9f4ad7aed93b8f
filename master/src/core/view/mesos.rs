//! What Mesos' operator reads need beyond `/state`: each framework's own
//! `FrameworkInfo` (user, principal), its tasks with their full resources
//! and status history, and when this master's core started. Written to
//! Mesos' JSON by `crate::mesos::operator`; not serialized itself.

use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use mezzo_proto::reservation::ReservedResources;
use mezzo_proto::resources::Resources;
use mezzo_proto::v1;

use super::state::{OfferView, offer_view};
use super::{AllocationView, StateName};
use crate::core::observe::StatusEntry;
use crate::core::{AgentStatus, Master, Task};
use crate::history::RemovedFramework;

/// The leader as Mesos' operator API shows it.
#[derive(Debug, Clone)]
pub struct MesosState {
    pub master_id: String,
    /// Unix seconds when this master's core started (on the leader: when
    /// it was elected, as the core is rebuilt then).
    pub start_time: f64,
    pub agents: Vec<MesosAgent>,
    pub frameworks: Vec<MesosFramework>,
    /// Removed frameworks the history remembers.
    pub completed_frameworks: Vec<RemovedFramework>,
    pub allocation: AllocationView,
}

#[derive(Debug, Clone)]
pub struct MesosAgent {
    pub id: String,
    pub hostname: String,
    pub http_address: String,
    pub status: AgentStatus,
    pub total: ReservedResources,
    pub used: Resources,
    pub offered: Resources,
    pub attributes: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct MesosFramework {
    pub id: String,
    pub info: v1::FrameworkInfo,
    pub connected: bool,
    pub registered_at: f64,
    pub allocated: Resources,
    pub offered: Resources,
    pub tasks: Vec<MesosTask>,
    pub completed_tasks: Vec<MesosTask>,
    pub offers: Vec<OfferView>,
}

#[derive(Debug, Clone)]
pub struct MesosTask {
    pub id: String,
    pub name: String,
    pub framework_id: String,
    pub agent_id: String,
    pub state: StateName,
    /// The role its resources are allocated to.
    pub role: String,
    pub resources: ReservedResources,
    /// Oldest first.
    pub statuses: Vec<StatusEntry>,
    /// The newest update, as the core keeps it.
    pub last_status: Option<v1::TaskStatus>,
    pub labels: Vec<(String, String)>,
}

fn task(m: &Master, t: &Task) -> MesosTask {
    MesosTask {
        id: t.id.to_string(),
        name: t.info.name.clone(),
        framework_id: t.framework_id.to_string(),
        agent_id: t.agent_id.to_string(),
        state: std::borrow::Cow::Borrowed(t.state.name()),
        role: t.role.to_string(),
        resources: t.resources.clone(),
        statuses: m.status_history(t),
        last_status: t.last_status.clone(),
        labels: t
            .info
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect(),
    }
}

fn agent(a: &crate::core::Agent) -> MesosAgent {
    MesosAgent {
        id: a.id.to_string(),
        hostname: a.hostname.clone(),
        http_address: a.http_address.clone(),
        status: a.status,
        total: a.total.clone(),
        used: a.used.clone(),
        offered: a.offered.clone(),
        attributes: a.attributes.clone(),
    }
}

fn framework(m: &Master, f: &crate::core::Framework) -> MesosFramework {
    let mut tasks: Vec<MesosTask> = f.tasks.values().map(|t| task(m, t)).collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    let mut offers: Vec<OfferView> = (f.offers.iter())
        .filter_map(|id| m.offers.get(id))
        .map(|o| offer_view(m, o))
        .collect();
    offers.sort_by(|a, b| a.id.cmp(&b.id));
    MesosFramework {
        id: f.id.to_string(),
        info: f.info.clone(),
        connected: f.conn.is_some(),
        registered_at: f.registered_at,
        allocated: f.allocated.clone(),
        offered: f.offered.clone(),
        tasks,
        completed_tasks: f.completed.iter().map(|t| task(m, t)).collect(),
        offers,
    }
}

/// The leader for Mesos' operator API, built on the owner task: a copy of
/// every task, so meant for operators' reads, not for hot paths.
pub fn mesos_state(m: &Master) -> MesosState {
    MesosState {
        master_id: m.cfg.master_id.clone(),
        start_time: mezzo_proto::clock::unix_now() - m.started.elapsed().as_secs_f64(),
        agents: m.agents.values().map(agent).collect(),
        frameworks: m.frameworks.values().map(|f| framework(m, f)).collect(),
        completed_frameworks: (m.registry.history.removed.iter())
            .filter(|f| !m.frameworks.contains_key(&f.id))
            .cloned()
            .collect(),
        allocation: super::roles(m),
    }
}

/// One task (active or recently completed), for an event about it.
pub fn mesos_task(m: &Master, framework: &str, task_id: &str) -> Option<MesosTask> {
    let fid = FrameworkId::parse(framework).ok()?;
    let tid = TaskId::parse(task_id).ok()?;
    super::find_task(m, &fid, &tid).ok().map(|t| task(m, t))
}

/// One registered agent, for an event about it.
pub fn mesos_agent(m: &Master, id: &str) -> Option<MesosAgent> {
    m.agents.get(&AgentId::parse(id).ok()?).map(agent)
}

/// One registered framework, for an event about it.
pub fn mesos_framework(m: &Master, id: &str) -> Option<MesosFramework> {
    m.frameworks.get(&FrameworkId::parse(id).ok()?).map(|f| framework(m, f))
}

/// A removed framework the history remembers.
pub fn mesos_removed_framework(m: &Master, id: &str) -> Option<RemovedFramework> {
    m.registry.history.removed.iter().find(|f| f.id.as_str() == id).cloned()
}
