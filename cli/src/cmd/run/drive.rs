//! One run's framework side: offers in, tasks launched, updates tracked,
//! output followed, outcomes told, dropped tasks launched again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::bail;
use mezzo_proto::clock::unix_now;
use mezzo_sdk::{Event, Events, Resources, Scheduler, TaskBuilder, TaskState, pending_task, task_state, v1};
use tokio::sync::mpsc;

use super::Args;
use super::outcome::outcome_text;
use super::stream::Stream;
use super::tracks::{Seen, Tracks};
use crate::cmd::ops::Client;

/// How the run talks to the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One task: its output is copied to ours, its end told in words.
    Stream,
    /// Each task's id once it runs; the run returns, the tasks go on.
    Detach,
    /// Many tasks, or `--json`: a summary at the end.
    Summary,
}

/// One run's state: the framework's side of `--instances` tasks, from
/// offers to their last update.
pub struct Run<'a> {
    a: &'a Args,
    mode: Mode,
    per_task: Resources,
    pub sched: Scheduler,
    /// The masters' HTTP API, for following the task's output.
    http: Client,
    /// In every task id, so that repeated runs never reuse one.
    tag: String,
    pub tracks: Tracks,
    /// Tasks launched so far (the next task's number).
    next: usize,
    /// When the first offer arrived: a `--rate` counts from there.
    pub started: Option<Instant>,
    /// Offers not used yet, with what is left in them. Oldest first: the
    /// offer used longest ago is used next, so that paced launches take
    /// turns across agents instead of piling onto whichever agent's
    /// leftover came back last.
    held: VecDeque<(String, Resources)>,
    /// "Why is it pending": told to the master at most once a second.
    reported: Option<Instant>,
    /// An Accept the master refused ends the run.
    refused: mpsc::UnboundedSender<anyhow::Error>,
    /// The output being copied (`Mode::Stream`).
    stream: Option<Stream>,
}

impl<'a> Run<'a> {
    /// The run, and the receiver of its refused Accepts.
    pub fn new(
        a: &'a Args,
        mode: Mode,
        per_task: Resources,
        sched: Scheduler,
        http: Client,
    ) -> (Self, mpsc::UnboundedReceiver<anyhow::Error>) {
        let (refused, refused_rx) = mpsc::unbounded_channel();
        let run = Run {
            a,
            mode,
            per_task,
            sched,
            http,
            tag: run_tag(),
            tracks: Tracks {
                timeline: a.timeline.is_some(),
                ..Tracks::default()
            },
            next: 0,
            started: None,
            held: VecDeque::new(),
            reported: None,
            refused,
            stream: None,
        };
        (run, refused_rx)
    }

    /// Whether the run has what it waits for: every task ended, or with
    /// `--detach` every task running (or ended).
    fn complete(&self) -> bool {
        match self.mode {
            Mode::Detach => self.tracks.running_or_done() >= self.a.instances,
            Mode::Stream | Mode::Summary => self.tracks.done >= self.a.instances,
        }
    }

    /// Takes events, launches what is due after each, until the run is
    /// complete, the timeout passes, an Accept is refused or the driver
    /// stops.
    pub async fn drive(
        &mut self,
        mut events: Events,
        mut refused: mpsc::UnboundedReceiver<anyhow::Error>,
    ) -> anyhow::Result<()> {
        let a = self.a;
        let deadline = tokio::time::Instant::now() + a.timeout;
        let mut pace = tokio::time::interval(Duration::from_millis(2));
        while !self.complete() {
            let launch = tokio::select! {
                ev = events.next() => {
                    let Some(ev) = ev else { bail!("the scheduler driver stopped") };
                    self.on_event(ev).await?
                }
                _ = pace.tick(), if a.rate.is_some() => true,
                Some(e) = refused.recv() => return Err(e),
                _ = tokio::time::sleep_until(deadline) => {
                    bail!("timed out after {:?} with {} of {} tasks done", a.timeout, self.tracks.done, a.instances)
                }
            };
            if launch {
                self.launch_due().await;
            }
        }
        Ok(())
    }

    /// Handles one event. False for an update that changes nothing, which
    /// ends the turn without launching.
    async fn on_event(&mut self, ev: Event) -> anyhow::Result<bool> {
        match ev {
            Event::Offers(offers) => {
                self.held.extend(
                    offers
                        .into_iter()
                        .map(|o| (o.offer_id, Resources::from_proto(&o.resources).unwrap_or_default())),
                );
            }
            Event::Rescind { offer_id } => self.held.retain(|(id, _)| *id != offer_id),
            Event::Update(status) => return Ok(self.on_update(&status).await),
            Event::Error { message } => bail!("the framework cannot go on: {message}"),
            Event::Disconnected { reason } => {
                self.held.clear();
                tracing::warn!(%reason, "disconnected from the master; reconnecting");
            }
            _ => {}
        }
        Ok(true)
    }

    /// Records an update and acts on it: follows the output of a task
    /// that runs, tells how one ended, launches a dropped one again.
    async fn on_update(&mut self, status: &v1::TaskStatus) -> bool {
        match self.tracks.update(status) {
            Seen::Nothing => false,
            Seen::Progress => true,
            Seen::Running => {
                match self.mode {
                    Mode::Stream => self.follow(status),
                    Mode::Detach => self.print_detached(&status.task_id),
                    Mode::Summary => {}
                }
                true
            }
            Seen::Ended => {
                if self.mode == Mode::Stream {
                    if self.stream.is_none() && status.exit_code.is_some() {
                        // It ran, but its RUNNING never came (a failover):
                        // its output is still there to copy.
                        self.follow(status);
                    }
                    if let Some(s) = self.stream.take_if(|s| s.task() == status.task_id) {
                        s.finish().await;
                    }
                }
                if self.mode != Mode::Summary {
                    eprintln!("{}", self.told(status));
                }
                true
            }
            Seen::Relaunched { new } => {
                if !self.a.json {
                    eprintln!("{}; relaunched as {new}", self.told(status));
                }
                // Offers declined once everything was launched come back.
                let _ = self.sched.revive().await;
                true
            }
        }
    }

    /// `Task <id> <STATE> on agent <id>: <what happened>`.
    fn told(&self, status: &v1::TaskStatus) -> String {
        let state = task_state(status).map_or("TASK_STATE_UNKNOWN", TaskState::name);
        format!(
            "Task {} {state} on agent {}: {}",
            status.task_id,
            status.agent_id,
            outcome_text(status, self.a.mem)
        )
    }

    /// Starts copying the task's stdout and stderr to ours.
    fn follow(&mut self, status: &v1::TaskStatus) {
        let framework = match status.framework_id.as_str() {
            "" => self.sched.framework_id().unwrap_or_default(),
            f => f.to_owned(),
        };
        self.stream = Some(Stream::start(&self.http, &framework, &status.task_id));
    }

    /// `--detach`: the task's id on stdout (for scripts), how to follow it
    /// on stderr.
    fn print_detached(&self, task: &str) {
        println!("{task}");
        eprintln!(
            "mezzo run: {task} is running; follow its output with `mezzo logs -f {task}` (`--stderr` for its \
             stderr). It is killed if it still runs {} after this command exits (--timeout).",
            humantime::format_duration(self.a.timeout)
        );
    }

    /// Launches the tasks that are due (relaunches first) on the held
    /// offers, declines what cannot be used, and lets go of everything
    /// once all are launched.
    async fn launch_due(&mut self) {
        // The clock starts with the first offer, so that a rate counts
        // from the first launch (not from the subscription, which would
        // make a burst of the tasks "due" while the first offer was on its
        // way).
        if self.started.is_none() && self.held.is_empty() {
            return;
        }
        let start = *self.started.get_or_insert_with(Instant::now);
        let instances = self.a.instances;
        let due = match self.a.rate {
            Some(r) => instances.min((r * start.elapsed().as_secs_f64()) as usize + 1),
            None => instances,
        };
        while self.next < due || !self.tracks.relaunch.is_empty() {
            let Some((offer_id, mut avail)) = self.held.pop_front() else {
                break;
            };
            let tasks = self.fill(&mut avail, due);
            if tasks.is_empty() {
                // Too small for a task: let it merge with resources freed later.
                let _ = self.sched.decline(vec![offer_id], Some(0.1)).await;
                self.report_waiting(&avail).await;
                continue;
            }
            self.accept(offer_id, tasks);
        }
        let all_launched = self.next >= instances && self.tracks.relaunch.is_empty();
        if all_launched && self.reported.take().is_some() {
            let _ = self.sched.report_pending(Vec::new()).await; // nothing waits any more
        }
        if all_launched && !self.held.is_empty() {
            let ids = self.held.drain(..).map(|(id, _)| id).collect();
            let _ = self.sched.decline(ids, Some(3600.0)).await;
        }
    }

    /// The due tasks (relaunches first) that fit into `avail`, taken out
    /// of it.
    fn fill(&mut self, avail: &mut Resources, due: usize) -> Vec<v1::TaskInfo> {
        let mut tasks = Vec::new();
        loop {
            let relaunch = self.tracks.relaunch.front().cloned();
            if relaunch.is_none() && self.next >= due {
                break;
            }
            let Some(left) = avail.checked_sub(&self.per_task) else {
                break;
            };
            *avail = left;
            let id = match relaunch {
                Some(id) => {
                    self.tracks.relaunch.pop_front();
                    id
                }
                None => {
                    self.next += 1;
                    self.task_id(self.next - 1)
                }
            };
            tasks.push(self.task_info(&id));
        }
        tasks
    }

    /// The task `id`: the command and its environment, as the flags say.
    fn task_info(&self, id: &str) -> v1::TaskInfo {
        let a = self.a;
        let b = TaskBuilder::new(id).name(id).resources(&self.per_task);
        let b = match &a.image {
            Some(image) => b.image(image),
            None => b,
        };
        let b = match &a.image_credentials {
            Some(secret) => b.image_credentials(secret),
            None => b,
        };
        let mut b = match a.command.split_first() {
            // The image's entrypoint and command (clap requires an image).
            None => b,
            Some(_) if a.shell => b.shell(a.command.join(" ")),
            Some((program, args)) => b.command(program, args.to_vec()),
        };
        // Checked in `run` before anything was started.
        for (k, v) in a.env.iter().filter_map(|s| s.split_once('=')) {
            b = b.env(k, v);
        }
        for (k, v) in a.secret_env.iter().filter_map(|s| s.split_once('=')) {
            b = b.secret_env(k, v);
        }
        for (k, v) in a.secret_file.iter().filter_map(|s| s.split_once('=')) {
            b = b.secret_file(k, v);
        }
        for uri in a.uri.iter().filter_map(|s| super::artifact(s).ok()) {
            b = b.uri(uri);
        }
        b.build()
    }

    /// Tells the master (at most once a second) why the next task waits.
    async fn report_waiting(&mut self, avail: &Resources) {
        if self.reported.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        self.reported = Some(Instant::now());
        let next = match self.tracks.relaunch.front() {
            Some(id) => id.clone(),
            None => self.task_id(self.next),
        };
        let waiting = self.a.instances - self.next + self.tracks.relaunch.len();
        let reason = format!("needs {}, offer had {avail}; {waiting} task(s) waiting", self.per_task);
        let pending = pending_task(next, reason, Some(&self.per_task));
        let _ = self.sched.report_pending(vec![pending]).await;
    }

    /// Stamps the tasks' acceptance and sends the Accept in the background:
    /// the loop goes on handling updates (their arrival times are what it
    /// measures) while the call is out.
    fn accept(&mut self, offer_id: String, tasks: Vec<v1::TaskInfo>) {
        let (now, wall) = (Instant::now(), unix_now());
        for t in &tasks {
            self.tracks.accepted(&t.task_id, now, wall);
        }
        let (sched, refused) = (self.sched.clone(), self.refused.clone());
        tokio::spawn(async move {
            if let Err(e) = sched.accept(vec![offer_id], tasks, None).await {
                let _ = refused.send(anyhow::Error::new(e).context("accept refused"));
            }
        });
    }

    fn task_id(&self, n: usize) -> String {
        format!("{}-{}-{n}", self.a.name, self.tag)
    }
}

/// A per-run tag for task ids (not a UUID: eight hex digits of the clock's
/// nanoseconds mixed with the process id), so that repeated runs never
/// reuse task ids.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:08x}", nanos ^ std::process::id().rotate_left(16))
}
