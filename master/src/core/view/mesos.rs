//! What Mesos' operator reads need beyond `/state`: each framework's own
//! `FrameworkInfo` (user, principal), its tasks with their full resources
//! and status history, and when this master's core started. Written to
//! Mesos' JSON by `crate::mesos::operator`; not serialized itself.
//!
//! Taken on the owner task as a snapshot, as `/state` is: a pointer per
//! task (the core's tasks and their histories are copied on write), each
//! turned into a [`MesosTask`] only when the answer is written, off the
//! owner task.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use mezzo_proto::reservation::ReservedResources;
use mezzo_proto::resources::Resources;
use mezzo_proto::v1;

use super::state::{OfferView, offer_view};
use super::{AllocationView, StateName};
use crate::core::observe::{StatusEntry, statuses_of};
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
    /// Custom executors running, by agent.
    pub executors: Vec<MesosExecutor>,
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

/// A custom executor an agent runs.
#[derive(Debug, Clone)]
pub struct MesosExecutor {
    pub agent_id: String,
    pub framework_id: String,
    pub info: v1::ExecutorInfo,
    /// The role its resources are allocated to.
    pub role: String,
    pub resources: ReservedResources,
}

#[derive(Debug, Clone)]
pub struct MesosFramework {
    pub id: String,
    pub info: v1::FrameworkInfo,
    pub connected: bool,
    pub registered_at: f64,
    pub allocated: Resources,
    pub offered: Resources,
    pub tasks: TaskRows,
    pub completed_tasks: TaskRows,
    pub offers: Vec<OfferView>,
}

impl MesosState {
    /// Every framework's running tasks in the order of their ids (done off
    /// the owner task).
    pub fn sort_tasks(&mut self) {
        for f in &mut self.frameworks {
            f.tasks.sort();
        }
    }
}

/// A framework's tasks in a snapshot: pointers into the core's, or (in
/// tests) views built already.
#[derive(Debug, Clone, Default)]
pub struct TaskRows(Rows);

/// A task's status history as the core shares it.
type History = Arc<VecDeque<StatusEntry>>;

#[derive(Debug, Clone)]
enum Rows {
    Snapshot(Vec<(Arc<Task>, Option<History>)>),
    Built(Vec<MesosTask>),
}

impl Default for Rows {
    fn default() -> Rows {
        Rows::Built(Vec::new())
    }
}

impl From<Vec<MesosTask>> for TaskRows {
    fn from(v: Vec<MesosTask>) -> TaskRows {
        TaskRows(Rows::Built(v))
    }
}

impl TaskRows {
    /// Each task as Mesos' reads show it, in the order taken.
    pub fn iter(&self) -> impl Iterator<Item = Cow<'_, MesosTask>> {
        let (snap, built) = match &self.0 {
            Rows::Snapshot(v) => (v.as_slice(), &[][..]),
            Rows::Built(v) => (&[][..], v.as_slice()),
        };
        let snap = snap.iter().map(|(t, h)| Cow::Owned(task(t, h.as_ref())));
        snap.chain(built.iter().map(Cow::Borrowed))
    }

    /// In the order of their ids (done off the owner task).
    pub fn sort(&mut self) {
        match &mut self.0 {
            Rows::Snapshot(v) => v.sort_unstable_by(|a, b| a.0.id.cmp(&b.0.id)),
            Rows::Built(v) => v.sort_unstable_by(|a, b| a.id.cmp(&b.id)),
        }
    }

    pub fn is_empty(&self) -> bool {
        match &self.0 {
            Rows::Snapshot(v) => v.is_empty(),
            Rows::Built(v) => v.is_empty(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MesosTask {
    pub id: String,
    pub name: String,
    pub framework_id: String,
    pub agent_id: String,
    /// Its custom executor's id; empty for a command task.
    pub executor_id: String,
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

fn task(t: &Task, history: Option<&History>) -> MesosTask {
    MesosTask {
        id: t.id.to_string(),
        name: t.info.name.clone(),
        framework_id: t.framework_id.to_string(),
        agent_id: t.agent_id.to_string(),
        executor_id: (t.info.executor.as_ref()).map_or_else(String::new, |e| e.executor_id.clone()),
        state: std::borrow::Cow::Borrowed(t.state.name()),
        role: t.role.to_string(),
        resources: t.resources.clone(),
        statuses: statuses_of(t, history),
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

/// `tasks` with their histories, as pointers.
fn rows<'a>(m: &Master, tasks: impl Iterator<Item = &'a Arc<Task>>) -> TaskRows {
    TaskRows(Rows::Snapshot(
        tasks.map(|t| (t.clone(), m.history_of(t).cloned())).collect(),
    ))
}

fn framework(m: &Master, f: &crate::core::Framework) -> MesosFramework {
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
        tasks: rows(m, f.tasks.values()),
        completed_tasks: rows(m, f.completed.iter()),
        offers,
    }
}

/// The leader for Mesos' operator API: a snapshot (a pointer per task),
/// to be written out off the owner task.
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
        executors: (m.agents.values())
            .flat_map(|a| {
                a.executors.iter().map(|((fid, _), e)| MesosExecutor {
                    agent_id: a.id.to_string(),
                    framework_id: fid.to_string(),
                    info: e.info.clone(),
                    role: e.role.to_string(),
                    resources: e.resources.clone(),
                })
            })
            .collect(),
    }
}

/// One task (active or recently completed), for an event about it.
pub fn mesos_task(m: &Master, framework: &str, task_id: &str) -> Option<MesosTask> {
    let fid = FrameworkId::parse(framework).ok()?;
    let tid = TaskId::parse(task_id).ok()?;
    super::find_task(m, &fid, &tid).ok().map(|t| task(t, m.history_of(t)))
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
