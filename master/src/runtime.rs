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
use std::time::{Duration, Instant};

use mezzo_proto::ids::{AgentId, FrameworkId, OfferId, TaskId};
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::core::observe::ClusterEvent;
use crate::core::view::StateView;
use crate::core::{AgentHello, ConnId, CoreConfig, Effect, Master, OfferOperation, PolicyRequest};
use crate::error::MasterError;
use crate::kv::{KvAnswer, KvCall};
use crate::raft::{RaftEvent, RaftHandle};
use crate::registry::Registry;

/// Where the answer to a key-value call goes.
pub type KvReply = oneshot::Sender<Result<KvAnswer, MasterError>>;

/// Events for one framework stream.
pub type FrameworkTx = mpsc::Sender<Result<v1::Event, tonic::Status>>;
/// Messages for one agent stream.
pub type AgentTx = mpsc::Sender<Result<v1::MasterMessage, tonic::Status>>;

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
    Revive,
    Suppress,
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
}

#[derive(Debug)]
pub enum Command {
    Subscribe {
        info: v1::FrameworkInfo,
        id: Option<FrameworkId>,
        tx: FrameworkTx,
        reply: oneshot::Sender<Result<ConnId, MasterError>>,
    },
    FrameworkClosed(ConnId),
    Call {
        framework: FrameworkId,
        call: Call,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    AgentAttach {
        hello: AgentHello,
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
    /// An agent's periodic container usage report, validated.
    AgentUsage(ConnId, Vec<crate::core::usage::ContainerUsage>),
    AgentClosed(ConnId),
    /// A framework's key-value call; writes are answered once committed.
    Kv {
        framework: FrameworkId,
        call: KvCall,
        reply: KvReply,
    },
    State(oneshot::Sender<Result<StateView, MasterError>>),
    /// An operator's policy request (weights, quota, reservations),
    /// answered once its registry op has committed.
    Policy {
        request: PolicyRequest,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    TaskCounts(oneshot::Sender<std::collections::BTreeMap<&'static str, u64>>),
    /// An operator query or action, run on the owner task with the core
    /// (or the NotLeader error); it answers through its own oneshot.
    Operator(OperatorFn),
}

/// Work for [`Command::Operator`].
pub struct OperatorFn(Box<OperatorWork>);
type OperatorWork = dyn FnOnce(Result<&mut Master, MasterError>) + Send;

impl std::fmt::Debug for OperatorFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorFn")
    }
}

/// Capacity of the operator event broadcast; a subscriber that falls
/// further behind is told how many it missed.
pub const OPERATOR_EVENTS: usize = 16_384;

/// A cloneable way to talk to the owner task.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<ClusterEvent>,
}

impl Handle {
    pub async fn send(&self, cmd: Command) -> Result<(), MasterError> {
        self.tx.send(cmd).await.map_err(|_| MasterError::ShuttingDown)
    }

    /// Sends a command built around a oneshot and waits for its answer.
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, MasterError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await.map_err(|_| MasterError::ShuttingDown)
    }

    pub async fn call(&self, framework: FrameworkId, call: Call) -> Result<(), MasterError> {
        self.ask(|reply| Command::Call { framework, call, reply }).await?
    }

    /// Runs `f` on the owner task with the core (or the NotLeader error)
    /// and returns its answer.
    pub async fn with_core<T: Send + 'static>(
        &self,
        f: impl FnOnce(Result<&mut Master, MasterError>) -> T + Send + 'static,
    ) -> Result<T, MasterError> {
        self.ask(|reply| {
            Command::Operator(OperatorFn(Box::new(move |core| {
                let _ = reply.send(f(core));
            })))
        })
        .await
    }

    /// Follows the cluster events (the operator event stream).
    pub fn events(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
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

/// The owner task's state besides the core.
struct Runtime {
    /// Present only while leading.
    core: Option<Master>,
    cfg: CoreConfig,
    raft: RaftHandle,
    /// Where to send clients while not leading.
    leader: Option<String>,
    next_conn: ConnId,
    frameworks: HashMap<ConnId, FrameworkTx>,
    agents: HashMap<ConnId, AgentTx>,
    /// Policy changes waiting for their commit, by ticket.
    policy_waiting: HashMap<u64, oneshot::Sender<Result<(), MasterError>>>,
    /// Key-value writes proposed and not yet committed, by request number.
    kv_waiting: HashMap<u64, KvReply>,
    /// Request numbers start at a random point so that no two leaderships
    /// of this process could mistake each other's committed writes.
    next_kv_request: u64,
    events: broadcast::Sender<ClusterEvent>,
}

/// Spawns the owner task.
pub fn spawn(
    cfg: CoreConfig,
    raft: RaftHandle,
    events: mpsc::Receiver<RaftEvent>,
    tick: Duration,
) -> (Handle, tokio::task::JoinHandle<Result<(), MasterError>>) {
    let (tx, rx) = mpsc::channel(4096);
    let (ops_events, _) = broadcast::channel(OPERATOR_EVENTS);
    let rt = Runtime {
        events: ops_events.clone(),
        core: None,
        cfg,
        raft,
        leader: None,
        next_conn: 1,
        frameworks: HashMap::new(),
        agents: HashMap::new(),
        policy_waiting: HashMap::new(),
        kv_waiting: HashMap::new(),
        next_kv_request: rand::random::<u64>() >> 1,
    };
    let handle = Handle { tx, events: ops_events };
    (handle, tokio::spawn(rt.run(rx, events, tick)))
}

impl Runtime {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<RaftEvent>,
        tick: Duration,
    ) -> Result<(), MasterError> {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return Ok(()) };
                    self.handle(cmd);
                    for _ in 0..1024 {
                        match rx.try_recv() {
                            Ok(cmd) => self.handle(cmd),
                            Err(_) => break,
                        }
                    }
                }
                ev = events.recv() => {
                    let Some(ev) = ev else { return Err(MasterError::ShuttingDown) };
                    self.raft_event(ev);
                    for _ in 0..1024 {
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
                core.allocate_if_needed(Instant::now());
            }
            self.execute();
        }
    }

    fn raft_event(&mut self, ev: RaftEvent) {
        let now = Instant::now();
        match ev {
            RaftEvent::Leading { registry } => self.lead(registry, now),
            RaftEvent::Following { leader } => {
                if self.core.take().is_some() {
                    tracing::warn!(
                        ?leader,
                        "stepped down; closing every stream so clients follow the new leader"
                    );
                    self.frameworks.clear();
                    self.agents.clear();
                    // Their ops may or may not commit: the senders drop,
                    // so the operators are told to try again.
                    self.policy_waiting.clear();
                }
                if self.leader != leader {
                    let _ = self.events.send(ClusterEvent::LeaderChanged { leader: leader.clone() });
                }
                self.leader = leader;
                // A write may or may not commit under the new leader: the
                // caller is told to ask the leader (and may read to check).
                let err = self.not_leader();
                for (_, reply) in self.kv_waiting.drain() {
                    let _ = reply.send(Err(err.clone()));
                }
            }
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
        self.leader = self.raft.members().get(&self.raft.id()).cloned();
        self.frameworks.clear();
        self.agents.clear();
        self.policy_waiting.clear();
        self.core = Some(Master::recover(self.cfg.clone(), registry, now));
        let _ = self.events.send(ClusterEvent::LeaderChanged {
            leader: self.leader.clone(),
        });
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    fn not_leader(&self) -> MasterError {
        MasterError::NotLeader {
            leader: self.leader.clone(),
        }
    }

    fn handle(&mut self, cmd: Command) {
        let now = Instant::now();
        let conn = self.conn();
        let not_leader = self.not_leader();
        let Some(core) = self.core.as_mut() else {
            match cmd {
                Command::Subscribe { reply, .. } | Command::AgentAttach { reply, .. } => {
                    let _ = reply.send(Err(not_leader));
                }
                Command::Call { reply, .. } | Command::Policy { reply, .. } => {
                    let _ = reply.send(Err(not_leader));
                }
                Command::State(reply) => {
                    let _ = reply.send(Err(not_leader));
                }
                Command::Kv { reply, .. } => {
                    let _ = reply.send(Err(not_leader));
                }
                Command::TaskCounts(reply) => {
                    let _ = reply.send(Default::default());
                }
                Command::Operator(f) => (f.0)(Err(not_leader)),
                Command::FrameworkClosed(_)
                | Command::AgentClosed(_)
                | Command::StatusUpdate { .. }
                | Command::AgentHeartbeat(_)
                | Command::AgentUsage(..) => {}
            }
            return;
        };
        match cmd {
            Command::Subscribe { info, id, tx, reply } => {
                let result = core.subscribe(conn, info, id, now);
                if result.is_ok() {
                    self.frameworks.insert(conn, tx);
                }
                let _ = reply.send(result.map(|()| conn));
            }
            Command::FrameworkClosed(conn) => {
                self.frameworks.remove(&conn);
                core.framework_conn_closed(conn, now);
            }
            Command::Call { framework, call, reply } => {
                let _ = reply.send(Self::call(core, &framework, call, now));
            }
            Command::AgentAttach { hello, tx, reply } => {
                let result = core.agent_attach(conn, hello, now);
                if result.is_ok() {
                    self.agents.insert(conn, tx);
                }
                let _ = reply.send(result.map(|()| conn));
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
            Command::AgentUsage(conn, usage) => core.agent_usage(conn, usage, now),
            Command::AgentClosed(conn) => {
                self.agents.remove(&conn);
                core.agent_conn_closed(conn, now);
            }
            Command::Kv { framework, call, reply } => {
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
            Command::State(reply) => {
                let _ = reply.send(Ok(core.view(true)));
            }
            Command::Policy { request, reply } => match core.policy(conn, request) {
                Ok(()) => {
                    self.policy_waiting.insert(conn, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::TaskCounts(reply) => {
                let _ = reply.send(core.task_counts());
            }
            Command::Operator(f) => (f.0)(Ok(core)),
        }
    }

    fn call(c: &mut Master, fid: &FrameworkId, call: Call, now: Instant) -> Result<(), MasterError> {
        match call {
            Call::Accept {
                offers,
                operations,
                refuse,
            } => c.accept_operations(fid, &offers, operations, refuse, now),
            Call::Decline { offers, refuse } => c.decline(fid, &offers, refuse, now),
            Call::Revive => c.revive(fid),
            Call::Suppress => c.suppress(fid),
            Call::Kill { task, grace } => c.kill(fid, &task, grace),
            Call::Acknowledge(acks) => c.acknowledge_all(fid, &acks),
            Call::Reconcile { tasks } => c.reconcile(fid, &tasks),
            Call::Teardown => c.teardown(fid),
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
            let effects = core.take_effects();
            if effects.is_empty() {
                return;
            }
            let mut closed_fw = Vec::new();
            let mut closed_agents = Vec::new();
            for e in effects {
                match e {
                    Effect::ToFramework(conn, ev) => {
                        if let Some(tx) = self.frameworks.get(&conn)
                            && tx.try_send(Ok(ev)).is_err()
                        {
                            tracing::warn!(conn, "framework stream is closed or not reading; dropping it");
                            closed_fw.push(conn);
                        }
                    }
                    Effect::CloseFramework(conn) => {
                        self.frameworks.remove(&conn);
                    }
                    Effect::ToAgent(conn, msg) => {
                        if let Some(tx) = self.agents.get(&conn)
                            && tx.try_send(Ok(msg)).is_err()
                        {
                            tracing::warn!(conn, "agent stream is closed or not reading; dropping it");
                            closed_agents.push(conn);
                        }
                    }
                    Effect::CloseAgent(conn) => {
                        self.agents.remove(&conn);
                    }
                    Effect::Propose(op) => self.raft.propose(op),
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
            let now = Instant::now();
            for conn in closed_fw {
                self.frameworks.remove(&conn);
                core.framework_conn_closed(conn, now);
            }
            for conn in closed_agents {
                self.agents.remove(&conn);
                core.agent_conn_closed(conn, now);
            }
            core.allocate_if_needed(now);
        }
    }
}
