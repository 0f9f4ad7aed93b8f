//! The owner task: the only holder of the services' state. It takes SDK
//! events, API commands, health reports and a tick, asks [`crate::plan`]
//! what to do, and does it: accepts offers, kills tasks, writes records to
//! the key-value namespace.
//!
//! ```text
//!  SDK Events ───────────┐
//!  API Cmd (mpsc 256) ───┼──▶ owner: services (records + live state) ──▶ Scheduler calls, Kv writes
//!  health Report (1024) ─┤          ▲ spawns one checker per running instance (health.rs)
//!  tick (200 ms) ────────┘
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mezzo_sdk::offers::{Placed, Strategy, TaskRequest, pack};
use mezzo_sdk::{Event, Events, Kv, Resources, Scheduler, SdkError, TaskBuilder, TaskState, task_state, v1};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::error::ApiError;
use crate::health;
use crate::plan::{self, Health, Inst, Limits, Phase, RestartHold, Verdict};
use crate::record::{self, InstanceRecord, ServiceRecord};
use crate::spec::{MAX_INSTANCES, ServiceSpec};
use crate::view::{DeployReply, Endpoint, InstanceStatus, ServiceStatus, Summary};

/// A reply channel.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// What the API asks of the owner.
#[derive(Debug)]
pub(crate) enum Cmd {
    Deploy(Box<ServiceSpec>, Reply<DeployReply>),
    Scale(String, u32, Reply<Summary>),
    Restart(String, Reply<DeployReply>),
    Rollback(String, Reply<DeployReply>),
    Remove(String, Reply<Summary>),
    Status(String, Reply<ServiceStatus>),
    List(Reply<Vec<Summary>>),
    Endpoints(String, Reply<Vec<Endpoint>>),
}

const TICK: Duration = Duration::from_millis(200);
/// Instances the master has not answered about are asked for again this often.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// A kill without a terminal update is sent again after this long.
const KILL_RETRY: Duration = Duration::from_secs(10);
/// Offers we cannot use are refused this long while we need more...
const REFUSE_WANTING: f64 = 1.0;
/// ...and this long when we need nothing (we revive when that changes).
const REFUSE_IDLE: f64 = 30.0;

/// Live state of one instance, next to its record.
#[derive(Debug)]
struct Live {
    phase: Phase,
    health: Health,
    running_since: Option<Instant>,
    failures: u32,
    checker: Option<AbortHandle>,
    kill_sent: Option<Instant>,
}

impl Live {
    fn new(phase: Phase) -> Live {
        Live {
            phase,
            health: Health::Unknown,
            running_since: None,
            failures: 0,
            checker: None,
            kill_sent: None,
        }
    }

    fn stop_checker(&mut self) {
        if let Some(h) = self.checker.take() {
            h.abort();
        }
    }
}

#[derive(Debug)]
struct Svc {
    rec: ServiceRecord,
    live: BTreeMap<String, Live>,
    backoff: RestartHold,
    dirty: bool,
    /// When the current update (or rollback) was first seen running.
    update_seen: Option<Instant>,
}

impl Svc {
    fn new(rec: ServiceRecord, phase: Phase) -> Svc {
        let restart = rec.target_spec().map(|s| s.restart.clone()).unwrap_or_default();
        let live = rec.instances.keys().map(|k| (k.clone(), Live::new(phase))).collect();
        Svc {
            rec,
            live,
            backoff: RestartHold::new(&restart),
            dirty: false,
            update_seen: None,
        }
    }

    fn insts(&self) -> Vec<Inst> {
        self.rec
            .instances
            .iter()
            .filter_map(|(id, r)| {
                let l = self.live.get(id)?;
                Some(Inst {
                    id: id.clone(),
                    version: r.version,
                    phase: l.phase,
                    health: l.health,
                    seq: r.seq,
                })
            })
            .collect()
    }

    fn summary(&self) -> Summary {
        let d = &self.rec.deployment;
        let state = if self.rec.removing {
            "removing".to_owned()
        } else {
            match (d.from, d.rolling_back) {
                (None, _) => "stable".to_owned(),
                (Some(f), false) => format!("updating {f} -> {}", d.target),
                (Some(f), true) => format!("rolling back {f} -> {}", d.target),
            }
        };
        let running = self.live.values().filter(|l| l.phase == Phase::Running).count() as u32;
        Summary {
            name: self.rec.name.clone(),
            version: d.target,
            desired: self.rec.desired,
            running,
            healthy: self.healthy().count() as u32,
            state,
        }
    }

    fn healthy(&self) -> impl Iterator<Item = (&String, &InstanceRecord)> {
        self.rec.instances.iter().filter(|(id, _)| {
            self.live
                .get(*id)
                .is_some_and(|l| l.phase == Phase::Running && l.health == Health::Healthy)
        })
    }

    /// An instance passed its check (or runs, without one): healthy, and
    /// the restart backoff starts over.
    fn healthy_now(&mut self, id: &str) {
        let Some(l) = self.live.get_mut(id) else { return };
        l.failures = 0;
        if l.health != Health::Healthy {
            l.health = Health::Healthy;
            let restart = self.rec.target_spec().map(|t| t.restart.clone()).unwrap_or_default();
            self.backoff.reset(&restart);
        }
    }

    fn desired(&self) -> u32 {
        if self.rec.removing { 0 } else { self.rec.desired }
    }

    fn limits(&self) -> Limits {
        let u = self.rec.target_spec().map(|s| s.upgrade.clone()).unwrap_or_default();
        Limits {
            max_surge: u.max_surge,
            max_unavailable: u.max_unavailable,
        }
    }
}

/// The owner task's state.
pub(crate) struct Owner {
    sched: Scheduler,
    kv: Kv,
    work_dir: PathBuf,
    http: reqwest::Client,
    services: BTreeMap<String, Svc>,
    loaded: bool,
    /// A pending report stands at the masters (cleared once all fit).
    pending_reported: bool,
    reports_tx: mpsc::Sender<health::Report>,
    last_revive: Option<Instant>,
    last_reconcile: Option<Instant>,
    started: Instant,
}

impl Owner {
    pub(crate) fn new(sched: Scheduler, work_dir: PathBuf, reports_tx: mpsc::Sender<health::Report>) -> Owner {
        Owner {
            kv: sched.kv(),
            sched,
            work_dir,
            http: reqwest::Client::new(),
            services: BTreeMap::new(),
            loaded: false,
            pending_reported: false,
            reports_tx,
            last_revive: None,
            last_reconcile: None,
            started: Instant::now(),
        }
    }

    /// Runs until the driver stops. Returns the master's reason when it
    /// removed the framework.
    pub(crate) async fn run(
        mut self,
        mut events: Events,
        mut cmds: mpsc::Receiver<Cmd>,
        mut reports: mpsc::Receiver<health::Report>,
    ) -> Option<String> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    None => return None,
                    Some(Event::Error { message }) => return Some(message),
                    Some(ev) => self.on_event(ev).await,
                },
                Some(cmd) = cmds.recv() => self.on_cmd(cmd).await,
                Some(r) = reports.recv() => self.on_health(r),
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Subscribed { framework_id, resumed } => {
                info!(%framework_id, resumed, "subscribed");
                if let Err(e) = crate::save_framework_id(&self.work_dir, &framework_id) {
                    warn!("cannot save the framework id: {e}");
                }
                if !self.loaded {
                    self.load().await;
                }
                self.reconcile_unknown(true).await;
            }
            Event::Offers(offers) => self.on_offers(offers).await,
            Event::Update(status) => self.on_update(status).await,
            Event::Disconnected { reason } => warn!(%reason, "disconnected from the master; reconnecting"),
            Event::AgentLost { agent_id } => info!(%agent_id, "agent lost"),
            Event::Rescind { .. } | Event::Error { .. } => {}
        }
    }

    /// Reads every service record; instances are `Unknown` until the master
    /// answers for them.
    async fn load(&mut self) {
        match self.kv.list(record::PREFIX).await {
            Ok(entries) => {
                for e in entries {
                    match serde_json::from_slice::<ServiceRecord>(&e.value) {
                        Ok(rec) => {
                            info!(service = %rec.name, instances = rec.instances.len(), "recovered service");
                            self.services.insert(rec.name.clone(), Svc::new(rec, Phase::Unknown));
                        }
                        Err(err) => warn!(key = %e.key, "unreadable service record skipped: {err}"),
                    }
                }
                self.loaded = true;
            }
            Err(e) => warn!("cannot read the service records yet: {e}"),
        }
    }

    /// Asks the master about instances whose state we do not know (all of
    /// them after a new subscription, with their agent ids).
    async fn reconcile_unknown(&mut self, all: bool) {
        let mut ask = Vec::new();
        for s in self.services.values() {
            for (id, r) in &s.rec.instances {
                let unknown = s.live.get(id).is_some_and(|l| l.phase == Phase::Unknown);
                if all || unknown {
                    ask.push((id.clone(), r.agent_id.clone()));
                }
            }
        }
        self.last_reconcile = Some(Instant::now());
        if !ask.is_empty()
            && let Err(e) = self.sched.reconcile(ask).await
        {
            warn!("reconcile failed: {e}");
        }
    }

    async fn on_tick(&mut self) {
        if !self.loaded {
            if self.sched.is_connected() {
                self.load().await;
            }
            return;
        }
        let now = self.now();
        let mut wanting = false;
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in &names {
            self.check_progress(name);
            let step = self.plan(name, now);
            wanting |= step.launch > 0;
            self.kill_all(name, step.kill).await;
        }
        self.retry_kills().await;
        if wanting && self.last_revive.is_none_or(|t| t.elapsed() > Duration::from_secs(2)) {
            self.last_revive = Some(Instant::now());
            if let Err(e) = self.sched.revive().await {
                warn!("revive failed: {e}");
            }
        }
        if self.last_reconcile.is_none_or(|t| t.elapsed() > RECONCILE_EVERY) {
            self.reconcile_unknown(false).await;
        }
        self.flush().await;
    }

    /// Rolls back an update that has not completed within its
    /// `progress_deadline` (say, new instances that never get offers or
    /// never start).
    fn check_progress(&mut self, name: &str) {
        let Some(s) = self.services.get_mut(name) else { return };
        if s.rec.deployment.from.is_none() {
            s.update_seen = None;
            return;
        }
        let seen = *s.update_seen.get_or_insert_with(Instant::now);
        let Some(spec) = s.rec.target_spec() else { return };
        let (deadline, auto) = (spec.upgrade.progress_deadline, spec.upgrade.auto_rollback);
        if s.rec.deployment.rolling_back || seen.elapsed() < deadline {
            return;
        }
        let version = s.rec.deployment.target;
        if let Verdict::RolledBack { from, to } = plan::failed(&mut s.rec.deployment, version, auto) {
            let what = format!(
                "version {from} not deployed within {}; rolling back to version {to}",
                humantime::format_duration(deadline)
            );
            warn!(service = %name, "{what}");
            s.rec.event(what);
            s.update_seen = Some(Instant::now());
            s.dirty = true;
        }
    }

    /// Runs the planner for one service, recording a completed update.
    fn plan(&mut self, name: &str, now: Duration) -> plan::Step {
        let Some(s) = self.services.get_mut(name) else {
            return plan::Step::default();
        };
        let insts = s.insts();
        let (desired, limits) = (s.desired(), s.limits());
        let may = s.backoff.may_launch(now) && !s.rec.removing;
        let step = plan::step(&mut s.rec.deployment, desired, limits, &insts, may);
        if step.completed {
            let what = format!("version {} is deployed", s.rec.deployment.target);
            info!(service = %name, "{what}");
            s.rec.event(what);
            s.rec.prune_versions();
            s.dirty = true;
        }
        step
    }

    async fn kill_all(&mut self, name: &str, ids: Vec<String>) {
        for id in ids {
            let grace = {
                let Some(s) = self.services.get_mut(name) else { return };
                let Some(l) = s.live.get_mut(&id) else { continue };
                l.phase = Phase::Killing;
                l.stop_checker();
                l.kill_sent = Some(Instant::now());
                s.rec
                    .instances
                    .get(&id)
                    .and_then(|r| s.rec.versions.get(&r.version))
                    .map(|v| v.kill_grace)
            };
            info!(service = %name, task = %id, "stopping instance");
            self.kill_task(name, &id, grace).await;
        }
    }

    async fn kill_task(&mut self, name: &str, id: &str, grace: Option<Duration>) {
        match self.sched.kill(id, grace).await {
            Ok(()) => {}
            // The master no longer has it (or it already ended): it is gone.
            Err(SdkError::Rejected {
                code: tonic_code::NOT_FOUND | tonic_code::FAILED_PRECONDITION,
                ..
            }) => self.forget(name, id),
            Err(e) => warn!(task = %id, "kill failed (will retry): {e}"),
        }
    }

    async fn retry_kills(&mut self) {
        let mut due = Vec::new();
        for (name, s) in &mut self.services {
            for (id, l) in &mut s.live {
                if l.phase == Phase::Killing && l.kill_sent.is_some_and(|t| t.elapsed() > KILL_RETRY) {
                    l.kill_sent = Some(Instant::now());
                    due.push((name.clone(), id.clone()));
                }
            }
        }
        for (name, id) in due {
            self.kill_task(&name, &id, None).await;
        }
    }

    /// Drops an instance that has ended.
    fn forget(&mut self, name: &str, id: &str) {
        if let Some(s) = self.services.get_mut(name) {
            if let Some(mut l) = s.live.remove(id) {
                l.stop_checker();
            }
            if s.rec.instances.remove(id).is_some() {
                s.dirty = true;
            }
        }
    }

    /// Writes changed records; deletes those of removed services once
    /// nothing of them runs.
    async fn flush(&mut self) {
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            let Some(s) = self.services.get_mut(&name) else {
                continue;
            };
            if s.rec.removing && s.rec.instances.is_empty() {
                match self.kv.delete(&record::key(&name)).await {
                    Ok(_) => {
                        info!(service = %name, "removed");
                        self.services.remove(&name);
                    }
                    Err(e) => warn!(service = %name, "cannot delete the record yet: {e}"),
                }
                continue;
            }
            if !s.dirty {
                continue;
            }
            match put(&self.kv, &s.rec).await {
                Ok(()) => s.dirty = false,
                Err(e) => warn!(service = %name, "cannot write the record yet: {e}"),
            }
        }
    }

    async fn on_offers(&mut self, offers: Vec<v1::Offer>) {
        if !self.loaded {
            let ids = offers.into_iter().map(|o| o.offer_id).collect();
            let _ = self.sched.decline(ids, Some(REFUSE_WANTING)).await;
            return;
        }
        let now = self.now();
        let mut room = offers.clone();
        let mut tasks: BTreeMap<usize, Vec<(String, v1::TaskInfo)>> = BTreeMap::new();
        let mut wanting = false;
        let mut waiting = Vec::new();
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in &names {
            let step = self.plan(name, now);
            self.kill_all(name, step.kill).await;
            if step.launch == 0 {
                continue;
            }
            let placed = self.place(name, step.launch, &offers, &mut room).await;
            wanting |= (placed.len() as u32) < step.launch;
            let missing = step.launch.saturating_sub(placed.len() as u32);
            waiting.extend(self.waiting(name, missing, &offers));
            for (i, id, task) in placed {
                tasks.entry(i).or_default().push((id, task));
            }
        }
        for (i, list) in tasks.iter() {
            let (ids, infos): (Vec<String>, Vec<v1::TaskInfo>) = list.iter().cloned().unzip();
            if let Err(e) = self.sched.accept(vec![offers[*i].offer_id.clone()], infos, None).await {
                warn!(offer = %offers[*i].offer_id, "accept failed; the instances will be placed again: {e}");
                for id in ids {
                    let name = service_of(&id).to_owned();
                    self.forget(&name, &id);
                }
            }
        }
        let unused: Vec<String> = (0..offers.len())
            .filter(|i| !tasks.contains_key(i))
            .map(|i| offers[i].offer_id.clone())
            .collect();
        if !unused.is_empty() {
            let refuse = if wanting { REFUSE_WANTING } else { REFUSE_IDLE };
            let _ = self.sched.decline(unused, Some(refuse)).await;
        }
        if !waiting.is_empty() || self.pending_reported {
            // Why instances are not running, for the dashboard and `mezzo why`.
            self.pending_reported = !waiting.is_empty();
            if let Err(e) = self.sched.report_pending(waiting).await {
                debug!("pending report failed: {e}");
            }
        }
        self.flush().await;
    }

    /// Pending-report entries for `missing` instances of `name` that the
    /// offers had no room for.
    fn waiting(&self, name: &str, missing: u32, offers: &[v1::Offer]) -> Vec<v1::PendingTask> {
        let Some(s) = self.services.get(name) else {
            return vec![];
        };
        let version = s.rec.deployment.target;
        let Some(spec) = s.rec.versions.get(&version) else {
            return vec![];
        };
        let Ok(res) = spec.resources() else { return vec![] };
        let largest = offers
            .iter()
            .filter_map(|o| Resources::from_proto(&o.resources).ok())
            .max_by_key(|r| (r.cpus, r.mem))
            .map_or_else(|| "no offer".to_owned(), |r| format!("largest offer {r}"));
        let constraints = if spec.constraints.is_empty() {
            String::new()
        } else {
            format!(" under constraints {}", spec.constraints.join(", "))
        };
        let reason = format!(
            "service {name}: {missing} instance(s) of version {version} find no room; each needs {res} and {} port(s){constraints}; {largest}",
            spec.ports.len()
        );
        (0..missing.min(100))
            .map(|k| mezzo_sdk::pending_task(format!("{name}.waiting-{k}"), reason.clone(), Some(&res)))
            .collect()
    }

    /// Places up to `n` new instances of a service's target version on the
    /// offers (`room` is what is left of them), records them durably and
    /// returns the tasks to launch by offer index. Nothing is launched
    /// unless its record is written.
    async fn place(
        &mut self,
        name: &str,
        n: u32,
        offers: &[v1::Offer],
        room: &mut [v1::Offer],
    ) -> Vec<(usize, String, v1::TaskInfo)> {
        let Some(s) = self.services.get_mut(name) else {
            return vec![];
        };
        let version = s.rec.deployment.target;
        let Some(spec) = s.rec.versions.get(&version).cloned() else {
            return vec![];
        };
        let (Ok(res), Ok(constraints)) = (spec.resources(), spec.placement()) else {
            return vec![];
        };
        let mut placed = Placed::default();
        for (id, r) in &s.rec.instances {
            if s.live.get(id).is_some_and(|l| l.phase != Phase::Killing) {
                placed.add_on(&r.host, r.attributes.iter().map(|(a, b)| (a.as_str(), b.as_str())));
            }
        }
        let request = TaskRequest::new(res).ports(spec.ports.len());
        let requests = vec![request; n as usize];
        let packing = match pack(room, &requests, Strategy::FirstFit, &constraints, &mut placed) {
            Ok(p) => p,
            Err(e) => {
                warn!("an offer's resources do not parse: {e}");
                return vec![];
            }
        };
        let before = s.rec.clone();
        let mut out = Vec::new();
        for p in &packing.placements {
            let offer = &offers[p.offer];
            let task_id = format!("{name}.{version}.{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            s.rec.next_seq += 1;
            let inst = InstanceRecord {
                version,
                agent_id: offer.agent_id.clone(),
                host: offer.hostname.clone(),
                attributes: offer
                    .attributes
                    .iter()
                    .map(|a| (a.name.clone(), a.value.clone()))
                    .collect(),
                ports: p.ports.clone(),
                seq: s.rec.next_seq,
            };
            let task = build_task(&task_id, &spec, &p.resources, &inst);
            s.rec.instances.insert(task_id.clone(), inst);
            s.live.insert(task_id.clone(), Live::new(Phase::Staging));
            if let Ok(left) = Resources::from_proto(&room[p.offer].resources) {
                room[p.offer].resources = left.saturating_sub(&p.resources).to_proto();
            }
            out.push((p.offer, task_id, task));
        }
        if out.is_empty() {
            return out;
        }
        match put(&self.kv, &s.rec).await {
            Ok(()) => {
                s.dirty = false;
                info!(service = %name, version, count = out.len(), "launching instances");
                out
            }
            Err(e) => {
                warn!(service = %name, "cannot record new instances, not launching them: {e}");
                for (_, id, _) in &out {
                    s.live.remove(id);
                }
                s.rec = before;
                vec![]
            }
        }
    }

    async fn on_update(&mut self, status: v1::TaskStatus) {
        let id = status.task_id.clone();
        let name = service_of(&id).to_owned();
        let state = task_state(&status).unwrap_or(TaskState::Unknown);
        let known = self.services.get(&name).is_some_and(|s| s.live.contains_key(&id));
        if !known {
            // A task of ours that no record holds (one we replaced while its
            // agent was away): stop it, so that it cannot be a duplicate.
            if self.loaded && !state.is_terminal() && state != TaskState::Unknown {
                info!(task = %id, "stopping a task no service owns");
                let _ = self.sched.kill(&id, None).await;
            }
            return;
        }
        let now = Instant::now();
        let Some(s) = self.services.get_mut(&name) else { return };
        let Some(l) = s.live.get_mut(&id) else { return };
        match state {
            TaskState::Staging | TaskState::Starting if l.phase != Phase::Killing => l.phase = Phase::Starting,
            TaskState::Running if l.phase != Phase::Killing => {
                l.phase = Phase::Running;
                if l.running_since.is_none() {
                    l.running_since = Some(now);
                }
                let spec = s
                    .rec
                    .instances
                    .get(&id)
                    .and_then(|r| s.rec.versions.get(&r.version).map(|v| (r, v)));
                match spec.map(|(r, v)| (r, v, v.probe())) {
                    Some((r, v, Ok(Some(probe)))) if l.checker.is_none() => {
                        let (interval, timeout) = v
                            .health
                            .as_ref()
                            .map_or((Duration::from_secs(5), Duration::from_secs(2)), |h| {
                                (h.interval, h.timeout)
                            });
                        let target = health::Target {
                            task_id: id.clone(),
                            host: r.host.clone(),
                            ports: v.ports.iter().cloned().zip(r.ports.iter().copied()).collect(),
                            probe,
                            interval,
                            timeout,
                        };
                        l.checker = Some(health::spawn(target, self.http.clone(), self.reports_tx.clone()));
                    }
                    // No check: running is healthy.
                    Some((_, _, Ok(None))) => s.healthy_now(&id),
                    _ => {}
                }
            }
            TaskState::Killing | TaskState::Staging | TaskState::Starting | TaskState::Running => {}
            ended => {
                let was_killed_by_us = l.phase == Phase::Killing;
                let version = s.rec.instances.get(&id).map(|r| r.version).unwrap_or_default();
                self.forget(&name, &id);
                if !was_killed_by_us {
                    let why = if status.message.is_empty() {
                        format!("{:?}", status.reason)
                    } else {
                        status.message.clone()
                    };
                    let fault = matches!(ended, TaskState::Failed | TaskState::Finished | TaskState::Error);
                    self.failure(&name, version, &format!("instance {id} {}: {why}", ended.name()), fault);
                }
            }
        }
    }

    fn on_health(&mut self, r: health::Report) {
        let name = service_of(&r.task_id).to_owned();
        let now = Instant::now();
        let Some(s) = self.services.get_mut(&name) else { return };
        let running = s.live.get(&r.task_id).is_some_and(|l| l.phase == Phase::Running);
        let Some(version) = s.rec.instances.get(&r.task_id).map(|i| i.version) else {
            return;
        };
        let Some(h) = s.rec.versions.get(&version).and_then(|v| v.health.clone()) else {
            return;
        };
        if !running {
            return;
        }
        if r.ok {
            s.healthy_now(&r.task_id);
            return;
        }
        let Some(l) = s.live.get_mut(&r.task_id) else { return };
        // Failures count only after the grace period, or once it has been
        // healthy.
        let in_grace = l.health != Health::Healthy && l.running_since.is_some_and(|t| now < t + h.grace_period);
        if in_grace || l.health == Health::Unhealthy {
            return;
        }
        l.failures += 1;
        if l.failures >= h.failures {
            l.health = Health::Unhealthy;
            l.stop_checker();
            let what = format!(
                "instance {} failed {} health checks: {}",
                r.task_id, l.failures, r.detail
            );
            self.failure(&name, version, &what, true);
        }
    }

    /// An instance failed: back off further launches, and (for the new
    /// version of an update) maybe roll back.
    fn failure(&mut self, name: &str, version: u64, what: &str, fault: bool) {
        let now = self.now();
        let Some(s) = self.services.get_mut(name) else { return };
        warn!(service = %name, "{what}");
        s.rec.event(what);
        let Some(spec) = s.rec.versions.get(&version).cloned() else {
            return;
        };
        s.backoff.failure(now);
        if fault
            && let Verdict::RolledBack { from, to } =
                plan::failed(&mut s.rec.deployment, version, spec.upgrade.auto_rollback)
        {
            let what = format!("version {from} failed; rolling back to version {to}");
            warn!(service = %name, "{what}");
            s.rec.event(what);
            // The old version is known to work: no need to wait.
            s.backoff = RestartHold::new(&spec.restart);
        }
        s.dirty = true;
    }

    async fn on_cmd(&mut self, cmd: Cmd) {
        if !self.loaded {
            match cmd {
                Cmd::Deploy(_, r) | Cmd::Restart(_, r) | Cmd::Rollback(_, r) => drop(r.send(not_ready())),
                Cmd::Scale(_, _, r) | Cmd::Remove(_, r) => drop(r.send(not_ready())),
                Cmd::Status(_, r) => drop(r.send(not_ready())),
                Cmd::List(r) => drop(r.send(not_ready())),
                Cmd::Endpoints(_, r) => drop(r.send(not_ready())),
            }
            return;
        }
        match cmd {
            Cmd::Deploy(spec, reply) => {
                let r = self.deploy(*spec).await;
                let _ = reply.send(r);
            }
            Cmd::Scale(name, n, reply) => {
                let r = if n > MAX_INSTANCES {
                    Err(ApiError::BadRequest(format!(
                        "instances: {n} is more than the limit of {MAX_INSTANCES}"
                    )))
                } else {
                    self.change(&name, |rec| {
                        rec.desired = n;
                        rec.event(format!("scaled to {n}"));
                        Ok(())
                    })
                    .await
                    .and_then(|()| self.summary(&name))
                };
                let _ = reply.send(r);
            }
            Cmd::Restart(name, reply) => {
                let r = self
                    .change(&name, |rec| {
                        let mut spec = rec
                            .target_spec()
                            .cloned()
                            .ok_or_else(|| ApiError::Conflict("no target version".into()))?;
                        spec.instances = rec.desired;
                        let v = rec.add_version(spec);
                        rec.event(format!("restart: rolling to version {v}"));
                        Ok(reply_of(rec, "updated"))
                    })
                    .await;
                let _ = reply.send(r);
            }
            Cmd::Rollback(name, reply) => {
                let r = self
                    .change(&name, |rec| {
                        let to = rec.deployment.roll_back().ok_or_else(|| {
                            ApiError::Conflict(format!("service {} has no previous version to roll back to", rec.name))
                        })?;
                        rec.event(format!("rollback to version {to} requested"));
                        Ok(reply_of(rec, "rolling back"))
                    })
                    .await;
                let _ = reply.send(r);
            }
            Cmd::Remove(name, reply) => {
                let r = self
                    .change(&name, |rec| {
                        rec.removing = true;
                        rec.event("removal requested");
                        Ok(())
                    })
                    .await
                    .and_then(|()| self.summary(&name));
                let _ = reply.send(r);
            }
            Cmd::Status(name, reply) => {
                let _ = reply.send(self.status(&name));
            }
            Cmd::List(reply) => {
                let _ = reply.send(Ok(self.services.values().map(Svc::summary).collect()));
            }
            Cmd::Endpoints(name, reply) => {
                let _ = reply.send(self.endpoints(&name));
            }
        }
    }

    async fn deploy(&mut self, spec: ServiceSpec) -> Result<DeployReply, ApiError> {
        let name = spec.name.clone();
        let Some(s) = self.services.get(&name) else {
            let rec = ServiceRecord::new(spec);
            put(&self.kv, &rec).await.map_err(store_error)?;
            info!(service = %name, "created");
            let reply = reply_of(&rec, "created");
            self.services.insert(name, Svc::new(rec, Phase::Staging));
            return Ok(reply);
        };
        if s.rec.removing {
            return Err(ApiError::Conflict(format!(
                "service {name} is being removed; deploy it again once it is gone"
            )));
        }
        if s.rec.target_spec() == Some(&spec) {
            return Ok(reply_of(&s.rec, "unchanged"));
        }
        self.change(&name, |rec| {
            let v = rec.add_version(spec);
            rec.event(format!("rolling update to version {v}"));
            Ok(reply_of(rec, "updated"))
        })
        .await
    }

    /// Applies `f` to a copy of a service's record, writes it, and only
    /// then makes it current: a refused or failed change leaves nothing
    /// half-done.
    async fn change<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut ServiceRecord) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let s = self.services.get(name).ok_or_else(|| unknown(name))?;
        if s.rec.removing {
            return Err(ApiError::Conflict(format!("service {name} is being removed")));
        }
        let mut rec = s.rec.clone();
        let out = f(&mut rec)?;
        put(&self.kv, &rec).await.map_err(store_error)?;
        if let Some(s) = self.services.get_mut(name) {
            s.rec = rec;
            s.dirty = false;
        }
        Ok(out)
    }

    fn summary(&self, name: &str) -> Result<Summary, ApiError> {
        self.services.get(name).map(Svc::summary).ok_or_else(|| unknown(name))
    }

    fn status(&self, name: &str) -> Result<ServiceStatus, ApiError> {
        let s = self.services.get(name).ok_or_else(|| unknown(name))?;
        let instances = s
            .rec
            .instances
            .iter()
            .map(|(id, r)| {
                let l = s.live.get(id);
                InstanceStatus {
                    task_id: id.clone(),
                    version: r.version,
                    host: r.host.clone(),
                    agent_id: r.agent_id.clone(),
                    ports: port_map(&s.rec, r),
                    phase: l.map(|l| format!("{:?}", l.phase)).unwrap_or_default(),
                    health: l.map(|l| format!("{:?}", l.health)).unwrap_or_default(),
                }
            })
            .collect();
        Ok(ServiceStatus {
            summary: s.summary(),
            instances,
            events: s.rec.events.clone(),
            spec: s
                .rec
                .target_spec()
                .cloned()
                .ok_or_else(|| ApiError::Conflict("no target version".into()))?,
        })
    }

    fn endpoints(&self, name: &str) -> Result<Vec<Endpoint>, ApiError> {
        let s = self.services.get(name).ok_or_else(|| unknown(name))?;
        Ok(s.healthy()
            .map(|(id, r)| Endpoint {
                task_id: id.clone(),
                version: r.version,
                host: r.host.clone(),
                ports: port_map(&s.rec, r),
                address: match r.ports.first() {
                    Some(p) => format!("{}:{p}", r.host),
                    None => r.host.clone(),
                },
            })
            .collect())
    }
}

/// gRPC codes, as the SDK reports them.
mod tonic_code {
    pub const NOT_FOUND: tonic::Code = tonic::Code::NotFound;
    pub const FAILED_PRECONDITION: tonic::Code = tonic::Code::FailedPrecondition;
}

fn not_ready<T>() -> Result<T, ApiError> {
    Err(ApiError::Unavailable(
        "the framework is still connecting to the masters".into(),
    ))
}

fn unknown(name: &str) -> ApiError {
    ApiError::NotFound(format!("no service named {name:?}"))
}

fn store_error(e: SdkError) -> ApiError {
    ApiError::Unavailable(format!(
        "cannot store the change in the masters' registry (nothing was changed): {e}"
    ))
}

fn reply_of(rec: &ServiceRecord, outcome: &str) -> DeployReply {
    DeployReply {
        name: rec.name.clone(),
        version: rec.deployment.target,
        outcome: outcome.into(),
    }
}

fn port_map(rec: &ServiceRecord, r: &InstanceRecord) -> BTreeMap<String, u64> {
    let names = rec
        .versions
        .get(&r.version)
        .map(|v| v.ports.clone())
        .unwrap_or_default();
    names.into_iter().zip(r.ports.iter().copied()).collect()
}

/// The service a task id belongs to: ids are `<service>.<version>.<uuid>`.
fn service_of(task_id: &str) -> &str {
    task_id.split('.').next().unwrap_or_default()
}

async fn put(kv: &Kv, rec: &ServiceRecord) -> Result<(), SdkError> {
    let bytes = serde_json::to_vec(rec).map_err(|e| SdkError::Transport(format!("encode: {e}")))?;
    kv.put(&record::key(&rec.name), bytes).await.map(drop)
}

/// The task of one instance: the spec's command through the shell, its
/// resources and ports, and the ports in the environment.
fn build_task(task_id: &str, spec: &ServiceSpec, resources: &Resources, inst: &InstanceRecord) -> v1::TaskInfo {
    let mut b = TaskBuilder::new(task_id)
        .name(&spec.name)
        .resources(resources)
        .shell(&spec.command)
        .kill_grace(spec.kill_grace)
        .label("mezzo.service", &spec.name)
        .label("mezzo.service.version", inst.version.to_string())
        .env("HOST", &inst.host)
        .env("MEZZO_SERVICE", &spec.name);
    for (k, v) in &spec.env {
        b = b.env(k, v);
    }
    for (i, (name, port)) in spec.ports.iter().zip(&inst.ports).enumerate() {
        b = b
            .env(format!("PORT{i}"), port.to_string())
            .env(format!("MEZZO_PORT_{}", name.to_ascii_uppercase()), port.to_string());
    }
    if let Some(p) = inst.ports.first() {
        b = b.env("PORT", p.to_string());
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_carry_ports_env_and_labels() {
        let spec = ServiceSpec::parse(
            "name = \"web\"\ninstances = 1\ncommand = \"run\"\nresources = \"cpus:0.1\"\nports = [\"http\", \"admin\"]\n[env]\nA = \"1\"\n",
        )
        .expect("spec");
        let inst = InstanceRecord {
            version: 3,
            agent_id: "a".into(),
            host: "h".into(),
            attributes: vec![],
            ports: vec![31000, 31001],
            seq: 1,
        };
        let res = Resources::parse("cpus:0.1;ports:[31000-31001]").expect("res");
        let t = build_task("web.3.x", &spec, &res, &inst);
        let cmd = t.command.expect("command");
        let env: BTreeMap<_, _> = cmd
            .environment
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(env["PORT0"], "31000");
        assert_eq!(env["PORT1"], "31001");
        assert_eq!(env["PORT"], "31000");
        assert_eq!(env["MEZZO_PORT_ADMIN"], "31001");
        assert_eq!(env["A"], "1");
        assert_eq!(env["HOST"], "h");
        assert_eq!(service_of(&t.task_id), "web");
    }
}
