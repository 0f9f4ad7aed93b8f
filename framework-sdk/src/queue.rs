//! A work queue: submit items, each with its resources, and get exactly one
//! [`Outcome`] per item, with retries as a [`RetryPolicy`] says. It does
//! what every framework that runs finite work writes again: a new task id
//! per attempt, launches that never started (`TASK_DROPPED`) or were
//! drained launched again without spending an attempt, backoff between
//! attempts, repeated terminal updates (reconciliation) ignored, offers
//! suppressed while nothing waits and revived when something does, and
//! placement through [`plan`](crate::offers::plan) with constraints that
//! follow the tasks.
//!
//! The queue is a plain value owned by the framework's event loop: feed it
//! offers ([`WorkQueue::offers`]), updates ([`WorkQueue::update`]) and a
//! periodic [`WorkQueue::tick`]. It keeps nothing durable: a framework that
//! must survive its own restart records outcomes itself (in its
//! [`Kv`](crate::Kv)) and submits what is left again.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mezzo_proto::v1;
use tokio::time::Instant;

use crate::offers::{Constraint, Placed, Strategy, TaskRequest, plan};
use crate::{Backoff, Scheduler, TaskBuilder, TaskState, task_state};

/// How an item is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Pause before the second attempt; it doubles for each further one.
    pub backoff: Duration,
    /// The longest pause between attempts.
    pub max_backoff: Duration,
    /// Launches of one attempt made again, at most, after they never
    /// started (`TASK_DROPPED`) or were killed by a drain: these cost no
    /// attempt. Past it, the next one counts as a failed attempt.
    pub max_relaunches: u32,
}

impl Default for RetryPolicy {
    /// One attempt; 1 s backoff doubling up to a minute; 10 relaunches.
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_relaunches: 10,
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
    fn pause_before(&self, next: u32) -> Duration {
        let mut b = Backoff::new(self.backoff, self.max_backoff);
        let mut d = self.backoff;
        for _ in 1..next {
            d = b.next_delay();
        }
        d
    }
}

/// An item's id in its queue, in submission order.
pub type ItemId = u64;

/// How one item ended: its payload back, the attempts it took and the
/// update that ended its last one.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<T> {
    /// The item.
    pub id: ItemId,
    /// The payload given to [`WorkQueue::submit`].
    pub payload: T,
    /// True when its last attempt finished (`TASK_FINISHED`).
    pub succeeded: bool,
    /// Attempts made (launches that never started not counted).
    pub attempts: u32,
    /// The update that ended the last attempt.
    pub last: v1::TaskStatus,
}

#[derive(Debug)]
struct Item<T> {
    payload: T,
    request: TaskRequest,
    /// The current attempt, from 1.
    attempt: u32,
    /// Launches of this attempt made again.
    relaunches: u32,
    /// Not launched before this (a retry's backoff).
    not_before: Option<Instant>,
    /// The task of the current launch, while it may run.
    task_id: Option<String>,
}

/// Items, their tasks and their places. See the module documentation.
#[derive(Debug)]
pub struct WorkQueue<T> {
    name: String,
    policy: RetryPolicy,
    strategy: Strategy,
    constraints: Vec<Constraint>,
    placed: Placed,
    items: BTreeMap<ItemId, Item<T>>,
    next_id: ItemId,
    /// Current task id -> item.
    by_task: HashMap<String, ItemId>,
    /// Launched tasks with no update yet, with their agent and when they
    /// were last asked about: a launch whose answer was lost may never
    /// have reached the master, and only a reconciliation tells.
    unconfirmed: HashMap<String, (String, Instant)>,
    /// Offers are suppressed (nothing waited when last looked).
    suppressed: bool,
}

/// How long unused offers are refused while items wait for room (offers
/// grow as tasks end) and while none does (a revive ends the filter).
pub(crate) const REFUSE_WAITING: f64 = 1.0;
pub(crate) const REFUSE_IDLE: f64 = 30.0;

/// A launch with no update for this long is asked about.
pub const UNCONFIRMED_AFTER: Duration = Duration::from_secs(10);

impl<T> WorkQueue<T> {
    /// A queue whose tasks are named `<name>-<item>-<attempt>` (and
    /// `.<n>` for a launch made again within an attempt), placed by
    /// spreading over the hosts.
    pub fn new(name: impl Into<String>, policy: RetryPolicy) -> WorkQueue<T> {
        WorkQueue {
            name: name.into(),
            policy,
            strategy: Strategy::Spread,
            constraints: Vec::new(),
            placed: Placed::default(),
            items: BTreeMap::new(),
            next_id: 0,
            by_task: HashMap::new(),
            unconfirmed: HashMap::new(),
            suppressed: false,
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

    /// Adds an item needing `request`. It waits for offers; if they were
    /// suppressed (nothing was left to launch), the next [`WorkQueue::tick`]
    /// revives them.
    pub fn submit(&mut self, payload: T, request: TaskRequest) -> ItemId {
        let id = self.next_id;
        self.next_id += 1;
        self.items.insert(
            id,
            Item {
                payload,
                request,
                attempt: 1,
                relaunches: 0,
                not_before: None,
                task_id: None,
            },
        );
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

    /// The item a task id of this queue belongs to, while it is current.
    pub fn item_of(&self, task_id: &str) -> Option<ItemId> {
        self.by_task.get(task_id).copied()
    }

    fn task_id(&self, id: ItemId, item: &Item<T>) -> String {
        match item.relaunches {
            0 => format!("{}-{id}-{}", self.name, item.attempt),
            n => format!("{}-{id}-{}.{n}", self.name, item.attempt),
        }
    }

    /// Items that wait and may launch at `now`.
    fn due(&self, now: Instant) -> impl Iterator<Item = (ItemId, &Item<T>)> {
        self.items
            .iter()
            .filter(move |(_, i)| i.task_id.is_none() && i.not_before.is_none_or(|t| t <= now))
            .map(|(id, i)| (*id, i))
    }

    /// Places what is due on `offers` and launches it: each task built by
    /// `build` from the item's payload and a [`TaskBuilder`] that already
    /// carries the task's id and resources. Unused offers are declined;
    /// with nothing left waiting, offers are suppressed until there is.
    pub async fn offers(
        &mut self,
        scheduler: &Scheduler,
        offers: Vec<v1::Offer>,
        mut build: impl FnMut(&T, TaskBuilder) -> TaskBuilder,
        now: Instant,
    ) {
        let work: Vec<(TaskRequest, ItemId)> = self.due(now).map(|(id, i)| (i.request.clone(), id)).collect();
        let plan = match plan(&offers, work, self.strategy, &self.constraints, &mut self.placed) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("offers with resources that do not parse: {e}");
                let ids = offers.into_iter().map(|o| o.offer_id).collect();
                let _ = scheduler.decline(ids, Some(REFUSE_WAITING)).await;
                return;
            }
        };
        let refuse = if plan.unplaced.is_empty() {
            REFUSE_IDLE
        } else {
            REFUSE_WAITING
        };
        let mut placed = std::mem::take(&mut self.placed);
        let done = scheduler
            .launch(plan, &mut placed, Some(refuse), |a| {
                let item = &self.items[&a.payload];
                let task = TaskBuilder::new(self.task_id(a.payload, item)).resources(&a.resources);
                build(&item.payload, task).build()
            })
            .await;
        self.placed = placed;
        for (task_id, id) in done.launched {
            self.launched(id, task_id);
        }
        for r in done.refused {
            if r.maybe_launched() {
                // It may run: held as launched until an update (or the
                // reconciliation `tick` asks for) says what became of it.
                tracing::debug!(task = %r.task_id, "launch answer lost; asking the master");
                self.placed.place(&r.task_id, r.location);
                self.launched(r.payload, r.task_id);
            } else {
                tracing::debug!(item = r.payload, "launch refused, placed again later: {}", r.error);
            }
        }
        self.suppress_if_idle(scheduler, now).await;
    }

    /// Item `id`'s current launch is task `task_id`, not confirmed yet.
    fn launched(&mut self, id: ItemId, task_id: String) {
        let agent = self
            .placed
            .location(&task_id)
            .map(|l| l.agent_id.clone())
            .unwrap_or_default();
        if let Some(item) = self.items.get_mut(&id) {
            item.task_id = Some(task_id.clone());
            self.unconfirmed.insert(task_id.clone(), (agent, Instant::now()));
            self.by_task.insert(task_id, id);
        }
    }

    /// Follows a task update. Returns the item's outcome when this update
    /// ends it. An update of a task that is not current (a repeated end, an
    /// older attempt) changes nothing.
    pub fn update(&mut self, status: &v1::TaskStatus, now: Instant) -> Option<Outcome<T>> {
        self.placed.observe(status);
        self.unconfirmed.remove(&status.task_id);
        let state = task_state(status)?;
        if !state.is_terminal() || state == TaskState::Unreachable {
            return None; // running, or out of touch: it may still run
        }
        let id = self.by_task.remove(&status.task_id)?;
        let item = self.items.get_mut(&id)?;
        item.task_id = None;
        let drained = state == TaskState::Killed && status.reason == v1::StatusReason::ReasonAgentDraining as i32;
        let never_ran = state == TaskState::Dropped || drained;
        if state == TaskState::Finished {
            return self.finish(id, true, status);
        }
        if never_ran && item.relaunches < self.policy.max_relaunches {
            item.relaunches += 1;
            return None;
        }
        if item.attempt < self.policy.attempts {
            item.attempt += 1;
            item.relaunches = 0;
            item.not_before = Some(now + self.policy.pause_before(item.attempt));
            return None;
        }
        self.finish(id, false, status)
    }

    fn finish(&mut self, id: ItemId, succeeded: bool, last: &v1::TaskStatus) -> Option<Outcome<T>> {
        let item = self.items.remove(&id)?;
        Some(Outcome {
            id,
            payload: item.payload,
            succeeded,
            attempts: item.attempt,
            last: last.clone(),
        })
    }

    /// Call now and then (every second is plenty): revives offers when an
    /// item waits again (a retry's backoff ended, a launch to make again)
    /// and suppresses them when nothing waits.
    pub async fn tick(&mut self, scheduler: &Scheduler, now: Instant) {
        self.ask_about_silent(scheduler, now).await;
        if self.suppressed && self.due(now).next().is_some() {
            match scheduler.revive().await {
                Ok(()) => self.suppressed = false,
                Err(e) => tracing::debug!("revive failed: {e}"),
            }
        } else {
            self.suppress_if_idle(scheduler, now).await;
        }
    }

    /// Asks the master about launches that have had no update for
    /// [`UNCONFIRMED_AFTER`]: one that never reached it comes back
    /// `TASK_DROPPED` and is launched again.
    async fn ask_about_silent(&mut self, scheduler: &Scheduler, now: Instant) {
        let mut ask = Vec::new();
        for (task, (agent, since)) in &mut self.unconfirmed {
            if now.saturating_duration_since(*since) >= UNCONFIRMED_AFTER {
                *since = now;
                ask.push((task.clone(), agent.clone()));
            }
        }
        if !ask.is_empty()
            && let Err(e) = scheduler.reconcile(ask).await
        {
            tracing::debug!("reconciling silent launches failed: {e}");
        }
    }

    /// Nothing can launch now (all running, or waiting out a backoff):
    /// no offers until [`WorkQueue::tick`] finds something due.
    async fn suppress_if_idle(&mut self, scheduler: &Scheduler, now: Instant) {
        if !self.suppressed && self.due(now).next().is_none() {
            match scheduler.suppress().await {
                Ok(()) => self.suppressed = true,
                Err(e) => tracing::debug!("suppress failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
