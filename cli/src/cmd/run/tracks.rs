//! What `mezzo run` knows of each task: when it reached each state, how it
//! ended, and which task stands in for one that was dropped. No I/O, so
//! the relaunch rule is tested on its own.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

// The clock agents stamp updates with, for `--timeline`.
use mezzo_proto::clock::unix_now;
use mezzo_sdk::{TaskState, task_state, v1};

/// Times one task may be dropped and relaunched; the last drop is its
/// outcome (an agent that drops every launch would otherwise loop).
pub const MAX_DROPS: u32 = 10;

/// One launched task.
#[derive(Debug, Default)]
pub struct TaskTrack {
    pub accepted: Option<Instant>,
    pub starting: Option<Instant>,
    pub running: Option<Instant>,
    /// When it ended, and its last status.
    pub done: Option<(Instant, v1::TaskStatus)>,
    /// For `--timeline`: the Accept's wall-clock time, and each update's
    /// (state, agent's timestamp, arrival).
    pub accepted_at: f64,
    pub agent_id: String,
    pub updates: Vec<(&'static str, f64, f64)>,
    /// The task this one relaunches (`None`: itself, a first launch).
    origin: Option<String>,
    /// How many times the origin was dropped before this launch.
    drops: u32,
    /// Dropped and relaunched under another id: not an outcome.
    pub superseded: bool,
}

impl TaskTrack {
    /// The outcome this task counts for: its end, unless it was relaunched.
    pub fn outcome(&self) -> Option<&(Instant, v1::TaskStatus)> {
        self.done.as_ref().filter(|_| !self.superseded)
    }
}

/// What an update meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// About no task of this run, an unknown state, or after its end.
    Nothing,
    /// A step on the way (STARTING, or a state seen before).
    Progress,
    /// It runs (the first RUNNING): its output can be followed.
    Running,
    /// It ended; `done` counts it.
    Ended,
    /// It was dropped before it started and runs again as `new`.
    Relaunched { new: String },
}

/// Every task of the run.
#[derive(Debug, Default)]
pub struct Tracks {
    pub by_id: HashMap<String, TaskTrack>,
    /// Ids to launch before any new task: relaunches of dropped ones.
    pub relaunch: VecDeque<String>,
    /// Tasks ended for good (relaunched ones are not).
    pub done: usize,
    /// Keep each update's times (`--timeline`).
    pub timeline: bool,
}

impl Tracks {
    /// Stamps a task's Accept.
    pub fn accepted(&mut self, id: &str, at: Instant, wall: f64) {
        let t = self.by_id.entry(id.to_owned()).or_default();
        t.accepted = Some(at);
        t.accepted_at = wall;
    }

    /// Records an update's arrival.
    pub fn update(&mut self, status: &v1::TaskStatus) -> Seen {
        let Some(state) = task_state(status) else {
            return Seen::Nothing;
        };
        let Some(t) = self.by_id.get_mut(&status.task_id) else {
            return Seen::Nothing;
        };
        if self.timeline {
            t.updates.push((state.name(), status.timestamp, unix_now()));
            if t.agent_id.is_empty() {
                t.agent_id = status.agent_id.clone();
            }
        }
        if t.done.is_some() {
            return Seen::Nothing;
        }
        let now = Instant::now();
        match state {
            TaskState::Starting if t.starting.is_none() => t.starting = Some(now),
            TaskState::Running if t.running.is_none() => {
                t.running = Some(now);
                return Seen::Running;
            }
            s if s.is_terminal() => {
                t.done = Some((now, status.clone()));
                if s == TaskState::Dropped && t.drops < MAX_DROPS {
                    t.superseded = true;
                    let origin = t.origin.clone().unwrap_or_else(|| status.task_id.clone());
                    let drops = t.drops + 1;
                    let new = format!("{origin}.r{drops}");
                    let next = TaskTrack {
                        origin: Some(origin),
                        drops,
                        ..Default::default()
                    };
                    self.by_id.insert(new.clone(), next);
                    self.relaunch.push_back(new.clone());
                    return Seen::Relaunched { new };
                }
                self.done += 1;
                return Seen::Ended;
            }
            _ => {}
        }
        Seen::Progress
    }

    /// Tasks running or ended for good (what `--detach` waits for).
    pub fn running_or_done(&self) -> usize {
        self.by_id
            .values()
            .filter(|t| !t.superseded && (t.running.is_some() || t.done.is_some()))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str, state: v1::TaskState) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: id.into(),
            state: state as i32,
            ..Default::default()
        }
    }

    fn launched(ids: &[&str]) -> Tracks {
        let mut t = Tracks::default();
        for id in ids {
            t.accepted(id, Instant::now(), 0.0);
        }
        t
    }

    /// DESIGN.md "Tasks": DROPPED means the process never started, so it
    /// is safe to launch again: a new id, not counted as done.
    #[test]
    fn a_dropped_task_is_relaunched_under_a_new_id_and_not_counted() {
        let mut t = launched(&["r-0"]);
        assert_eq!(t.update(&status("r-0", v1::TaskState::TaskStarting)), Seen::Progress);
        let seen = t.update(&status("r-0", v1::TaskState::TaskDropped));
        assert_eq!(seen, Seen::Relaunched { new: "r-0.r1".into() });
        assert_eq!((t.done, t.relaunch.len()), (0, 1));
        // A resent DROPPED changes nothing.
        assert_eq!(t.update(&status("r-0", v1::TaskState::TaskDropped)), Seen::Nothing);
        assert_eq!(t.relaunch.len(), 1);
        // The relaunch is named after the first launch, not after itself.
        t.accepted("r-0.r1", Instant::now(), 0.0);
        let seen = t.update(&status("r-0.r1", v1::TaskState::TaskDropped));
        assert_eq!(seen, Seen::Relaunched { new: "r-0.r2".into() });
        assert_eq!(t.update(&status("r-0.r2", v1::TaskState::TaskRunning)), Seen::Running);
        assert_eq!(t.update(&status("r-0.r2", v1::TaskState::TaskFinished)), Seen::Ended);
        assert_eq!(t.done, 1);
        let outcomes: Vec<_> = t.by_id.values().filter_map(TaskTrack::outcome).collect();
        assert_eq!(outcomes.len(), 1, "the drops are not outcomes");
    }

    #[test]
    fn drops_are_capped() {
        let mut t = launched(&["r-0"]);
        let mut id = "r-0".to_owned();
        for n in 1..=MAX_DROPS {
            match t.update(&status(&id, v1::TaskState::TaskDropped)) {
                Seen::Relaunched { new } => id = new,
                other => panic!("drop {n}: {other:?}"),
            }
        }
        assert_eq!(id, format!("r-0.r{MAX_DROPS}"));
        assert_eq!(t.update(&status(&id, v1::TaskState::TaskDropped)), Seen::Ended);
        assert_eq!(t.done, 1);
    }

    #[test]
    fn other_ends_count_once_and_unknown_tasks_are_ignored() {
        let mut t = launched(&["a", "b"]);
        assert_eq!(t.update(&status("zz", v1::TaskState::TaskFinished)), Seen::Nothing);
        assert_eq!(t.update(&status("a", v1::TaskState::TaskLost)), Seen::Ended);
        assert_eq!(t.update(&status("a", v1::TaskState::TaskLost)), Seen::Nothing);
        assert_eq!(t.update(&status("b", v1::TaskState::TaskRunning)), Seen::Running);
        assert_eq!(t.update(&status("b", v1::TaskState::TaskRunning)), Seen::Progress);
        assert_eq!(t.running_or_done(), 2);
        assert_eq!((t.done, t.relaunch.len()), (1, 0));
    }
}
