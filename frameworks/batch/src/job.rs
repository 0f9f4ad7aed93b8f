//! One job's tasks, with no I/O: which tasks are handed to the SDK's
//! [`WorkQueue`] (which launches, retries, times out and cancels them),
//! and what the queue reported of them, recorded as [`Progress`]: the part
//! that must survive a restart, kept in the framework's key-value
//! namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mezzo_sdk::offers::TaskRequest;
use mezzo_sdk::queue::{ItemId, ItemState, Relaunch};
use mezzo_sdk::{Change, Ended, Resources, RetryPolicy, WorkQueue};
use serde::{Deserialize, Serialize};

use crate::spec::{JobSpec, MAX_BACKOFF, MAX_REQUEUES, OnLost};

/// Longest failure reason kept per task (the namespace has a size limit).
const MAX_REASON: usize = 160;
/// Most drops in a row of one task before it counts as a failure: guards
/// against an agent that keeps failing launches.
pub const MAX_DROPS: u32 = 10;

/// Where one task of the array is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Not handed to the work queue yet (its job may not run yet, or
    /// `max_parallel` holds it back).
    Pending,
    /// In the work queue, which launches, retries and times it out; the
    /// queue says whether it waits, backs off or runs.
    Queued(ItemId),
    /// Finished with exit status 0.
    Succeeded,
    /// Failed on its last allowed attempt.
    Failed,
    /// Never ran to the end: the job was cancelled.
    Cancelled,
}

/// A task of a job, as the work queue carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub job: Arc<str>,
    pub index: u32,
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

/// A job in memory.
#[derive(Debug, Clone)]
pub struct Job {
    pub spec: JobSpec,
    pub slots: Vec<Slot>,
    pub progress: Progress,
    done: Vec<u8>,
    /// Progress changed since it was last saved.
    pub dirty: bool,
    /// Its name, shared by the keys of its tasks in the queue.
    name: Arc<str>,
    /// How its tasks are retried, shared by all of them.
    policy: Arc<RetryPolicy>,
    /// What each of its tasks needs (checked when the job was submitted).
    request: TaskRequest,
    /// Tasks in the work queue.
    queued: usize,
    succeeded: usize,
    failed: usize,
    /// No task below this index is pending: where the next search starts.
    cursor: usize,
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
    /// stay so; the rest are pending (the engine adopts running ones as
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
        let slots: Vec<Slot> = (0..n)
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
        let policy = RetryPolicy {
            attempts: spec.retries.saturating_add(1),
            backoff: spec.backoff,
            max_backoff: MAX_BACKOFF,
            max_drops: MAX_DROPS - 1,
            requeue_lost: spec.on_lost == OnLost::Requeue,
            max_requeues: MAX_REQUEUES,
            timeout: spec.timeout,
        };
        Job {
            succeeded: slots.iter().filter(|s| **s == Slot::Succeeded).count(),
            failed: slots.iter().filter(|s| **s == Slot::Failed).count(),
            name: spec.name.as_str().into(),
            policy: Arc::new(policy),
            request: TaskRequest::new(&Resources::parse(&spec.resources_text()).unwrap_or_default()),
            spec,
            slots,
            progress,
            done,
            dirty: false,
            queued: 0,
            cursor: 0,
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

    /// True while tasks may still be handed to the queue.
    fn may_run(&self) -> bool {
        !self.progress.cancelled && self.progress.abandoned.is_none()
    }

    /// Hands pending tasks to `queue`, at most `limit` and as many as
    /// `max_parallel` leaves room for (tasks in the queue count, also
    /// while they back off). Returns how many.
    pub fn feed(&mut self, queue: &mut WorkQueue<Key>, limit: usize) -> usize {
        if !self.may_run() {
            return 0;
        }
        let room = match self.spec.max_parallel {
            0 => limit,
            m => (m as usize).saturating_sub(self.queued).min(limit),
        };
        let mut fed = 0;
        while fed < room && self.cursor < self.slots.len() {
            let index = self.cursor as u32;
            self.cursor += 1;
            if self.slots[index as usize] == Slot::Pending {
                self.enqueue(queue, index);
                fed += 1;
            }
        }
        fed
    }

    fn enqueue(&mut self, queue: &mut WorkQueue<Key>, index: u32) -> ItemId {
        let key = Key {
            job: self.name.clone(),
            index,
        };
        let resume = mezzo_sdk::queue::Resume {
            attempt: self.next_attempt(index),
            requeues: self.progress.requeued.get(&index).copied().unwrap_or(0),
        };
        let id = queue.submit_with(key, self.request.clone(), self.policy.clone(), resume);
        self.slots[index as usize] = Slot::Queued(id);
        self.queued += 1;
        id
    }

    /// One task's resources.
    pub fn resources(&self) -> &Resources {
        &self.request.resources
    }

    /// A task the queue did not launch (the framework restarted; the SDK's
    /// reconciliation reports it): taken as the run of `index` when it is
    /// of the current attempt or later and the index has no other run.
    /// Returns whether it was.
    pub fn adopt(&mut self, queue: &mut WorkQueue<Key>, index: u32, task_id: &str, now: tokio::time::Instant) -> bool {
        let Some(attempt) = attempt_of(task_id) else {
            return false;
        };
        let id = match self.slots.get(index as usize) {
            Some(Slot::Pending) if self.may_run() && attempt >= self.next_attempt(index) => self.enqueue(queue, index),
            Some(Slot::Queued(id)) => *id,
            _ => return false,
        };
        queue.adopt(id, task_id, attempt, now)
    }

    /// Records what the queue reported of `index`.
    pub fn record(&mut self, index: u32, change: &Change<Key>) {
        let i = index as usize;
        self.dirty = true;
        match change {
            Change::Relaunching {
                why: Relaunch::Dropped, ..
            } => self.progress.dropped_relaunched += 1,
            Change::Relaunching { .. } => *self.progress.requeued.entry(index).or_default() += 1,
            Change::Retrying { failure, .. } => self.failed_attempt(index, failure),
            Change::Ended(o) => {
                self.queued = self.queued.saturating_sub(1);
                self.slots[i] = match &o.ended {
                    Ended::Succeeded => {
                        self.done[i / 8] |= 1 << (i % 8);
                        self.succeeded += 1;
                        Slot::Succeeded
                    }
                    Ended::Failed(f) => {
                        self.failed_attempt(index, f);
                        self.progress.failed.insert(index);
                        self.failed += 1;
                        Slot::Failed
                    }
                    Ended::Cancelled => Slot::Cancelled,
                };
            }
        }
    }

    fn failed_attempt(&mut self, index: u32, f: &mezzo_sdk::Failure) {
        self.progress.failed_attempts.insert(index, f.attempt);
        self.progress.failures.insert(
            index,
            Failure {
                attempt: f.attempt,
                state: f.state.name().to_owned(),
                exit_code: f.exit_code,
                reason: f.reason.chars().take(MAX_REASON).collect(),
            },
        );
    }

    /// Cancels the job: nothing more is handed to the queue, and pending
    /// tasks are cancelled; returns the queue's items to cancel.
    pub fn cancel(&mut self) -> Vec<ItemId> {
        if !self.progress.cancelled {
            self.progress.cancelled = true;
            self.dirty = true;
        }
        let mut queued = Vec::new();
        for slot in &mut self.slots {
            match slot {
                Slot::Pending => *slot = Slot::Cancelled,
                Slot::Queued(id) => queued.push(*id),
                _ => {}
            }
        }
        queued
    }

    /// A dependency failed or was cancelled: the job will not run.
    pub fn abandon(&mut self, why: String) {
        if self.progress.abandoned.is_none() {
            self.progress.abandoned = Some(why);
            self.dirty = true;
        }
    }

    /// Where task `index` is, as `status` shows it: its state's name, and
    /// its task id while it runs.
    pub fn task_state<'q>(&self, index: u32, queue: &'q WorkQueue<Key>) -> (&'static str, Option<&'q str>) {
        let skipped = self.progress.abandoned.is_some();
        match self.slots[index as usize] {
            Slot::Pending if skipped => ("skipped", None),
            Slot::Pending => ("pending", None),
            Slot::Queued(id) => match queue.state(id).map(|(s, _)| s) {
                Some(ItemState::Running { task_id, .. }) => ("running", Some(task_id)),
                Some(ItemState::Backoff(_)) => ("backoff", None),
                _ => ("pending", None),
            },
            Slot::Succeeded => ("succeeded", None),
            Slot::Failed => ("failed", None),
            Slot::Cancelled => ("cancelled", None),
        }
    }

    /// Counts of succeeded, failed, running, and retried tasks.
    pub fn counts(&self, queue: &WorkQueue<Key>) -> Counts {
        let mut c = Counts {
            succeeded: self.succeeded,
            failed: self.failed,
            ..Counts::default()
        };
        for (i, slot) in self.slots.iter().enumerate() {
            match slot {
                Slot::Cancelled => c.cancelled += 1,
                Slot::Pending | Slot::Queued(_) => match self.task_state(i as u32, queue).0 {
                    "running" => c.running += 1,
                    "skipped" => c.skipped += 1,
                    _ => c.pending += 1,
                },
                Slot::Succeeded | Slot::Failed => {}
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
        let n = self.slots.len();
        if self.progress.cancelled {
            return if self.queued > 0 {
                JobState::Cancelling
            } else {
                JobState::Cancelled
            };
        }
        if self.progress.abandoned.is_some() {
            return JobState::Skipped;
        }
        if self.succeeded == n {
            return JobState::Succeeded;
        }
        if self.succeeded + self.failed == n {
            return JobState::Failed;
        }
        if !deps_ok && self.queued == 0 {
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

    use mezzo_sdk::{TaskState, v1};
    use tokio::time::Instant;

    use super::*;

    fn spec(count: u32, retries: u32, extra: &str) -> JobSpec {
        let text = format!(
            "[[job]]\nname = \"j\"\ncommand = \"x\"\ncount = {count}\nretries = {retries}\nbackoff = \"1s\"\n{extra}"
        );
        crate::spec::parse(&text, &Default::default()).expect("spec").remove(0)
    }

    fn queue() -> WorkQueue<Key> {
        WorkQueue::new("test", RetryPolicy::default())
    }

    fn status(task: &str, state: TaskState) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: task.into(),
            state: state.to_proto() as i32,
            exit_code: (state == TaskState::Failed).then_some(3),
            message: "boom".into(),
            ..Default::default()
        }
    }

    /// Runs `index` as `task` (what a launch from an offer does) and
    /// feeds its end to the queue and the job.
    fn run(j: &mut Job, q: &mut WorkQueue<Key>, index: u32, task: &str, end: TaskState, now: Instant) {
        assert!(j.adopt(q, index, task, now), "{task} runs");
        if let Some(change) = q.update(&status(task, end), now) {
            j.record(index, &change);
        }
    }

    #[test]
    fn the_policy_follows_the_spec() {
        let j = Job::new(
            spec(1, 2, "timeout = \"5s\"\non_lost = \"fail\"\n"),
            Progress::default(),
        );
        let p = &j.policy;
        assert_eq!(
            (p.attempts, p.backoff, p.max_backoff),
            (3, Duration::from_secs(1), MAX_BACKOFF)
        );
        assert_eq!(
            (p.max_drops, p.requeue_lost, p.max_requeues),
            (MAX_DROPS - 1, false, MAX_REQUEUES)
        );
        assert_eq!(p.timeout, Some(Duration::from_secs(5)));
        assert!(Job::new(spec(1, 0, ""), Progress::default()).policy.requeue_lost);
    }

    #[test]
    fn failed_attempts_and_ends_are_recorded_durably() {
        let now = Instant::now();
        let mut q = queue();
        let mut j = Job::new(spec(2, 1, ""), Progress::default());
        assert_eq!(j.feed(&mut q, 10), 2);
        run(&mut j, &mut q, 0, "j.0.1.1", TaskState::Failed, now);
        assert_eq!(j.progress.failed_attempts[&0], 1);
        let f = &j.progress.failures[&0];
        assert_eq!(
            (f.state.as_str(), f.exit_code, f.reason.as_str()),
            ("TASK_FAILED", Some(3), "boom")
        );
        assert_eq!(j.task_state(0, &q).0, "backoff");
        run(&mut j, &mut q, 0, "j.0.2.1", TaskState::Finished, now);
        run(&mut j, &mut q, 1, "j.1.1.1", TaskState::Failed, now);
        assert_eq!(j.state(true), JobState::Running, "index 1 has a retry left");
        run(&mut j, &mut q, 1, "j.1.2.1", TaskState::Failed, now);
        assert_eq!(j.state(true), JobState::Failed);
        let c = j.counts(&q);
        assert_eq!(
            (c.succeeded, c.failed, c.retried, c.running, c.pending),
            (1, 1, 2, 0, 0)
        );
        assert!(q.is_empty());
        // A restart keeps what ended and the attempts spent.
        let saved = serde_json::to_string(&j.snapshot()).expect("ser");
        let again = Job::new(spec(2, 1, ""), serde_json::from_str(&saved).expect("de"));
        assert_eq!((again.slots[0], again.slots[1]), (Slot::Succeeded, Slot::Failed));
        assert_eq!(again.next_attempt(0), 2);
    }

    #[test]
    fn drops_and_requeues_are_counted_without_spending_an_attempt() {
        let now = Instant::now();
        let mut q = queue();
        let mut j = Job::new(spec(1, 0, ""), Progress::default());
        j.feed(&mut q, 1);
        run(&mut j, &mut q, 0, "j.0.1.1", TaskState::Dropped, now);
        run(&mut j, &mut q, 0, "j.0.1.1.1", TaskState::Lost, now);
        // Its agent resends the loss until the framework acknowledges it.
        assert!(!j.adopt(&mut q, 0, "j.0.1.1.1", now), "counted once");
        assert_eq!(j.progress.dropped_relaunched, 1);
        assert_eq!(j.progress.requeued[&0], 1);
        assert_eq!(j.next_attempt(0), 1);
        // The requeues spent are resumed after a restart.
        let mut again = Job::new(spec(1, 0, ""), j.snapshot());
        let mut q2 = queue();
        again.feed(&mut q2, 1);
        for n in 0..2 {
            run(&mut again, &mut q2, 0, &format!("j.0.1.2.{n}"), TaskState::Lost, now);
        }
        run(&mut again, &mut q2, 0, "j.0.1.2.5", TaskState::Lost, now);
        assert_eq!(again.slots[0], Slot::Failed, "lost 4 times in all");
        assert!(again.progress.failures[&0].reason.starts_with("lost 4 times"));
    }

    #[test]
    fn a_restart_adopts_running_tasks_instead_of_launching_them_again() {
        let now = Instant::now();
        let mut progress = Progress::default();
        progress.failed_attempts.insert(3, 1);
        let mut j = Job::new(spec(5, 2, ""), progress);
        let mut q = queue();
        // Reconciliation reports 1 running, and an old attempt of 3.
        assert!(j.adopt(&mut q, 1, "j.1.1.1", now));
        assert!(!j.adopt(&mut q, 3, "j.3.1.1", now), "attempt 1 of 3 is spent");
        assert_eq!(j.feed(&mut q, 10), 4, "the other four");
        assert_eq!(q.running(), 1);
        assert_eq!(j.task_state(1, &q), ("running", Some("j.1.1.1")));
        // An update of a task the job never had changes nothing.
        assert!(!j.adopt(&mut q, 9, "j.9.1.1", now));
        assert!(!j.adopt(&mut q, 2, "not-ours", now));
    }

    #[test]
    fn max_parallel_counts_the_tasks_in_the_queue() {
        let now = Instant::now();
        let mut q = queue();
        let mut j = Job::new(spec(10, 0, "max_parallel = 3\n"), Progress::default());
        assert_eq!(j.feed(&mut q, 100), 3);
        assert_eq!(j.feed(&mut q, 100), 0);
        run(&mut j, &mut q, 0, "j.0.1.1", TaskState::Finished, now);
        assert_eq!(j.feed(&mut q, 100), 1);
        assert_eq!(j.slots[3], Slot::Queued(3));
    }

    #[test]
    fn cancel_ends_pending_tasks_and_names_the_queued() {
        let mut q = queue();
        let mut j = Job::new(spec(4, 0, "max_parallel = 2\n"), Progress::default());
        j.feed(&mut q, 10);
        assert_eq!(j.cancel(), vec![0, 1]);
        assert_eq!(j.state(true), JobState::Cancelling);
        assert_eq!(j.feed(&mut q, 10), 0, "nothing more runs");
        assert_eq!(j.counts(&q).cancelled, 2);
    }

    #[test]
    fn task_ids_round_trip() {
        let id = task_id("render-1", 42, 3, 7);
        assert_eq!(parse_task_id(&id), Some(("render-1", 42)));
        assert_eq!(attempt_of("render-1.42.3.7.2"), Some(3));
        assert_eq!(parse_task_id("x.1"), None);
        assert_eq!(parse_task_id("x.a.1.1"), None);
    }
}
