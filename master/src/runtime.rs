//! The one task that owns the [`Master`] core. Everyone else holds a
//! [`Handle`] and sends [`Command`]s over a bounded channel, with a
//! oneshot for the reply.
//!
//! Each loop turn handles a batch of queued commands, runs the allocator
//! once if anything changed, then executes the effects: sends go to the
//! per-stream channels, registry ops are made durable (one fsync for the
//! whole batch) and only then applied.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mezzo_proto::ids::{AgentId, FrameworkId, OfferId, TaskId};
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;
use tokio::sync::{mpsc, oneshot};

use crate::core::view::StateView;
use crate::core::{AgentHello, ConnId, Effect, LaunchRequest, Master};
use crate::error::MasterError;
use crate::storage::LocalLog;

/// Events for one framework stream.
pub type FrameworkTx = mpsc::Sender<Result<v1::Event, tonic::Status>>;
/// Messages for one agent stream.
pub type AgentTx = mpsc::Sender<Result<v1::MasterMessage, tonic::Status>>;

/// Scheduler calls after API validation.
#[derive(Debug)]
pub enum Call {
    Accept {
        offers: Vec<OfferId>,
        launches: Vec<LaunchRequest>,
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
    Acknowledge {
        agent: AgentId,
        task: TaskId,
        uuid: Vec<u8>,
    },
    Reconcile {
        tasks: Vec<TaskId>,
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
    AgentClosed(ConnId),
    State(oneshot::Sender<StateView>),
    TaskCounts(oneshot::Sender<std::collections::BTreeMap<&'static str, u64>>),
}

/// A cloneable way to talk to the owner task.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
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
    core: Master,
    log: LocalLog,
    next_conn: ConnId,
    frameworks: HashMap<ConnId, FrameworkTx>,
    agents: HashMap<ConnId, AgentTx>,
}

/// Spawns the owner task. The returned future ends with an error only when
/// the registry cannot be written (the master must not go on then).
pub fn spawn(
    core: Master,
    log: LocalLog,
    tick: Duration,
) -> (Handle, tokio::task::JoinHandle<Result<(), MasterError>>) {
    let (tx, rx) = mpsc::channel(4096);
    let rt = Runtime {
        core,
        log,
        next_conn: 1,
        frameworks: HashMap::new(),
        agents: HashMap::new(),
    };
    (Handle { tx }, tokio::spawn(rt.run(rx, tick)))
}

impl Runtime {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, tick: Duration) -> Result<(), MasterError> {
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
                _ = ticker.tick() => self.core.tick(Instant::now()),
            }
            self.core.allocate_if_needed(Instant::now());
            self.execute()?;
        }
    }

    fn conn(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    fn handle(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Subscribe { info, id, tx, reply } => {
                let conn = self.conn();
                let result = self.core.subscribe(conn, info, id, now);
                if result.is_ok() {
                    self.frameworks.insert(conn, tx);
                }
                let _ = reply.send(result.map(|()| conn));
            }
            Command::FrameworkClosed(conn) => {
                self.frameworks.remove(&conn);
                self.core.framework_conn_closed(conn, now);
            }
            Command::Call { framework, call, reply } => {
                let _ = reply.send(self.call(&framework, call, now));
            }
            Command::AgentAttach { hello, tx, reply } => {
                let conn = self.conn();
                let result = self.core.agent_attach(conn, hello, now);
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
                if let Err(e) = self.core.status_update(conn, framework, status, latest, now) {
                    tracing::warn!(conn, error = %e, "bad status update from agent");
                }
            }
            Command::AgentHeartbeat(conn) => self.core.agent_heartbeat(conn, now),
            Command::AgentClosed(conn) => {
                self.agents.remove(&conn);
                self.core.agent_conn_closed(conn, now);
            }
            Command::State(reply) => {
                let _ = reply.send(self.core.view(true));
            }
            Command::TaskCounts(reply) => {
                let _ = reply.send(self.core.task_counts());
            }
        }
    }

    fn call(&mut self, fid: &FrameworkId, call: Call, now: Instant) -> Result<(), MasterError> {
        let c = &mut self.core;
        match call {
            Call::Accept {
                offers,
                launches,
                refuse,
            } => c.accept(fid, &offers, launches, refuse, now),
            Call::Decline { offers, refuse } => c.decline(fid, &offers, refuse, now),
            Call::Revive => c.revive(fid),
            Call::Suppress => c.suppress(fid),
            Call::Kill { task, grace } => c.kill(fid, &task, grace),
            Call::Acknowledge { agent, task, uuid } => c.acknowledge(fid, &agent, &task, &uuid),
            Call::Reconcile { tasks } => c.reconcile(fid, &tasks),
            Call::Teardown => c.teardown(fid),
        }
    }

    /// Executes effects until none are left: committing registry ops can
    /// produce more.
    fn execute(&mut self) -> Result<(), MasterError> {
        loop {
            let effects = self.core.take_effects();
            if effects.is_empty() {
                return Ok(());
            }
            let mut proposals = Vec::new();
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
                    Effect::Propose(op) => proposals.push(op),
                }
            }
            let now = Instant::now();
            if !proposals.is_empty() {
                self.log
                    .append(&proposals)
                    .map_err(|e| MasterError::Storage(e.to_string()))?;
                for op in proposals {
                    self.core.apply(op, now);
                }
            }
            for conn in closed_fw {
                self.frameworks.remove(&conn);
                self.core.framework_conn_closed(conn, now);
            }
            for conn in closed_agents {
                self.agents.remove(&conn);
                self.core.agent_conn_closed(conn, now);
            }
            self.core.allocate_if_needed(now);
        }
    }
}
