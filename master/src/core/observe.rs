//! What operators see, inside the core: cluster events for the operator
//! event stream, per-framework offer figures and pending reports (the
//! "why is my work not running?" answer), status update history, and the
//! histograms `/metrics` exports.
//!
//! Everything here is bookkeeping beside the core's own tables; the core
//! calls the small `note_*` hooks at the points where things happen.

use foldhash::{HashMap, HashMapExt};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use mezzo_proto::resources::Resources;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{Master, StateName, Task};
use crate::error::MasterError;
use mezzo_proto::clock::unix_now;

/// Status updates remembered per task for the dashboard.
pub const HISTORY_PER_TASK: usize = 16;
/// Waiting tasks a framework may report at once.
pub const MAX_PENDING_TASKS: usize = 1000;
/// Longest reason text accepted in a pending report.
pub const MAX_REASON_BYTES: usize = 1024;
/// Launches between two sweeps of forgotten tasks' bookkeeping, at least
/// (see [`Master::prune_ops`]).
pub(super) const PRUNE_EVERY: usize = 4096;
/// Events kept for the runtime between two turns (a stuck runtime never
/// grows memory: the oldest are dropped and counted).
const MAX_QUEUED_EVENTS: usize = 65_536;

/// One change operators can follow on `/api/v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClusterEvent {
    TaskAdded {
        framework_id: String,
        task_id: String,
        agent_id: String,
        state: &'static str,
    },
    TaskUpdated {
        framework_id: String,
        task_id: String,
        agent_id: String,
        state: &'static str,
        reason: String,
    },
    AgentAdded {
        agent_id: String,
        hostname: String,
    },
    AgentRemoved {
        agent_id: String,
        why: &'static str,
    },
    AgentDraining {
        agent_id: String,
        draining: bool,
    },
    FrameworkAdded {
        framework_id: String,
        name: String,
    },
    FrameworkRemoved {
        framework_id: String,
    },
    LeaderChanged {
        leader: Option<String>,
    },
}

/// What one framework was offered and did with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OfferStats {
    pub received: u64,
    pub declined: u64,
    pub accepted: u64,
    /// Unix seconds of the newest offer.
    pub last_offer_at: Option<f64>,
    /// The largest single offer (by cpus, then memory) it was ever sent.
    pub largest_offer: Option<Resources>,
}

/// A task the framework says it cannot place yet, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingTask {
    pub task_id: String,
    pub reason: String,
    pub resources: Option<Resources>,
    /// Its priority: above 0, it may preempt (`core::preempt`).
    #[serde(default)]
    pub priority: i32,
}

/// A framework's newest report of its waiting work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingReport {
    pub reported_at: f64,
    pub tasks: Vec<PendingTask>,
}

/// One status update as the dashboard shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusEntry {
    pub state: StateName,
    /// A `StatusReason` name, borrowed like `state`.
    pub reason: StateName,
    /// Borrowed for the master's own ("launched"): a leader keeps an entry
    /// per update of every task.
    pub message: StateName,
    pub at: f64,
}

/// The operators' bookkeeping held by the core.
#[derive(Debug)]
pub(super) struct Observations {
    events: VecDeque<ClusterEvent>,
    /// Whether anyone follows the event stream; when not, events are not
    /// built at all (a task update is on the hot path).
    watched: bool,
    pub(super) events_dropped: u64,
    pub(super) offer_stats: HashMap<FrameworkId, OfferStats>,
    pub(super) pending: HashMap<FrameworkId, PendingReport>,
    /// Shared with snapshots for Mesos' operator reads (copied on write
    /// only while one holds it).
    pub(super) history: HashMap<(FrameworkId, TaskId), Arc<VecDeque<StatusEntry>>>,
    /// Updates forwarded to frameworks and not yet acknowledged.
    forwarded: HashMap<(FrameworkId, TaskId), Instant>,
    /// Tasks added since the last sweep of forgotten tasks.
    added_since_prune: usize,
    /// Sweeps so far.
    pub(super) sweeps: u64,
    pub(super) allocation_seconds: Histogram,
    pub(super) ack_latency_seconds: Histogram,
}

impl Default for Observations {
    fn default() -> Self {
        let buckets = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
        Observations {
            events: VecDeque::new(),
            watched: true,
            events_dropped: 0,
            offer_stats: HashMap::new(),
            pending: HashMap::new(),
            history: HashMap::new(),
            forwarded: HashMap::new(),
            added_since_prune: 0,
            sweeps: 0,
            allocation_seconds: Histogram::new(buckets),
            ack_latency_seconds: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
        }
    }
}

impl Observations {
    /// Queues the event `e` builds, if anyone follows the stream.
    pub(super) fn event(&mut self, e: impl FnOnce() -> ClusterEvent) {
        if !self.watched {
            return;
        }
        let e = e();
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    pub(super) fn offered(&mut self, fid: &FrameworkId, offers: &[v1::Offer]) {
        let s = self.offer_stats.entry(fid.clone()).or_default();
        s.received += offers.len() as u64;
        s.last_offer_at = Some(unix_now());
        for o in offers {
            let Ok(r) = Resources::from_proto(&o.resources) else {
                continue;
            };
            let bigger = s
                .largest_offer
                .as_ref()
                .is_none_or(|l| (r.cpus, r.mem) > (l.cpus, l.mem));
            if bigger {
                s.largest_offer = Some(r);
            }
        }
    }

    pub(super) fn declined(&mut self, fid: &FrameworkId) {
        self.offer_stats.entry(fid.clone()).or_default().declined += 1;
    }

    pub(super) fn accepted(&mut self, fid: &FrameworkId, n: usize) {
        self.offer_stats.entry(fid.clone()).or_default().accepted += n as u64;
    }

    pub(super) fn forwarded(&mut self, fid: &FrameworkId, tid: &TaskId) {
        self.forwarded.insert((fid.clone(), tid.clone()), Instant::now());
    }

    pub(super) fn acknowledged(&mut self, fid: &FrameworkId, tid: &TaskId) {
        if let Some(at) = self.forwarded.remove(&(fid.clone(), tid.clone())) {
            self.ack_latency_seconds.observe(at.elapsed().as_secs_f64());
        }
    }

    pub(super) fn allocation_took(&mut self, d: Duration) {
        self.allocation_seconds.observe(d.as_secs_f64());
    }

    /// Updates waiting for an acknowledgement (the status update queue).
    pub(super) fn unacked(&self) -> usize {
        self.forwarded.len()
    }

    /// Forgets what belonged to a removed framework.
    fn framework_gone(&mut self, fid: &FrameworkId) {
        self.offer_stats.remove(fid);
        self.pending.remove(fid);
        self.history.retain(|(f, _), _| f != fid);
        self.forwarded.retain(|(f, _), _| f != fid);
    }
}

/// A status's reason by name (`REASON_COMMAND_EXITED`), as the
/// task's views show it.
fn reason_name(s: &v1::TaskStatus) -> StateName {
    Cow::Borrowed(v1::StatusReason::try_from(s.reason).map_or("", |r| r.as_str_name()))
}

/// A task's first entry.
fn launched(at: f64) -> StatusEntry {
    StatusEntry {
        state: Cow::Borrowed(TaskState::Staging.name()),
        reason: Cow::Borrowed(""),
        message: Cow::Borrowed("launched"),
        at,
    }
}

/// `t`'s status history from `kept`, what a leader saw or adopted from
/// its agent; for an ended task it keeps none of (known only from the
/// registry's history), its launch and its end.
pub(super) fn statuses_of(t: &Task, kept: Option<&Arc<VecDeque<StatusEntry>>>) -> Vec<StatusEntry> {
    if let Some(h) = kept {
        return h.iter().cloned().collect();
    }
    let Some(ended_at) = t.ended_at else {
        return Vec::new();
    };
    let ended = StatusEntry {
        state: Cow::Borrowed(t.state.name()),
        reason: t.last_status.as_ref().map_or(Cow::Borrowed(""), reason_name),
        message: Cow::Owned(t.last_status.as_ref().map(|s| s.message.clone()).unwrap_or_default()),
        at: ended_at,
    };
    vec![launched(t.launched_at), ended]
}

/// One status update as the history shows it (none for an unknown state).
fn entry_of(s: &v1::TaskStatus) -> Option<StatusEntry> {
    Some(StatusEntry {
        state: Cow::Borrowed(TaskState::from_proto(s.state)?.name()),
        reason: reason_name(s),
        message: Cow::Owned(s.message.clone()),
        at: s.timestamp,
    })
}

impl Master {
    /// Tells the core whether the event stream has followers.
    pub fn set_events_watched(&mut self, watched: bool) {
        self.observed.watched = watched;
    }

    /// Events produced since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<ClusterEvent> {
        self.observed.events.drain(..).collect()
    }

    pub(crate) fn note_task_added(&mut self, fid: &FrameworkId, tid: &TaskId, agent: &AgentId) {
        self.observed.event(move || ClusterEvent::TaskAdded {
            framework_id: fid.to_string(),
            task_id: tid.to_string(),
            agent_id: agent.to_string(),
            state: TaskState::Staging.name(),
        });
        // Room for its launch and its RUNNING update (a running task's).
        let h = self.observed.history.entry((fid.clone(), tid.clone()));
        let h = h.or_insert_with(|| Arc::new(VecDeque::with_capacity(2)));
        Arc::make_mut(h).push_back(launched(unix_now()));
        self.observed.added_since_prune += 1;
        if self.observed.added_since_prune >= PRUNE_EVERY.max(self.observed.history.len() / 4) {
            self.prune_ops();
        }
    }

    /// Forgets the history and pending acknowledgements of tasks the core
    /// no longer remembers (dropped from the completed ring). A sweep walks
    /// every task's history, so it runs once the launches since the last
    /// one reach a quarter of the histories kept (at least
    /// [`PRUNE_EVERY`]): its cost per launch stays constant (about three
    /// lookups) however many tasks the leader holds, and the histories of
    /// forgotten tasks are at most a third as many as the others. (Every
    /// 4,096 launches, as until now, a leader of 400,000 tasks spent 28 %
    /// of its CPU in these sweeps while tasks were launched.)
    pub(super) fn prune_ops(&mut self) {
        self.observed.added_since_prune = 0;
        self.observed.sweeps += 1;
        let frameworks = &self.frameworks;
        let known = |(f, t): &(FrameworkId, TaskId)| {
            frameworks
                .get(f)
                .is_some_and(|fw| fw.tasks.contains_key(t) || fw.completed_by_id.contains_key(t))
        };
        self.observed.history.retain(|k, _| known(k));
        self.observed.forwarded.retain(|k, _| {
            frameworks
                .get(&k.0)
                .and_then(|fw| fw.tasks.get(&k.1))
                .is_some_and(|t| t.unacked.is_some())
        });
    }

    /// A task new to this leader, reported by its agent (after a
    /// failover): its history is its launch and the updates the agent
    /// reports, unless this leader already keeps one.
    pub(crate) fn adopt_reported_history(
        &mut self,
        fid: &FrameworkId,
        tid: &TaskId,
        launched_at: Option<f64>,
        statuses: &[v1::TaskStatus],
    ) {
        let key = (fid.clone(), tid.clone());
        if self.observed.history.contains_key(&key) || (launched_at.is_none() && statuses.is_empty()) {
            return;
        }
        // Sized once (`collect` rounds a filtered list up to four).
        let mut h = VecDeque::with_capacity(1 + statuses.len());
        h.extend(
            launched_at
                .map(launched)
                .into_iter()
                .chain(statuses.iter().filter_map(entry_of)),
        );
        while h.len() > HISTORY_PER_TASK {
            h.pop_front();
        }
        self.observed.history.insert(key, Arc::new(h));
    }

    /// A task's status history (see [`statuses_of`]).
    pub(super) fn status_history(&self, t: &Task) -> Vec<StatusEntry> {
        statuses_of(t, self.history_of(t))
    }

    /// The history this leader keeps for `t`, if any.
    pub(super) fn history_of(&self, t: &Task) -> Option<&Arc<VecDeque<StatusEntry>>> {
        self.observed.history.get(&(t.framework_id.clone(), t.id.clone()))
    }

    pub(crate) fn note_task_state(&mut self, fid: &FrameworkId, tid: &TaskId, status: Option<&v1::TaskStatus>) {
        let Some(t) = self.frameworks.get(fid).and_then(|f| f.tasks.get(tid)) else {
            return;
        };
        let reason = status.map_or(Cow::Borrowed(""), reason_name);
        let (state, agent) = (t.state.name(), t.agent_id.clone());
        let h = Arc::make_mut(self.observed.history.entry((fid.clone(), tid.clone())).or_default());
        if h.len() >= HISTORY_PER_TASK {
            h.pop_front();
        }
        h.push_back(StatusEntry {
            state: Cow::Borrowed(state),
            reason: reason.clone(),
            message: Cow::Owned(status.map(|s| s.message.clone()).unwrap_or_default()),
            at: status.map(|s| s.timestamp).unwrap_or_else(unix_now),
        });
        self.observed.event(move || ClusterEvent::TaskUpdated {
            framework_id: fid.to_string(),
            task_id: tid.to_string(),
            agent_id: agent.to_string(),
            state,
            reason: reason.into_owned(),
        });
    }

    pub(crate) fn note_agent_added(&mut self, id: &AgentId, hostname: &str) {
        self.observed.event(move || ClusterEvent::AgentAdded {
            agent_id: id.to_string(),
            hostname: hostname.to_owned(),
        });
    }

    pub(crate) fn note_agent_removed(&mut self, id: &AgentId, why: &'static str) {
        self.observed.event(move || ClusterEvent::AgentRemoved {
            agent_id: id.to_string(),
            why,
        });
    }

    pub(crate) fn note_framework_added(&mut self, id: &FrameworkId, name: &str) {
        self.observed.event(move || ClusterEvent::FrameworkAdded {
            framework_id: id.to_string(),
            name: name.to_owned(),
        });
    }

    pub(crate) fn note_framework_removed(&mut self, id: &FrameworkId) {
        self.observed.framework_gone(id);
        self.observed.event(move || ClusterEvent::FrameworkRemoved {
            framework_id: id.to_string(),
        });
    }

    /// Stores a framework's report of its waiting tasks (replacing the
    /// previous one). An empty list clears it.
    pub fn report_pending(&mut self, fid: &FrameworkId, tasks: Vec<PendingTask>) -> Result<(), MasterError> {
        self.subscribed(fid)?;
        if tasks.len() > MAX_PENDING_TASKS {
            return Err(MasterError::Invalid(format!(
                "tasks: {} pending tasks reported, at most {MAX_PENDING_TASKS} are accepted",
                tasks.len()
            )));
        }
        for t in &tasks {
            TaskId::parse(&t.task_id)?;
            if t.reason.len() > MAX_REASON_BYTES {
                return Err(MasterError::Invalid(format!(
                    "tasks[{}].reason: {} bytes, at most {MAX_REASON_BYTES}",
                    t.task_id,
                    t.reason.len()
                )));
            }
        }
        if tasks.is_empty() {
            self.observed.pending.remove(fid);
        } else {
            let report = PendingReport {
                reported_at: unix_now(),
                tasks,
            };
            self.observed.pending.insert(fid.clone(), report);
        }
        Ok(())
    }
}
