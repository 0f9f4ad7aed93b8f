//! The queue's calls to the master: placing and launching on offers,
//! declining, suppressing and reviving, killing, and asking about
//! launches that went silent.

use std::collections::HashSet;
use std::time::Duration;

use mezzo_proto::v1;
use tokio::time::Instant;

use super::{Cancelling, Change, ItemId, SinceSubscribed, WorkQueue};
use crate::offers::{Location, plan};
use crate::{Scheduler, TaskBuilder};

/// How long unused offers are refused while items wait. A decline filters
/// the whole agent, so a long one would hide the resources that ending
/// tasks free meanwhile (1 s cost the batch framework a third of its
/// throughput); a short one lets them merge into a usable offer.
pub(crate) const REFUSE_WAITING: f64 = 0.1;
/// How long they are refused while nothing waits (a revive ends it).
pub(crate) const REFUSE_IDLE: f64 = 30.0;
/// Most items placed per round of offers (bounds the work per event).
const MAX_PER_ROUND: usize = 4096;
/// Offers looked at per round: twice the items placed, at least this
/// many. Planning costs items x offers, and a big cluster offers one
/// framework tens of thousands of agents at once; the rest are declined
/// at once (for `REFUSE_WAITING`), so other frameworks get them.
const MIN_OFFERS_CONSIDERED: usize = 64;
/// A launch with no update for this long is asked about; then again
/// after twice as long each time, up to [`UNCONFIRMED_AT_MOST`] (the
/// backoff Mesos advises for reconciliation). Asked every 10 s, a leader
/// more than 10 s behind on updates was asked about every launch still
/// waiting in its queues, again and again: more work for a leader
/// already behind.
pub const UNCONFIRMED_AFTER: Duration = Duration::from_secs(10);
/// The longest wait between two questions about one unconfirmed launch.
const UNCONFIRMED_AT_MOST: Duration = Duration::from_secs(320);
/// Every running task is asked about this often, as Mesos advises, and
/// after each subscription those its implicit reconciliation did not report
/// (a launch a dying master accepted but never passed on is then reported,
/// not waited for forever). Every 15 s, as it was, 400,000 running tasks
/// were 27,000 answers a second for the leader: its cost per launched task
/// grew tenfold past 200,000.
const RECONCILE_EVERY: Duration = Duration::from_secs(600);
/// After a subscription, the tasks not reported are asked about this long
/// after the first tick even if [`WorkQueue::reconciled`] is never called.
const RECONCILED_WITHIN: Duration = Duration::from_secs(60);
/// A kill with no end yet is asked for again after this long.
const KILL_AGAIN: Duration = Duration::from_secs(5);
/// Kill calls in flight at once.
const KILLS_AT_ONCE: usize = 32;
/// Tasks per reconciliation call.
const RECONCILE_CHUNK: usize = 1000;

/// One task launched by [`WorkQueue::offers`].
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// Its item.
    pub id: ItemId,
    /// Its task.
    pub task_id: String,
    /// Where.
    pub location: Location,
}

/// What one round of offers did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Round {
    /// Tasks launched (or whose launch may have reached the master).
    pub launched: Vec<Launch>,
    /// Items the offers had no room for (or broke a constraint
    /// everywhere), in order: worth telling the masters
    /// ([`Scheduler::report_pending`]).
    pub unplaced: Vec<ItemId>,
}

impl<T> WorkQueue<T> {
    /// Places waiting items on `offers` and launches them: each task built
    /// by `build` from the item's payload and a [`TaskBuilder`] that
    /// already carries the task's id and resources. Unused offers are
    /// declined; with nothing left waiting, offers are suppressed until
    /// there is.
    pub async fn offers(
        &mut self,
        scheduler: &Scheduler,
        offers: Vec<v1::Offer>,
        mut build: impl FnMut(&T, TaskBuilder) -> TaskBuilder,
        now: Instant,
    ) -> Round {
        let kills = self.due(now);
        self.kill(scheduler, kills);
        let work: Vec<_> = self
            .ready
            .iter()
            .take(MAX_PER_ROUND)
            .map(|id| (self.items[id].request.clone(), *id))
            .collect();
        let considered = work.len();
        let mut offers = offers;
        let looked_at = offers
            .len()
            .min(considered.saturating_mul(2).max(MIN_OFFERS_CONSIDERED));
        let passed: Vec<String> = offers.split_off(looked_at).into_iter().map(|o| o.offer_id).collect();
        let plan = match plan(&offers, work, self.strategy, &self.constraints, &mut self.placed) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("offers with resources that do not parse: {e}");
                let ids = offers.into_iter().map(|o| o.offer_id).chain(passed).collect();
                let _ = scheduler.decline(ids, Some(REFUSE_WAITING)).await;
                return Round::default();
            }
        };
        let mut plan = plan;
        plan.unused_offers.extend(passed);
        let waits_on = plan.unplaced.len() + self.ready.len() - considered;
        let refuse = if waits_on == 0 { REFUSE_IDLE } else { REFUSE_WAITING };
        let mut placed = std::mem::take(&mut self.placed);
        let done = scheduler
            .launch(plan, &mut placed, Some(refuse), |a| {
                let item = &self.items[&a.payload];
                let task = TaskBuilder::new(self.task_id(a.payload, item)).resources(&a.resources);
                build(&item.payload, task).build()
            })
            .await;
        self.placed = placed;
        let mut round = Round {
            launched: Vec::with_capacity(done.launched.len()),
            unplaced: done.unplaced,
        };
        for (task_id, id) in done.launched {
            self.launched(id, task_id, now, &mut round);
        }
        for r in done.refused {
            if r.maybe_launched() {
                // It may run: held as launched until an update (or the
                // reconciliation `tick` asks for) says what became of it.
                tracing::debug!(task = %r.task_id, "launch answer lost; asking the master");
                self.placed.place(&r.task_id, r.location);
                self.launched(r.payload, r.task_id, now, &mut round);
            } else {
                tracing::debug!(item = r.payload, "launch refused, placed again later: {}", r.error);
            }
        }
        self.suppress_if_idle(scheduler).await;
        round
    }

    fn launched(&mut self, id: ItemId, task_id: String, now: Instant, round: &mut Round) {
        let location = self.placed.location(&task_id).cloned().unwrap_or_default();
        self.start(id, task_id.clone(), now);
        round.launched.push(Launch { id, task_id, location });
    }

    /// Call now and then (every second is plenty, more often for short
    /// backoffs): ends backoffs, kills tasks past their timeout, asks the
    /// master about silent launches, revives offers when an item waits
    /// again and suppresses them when nothing waits.
    pub async fn tick(&mut self, scheduler: &Scheduler, now: Instant) {
        let kills = self.due(now);
        self.kill(scheduler, kills);
        self.send_kills(scheduler, now);
        self.ask_about_silent(scheduler, now);
        if self.suppressed != Some(false) && !self.ready.is_empty() {
            match scheduler.revive().await {
                Ok(()) => self.suppressed = Some(false),
                Err(e) => tracing::debug!("revive failed: {e}"),
            }
        } else {
            self.suppress_if_idle(scheduler).await;
        }
    }

    /// After every subscription: whether offers are suppressed at the new
    /// leader is not known, so the next [`WorkQueue::tick`] revives them if
    /// anything waits, and suppresses them if nothing does.
    pub fn subscribed(&mut self) {
        self.suppressed = None;
        self.since_subscribed = Some(SinceSubscribed::default());
    }

    /// Call on [`Event::Reconciled`](crate::Event::Reconciled): the
    /// subscription's implicit reconciliation has ended, and the next
    /// [`WorkQueue::tick`] asks the master only about the running tasks it
    /// did not report. (Asking about every task, as the queue did, doubled
    /// a master failover's answers: 400,000 at 400,000 tasks. Without this
    /// call they are asked about a minute after the subscription.)
    pub fn reconciled(&mut self) {
        if let Some(since) = self.since_subscribed.as_mut() {
            since.reconciled = true;
        }
    }

    /// Cancels items: those waiting end at once (their outcomes are
    /// returned); running ones are killed, and their ends are their
    /// outcomes ([`super::Ended::Cancelled`]).
    pub fn cancel(&mut self, scheduler: &Scheduler, ids: impl IntoIterator<Item = ItemId>) -> Vec<Change<T>> {
        let mut ended = Vec::new();
        let mut kills = Vec::new();
        for id in ids {
            match self.cancel_item(id) {
                Cancelling::Kill(task) => kills.push(task),
                Cancelling::Ended(change) => ended.push(change),
                Cancelling::Unknown => {}
            }
        }
        self.kill(scheduler, kills);
        ended
    }

    /// Asks for kills without waiting on them (a cancelled job may kill
    /// thousands); one unanswered is asked again by `tick`.
    fn kill(&mut self, scheduler: &Scheduler, tasks: Vec<String>) {
        if tasks.is_empty() {
            return;
        }
        for t in tasks {
            self.kills.insert(t, None);
        }
        self.send_kills(scheduler, Instant::now());
    }

    /// Sends the kills not sent yet, and those sent [`KILL_AGAIN`] ago
    /// without an end since, in one pass at a time, a few dozen at once.
    fn send_kills(&mut self, scheduler: &Scheduler, now: Instant) {
        if self.kills.is_empty() || self.kill_pass.as_ref().is_some_and(|p| !p.is_finished()) {
            return;
        }
        let mut due = Vec::new();
        for (task, sent) in &mut self.kills {
            if sent.is_none_or(|at| now.saturating_duration_since(at) >= KILL_AGAIN) {
                *sent = Some(now);
                due.push(task.clone());
            }
        }
        if due.is_empty() {
            return;
        }
        let s = scheduler.clone();
        self.kill_pass = Some(tokio::spawn(async move {
            use futures::StreamExt;
            futures::stream::iter(due)
                .for_each_concurrent(KILLS_AT_ONCE, |task| {
                    let s = s.clone();
                    async move {
                        if let Err(e) = s.kill(&task, None).await {
                            tracing::debug!(%task, "kill failed; asked again: {e}");
                        }
                    }
                })
                .await;
        }));
    }

    /// Asks the master about launches that have had no update for
    /// [`UNCONFIRMED_AFTER`], then twice as long each time (one that never
    /// reached it comes back `TASK_DROPPED` and is launched again), and
    /// about every running task after each subscription and every
    /// [`RECONCILE_EVERY`].
    fn ask_about_silent(&mut self, scheduler: &Scheduler, now: Instant) {
        // Whether every running task is due to be asked about, but those
        // the subscription's implicit reconciliation reported.
        let all = match self.since_subscribed.as_mut() {
            Some(since) => {
                let ask_by = *since.ask_by.get_or_insert(now + RECONCILED_WITHIN);
                (since.reconciled || ask_by <= now).then(|| std::mem::take(&mut since.heard))
            }
            None => self.next_reconcile.is_none_or(|t| t <= now).then(HashSet::new),
        };
        let mut ask = Vec::new();
        if let Some(heard) = all {
            self.since_subscribed = None;
            self.next_reconcile = Some(now + RECONCILE_EVERY);
            for task in self.by_task.keys().filter(|t| !heard.contains(*t)) {
                let agent = self.placed.location(task).map(|l| l.agent_id.clone());
                ask.push((task.clone(), agent.unwrap_or_default()));
            }
        } else {
            for (task, u) in &mut self.unconfirmed {
                let wait = (UNCONFIRMED_AFTER * 2u32.saturating_pow(u.asked)).min(UNCONFIRMED_AT_MOST);
                if now.saturating_duration_since(u.since) >= wait {
                    u.since = now;
                    u.asked = u.asked.saturating_add(1);
                    ask.push((task.clone(), u.agent.clone()));
                }
            }
        }
        if ask.is_empty() {
            return;
        }
        let s = scheduler.clone();
        tokio::spawn(async move {
            for chunk in ask.chunks(RECONCILE_CHUNK) {
                if let Err(e) = s.reconcile(chunk.to_vec()).await {
                    tracing::debug!("reconciling running tasks failed; asked again later: {e}");
                    return;
                }
            }
        });
    }

    /// Nothing can launch now (all running, or waiting out a backoff):
    /// no offers until [`WorkQueue::tick`] finds something waiting.
    async fn suppress_if_idle(&mut self, scheduler: &Scheduler) {
        if self.suppressed != Some(true) && self.ready.is_empty() {
            match scheduler.suppress().await {
                Ok(()) => self.suppressed = Some(true),
                Err(e) => tracing::debug!("suppress failed: {e}"),
            }
        }
    }
}
