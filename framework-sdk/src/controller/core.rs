//! The controller's state and decisions, with no I/O: desired objects,
//! the observed view, the schedule of reconciles and the launches waiting
//! for offers. [`Controller`](super::Controller) feeds it and carries out
//! what it answers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use mezzo_proto::v1;
use tokio::time::Instant;

use super::context::{Context, Launch, Reconciler, Requeue, VolumeMount};
use super::observed::{Observed, Task, TaskRecord, key_of};
use super::schedule::Schedule;
use crate::offers::{Assignment, Placed, Strategy, plan, usable, volume};
use crate::{TaskState, task_state};

/// A desired object and whether the store is behind it.
#[derive(Debug)]
pub(crate) struct Desired<D> {
    pub(crate) value: D,
    pub(crate) dirty: bool,
}

/// A launch given its task id: key, task id, and the volume it mounts.
pub(crate) type Named = (String, String, Option<VolumeMount>);

/// A kill to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Kill {
    pub(crate) task_id: String,
    pub(crate) grace: Option<Duration>,
}

/// Launches placed on offers in one round, and what found no room.
#[derive(Debug)]
pub(crate) struct Round {
    /// Placed: the key, the launch and its place.
    pub(crate) placed: Vec<Assignment<(String, Launch)>>,
    /// Offers that received nothing.
    pub(crate) unused: Vec<String>,
    /// Why launches wait, for the pending report.
    pub(crate) pending: Vec<v1::PendingTask>,
}

/// A kill without an end is sent again after this long.
pub(crate) const KILL_RETRY: Duration = Duration::from_secs(10);

/// After a resumed subscription, reconciles wait this long at most for
/// the implicit reconciliation's end ([`crate::Event::Reconciled`]): the
/// driver gives it up (after 300 s, or on a refusal) without saying so.
/// Going ahead then is safe for the tasks read back from the store: they
/// count as live until the master answers for them.
pub(crate) const RECONCILED_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub(crate) struct Core<D> {
    pub(crate) desired: BTreeMap<String, Desired<D>>,
    pub(crate) observed: Observed,
    pub(crate) schedule: Schedule,
    /// Launches waiting for offers, per key.
    pub(crate) waiting: BTreeMap<String, Vec<Launch>>,
    /// Agents being drained, with the drain's deadline.
    pub(crate) draining: BTreeMap<String, Option<SystemTime>>,
    /// Keys whose task records the store is behind on.
    pub(crate) dirty_tasks: BTreeSet<String>,
    /// Keys to delete once none of their tasks is left.
    pub(crate) forgetting: BTreeSet<String>,
    /// When each kill was last sent.
    pub(crate) kill_sent: BTreeMap<String, Instant>,
    /// Reconciles may run: the store is loaded and, after a resumed
    /// subscription, the master has said which tasks run (or
    /// [`RECONCILED_LIMIT`] passed).
    pub(crate) ready: bool,
    /// The desired objects and task records have been read.
    pub(crate) loaded: bool,
    /// Since when a resumed subscription's implicit reconciliation has
    /// been awaited, while its end has not come.
    pub(crate) awaiting: Option<Instant>,
    /// Keys whose stored desired object cannot be read: their tasks are
    /// followed, never stopped as orphans.
    pub(crate) unreadable: BTreeSet<String>,
    /// Live tasks of keys this controller does not know (another part of
    /// the framework's), left alone; each logged once.
    pub(crate) strangers: BTreeSet<String>,
    /// Keys deleted since this process started: a task of theirs that
    /// comes back (its agent returned) is still stopped.
    pub(crate) forgotten: BTreeSet<String>,
}

impl<D> Default for Core<D> {
    fn default() -> Self {
        Core {
            desired: BTreeMap::new(),
            observed: Observed::default(),
            schedule: Schedule::default(),
            waiting: BTreeMap::new(),
            draining: BTreeMap::new(),
            dirty_tasks: BTreeSet::new(),
            forgetting: BTreeSet::new(),
            kill_sent: BTreeMap::new(),
            ready: false,
            loaded: false,
            awaiting: None,
            unreadable: BTreeSet::new(),
            strangers: BTreeSet::new(),
            forgotten: BTreeSet::new(),
        }
    }
}

impl<D: Clone + PartialEq> Core<D> {
    /// Reconcile `key` as soon as possible.
    pub(crate) fn trigger(&mut self, key: &str, now: Instant) {
        self.schedule.at(key, now);
    }

    /// Makes `value` `key`'s desired object (written to the store) and
    /// reconciles the key; a key being forgotten is kept.
    pub(crate) fn set(&mut self, key: &str, value: D, now: Instant) {
        self.desired.insert(key.to_owned(), Desired { value, dirty: false });
        self.forgetting.remove(key);
        self.unreadable.remove(key);
        self.forgotten.remove(key);
        self.trigger(key, now);
    }

    /// `key`'s desired object and task records are deleted from the store.
    pub(crate) fn forgot(&mut self, key: &str) {
        self.forgetting.remove(key);
        self.desired.remove(key);
        self.waiting.remove(key);
        self.schedule.forget(key);
        self.forgotten.insert(key.to_owned());
    }

    /// Follows an update; the key whose view changed is reconciled. Once
    /// loaded, a task of a key this controller does not know is left
    /// alone (not adopted).
    pub(crate) fn update(&mut self, status: &v1::TaskStatus, now: Instant) {
        if self.observed.get(&status.task_id).is_none()
            && self.loaded
            && let Some(key) = key_of(&status.task_id)
            && !self.knows(key)
        {
            self.stranger(&status.task_id, task_state(status).unwrap_or(TaskState::Unknown));
            return;
        }
        if let Some(key) = self.observed.update(status) {
            self.trigger(&key, now);
        }
    }

    /// A key with a desired object (readable or not) or task records, or
    /// one deleted since this process started.
    fn knows(&self, key: &str) -> bool {
        self.desired.contains_key(key)
            || self.unreadable.contains(key)
            || self.forgotten.contains(key)
            || self.observed.iter().any(|t| t.key == key && !t.adopted)
    }

    /// A task of a key this controller does not know: logged once while
    /// it lives.
    fn stranger(&mut self, task_id: &str, state: TaskState) {
        if state.is_terminal() || state == TaskState::Unknown {
            self.strangers.remove(task_id);
        } else if self.strangers.insert(task_id.to_owned()) {
            tracing::info!(task = %task_id, "a task of no key this controller knows; left alone");
        }
    }

    /// Task records of `key` read back from the store, merged into the
    /// tasks the master reported before the load (no longer adopted).
    pub(crate) fn restore(&mut self, key: &str, records: BTreeMap<String, TaskRecord>, now: Instant) {
        if self.observed.restore(key, records) {
            self.dirty_tasks.insert(key.to_owned());
            self.trigger(key, now);
        }
    }

    /// The store is read: tasks adopted before it whose key turns out to
    /// be unknown are let go (they are not this controller's).
    pub(crate) fn mark_loaded(&mut self) {
        self.loaded = true;
        let strangers: Vec<(String, TaskState)> = self
            .observed
            .iter()
            .filter(|t| t.adopted && !self.knows(&t.key))
            .map(|t| (t.id.clone(), t.state))
            .collect();
        for (id, state) in strangers {
            self.observed.remove(&id);
            self.kill_sent.remove(&id);
            self.stranger(&id, state);
        }
    }

    /// True once when the implicit reconciliation has been awaited for
    /// [`RECONCILED_LIMIT`]: reconciles go ahead without its end.
    pub(crate) fn reconciled_overdue(&mut self, now: Instant) -> bool {
        match self.awaiting {
            Some(since) if now.saturating_duration_since(since) >= RECONCILED_LIMIT => {
                self.awaiting = None;
                true
            }
            _ => false,
        }
    }

    /// An agent's drain started or ended: the keys with tasks there are
    /// reconciled. False when nothing changed (told again after a
    /// subscription).
    pub(crate) fn drain(&mut self, agent_id: &str, draining: bool, deadline: Option<SystemTime>, now: Instant) -> bool {
        let before = self.draining.contains_key(agent_id);
        if draining {
            self.draining.insert(agent_id.to_owned(), deadline);
        } else {
            self.draining.remove(agent_id);
        }
        if before == draining {
            return false;
        }
        let keys: BTreeSet<String> = self
            .observed
            .iter()
            .filter(|t| t.location.agent_id == agent_id)
            .map(|t| t.key.clone())
            .collect();
        for k in keys {
            self.trigger(&k, now);
        }
        true
    }

    /// Follows a task launched elsewhere; see `Controller::hold`.
    pub(crate) fn hold(&mut self, mut task: Task) {
        let key = task.key.clone();
        if let Some(seen) = self.observed.get(&task.id) {
            task.state = seen.state;
            task.status = seen.status.clone();
            task.killing = seen.killing;
        }
        task.adopted = false;
        self.observed.launching(task);
        self.dirty_tasks.insert(key);
    }

    /// The master no longer has a task we asked to kill: it has ended.
    pub(crate) fn gone(&mut self, task_id: &str, now: Instant) {
        let status = v1::TaskStatus {
            task_id: task_id.to_owned(),
            state: TaskState::Unknown.to_proto() as i32,
            message: "the master no longer has it".into(),
            ..Default::default()
        };
        self.kill_sent.remove(task_id);
        if let Some(t) = self.observed.get_mut(task_id) {
            t.status = Some(status);
            t.state = TaskState::Unknown;
            let key = t.key.clone();
            self.trigger(&key, now);
        }
    }

    /// Runs every reconcile due at `now`; answers the kills to send.
    pub(crate) fn run_due<R: Reconciler<D>>(&mut self, r: &mut R, now: Instant) -> Vec<Kill> {
        if !self.ready {
            return Vec::new();
        }
        let mut kills = Vec::new();
        for key in self.schedule.take_due(now) {
            kills.extend(self.reconcile(&key, r, now));
        }
        kills
    }

    /// Reconciles every key with launches waiting (new offers came).
    pub(crate) fn run_waiting<R: Reconciler<D>>(&mut self, r: &mut R, now: Instant) -> Vec<Kill> {
        let keys: Vec<String> = self.waiting.keys().cloned().collect();
        for k in &keys {
            self.trigger(k, now);
        }
        self.run_due(r, now)
    }

    /// One reconcile of `key`, or the stop of its tasks when it has no
    /// desired object.
    fn reconcile<R: Reconciler<D>>(&mut self, key: &str, r: &mut R, now: Instant) -> Vec<Kill> {
        let tasks = self.observed.of_key(key);
        let Some(entry) = self.desired.get_mut(key) else {
            return self.orphaned(key, &tasks, now);
        };
        let mut ctx = Context::new(now, &self.draining);
        let mut value = entry.value.clone();
        let result = r.reconcile(key, &mut value, &tasks, &mut ctx);
        let Context {
            launches,
            kills,
            forget,
            ..
        } = ctx;
        if value != entry.value {
            entry.value = value;
            entry.dirty = true;
        }
        match result {
            Ok(requeue) => {
                self.schedule.succeeded(key);
                if let Requeue::After(d) = requeue {
                    self.schedule.at(key, now + d);
                }
            }
            Err(e) => {
                let delay = self.schedule.failed(key, now);
                tracing::warn!(%key, "reconcile failed (again in {delay:?}): {e}");
            }
        }
        // Shown once, whatever the result: a failed reconcile keeps its
        // changes, so the ends it saw are counted.
        self.seen_ends(key, &tasks);
        if launches.is_empty() {
            self.waiting.remove(key);
        } else {
            self.waiting.insert(key.to_owned(), launches);
        }
        if forget {
            self.forgetting.insert(key.to_owned());
        }
        self.kills(key, kills, now)
    }

    /// Tasks of a key nothing desires are stopped; their ends dropped.
    /// Those of a key whose desired object cannot be read are followed
    /// only.
    fn orphaned(&mut self, key: &str, tasks: &[Task], now: Instant) -> Vec<Kill> {
        self.seen_ends(key, tasks);
        self.waiting.remove(key);
        if self.unreadable.contains(key) {
            return Vec::new();
        }
        let ids: Vec<(String, Option<Duration>)> = tasks
            .iter()
            .filter(|t| !t.ended() && !t.killing)
            .map(|t| (t.id.clone(), None))
            .collect();
        if !ids.is_empty() {
            tracing::info!(%key, tasks = ids.len(), "stopping tasks of a key nothing desires");
        }
        self.kills(key, ids, now)
    }

    /// Ends the reconciler has seen are dropped from the view.
    fn seen_ends(&mut self, key: &str, tasks: &[Task]) {
        for t in tasks.iter().filter(|t| t.ended()) {
            self.observed.remove(&t.id);
            self.kill_sent.remove(&t.id);
            if !t.adopted {
                self.dirty_tasks.insert(key.to_owned());
            }
        }
    }

    fn kills(&mut self, key: &str, asked: Vec<(String, Option<Duration>)>, now: Instant) -> Vec<Kill> {
        let mut out = Vec::new();
        for (task_id, grace) in asked {
            let Some(t) = self.observed.get_mut(&task_id) else {
                continue;
            };
            if t.key != key || t.ended() || t.killing {
                continue;
            }
            t.killing = true;
            self.kill_sent.insert(task_id.clone(), now);
            out.push(Kill { task_id, grace });
        }
        out
    }

    /// Kills sent [`KILL_RETRY`] ago with no end since, to send again.
    pub(crate) fn kills_due(&mut self, now: Instant) -> Vec<Kill> {
        let mut out = Vec::new();
        for (id, sent) in &mut self.kill_sent {
            if now.saturating_duration_since(*sent) >= KILL_RETRY {
                *sent = now;
                out.push(Kill {
                    task_id: id.clone(),
                    grace: None,
                });
            }
        }
        out
    }

    /// Keys with tasks but no desired object (their tasks are stopped),
    /// unless the object is there but cannot be read.
    pub(crate) fn orphan_keys(&self) -> Vec<String> {
        self.observed
            .keys()
            .into_iter()
            .filter(|k| !self.desired.contains_key(k) && !self.unreadable.contains(k))
            .collect()
    }

    /// True while a launch waits for an offer.
    pub(crate) fn wants_offers(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Places the waiting launches on `offers`, key by key, each spread
    /// within its constraints over the hosts, counting the key's live
    /// tasks (those being stopped or leaving a draining agent hold no
    /// place). What finds no room keeps waiting.
    pub(crate) fn place(&mut self, offers: &[v1::Offer]) -> Round {
        let mut room: Vec<v1::Offer> = offers.to_vec();
        let mut placed_all = Vec::new();
        let mut waiting = std::mem::take(&mut self.waiting);
        let mut places: BTreeMap<String, Placed> = waiting.keys().map(|k| (k.clone(), self.placed(k))).collect();
        let mut left: BTreeMap<String, Vec<Launch>> = BTreeMap::new();
        // Launches that mount a volume first, in every key: the room of
        // their volume's offer is likely reserved for them.
        for volumes in [true, false] {
            for (key, launches) in &mut waiting {
                let (now, later): (Vec<Launch>, Vec<Launch>) = std::mem::take(launches)
                    .into_iter()
                    .partition(|l| l.volume.is_some() == volumes);
                *launches = later;
                let placed = places.entry(key.clone()).or_default();
                for launch in now {
                    match place_one(&mut room, key, &launch, placed) {
                        Some(a) => placed_all.push(a),
                        None => left.entry(key.clone()).or_default().push(launch),
                    }
                }
            }
        }
        let mut pending = Vec::new();
        for (key, launches) in left {
            pending.extend(pending_report(&key, &launches, offers));
            self.waiting.insert(key, launches);
        }
        let used: BTreeSet<&str> = placed_all.iter().map(|a| a.offer_id.as_str()).collect();
        let unused = offers
            .iter()
            .filter(|o| !used.contains(o.offer_id.as_str()))
            .map(|o| o.offer_id.clone())
            .collect();
        Round {
            placed: placed_all,
            unused,
            pending,
        }
    }

    /// Names each placed launch's task (`<key>.<name>`) and follows it
    /// from now on, `Staging`; answers the assignments with the key and
    /// task id. A name already in use is skipped.
    pub(crate) fn launching(
        &mut self,
        placed: Vec<Assignment<(String, Launch)>>,
        at: SystemTime,
    ) -> Vec<Assignment<Named>> {
        let mut out = Vec::new();
        for a in placed {
            let (key, launch) = a.payload;
            let id = format!("{key}.{}", launch.name);
            if self.observed.get(&id).is_some() {
                tracing::warn!(task = %id, "a launch reuses a task id; skipped");
                continue;
            }
            self.observed.launching(Task {
                id: id.clone(),
                key: key.clone(),
                state: TaskState::Staging,
                status: None,
                location: a.location.clone(),
                ports: a.ports.clone(),
                labels: launch.labels,
                launched: Some(at),
                killing: false,
                adopted: false,
            });
            out.push(Assignment {
                payload: (key, id, launch.volume),
                offer_id: a.offer_id,
                location: a.location,
                resources: a.resources,
                ports: a.ports,
            });
        }
        out
    }

    /// Where `key`'s live tasks hold a place.
    fn placed(&self, key: &str) -> Placed {
        let mut placed = Placed::default();
        for t in self.observed.of_key(key) {
            let leaving = self.draining.contains_key(&t.location.agent_id);
            if !t.ended() && !t.killing && !t.adopted && !leaving {
                placed.place(&t.id, t.location.clone());
            }
        }
        placed
    }
}

/// Places one launch on `room` (spread within its constraints; one that
/// mounts a volume only on the offer listing it) and takes what it uses
/// out of the room.
fn place_one(
    room: &mut [v1::Offer],
    key: &str,
    launch: &Launch,
    placed: &mut Placed,
) -> Option<Assignment<(String, Launch)>> {
    let work = [(launch.request.clone(), (key.to_owned(), launch.clone()))];
    // A volume's launch goes where the volume is offered, and only there:
    // its constraints held when the volume was made.
    let (offered, constraints) = match &launch.volume {
        Some(v) => (with_volume(room, v), &[][..]),
        None => (room.to_vec(), &launch.constraints[..]),
    };
    let p = plan(&offered, work, Strategy::Spread, constraints, placed)
        .inspect_err(|e| tracing::warn!("an offer's resources do not parse: {e}"))
        .ok()?;
    let a = p.assignments.into_iter().next()?;
    if let Some(o) = room.iter_mut().find(|o| o.offer_id == a.offer_id)
        && let Ok(r) = usable(o)
    {
        // What is left, as plain room for the next launches.
        o.resources = r.saturating_sub(&a.resources).to_proto();
        if let Some(v) = &launch.volume {
            o.volumes.retain(|x| x.id != v.id);
        }
    }
    Some(a)
}

/// The offers that list the volume (of its agent, when known).
fn with_volume(offers: &[v1::Offer], v: &VolumeMount) -> Vec<v1::Offer> {
    let of_agent = |o: &v1::Offer| v.agent_id.as_ref().is_none_or(|a| &o.agent_id == a);
    offers
        .iter()
        .filter(|o| of_agent(o) && volume(o, &v.id).is_some())
        .cloned()
        .collect()
}

/// Pending-report entries for launches of `key` that found no room, one
/// reason per kind of launch.
fn pending_report(key: &str, left: &[Launch], offers: &[v1::Offer]) -> Vec<v1::PendingTask> {
    let largest = offers
        .iter()
        .filter_map(|o| usable(o).ok())
        .max_by_key(|r| (r.cpus, r.mem))
        .map_or_else(|| "no offer".to_owned(), |r| format!("largest offer {r}"));
    let mut out = Vec::new();
    for (k, l) in left.iter().enumerate().take(100) {
        let same = left.iter().filter(|o| o.describe == l.describe).count();
        let what = if l.describe.is_empty() {
            key
        } else {
            l.describe.as_str()
        };
        let reason = format!(
            "{what}: {same} task(s) find no room; each needs {} and {} port(s); {largest}",
            l.request.resources, l.request.ports
        );
        out.push(crate::pending_task(
            format!("{key}.waiting-{k}"),
            reason,
            Some(&l.request.resources),
        ));
    }
    out
}
