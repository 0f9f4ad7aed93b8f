//! The dashboard's first screen and its utilisation charts' samples.

use std::collections::BTreeMap;

use mezzo_proto::resources::Resources;
use serde::{Deserialize, Serialize};

use super::{StateName, task_counts};
use crate::core::{AgentStatus, Master};
use crate::history::Sample;

/// The role a framework's allocation is counted under.
fn role_of(roles: &[String]) -> String {
    roles.first().cloned().unwrap_or_else(|| "*".into())
}

/// The resources of active agents, split into buckets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResourceBuckets {
    pub total: Resources,
    pub allocated: Resources,
    pub offered: Resources,
    pub idle: Resources,
}

/// The dashboard's first screen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overview {
    pub master_id: String,
    pub uptime_secs: f64,
    pub resources: ResourceBuckets,
    pub per_role: BTreeMap<String, Resources>,
    pub agents_by_status: BTreeMap<String, u64>,
    pub agents: usize,
    pub frameworks: usize,
    pub frameworks_connected: usize,
    pub tasks_by_state: BTreeMap<StateName, u64>,
    pub active_tasks: usize,
    pub outstanding_offers: usize,
    pub unacknowledged_updates: usize,
}

/// How much of the active agents' resources is allocated, offered and
/// idle.
pub fn buckets(m: &Master) -> ResourceBuckets {
    let mut u = ResourceBuckets::default();
    for a in m.agents.values().filter(|a| a.status == AgentStatus::Active) {
        u.total.add(&a.total.total());
        u.allocated.add(&a.used);
        u.offered.add(&a.offered);
    }
    let mut busy = u.allocated.clone();
    busy.add(&u.offered);
    u.idle = u.total.saturating_sub(&busy);
    u
}

pub fn overview(m: &Master) -> Overview {
    let mut agents_by_status = BTreeMap::new();
    for a in m.agents.values() {
        *agents_by_status.entry(a.status.name().to_owned()).or_insert(0) += 1;
    }
    agents_by_status.insert("draining".into(), m.registry.draining.len() as u64);
    agents_by_status.insert("gone".into(), m.registry.gone.len() as u64);
    let mut per_role: BTreeMap<String, Resources> = BTreeMap::new();
    for f in m.frameworks.values() {
        per_role.entry(role_of(&f.info.roles)).or_default().add(&f.allocated);
    }
    let active_tasks = m.frameworks.values().map(|f| f.tasks.len()).sum();
    Overview {
        master_id: m.cfg.master_id.clone(),
        uptime_secs: m.started.elapsed().as_secs_f64(),
        resources: buckets(m),
        per_role,
        agents_by_status,
        agents: m.agents.len(),
        frameworks: m.frameworks.len(),
        frameworks_connected: m.frameworks.values().filter(|f| f.conn.is_some()).count(),
        tasks_by_state: task_counts(m),
        active_tasks,
        outstanding_offers: m.offers.len(),
        unacknowledged_updates: m.observed.unacked(),
    }
}

/// One reading for the utilisation charts: the resource buckets and the
/// number of active tasks.
pub fn utilisation(m: &Master) -> (ResourceBuckets, usize) {
    let active = m.frameworks.values().map(|f| f.tasks.len()).sum();
    (buckets(m), active)
}

/// The utilisation charts' last hour, oldest first (kept in the registry,
/// so a new leader's charts go on).
pub fn samples(m: &Master) -> Vec<Sample> {
    m.samples()
}
