//! The operator API's lists, filtered and paged: tasks, agents and
//! frameworks, one task in full, and which agent holds a task's sandbox.
//! The list of every task and the frameworks' task counts are read off the
//! task index (`task_index.rs`); a filtered list walks the tables once.

use std::borrow::Cow;
use std::collections::BTreeMap;

use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use mezzo_proto::resources::Resources;
use mezzo_proto::state::TaskState;
use serde::{Deserialize, Serialize};

use super::state::task_view;
use super::{Page, StateName, TaskView, find_task};
use crate::core::observe::{OfferStats, StatusEntry};
use crate::core::task_index::{TaskIndex, newest_first};
use crate::core::{Agent, AgentStatus, Master, Task};
use crate::error::MasterError;
use crate::history::TaskRecord;

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

    /// Whether it asks for every task.
    fn lists_all(q: &TaskQuery) -> bool {
        q.states.is_empty() && q.framework.is_none() && q.agent.is_none() && q.q.is_none()
    }

    fn matches(q: &TaskQuery, t: &Task) -> bool {
        (q.states.is_empty() || q.states.contains(&t.state))
            && q.agent.as_ref().is_none_or(|a| a == &t.agent_id)
            && q.q
                .as_deref()
                .is_none_or(|s| t.id.as_str().contains(s) || t.info.name.contains(s))
    }
}

/// Tasks matching `q`, newest launches first: those of registered
/// frameworks, and the history of removed ones.
pub fn tasks(m: &Master, q: &TaskQuery) -> Page<TaskView> {
    if TaskFilter::lists_all(q) {
        return newest_tasks(m, q);
    }
    let wanted = |id: &FrameworkId| q.framework.as_ref().is_none_or(|w| w == id);
    let removed: Vec<Task> = m
        .registry
        .history
        .removed
        .iter()
        .filter(|f| wanted(&f.id))
        .filter_map(|f| m.registry.history.tasks.get(&f.id))
        .flatten()
        .map(Task::from_record)
        .collect();
    // The tasks are listed first and only then read, each hit with its
    // launch time beside it: read while the tables are walked, or compared
    // where they are, 400,000 tasks made a page a 30-70 ms wait for memory;
    // in a loop this small the reads overlap.
    let all: Vec<&Task> = m
        .frameworks
        .values()
        .filter(|f| wanted(&f.id))
        .flat_map(|f| f.tasks.values().chain(f.completed.iter()).map(|t| &**t))
        .chain(removed.iter())
        .collect();
    let mut hits: Vec<(f64, &Task)> = Vec::with_capacity(all.len());
    hits.extend(
        all.into_iter()
            .filter(|t| TaskFilter::matches(q, t))
            .map(|t| (t.launched_at, t)),
    );
    let total = hits.len();
    // Only the rows up to the page's end are put in order: a page of a
    // cluster of 400,000 tasks is not a sort of all of them.
    let newest_first = |(la, a): &(f64, &Task), (lb, b): &(f64, &Task)| lb.total_cmp(la).then_with(|| a.id.cmp(&b.id));
    let end = q.offset.saturating_add(q.limit);
    if end < hits.len() {
        hits.select_nth_unstable_by(end, newest_first);
        hits.truncate(end);
    }
    hits.sort_by(newest_first);
    let items = hits
        .into_iter()
        .skip(q.offset)
        .take(q.limit)
        .map(|(_, t)| task_view(m, t, m.task_usage(&t.agent_id, &t.framework_id, &t.id)))
        .collect();
    Page {
        total,
        offset: q.offset,
        limit: q.limit,
        items,
    }
}

/// Every task, newest launch first: the page's rows read off the launch
/// index (nothing before `offset` is even looked up), merged with the
/// history of removed frameworks (at most `completed_frameworks` ×
/// `completed_tasks_per_framework` records).
fn newest_tasks(m: &Master, q: &TaskQuery) -> Page<TaskView> {
    let history = &m.registry.history;
    let mut removed: Vec<(u64, &TaskRecord)> = (history.removed.iter())
        .filter_map(|f| history.tasks.get(&f.id))
        .flatten()
        .map(|r| (newest_first(r.launched_at), r))
        .collect();
    let total = m.task_index.len() + removed.len();
    let end = q.offset.saturating_add(q.limit);
    let order = |(a, ra): &(u64, &TaskRecord), (b, rb): &(u64, &TaskRecord)| a.cmp(b).then_with(|| ra.id.cmp(&rb.id));
    if end < removed.len() {
        removed.select_nth_unstable_by(end, order);
        removed.truncate(end);
    }
    removed.sort_by(order);
    let mut live = m.task_index.newest().peekable();
    let mut gone = removed.into_iter().peekable();
    let mut items = Vec::with_capacity(q.limit.min(total));
    let view = |t: &Task| task_view(m, t, m.task_usage(&t.agent_id, &t.framework_id, &t.id));
    for place in 0..end {
        let from_live = match (live.peek(), gone.peek()) {
            (Some((a, ta, ..)), Some((b, rb))) => (a, *ta) <= (b, &rb.id),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if from_live {
            let key = live.next();
            if place >= q.offset
                && let Some(t) = key.and_then(|k| TaskIndex::find(&m.frameworks, k))
            {
                items.push(view(t));
            }
        } else if let Some((_, r)) = gone.next()
            && place >= q.offset
        {
            items.push(view(&Task::from_record(r)));
        }
    }
    Page {
        total,
        offset: q.offset,
        limit: q.limit,
        items,
    }
}

/// One task in full: its status history, command and sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: TaskView,
    pub history: Vec<StatusEntry>,
    pub command: String,
    pub arguments: Vec<String>,
    /// Only shown to whoever may see it (`view_environment`): environments
    /// often hold credentials. A variable from a secret shows as
    /// `secret:NAME`, to everyone.
    pub environment: Option<BTreeMap<String, String>>,
    /// Secret files: sandbox path -> `secret:NAME`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_files: BTreeMap<String, String>,
    /// The task's image reference, if it runs in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `secret:NAME` if its image is pulled with the credentials in a
    /// secret (never their value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_credentials: Option<String>,
    pub agent_http_address: Option<String>,
    pub labels: Vec<(String, String)>,
}

/// One task in full; its environment only for an operator.
pub fn task(m: &Master, fid: &FrameworkId, tid: &TaskId, operator: bool) -> Result<TaskDetail, MasterError> {
    let t = find_task(m, fid, tid)?;
    let cmd = t.info.command.clone().unwrap_or_default();
    let image = t.info.container.as_ref().and_then(|c| c.image.as_ref());
    Ok(TaskDetail {
        task: task_view(m, t, m.task_usage(&t.agent_id, &t.framework_id, &t.id)),
        history: m.status_history(t),
        command: cmd.value,
        arguments: cmd.arguments,
        environment: operator.then(|| {
            cmd.environment
                .into_iter()
                .map(|e| {
                    if e.secret.is_empty() {
                        (e.name, e.value)
                    } else {
                        (e.name, format!("secret:{}", e.secret))
                    }
                })
                .collect()
        }),
        secret_files: cmd
            .secret_files
            .into_iter()
            .map(|f| (f.path, format!("secret:{}", f.secret)))
            .collect(),
        image: image.map(|i| i.reference.clone()),
        image_credentials: image
            .filter(|i| !i.credentials_secret.is_empty())
            .map(|i| format!("secret:{}", i.credentials_secret)),
        agent_http_address: m.agents.get(&t.agent_id).map(|a| a.http_address.clone()),
        labels: t
            .info
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect(),
    })
}

/// An agent as operators see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// What the master found wrong with the agent (its host name does not
    /// resolve), for operators.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

pub fn agents(m: &Master, status: Option<&str>, limit: usize, offset: usize) -> Page<AgentRow> {
    let listed: Vec<&Agent> = m
        .agents
        .values()
        .filter(|a| match status {
            None | Some("") => true,
            Some("draining") => m.registry.draining.contains_key(&a.id),
            Some(s) => a.status.name() == s,
        })
        .collect();
    let total = listed.len();
    // Rows are built for the page only.
    let rows = listed.into_iter().skip(offset).take(limit).map(|a| {
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
            warnings: m
                .host_problems
                .get(&a.hostname)
                .map(|why| {
                    vec![format!(
                        "host name {:?} does not resolve from the master: {why}",
                        a.hostname
                    )]
                })
                .unwrap_or_default(),
        }
    });
    Page {
        total,
        offset,
        limit,
        items: rows.collect(),
    }
}

/// The HTTP address of the agent that runs (or ran) a task and the
/// principal that registered it, for the files proxy.
pub fn task_agent(m: &Master, fid: &FrameworkId, tid: &TaskId) -> Result<TaskAgent, MasterError> {
    // A task of a framework that has gone (or one its live view no longer
    // holds) is found in the task history, with the owner it had (issue
    // 20: its output could not be read after a teardown).
    let (agent_id, removed_owner, executor) = match find_task(m, fid, tid) {
        Ok(task) => {
            let executor = task.info.executor.as_ref().map(|e| e.executor_id.clone());
            (task.agent_id.clone(), None, executor)
        }
        Err(e) => {
            let history = &m.registry.history;
            let record = history
                .tasks
                .get(fid)
                .and_then(|ring| ring.iter().rev().find(|r| &r.id == tid));
            let Some(record) = record else { return Err(e) };
            let owner = history
                .removed
                .iter()
                .find(|f| &f.id == fid)
                .map(|f| f.principal.clone());
            (record.agent_id.clone(), owner, None)
        }
    };
    let addr = m
        .agents
        .get(&agent_id)
        .map(|a| a.http_address.clone())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| MasterError::UnknownAgent(agent_id.to_string()))?;
    let principal = m.registry.agents.get(&agent_id).and_then(|r| r.principal.clone());
    Ok(TaskAgent {
        addr,
        principal,
        removed_owner,
        executor,
    })
}

/// Where a task's sandbox is, for the files proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskAgent {
    /// The agent's HTTP address.
    pub addr: String,
    /// The principal the agent registered with, if any.
    pub principal: Option<String>,
    /// The owner of the task's framework when it has been removed (from
    /// the history), for the access check.
    pub removed_owner: Option<String>,
    /// The custom executor that runs it, whose sandbox it shares.
    pub executor: Option<String>,
}

/// A framework as operators see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    pub tasks_by_state: BTreeMap<StateName, u64>,
    pub pending_tasks: usize,
    pub registered_at: f64,
    /// Unix seconds when it was removed (the history's frameworks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<f64>,
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
    let live = m.frameworks.len();
    let removed = m.registry.history.removed.len();
    // Rows are built for the page only: each counts its framework's tasks.
    let live_rows = live.saturating_sub(offset).min(limit);
    let rows: Vec<FrameworkRow> = m
        .frameworks
        .values()
        .skip(offset)
        .take(limit)
        .map(|f| {
            let mut by_state = BTreeMap::new();
            for ((state, _), n) in m.task_index.outcomes_of(&f.id) {
                *by_state.entry(Cow::Borrowed(state.name())).or_insert(0) += n;
            }
            FrameworkRow {
                id: f.id.to_string(),
                name: f.info.name.clone(),
                principal: f.info.principal.clone(),
                roles: f.info.roles.clone(),
                connected: f.conn.is_some(),
                suppressed: f.suppressed_everywhere(),
                dominant_share: f.allocated.dominant_share(&total),
                allocated: f.allocated.clone(),
                offered: f.offered.clone(),
                outstanding_offers: f.offers.len(),
                offers: m.observed.offer_stats.get(&f.id).cloned().unwrap_or_default(),
                tasks_by_state: by_state,
                pending_tasks: m.observed.pending.get(&f.id).map_or(0, |p| p.tasks.len()),
                registered_at: f.registered_at,
                removed_at: None,
            }
        })
        .chain(removed_frameworks(m, offset.saturating_sub(live), limit - live_rows))
        .collect();
    Page {
        total: live + removed,
        offset,
        limit,
        items: rows,
    }
}

/// The frameworks the history remembers, newest removal first: `take` of
/// them after the first `skip`.
fn removed_frameworks(m: &Master, skip: usize, take: usize) -> impl Iterator<Item = FrameworkRow> + '_ {
    let history = &m.registry.history;
    history.removed.iter().rev().skip(skip).take(take).map(|f| {
        let mut by_state = BTreeMap::new();
        for t in history.tasks.get(&f.id).into_iter().flatten() {
            let state = TaskState::from_name(&t.state).map_or(Cow::Owned(t.state.clone()), |s| Cow::Borrowed(s.name()));
            *by_state.entry(state).or_insert(0) += 1;
        }
        FrameworkRow {
            id: f.id.to_string(),
            name: f.name.clone(),
            principal: f.principal.clone(),
            roles: f.roles.clone(),
            connected: false,
            suppressed: false,
            dominant_share: 0.0,
            allocated: Resources::default(),
            offered: Resources::default(),
            outstanding_offers: 0,
            offers: OfferStats::default(),
            tasks_by_state: by_state,
            pending_tasks: 0,
            registered_at: 0.0,
            removed_at: Some(f.removed_at),
        }
    })
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
}
