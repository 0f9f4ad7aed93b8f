//! Every run of each task since this framework started: task id, attempt,
//! agent, host, start, end and outcome, for `batch status` (elapsed times,
//! where it ran) and `batch logs --attempt` (the output of an earlier
//! attempt). Kept in memory and bounded per task: the durable progress
//! (attempts spent, last failure) lives in the job records.

use std::collections::{HashMap, VecDeque};

use mezzo_sdk::offers::Location;
use mezzo_sdk::{TaskState, task_state, v1};
use serde::{Deserialize, Serialize};

use crate::job;

/// Runs kept per task, the newest: enough for every attempt of a task
/// with a few retries, and bounded for arrays of 100,000 tasks.
const KEPT: usize = 8;

/// One launch of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub task_id: String,
    /// Its attempt (1 for the first); relaunches after a drop or a loss
    /// share their attempt's number.
    pub attempt: u32,
    pub agent_id: String,
    /// The agent's host name, when the launch was ours (empty for a task
    /// adopted after a restart).
    pub host: String,
    /// Unix seconds.
    pub launched_at: f64,
    /// Unix seconds, once it ended.
    pub ended_at: Option<f64>,
    /// Its latest state (`TASK_RUNNING`, `TASK_FAILED`, …).
    pub state: String,
    pub exit_code: Option<i32>,
}

/// Runs by (job, index), newest last.
#[derive(Debug, Default)]
pub(super) struct Runs {
    by_task: HashMap<(String, u32), VecDeque<Run>>,
}

impl Runs {
    /// We launched `task_id` at `at`.
    pub(super) fn launched(&mut self, name: &str, index: u32, task_id: &str, at: &Location, now: f64) {
        self.push(
            name,
            index,
            Run {
                task_id: task_id.to_owned(),
                attempt: job::attempt_of(task_id).unwrap_or(1),
                agent_id: at.agent_id.clone(),
                host: at.hostname.clone(),
                launched_at: now,
                ended_at: None,
                state: TaskState::Staging.name().to_owned(),
                exit_code: None,
            },
        );
    }

    /// An update of one of our tasks (one not seen launched is adopted: a
    /// run from before this framework's restart).
    pub(super) fn update(&mut self, name: &str, index: u32, status: &v1::TaskStatus, now: f64) {
        let Some(state) = task_state(status) else { return };
        let key = (name.to_owned(), index);
        let run = self
            .by_task
            .get_mut(&key)
            .and_then(|runs| runs.iter_mut().find(|r| r.task_id == status.task_id));
        let Some(run) = run else {
            if state.is_terminal() {
                return; // an old end resent: nothing to show
            }
            let launched_at = if status.timestamp > 0.0 { status.timestamp } else { now };
            self.push(
                name,
                index,
                Run {
                    task_id: status.task_id.clone(),
                    attempt: job::attempt_of(&status.task_id).unwrap_or(1),
                    agent_id: status.agent_id.clone(),
                    host: String::new(),
                    launched_at,
                    ended_at: None,
                    state: state.name().to_owned(),
                    exit_code: None,
                },
            );
            return;
        };
        if run.ended_at.is_some() {
            return; // a resent end
        }
        if !status.agent_id.is_empty() {
            run.agent_id.clone_from(&status.agent_id);
        }
        run.state = state.name().to_owned();
        if state.is_terminal() && state != TaskState::Unreachable {
            run.ended_at = Some(if status.timestamp > 0.0 { status.timestamp } else { now });
            run.exit_code = status.exit_code;
        }
    }

    fn push(&mut self, name: &str, index: u32, run: Run) {
        let runs = self.by_task.entry((name.to_owned(), index)).or_default();
        if runs.len() == KEPT {
            runs.pop_front();
        }
        runs.push_back(run);
    }

    /// The runs of one task, oldest first.
    pub(super) fn of(&self, name: &str, index: u32) -> impl Iterator<Item = &Run> {
        self.by_task.get(&(name.to_owned(), index)).into_iter().flatten()
    }

    /// The latest run of one task; with `attempt`, the latest of that
    /// attempt.
    pub(super) fn latest(&self, name: &str, index: u32, attempt: Option<u32>) -> Option<&Run> {
        self.of(name, index)
            .filter(|r| attempt.is_none_or(|a| r.attempt == a))
            .last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(task: &str, state: TaskState, at: f64) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: task.into(),
            state: state.to_proto() as i32,
            agent_id: "a1".into(),
            timestamp: at,
            exit_code: state.is_terminal().then_some(2),
            ..Default::default()
        }
    }

    #[test]
    fn runs_follow_launches_and_updates_per_attempt() {
        let offer = Location {
            agent_id: "a1".into(),
            hostname: "h1".into(),
            attributes: Vec::new(),
        };
        let mut r = Runs::default();
        r.launched("j", 0, "j.0.1.1", &offer, 100.0);
        r.update("j", 0, &status("j.0.1.1", TaskState::Running, 101.0), 101.0);
        r.update("j", 0, &status("j.0.1.1", TaskState::Failed, 105.0), 105.0);
        // A resent end changes nothing.
        r.update("j", 0, &status("j.0.1.1", TaskState::Failed, 200.0), 200.0);
        r.launched("j", 0, "j.0.2.1", &offer, 110.0);
        let first = r.latest("j", 0, Some(1)).expect("attempt 1");
        assert_eq!(
            (first.ended_at, first.exit_code, first.host.as_str()),
            (Some(105.0), Some(2), "h1")
        );
        assert_eq!(first.state, "TASK_FAILED");
        let second = r.latest("j", 0, None).expect("latest");
        assert_eq!((second.attempt, second.ended_at), (2, None));
        assert!(r.latest("j", 0, Some(3)).is_none());
        // Adopted after a restart: a run is made from its update.
        r.update("j", 1, &status("j.1.3.1", TaskState::Running, 50.0), 120.0);
        let adopted = r.latest("j", 1, None).expect("adopted");
        assert_eq!((adopted.attempt, adopted.launched_at), (3, 50.0));
        // Bounded per task.
        for k in 0..20 {
            r.launched("j", 2, &format!("j.2.{}.1", k + 1), &offer, 0.0);
        }
        assert_eq!(r.of("j", 2).count(), KEPT);
        assert_eq!(r.latest("j", 2, None).map(|r| r.attempt), Some(20));
    }
}
