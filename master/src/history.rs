//! The bounded history of finished tasks and removed frameworks, kept in
//! the replicated registry (DESIGN.md "Durable state"), so that what a
//! framework ran can still be read after it exits and after a leader
//! fails over (like Mesos' `--max_completed_frameworks` and
//! `--max_completed_tasks_per_framework`, which Mesos keeps in the
//! leader's memory only).
//!
//! The leader batches task ends into one [`RecordTaskEnds`] op a second
//! (see `core`), so the log grows by one entry a second however many tasks
//! end. Applying is deterministic: the bounds are part of the registry
//! ([`SetHistoryBounds`]), never a replica's own flags.
//!
//! [`RecordTaskEnds`]: crate::registry::RegistryOp::RecordTaskEnds
//! [`SetHistoryBounds`]: crate::registry::RegistryOp::SetHistoryBounds

use std::collections::{BTreeMap, VecDeque};

use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use mezzo_proto::reservation::Role;
use mezzo_proto::resources::Resources;
use serde::{Deserialize, Serialize};

/// A record's message is cut to this many bytes: the history keeps what
/// happened, not every word an executor said.
pub const MAX_MESSAGE_BYTES: usize = 256;

/// How much history the registry keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryBounds {
    /// Finished tasks kept per framework, newest kept.
    pub tasks_per_framework: usize,
    /// Removed frameworks kept (with their finished tasks), newest kept.
    pub frameworks: usize,
}

impl Default for HistoryBounds {
    fn default() -> Self {
        HistoryBounds {
            tasks_per_framework: 1000,
            frameworks: 50,
        }
    }
}

/// One finished task, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: TaskId,
    pub framework_id: FrameworkId,
    pub name: String,
    pub agent_id: AgentId,
    pub role: Role,
    pub resources: Resources,
    /// Its final state's name (`TASK_FINISHED`).
    pub state: String,
    /// Its final reason's name (`REASON_COMMAND_EXECUTOR_FAILED`), or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub launched_at: f64,
    pub ended_at: f64,
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
pub fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

impl TaskRecord {
    /// Cuts the message to [`MAX_MESSAGE_BYTES`] on a character boundary.
    pub fn bounded(mut self) -> TaskRecord {
        cut(&mut self.message, MAX_MESSAGE_BYTES);
        self
    }
}

/// A framework that was removed (torn down, or past its failover timeout):
/// what operators see of it, not the whole registry record (so this module
/// stays a leaf the registry uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovedFramework {
    pub id: FrameworkId,
    pub name: String,
    pub principal: String,
    pub roles: Vec<String>,
    /// Unix seconds when its removal was proposed.
    pub removed_at: f64,
}

/// Utilisation samples kept: one hour, one every ten seconds.
pub const SAMPLES_KEPT: usize = 360;

/// One point of the dashboard's utilisation charts (`/api/v1/overview`
/// `samples`): the active agents' resources and the active tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix seconds.
    pub at: f64,
    pub cpus_total: f64,
    pub cpus_allocated: f64,
    pub cpus_offered: f64,
    pub mem_total: u64,
    pub mem_allocated: u64,
    pub mem_offered: u64,
    pub disk_total: u64,
    pub disk_allocated: u64,
    pub active_tasks: usize,
}

/// The history part of the registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub bounds: HistoryBounds,
    /// Finished tasks of registered and of remembered removed frameworks,
    /// oldest first.
    pub tasks: BTreeMap<FrameworkId, VecDeque<TaskRecord>>,
    /// Removed frameworks, oldest first.
    pub removed: VecDeque<RemovedFramework>,
    /// The last hour of utilisation samples, oldest first (at most
    /// [`SAMPLES_KEPT`]), so that a new leader's charts go on.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub samples: VecDeque<Sample>,
}

impl History {
    /// Appends task ends. `known` says whether a framework is registered;
    /// ends of frameworks neither registered nor remembered are dropped.
    pub(crate) fn record(&mut self, records: &[TaskRecord], known: impl Fn(&FrameworkId) -> bool) {
        for r in records {
            let fid = &r.framework_id;
            if !known(fid) && !self.removed.iter().any(|f| &f.id == fid) {
                continue;
            }
            let ring = self.tasks.entry(fid.clone()).or_default();
            ring.push_back(r.clone().bounded());
            while ring.len() > self.bounds.tasks_per_framework {
                ring.pop_front();
            }
        }
    }

    /// Appends utilisation samples, keeping the newest [`SAMPLES_KEPT`].
    pub(crate) fn record_samples(&mut self, samples: &[Sample]) {
        self.samples.extend(samples.iter().cloned());
        while self.samples.len() > SAMPLES_KEPT {
            self.samples.pop_front();
        }
    }

    /// Remembers a removed framework (its finished tasks stay), dropping
    /// the oldest removed ones past the bound.
    pub(crate) fn framework_removed(&mut self, removed: RemovedFramework) {
        self.removed.retain(|f| f.id != removed.id);
        self.removed.push_back(removed);
        self.trim_removed();
    }

    /// Applies new bounds to what is already kept.
    pub(crate) fn set_bounds(&mut self, bounds: HistoryBounds) {
        self.bounds = bounds;
        for ring in self.tasks.values_mut() {
            while ring.len() > bounds.tasks_per_framework {
                ring.pop_front();
            }
        }
        self.trim_removed();
    }

    fn trim_removed(&mut self) {
        while self.removed.len() > self.bounds.frameworks {
            if let Some(old) = self.removed.pop_front() {
                self.tasks.remove(&old.id);
            }
        }
    }

    /// Finished tasks kept, over every framework.
    pub fn task_count(&self) -> usize {
        self.tasks.values().map(VecDeque::len).sum()
    }

    /// About how many bytes the history takes in a registry snapshot
    /// (its JSON, without encoding it: field names, numbers and resources
    /// of a record, then its strings; checked against the real size in
    /// `benches/history.rs`). The heap holds about 1.2 times that.
    pub fn approx_bytes(&self) -> usize {
        const FIXED: usize = 230;
        let tasks: usize = self
            .tasks
            .values()
            .flatten()
            .map(|r| {
                FIXED
                    + r.id.as_str().len()
                    + r.framework_id.as_str().len()
                    + r.agent_id.as_str().len()
                    + r.name.len()
                    + r.role.as_str().len()
                    + r.reason.len()
                    + r.message.len()
            })
            .sum();
        let frameworks: usize = self
            .removed
            .iter()
            .map(|f| FIXED + f.name.len() + f.principal.len())
            .sum();
        tasks + frameworks
    }
}

#[cfg(test)]
mod tests;
