//! A work queue: submit items, each with its resources, and get exactly one
//! [`Outcome`] per item, with retries as a [`RetryPolicy`] says. It does
//! what every framework that runs finite work writes again: a new task id
//! per attempt, launches that never started (`TASK_DROPPED`), were lost,
//! drained or preempted launched again without spending an attempt, backoff
//! between attempts, a timeout per attempt, cancellation, repeated
//! terminal updates (reconciliation) ignored, offers suppressed while
//! nothing waits and revived when something does, and placement through
//! [`plan`](crate::offers::plan) with constraints that follow the tasks.
//!
//! The queue is a plain value owned by the framework's event loop: feed it
//! offers ([`WorkQueue::offers`]), updates ([`WorkQueue::update`]) and a
//! periodic [`WorkQueue::tick`]. Its bookkeeping (this file) does no I/O;
//! the calls to the master are in `io.rs`. It keeps nothing durable: a
//! framework that must survive its own restart records what
//! [`WorkQueue::update`] reports (in its [`Kv`](crate::Kv)), submits what
//! is left again with [`WorkQueue::submit_with`] (attempts already spent)
//! and [`WorkQueue::adopt`]s the tasks reconciliation reports still
//! running. The batch framework is built this way.

mod io;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::v1;
use tokio::time::Instant;

use crate::offers::{Constraint, Location, Placed, Strategy, TaskRequest};
use crate::{Backoff, TaskState, task_state};

pub use io::{Launch, Round, UNCONFIRMED_AFTER};
pub(crate) use io::{REFUSE_IDLE, REFUSE_WAITING};

/// How an item is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Pause before the second attempt; it doubles for each further one.
    pub backoff: Duration,
    /// The longest pause between attempts.
    pub max_backoff: Duration,
    /// Launches that never started (`TASK_DROPPED`) made again, in a row
    /// (a run in between starts the count again); the next drop counts as
    /// a failed attempt. Guards against an agent that fails every launch.
    pub max_drops: u32,
    /// A task lost after it may have started (`TASK_LOST`, `TASK_GONE`) is
    /// launched again within its attempt (like Slurm's `JobRequeue`),
    /// rather than counted as a failed attempt. It may have run before.
    pub requeue_lost: bool,
    /// Launches made again after a loss (with `requeue_lost`) or a drain
    /// (killed with `REASON_AGENT_DRAINING`: no fault of the task, so it
    /// always requeues), per item over all its attempts; past it, the next
    /// counts as a failed attempt.
    pub max_requeues: u32,
    /// A run longer than this is killed and counts as a failed attempt.
    pub timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    /// One attempt; 1 s backoff doubling up to a minute; 10 drops in a
    /// row; lost tasks requeued, 3 requeues; no timeout.
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_drops: 10,
            requeue_lost: true,
            max_requeues: 3,
            timeout: None,
        }
    }
}

impl RetryPolicy {
    /// `n` attempts in all, the rest as the default.
    pub fn attempts(n: u32) -> RetryPolicy {
        RetryPolicy {
            attempts: n.max(1),
            ..RetryPolicy::default()
        }
    }

    /// The pause before attempt `next` (2 or more).
    pub fn pause_before(&self, next: u32) -> Duration {
        let mut b = Backoff::new(self.backoff, self.max_backoff);
        let mut d = self.backoff;
        for _ in 1..next.min(64) {
            d = b.next_delay();
        }
        d
    }
}

/// An item's id in its queue, in submission order.
pub type ItemId = u64;

/// How one attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The attempt (1 for the first).
    pub attempt: u32,
    /// The state it ended in.
    pub state: TaskState,
    /// The command's exit code, when it ran and exited.
    pub exit_code: Option<i32>,
    /// Why, for people: the agent's message, or the queue's ("timed out
    /// after 5s", "dropped 10 times in a row: …", "lost 4 times: …").
    pub reason: String,
}

/// How an item ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// Its last attempt finished (`TASK_FINISHED`).
    Succeeded,
    /// Its last allowed attempt failed.
    Failed(Failure),
    /// [`WorkQueue::cancel`]led.
    Cancelled,
}

/// How one item ended: its payload back, the attempts it took and the
/// update that ended its last one.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<T> {
    /// The item.
    pub id: ItemId,
    /// The payload given to [`WorkQueue::submit`].
    pub payload: T,
    /// How.
    pub ended: Ended,
    /// Attempts made (launches that never started, requeues not counted).
    pub attempts: u32,
    /// The update that ended the last attempt (none for an item cancelled
    /// before it ran).
    pub last: Option<v1::TaskStatus>,
}

impl<T> Outcome<T> {
    /// True when the item's last attempt finished.
    pub fn succeeded(&self) -> bool {
        self.ended == Ended::Succeeded
    }
}

/// Why a launch is made again within its attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relaunch {
    /// It never started (`TASK_DROPPED`).
    Dropped,
    /// It was lost after it may have started, and its policy requeues.
    Lost,
    /// Its agent was drained.
    Drained,
    /// The master preempted it for a task of a higher priority: no fault
    /// of its own, and no limit on how often.
    Preempted,
}

/// What an update changed, for a framework that records progress.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per update, moved to the framework at once; a box would cost an allocation per ended item"
)]
pub enum Change<T> {
    /// The item launches again within its attempt.
    Relaunching {
        /// The item.
        id: ItemId,
        /// Why.
        why: Relaunch,
    },
    /// An attempt failed; the next launches after its backoff.
    Retrying {
        /// The item.
        id: ItemId,
        /// How the attempt failed.
        failure: Failure,
    },
    /// The item ended; it is no longer in the queue.
    Ended(Outcome<T>),
}

impl<T> Change<T> {
    /// The outcome, when the change ended an item.
    pub fn ended(self) -> Option<Outcome<T>> {
        match self {
            Change::Ended(o) => Some(o),
            _ => None,
        }
    }
}

/// Where an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState<'a> {
    /// Waiting for an offer.
    Waiting,
    /// A failed attempt's backoff, until then.
    Backoff(Instant),
    /// Launched (it may also be staging, or out of touch).
    Running {
        /// Its task.
        task_id: &'a str,
        /// Launched (or adopted) then.
        since: Instant,
        /// A kill was asked for (a timeout or a cancellation).
        killing: bool,
    },
}

/// What [`WorkQueue::submit_with`] resumes from: an item's progress
/// before the framework restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The attempt to start at (1 for a fresh item).
    pub attempt: u32,
    /// Requeues already spent.
    pub requeues: u32,
}

impl Default for Resume {
    fn default() -> Self {
        Resume {
            attempt: 1,
            requeues: 0,
        }
    }
}

/// What a task is named from (see [`WorkQueue::naming`]).
#[derive(Debug)]
pub struct Naming<'a, T> {
    /// The item.
    pub item: ItemId,
    /// Its payload.
    pub payload: &'a T,
    /// The attempt, from 1.
    pub attempt: u32,
    /// Launches of this attempt made before this one (0 for the first).
    pub relaunch: u32,
}

type NameFn<T> = Box<dyn Fn(&Naming<'_, T>) -> String + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    Timeout,
    Cancel,
}

#[derive(Debug)]
enum Stage {
    Waiting,
    Backoff(Instant),
    Running {
        task_id: String,
        since: Instant,
        kill: Option<Kill>,
    },
}

#[derive(Debug)]
struct Item<T> {
    payload: T,
    request: TaskRequest,
    policy: Arc<RetryPolicy>,
    /// The current attempt, from 1.
    attempt: u32,
    /// Launches of this attempt made again (the id's `.n`).
    relaunches: u32,
    /// Drops in a row.
    drops: u32,
    /// Requeues over all attempts.
    requeues: u32,
    /// Its tasks that ended while it stayed in the queue (relaunched or
    /// retried): an end of one resent later is not a task to adopt.
    retired: Vec<String>,
    stage: Stage,
}

/// A launch not yet confirmed by an update (see [`UNCONFIRMED_AFTER`]).
#[derive(Debug, Clone)]
struct Unconfirmed {
    agent: String,
    /// When it was launched, or last asked about.
    since: Instant,
    /// How often it was asked about.
    asked: u32,
}

/// Items, their tasks and their places. See the module documentation.
pub struct WorkQueue<T> {
    name: String,
    policy: Arc<RetryPolicy>,
    naming: Option<NameFn<T>>,
    strategy: Strategy,
    constraints: Vec<Constraint>,
    placed: Placed,
    items: HashMap<ItemId, Item<T>>,
    next_id: ItemId,
    /// Waiting items, in submission order.
    ready: BTreeSet<ItemId>,
    /// Items in a backoff, by its end.
    backoffs: BTreeSet<(Instant, ItemId)>,
    /// Running items with a timeout, by its end.
    deadlines: BTreeSet<(Instant, ItemId)>,
    /// Current task id -> item.
    by_task: HashMap<String, ItemId>,
    /// Launched tasks with no update yet, with their agent, when they were
    /// launched or last asked about, and how often they were asked: a
    /// launch whose answer was lost may never have reached the master, and
    /// only a reconciliation tells.
    unconfirmed: HashMap<String, Unconfirmed>,
    /// Kills asked for and not yet confirmed by an end, with when each was
    /// last sent (`None`: not yet).
    kills: HashMap<String, Option<Instant>>,
    /// The task sending kills, while it runs: one at a time, so that the
    /// kills of a cancelled 100,000-task job do not pile up.
    kill_pass: Option<tokio::task::JoinHandle<()>>,
    /// Whether offers are suppressed at the master (`None`: not known,
    /// after a subscription; the next tick settles it).
    suppressed: Option<bool>,
    /// When every running task is next asked about.
    next_reconcile: Option<Instant>,
    /// Since the last subscription, until its implicit reconciliation
    /// ended: the tasks reported meanwhile (only the others are then asked
    /// about).
    since_subscribed: Option<SinceSubscribed>,
}

/// What the queue heard between a subscription and the end of its
/// implicit reconciliation ([`WorkQueue::reconciled`]).
#[derive(Debug, Default)]
struct SinceSubscribed {
    heard: HashSet<String>,
    /// The implicit reconciliation ended.
    reconciled: bool,
    /// When the unheard tasks are asked about anyway (a framework that
    /// does not call `reconciled`); set by the first tick.
    ask_by: Option<Instant>,
}

impl<T> std::fmt::Debug for WorkQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue")
            .field("name", &self.name)
            .field("items", &self.items.len())
            .field("waiting", &self.ready.len())
            .field("running", &self.by_task.len())
            .finish_non_exhaustive()
    }
}

impl<T> WorkQueue<T> {
    /// A queue whose tasks are named `<name>-<item>-<attempt>` (and
    /// `.<n>` for a launch made again within an attempt), placed by
    /// spreading over the hosts.
    pub fn new(name: impl Into<String>, policy: RetryPolicy) -> WorkQueue<T> {
        WorkQueue {
            name: name.into(),
            policy: Arc::new(policy),
            naming: None,
            strategy: Strategy::Spread,
            constraints: Vec::new(),
            placed: Placed::default(),
            items: HashMap::new(),
            next_id: 0,
            ready: BTreeSet::new(),
            backoffs: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            by_task: HashMap::new(),
            unconfirmed: HashMap::new(),
            kills: HashMap::new(),
            kill_pass: None,
            suppressed: None,
            next_reconcile: None,
            since_subscribed: None,
        }
    }

    /// Placement constraints for every item (counted over the queue's
    /// running tasks).
    pub fn constraints(mut self, constraints: Vec<Constraint>) -> Self {
        self.constraints = constraints;
        self
    }

    /// How items are fitted into offers (default: spread).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Names tasks with `f` instead. Every name must be new to the master
    /// (it refuses a task id it has seen), also across restarts of the
    /// framework: put something in it that changes with each start.
    pub fn naming(mut self, f: impl Fn(&Naming<'_, T>) -> String + Send + Sync + 'static) -> Self {
        self.naming = Some(Box::new(f));
        self
    }

    /// Adds an item needing `request`, retried by the queue's policy. It
    /// waits for offers; if they were suppressed (nothing was left to
    /// launch), the next [`WorkQueue::tick`] revives them.
    pub fn submit(&mut self, payload: T, request: TaskRequest) -> ItemId {
        let policy = self.policy.clone();
        self.submit_with(payload, request, policy, Resume::default())
    }

    /// Adds an item with its own policy (share one `Arc` among many
    /// items), resuming from progress made before a restart.
    pub fn submit_with(&mut self, payload: T, request: TaskRequest, policy: Arc<RetryPolicy>, from: Resume) -> ItemId {
        let id = self.next_id;
        self.next_id += 1;
        self.items.insert(
            id,
            Item {
                payload,
                request,
                policy,
                attempt: from.attempt.max(1),
                relaunches: 0,
                drops: 0,
                requeues: from.requeues,
                retired: Vec::new(),
                stage: Stage::Waiting,
            },
        );
        self.ready.insert(id);
        id
    }

    /// Items without an outcome yet.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True once every item has its outcome.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items whose task may be running now.
    pub fn running(&self) -> usize {
        self.by_task.len()
    }

    /// Items waiting for an offer now (not running, not in a backoff).
    pub fn waiting(&self) -> usize {
        self.ready.len()
    }

    /// The item a task id of this queue belongs to, while it is current.
    pub fn item_of(&self, task_id: &str) -> Option<ItemId> {
        self.by_task.get(task_id).copied()
    }

    /// An item's payload, until its outcome.
    pub fn payload(&self, id: ItemId) -> Option<&T> {
        self.items.get(&id).map(|i| &i.payload)
    }

    /// Where an item is, and its current attempt, until its outcome.
    pub fn state(&self, id: ItemId) -> Option<(ItemState<'_>, u32)> {
        let item = self.items.get(&id)?;
        let state = match &item.stage {
            Stage::Waiting => ItemState::Waiting,
            Stage::Backoff(until) => ItemState::Backoff(*until),
            Stage::Running { task_id, since, kill } => ItemState::Running {
                task_id,
                since: *since,
                killing: kill.is_some(),
            },
        };
        Some((state, item.attempt))
    }

    /// Where a task of the queue was placed, while it may run.
    pub fn location(&self, task_id: &str) -> Option<&Location> {
        self.placed.location(task_id)
    }

    /// The task id of item `id`'s next launch.
    fn task_id(&self, id: ItemId, item: &Item<T>) -> String {
        let n = Naming {
            item: id,
            payload: &item.payload,
            attempt: item.attempt,
            relaunch: item.relaunches,
        };
        match &self.naming {
            Some(f) => f(&n),
            None if n.relaunch == 0 => format!("{}-{id}-{}", self.name, n.attempt),
            None => format!("{}-{id}-{}.{}", self.name, n.attempt, n.relaunch),
        }
    }

    /// Takes task `task_id`, which this queue did not launch (reconciliation
    /// reported it after the framework restarted), as the run of waiting
    /// item `id` in `attempt`. Refused (false) when the item already runs a
    /// task or has moved past that attempt.
    pub fn adopt(&mut self, id: ItemId, task_id: &str, attempt: u32, now: Instant) -> bool {
        let Some(item) = self.items.get(&id) else {
            return false;
        };
        if matches!(item.stage, Stage::Running { .. })
            || attempt < item.attempt
            || item.retired.iter().any(|t| t == task_id)
        {
            return false;
        }
        if let Some(item) = self.items.get_mut(&id) {
            item.attempt = attempt;
        }
        self.start(id, task_id.to_owned(), now);
        true
    }

    /// Item `id` runs as `task_id` from `now`, not confirmed yet.
    fn start(&mut self, id: ItemId, task_id: String, now: Instant) {
        let agent = self
            .placed
            .location(&task_id)
            .map(|l| l.agent_id.clone())
            .unwrap_or_default();
        let Some(item) = self.items.get_mut(&id) else { return };
        self.ready.remove(&id);
        if let Stage::Backoff(until) = item.stage {
            self.backoffs.remove(&(until, id));
        }
        if let Some(t) = item.policy.timeout {
            self.deadlines.insert((now + t, id));
        }
        item.stage = Stage::Running {
            task_id: task_id.clone(),
            since: now,
            kill: None,
        };
        self.unconfirmed.insert(
            task_id.clone(),
            Unconfirmed {
                agent,
                since: now,
                asked: 0,
            },
        );
        self.by_task.insert(task_id, id);
    }

    /// Follows a task update. Returns what it changed for the item, if
    /// anything. An update of a task that is not current (a repeated end,
    /// an older attempt) changes nothing.
    pub fn update(&mut self, status: &v1::TaskStatus, now: Instant) -> Option<Change<T>> {
        self.placed.observe(status);
        self.unconfirmed.remove(&status.task_id);
        if let Some(since) = self.since_subscribed.as_mut()
            && self.by_task.contains_key(&status.task_id)
        {
            since.heard.insert(status.task_id.clone());
        }
        let state = task_state(status)?;
        let id = *self.by_task.get(&status.task_id)?;
        if !state.is_terminal() || state == TaskState::Unreachable {
            // Running, or out of touch: it may still run.
            if state == TaskState::Running
                && let Some(item) = self.items.get_mut(&id)
            {
                item.drops = 0;
            }
            return None;
        }
        self.by_task.remove(&status.task_id);
        self.kills.remove(&status.task_id);
        let item = self.items.get_mut(&id)?;
        let Stage::Running { since, kill, .. } = std::mem::replace(&mut item.stage, Stage::Waiting) else {
            return None;
        };
        item.retired.push(status.task_id.clone());
        if let Some(t) = item.policy.timeout {
            self.deadlines.remove(&(since + t, id));
        }
        // A task that finished before its kill landed did succeed.
        if state == TaskState::Finished {
            return self.finish(id, Ended::Succeeded, Some(status));
        }
        if kill == Some(Kill::Cancel) {
            return self.finish(id, Ended::Cancelled, Some(status));
        }
        let drained = state == TaskState::Killed && status.reason == v1::StatusReason::ReasonAgentDraining as i32;
        if kill.is_none() && state == TaskState::Killed && status.reason == v1::StatusReason::ReasonPreempted as i32 {
            return self.relaunch(id, Relaunch::Preempted);
        }
        let lost = matches!(state, TaskState::Lost | TaskState::Gone);
        let policy = item.policy.clone();
        let why = if state == TaskState::Dropped {
            item.drops += 1;
            if item.drops <= policy.max_drops {
                return self.relaunch(id, Relaunch::Dropped);
            }
            item.drops = 0;
            format!("dropped {} times in a row: {}", policy.max_drops + 1, status.message)
        } else if kill.is_none() && (drained || lost && policy.requeue_lost) {
            let what = if drained { Relaunch::Drained } else { Relaunch::Lost };
            if item.requeues < policy.max_requeues {
                item.requeues += 1;
                return self.relaunch(id, what);
            }
            let how = if drained { "drained" } else { "lost" };
            format!("{how} {} times: {}", policy.max_requeues + 1, status.message)
        } else if kill == Some(Kill::Timeout) {
            let t = policy.timeout.unwrap_or_default();
            format!("timed out after {}", humantime::format_duration(t))
        } else if status.message.is_empty() {
            state.name().to_owned()
        } else {
            status.message.clone()
        };
        let failure = Failure {
            attempt: item.attempt,
            state,
            exit_code: status.exit_code,
            reason: why,
        };
        if item.attempt >= policy.attempts {
            return self.finish(id, Ended::Failed(failure), Some(status));
        }
        item.attempt += 1;
        item.relaunches = 0;
        item.drops = 0;
        let until = now + policy.pause_before(item.attempt);
        item.stage = Stage::Backoff(until);
        self.backoffs.insert((until, id));
        Some(Change::Retrying { id, failure })
    }

    /// Item `id` launches again within its attempt, under a new task id.
    fn relaunch(&mut self, id: ItemId, why: Relaunch) -> Option<Change<T>> {
        let item = self.items.get_mut(&id)?;
        item.relaunches += 1;
        item.stage = Stage::Waiting;
        self.ready.insert(id);
        Some(Change::Relaunching { id, why })
    }

    fn finish(&mut self, id: ItemId, ended: Ended, last: Option<&v1::TaskStatus>) -> Option<Change<T>> {
        let item = self.items.remove(&id)?;
        self.ready.remove(&id);
        if let Stage::Backoff(until) = item.stage {
            self.backoffs.remove(&(until, id));
        }
        // An item cancelled before its attempt ran has made one fewer.
        let attempts = if last.is_some() { item.attempt } else { item.attempt - 1 };
        Some(Change::Ended(Outcome {
            id,
            payload: item.payload,
            ended,
            attempts,
            last: last.cloned(),
        }))
    }

    /// Moves ended backoffs to the waiting items; returns the running
    /// tasks past their timeout, now marked as killed.
    fn due(&mut self, now: Instant) -> Vec<String> {
        while let Some(&(until, id)) = self.backoffs.first()
            && until <= now
        {
            self.backoffs.pop_first();
            if let Some(item) = self.items.get_mut(&id) {
                item.stage = Stage::Waiting;
                self.ready.insert(id);
            }
        }
        let mut kill = Vec::new();
        while let Some(&(at, id)) = self.deadlines.first()
            && at <= now
        {
            self.deadlines.pop_first();
            if let Some(Item {
                stage: Stage::Running { task_id, kill: k, .. },
                ..
            }) = self.items.get_mut(&id)
                && k.is_none()
            {
                *k = Some(Kill::Timeout);
                kill.push(task_id.clone());
            }
        }
        kill
    }

    /// Marks item `id` cancelled: one that waits ends now; a running
    /// one's task is to be killed, and its end is its outcome.
    fn cancel_item(&mut self, id: ItemId) -> Cancelling<T> {
        let Some(item) = self.items.get_mut(&id) else {
            return Cancelling::Unknown;
        };
        match &mut item.stage {
            Stage::Running { task_id, kill, .. } => {
                *kill = Some(Kill::Cancel);
                Cancelling::Kill(task_id.clone())
            }
            Stage::Waiting | Stage::Backoff(_) => match self.finish(id, Ended::Cancelled, None) {
                Some(change) => Cancelling::Ended(change),
                None => Cancelling::Unknown,
            },
        }
    }
}

/// What cancelling one item takes.
#[derive(Debug, PartialEq)]
#[allow(clippy::large_enum_variant, reason = "one per cancel, returned at once")]
enum Cancelling<T> {
    /// Killing its task.
    Kill(String),
    /// Nothing more: it ended.
    Ended(Change<T>),
    /// Nothing: it has ended before.
    Unknown,
}

#[cfg(test)]
mod tests;
