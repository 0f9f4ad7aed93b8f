//! One simulated agent: a real `AgentApi.Attach` stream speaking the
//! agent's side of the protocol (proto/mezzo/v1/agent.proto) the way
//! `mezzo agent` does, minus the containers: `Register` then `Reregister`
//! with its tasks after every reconnect, heartbeats, and each task's
//! updates (STARTING, RUNNING, then FINISHED after the task's time, or
//! KILLED) sent one at a time per task, each resent until acknowledged.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mezzo_proto::backoff::Backoff;
use mezzo_proto::v1;
use mezzo_proto::v1::master_message::Message;
use prost::Message as _;
use prost::bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::group::Group;
use super::stats::Stats;
use super::wire::{self, Outbound};

// The real agent's limits: `Registered` within 5 s, the wait doubling
// after each that runs out.
use mezzo_agent::attach::register::without_ids;
use mezzo_agent::attach::{MAX_REGISTER_WAIT, REGISTER_TIMEOUT, answered_wait, queued_wait};
/// Statuses kept per task for re-registration, as the real agent.
const KEPT_STATUSES: usize = 16;

/// How the agents behave.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// A task finishes this long after it starts (`None`: it runs until
    /// killed).
    pub task_time: Option<Duration>,
    /// First resend of an unacknowledged update; it doubles up to `resend_max`.
    pub resend: Duration,
    pub resend_max: Duration,
}

/// One task on the agent.
#[derive(Debug)]
struct Task {
    framework_id: String,
    info: v1::TaskInfo,
    launched_at: f64,
    latest: v1::TaskState,
    /// Statuses sent, oldest first, for re-registration.
    history: VecDeque<v1::TaskStatus>,
    /// Updates not acknowledged yet; the first is in flight.
    unacked: VecDeque<v1::TaskStatus>,
    /// When the head was last sent, and the wait before resending it.
    sent: Option<(Instant, Duration)>,
    finish_at: Option<Instant>,
}

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// The task's time is up: it finishes.
    Finish,
    /// Its head may be resent if still not acknowledged.
    Resend,
}

/// How a session ended.
enum Ended {
    /// A master named another as the leader.
    NotLeader(String),
    /// The agent was cut off from the masters ([`super::Agents::partition`]).
    Cut,
    Failed(String),
}

pub(super) struct Agent {
    pub(super) index: usize,
    pub(super) info: v1::AgentInfo,
    pub(super) group: Group,
    pub(super) stats: Arc<Stats>,
    pub(super) behaviour: Arc<Behaviour>,
    /// Every n-th agent is cut off from the masters (0: none).
    pub(super) cut: watch::Receiver<usize>,
    id: Option<String>,
    tasks: HashMap<String, Task>,
    /// Tasks whose head is to be sent now. Kept beside `timers` so that a
    /// message costs the tasks it touches, not a scan of all of them.
    ready: VecDeque<String>,
    /// Finishes and resends by time; stale ones (the task moved on) are
    /// skipped when they come due.
    timers: BinaryHeap<Reverse<(Instant, Due, String)>>,
    /// How long the next registration waits for `Registered`.
    register_wait: Backoff,
}

/// Makes status update uuids unique over the whole simulation.
static UUIDS: AtomicU64 = AtomicU64::new(1);

impl Agent {
    pub(super) fn new(
        index: usize,
        info: v1::AgentInfo,
        group: Group,
        stats: Arc<Stats>,
        b: Arc<Behaviour>,
        cut: watch::Receiver<usize>,
    ) -> Agent {
        Agent {
            index,
            info,
            group,
            stats,
            behaviour: b,
            cut,
            id: None,
            tasks: HashMap::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            register_wait: Backoff::new(REGISTER_TIMEOUT, MAX_REGISTER_WAIT),
        }
    }

    /// Runs sessions until the simulation stops (the group goes away).
    pub(super) async fn run(mut self) {
        let mut after = 0u64;
        loop {
            if cut_off(*self.cut.borrow(), self.index) {
                let index = self.index;
                if self.cut.wait_for(|n| !cut_off(*n, index)).await.is_err() {
                    return;
                }
                // Back on the group's connection as it is now.
                after = after.saturating_sub(1);
            }
            let Some((generation, channel, master)) = self.group.channel(after).await else {
                return;
            };
            after = generation;
            let hint = match self.session(channel, &master).await {
                Ended::NotLeader(leader) => {
                    self.stats.redirects.fetch_add(1, Ordering::Relaxed);
                    Some(leader)
                }
                Ended::Failed(why) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(agent = self.index, "sim session ended: {why}");
                    None
                }
                // The group's connection is fine: only this agent is gone.
                Ended::Cut => continue,
            };
            self.group.failed(generation, hint).await;
        }
    }

    fn first_message(&mut self) -> Outbound {
        use v1::agent_message::Message as M;
        match self.id.clone() {
            // As the real agent: one registration id until it has an agent id.
            None => Outbound::Message(v1::AgentMessage {
                message: Some(M::Register(v1::Register {
                    agent: Some(self.info.clone()),
                    registration: format!("sim-{}-{}", std::process::id(), self.index),
                })),
            }),
            Some(id) => Outbound::Encoded(self.reregistration(id)),
        }
    }

    /// `Reregister` with every task, encoded: each task's info, framework
    /// id and statuses are moved into the message and back once it is
    /// encoded, not copied (see [`wire`]).
    fn reregistration(&mut self, agent_id: String) -> Bytes {
        use v1::agent_message::Message as M;
        let tasks = self
            .tasks
            .values_mut()
            .map(|t| v1::RunningTask {
                task: Some(std::mem::take(&mut t.info)),
                framework_id: std::mem::take(&mut t.framework_id),
                state: t.latest as i32,
                end_unacknowledged: is_terminal(t.latest),
                launched_at: t.launched_at,
                statuses: std::mem::take(&mut t.history).into(),
            })
            .collect();
        let message = v1::AgentMessage {
            message: Some(M::Reregister(v1::Reregister {
                agent_id,
                agent: Some(self.info.clone()),
                tasks,
                tasks_complete: true,
                executors: Vec::new(),
            })),
        };
        let encoded = Bytes::from(message.encode_to_vec());
        if let Some(M::Reregister(r)) = message.message {
            // The map is unchanged since, so it yields its tasks in the
            // same order.
            for (t, r) in self.tasks.values_mut().zip(r.tasks) {
                t.info = r.task.unwrap_or_default();
                t.framework_id = r.framework_id;
                t.history = r.statuses.into();
            }
        }
        encoded
    }

    async fn session(&mut self, channel: Channel, master: &Arc<str>) -> Ended {
        let (tx, rx) = mpsc::channel(1024);
        let again = self.id.is_some();
        let started = Instant::now();
        let wait = self.register_wait.peek();
        let mut deadline = started + wait;
        let mut inbound = match tokio::time::timeout_at(deadline, wire::attach(channel, rx)).await {
            Err(_) => {
                self.stats.attached(started, master, None);
                self.stats.unanswered.fetch_add(1, Ordering::Relaxed);
                return self.timed_out("no answer to Attach");
            }
            Ok(Err(status)) => {
                self.stats.attached(started, master, Some(started.elapsed()));
                return refused(status);
            }
            Ok(Ok(inbound)) => {
                self.stats.attached(started, master, Some(started.elapsed()));
                inbound
            }
        };
        // As the real agent: the registration goes only on a stream the
        // master took (a follower refuses before reading anything).
        if tx.send(self.first_message()).await.is_err() {
            return Ended::Failed("outbound closed".into());
        }
        deadline = deadline.max(Instant::now() + answered_wait(wait));
        let registered = loop {
            match tokio::time::timeout_at(deadline, inbound.next()).await {
                Err(_) => return self.timed_out("no Registered"),
                Ok(None) => return Ended::Failed("closed before Registered".into()),
                Ok(Some(Err(status))) => return refused(status),
                Ok(Some(Ok(v1::MasterMessage {
                    message: Some(Message::Registered(r)),
                }))) => break r,
                Ok(Some(Ok(v1::MasterMessage {
                    message: Some(Message::Heartbeat(hb)),
                }))) => deadline = Instant::now() + queued_wait(wait, &hb),
                Ok(Some(Ok(_))) => {}
            }
        };
        self.register_wait.reset();
        self.id = Some(registered.agent_id.clone());
        self.stats.registered(
            self.index,
            &registered.agent_id,
            &registered.master_id,
            started.elapsed(),
            again,
        );
        let ended = self
            .attached(&tx, &mut inbound, registered.heartbeat_interval_secs)
            .await;
        self.stats.connected.fetch_sub(1, Ordering::Relaxed);
        ended
    }

    /// A registration that ran out of time: the next waits longer.
    fn timed_out(&mut self, what: &str) -> Ended {
        self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        self.register_wait.next_delay();
        Ended::Failed(what.into())
    }

    /// The registered session: answers the master, sends heartbeats,
    /// ends tasks on time and resends what is not acknowledged.
    async fn attached(
        &mut self,
        tx: &mpsc::Sender<Outbound>,
        inbound: &mut tonic::Streaming<v1::MasterMessage>,
        heartbeat_secs: f64,
    ) -> Ended {
        let mut heartbeat = Duration::from_secs_f64(heartbeat_secs.clamp(0.05, 60.0));
        let mut silence = heartbeat * 3;
        // Every head waiting for its acknowledgement goes again at once.
        self.ready.clear();
        for (id, t) in &mut self.tasks {
            t.sent = None;
            if !t.unacked.is_empty() {
                self.ready.push_back(id.clone());
            }
        }
        let mut beat = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut cut = self.cut.clone();
        loop {
            self.flush(tx, Instant::now());
            let wake = self
                .next_wake()
                .unwrap_or(last_heard + silence)
                .min(last_heard + silence);
            tokio::select! {
                msg = inbound.next() => match msg {
                    None => return Ended::Failed("the master closed the stream".into()),
                    Some(Err(status)) => return refused(status),
                    Some(Ok(msg)) => {
                        last_heard = Instant::now();
                        // The leader spaces heartbeats out in a big cluster.
                        if let Some(Message::Heartbeat(hb)) = &msg.message
                            && hb.interval_secs > 0.0
                            && Duration::from_secs_f64(hb.interval_secs.clamp(0.05, 60.0)) != heartbeat
                        {
                            heartbeat = Duration::from_secs_f64(hb.interval_secs.clamp(0.05, 60.0));
                            silence = heartbeat * 3;
                            beat = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
                            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        }
                        self.dispatch(msg);
                    }
                },
                _ = beat.tick() => {
                    let msg = v1::AgentMessage {
                        message: Some(v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
                    };
                    if tx.try_send(msg.into()).is_err() {
                        tracing::debug!(agent = self.index, "sim heartbeat skipped: stream full");
                    }
                }
                Ok(()) = cut.changed() => {
                    if cut_off(*cut.borrow(), self.index) {
                        return Ended::Cut;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    if last_heard.elapsed() >= silence {
                        return Ended::Failed(format!("master silent for {silence:?}"));
                    }
                }
            }
        }
    }

    fn dispatch(&mut self, msg: v1::MasterMessage) {
        match msg.message {
            Some(Message::RunTask(run)) => self.run_task(*run),
            Some(Message::KillTask(k)) => {
                let reason = v1::StatusReason::try_from(k.reason).unwrap_or(v1::StatusReason::ReasonUnspecified);
                let (reason, message) = if reason == v1::StatusReason::ReasonUnspecified {
                    (v1::StatusReason::ReasonTaskKilled, "killed on request".to_owned())
                } else {
                    (reason, k.message)
                };
                self.end(&k.task_id, v1::TaskState::TaskKilled, reason, &message);
            }
            Some(Message::ShutdownFramework(s)) => self.end_where(
                |t| t.framework_id == s.framework_id,
                v1::TaskState::TaskKilled,
                v1::StatusReason::ReasonTaskKilled,
                "framework shut down",
            ),
            Some(Message::Acknowledge(ack)) => self.acknowledged(&ack),
            // A simulated agent keeps no data.
            Some(
                Message::Heartbeat(_)
                | Message::Registered(_)
                | Message::Volumes(_)
                | Message::FrameworkMessage(_)
                | Message::ShutdownExecutor(_),
            )
            | None => {}
        }
    }

    fn run_task(&mut self, run: v1::RunTask) {
        let Some(info) = run.task else { return };
        if self.tasks.contains_key(&info.task_id) {
            return; // a launch resent after a failover
        }
        self.stats.launched.fetch_add(1, Ordering::Relaxed);
        let id = info.task_id.clone();
        let finish_at = self.behaviour.task_time.map(|t| Instant::now() + t);
        if let Some(at) = finish_at {
            self.timers.push(Reverse((at, Due::Finish, id.clone())));
        }
        self.tasks.insert(
            id.clone(),
            Task {
                framework_id: run.framework_id,
                info,
                launched_at: run.launched_at,
                latest: v1::TaskState::TaskStaging,
                history: VecDeque::new(),
                unacked: VecDeque::new(),
                sent: None,
                finish_at,
            },
        );
        self.push(
            &id,
            v1::TaskState::TaskStarting,
            v1::StatusReason::ReasonUnspecified,
            "",
        );
        self.push(&id, v1::TaskState::TaskRunning, v1::StatusReason::ReasonUnspecified, "");
    }

    /// Ends a task that has not ended yet.
    fn end(&mut self, task_id: &str, state: v1::TaskState, reason: v1::StatusReason, message: &str) {
        let Some(t) = self.tasks.get_mut(task_id) else { return };
        if is_terminal(t.latest) {
            return;
        }
        t.finish_at = None;
        self.push(task_id, state, reason, message);
    }

    /// Ends every task `which` picks.
    fn end_where(
        &mut self,
        which: impl Fn(&Task) -> bool,
        state: v1::TaskState,
        reason: v1::StatusReason,
        message: &str,
    ) {
        let ids: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| which(t))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.end(&id, state, reason, message);
        }
    }

    /// Queues a new update of `task_id`.
    fn push(&mut self, task_id: &str, state: v1::TaskState, reason: v1::StatusReason, message: &str) {
        let uuid = [
            UUIDS.fetch_add(1, Ordering::Relaxed).to_be_bytes(),
            (self.index as u64).to_be_bytes(),
        ]
        .concat();
        let agent_id = self.id.clone().unwrap_or_default();
        let Some(t) = self.tasks.get_mut(task_id) else { return };
        let status = v1::TaskStatus {
            task_id: task_id.to_owned(),
            state: state as i32,
            reason: reason as i32,
            message: message.to_owned(),
            source: v1::StatusSource::SourceAgent as i32,
            agent_id,
            uuid,
            timestamp: mezzo_proto::clock::unix_now(),
            exit_code: (state == v1::TaskState::TaskFinished).then_some(0),
            framework_id: t.framework_id.clone(),
            healthy: None,
            ..Default::default()
        };
        t.latest = state;
        if t.history.len() == KEPT_STATUSES {
            t.history.pop_front();
        }
        // As the real agent re-registers it: without the ids and uuid.
        t.history.push_back(without_ids(status.clone()));
        t.unacked.push_back(status);
        if t.unacked.len() == 1 {
            self.ready.push_back(task_id.to_owned());
        }
    }

    fn acknowledged(&mut self, ack: &v1::AcknowledgeUpdate) {
        let Some(t) = self.tasks.get_mut(&ack.task_id) else {
            return;
        };
        if t.unacked.front().is_none_or(|h| h.uuid != ack.uuid) {
            return; // a late acknowledgement of a resend
        }
        t.unacked.pop_front();
        t.sent = None;
        if !t.unacked.is_empty() {
            self.ready.push_back(ack.task_id.clone());
        } else if is_terminal(t.latest) {
            self.tasks.remove(&ack.task_id);
            self.stats.ended.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ends tasks whose time is up and sends (or resends) every head that
    /// is due.
    fn flush(&mut self, tx: &mpsc::Sender<Outbound>, now: Instant) {
        while let Some(Reverse((at, due, id))) = self.timers.peek().cloned()
            && at <= now
        {
            self.timers.pop();
            let Some(t) = self.tasks.get(&id) else { continue };
            match due {
                Due::Finish if t.finish_at == Some(at) => self.end(
                    &id,
                    v1::TaskState::TaskFinished,
                    v1::StatusReason::ReasonUnspecified,
                    "",
                ),
                Due::Resend if t.sent.is_some_and(|(sent, wait)| sent + wait == at) => self.ready.push_back(id),
                _ => {} // stale: the task ended, or its head was acknowledged
            }
        }
        let (first, max) = (self.behaviour.resend, self.behaviour.resend_max);
        while let Some(id) = self.ready.pop_front() {
            let Some(t) = self.tasks.get_mut(&id) else { continue };
            let Some(head) = t.unacked.front() else { continue };
            let wait = match t.sent {
                None => first,
                Some((at, wait)) if now >= at + wait => {
                    self.stats.resends.fetch_add(1, Ordering::Relaxed);
                    (wait * 2).min(max)
                }
                Some(_) => continue, // in flight, not due yet
            };
            let update = v1::AgentMessage {
                message: Some(v1::agent_message::Message::StatusUpdate(v1::StatusUpdate {
                    framework_id: t.framework_id.clone(),
                    status: Some(head.clone()),
                    latest_state: t.latest as i32,
                })),
            };
            if tx.try_send(update.into()).is_err() {
                self.ready.push_front(id);
                return; // the stream is full: the rest go at the next wake
            }
            self.stats.updates_sent.fetch_add(1, Ordering::Relaxed);
            t.sent = Some((now, wait));
            self.timers.push(Reverse((now + wait, Due::Resend, id)));
        }
    }

    /// The next task end or resend due (soon, if the stream was full).
    fn next_wake(&self) -> Option<Instant> {
        let full = (!self.ready.is_empty()).then(|| Instant::now() + Duration::from_millis(10));
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        full.into_iter().chain(timer).min()
    }
}

/// Whether agent `index` is among every `n`-th ones cut off.
fn cut_off(n: usize, index: usize) -> bool {
    n > 0 && index.is_multiple_of(n)
}

fn is_terminal(s: v1::TaskState) -> bool {
    mezzo_proto::state::TaskState::from_proto(s as i32)
        .is_some_and(|s| s.is_terminal() && s != mezzo_proto::state::TaskState::Unreachable)
}

/// A refusal that names the leader is a redirect.
fn refused(status: tonic::Status) -> Ended {
    let leader = status
        .metadata()
        .get(mezzo_master::error::LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|l| !l.is_empty());
    match leader {
        Some(l) if status.code() == tonic::Code::Unavailable => Ended::NotLeader(l.to_owned()),
        _ => Ended::Failed(format!("{:?}: {}", status.code(), status.message())),
    }
}
