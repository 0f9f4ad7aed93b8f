//! What `list` and `status` show.

use serde::{Deserialize, Serialize};

use super::runs::Run;
use super::{BatchError, State};
use crate::job::{Counts, JobState, Slot};

/// Most tasks listed by `status` unless all are asked for.
const MAX_LISTED: usize = 1000;

/// One line of `mezzo batch list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub name: String,
    pub state: JobState,
    /// Tasks in the job (1 for a single task).
    pub count: u32,
    pub counts: Counts,
    pub depends_on: Vec<String>,
    /// Unix seconds.
    pub submitted_at: f64,
    /// Why the job will not run, when a dependency failed.
    pub abandoned: Option<String>,
}

/// One task of `mezzo batch status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub index: u32,
    /// pending, backoff, running, succeeded, failed, cancelled, skipped.
    pub state: String,
    /// Attempts started so far.
    pub attempts: u32,
    /// Exit code of the last failed attempt.
    pub exit_code: Option<i32>,
    /// How the last failed attempt ended.
    pub reason: Option<String>,
    /// The running attempt's task id.
    pub task_id: Option<String>,
    /// Its runs since the framework started, oldest first (at most 8):
    /// task id, attempt, agent and host, start, end, state, exit code.
    #[serde(default)]
    pub runs: Vec<Run>,
}

/// `mezzo batch status NAME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub command: String,
    /// Tasks that are not plainly succeeded (all with `?all=true`); at
    /// most 1000.
    pub tasks: Vec<TaskView>,
    /// True when `tasks` was cut at the limit.
    pub truncated: bool,
}

impl State {
    pub(super) fn summary(&self, name: &str) -> Option<JobSummary> {
        let job = self.jobs.get(name)?;
        Some(JobSummary {
            name: name.to_owned(),
            state: job.state(self.deps_ok(job)),
            count: job.spec.count,
            counts: job.counts(&self.queue),
            depends_on: job.spec.depends_on.clone(),
            submitted_at: self.submitted_at.get(name).copied().unwrap_or(0.0),
            abandoned: job.progress.abandoned.clone(),
        })
    }

    /// A job's status with its unfinished or failed tasks (`all`: every
    /// task; `only`: that one task).
    pub(super) fn status(&self, name: &str, all: bool, only: Option<u32>) -> Result<JobStatus, BatchError> {
        let summary = self
            .summary(name)
            .ok_or_else(|| BatchError::UnknownJob(name.to_owned()))?;
        let job = &self.jobs[name];
        if let Some(index) = only.filter(|i| *i >= job.spec.count) {
            return Err(BatchError::BadIndex {
                job: name.to_owned(),
                index,
                count: job.spec.count,
            });
        }
        let mut tasks = Vec::new();
        let mut truncated = false;
        let slots = job.slots.iter().enumerate();
        let slots = slots
            .skip(only.map_or(0, |i| i as usize))
            .take(only.map_or(usize::MAX, |_| 1));
        for (i, slot) in slots {
            let index = i as u32;
            let failure = job.progress.failures.get(&index);
            if !all && only.is_none() && *slot == Slot::Succeeded && failure.is_none() {
                continue;
            }
            if tasks.len() == MAX_LISTED {
                truncated = true;
                break;
            }
            let (state, task_id) = job.task_state(index, &self.queue);
            let failed_attempts = job.progress.failed_attempts.get(&index).copied().unwrap_or(0);
            let attempts = failed_attempts + u32::from(matches!(state, "succeeded" | "running"));
            tasks.push(TaskView {
                index,
                state: state.to_owned(),
                attempts,
                exit_code: failure.and_then(|f| f.exit_code),
                reason: failure.map(|f| f.reason.clone()),
                task_id: task_id.map(str::to_owned),
                runs: self.runs.of(name, index).cloned().collect(),
            });
        }
        Ok(JobStatus {
            summary,
            command: job.spec.command.clone(),
            tasks,
            truncated,
        })
    }
}
