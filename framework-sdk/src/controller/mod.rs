//! A controller loop for long-running work, in the manner of kube-rs's
//! controller runtime: the framework says what it wants per key (a
//! desired object, kept in its [`Kv`] namespace), the SDK keeps an
//! observed view of the key's tasks, and a [`Reconciler`] is called per
//! key to close the gap, asking for a [`Requeue`] when time matters.
//!
//! Why: a framework that keeps things running writes the same machinery
//! again — load the state after a restart, reconcile its tasks with the
//! master after every (re)subscription, adopt what still runs, launch on
//! offers within constraints, retry kills, suppress offers while nothing
//! waits, report what cannot be placed. Here it is written once, and the
//! framework's own logic is one function of (desired, observed).
//!
//! - **Desired state** is one serde object per key, stored under
//!   `<prefix><key>`; [`Controller::put`] writes through (answered once
//!   committed), [`Controller::modify`] writes behind. Either triggers a
//!   reconcile of the key. Keys are letters, digits, `-` and `_`.
//! - **Observed tasks** ([`Task`]) are kept by task id (`<key>.<name>`):
//!   each launch is recorded under `<prefix><key>/tasks` *before* it is
//!   accepted, so a restarted framework knows every task it may have
//!   started. On every subscription the controller asks the master about
//!   each live task it holds (with its agent); live tasks it did not know
//!   are adopted ([`Task::adopted`]) when their key is one it knows (a
//!   desired object or task records, or one deleted since the process
//!   started); tasks of other keys (another part of the framework's, say
//!   a work queue's) are left alone. Tasks the master reports before the
//!   store is read take their records once it is. An end is shown to the next reconcile once, then dropped;
//!   repeated ends change nothing. Tasks of a key with no desired object
//!   are stopped; those of a key whose stored object cannot be read are
//!   only followed.
//! - **Reconciles** run per key, one pending at a time, on: a change of
//!   the desired object, a change of the key's tasks, a drain of an agent
//!   holding them, offers while its launches wait, and the requeue it
//!   asked for. A failed reconcile is retried with backoff; it keeps what
//!   it did, and the ends it was shown count as seen. After a restart
//!   none runs before the master has said which tasks run
//!   ([`Event::Reconciled`]), or 120 s have passed without that answer
//!   (the driver may give it up silently).
//! - **Volumes**: a launch that mounts a persistent volume
//!   ([`Launch::volume`]) is placed only on an offer that lists it.
//! - **Offers** are suppressed while no launch waits and revived when one
//!   does; launches that find no room are reported to the masters
//!   (`mezzo why`).
//!
//! Feed it every event ([`Controller::event`]) and call
//! [`Controller::tick`] now and then (every 100–500 ms):
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use mezzo_sdk::controller::{Context, Controller, Launch, Reconciler, Requeue, Task};
//! use mezzo_sdk::offers::TaskRequest;
//! use mezzo_sdk::{Resources, Scheduler, SchedulerConfig, TaskBuilder};
//!
//! /// Keep `copies` tasks of `script` running.
//! #[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
//! struct Want {
//!     copies: usize,
//!     script: String,
//! }
//!
//! struct Keeper(u64);
//!
//! impl Reconciler<Want> for Keeper {
//!     type Error = String;
//!     fn reconcile(&mut self, _key: &str, want: &mut Want, tasks: &[Task], ctx: &mut Context<'_>) -> Result<Requeue, String> {
//!         let live: Vec<&Task> = tasks.iter().filter(|t| !t.ended() && !t.killing).collect();
//!         for t in live.iter().skip(want.copies) {
//!             ctx.kill(&t.id, None);
//!         }
//!         let need = TaskRequest::new(&Resources::parse("cpus:0.1;mem:32").map_err(|e| e.to_string())?);
//!         for _ in live.len()..want.copies {
//!             self.0 += 1;
//!             ctx.launch(Launch::new(format!("{}", self.0), need.clone()));
//!         }
//!         Ok(Requeue::No)
//!     }
//!     fn build(&mut self, _key: &str, want: &Want, _task: &Task, task: TaskBuilder) -> TaskBuilder {
//!         task.shell(&want.script)
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let (scheduler, mut events) = Scheduler::start(SchedulerConfig::new(["127.0.0.1:5050"], "keeper"));
//! let mut ctl = Controller::<Want>::new(&scheduler, "want/");
//! let mut keeper = Keeper(0);
//! let mut tick = tokio::time::interval(Duration::from_millis(200));
//! loop {
//!     tokio::select! {
//!         Some(event) = events.next() => ctl.event(event, &mut keeper).await,
//!         _ = tick.tick() => {
//!             ctl.tick(&mut keeper).await;
//!             if ctl.is_loaded() && ctl.get("web").is_none() {
//!                 ctl.put("web", Want { copies: 3, script: "sleep 600".into() }).await?;
//!             }
//!         }
//!     }
//! }
//! # }
//! ```

mod context;
mod core;
mod observed;
mod schedule;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use self::context::{Context, Launch, Reconciler, Requeue, VolumeMount};
use self::core::{Core, Desired, Kill, Round};
pub use self::observed::Task;
use self::observed::TaskRecord;
use crate::offers::Placed;
use crate::queue::{REFUSE_IDLE, REFUSE_WAITING};
use crate::{Event, Kv, Scheduler, SdkError, TaskBuilder, v1};

/// Live tasks the master has said nothing of are asked about this often.
const ASK_EVERY: Duration = Duration::from_secs(5);
/// While launches wait, offers are revived at most this often.
const REVIVE_EVERY: Duration = Duration::from_secs(2);

/// The controller loop's state; see the module documentation.
#[derive(Debug)]
pub struct Controller<D> {
    sched: Scheduler,
    kv: Kv,
    prefix: String,
    core: Core<D>,
    suppressed: bool,
    pending_reported: bool,
    last_revive: Option<Instant>,
    last_ask: Option<Instant>,
}

impl<D> Controller<D>
where
    D: Clone + PartialEq + Serialize + DeserializeOwned,
{
    /// A controller whose desired objects live under `prefix` in the
    /// framework's namespace (say `"service/"`).
    pub fn new(scheduler: &Scheduler, prefix: impl Into<String>) -> Controller<D> {
        Controller {
            sched: scheduler.clone(),
            kv: scheduler.kv(),
            prefix: prefix.into(),
            core: Core::default(),
            suppressed: false,
            pending_reported: false,
            last_revive: None,
            last_ask: None,
        }
    }

    /// True once the desired objects and task records have been read.
    pub fn is_loaded(&self) -> bool {
        self.core.loaded
    }

    /// The desired object of `key`.
    pub fn get(&self, key: &str) -> Option<&D> {
        self.core.desired.get(key).map(|d| &d.value)
    }

    /// Every desired object, in key order.
    pub fn desired(&self) -> impl Iterator<Item = (&str, &D)> {
        self.core.desired.iter().map(|(k, d)| (k.as_str(), &d.value))
    }

    /// `key`'s tasks as last observed, oldest launch first.
    pub fn tasks(&self, key: &str) -> Vec<Task> {
        self.core.observed.of_key(key)
    }

    /// True while `agent_id` is being drained.
    pub fn is_draining(&self, agent_id: &str) -> bool {
        self.core.draining.contains_key(agent_id)
    }

    /// Reconcile `key` soon (something the controller does not see
    /// changed, say a health check).
    pub fn trigger(&mut self, key: &str) {
        self.core.trigger(key, Instant::now());
    }

    /// Takes over a task this controller did not launch but whose place is
    /// known (one an older version of the framework recorded elsewhere):
    /// it is followed, reconciled with the master and recorded with its
    /// key's tasks. A task already observed keeps its state.
    pub fn hold(&mut self, task: Task) {
        self.core.hold(task);
    }

    /// Writes `key`'s desired object, then makes it current and triggers
    /// a reconcile. A key its reconciler asked to forget is kept. On error
    /// nothing changed.
    pub async fn put(&mut self, key: &str, value: D) -> Result<(), SdkError> {
        check_key(key)?;
        self.kv.put(&self.desired_key(key), encode(&value)?).await?;
        self.core.set(key, value, Instant::now());
        Ok(())
    }

    /// Changes `key`'s desired object in memory; it is written at the next
    /// tick. False when there is no such key.
    pub fn modify(&mut self, key: &str, f: impl FnOnce(&mut D)) -> bool {
        let Some(d) = self.core.desired.get_mut(key) else {
            return false;
        };
        let before = d.value.clone();
        f(&mut d.value);
        if d.value != before {
            d.dirty = true;
        }
        self.core.trigger(key, Instant::now());
        true
    }

    /// Follows one event of the driver, then runs the reconciles it made
    /// due.
    pub async fn event<R: Reconciler<D>>(&mut self, event: Event, r: &mut R) {
        let now = Instant::now();
        match event {
            Event::Subscribed { resumed, .. } => self.subscribed(resumed).await,
            Event::Reconciled => {
                self.core.awaiting = None;
                self.core.ready = self.core.loaded;
            }
            Event::Update(status) => self.core.update(&status, now),
            Event::AgentDraining {
                agent_id,
                draining,
                deadline,
            } => {
                self.core.drain(&agent_id, draining, deadline, now);
            }
            Event::Offers(offers) => return self.offers(offers, r).await,
            _ => {}
        }
        let kills = self.core.run_due(r, now);
        self.send_kills(kills).await;
    }

    /// The periodic step: due reconciles (requeues, retries), kills sent
    /// again, tasks the master has not answered for asked about again,
    /// tasks of keys nothing desires stopped, offers revived or
    /// suppressed, and the store brought up to date.
    pub async fn tick<R: Reconciler<D>>(&mut self, r: &mut R) {
        if !self.core.loaded {
            if self.sched.is_connected() {
                self.load().await;
            }
            return;
        }
        let now = Instant::now();
        if self.core.reconciled_overdue(now) {
            warn!(limit = ?core::RECONCILED_LIMIT, "no end of the master's reconciliation; reconciling anyway");
            self.core.ready = true;
        }
        for key in self.core.orphan_keys() {
            self.core.trigger(&key, now);
        }
        let mut kills = self.core.run_due(r, now);
        kills.extend(self.core.kills_due(now));
        self.send_kills(kills).await;
        if self
            .last_ask
            .is_none_or(|t| now.saturating_duration_since(t) >= ASK_EVERY)
        {
            self.ask_master(true).await;
        }
        self.offer_flow(now).await;
        self.flush().await;
    }

    async fn subscribed(&mut self, resumed: bool) {
        // A new subscription ends a suppression, and the master tells of
        // every drain under way right after.
        self.suppressed = false;
        self.core.draining.clear();
        self.last_revive = None;
        if !self.core.ready {
            // A resumed framework may have tasks running: hear of them first.
            if resumed {
                self.core.awaiting.get_or_insert_with(Instant::now);
            } else {
                self.core.awaiting = None;
            }
        }
        if !self.core.loaded {
            self.load().await;
        }
        self.ask_master(false).await;
    }

    /// Reads the desired objects and the task records.
    async fn load(&mut self) {
        let entries = match self.kv.list(&self.prefix).await {
            Ok(e) => e,
            Err(e) => return warn!(prefix = %self.prefix, "cannot read the desired state yet: {e}"),
        };
        let now = Instant::now();
        for e in entries {
            let rest = &e.key[self.prefix.len()..];
            match rest.split_once('/') {
                None => match serde_json::from_slice::<D>(&e.value) {
                    Ok(value) => {
                        self.core
                            .desired
                            .insert(rest.to_owned(), Desired { value, dirty: false });
                        self.core.trigger(rest, now);
                    }
                    Err(err) => {
                        warn!(key = %e.key, "unreadable desired object: its tasks are followed, not reconciled nor stopped: {err}");
                        self.core.unreadable.insert(rest.to_owned());
                    }
                },
                Some((key, "tasks")) => match serde_json::from_slice::<BTreeMap<String, TaskRecord>>(&e.value) {
                    Ok(records) => self.core.restore(key, records, now),
                    Err(err) => warn!(key = %e.key, "unreadable task records skipped: {err}"),
                },
                Some(_) => {}
            }
        }
        info!(
            prefix = %self.prefix,
            keys = self.core.desired.len(),
            tasks = self.core.observed.iter().count(),
            "desired state loaded"
        );
        self.core.mark_loaded();
        self.core.ready = self.core.awaiting.is_none();
    }

    /// Asks the master about live tasks: all of them (after a
    /// subscription), or those it has said nothing of.
    async fn ask_master(&mut self, only_silent: bool) {
        self.last_ask = Some(Instant::now());
        let ask = self.core.observed.to_reconcile(only_silent);
        if !ask.is_empty()
            && let Err(e) = self.sched.reconcile(ask).await
        {
            debug!("reconcile failed: {e}");
        }
    }

    async fn send_kills(&mut self, kills: Vec<Kill>) {
        for k in kills {
            info!(task = %k.task_id, "stopping task");
            match self.sched.kill(&k.task_id, k.grace).await {
                Ok(()) => {}
                // The master no longer has it, or it already ended.
                Err(SdkError::Rejected {
                    code: tonic::Code::NotFound | tonic::Code::FailedPrecondition,
                    ..
                }) => self.core.gone(&k.task_id, Instant::now()),
                Err(e) => warn!(task = %k.task_id, "kill failed (will retry): {e}"),
            }
        }
    }

    /// New offers: the keys whose launches wait are reconciled afresh,
    /// their launches placed, recorded, then accepted; the rest declined.
    async fn offers<R: Reconciler<D>>(&mut self, offers: Vec<v1::Offer>, r: &mut R) {
        let now = Instant::now();
        if !self.core.ready {
            let ids = offers.into_iter().map(|o| o.offer_id).collect();
            let _ = self.sched.decline(ids, Some(REFUSE_WAITING)).await;
            return;
        }
        let kills = self.core.run_waiting(r, now);
        self.send_kills(kills).await;
        let round = self.core.place(&offers);
        let refuse = if self.core.wants_offers() {
            REFUSE_WAITING
        } else {
            REFUSE_IDLE
        };
        let pending = round.pending.clone();
        self.launch(round, refuse, r).await;
        if !pending.is_empty() || self.pending_reported {
            self.pending_reported = !pending.is_empty();
            if let Err(e) = self.sched.report_pending(pending).await {
                debug!("pending report failed: {e}");
            }
        }
        self.flush().await;
    }

    /// Records the placed launches per key, then accepts them; a key whose
    /// record cannot be written launches nothing.
    async fn launch<R: Reconciler<D>>(&mut self, round: Round, refuse: f64, r: &mut R) {
        let Round { placed, mut unused, .. } = round;
        let offered: BTreeSet<String> = placed.iter().map(|a| a.offer_id.clone()).collect();
        let named = self.core.launching(placed, SystemTime::now());
        let keys: BTreeSet<String> = named.iter().map(|a| a.payload.0.clone()).collect();
        let mut unrecorded = BTreeSet::new();
        for key in keys {
            if let Err(e) = self.write_tasks(&key).await {
                warn!(%key, "cannot record new tasks, not launching them: {e}");
                unrecorded.insert(key);
            }
        }
        let (go, dropped): (Vec<_>, Vec<_>) = named.into_iter().partition(|a| !unrecorded.contains(&a.payload.0));
        for a in dropped {
            self.core.observed.remove(&a.payload.1);
            self.core.trigger(&a.payload.0, Instant::now());
        }
        unused.extend(offered.into_iter().filter(|o| !go.iter().any(|a| &a.offer_id == o)));
        if go.is_empty() && unused.is_empty() {
            return;
        }
        let plan = crate::offers::Plan {
            assignments: go,
            unplaced: Vec::new(),
            unused_offers: unused,
        };
        let (core, sched) = (&self.core, &self.sched);
        let done = sched
            .launch(plan, &mut Placed::default(), Some(refuse), |a| {
                let (key, id, volume) = &a.payload;
                let mut b = TaskBuilder::new(id).resources(&a.resources);
                if let Some(v) = volume {
                    b = b.volume(&v.id, &v.container_path);
                }
                let (Some(d), Some(t)) = (core.desired.get(key), core.observed.get(id)) else {
                    return b.build();
                };
                for (k, v) in &t.labels {
                    b = b.label(k, v);
                }
                r.build(key, &d.value, t, b).build()
            })
            .await;
        for (id, (key, ..)) in &done.launched {
            info!(%key, task = %id, "launched");
        }
        for refused in done.refused {
            if refused.maybe_launched() {
                // It may run: kept, and asked about until the master says.
                debug!(task = %refused.task_id, "launch answer lost; asking the master");
                continue;
            }
            warn!(task = %refused.task_id, "launch refused, placed again later: {}", refused.error);
            let (key, ..) = refused.payload;
            self.core.observed.remove(&refused.task_id);
            self.core.dirty_tasks.insert(key.clone());
            self.core.trigger(&key, Instant::now());
        }
    }

    /// Revives offers while launches wait, suppresses them otherwise.
    async fn offer_flow(&mut self, now: Instant) {
        if self.core.wants_offers() {
            let due = self.suppressed
                || self
                    .last_revive
                    .is_none_or(|t| now.saturating_duration_since(t) >= REVIVE_EVERY);
            if due {
                self.last_revive = Some(now);
                match self.sched.revive().await {
                    Ok(()) => self.suppressed = false,
                    Err(e) => debug!("revive failed: {e}"),
                }
            }
        } else if !self.suppressed {
            match self.sched.suppress().await {
                Ok(()) => self.suppressed = true,
                Err(e) => debug!("suppress failed: {e}"),
            }
            if self.pending_reported && self.sched.report_pending(Vec::new()).await.is_ok() {
                self.pending_reported = false;
            }
        }
    }

    /// Writes what changed: task records, desired objects, and deletes the
    /// keys forgotten once none of their tasks is left.
    async fn flush(&mut self) {
        // Task records first, and a key's object only once its records
        // are written: an object written without instances it held before
        // (taken over into records) must not lose them in a crash.
        for key in std::mem::take(&mut self.core.dirty_tasks) {
            if let Err(e) = self.write_tasks(&key).await {
                warn!(%key, "cannot write the task records yet: {e}");
                self.core.dirty_tasks.insert(key);
            }
        }
        let dirty: Vec<String> = self
            .core
            .desired
            .iter()
            .filter(|(k, d)| d.dirty && !self.core.dirty_tasks.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in dirty {
            let Some(d) = self.core.desired.get(&key) else { continue };
            let written = match encode(&d.value) {
                Ok(bytes) => self.kv.put(&self.desired_key(&key), bytes).await.map(drop),
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => {
                    if let Some(d) = self.core.desired.get_mut(&key) {
                        d.dirty = false;
                    }
                }
                Err(e) => warn!(%key, "cannot write the desired object yet: {e}"),
            }
        }
        let forgetting: Vec<String> = self.core.forgetting.iter().cloned().collect();
        for key in forgetting {
            if !self.core.observed.of_key(&key).is_empty() {
                continue;
            }
            let deleted = async {
                self.kv.delete(&self.tasks_key(&key)).await?;
                self.kv.delete(&self.desired_key(&key)).await
            };
            match deleted.await {
                Ok(_) => {
                    info!(%key, "forgotten");
                    self.core.forgot(&key);
                }
                Err(e) => warn!(%key, "cannot delete the key yet: {e}"),
            }
        }
    }

    /// Writes `key`'s task records (deletes them when none is left).
    async fn write_tasks(&self, key: &str) -> Result<(), SdkError> {
        let records = self.core.observed.records(key);
        if records.is_empty() {
            return self.kv.delete(&self.tasks_key(key)).await.map(drop);
        }
        self.kv.put(&self.tasks_key(key), encode(&records)?).await.map(drop)
    }

    fn desired_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn tasks_key(&self, key: &str) -> String {
        format!("{}{key}/tasks", self.prefix)
    }
}

fn encode(value: &impl Serialize) -> Result<Vec<u8>, SdkError> {
    serde_json::to_vec(value).map_err(|e| SdkError::Transport(format!("encode: {e}")))
}

/// Keys name tasks (`<key>.<name>`) and store entries: letters, digits,
/// `-` and `_` only.
fn check_key(key: &str) -> Result<(), SdkError> {
    let ok =
        !key.is_empty() && key.len() <= 128 && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SdkError::Rejected {
            code: tonic::Code::InvalidArgument,
            message: format!("controller key {key:?}: use 1 to 128 letters, digits, '-' or '_'"),
        })
    }
}
