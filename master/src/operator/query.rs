//! Read-only answers built on the owner task from the core: filtered and
//! paged tasks, agents, frameworks, roles, the overview and "why pending".
//! Each walks the tables once, so a page of 10,000 tasks costs one pass.

use std::collections::BTreeMap;

use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use mezzo_proto::resources::Resources;
use mezzo_proto::state::TaskState;
use serde::{Deserialize, Serialize};

use crate::allocator;
use crate::core::observe::{OfferStats, PendingReport, PendingTask, StatusEntry};
use crate::core::view::{TaskView, task_view};
use crate::core::{AgentStatus, Master, Task};
use crate::error::MasterError;

/// Largest page a query may ask for.
pub const MAX_LIMIT: usize = 1000;
pub const DEFAULT_LIMIT: usize = 100;

/// `?state=&framework=&agent=&q=&limit=&offset=` of `/api/v1/tasks`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TaskFilter {
    pub state: Option<String>,
    pub framework: Option<String>,
    pub agent: Option<String>,
    /// Substring of the task id or name.
    pub q: Option<String>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

/// A checked [`TaskFilter`].
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    states: Vec<TaskState>,
    framework: Option<FrameworkId>,
    agent: Option<AgentId>,
    q: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

/// Every state a filter may name.
const STATES: [TaskState; 13] = [
    TaskState::Staging,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Killing,
    TaskState::Finished,
    TaskState::Failed,
    TaskState::Killed,
    TaskState::Lost,
    TaskState::Unreachable,
    TaskState::Gone,
    TaskState::Error,
    TaskState::Dropped,
    TaskState::Unknown,
];

/// Parses `running`, `TASK_RUNNING`, or a comma-separated list; `active`
/// and `terminal` name groups.
pub fn parse_states(text: &str) -> Result<Vec<TaskState>, MasterError> {
    let mut out = Vec::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let upper = word.to_ascii_uppercase();
        match upper.as_str() {
            "ACTIVE" => out.extend(STATES.iter().filter(|s| !s.is_terminal())),
            "TERMINAL" => out.extend(STATES.iter().filter(|s| s.is_terminal())),
            _ => {
                let name = if upper.starts_with("TASK_") {
                    upper.clone()
                } else {
                    format!("TASK_{upper}")
                };
                let s = STATES.iter().find(|s| s.name() == name).ok_or_else(|| {
                    MasterError::Invalid(format!(
                        "state: unknown task state {word:?} (e.g. running, TASK_FAILED, active, terminal)"
                    ))
                })?;
                out.push(*s);
            }
        }
    }
    Ok(out)
}

/// Checks `limit` and `offset`.
pub fn page(limit: Option<usize>, offset: Option<usize>) -> Result<(usize, usize), MasterError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(MasterError::Invalid(format!(
            "limit: {limit} is out of range 1..={MAX_LIMIT}"
        )));
    }
    Ok((limit, offset.unwrap_or(0)))
}

impl TaskFilter {
    pub fn check(self) -> Result<TaskQuery, MasterError> {
        let (limit, offset) = page(self.limit, self.offset)?;
        let id_err = |field: &str, e: mezzo_proto::ids::IdError| MasterError::Invalid(format!("{field}: {e}"));
        Ok(TaskQuery {
            states: self.state.as_deref().map(parse_states).transpose()?.unwrap_or_default(),
            framework: self
                .framework
                .filter(|s| !s.is_empty())
                .map(|f| FrameworkId::parse(&f).map_err(|e| id_err("framework", e)))
                .transpose()?,
            agent: self
                .agent
                .filter(|s| !s.is_empty())
                .map(|a| AgentId::parse(&a).map_err(|e| id_err("agent", e)))
                .transpose()?,
            q: self.q.filter(|s| !s.is_empty()),
            limit,
            offset,
        })
    }

    fn matches(q: &TaskQuery, t: &Task) -> bool {
        (q.states.is_empty() || q.states.contains(&t.state))
            && q.agent.as_ref().is_none_or(|a| a == &t.agent_id)
            && q.q
                .as_deref()
                .is_none_or(|s| t.id.as_str().contains(s) || t.info.name.contains(s))
    }
}

/// One page of results with the number that matched.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub items: Vec<T>,
}

/// Tasks matching `q`, newest launches first.
pub fn tasks(m: &Master, q: &TaskQuery) -> Page<TaskView> {
    let mut hits: Vec<&Task> = m
        .frameworks
        .values()
        .filter(|f| q.framework.as_ref().is_none_or(|id| id == &f.id))
        .flat_map(|f| f.tasks.values().chain(f.completed.iter()))
        .filter(|t| TaskFilter::matches(q, t))
        .collect();
    let total = hits.len();
    hits.sort_by(|a, b| b.launched_at.total_cmp(&a.launched_at).then_with(|| a.id.cmp(&b.id)));
    let items = hits
        .into_iter()
        .skip(q.offset)
        .take(q.limit)
        .map(|t| task_view(t, m.task_usage(&t.agent_id, &t.framework_id, &t.id)))
        .collect();
    Page {
        total,
        offset: q.offset,
        limit: q.limit,
        items,
    }
}

/// One task in full: its status history, command and sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: TaskView,
    pub history: Vec<StatusEntry>,
    pub command: String,
    pub arguments: Vec<String>,
    /// Only shown to operators: environments often hold secrets.
    pub environment: Option<BTreeMap<String, String>>,
    pub agent_http_address: Option<String>,
    pub labels: Vec<(String, String)>,
}

pub fn task(m: &Master, fid: &FrameworkId, tid: &TaskId, operator: bool) -> Result<TaskDetail, MasterError> {
    let fw = m
        .frameworks
        .get(fid)
        .ok_or_else(|| MasterError::UnknownFramework(fid.to_string()))?;
    let t = fw
        .tasks
        .get(tid)
        .or_else(|| fw.completed.iter().rev().find(|t| &t.id == tid))
        .ok_or_else(|| MasterError::UnknownTask(tid.to_string()))?;
    let cmd = t.info.command.clone().unwrap_or_default();
    Ok(TaskDetail {
        task: task_view(t, m.task_usage(&t.agent_id, &t.framework_id, &t.id)),
        history: m
            .observed
            .history
            .get(&(fid.clone(), tid.clone()))
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default(),
        command: cmd.value,
        arguments: cmd.arguments,
        environment: operator.then(|| cmd.environment.into_iter().map(|e| (e.name, e.value)).collect()),
        agent_http_address: m.agents.get(&t.agent_id).map(|a| a.http_address.clone()),
        labels: t
            .info
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect(),
    })
}

/// Finds which framework runs a task id (ids are unique per framework,
/// so more than one may match).
pub fn find_task(m: &Master, tid: &TaskId) -> Vec<FrameworkId> {
    m.frameworks
        .values()
        .filter(|f| f.tasks.contains_key(tid) || f.completed_ids.contains(tid))
        .map(|f| f.id.clone())
        .collect()
}

/// An agent as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    pub id: String,
    pub hostname: String,
    pub http_address: String,
    pub status: AgentStatus,
    pub draining: bool,
    pub drain_deadline: Option<f64>,
    pub connected: bool,
    pub total: Resources,
    pub used: Resources,
    pub offered: Resources,
    pub attributes: Vec<(String, String)>,
    pub active_tasks: usize,
    /// Its containers' usage, summed, from the agent's latest report.
    pub usage: crate::core::usage::AgentUsage,
}

pub fn agents(m: &Master, status: Option<&str>, limit: usize, offset: usize) -> Page<AgentRow> {
    let rows: Vec<AgentRow> = m
        .agents
        .values()
        .map(|a| {
            let drain = m.registry.draining.get(&a.id);
            AgentRow {
                id: a.id.to_string(),
                hostname: a.hostname.clone(),
                http_address: a.http_address.clone(),
                status: a.status,
                draining: drain.is_some(),
                drain_deadline: drain.and_then(|d| d.deadline),
                connected: a.conn.is_some(),
                total: a.total.total(),
                used: a.used.clone(),
                offered: a.offered.clone(),
                attributes: a.attributes.clone(),
                active_tasks: a.tasks.len(),
                usage: a.usage.total(std::time::Instant::now()),
            }
        })
        .filter(|r| match status {
            None | Some("") => true,
            Some("draining") => r.draining,
            Some(s) => serde_json::to_value(r.status).is_ok_and(|v| v == s),
        })
        .collect();
    paged(rows, limit, offset)
}

fn paged<T>(rows: Vec<T>, limit: usize, offset: usize) -> Page<T> {
    let total = rows.len();
    Page {
        total,
        offset,
        limit,
        items: rows.into_iter().skip(offset).take(limit).collect(),
    }
}

/// A framework as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct FrameworkRow {
    pub id: String,
    pub name: String,
    pub principal: String,
    pub roles: Vec<String>,
    pub connected: bool,
    pub suppressed: bool,
    pub dominant_share: f64,
    pub allocated: Resources,
    pub offered: Resources,
    pub outstanding_offers: usize,
    pub offers: OfferStats,
    pub tasks_by_state: BTreeMap<&'static str, u64>,
    pub pending_tasks: usize,
    pub registered_at: f64,
}

fn cluster_total(m: &Master) -> Resources {
    let mut total = Resources::default();
    for a in m.agents.values().filter(|a| a.status == AgentStatus::Active) {
        total.add(&a.total.total());
    }
    total
}

pub fn frameworks(m: &Master, limit: usize, offset: usize) -> Page<FrameworkRow> {
    let total = cluster_total(m);
    let rows = m
        .frameworks
        .values()
        .map(|f| {
            let mut by_state = BTreeMap::new();
            for t in f.tasks.values().chain(f.completed.iter()) {
                *by_state.entry(t.state.name()).or_insert(0) += 1;
            }
            FrameworkRow {
                id: f.id.to_string(),
                name: f.info.name.clone(),
                principal: f.info.principal.clone(),
                roles: f.info.roles.clone(),
                connected: f.conn.is_some(),
                suppressed: f.suppressed,
                dominant_share: f.allocated.dominant_share(&total),
                allocated: f.allocated.clone(),
                offered: f.offered.clone(),
                outstanding_offers: f.offers.len(),
                offers: m.observed.offer_stats.get(&f.id).cloned().unwrap_or_default(),
                tasks_by_state: by_state,
                pending_tasks: m.observed.pending.get(&f.id).map_or(0, |p| p.tasks.len()),
                registered_at: f.registered_at,
            }
        })
        .collect();
    paged(rows, limit, offset)
}

/// The role a framework's allocation is counted under.
fn role_of(roles: &[String]) -> String {
    roles.first().cloned().unwrap_or_else(|| "*".into())
}

/// A role with what its frameworks hold.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoleRow {
    pub name: String,
    pub frameworks: usize,
    pub allocated: Resources,
    pub offered: Resources,
    pub dominant_share: f64,
}

/// Roles seen on frameworks, plus every registry field this module does
/// not know (weights, quotas, reservations once the allocator keeps
/// them), passed through as they are.
#[derive(Debug, Clone, Serialize)]
pub struct Roles {
    pub roles: Vec<RoleRow>,
    pub registry: serde_json::Map<String, serde_json::Value>,
}

/// Registry fields shown elsewhere.
const KNOWN_REGISTRY_FIELDS: [&str; 7] = [
    "agents",
    "frameworks",
    "masters",
    "highest_master_id",
    "applied",
    "draining",
    "gone",
];

pub fn roles(m: &Master) -> Roles {
    let total = cluster_total(m);
    let mut by_role: BTreeMap<String, RoleRow> = BTreeMap::new();
    for f in m.frameworks.values() {
        for (i, r) in f.info.roles.iter().enumerate() {
            let row = by_role.entry(r.clone()).or_default();
            row.name = r.clone();
            row.frameworks += 1;
            if i == 0 {
                row.allocated.add(&f.allocated);
                row.offered.add(&f.offered);
            }
        }
        if f.info.roles.is_empty() {
            let row = by_role.entry("*".into()).or_default();
            row.name = "*".into();
            row.frameworks += 1;
            row.allocated.add(&f.allocated);
            row.offered.add(&f.offered);
        }
    }
    for row in by_role.values_mut() {
        row.dominant_share = row.allocated.dominant_share(&total);
    }
    let registry = match serde_json::to_value(&m.registry) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.retain(|k, _| !KNOWN_REGISTRY_FIELDS.contains(&k.as_str()));
            map
        }
        _ => serde_json::Map::new(),
    };
    Roles {
        roles: by_role.into_values().collect(),
        registry,
    }
}

/// Resources in each bucket of the overview.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub total: Resources,
    pub allocated: Resources,
    pub offered: Resources,
    pub idle: Resources,
}

/// The dashboard's first screen.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub master_id: String,
    pub uptime_secs: f64,
    pub resources: Usage,
    pub per_role: BTreeMap<String, Resources>,
    pub agents_by_status: BTreeMap<String, u64>,
    pub agents: usize,
    pub frameworks: usize,
    pub frameworks_connected: usize,
    pub tasks_by_state: BTreeMap<&'static str, u64>,
    pub active_tasks: usize,
    pub outstanding_offers: usize,
    pub unacknowledged_updates: usize,
}

pub fn usage(m: &Master) -> Usage {
    let mut u = Usage::default();
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
        let s = serde_json::to_value(a.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *agents_by_status.entry(s).or_insert(0) += 1;
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
        resources: usage(m),
        per_role,
        agents_by_status,
        agents: m.agents.len(),
        frameworks: m.frameworks.len(),
        frameworks_connected: m.frameworks.values().filter(|f| f.conn.is_some()).count(),
        tasks_by_state: m.task_counts(),
        active_tasks,
        outstanding_offers: m.offers.len(),
        unacknowledged_updates: m.observed.unacked(),
    }
}

/// "Why is my work not running?" for one framework.
#[derive(Debug, Clone, Serialize)]
pub struct WhyFramework {
    pub framework_id: String,
    pub name: String,
    pub connected: bool,
    pub suppressed: bool,
    pub roles: Vec<String>,
    pub offers: OfferStats,
    pub outstanding_offers: usize,
    /// Agents this framework declined and is not offered until the filter ends.
    pub filtered_agents: usize,
    pub pending: Option<PendingReport>,
    /// The most free resources on any one schedulable agent right now.
    pub largest_free_agent: Option<Resources>,
    /// The master's own reading, most important first.
    pub hints: Vec<String>,
}

pub fn why_framework(m: &Master, fid: &FrameworkId) -> Result<WhyFramework, MasterError> {
    let f = m
        .frameworks
        .get(fid)
        .ok_or_else(|| MasterError::UnknownFramework(fid.to_string()))?;
    let largest = largest_free(m);
    let filtered = m.alloc.filters_of(fid);
    let mut hints = Vec::new();
    if f.conn.is_none() {
        hints.push("the framework is not connected, so it receives no offers".to_owned());
    }
    if f.suppressed {
        hints.push("the framework suppressed offers; it gets none until it revives".to_owned());
    }
    match &largest {
        None => hints.push("no agent has free resources worth offering".to_owned()),
        Some(r) => hints.push(format!("largest free resources on one agent: {}", r)),
    }
    if filtered > 0 {
        hints.push(format!(
            "{filtered} agent(s) filtered after this framework declined them"
        ));
    }
    if !f.offers.is_empty() {
        hints.push(format!("{} offer(s) are outstanding and unused", f.offers.len()));
    }
    Ok(WhyFramework {
        framework_id: f.id.to_string(),
        name: f.info.name.clone(),
        connected: f.conn.is_some(),
        suppressed: f.suppressed,
        roles: f.info.roles.clone(),
        offers: m.observed.offer_stats.get(fid).cloned().unwrap_or_default(),
        outstanding_offers: f.offers.len(),
        filtered_agents: filtered,
        pending: m.observed.pending.get(fid).cloned(),
        largest_free_agent: largest,
        hints,
    })
}

fn largest_free(m: &Master) -> Option<Resources> {
    m.agents
        .values()
        .filter(|a| a.status == AgentStatus::Active && !m.is_draining(&a.id))
        .filter_map(|a| a.total.total().checked_sub(&a.used))
        .filter(allocator::allocatable)
        .max_by_key(|r| (r.cpus, r.mem))
}

/// "Why" for one task id: its state if it was launched, and what its
/// framework reported while it waits.
#[derive(Debug, Clone, Serialize)]
pub struct WhyTask {
    pub task_id: String,
    pub launched: Vec<TaskView>,
    pub pending: Vec<(String, PendingTask)>,
    pub frameworks: Vec<WhyFramework>,
}

pub fn why_task(m: &Master, tid: &TaskId) -> Result<WhyTask, MasterError> {
    let launched: Vec<TaskView> = m
        .frameworks
        .values()
        .filter_map(|f| {
            f.tasks
                .get(tid)
                .or_else(|| f.completed.iter().rev().find(|t| &t.id == tid))
        })
        .map(|t| task_view(t, m.task_usage(&t.agent_id, &t.framework_id, &t.id)))
        .collect();
    let mut pending = Vec::new();
    let mut fws = Vec::new();
    for (fid, report) in &m.observed.pending {
        for t in report.tasks.iter().filter(|t| t.task_id == tid.as_str()) {
            pending.push((fid.to_string(), t.clone()));
            fws.push(why_framework(m, fid)?);
        }
    }
    if launched.is_empty() && pending.is_empty() {
        return Err(MasterError::UnknownTask(format!(
            "{tid}: not launched, and no framework reported it as pending"
        )));
    }
    Ok(WhyTask {
        task_id: tid.to_string(),
        launched,
        pending,
        frameworks: fws,
    })
}

/// Checks a ReportPending call's tasks (count and reason length are
/// checked by the core, which owns the limits).
pub fn pending_tasks(list: Vec<mezzo_proto::v1::PendingTask>) -> Result<Vec<PendingTask>, MasterError> {
    if list.len() > crate::core::observe::MAX_PENDING_TASKS {
        return Err(MasterError::Invalid(format!(
            "tasks: {} pending tasks reported, at most {} are accepted",
            list.len(),
            crate::core::observe::MAX_PENDING_TASKS
        )));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, t)| {
            TaskId::parse(&t.task_id).map_err(|e| MasterError::Invalid(format!("tasks[{i}].task_id: {e}")))?;
            let resources = if t.resources.is_empty() {
                None
            } else {
                Some(
                    Resources::from_proto(&t.resources)
                        .map_err(|e| MasterError::Invalid(format!("tasks[{i}].resources: {e}")))?,
                )
            };
            Ok(PendingTask {
                task_id: t.task_id,
                reason: t.reason,
                resources,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_pages_are_checked_by_field() {
        assert_eq!(parse_states("running").expect("ok"), vec![TaskState::Running]);
        assert_eq!(
            parse_states("TASK_FAILED, killed").expect("ok"),
            vec![TaskState::Failed, TaskState::Killed]
        );
        let active = parse_states("active").expect("ok");
        assert!(active.contains(&TaskState::Staging) && !active.contains(&TaskState::Finished));
        let terminal = parse_states("terminal").expect("ok");
        assert!(terminal.iter().all(|s| s.is_terminal()) && terminal.contains(&TaskState::Gone));
        assert!(matches!(parse_states("sleepy"), Err(MasterError::Invalid(m)) if m.starts_with("state:")));
        assert_eq!(page(None, None).expect("ok"), (DEFAULT_LIMIT, 0));
        assert!(matches!(page(Some(0), None), Err(MasterError::Invalid(m)) if m.starts_with("limit:")));
        assert!(page(Some(MAX_LIMIT + 1), None).is_err());
        let bad = TaskFilter {
            framework: Some("a/b".into()),
            ..Default::default()
        };
        assert!(matches!(bad.check(), Err(MasterError::Invalid(m)) if m.starts_with("framework:")));
        let bad = TaskFilter {
            agent: Some("..".into()),
            ..Default::default()
        };
        assert!(matches!(bad.check(), Err(MasterError::Invalid(m)) if m.starts_with("agent:")));
    }

    #[test]
    fn pending_tasks_are_validated_by_index() {
        let ok = mezzo_proto::v1::PendingTask {
            task_id: "t1".into(),
            reason: "needs 8 cpus".into(),
            resources: Resources::parse("cpus:8").expect("res").to_proto(),
        };
        let got = pending_tasks(vec![ok.clone()]).expect("valid");
        assert_eq!(got[0].resources.as_ref().map(|r| r.cpus.0), Some(8000));
        let mut bad = ok.clone();
        bad.task_id = "a/b".into();
        assert!(
            matches!(pending_tasks(vec![ok.clone(), bad]), Err(MasterError::Invalid(m)) if m.starts_with("tasks[1].task_id"))
        );
        let mut bad = ok;
        bad.resources[0].scalar = -1.0;
        assert!(
            matches!(pending_tasks(vec![bad]), Err(MasterError::Invalid(m)) if m.starts_with("tasks[0].resources"))
        );
    }
}
