//! One job's tasks as an explicit state machine, with no I/O: the engine
//! feeds it launches, status updates, ticks and cancellation, and asks it
//! what to launch or kill next. What must survive a restart is
//! [`Progress`], kept in the framework's key-value namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mezzo_sdk::TaskState;
use serde::{Deserialize, Serialize};

use crate::spec::{JobSpec, MAX_REQUEUES, OnLost};

/// Longest failure reason kept per task (the namespace has a size limit).
const MAX_REASON: usize = 160;
/// Most drops in a row of one task before it counts as a failure: guards
/// against an agent that keeps failing launches.
pub const MAX_DROPS: u32 = 10;

/// Where one task of the array is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// Ready to launch once the job may run.
    Pending,
    /// Failed; waits before its next attempt.
    Backoff { until: Instant },
    /// Launched; `task_id` names this attempt.
    Running {
        task_id: String,
        started: Instant,
        /// Set once we asked the agent to kill it, and why.
        killing: Option<Kill>,
    },
    /// Finished with exit status 0.
    Succeeded,
    /// Failed on its last allowed attempt.
    Failed,
    /// Never ran to the end: the job was cancelled.
    Cancelled,
}

/// Why the framework killed a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    Timeout,
    Cancel,
}

/// How the last failed attempt of a task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The attempt (1 = the first run).
    pub attempt: u32,
    /// Task state it ended in (e.g. `TASK_FAILED`).
    pub state: String,
    /// Exit code, when the command ran and exited.
    pub exit_code: Option<i32>,
    /// Short explanation (agent message, or the framework's).
    pub reason: String,
}

/// The durable part of a job's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Succeeded indices as a bitset, base64.
    #[serde(default)]
    pub done: String,
    /// Indices that failed for good.
    #[serde(default)]
    pub failed: BTreeSet<u32>,
    /// Failed attempts so far, for indices with any.
    #[serde(default)]
    pub failed_attempts: BTreeMap<u32, u32>,
    /// The last failure of each index that had one.
    #[serde(default)]
    pub failures: BTreeMap<u32, Failure>,
    #[serde(default)]
    pub cancelled: bool,
    /// Why the job will not run (a dependency failed).
    #[serde(default)]
    pub abandoned: Option<String>,
    /// Tasks dropped before they started and launched again (no attempt spent).
    #[serde(default)]
    pub dropped_relaunched: u64,
    /// Times each index was lost after it may have started and requeued.
    #[serde(default)]
    pub requeued: BTreeMap<u32, u32>,
}

/// The job's overall state, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its dependencies.
    Waiting,
    Running,
    /// Cancelled; some tasks are still being killed.
    Cancelling,
    Succeeded,
    Failed,
    Cancelled,
    /// Never run: a dependency failed, was cancelled or was skipped
    /// (`abandoned` says which).
    Skipped,
}

impl JobState {
    /// No task of the job will run any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Skipped
        )
    }
}

/// What the engine should do after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing changed (a non-terminal or stale update).
    Nothing,
    /// The task's end was recorded; progress must be saved before the
    /// update is acknowledged.
    Recorded,
}

/// A job in memory.
#[derive(Debug, Clone)]
pub struct Job {
    pub spec: JobSpec,
    pub slots: Vec<Slot>,
    pub progress: Progress,
    done: Vec<u8>,
    /// Progress changed since it was last saved.
    pub dirty: bool,
    /// Launches of an index again within one attempt (after a drop or a
    /// requeue), for the `.{n}` suffix of its next task id.
    relaunches: BTreeMap<u32, u32>,
    /// Drops in a row per index (reset when the task runs).
    drops: BTreeMap<u32, u32>,
    /// The task id each index last gave up on by relaunching it: a resent
    /// update of it changes nothing.
    retired: BTreeMap<u32, String>,
}

/// A task id: `{job}.{index}.{attempt}.{epoch}`. The epoch grows with
/// every start of the framework, so ids never repeat (the master refuses a
/// reused id); a relaunch within one attempt adds `.{n}`.
pub fn task_id(job: &str, index: u32, attempt: u32, epoch: u64) -> String {
    format!("{job}.{index}.{attempt}.{epoch}")
}

/// The job and index a task id names.
pub fn parse_task_id(id: &str) -> Option<(&str, u32)> {
    parse_full(id).map(|(job, index, _)| (job, index))
}

/// The attempt a task id names.
pub fn attempt_of(id: &str) -> Option<u32> {
    parse_full(id).map(|(_, _, attempt)| attempt)
}

/// Job, index and attempt of a task id (with or without a relaunch suffix).
fn parse_full(id: &str) -> Option<(&str, u32, u32)> {
    let mut parts = id.split('.');
    let (job, index, attempt, epoch) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if epoch.parse::<u64>().is_err() || parts.next().is_some_and(|n| n.parse::<u32>().is_err()) {
        return None;
    }
    if parts.next().is_some() {
        return None;
    }
    Some((job, index.parse().ok()?, attempt.parse().ok()?))
}

impl Job {
    /// A job from its spec and saved progress: succeeded and failed tasks
    /// stay so; the rest are pending (the engine marks running ones as
    /// reconciliation reports them).
    pub fn new(spec: JobSpec, progress: Progress) -> Job {
        let n = spec.count as usize;
        let done = STANDARD.decode(&progress.done).unwrap_or_default();
        let mut done = if done.len() == n.div_ceil(8) {
            done
        } else {
            vec![0; n.div_ceil(8)]
        };
        done.resize(n.div_ceil(8), 0);
        let slots = (0..n)
            .map(|i| {
                if done[i / 8] & (1 << (i % 8)) != 0 {
                    Slot::Succeeded
                } else if progress.failed.contains(&(i as u32)) {
                    Slot::Failed
                } else if progress.cancelled {
                    Slot::Cancelled
                } else {
                    Slot::Pending
                }
            })
            .collect();
        Job {
            spec,
            slots,
            progress,
            done,
            dirty: false,
            relaunches: BTreeMap::new(),
            drops: BTreeMap::new(),
            retired: BTreeMap::new(),
        }
    }

    /// The id the next launch of `index` gets in framework epoch `epoch`.
    pub fn next_task_id(&self, index: u32, epoch: u64) -> String {
        let id = task_id(&self.spec.name, index, self.next_attempt(index), epoch);
        match self.relaunches.get(&index) {
            Some(n) if *n > 0 => format!("{id}.{n}"),
            _ => id,
        }
    }

    /// The progress to save (bitset encoded).
    pub fn snapshot(&mut self) -> Progress {
        self.progress.done = STANDARD.encode(&self.done);
        self.progress.clone()
    }

    /// The attempt number the next launch of `index` gets.
    pub fn next_attempt(&self, index: u32) -> u32 {
        self.progress.failed_attempts.get(&index).copied().unwrap_or(0) + 1
    }

    /// Tasks running (or being killed).
    pub fn running(&self) -> usize {
        self.slots.iter().filter(|s| matches!(s, Slot::Running { .. })).count()
    }

    /// Indices that may launch now, at most `limit`, honouring
    /// `max_parallel`.
    pub fn launchable(&self, limit: usize) -> Vec<u32> {
        if self.progress.cancelled || self.progress.abandoned.is_some() {
            return Vec::new();
        }
        let room = match self.spec.max_parallel {
            0 => limit,
            m => (m as usize).saturating_sub(self.running()).min(limit),
        };
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Slot::Pending))
            .map(|(i, _)| i as u32)
            .take(room)
            .collect()
    }

    /// `index` was launched as `task_id`.
    pub fn launched(&mut self, index: u32, task_id: String, now: Instant) {
        if let Some(slot) = self.slots.get_mut(index as usize) {
            *slot = Slot::Running {
                task_id,
                started: now,
                killing: None,
            };
        }
    }

    /// A launch was refused by the master: the task goes back to pending.
    pub fn launch_failed(&mut self, index: u32) {
        if let Some(slot) = self.slots.get_mut(index as usize)
            && matches!(slot, Slot::Running { .. })
        {
            *slot = Slot::Pending;
        }
    }

    /// A status update for `index`. Non-terminal updates of an unknown
    /// attempt adopt it as running (reconciliation after a restart). Only
    /// the current attempt counts: a resent or late update of an attempt
    /// already recorded changes nothing. What each end does is in
    /// docs/batch.md ("Outcome"): DROPPED launches again without spending
    /// an attempt; UNREACHABLE holds the index (the task may still run, so
    /// it is never launched twice); LOST and GONE follow `on_lost`.
    pub fn update(
        &mut self,
        index: u32,
        task_id: &str,
        state: TaskState,
        exit_code: Option<i32>,
        message: &str,
        now: Instant,
    ) -> Outcome {
        self.end(index, task_id, state, exit_code, message, now, false)
    }

    /// The task of `index` was killed because an operator drained its
    /// agent (`REASON_AGENT_DRAINING`): no fault of its own, so it starts
    /// again elsewhere within its attempt (as a lost task with `on_lost =
    /// "requeue"`, up to the same limit), whatever `on_lost` says.
    pub fn drained(&mut self, index: u32, task_id: &str, message: &str, now: Instant) -> Outcome {
        self.end(index, task_id, TaskState::Killed, None, message, now, true)
    }

    #[allow(clippy::too_many_arguments)] // the update's fields, and how to take it
    fn end(
        &mut self,
        index: u32,
        task_id: &str,
        state: TaskState,
        exit_code: Option<i32>,
        message: &str,
        now: Instant,
        drained: bool,
    ) -> Outcome {
        let i = index as usize;
        let Some(slot) = self.slots.get(i).cloned() else {
            return Outcome::Nothing;
        };
        if self.retired.get(&index).is_some_and(|t| t == task_id) {
            return Outcome::Nothing;
        }
        let current = parse_full(task_id).is_some_and(|(_, _, attempt)| attempt >= self.next_attempt(index));
        let tracked = matches!(&slot, Slot::Running { task_id: t, .. } if t == task_id);
        if !state.is_terminal() || state == TaskState::Unreachable {
            // A task the framework did not know it had (it was restarted):
            // adopt it rather than launch the index again.
            if current && matches!(slot, Slot::Pending | Slot::Backoff { .. }) {
                self.slots[i] = Slot::Running {
                    task_id: task_id.to_owned(),
                    started: now,
                    killing: None,
                };
            }
            if tracked && state == TaskState::Running {
                self.drops.remove(&index);
            }
            return Outcome::Nothing;
        }
        if state == TaskState::Dropped {
            // Only the launch the slot waits for: a resent DROPPED, or one
            // of a launch already replaced, must not count again.
            return if tracked {
                self.dropped(index, task_id, message, now)
            } else {
                Outcome::Nothing
            };
        }
        let killing = match &slot {
            Slot::Running {
                task_id: t, killing, ..
            } if t == task_id => *killing,
            // A terminal update of the current attempt that we did not
            // track (we were restarted): count it.
            Slot::Pending | Slot::Backoff { .. } if current => None,
            _ => return Outcome::Nothing,
        };
        self.dirty = true;
        if state == TaskState::Finished {
            self.slots[i] = Slot::Succeeded;
            self.done[i / 8] |= 1 << (i % 8);
            self.forget_relaunches(index);
            return Outcome::Recorded;
        }
        if killing == Some(Kill::Cancel) || self.progress.cancelled {
            self.slots[i] = Slot::Cancelled;
            return Outcome::Recorded;
        }
        let lost = matches!(state, TaskState::Lost | TaskState::Gone);
        if (lost && self.spec.on_lost == OnLost::Requeue || drained) && killing.is_none() {
            let requeued = self.progress.requeued.entry(index).or_default();
            if *requeued < MAX_REQUEUES {
                *requeued += 1;
                self.relaunch(index, task_id);
                return Outcome::Recorded;
            }
        }
        let reason = match killing {
            Some(Kill::Timeout) => format!(
                "timed out after {}",
                humantime::format_duration(self.spec.timeout.unwrap_or_default())
            ),
            _ if drained => format!("drained {} times: {message}", MAX_REQUEUES + 1),
            _ if lost && self.spec.on_lost == OnLost::Requeue => {
                format!("lost {} times: {message}", MAX_REQUEUES + 1)
            }
            _ if message.is_empty() => state.name().to_owned(),
            _ => message.to_owned(),
        };
        self.fail(index, state, exit_code, reason, now)
    }

    /// The tracked launch of `index` was dropped before it started.
    fn dropped(&mut self, index: u32, task_id: &str, message: &str, now: Instant) -> Outcome {
        self.dirty = true;
        if self.progress.cancelled {
            self.slots[index as usize] = Slot::Cancelled;
            return Outcome::Recorded;
        }
        let drops = self.drops.entry(index).or_default();
        *drops += 1;
        if *drops >= MAX_DROPS {
            self.drops.remove(&index);
            let reason = format!("dropped {MAX_DROPS} times in a row: {message}");
            return self.fail(index, TaskState::Dropped, None, reason, now);
        }
        self.progress.dropped_relaunched += 1;
        self.relaunch(index, task_id);
        Outcome::Recorded
    }

    /// `index` launches again within its attempt, under a new task id.
    fn relaunch(&mut self, index: u32, gave_up_on: &str) {
        *self.relaunches.entry(index).or_default() += 1;
        self.retired.insert(index, gave_up_on.to_owned());
        self.slots[index as usize] = Slot::Pending;
    }

    fn forget_relaunches(&mut self, index: u32) {
        self.relaunches.remove(&index);
        self.drops.remove(&index);
        self.retired.remove(&index);
    }

    /// Records a failed attempt of `index`: backoff before the next one,
    /// or failed for good once the retries are spent.
    fn fail(&mut self, index: u32, state: TaskState, exit_code: Option<i32>, reason: String, now: Instant) -> Outcome {
        self.dirty = true;
        let attempt = self.next_attempt(index);
        self.progress.failed_attempts.insert(index, attempt);
        self.progress.failures.insert(
            index,
            Failure {
                attempt,
                state: state.name().to_owned(),
                exit_code,
                reason: reason.chars().take(MAX_REASON).collect(),
            },
        );
        // A new attempt number makes new ids on its own.
        self.relaunches.remove(&index);
        if attempt <= self.spec.retries {
            self.slots[index as usize] = Slot::Backoff {
                until: now + self.spec.backoff_before(attempt + 1),
            };
        } else {
            self.slots[index as usize] = Slot::Failed;
            self.progress.failed.insert(index);
            self.forget_relaunches(index);
        }
        Outcome::Recorded
    }

    /// Moves due backoffs to pending; returns tasks over their timeout to
    /// kill (marked as being killed).
    pub fn tick(&mut self, now: Instant) -> Vec<String> {
        let mut kill = Vec::new();
        for slot in &mut self.slots {
            match slot {
                Slot::Backoff { until } if *until <= now => *slot = Slot::Pending,
                Slot::Running {
                    task_id,
                    started,
                    killing: k @ None,
                } if self.spec.timeout.is_some_and(|t| now.duration_since(*started) >= t) => {
                    *k = Some(Kill::Timeout);
                    kill.push(task_id.clone());
                }
                _ => {}
            }
        }
        kill
    }

    /// Cancels the job: nothing more launches; returns running tasks to kill.
    pub fn cancel(&mut self) -> Vec<String> {
        if !self.progress.cancelled {
            self.progress.cancelled = true;
            self.dirty = true;
        }
        let mut kill = Vec::new();
        for slot in &mut self.slots {
            match slot {
                Slot::Pending | Slot::Backoff { .. } => *slot = Slot::Cancelled,
                Slot::Running { task_id, killing, .. } => {
                    *killing = Some(Kill::Cancel);
                    kill.push(task_id.clone());
                }
                _ => {}
            }
        }
        kill
    }

    /// A dependency failed or was cancelled: the job will not run.
    pub fn abandon(&mut self, why: String) {
        if self.progress.abandoned.is_none() {
            self.progress.abandoned = Some(why);
            self.dirty = true;
        }
    }

    /// Counts of succeeded, failed, running, and retried tasks.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for slot in &self.slots {
            match slot {
                Slot::Succeeded => c.succeeded += 1,
                Slot::Failed => c.failed += 1,
                Slot::Running { .. } => c.running += 1,
                Slot::Cancelled => c.cancelled += 1,
                Slot::Pending | Slot::Backoff { .. } if self.progress.abandoned.is_some() => c.skipped += 1,
                Slot::Pending | Slot::Backoff { .. } => c.pending += 1,
            }
        }
        c.retried = self.progress.failed_attempts.len();
        c.dropped_relaunched = self.progress.dropped_relaunched;
        c.requeued = self.progress.requeued.len();
        c
    }

    /// The job's overall state; `deps_ok` says whether every dependency
    /// has succeeded.
    pub fn state(&self, deps_ok: bool) -> JobState {
        let c = self.counts();
        if self.progress.cancelled {
            return if c.running > 0 {
                JobState::Cancelling
            } else {
                JobState::Cancelled
            };
        }
        if self.progress.abandoned.is_some() {
            return JobState::Skipped;
        }
        if c.succeeded == self.slots.len() {
            return JobState::Succeeded;
        }
        if c.succeeded + c.failed == self.slots.len() {
            return JobState::Failed;
        }
        if !deps_ok && c.running == 0 {
            return JobState::Waiting;
        }
        JobState::Running
    }
}

/// Task counts of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub succeeded: usize,
    pub failed: usize,
    pub running: usize,
    pub pending: usize,
    pub cancelled: usize,
    /// Tasks that will never run: the job was skipped.
    #[serde(default)]
    pub skipped: usize,
    /// Tasks that failed at least once (whatever their end).
    pub retried: usize,
    /// Launches dropped before they started and made again (no attempt spent).
    #[serde(default)]
    pub dropped_relaunched: u64,
    /// Tasks lost after they may have started and requeued (`on_lost`).
    #[serde(default)]
    pub requeued: usize,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec(count: u32, retries: u32) -> JobSpec {
        let text = format!(
            "[[job]]\nname = \"j\"\ncommand = \"x\"\ncount = {count}\nretries = {retries}\nbackoff = \"1s\"\ntimeout = \"5s\"\n"
        );
        crate::spec::parse(&text, &Default::default()).expect("spec").remove(0)
    }

    #[test]
    fn a_flaky_task_retries_after_backoff_then_succeeds() {
        let now = Instant::now();
        let mut j = Job::new(spec(1, 1), Progress::default());
        assert_eq!(j.launchable(10), vec![0]);
        j.launched(0, task_id("j", 0, 1, 1), now);
        let out = j.update(0, "j.0.1.1", TaskState::Failed, Some(3), "exit 3", now);
        assert_eq!(out, Outcome::Recorded);
        assert!(matches!(j.slots[0], Slot::Backoff { .. }));
        assert!(j.launchable(10).is_empty(), "backing off");
        j.tick(now + Duration::from_millis(999));
        assert!(j.launchable(10).is_empty());
        j.tick(now + Duration::from_secs(1));
        assert_eq!(j.launchable(10), vec![0]);
        assert_eq!(j.next_attempt(0), 2);
        j.launched(0, task_id("j", 0, 2, 1), now);
        j.update(0, "j.0.2.1", TaskState::Finished, Some(0), "", now);
        assert_eq!(j.state(true), JobState::Succeeded);
        let c = j.counts();
        assert_eq!((c.succeeded, c.retried), (1, 1));
        assert_eq!(j.progress.failures[&0].exit_code, Some(3));
    }

    #[test]
    fn retries_exhausted_fail_the_task_and_the_job() {
        let now = Instant::now();
        let mut j = Job::new(spec(2, 0), Progress::default());
        j.launched(0, "j.0.1.1".into(), now);
        j.launched(1, "j.1.1.1".into(), now);
        j.update(0, "j.0.1.1", TaskState::Failed, Some(1), "boom", now);
        assert_eq!(j.slots[0], Slot::Failed);
        assert_eq!(j.state(true), JobState::Running);
        j.update(1, "j.1.1.1", TaskState::Finished, Some(0), "", now);
        assert_eq!(j.state(true), JobState::Failed);
    }

    #[test]
    fn timeouts_kill_and_count_as_failures() {
        let now = Instant::now();
        let mut j = Job::new(spec(1, 0), Progress::default());
        j.launched(0, "j.0.1.1".into(), now);
        assert!(j.tick(now + Duration::from_secs(4)).is_empty());
        assert_eq!(j.tick(now + Duration::from_secs(5)), vec!["j.0.1.1".to_owned()]);
        assert!(j.tick(now + Duration::from_secs(6)).is_empty(), "killed once");
        j.update(0, "j.0.1.1", TaskState::Killed, None, "killed", now);
        assert!(j.progress.failures[&0].reason.contains("timed out after 5s"));
        assert_eq!(j.state(true), JobState::Failed);
    }

    #[test]
    fn cancel_kills_running_and_drops_pending() {
        let now = Instant::now();
        let mut j = Job::new(spec(3, 0), Progress::default());
        j.launched(0, "j.0.1.1".into(), now);
        assert_eq!(j.cancel(), vec!["j.0.1.1".to_owned()]);
        assert_eq!(j.state(true), JobState::Cancelling);
        assert!(j.launchable(10).is_empty());
        j.update(0, "j.0.1.1", TaskState::Killed, None, "", now);
        assert_eq!(j.state(true), JobState::Cancelled);
        assert_eq!(j.counts().cancelled, 3);
    }

    #[test]
    fn progress_survives_a_restart_and_running_tasks_are_adopted() {
        let now = Instant::now();
        let mut j = Job::new(spec(20, 1), Progress::default());
        for i in 0..20 {
            j.launched(i, task_id("j", i, 1, 1), now);
        }
        for i in 0..10 {
            j.update(i, &task_id("j", i, 1, 1), TaskState::Finished, Some(0), "", now);
        }
        j.update(10, &task_id("j", 10, 1, 1), TaskState::Failed, Some(1), "x", now);
        let saved = serde_json::to_string(&j.snapshot()).expect("ser");
        let mut again = Job::new(spec(20, 1), serde_json::from_str(&saved).expect("de"));
        assert_eq!(again.counts().succeeded, 10, "finished tasks are not rerun");
        assert_eq!(again.next_attempt(10), 2, "the failed attempt is remembered");
        // Reconciliation reports index 11 still running: adopted, not relaunched.
        again.update(11, &task_id("j", 11, 1, 1), TaskState::Running, None, "", now);
        let launch = again.launchable(100);
        assert!(!launch.contains(&11) && !launch.contains(&5), "{launch:?}");
        assert_eq!(launch.len(), 9, "10 and 12..20");
    }

    /// The agent resends an update until it is acknowledged, and the
    /// framework acknowledges only after saving: a resent failure must
    /// not count twice.
    #[test]
    fn a_resent_failure_counts_once() {
        let now = Instant::now();
        let mut j = Job::new(spec(1, 3), Progress::default());
        j.launched(0, task_id("j", 0, 1, 1), now);
        assert_eq!(
            j.update(0, "j.0.1.1", TaskState::Failed, Some(3), "", now),
            Outcome::Recorded
        );
        assert_eq!(
            j.update(0, "j.0.1.1", TaskState::Failed, Some(3), "", now),
            Outcome::Nothing
        );
        assert_eq!(j.next_attempt(0), 2);
        // A late RUNNING of the failed attempt is not adopted either.
        j.update(0, "j.0.1.1", TaskState::Running, None, "", now);
        assert!(matches!(j.slots[0], Slot::Backoff { .. }));
        j.tick(now + Duration::from_secs(5));
        j.launched(0, task_id("j", 0, 2, 1), now);
        j.update(0, "j.0.2.1", TaskState::Finished, Some(0), "", now);
        assert_eq!(
            j.update(0, "j.0.2.1", TaskState::Finished, Some(0), "", now),
            Outcome::Nothing
        );
        assert_eq!(j.counts().retried, 1);
        assert_eq!(j.progress.failures[&0].attempt, 1);
    }

    #[test]
    fn max_parallel_caps_launches() {
        let now = Instant::now();
        let mut s = spec(10, 0);
        s.max_parallel = 3;
        let mut j = Job::new(s, Progress::default());
        assert_eq!(j.launchable(100), vec![0, 1, 2]);
        j.launched(0, "j.0.1.1".into(), now);
        assert_eq!(j.launchable(100).len(), 2);
    }

    #[test]
    fn task_ids_round_trip() {
        let id = task_id("render-1", 42, 3, 7);
        assert_eq!(parse_task_id(&id), Some(("render-1", 42)));
        assert_eq!(parse_task_id("x.1"), None);
        assert_eq!(parse_task_id("x.a.1.1"), None);
        assert!(mezzo_sdk::v1::TaskInfo::default().task_id.is_empty());
    }
}

#[cfg(test)]
mod outcome_tests;
