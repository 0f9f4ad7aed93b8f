//! Read models: what the world outside the core may know about it.
//!
//! Each takes `&Master` and returns an owned, serializable view, so the
//! core's tables stay private and a table can change in one place. The
//! same structs are what the HTTP API writes and what the CLI reads back
//! (they derive both `Serialize` and `Deserialize`).
//!
//! | Read model | Serves |
//! |---|---|
//! | [`state`] ([`Master::view`]) | `/state` |
//! | [`roles`](mod@roles) | `/api/v1/roles` (also at `/roles`) |
//! | [`pages`] | the paged `/api/v1/{tasks,agents,frameworks}`, one task in full, a task's agent (files proxy) |
//! | [`why`] | `/api/v1/why/...` |
//! | [`overview`](mod@overview) | `/api/v1/overview` with its utilisation samples |
//! | [`metrics`](mod@metrics) | `/metrics` |
//! | [`mesos`](mod@mesos) | Mesos' operator API (`/master/state`, `POST /api/v1`) |

pub mod mesos;
pub mod metrics;
pub mod overview;
pub mod pages;
pub mod roles;
pub mod state;
mod state_json;
pub mod why;

use std::borrow::Cow;

use mezzo_proto::ids::{FrameworkId, TaskId};
use serde::{Deserialize, Serialize};

pub use mesos::{
    MesosAgent, MesosExecutor, MesosFramework, MesosState, MesosTask, mesos_agent, mesos_framework,
    mesos_removed_framework, mesos_state, mesos_task,
};
pub use metrics::{MetricsView, metrics};
pub use overview::{Overview, ResourceBuckets, overview, samples, utilisation};
pub use pages::{
    AgentRow, FrameworkRow, TaskAgent, TaskDetail, TaskFilter, TaskQuery, agents, frameworks, task, task_agent, tasks,
};
pub use roles::{AllocationView, roles};
pub use state::{AgentView, FrameworkView, OfferView, StateView, TaskView, Totals};
pub use state_json::{JsonSink, Split};
pub use why::{ImagePull, WhyFramework, WhyTask, why_framework, why_task};

pub use super::StateName;
use super::{Master, Task};
use crate::error::MasterError;

/// One page of results with the number that matched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub items: Vec<T>,
}

/// A task of a framework, active or among its recently completed ones.
fn find_task<'m>(m: &'m Master, fid: &FrameworkId, tid: &TaskId) -> Result<&'m Task, MasterError> {
    let fw = m
        .frameworks
        .get(fid)
        .ok_or_else(|| MasterError::UnknownFramework(fid.to_string()))?;
    fw.tasks
        .get(tid)
        .or_else(|| fw.completed_by_id.get(tid))
        .map(|t| &**t)
        .ok_or_else(|| MasterError::UnknownTask(tid.to_string()))
}

/// Active and retained tasks by state.
pub fn task_counts(m: &Master) -> std::collections::BTreeMap<StateName, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for ((state, _), n) in m.task_index.outcomes() {
        *counts.entry(Cow::Borrowed(state.name())).or_insert(0) += n;
    }
    counts
}
