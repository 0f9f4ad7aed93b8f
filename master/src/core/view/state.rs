//! `/state`: the whole leader in one snapshot (every agent, framework,
//! active and completed task, and offer).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use mezzo_proto::reservation::ReservedResources;
use mezzo_proto::resources::Resources;
use serde::{Deserialize, Serialize};

use super::StateName;
use super::roles::AllocationView;
use crate::core::usage::{AgentUsage, Usage};
use crate::core::volumes::VolumeView;
use crate::core::{AgentStatus, Counters, Master, Task};

/// `/state`. `T`, `A` and `F` are how the task lists, the agents and the
/// frameworks are held: owned when read back (the default), borrowed from
/// a [`StateSnapshot`] when written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateView<T = Vec<TaskView>, A = Vec<AgentView>, F = Vec<FrameworkView>> {
    pub master_id: String,
    pub leader: bool,
    pub uptime_secs: f64,
    pub registry_ops_applied: u64,
    pub totals: Totals,
    pub agents: A,
    pub frameworks: F,
    pub tasks: T,
    pub completed_tasks: T,
    pub offers: Vec<OfferView>,
    pub counters: Counters,
    /// Roles, weights, quotas and reservations (see [`super::roles()`]).
    pub allocation: AllocationView,
    /// Persistent volumes, with the task using each.
    #[serde(default)]
    pub volumes: Vec<VolumeView>,
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
    /// Suppressed in every one of its roles.
    pub suppressed: bool,
    /// The roles it suppressed offers in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressed_roles: Vec<String>,
    pub failover_timeout_secs: f64,
    pub allocated: Resources,
    pub offered: Resources,
    pub active_tasks: usize,
    pub outstanding_offers: usize,
    pub registered_at: f64,
}

/// A task in `/state` and the operator API. `S` is how its strings are
/// held: owned when read back (the default), borrowed from the core's
/// task while `/state` is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView<S = String> {
    pub id: S,
    pub name: S,
    pub framework_id: S,
    /// Its framework's name and its agent's hostname, shown beside the
    /// ids (UUIDs mean nothing to people); empty once forgotten.
    #[serde(default)]
    pub framework_name: S,
    pub agent_id: S,
    #[serde(default)]
    pub agent_hostname: S,
    pub state: StateName,
    pub reason: S,
    pub message: S,
    pub exit_code: Option<i32>,
    /// The result of its health check, once decided (`TaskStatus.healthy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    pub role: S,
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
    /// Persistent volumes listed in it.
    #[serde(default)]
    pub volumes: Vec<String>,
}

pub(super) fn task_view(m: &Master, t: &Task, usage: Option<Usage>) -> TaskView {
    let framework = framework_name(m, &t.framework_id);
    let host = agent_hostname(m, &t.agent_id);
    borrowed_view(t, &framework, &host, usage).owned()
}

/// A task's view borrowing its strings: nothing allocated but its
/// resources' total.
pub(super) fn borrowed_view<'a>(
    t: &'a Task,
    framework_name: &'a str,
    agent_hostname: &'a str,
    usage: Option<Usage>,
) -> TaskView<&'a str> {
    let reason = t
        .last_status
        .as_ref()
        .and_then(|s| mezzo_proto::v1::StatusReason::try_from(s.reason).ok())
        .map(|r| r.as_str_name())
        .unwrap_or_default();
    TaskView {
        id: t.id.as_str(),
        name: &t.info.name,
        framework_id: t.framework_id.as_str(),
        framework_name,
        agent_id: t.agent_id.as_str(),
        agent_hostname,
        state: Cow::Borrowed(t.state.name()),
        reason,
        message: t.last_status.as_ref().map(|s| s.message.as_str()).unwrap_or_default(),
        exit_code: t.last_status.as_ref().and_then(|s| s.exit_code),
        healthy: t.healthy,
        role: t.role.as_str(),
        resources: t.resources.total(),
        launched_at: t.launched_at,
        ended_at: t.ended_at,
        awaiting_ack: t.unacked.is_some(),
        usage,
    }
}

impl TaskView<&str> {
    fn owned(self) -> TaskView {
        TaskView {
            id: self.id.to_owned(),
            name: self.name.to_owned(),
            framework_id: self.framework_id.to_owned(),
            framework_name: self.framework_name.to_owned(),
            agent_id: self.agent_id.to_owned(),
            agent_hostname: self.agent_hostname.to_owned(),
            state: self.state,
            reason: self.reason.to_owned(),
            message: self.message.to_owned(),
            exit_code: self.exit_code,
            healthy: self.healthy,
            role: self.role.to_owned(),
            resources: self.resources,
            launched_at: self.launched_at,
            ended_at: self.ended_at,
            awaiting_ack: self.awaiting_ack,
            usage: self.usage,
        }
    }
}

/// Sorts `tasks` by launch, then framework and id. The launch times are
/// read once into a list of their own: compared where they are, a sort
/// of 400,000 tasks spent its time waiting for memory.
fn by_launch(tasks: &mut Vec<Arc<Task>>) {
    let mut keyed: Vec<(f64, Arc<Task>)> = tasks.drain(..).map(|t| (t.launched_at, t)).collect();
    keyed.sort_by(|(la, a), (lb, b)| {
        (la.total_cmp(lb))
            .then_with(|| a.framework_id.cmp(&b.framework_id))
            .then_with(|| a.id.cmp(&b.id))
    });
    tasks.extend(keyed.into_iter().map(|(_, t)| t));
}

/// An outstanding offer as the views show it.
pub(super) fn offer_view(m: &Master, o: &crate::core::Offer) -> OfferView {
    OfferView {
        id: o.id.to_string(),
        framework_id: o.framework_id.to_string(),
        framework_name: framework_name(m, &o.framework_id),
        agent_id: o.agent_id.to_string(),
        agent_hostname: agent_hostname(m, &o.agent_id),
        role: o.role.to_string(),
        resources: o.resources.total(),
        resources_by_role: o.resources.clone(),
        volumes: o.volumes.iter().map(ToString::to_string).collect(),
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

/// `/state` as taken on the owner task, to be written elsewhere: the
/// tasks are shared with the core (`Arc`, copy-on-write there), so
/// taking it costs a pointer per task; what is per agent, framework and
/// offer is copied. Reads of a big cluster then do not stall scheduling.
#[cfg_attr(test, derive(Clone))]
pub struct StateSnapshot {
    head: StateView<()>,
    tasks: Vec<Arc<Task>>,
    completed: Vec<Arc<Task>>,
    /// The usage reported for tasks (isolated tasks only), by framework
    /// and task: looked up with borrowed ids.
    usage: UsageByTask,
    /// Names of removed frameworks (registered ones are in `head`).
    removed_names: HashMap<FrameworkId, String>,
    /// Hostnames of agents only the registry still knows.
    registry_hosts: HashMap<AgentId, String>,
}

impl std::fmt::Debug for StateSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateSnapshot({} tasks)", self.tasks.len())
    }
}

/// A task list of a snapshot, written as it is serialized.
pub(super) struct TaskList<'a> {
    pub(super) tasks: &'a [Arc<Task>],
    pub(super) names: &'a Names<'a>,
    usage: Option<&'a UsageByTask>,
}

/// Task usage by framework, then task.
type UsageByTask = HashMap<FrameworkId, HashMap<TaskId, Usage>>;

/// Framework names and agent hostnames by id, looked up once per task
/// (foldhash: SipHash was a tenth of writing `/state`).
pub(super) struct Names<'a> {
    pub(super) frameworks: HashMap<&'a str, &'a str, foldhash::fast::RandomState>,
    pub(super) hosts: HashMap<&'a str, &'a str, foldhash::fast::RandomState>,
}

impl<'a> TaskList<'a> {
    /// The usage its agent last reported for `t`.
    pub(super) fn usage_of(&self, t: &Task) -> Option<Usage> {
        (self.usage)
            .and_then(|u| u.get(&t.framework_id))
            .and_then(|u| u.get(&t.id))
            .copied()
    }

    fn views(&self) -> impl Iterator<Item = TaskView<&'a str>> + use<'a, '_> {
        self.tasks.iter().map(|t| {
            let usage = self.usage_of(t);
            let framework = self
                .names
                .frameworks
                .get(t.framework_id.as_str())
                .copied()
                .unwrap_or_default();
            let host = self.names.hosts.get(t.agent_id.as_str()).copied().unwrap_or_default();
            borrowed_view(t, framework, host, usage)
        })
    }
}

impl StateSnapshot {
    /// Runs `f` on the snapshot as it is written: the tasks sorted by
    /// launch (then framework and id), the completed ones as the core
    /// keeps them.
    pub(super) fn with_lists<R>(
        self,
        f: impl FnOnce(StateView<TaskList<'_>, &[AgentView], &[FrameworkView]>) -> R,
    ) -> R {
        let StateSnapshot {
            head,
            mut tasks,
            completed,
            usage,
            removed_names,
            registry_hosts,
        } = self;
        by_launch(&mut tasks);
        let hosts = (registry_hosts.iter().map(|(id, h)| (id.as_str(), h.as_str())))
            .chain(head.agents.iter().map(|a| (a.id.as_str(), a.hostname.as_str())))
            .collect();
        let frameworks = (removed_names.iter().map(|(id, name)| (id.as_str(), name.as_str())))
            .chain(head.frameworks.iter().map(|f| (f.id.as_str(), f.name.as_str())))
            .collect();
        let names = Names { frameworks, hosts };
        let usage = (!usage.is_empty()).then_some(&usage);
        f(StateView {
            master_id: head.master_id,
            leader: head.leader,
            uptime_secs: head.uptime_secs,
            registry_ops_applied: head.registry_ops_applied,
            totals: head.totals,
            agents: &head.agents,
            frameworks: &head.frameworks,
            tasks: TaskList {
                tasks: &tasks,
                names: &names,
                usage,
            },
            completed_tasks: TaskList {
                tasks: &completed,
                names: &names,
                usage: None,
            },
            offers: head.offers,
            counters: head.counters,
            allocation: head.allocation,
            volumes: head.volumes,
        })
    }

    /// `/state` as read back (`to_json` writes it as JSON).
    pub fn into_view(self) -> StateView {
        self.with_lists(|v| {
            let list = |l: TaskList<'_>| l.views().map(TaskView::owned).collect();
            StateView {
                master_id: v.master_id,
                leader: v.leader,
                uptime_secs: v.uptime_secs,
                registry_ops_applied: v.registry_ops_applied,
                totals: v.totals,
                agents: v.agents.to_vec(),
                frameworks: v.frameworks.to_vec(),
                tasks: list(v.tasks),
                completed_tasks: list(v.completed_tasks),
                offers: v.offers,
                volumes: v.volumes,
                counters: v.counters,
                allocation: v.allocation,
            }
        })
    }
}

impl Master {
    /// The whole leader, as `/state` shows it (built on the spot; the
    /// HTTP route writes a [`Master::state_snapshot`] off the owner task).
    pub fn view(&self, leader: bool) -> StateView {
        self.state_snapshot(leader).into_view()
    }

    /// What `/state` needs, taken cheaply on the owner task.
    pub fn state_snapshot(&self, leader: bool) -> StateSnapshot {
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
        // Every task once: its pointer taken and its state counted in one
        // pass (two passes over 400,000 tasks read each one's memory twice,
        // on the owner task).
        let (mut tasks, mut completed) = (Vec::new(), Vec::new());
        tasks.reserve_exact(self.frameworks.values().map(|f| f.tasks.len()).sum());
        completed.reserve_exact(self.frameworks.values().map(|f| f.completed.len()).sum());
        let mut active = Vec::with_capacity(self.frameworks.len());
        for f in self.frameworks.values() {
            let mut n = 0;
            tasks.extend(f.tasks.values().map(|t| {
                n += usize::from(!t.state.is_terminal());
                t.clone()
            }));
            active.push(n);
            completed.extend(f.completed.iter().cloned());
        }
        let frameworks = (self.frameworks.values())
            .zip(active)
            .map(|(f, active_tasks)| FrameworkView {
                id: f.id.to_string(),
                name: f.info.name.clone(),
                roles: f.info.roles.clone(),
                connected: f.conn.is_some(),
                suppressed: f.suppressed_everywhere(),
                suppressed_roles: f.suppressed_role_names(),
                failover_timeout_secs: f.info.failover_timeout_secs,
                allocated: f.allocated.clone(),
                offered: f.offered.clone(),
                active_tasks,
                outstanding_offers: f.offers.len(),
                registered_at: f.registered_at,
            })
            .collect();
        let mut usage = UsageByTask::new();
        for ((fid, tid), u) in self.agents.values().flat_map(|a| a.usage.tasks.iter()) {
            usage.entry(fid.clone()).or_default().insert(tid.clone(), *u);
        }
        let removed_names = (self.registry.history.removed.iter())
            .filter(|f| !self.frameworks.contains_key(&f.id))
            .map(|f| (f.id.clone(), f.name.clone()))
            .collect();
        let registry_hosts = self
            .registry
            .agents
            .iter()
            .filter(|(id, _)| !self.agents.contains_key(*id))
            .map(|(id, a)| (id.clone(), a.hostname.clone()))
            .collect();
        let offers = self.offers.values().map(|o| offer_view(self, o)).collect();
        StateSnapshot {
            head: StateView {
                master_id: self.cfg.master_id.clone(),
                leader,
                uptime_secs: self.started.elapsed().as_secs_f64(),
                registry_ops_applied: self.registry.applied,
                totals,
                agents,
                frameworks,
                tasks: (),
                completed_tasks: (),
                offers,
                counters: self.counters.clone(),
                allocation: super::roles(self),
                volumes: self.volume_views(),
            },
            tasks,
            completed,
            usage,
            removed_names,
            registry_hosts,
        }
    }
}
