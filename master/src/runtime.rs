//! The one task that owns the [`Master`] core. Everyone else holds a
//! [`Handle`] and sends [`Command`]s over a bounded channel, with a
//! oneshot for the reply.
//!
//! The core exists only while this master leads: the Raft node says when
//! leading starts (with the registry to rebuild from) and stops (every
//! stream is then closed, so clients find the new leader). Each loop turn
//! handles a batch of queued commands, runs the allocator once if anything
//! changed, then executes the effects: sends go to the per-stream
//! channels; registry ops are proposed to Raft and applied only when they
//! come back committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mezzo_proto::ids::{AgentId, ExecutorId, FrameworkId, OfferId, TaskId};
use mezzo_proto::reservation::Role;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::auth::Caller;
use crate::core::observe::{ClusterEvent, PendingTask};
use crate::core::{AgentHello, ConnId, CoreConfig, Effect, Master, OfferOperation, OperatorAction, PolicyRequest};
use crate::error::MasterError;
use crate::kv::{KvAnswer, KvCall};
use crate::raft::{RaftEvent, RaftHandle};
use crate::registry::Registry;

mod outbox;

/// Where the answer to a key-value call goes.
pub type KvReply = oneshot::Sender<Result<KvAnswer, MasterError>>;

/// Events for one framework stream.
pub type FrameworkTx = mpsc::Sender<Result<v1::Event, tonic::Status>>;
/// A message for one agent stream, boxed: each stream's queue allocates
/// its first block of 32 slots when it is made, 3 KiB of unboxed messages
/// for every agent (120 MB at 40,000 agents), 512 bytes boxed.
pub type ToAgent = Result<Box<v1::MasterMessage>, tonic::Status>;
/// Messages for one agent stream.
pub type AgentTx = mpsc::Sender<ToAgent>;

/// Scheduler calls after API validation.
#[derive(Debug)]
pub enum Call {
    Accept {
        offers: Vec<OfferId>,
        operations: Vec<OfferOperation>,
        refuse: Option<Duration>,
    },
    Decline {
        offers: Vec<OfferId>,
        refuse: Option<Duration>,
    },
    /// In these roles, or all of the framework's when empty.
    Revive(Vec<Role>),
    Suppress(Vec<Role>),
    Kill {
        task: TaskId,
        grace: Option<Duration>,
    },
    /// One or more (agent, task, uuid) acknowledgements.
    Acknowledge(Vec<(AgentId, TaskId, Vec<u8>)>),
    /// Explicit tasks, each with the agent the framework believes it is
    /// on; empty for all.
    Reconcile {
        tasks: Vec<(TaskId, Option<AgentId>)>,
    },
    Teardown,
    /// New framework info for a subscribed framework (Mesos'
    /// `UPDATE_FRAMEWORK`), checked at the edge like a subscription's;
    /// with the roles it is suppressed in from now on, if given.
    UpdateFramework(v1::FrameworkInfo, Option<Vec<Role>>),
    /// The framework's report of the tasks it cannot place yet (checked
    /// at the edge); replaces the previous one.
    ReportPending(Vec<PendingTask>),
    /// Bytes for one of the framework's executors.
    Message {
        agent: AgentId,
        executor: ExecutorId,
        data: Vec<u8>,
    },
    /// Shut one of the framework's executors down.
    ShutdownExecutor {
        agent: AgentId,
        executor: ExecutorId,
    },
}

#[derive(Debug)]
pub enum Command {
    Subscribe {
        info: v1::FrameworkInfo,
        id: Option<FrameworkId>,
        /// Roles it is suppressed in from the start.
        suppressed: Vec<Role>,
        caller: Caller,
        tx: FrameworkTx,
        reply: oneshot::Sender<Result<ConnId, MasterError>>,
    },
    FrameworkClosed(ConnId),
    /// A framework stream whose events were held has room again (see
    /// [`outbox`]).
    FrameworkDrained(ConnId),
    Call {
        framework: FrameworkId,
        call: Call,
        caller: Caller,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    AgentAttach {
        hello: AgentHello,
        caller: Caller,
        tx: AgentTx,
        reply: oneshot::Sender<Result<ConnId, MasterError>>,
    },
    StatusUpdate {
        conn: ConnId,
        framework: FrameworkId,
        status: v1::TaskStatus,
        latest: TaskState,
    },
    AgentHeartbeat(ConnId),
    /// Bytes one of the agent's executors sent its framework.
    ExecutorMessage(ConnId, v1::ExecutorMessage),
    /// One of the agent's executors exited.
    ExecutorExited(ConnId, v1::ExecutorExited),
    /// An agent's periodic container usage report, validated.
    AgentUsage(ConnId, Vec<crate::core::usage::ContainerUsage>),
    /// An attaching agent's host name, resolved (or not: why) from here.
    AgentHostChecked(String, Option<String>),
    AgentClosed(ConnId),
    /// A framework's key-value call; writes are answered once committed.
    Kv {
        framework: FrameworkId,
        call: KvCall,
        caller: Caller,
        reply: KvReply,
    },
    /// An operator's policy request (weights, quota, reservations),
    /// answered once its registry op has committed.
    Policy {
        request: PolicyRequest,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    /// An operator's action (drain, gone, kill, teardown...), answered
    /// once checked (durable ones take effect when committed).
    Operator {
        action: OperatorAction,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    /// A read of the core through a read model (see
    /// [`crate::core::view`]); it answers through its own oneshot.
    Read(ReadFn),
}

/// Work for [`Command::Read`]: it sees the core (or the NotLeader error),
/// never changes it.
pub struct ReadFn(Box<ReadWork>);
type ReadWork = dyn FnOnce(Result<&Master, MasterError>) + Send;

impl std::fmt::Debug for ReadFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadFn")
    }
}

/// Capacity of the operator event broadcast; a subscriber that falls
/// further behind is told how many it missed.
pub const OPERATOR_EVENTS: usize = 16_384;

/// The longest an allocation pass is put off after the last one.
const MAX_ALLOCATION_GAP: Duration = Duration::from_millis(100);

/// How long a turn takes queued commands (or Raft events) before their
/// effects go out: the streams hear from the owner at least this often
/// while it has work (1,024 heavy commands in one turn, such as a load's
/// launches, kept every framework stream silent for seconds).
const TURN: Duration = Duration::from_millis(50);

/// A turn this long (its effects included) is logged.
const LONG_TURN: Duration = Duration::from_secs(1);

/// The room (16 MiB) the list of a turn's effects keeps between turns: a
/// heartbeat to each of 20,000 agents fits.
const KEPT_EFFECTS: usize = (16 << 20) / std::mem::size_of::<Effect>();

/// A cloneable way to talk to the owner task.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    /// Subscriptions, which the owner takes before the queue: after a
    /// failover, 40,000 agents' registrations fill the queue, and a
    /// framework's subscription waited behind them all (5 s at 40,000).
    urgent: mpsc::Sender<Command>,
    events: broadcast::Sender<ClusterEvent>,
    /// Commands the owner has handled: proof that it moves on.
    handled: Arc<AtomicU64>,
    /// Events held for framework streams whose queue is full (see [`outbox`]).
    held: Arc<AtomicU64>,
    /// Whether the owner leads, and else who does.
    leadership: watch::Receiver<Leadership>,
}

/// Whether this master leads, and else whom it follows, as its owner task
/// last knew.
#[derive(Debug, Clone, Default)]
struct Leadership {
    leading: bool,
    leader: Option<String>,
}

impl Leadership {
    fn not_leader(&self) -> MasterError {
        MasterError::NotLeader {
            leader: self.leader.clone(),
        }
    }
}

impl Handle {
    /// `NotLeader` unless this master leads: for a call a follower refuses
    /// before reading it (a failover's agent registrations, which followers
    /// decoded in full only to refuse them: 4.5 s of CPU at 40,000 agents).
    /// The owner still checks: leadership may change in between.
    pub fn refuse_unless_leading(&self) -> Result<(), MasterError> {
        let l = self.leadership.borrow();
        if l.leading { Ok(()) } else { Err(l.not_leader()) }
    }

    /// [`Handle::refuse_unless_leading`], but while this master knows no
    /// leader (an election under way: the leader's process died, and no
    /// follower names it any more) it first waits up to `limit` for one,
    /// so that the caller goes straight to the new leader, or is taken
    /// here, instead of trying masters in turn with its backoff.
    pub async fn refuse_unless_leading_soon(&self, limit: Duration) -> Result<(), MasterError> {
        let mut leadership = self.leadership.clone();
        let known = leadership.wait_for(|l| l.leading || l.leader.is_some());
        let _ = tokio::time::timeout(limit, known).await;
        self.refuse_unless_leading()
    }

    pub async fn send(&self, cmd: Command) -> Result<(), MasterError> {
        self.tx.send(cmd).await.map_err(|_| MasterError::ShuttingDown)
    }

    /// Sends a command built around a oneshot and waits for its answer.
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, MasterError> {
        ask_on(&self.tx, make).await
    }

    /// Subscribes a framework (a new one without `id`): its events go to
    /// `tx`; the answer names the subscription's connection.
    pub async fn subscribe(
        &self,
        info: v1::FrameworkInfo,
        id: Option<FrameworkId>,
        suppressed: Vec<Role>,
        caller: Caller,
        tx: FrameworkTx,
    ) -> Result<ConnId, MasterError> {
        ask_on(&self.urgent, |reply| Command::Subscribe {
            info,
            id,
            suppressed,
            caller,
            tx,
            reply,
        })
        .await?
    }

    pub async fn call(&self, framework: FrameworkId, call: Call, caller: Caller) -> Result<(), MasterError> {
        self.ask(|reply| Command::Call {
            framework,
            call,
            caller,
            reply,
        })
        .await?
    }

    /// Reads the core on the owner task: `read` gets `&Master` and returns
    /// an owned answer (a read model from [`crate::core::view`]). A master
    /// that does not lead answers NotLeader.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Master) -> T + Send + 'static,
    ) -> Result<T, MasterError> {
        self.ask(|reply| {
            Command::Read(ReadFn(Box::new(move |core| {
                let _ = reply.send(core.map(read));
            })))
        })
        .await?
    }

    /// Like [`Handle::read`], for a read that may itself fail.
    pub async fn try_read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Master) -> Result<T, MasterError> + Send + 'static,
    ) -> Result<T, MasterError> {
        self.read(read).await?
    }

    /// Runs an operator's action on the core.
    pub async fn operator(&self, action: OperatorAction) -> Result<(), MasterError> {
        self.ask(|reply| Command::Operator { action, reply }).await?
    }

    /// Follows the cluster events (the operator event stream).
    pub fn events(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    /// Commands sent and not yet taken by the owner (senders waiting for
    /// room in a full queue not counted).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Events held for framework streams that fell behind (see [`outbox`]).
    pub fn held_events(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// How many commands the owner has handled so far (it moves on while
    /// this grows).
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// Tells the owner a stream ended, from a non-async context (a Drop).
    pub fn notify(&self, cmd: Command) {
        let tx = self.tx.clone();
        if let Err(mpsc::error::TrySendError::Full(cmd)) = tx.try_send(cmd) {
            tokio::spawn(async move {
                let _ = tx.send(cmd).await;
            });
        }
    }
}

#[cfg(test)]
impl Handle {
    /// A handle without an owner: the test answers its commands.
    pub(crate) fn unowned() -> (Handle, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(64);
        let handle = Handle {
            urgent: tx.clone(),
            tx,
            leadership: watch::channel(Leadership {
                leading: true,
                leader: None,
            })
            .1,
            events: broadcast::channel(1).0,
            handled: Arc::default(),
            held: Arc::default(),
        };
        (handle, rx)
    }

    /// Counts a command as handled, as the owner does.
    pub(crate) fn count_handled(&self) {
        self.handled.fetch_add(1, Ordering::Relaxed);
    }
}

/// The owner task's state besides the core.
struct Runtime {
    /// Present only while leading.
    core: Option<Master>,
    cfg: CoreConfig,
    raft: RaftHandle,
    /// Whether this master leads, and else where to send clients; the
    /// handles see it too.
    leadership: watch::Sender<Leadership>,
    clients: Clients,
    /// The effects of the turn being delivered; emptied and handed back
    /// to the core, room kept (see [`Master::swap_effects`]).
    effects: Vec<Effect>,
    events: broadcast::Sender<ClusterEvent>,
    /// Commands handled (see [`Handle::handled`]).
    handled: Arc<AtomicU64>,
}

/// The open streams and the callers waiting for a commit. Emptied when
/// leadership is lost: dropping a sender ends its stream, so clients
/// look for the new leader.
struct Clients {
    next_conn: ConnId,
    frameworks: HashMap<ConnId, outbox::Outbox>,
    agents: HashMap<ConnId, AgentTx>,
    /// The owner task's own queue, for [`Command::FrameworkDrained`]
    /// (weak: the owner task still ends when every handle is gone).
    wake: mpsc::WeakSender<Command>,
    /// Events the framework streams' outboxes hold, all together.
    held: Arc<AtomicU64>,
    /// Policy changes waiting for their commit, by ticket.
    policy_waiting: HashMap<u64, oneshot::Sender<Result<(), MasterError>>>,
    /// Key-value writes proposed and not yet committed, by request number.
    kv_waiting: HashMap<u64, KvReply>,
    /// Request numbers start at a random point so that no two leaderships
    /// of this process could mistake each other's committed writes.
    next_kv_request: u64,
}

/// Spawns the owner task.
pub fn spawn(
    cfg: CoreConfig,
    raft: RaftHandle,
    events: mpsc::UnboundedReceiver<RaftEvent>,
    tick: Duration,
) -> (Handle, tokio::task::JoinHandle<Result<(), MasterError>>) {
    let (tx, rx) = mpsc::channel(4096);
    let (urgent, urgent_rx) = mpsc::channel(URGENT_QUEUE);
    let (leadership, leadership_rx) = watch::channel(Leadership::default());
    let (ops_events, _) = broadcast::channel(OPERATOR_EVENTS);
    let held = Arc::new(AtomicU64::new(0));
    let rt = Runtime {
        handled: Arc::default(),
        events: ops_events.clone(),
        core: None,
        cfg,
        raft,
        leadership,
        clients: Clients {
            next_conn: 1,
            frameworks: HashMap::new(),
            agents: HashMap::new(),
            wake: tx.downgrade(),
            held: held.clone(),
            policy_waiting: HashMap::new(),
            kv_waiting: HashMap::new(),
            next_kv_request: rand::random::<u64>() >> 1,
        },
        effects: Vec::new(),
    };
    let handle = Handle {
        tx,
        urgent,
        leadership: leadership_rx,
        events: ops_events,
        handled: rt.handled.clone(),
        held,
    };
    (
        handle,
        tokio::spawn(rt.run(Queues { rx, urgent: urgent_rx }, events, tick)),
    )
}

/// Sends `queue` a command built around a oneshot and waits for its answer.
async fn ask_on<T>(
    queue: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, MasterError> {
    let (reply, rx) = oneshot::channel();
    queue.send(make(reply)).await.map_err(|_| MasterError::ShuttingDown)?;
    rx.await.map_err(|_| MasterError::ShuttingDown)
}

/// Subscriptions waiting for the owner (see [`Handle::subscribe`]).
const URGENT_QUEUE: usize = 256;

/// The owner's two command queues: `urgent` is drained before each turn.
struct Queues {
    rx: mpsc::Receiver<Command>,
    urgent: mpsc::Receiver<Command>,
}

impl Runtime {
    async fn run(
        mut self,
        queues: Queues,
        mut events: mpsc::UnboundedReceiver<RaftEvent>,
        tick: Duration,
    ) -> Result<(), MasterError> {
        let Queues { mut rx, mut urgent } = queues;
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Passes are batched: after a pass, the next waits as long as it
        // took (up to MAX_ALLOCATION_GAP), so that the allocator takes at
        // most half of this task's time and the events in between (a
        // storm of subscriptions, each marking every idle agent) share one
        // pass. A pass of microseconds delays nothing.
        let mut next_pass = Instant::now();
        loop {
            let deferred = self
                .core
                .as_ref()
                .is_some_and(|c| c.allocation_wanted() && Instant::now() < next_pass);
            // Not a biased select: that would starve the other branches.
            self.handle_urgent(&mut urgent);
            let mut woke = None;
            tokio::select! {
                _ = tokio::time::sleep_until(next_pass.into()), if deferred => {}
                cmd = urgent.recv() => {
                    let Some(cmd) = cmd else { return Ok(()) };
                    self.handle(cmd);
                }
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return Ok(()) };
                    let turn = *woke.insert(Instant::now());
                    self.handle(cmd);
                    for _ in 0..1024 {
                        self.handle_urgent(&mut urgent);
                        if turn.elapsed() >= TURN {
                            break;
                        }
                        match rx.try_recv() {
                            Ok(cmd) => self.handle(cmd),
                            Err(_) => break,
                        }
                    }
                }
                ev = events.recv() => {
                    let Some(ev) = ev else { return Err(MasterError::ShuttingDown) };
                    let turn = *woke.insert(Instant::now());
                    self.raft_event(ev);
                    for _ in 0..1024 {
                        if turn.elapsed() >= TURN {
                            break;
                        }
                        match events.try_recv() {
                            Ok(ev) => self.raft_event(ev),
                            Err(_) => break,
                        }
                    }
                }
                _ = ticker.tick() => {
                    if let Some(core) = self.core.as_mut() {
                        core.tick(Instant::now());
                    }
                }
            }
            if let Some(core) = self.core.as_mut() {
                let now = Instant::now();
                if now >= next_pass && core.allocation_wanted() {
                    core.allocate_if_needed(now);
                    next_pass = now + now.elapsed().min(MAX_ALLOCATION_GAP);
                }
            }
            self.execute();
            if let Some(took) = woke.map(|w| w.elapsed()).filter(|t| *t >= LONG_TURN) {
                tracing::warn!(
                    ?took,
                    "the owner task was busy with one turn: streams heard nothing meanwhile"
                );
            }
        }
    }

    fn raft_event(&mut self, ev: RaftEvent) {
        let now = Instant::now();
        match ev {
            RaftEvent::Leading { registry } => self.lead(*registry, now),
            RaftEvent::Following { leader } => self.follow(leader),
            RaftEvent::Committed(op) => {
                if let Some(core) = self.core.as_mut() {
                    core.apply(op, now);
                }
            }
        }
    }

    fn lead(&mut self, registry: Registry, now: Instant) {
        tracing::info!(
            agents = registry.agents.len(),
            frameworks = registry.frameworks.len(),
            "leading: recovered the registry; waiting for agents and frameworks to come back"
        );
        let leader = self.raft.members().get(&self.raft.id()).cloned();
        self.clients.frameworks.clear();
        self.clients.agents.clear();
        self.clients.policy_waiting.clear();
        self.core = Some(Master::recover(self.cfg.clone(), registry, now));
        self.leadership.send_replace(Leadership {
            leading: true,
            leader: leader.clone(),
        });
        let _ = self.events.send(ClusterEvent::LeaderChanged { leader });
    }

    fn follow(&mut self, leader: Option<String>) {
        if self.core.take().is_some() {
            tracing::warn!(
                ?leader,
                "stepped down; closing every stream so clients follow the new leader"
            );
            self.clients.frameworks.clear();
            self.clients.agents.clear();
            // Their ops may or may not commit: the senders drop, so the
            // operators are told to try again.
            self.clients.policy_waiting.clear();
        }
        let previous = self.leadership.send_replace(Leadership {
            leading: false,
            leader: leader.clone(),
        });
        if previous.leader != leader {
            let _ = self.events.send(ClusterEvent::LeaderChanged { leader });
        }
        // A write may or may not commit under the new leader: the caller
        // is told to ask the leader (and may read to check).
        let err = self.leadership.borrow().not_leader();
        for (_, reply) in self.clients.kv_waiting.drain() {
            let _ = reply.send(Err(err.clone()));
        }
    }

    /// Handles the subscriptions waiting (see [`Handle::subscribe`]).
    fn handle_urgent(&mut self, urgent: &mut mpsc::Receiver<Command>) {
        while let Ok(cmd) = urgent.try_recv() {
            self.handle(cmd);
        }
    }

    /// One command: served by the core while leading, else refused.
    fn handle(&mut self, cmd: Command) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        match self.core.as_mut() {
            Some(core) => self.clients.serve(core, cmd, Instant::now()),
            None => refuse(cmd, self.leadership.borrow().not_leader()),
        }
    }

    /// Executes the core's effects. Closing a stream can produce more.
    fn execute(&mut self) {
        loop {
            let Some(core) = self.core.as_mut() else { return };
            for ev in core.take_events() {
                // No subscriber is fine: events are for whoever follows.
                let _ = self.events.send(ev);
            }
            // The next turn builds events only if someone follows them.
            core.set_events_watched(self.events.receiver_count() > 0);
            core.swap_effects(&mut self.effects);
            if self.effects.is_empty() {
                return;
            }
            let (closed_fw, closed_agents) = self.clients.deliver(&mut self.effects, &self.raft);
            // A turn far bigger than usual (a failover's registrations)
            // does not keep its room for ever.
            self.effects.shrink_to(KEPT_EFFECTS);
            let now = Instant::now();
            // `deliver` has dropped their senders already.
            for conn in closed_fw {
                core.framework_conn_closed(conn, now);
            }
            for conn in closed_agents {
                core.agent_conn_closed(conn, now);
            }
            core.allocate_if_needed(now);
        }
    }
}

/// Answers a command while not leading: requests get NotLeader, notices
/// are dropped (their streams are gone already).
fn refuse(cmd: Command, not_leader: MasterError) {
    match cmd {
        Command::Subscribe { reply, .. } | Command::AgentAttach { reply, .. } => {
            let _ = reply.send(Err(not_leader));
        }
        Command::Call { reply, .. } | Command::Policy { reply, .. } | Command::Operator { reply, .. } => {
            let _ = reply.send(Err(not_leader));
        }
        Command::Kv { reply, .. } => {
            let _ = reply.send(Err(not_leader));
        }
        Command::Read(f) => (f.0)(Err(not_leader)),
        Command::FrameworkClosed(_)
        | Command::FrameworkDrained(_)
        | Command::AgentClosed(_)
        | Command::StatusUpdate { .. }
        | Command::AgentHeartbeat(_)
        | Command::ExecutorMessage(..)
        | Command::ExecutorExited(..)
        | Command::AgentUsage(..)
        | Command::AgentHostChecked(..) => {}
    }
}

impl Clients {
    fn next_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    /// A framework's stream ended (or its subscriber left before the answer).
    fn framework_closed(&mut self, core: &mut Master, conn: ConnId, now: Instant) {
        self.frameworks.remove(&conn);
        core.forget_credential(conn);
        core.framework_conn_closed(conn, now);
    }

    /// An agent's stream ended (or the agent left before the answer).
    fn agent_closed(&mut self, core: &mut Master, conn: ConnId, now: Instant) {
        self.agents.remove(&conn);
        core.forget_credential(conn);
        core.agent_conn_closed(conn, now);
    }

    /// Hands one command to the core and keeps what it opens or waits for.
    fn serve(&mut self, core: &mut Master, cmd: Command, now: Instant) {
        match cmd {
            Command::Subscribe {
                mut info,
                id,
                suppressed,
                caller,
                tx,
                reply,
            } => {
                // A framework that stopped waiting (its subscription timed
                // out while this queued) would be subscribed only to be
                // disconnected, its offers rescinded twice.
                if reply.is_closed() {
                    tracing::debug!(framework = ?id, "the framework gave up subscribing before its turn; skipping it");
                    return;
                }
                let conn = self.next_conn();
                let result = core
                    .check_subscribe(&caller, &mut info, id.as_ref())
                    .and_then(|()| core.subscribe(conn, info, id, suppressed, now));
                if result.is_ok() {
                    core.track_credential(conn, &caller);
                    self.frameworks.insert(conn, outbox::Outbox::new(tx, self.held.clone()));
                }
                if let Err(Ok(conn)) = reply.send(result.map(|()| conn)) {
                    // Gone before its answer: no stream exists to say it closed.
                    self.framework_closed(core, conn, now);
                }
            }
            Command::FrameworkClosed(conn) => self.framework_closed(core, conn, now),
            Command::FrameworkDrained(conn) => {
                if let Some(out) = self.frameworks.get_mut(&conn)
                    && let Err(e) = out.drained(conn, &self.wake)
                {
                    tracing::warn!(conn, "framework stream {}; dropping it", e.why());
                    self.framework_closed(core, conn, now);
                }
            }
            Command::Call {
                framework,
                call,
                caller,
                reply,
            } => {
                let mut call = call;
                let result = core
                    .check_call(&caller, &framework, call.action(), call.operations())
                    .and_then(|()| core.check_priority(&caller, &framework, call.priority()))
                    .and_then(|()| match &mut call {
                        // New roles and users need the rights a subscription would.
                        Call::UpdateFramework(info, _) => core.check_subscribe(&caller, info, Some(&framework)),
                        _ => Ok(()),
                    })
                    .and_then(|()| call.run(core, &framework, now));
                let _ = reply.send(result);
            }
            Command::AgentAttach {
                hello,
                caller,
                tx,
                reply,
            } => {
                // An agent that stopped waiting (its registration timed out
                // while this queued, as thousands do after a failover) has
                // dropped its attach: admitting it would be work thrown
                // away, then done again for its retry.
                if reply.is_closed() {
                    tracing::debug!(agent = ?hello.id(), "the agent gave up attaching before its turn; skipping it");
                    return;
                }
                let conn = self.next_conn();
                let result = core
                    .check_agent(&caller, hello.id())
                    .and_then(|principal| core.agent_attach(conn, hello, principal, now));
                if result.is_ok() {
                    core.track_credential(conn, &caller);
                    self.agents.insert(conn, tx);
                }
                if let Err(Ok(conn)) = reply.send(result.map(|()| conn)) {
                    // Gone since the check: no stream exists to say it closed.
                    self.agent_closed(core, conn, now);
                }
            }
            Command::StatusUpdate {
                conn,
                framework,
                status,
                latest,
            } => {
                if let Err(e) = core.status_update(conn, framework, status, latest, now) {
                    tracing::warn!(conn, error = %e, "bad status update from agent");
                }
            }
            Command::AgentHeartbeat(conn) => core.agent_heartbeat(conn, now),
            Command::ExecutorMessage(conn, m) => core.executor_message(conn, m, now),
            Command::ExecutorExited(conn, e) => core.executor_exited(conn, e, now),
            Command::AgentUsage(conn, usage) => core.agent_usage(conn, usage, now),
            Command::AgentHostChecked(host, problem) => core.agent_host_checked(host, problem),
            Command::AgentClosed(conn) => self.agent_closed(core, conn, now),
            Command::Kv {
                framework,
                call,
                caller,
                reply,
            } => match core.check_kv(&caller, &framework, &call) {
                Ok(()) => self.kv(core, framework, call, reply),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Policy { request, reply } => {
                let ticket = self.next_conn();
                match core.policy(ticket, request) {
                    Ok(()) => {
                        self.policy_waiting.insert(ticket, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Operator { action, reply } => {
                let _ = reply.send(core.operator_action(action));
            }
            Command::Read(f) => (f.0)(Ok(core)),
        }
    }

    /// A key-value call: reads answer at once, writes once committed.
    fn kv(&mut self, core: &mut Master, framework: FrameworkId, call: KvCall, reply: KvReply) {
        self.next_kv_request = self.next_kv_request.wrapping_add(1);
        let request = self.next_kv_request;
        match core.kv(&framework, call, request) {
            Ok(Some(answer)) => {
                let _ = reply.send(Ok(answer));
            }
            Ok(None) => {
                self.kv_waiting.insert(request, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Sends the effects on their way, leaving `effects` empty; answers
    /// the streams that are closed or not reading (framework conns, agent
    /// conns), which the core must be told of.
    fn deliver(&mut self, effects: &mut Vec<Effect>, raft: &RaftHandle) -> (Vec<ConnId>, Vec<ConnId>) {
        let mut closed_fw = Vec::new();
        let mut closed_agents = Vec::new();
        for e in effects.drain(..) {
            match e {
                // A stream that takes no more is dropped at once: the rest
                // of the batch skips it (one line, not one per event).
                Effect::ToFramework(conn, ev) => {
                    if let Some(out) = self.frameworks.get_mut(&conn)
                        && let Err(e) = out.send(conn, ev, &self.wake)
                    {
                        tracing::warn!(conn, "framework stream {}; dropping it", e.why());
                        self.frameworks.remove(&conn);
                        closed_fw.push(conn);
                    }
                }
                Effect::CloseFramework(conn) => {
                    self.frameworks.remove(&conn);
                }
                Effect::ToAgent(conn, msg) => {
                    if let Some(tx) = self.agents.get(&conn)
                        && let Err(e) = tx.try_send(Ok(Box::new(msg)))
                    {
                        tracing::warn!(conn, "agent stream {}; dropping it", unwritable(&e));
                        self.agents.remove(&conn);
                        closed_agents.push(conn);
                    }
                }
                Effect::CloseAgent(conn) => {
                    self.agents.remove(&conn);
                }
                Effect::Propose(op) => raft.propose(op),
                Effect::PolicyDone(ticket, result) => {
                    if let Some(reply) = self.policy_waiting.remove(&ticket) {
                        let _ = reply.send(result);
                    }
                }
                Effect::KvDone(request, outcome) => {
                    if let Some(reply) = self.kv_waiting.remove(&request) {
                        let _ = reply.send(outcome.map(crate::kv::KvAnswer::Done));
                    }
                }
            }
        }
        (closed_fw, closed_agents)
    }
}

/// Why a stream's queue took no more.
fn unwritable<T>(e: &mpsc::error::TrySendError<T>) -> &'static str {
    match e {
        mpsc::error::TrySendError::Full(_) => "is not reading (its queue is full)",
        mpsc::error::TrySendError::Closed(_) => "is closed",
    }
}

impl Call {
    /// The ACL action a caller other than the framework's owner needs.
    fn action(&self) -> crate::auth::Action {
        use crate::auth::Action;
        match self {
            Call::Kill { .. } => Action::KillTask,
            Call::Teardown => Action::TeardownFramework,
            _ => Action::TakeOverFramework,
        }
    }

    /// The operations of an accept (whose launches need `run_as`).
    /// The highest priority of the tasks it launches or reports waiting.
    fn priority(&self) -> i32 {
        match self {
            Call::Accept { operations, .. } => operations
                .iter()
                .filter_map(|op| match op {
                    OfferOperation::Launch(l) => Some(l.info.priority),
                    _ => None,
                })
                .max()
                .unwrap_or(0),
            Call::ReportPending(tasks) => tasks.iter().map(|t| t.priority).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn operations(&self) -> &[OfferOperation] {
        match self {
            Call::Accept { operations, .. } => operations,
            _ => &[],
        }
    }

    /// Runs a validated scheduler call on the core.
    pub(crate) fn run(self, c: &mut Master, fid: &FrameworkId, now: Instant) -> Result<(), MasterError> {
        match self {
            Call::Accept {
                offers,
                operations,
                refuse,
            } => c.accept_operations(fid, &offers, operations, refuse, now),
            Call::Decline { offers, refuse } => c.decline(fid, &offers, refuse, now),
            Call::Revive(roles) => c.revive(fid, &roles),
            Call::Suppress(roles) => c.suppress(fid, &roles),
            Call::Kill { task, grace } => c.kill(fid, &task, grace),
            Call::Acknowledge(acks) => c.acknowledge_all(fid, &acks),
            Call::Reconcile { tasks } => c.reconcile(fid, &tasks),
            Call::Teardown => c.teardown(fid),
            Call::UpdateFramework(info, suppressed) => c.update_framework(fid, info, suppressed),
            Call::ReportPending(tasks) => c.report_pending(fid, tasks),
            Call::Message { agent, executor, data } => c.framework_message(fid, &agent, &executor, data),
            Call::ShutdownExecutor { agent, executor } => c.shutdown_executor(fid, &agent, &executor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::agent_types::AgentDescription;
    use crate::registry::RegistryOp;
    use mezzo_proto::reservation::ReservedResources;

    fn clients() -> Clients {
        Clients {
            next_conn: 0,
            frameworks: HashMap::new(),
            agents: HashMap::new(),
            wake: mpsc::channel(1).0.downgrade(),
            held: Arc::default(),
            policy_waiting: HashMap::new(),
            kv_waiting: HashMap::new(),
            next_kv_request: 0,
        }
    }

    fn attach(reply: oneshot::Sender<Result<ConnId, MasterError>>) -> Command {
        let info = AgentDescription {
            hostname: "h".into(),
            http_address: String::new(),
            resources: ReservedResources::parse("cpus:1").expect("resources"),
            attributes: vec![],
        };
        Command::AgentAttach {
            hello: AgentHello::Register {
                info,
                registration: None,
            },
            caller: Caller::Insecure,
            tx: mpsc::channel(8).0,
            reply,
        }
    }

    /// A stream that takes no more is dropped once, not once per event
    /// (41,000 warnings in one batch at 40,000 agents), and the rest of
    /// the batch skips it.
    #[tokio::test]
    async fn a_stream_that_takes_no_more_is_dropped_once() {
        let mut clients = clients();
        let (ended, left) = mpsc::channel(1);
        drop(left);
        let (full, _reading_nothing) = mpsc::channel(1);
        clients.frameworks.insert(1, outbox::Outbox::new(ended, Arc::default()));
        clients.agents.insert(2, full);
        let event = || v1::Event {
            event: Some(v1::event::Event::Heartbeat(v1::Heartbeat {})),
        };
        let beat = || v1::MasterMessage {
            message: Some(v1::master_message::Message::Heartbeat(v1::MasterHeartbeat {
                interval_secs: 1.0,
            })),
        };
        let mut effects = vec![
            Effect::ToFramework(1, event()),
            Effect::ToFramework(1, event()),
            Effect::ToAgent(2, beat()),
            Effect::ToFramework(1, event()),
            Effect::ToAgent(2, beat()),
        ];
        let (fw, agents) = clients.deliver(&mut effects, &RaftHandle::detached());
        assert_eq!((fw, agents), (vec![1], vec![2]));
        assert!(effects.is_empty(), "every effect delivered");
        assert!(clients.frameworks.is_empty() && clients.agents.is_empty());
    }

    /// After a failover thousands of agents queue their attaches; one
    /// whose agent stopped waiting must cost nothing, or the leader does
    /// every late agent's work twice.
    #[test]
    fn an_attach_whose_agent_stopped_waiting_is_skipped() {
        let now = Instant::now();
        let mut core = Master::recover(CoreConfig::default(), Registry::default(), now);
        let mut clients = clients();

        let (reply, gave_up) = oneshot::channel();
        drop(gave_up);
        clients.serve(&mut core, attach(reply), now);
        assert!(clients.agents.is_empty(), "a stream kept for an agent that left");
        assert!(core.take_effects().is_empty(), "an agent that left was admitted");

        let (reply, mut waiting) = oneshot::channel();
        clients.serve(&mut core, attach(reply), now);
        let conn = waiting.try_recv().expect("answered").expect("attached");
        assert!(clients.agents.contains_key(&conn));
        let admitted = core
            .take_effects()
            .into_iter()
            .any(|e| matches!(e, Effect::Propose(RegistryOp::AdmitAgent(_))));
        assert!(admitted, "a waiting agent was not admitted");
    }

    /// A subscription queued while the leader was busy, whose framework
    /// stopped waiting, is skipped: subscribing it would only rescind its
    /// offers and disconnect it again.
    #[test]
    fn a_subscription_whose_framework_stopped_waiting_is_skipped() {
        let now = Instant::now();
        let mut core = Master::recover(CoreConfig::default(), Registry::default(), now);
        let mut clients = clients();
        let subscribe = |reply| Command::Subscribe {
            info: v1::FrameworkInfo {
                name: "f".into(),
                roles: vec!["*".into()],
                ..Default::default()
            },
            id: None,
            suppressed: Vec::new(),
            caller: Caller::Insecure,
            tx: mpsc::channel(8).0,
            reply,
        };
        let (reply, gave_up) = oneshot::channel();
        drop(gave_up);
        clients.serve(&mut core, subscribe(reply), now);
        assert!(clients.frameworks.is_empty());
        assert!(core.take_effects().is_empty(), "a framework that left was registered");

        let (reply, mut waiting) = oneshot::channel();
        clients.serve(&mut core, subscribe(reply), now);
        let conn = waiting.try_recv().expect("answered").expect("subscribed");
        assert!(clients.frameworks.contains_key(&conn));
    }

    /// Commands queued on a busy owner task by [`busy_owner`].
    const QUEUED: usize = 2000;

    /// How far a [`busy_owner`] is, counted by the owner itself.
    struct Counts {
        /// Commands done so far.
        done: Arc<AtomicU64>,
        /// Commands done while the owner did not lead (read inside the
        /// owner, so a test task the machine schedules late reads the same).
        not_leading: Arc<AtomicU64>,
    }

    /// A fresh owner task (not leading) given [`QUEUED`] commands of 1 ms
    /// each, once it has started on them: its Raft events' sender, its
    /// handle, the task, and its counts.
    async fn busy_owner() -> (
        mpsc::UnboundedSender<RaftEvent>,
        Handle,
        tokio::task::JoinHandle<Result<(), MasterError>>,
        Counts,
    ) {
        let (raft_events, events) = mpsc::unbounded_channel();
        let (handle, owner) = spawn(
            CoreConfig::default(),
            RaftHandle::detached(),
            events,
            Duration::from_secs(1),
        );
        let done = Arc::new(AtomicU64::new(0));
        let not_leading = Arc::new(AtomicU64::new(0));
        for _ in 0..QUEUED {
            let (done, not_leading) = (done.clone(), not_leading.clone());
            let slow = Command::Read(ReadFn(Box::new(move |core| {
                std::thread::sleep(Duration::from_millis(1));
                if core.is_err() {
                    not_leading.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            })));
            handle.send(slow).await.expect("queued");
        }
        while done.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        (raft_events, handle, owner, Counts { done, not_leading })
    }

    /// A subscription is answered before the commands queued ahead of it
    /// (after a failover, every agent's registration).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscription_goes_before_the_queue() {
        let (_raft_events, handle, owner, counts) = busy_owner().await;
        let done = counts.done;
        let info = v1::FrameworkInfo {
            name: "f".into(),
            ..Default::default()
        };
        let answer = handle
            .subscribe(info, None, Vec::new(), Caller::Insecure, mpsc::channel(8).0)
            .await;
        let before = done.load(Ordering::Relaxed);
        // This master does not lead: the answer is a refusal, in its turn.
        assert!(matches!(answer, Err(MasterError::NotLeader { .. })), "{answer:?}");
        assert!(
            before < 100,
            "answered after {before} of the {QUEUED} commands queued before it"
        );
        owner.abort();
    }

    /// A turn of the owner task ends after [`TURN`] however many commands
    /// are queued, so that what arrived meanwhile (here Raft's news that
    /// this master leads) is not held behind them: unbounded, 1,024
    /// commands went in one turn and frameworks heard nothing for seconds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_turn_ends_after_its_time_however_long_the_queue() {
        let (raft_events, handle, owner, counts) = busy_owner().await;
        raft_events
            .send(RaftEvent::Leading {
                registry: Box::default(),
            })
            .expect("sent");
        while handle.refuse_unless_leading().is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Counted by the owner: under a loaded machine this task may see
        // the news late while the owner goes on (1,021 counted so once).
        let before = counts.not_leading.load(Ordering::Relaxed);
        // About 50 commands a turn, and a few turns before the select
        // takes the event (it picks among the ready branches at random:
        // 2 to 4 turns in six runs); unbounded, the first turn took 1,024.
        assert!(
            before < 700,
            "leading after {before} of the {QUEUED} commands queued before the news"
        );
        owner.abort();
    }
}
