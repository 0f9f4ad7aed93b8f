//! "Why is my work not running?": what a framework was offered and did
//! with it, what it reports waiting, and the master's own reading.

use mezzo_proto::ids::{FrameworkId, TaskId};
use mezzo_proto::resources::Resources;
use mezzo_proto::state::TaskState;
use serde::{Deserialize, Serialize};

use super::TaskView;
use super::state::task_view;
use crate::allocator;
use crate::core::observe::{OfferStats, PendingReport, PendingTask};
use crate::core::{AgentStatus, Master, Task};
use crate::error::MasterError;

/// "Why is my work not running?" for one framework.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// Why a framework's work may not be running.
pub fn why_framework(m: &Master, fid: &FrameworkId) -> Result<WhyFramework, MasterError> {
    let f = m
        .frameworks
        .get(fid)
        .ok_or_else(|| MasterError::UnknownFramework(fid.to_string()))?;
    let largest = largest_free(m);
    let filtered = m.alloc.filters_of(fid);
    let mut hints = never_fit(m, m.observed.pending.get(fid));
    if f.conn.is_none() {
        hints.push("the framework is not connected, so it receives no offers".to_owned());
    }
    if f.suppressed_everywhere() {
        hints.push("the framework suppressed offers; it gets none until it revives".to_owned());
    } else if !f.suppressed_roles.is_empty() {
        hints.push(format!(
            "the framework suppressed offers in roles {}; it gets none in them until it revives them",
            f.suppressed_role_names().join(", ")
        ));
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
        suppressed: f.suppressed_everywhere(),
        roles: f.info.roles.clone(),
        offers: m.observed.offer_stats.get(fid).cloned().unwrap_or_default(),
        outstanding_offers: f.offers.len(),
        filtered_agents: filtered,
        pending: m.observed.pending.get(fid).cloned(),
        largest_free_agent: largest,
        hints,
    })
}

/// Hints for reported waiting tasks that no agent could run even when
/// empty (issue 21: `mezzo why` listed offers but never said so), first
/// of all: waiting will not help.
fn never_fit(m: &Master, pending: Option<&PendingReport>) -> Vec<String> {
    let totals: Vec<Resources> = m
        .agents
        .values()
        .filter(|a| a.status != AgentStatus::Unreachable && !m.is_draining(&a.id))
        .map(|a| a.total.total())
        .collect();
    let largest = totals.iter().max_by_key(|r| (r.cpus, r.mem));
    let mut hints = Vec::new();
    for t in pending.into_iter().flat_map(|p| &p.tasks) {
        let Some(need) = &t.resources else { continue };
        if totals.iter().any(|total| total.contains(need)) {
            continue;
        }
        let largest = largest.map_or_else(
            || "there is no agent".to_owned(),
            |r| format!("the largest agent has {r}"),
        );
        hints.push(format!(
            "no agent can ever run {}: it needs {need}, and {largest}",
            t.task_id
        ));
        if hints.len() == 5 {
            break;
        }
    }
    hints
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhyTask {
    pub task_id: String,
    pub launched: Vec<TaskView>,
    pub pending: Vec<(String, PendingTask)>,
    pub frameworks: Vec<WhyFramework>,
    /// What the launched tasks' images are doing, for those with one
    /// being pulled or that failed.
    #[serde(default)]
    pub images: Vec<ImagePull>,
    /// Preemption, either side: "to be preempted for task X of framework
    /// F, priority P", or "waiting to preempt N task(s) ... on agent A".
    #[serde(default)]
    pub preemption: Vec<String>,
}

/// A launched task's image as its status updates tell it: being pulled
/// (since when, the latest layer), or the error the task ended with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImagePull {
    pub framework_id: String,
    pub task_id: String,
    pub reference: String,
    /// Unix seconds of the earliest `pulling image` update still in the
    /// task's history, while the task is STARTING and pulling.
    pub pulling_since: Option<f64>,
    /// The latest pull update's message.
    pub pulling: Option<String>,
    /// Why the image could not be used, if the task ended on it.
    pub error: Option<String>,
}

/// `t`'s image pull as its updates tell it, if it has an image being
/// pulled or that failed.
fn image_pull(m: &Master, t: &Task) -> Option<ImagePull> {
    let reference = &t.info.container.as_ref()?.image.as_ref()?.reference;
    let parsed = mezzo_proto::image::ImageRef::parse(reference).ok()?;
    let message = t.last_status.as_ref().map(|s| s.message.as_str()).unwrap_or_default();
    let (pulling_prefix, error_prefix) = (parsed.pull_message_prefix(), parsed.error_message_prefix());
    let mut pull = ImagePull {
        framework_id: t.framework_id.to_string(),
        task_id: t.id.to_string(),
        reference: reference.clone(),
        pulling_since: None,
        pulling: None,
        error: None,
    };
    if t.state == TaskState::Starting && message.starts_with(&pulling_prefix) {
        let history = m.history_of(t);
        let first = history
            .into_iter()
            .flat_map(|h| h.iter())
            .find(|h| h.message.starts_with(&pulling_prefix))
            .map(|h| h.at);
        pull.pulling_since = first.or(t.last_status.as_ref().map(|s| s.timestamp));
        pull.pulling = Some(message.to_owned());
    } else if t.state.is_terminal() && message.starts_with(&error_prefix) {
        pull.error = Some(message.to_owned());
    } else {
        return None;
    }
    Some(pull)
}

/// Why a task may not be running: refused when it was neither launched
/// nor reported pending.
pub fn why_task(m: &Master, tid: &TaskId) -> Result<WhyTask, MasterError> {
    let tasks: Vec<&Task> = m
        .frameworks
        .values()
        .filter_map(|f| f.tasks.get(tid).or_else(|| f.completed_by_id.get(tid)).map(|t| &**t))
        .collect();
    let launched: Vec<TaskView> = tasks
        .iter()
        .map(|t| task_view(m, t, m.task_usage(&t.agent_id, &t.framework_id, &t.id)))
        .collect();
    let images = tasks.iter().filter_map(|t| image_pull(m, t)).collect();
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
    let preemption = tasks
        .iter()
        .map(|t| &t.framework_id)
        .chain(
            pending
                .iter()
                .filter_map(|(fid, _)| m.frameworks.keys().find(|f| f.as_str() == fid)),
        )
        .filter_map(|fid| m.preemption_of(fid, tid))
        .collect();
    Ok(WhyTask {
        task_id: tid.to_string(),
        launched,
        pending,
        frameworks: fws,
        images,
        preemption,
    })
}
