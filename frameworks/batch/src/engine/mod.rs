//! The framework's one owner task. It holds the SDK driver's events, the
//! jobs, and the handle to the store; the HTTP API talks to it through
//! [`Engine`] (a bounded channel with a oneshot per request).
//!
//! ```text
//!  HTTP API ──Request (mpsc)──▶ engine task ◀── Events (SDK)
//!                                  │  accept / decline / kill / ack (SDK calls)
//!                                  │  progress and submissions (SDK Kv)
//!  agent totals (watch) ◀── poller task (master /state every 2 s)
//! ```
//!
//! Launching, retrying, timing out and cancelling tasks is the SDK's
//! [`WorkQueue`]'s: the engine hands it each job's tasks as the job may
//! run (dependencies met, within `max_parallel`), and records what it
//! reports in the job's durable progress.
//!
//! Durability: a task's end is saved in the job's progress *before* its
//! update is acknowledged (manual acknowledgements), so an update the
//! framework never saved is resent by the agent after a restart. Running
//! tasks are not saved: after a restart the SDK's reconciliation reports
//! them and the engine adopts them, holding launches for a short grace
//! period until it has.

mod launch;
mod runs;
mod view;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use mezzo_sdk::{Event, Events, MasterHttp, RetryPolicy, Scheduler, SchedulerConfig, WorkQueue, task_state, v1};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::job::{self, Job, Key, Progress};
use crate::spec::{self, SpecError};
use crate::store::{self, StoreError, Submission};
pub use runs::Run;
pub use view::{JobStatus, JobSummary, TaskView};

/// Longest wait of launches after a restart for the implicit
/// reconciliation to end (`Event::Reconciled`): every task still running
/// is reported first, so none is launched again. Past it (the SDK gave up
/// asking), launches go ahead.
const RECONCILE_LIMIT: Duration = Duration::from_secs(120);
/// Most updates kept while the saved jobs are not loaded yet; past it
/// they are dropped unacknowledged (their agents resend them).
const MAX_EARLY_UPDATES: usize = 100_000;
/// How often progress is saved and timers checked.
const TICK: Duration = Duration::from_millis(100);
/// Most tasks handed to the queue per tick, beyond those it holds: a job
/// of 100,000 tasks enters it in steps, not in one long pause.
const FEED_PER_TICK: usize = 20_000;

/// Settings of the batch framework.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Master addresses.
    pub masters: Vec<String>,
    /// Where the framework id is kept between runs.
    pub state_dir: PathBuf,
    /// Framework name.
    pub name: String,
    /// Failover timeout: how long the masters keep the tasks of a stopped
    /// batch framework.
    pub failover_timeout: Duration,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("unknown job {0:?}")]
    UnknownJob(String),
    #[error("job {job:?}: no agent could ever run a task of {need} (largest agent: {largest})")]
    Unsatisfiable { job: String, need: String, largest: String },
    #[error("job {job:?}: index {index} is out of range (the job has {count} tasks)")]
    BadIndex { job: String, index: u32, count: u32 },
    #[error("the batch framework is not connected to a master yet; try again")]
    NotReady,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the batch framework has stopped")]
    Stopped,
}

/// Where a task's latest attempt runs or ran, for `logs`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskLocation {
    pub task_id: String,
    pub agent_id: String,
    pub framework_id: String,
}

enum Request {
    Submit {
        text: String,
        reply: oneshot::Sender<Result<Vec<String>, BatchError>>,
    },
    List(oneshot::Sender<Vec<JobSummary>>),
    Status {
        name: String,
        all: bool,
        index: Option<u32>,
        reply: oneshot::Sender<Result<JobStatus, BatchError>>,
    },
    Cancel {
        name: String,
        reply: oneshot::Sender<Result<JobSummary, BatchError>>,
    },
    Locate {
        name: String,
        index: u32,
        attempt: Option<u32>,
        reply: oneshot::Sender<Result<Option<TaskLocation>, BatchError>>,
    },
}

/// Handle on the running framework. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    tx: mpsc::Sender<Request>,
    http: MasterHttp,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Request")
    }
}

impl Engine {
    /// Starts the framework: the SDK driver, the engine task, and the
    /// poller of agent sizes.
    pub fn start(cfg: BatchConfig) -> std::io::Result<Engine> {
        std::fs::create_dir_all(&cfg.state_dir)?;
        let id_file = cfg.state_dir.join("framework_id");
        let saved_id = std::fs::read_to_string(&id_file)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let mut sdk = SchedulerConfig::new(cfg.masters.clone(), cfg.name.clone());
        sdk.framework.failover_timeout_secs = cfg.failover_timeout.as_secs_f64();
        sdk.framework_id = saved_id.clone();
        sdk.auto_acknowledge = false;
        // The masters' HTTP API, with the framework's own credential.
        let http = MasterHttp::new(&sdk).map_err(|e| std::io::Error::other(e.to_string()))?;
        let (scheduler, events) = Scheduler::start(sdk);
        let (agents_tx, agents_rx) = watch::channel(Vec::new());
        tokio::spawn(launch::poll_agents(http.clone(), agents_tx));
        let (tx, rx) = mpsc::channel(256);
        let state = State {
            scheduler,
            id_file,
            restarted: saved_id.is_some(),
            loaded: false,
            connected: false,
            hold_until: None,
            reconciled: false,
            epoch: 0,
            next_seq: 1,
            order: Vec::new(),
            jobs: HashMap::new(),
            submitted_at: HashMap::new(),
            held_acks: Vec::new(),
            early: Vec::new(),
            runs: runs::Runs::default(),
            queue: WorkQueue::new("batch", RetryPolicy::default()),
            agents: agents_rx,
            pending_reported: false,
            pending_sent: None,
        };
        tokio::spawn(state.run(events, rx));
        Ok(Engine { tx, http })
    }

    /// The masters' HTTP API, as this framework reaches it.
    pub fn master_http(&self) -> &MasterHttp {
        &self.http
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, BatchError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| BatchError::Stopped)?;
        rx.await.map_err(|_| BatchError::Stopped)
    }

    /// Submits a job file; answers the new jobs' names once saved.
    pub async fn submit(&self, text: String) -> Result<Vec<String>, BatchError> {
        self.ask(|reply| Request::Submit { text, reply }).await?
    }

    /// Every job, in submission order.
    pub async fn list(&self) -> Result<Vec<JobSummary>, BatchError> {
        self.ask(Request::List).await
    }

    /// One job in detail (`all`: every task, else the interesting ones).
    pub async fn status(&self, name: &str, all: bool, index: Option<u32>) -> Result<JobStatus, BatchError> {
        let name = name.to_owned();
        self.ask(|reply| Request::Status {
            name,
            all,
            index,
            reply,
        })
        .await?
    }

    /// Cancels a job: nothing more launches, running tasks are killed.
    pub async fn cancel(&self, name: &str) -> Result<JobSummary, BatchError> {
        let name = name.to_owned();
        self.ask(|reply| Request::Cancel { name, reply }).await?
    }

    /// Where task `index` of `name` last ran (its `attempt`, if given),
    /// if it ran since this start.
    pub async fn locate(
        &self,
        name: &str,
        index: u32,
        attempt: Option<u32>,
    ) -> Result<Option<TaskLocation>, BatchError> {
        let name = name.to_owned();
        self.ask(|reply| Request::Locate {
            name,
            index,
            attempt,
            reply,
        })
        .await?
    }
}

/// The engine task's state.
struct State {
    scheduler: Scheduler,
    id_file: PathBuf,
    /// Started with a saved framework id: reconcile before launching.
    restarted: bool,
    /// Saved jobs are loaded (after the first subscription).
    loaded: bool,
    connected: bool,
    /// No launches before this, or before the reconciliation ended.
    hold_until: Option<Instant>,
    /// The implicit reconciliation of the current subscription ended.
    /// Reset on every subscription: a `Reconciled` from a leader that then
    /// died says nothing of what the next one knows (the soak caught a
    /// restarted engine that loaded its jobs after a second subscription,
    /// took the first one's `Reconciled` as enough, and relaunched tasks
    /// the new leader had not heard of yet because their agent had not
    /// re-registered).
    reconciled: bool,
    epoch: u64,
    next_seq: u64,
    /// Job names in submission order.
    order: Vec<String>,
    jobs: HashMap<String, Job>,
    submitted_at: HashMap<String, f64>,
    /// Terminal updates recorded but not yet saved: acknowledged after the
    /// next successful save.
    held_acks: Vec<v1::TaskStatus>,
    /// Updates that came before the saved jobs were loaded (reconciliation
    /// answers, resent ends): handled after the load, never acknowledged
    /// before it (an end acknowledged for a job not loaded yet would be
    /// lost, and its task run again).
    early: Vec<v1::TaskStatus>,
    /// Each task's runs since this start: where, when, how they ended.
    runs: runs::Runs,
    /// The tasks handed over to be launched, retried and timed out; its
    /// task ids carry this start's epoch (set when the jobs are loaded).
    queue: WorkQueue<Key>,
    agents: watch::Receiver<Vec<mezzo_sdk::Resources>>,
    /// A pending report is standing at the masters (cleared when all fit).
    pending_reported: bool,
    /// When the last pending report was sent (at most one a second).
    pending_sent: Option<Instant>,
}

impl State {
    async fn run(mut self, mut events: Events, mut requests: mpsc::Receiver<Request>) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(event) => self.event(event).await,
                    None => {
                        warn!("the scheduler driver stopped; the batch framework stops");
                        return;
                    }
                },
                request = requests.recv() => match request {
                    Some(r) => self.request(r).await,
                    None => return,
                },
                _ = ticker.tick() => self.tick().await,
            }
        }
    }

    async fn event(&mut self, event: Event) {
        match event {
            Event::Subscribed { framework_id, .. } => {
                self.connected = true;
                self.reconciled = false;
                if let Err(e) = std::fs::write(&self.id_file, &framework_id) {
                    warn!(error = %e, "cannot save the framework id; a restart would register anew");
                }
                if !self.loaded {
                    self.load().await;
                }
                self.queue.subscribed();
            }
            Event::Disconnected { reason } => {
                warn!(%reason, "disconnected from the master; tasks keep running");
                self.connected = false;
            }
            Event::Offers(offers) => self.offers(offers).await,
            Event::Update(status) => self.update(status),
            Event::Error { message } => warn!(%message, "the master removed the batch framework"),
            Event::Reconciled => {
                self.reconciled = true;
                self.queue.reconciled();
                if self.hold_until.take().is_some() {
                    info!("reconciliation ended; launching");
                }
            }
            _ => {}
        }
    }

    /// Loads saved jobs and takes a new epoch. On failure the next tick
    /// tries again; nothing launches meanwhile.
    async fn load(&mut self) {
        let kv = self.scheduler.kv();
        let result = async {
            let epoch = store::next_epoch(&kv).await?;
            let saved = store::load(&kv).await?;
            Ok::<_, StoreError>((epoch, saved))
        }
        .await;
        let (epoch, mut saved) = match result {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "cannot load the saved jobs; retrying");
                return;
            }
        };
        self.epoch = epoch;
        // Ids never repeat: the epoch grows with every start.
        self.queue =
            WorkQueue::new("batch", RetryPolicy::default()).naming(move |n: &mezzo_sdk::queue::Naming<'_, Key>| {
                let id = job::task_id(&n.payload.job, n.payload.index, n.attempt, epoch);
                match n.relaunch {
                    0 => id,
                    r => format!("{id}.{r}"),
                }
            });
        for sub in saved.submissions {
            self.next_seq = self.next_seq.max(sub.seq + 1);
            for spec in sub.jobs {
                let progress = saved.progress.remove(&spec.name).unwrap_or_default();
                self.submitted_at.insert(spec.name.clone(), sub.submitted_at);
                self.order.push(spec.name.clone());
                self.jobs.insert(spec.name.clone(), Job::new(spec, progress));
            }
        }
        self.loaded = true;
        if self.restarted && !self.reconciled {
            self.hold_until = Some(Instant::now() + RECONCILE_LIMIT);
        }
        info!(epoch, jobs = self.jobs.len(), "batch framework state loaded");
        for status in std::mem::take(&mut self.early) {
            self.update(status);
        }
    }

    fn update(&mut self, status: v1::TaskStatus) {
        if !self.loaded {
            if self.early.len() < MAX_EARLY_UPDATES {
                self.early.push(status);
            }
            return;
        }
        let Some(state) = task_state(&status) else {
            self.ack_now(status);
            return;
        };
        let Some((name, index)) = job::parse_task_id(&status.task_id) else {
            self.ack_now(status);
            return;
        };
        let (name, now) = (name.to_owned(), Instant::now());
        let Some(job) = self.jobs.get_mut(&name) else {
            self.ack_now(status);
            return;
        };
        self.runs.update(&name, index, &status, mezzo_sdk::clock::unix_now());
        // A task the queue did not launch (it was started before this
        // framework's restart) is adopted rather than launched again; a
        // DROPPED one never ran and counts for nothing.
        let may_run = !state.is_terminal() || state == mezzo_sdk::TaskState::Unreachable;
        if self.queue.item_of(&status.task_id).is_none()
            && state != mezzo_sdk::TaskState::Dropped
            && !job.adopt(&mut self.queue, index, &status.task_id, now)
            && may_run
        {
            // A run nobody wants any more (an older attempt whose timeout
            // kill was lost in a restart, a task of a cancelled job, one
            // reported after its index was launched again): stop it.
            warn!(task = %status.task_id, "a task no index runs as is still running; killing it");
            let s = self.scheduler.clone();
            let task = status.task_id.clone();
            tokio::spawn(async move {
                if let Err(e) = s.kill(&task, None).await {
                    tracing::debug!(%task, "kill failed; killed again at its next update: {e}");
                }
            });
        }
        let change = self.queue.update(&status, now);
        tracing::debug!(task = %status.task_id, state = state.name(), ?change, "update");
        if let Some(change) = &change {
            job.record(index, change);
        }
        // Every task end (also a resent one, whose first copy may still wait
        // for the save) is acknowledged only after the next save.
        if state.is_terminal() {
            self.held_acks.push(status);
        } else {
            self.ack_now(status);
        }
    }

    fn ack_now(&self, status: v1::TaskStatus) {
        if status.uuid.is_empty() {
            return;
        }
        let s = self.scheduler.clone();
        tokio::spawn(async move {
            if let Err(e) = s.acknowledge(&status).await {
                tracing::debug!(task = %status.task_id, error = %e, "acknowledgement failed; the agent resends");
            }
        });
    }

    async fn tick(&mut self) {
        if self.connected && !self.loaded {
            self.load().await;
        }
        let now = Instant::now();
        if self.hold_until.is_some_and(|t| t <= now) {
            warn!(limit = ?RECONCILE_LIMIT, "no end of reconciliation; launching anyway");
            self.hold_until = None;
        }
        self.abandon_orphans();
        self.feed();
        if self.connected && self.loaded {
            self.queue.tick(&self.scheduler, now).await;
        }
        self.save().await;
    }

    /// Hands the tasks of every job that may run, in submission order, to
    /// the queue: enough to keep offers busy, within each `max_parallel`.
    pub(super) fn feed(&mut self) {
        let mut room = FEED_PER_TICK.saturating_sub(self.queue.waiting());
        for name in &self.order {
            if room == 0 {
                break;
            }
            let runnable = self.jobs.get(name).is_some_and(|j| self.deps_ok(j));
            if let Some(job) = self.jobs.get_mut(name)
                && runnable
            {
                room -= job.feed(&mut self.queue, room);
            }
        }
    }

    /// Jobs whose dependency failed or was cancelled will never run.
    fn abandon_orphans(&mut self) {
        let states: HashMap<String, job::JobState> = self
            .order
            .iter()
            .filter_map(|n| Some((n.clone(), self.job_state(n)?)))
            .collect();
        for job in self.jobs.values_mut() {
            if job.progress.abandoned.is_some() || job.progress.cancelled {
                continue;
            }
            for dep in &job.spec.depends_on {
                match states.get(dep) {
                    Some(job::JobState::Failed) => job.abandon(format!("dependency {dep:?} failed")),
                    Some(job::JobState::Skipped) => job.abandon(format!("dependency {dep:?} was skipped")),
                    Some(job::JobState::Cancelled | job::JobState::Cancelling) => {
                        job.abandon(format!("dependency {dep:?} was cancelled"))
                    }
                    _ => continue,
                }
                break;
            }
        }
    }

    fn deps_ok(&self, job: &Job) -> bool {
        job.spec.depends_on.iter().all(|d| {
            self.jobs
                .get(d)
                .is_some_and(|j| j.state(true) == job::JobState::Succeeded)
        })
    }

    fn job_state(&self, name: &str) -> Option<job::JobState> {
        let job = self.jobs.get(name)?;
        Some(job.state(self.deps_ok(job)))
    }

    /// Saves every changed job, then acknowledges the updates it covers.
    async fn save(&mut self) {
        if !self.connected || !self.loaded {
            return;
        }
        let kv = self.scheduler.kv();
        let dirty: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.dirty)
            .map(|(n, _)| n.clone())
            .collect();
        let mut all_saved = true;
        for name in dirty {
            let Some(job) = self.jobs.get_mut(&name) else { continue };
            let progress: Progress = job.snapshot();
            job.dirty = false;
            if let Err(e) = store::save_progress(&kv, &name, &progress).await {
                warn!(job = %name, error = %e, "cannot save progress; retrying");
                if let Some(job) = self.jobs.get_mut(&name) {
                    job.dirty = true;
                }
                all_saved = false;
            }
        }
        if all_saved && !self.held_acks.is_empty() {
            let acks = std::mem::take(&mut self.held_acks);
            let s = self.scheduler.clone();
            tokio::spawn(async move {
                use futures::StreamExt;
                futures::stream::iter(acks)
                    .for_each_concurrent(64, |status| {
                        let s = s.clone();
                        async move {
                            if let Err(e) = s.acknowledge(&status).await {
                                tracing::debug!(task = %status.task_id, error = %e, "acknowledgement failed");
                            }
                        }
                    })
                    .await;
            });
        }
    }

    async fn request(&mut self, r: Request) {
        match r {
            Request::Submit { text, reply } => {
                let _ = reply.send(self.submit(&text).await);
            }
            Request::List(reply) => {
                let list = self.order.iter().filter_map(|n| self.summary(n)).collect();
                let _ = reply.send(list);
            }
            Request::Status {
                name,
                all,
                index,
                reply,
            } => {
                let _ = reply.send(self.status(&name, all, index));
            }
            Request::Cancel { name, reply } => {
                let result = match self.jobs.get_mut(&name) {
                    None => Err(BatchError::UnknownJob(name.clone())),
                    Some(job) => {
                        let queued = job.cancel();
                        info!(job = %name, queued = queued.len(), "job cancelled");
                        // Those waiting end at once; running ones with their kill.
                        for change in self.queue.cancel(&self.scheduler, queued) {
                            if let mezzo_sdk::Change::Ended(o) = &change {
                                job.record(o.payload.index, &change);
                            }
                        }
                        self.save().await;
                        self.summary(&name).ok_or(BatchError::UnknownJob(name))
                    }
                };
                let _ = reply.send(result);
            }
            Request::Locate {
                name,
                index,
                attempt,
                reply,
            } => {
                let result = match self.jobs.get(&name) {
                    None => Err(BatchError::UnknownJob(name.clone())),
                    Some(job) if index >= job.spec.count => Err(BatchError::BadIndex {
                        job: name.clone(),
                        index,
                        count: job.spec.count,
                    }),
                    Some(_) => Ok(self.runs.latest(&name, index, attempt).map(|r| TaskLocation {
                        task_id: r.task_id.clone(),
                        agent_id: r.agent_id.clone(),
                        framework_id: self.scheduler.framework_id().unwrap_or_default(),
                    })),
                };
                let _ = reply.send(result);
            }
        }
    }

    async fn submit(&mut self, text: &str) -> Result<Vec<String>, BatchError> {
        if !self.loaded || !self.connected {
            return Err(BatchError::NotReady);
        }
        let existing: BTreeSet<String> = self.jobs.keys().cloned().collect();
        let specs = spec::parse(text, &existing)?;
        launch::check_satisfiable(&specs, &self.agents.borrow())?;
        let sub = Submission {
            seq: self.next_seq,
            submitted_at: mezzo_sdk::clock::unix_now(),
            jobs: specs,
        };
        // Saved first: a submission the store did not take leaves nothing.
        store::save_submission(&self.scheduler.kv(), &sub).await?;
        self.next_seq += 1;
        let names: Vec<String> = sub.jobs.iter().map(|j| j.name.clone()).collect();
        for spec in sub.jobs {
            self.submitted_at.insert(spec.name.clone(), sub.submitted_at);
            self.order.push(spec.name.clone());
            self.jobs.insert(spec.name.clone(), Job::new(spec, Progress::default()));
        }
        info!(jobs = ?names, "submitted");
        self.feed();
        Ok(names)
    }
}
