//! The agent's side of `AgentApi.Attach`: one long-lived bidirectional
//! stream to the leading master, re-established with backoff.
//!
//! Per connection: send `Register` (no id yet) or `Reregister` (with every
//! task the table knows), wait for `Registered`, persist the id, hand the
//! outbound stream to the status update manager (which resends every
//! pending head), then heartbeat and dispatch master messages until the
//! stream ends or the master has been silent for three heartbeats.

pub mod register;
mod usage;

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use mezzo_proto::MAX_MESSAGE_BYTES;
use mezzo_proto::ids::AgentId;
use mezzo_proto::v1::agent_api_client::AgentApiClient;
use mezzo_proto::v1::{self, master_message::Message};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use self::register::Identity;
use crate::AgentError;
use crate::metrics::Metrics;
use crate::status::StatusHandle;
use crate::task::table::TableHandle;
use mezzo_proto::backoff::Backoff;

/// Metadata key a non-leading master sets on its UNAVAILABLE answer.
pub const LEADER_METADATA: &str = "mezzo-leader";
/// A master that does not accept a connection this fast is skipped for the
/// next address (a partitioned host drops packets instead of refusing).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a registration waits for the master's `Registered` at first.
/// Each wait that runs out doubles the next, up to [`MAX_REGISTER_WAIT`]:
/// a new leader admits every agent of the cluster at once after a
/// failover, and an agent that gave up early would send its whole task
/// list again, behind all the others (the master skips attaches whose
/// agent stopped waiting, but not the decoding of each one).
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_REGISTER_WAIT: Duration = Duration::from_secs(40);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
const OUTBOUND_CAPACITY: usize = 8192;

/// What the connection needs from the rest of the agent.
pub struct AttachDeps {
    pub masters: Vec<String>,
    /// TLS with the agent's certificate (or plain text, `--insecure`).
    pub transport: mezzo_proto::security::Transport,
    pub work_dir: PathBuf,
    pub identity: Identity,
    pub table: TableHandle,
    pub status: StatusHandle,
    pub agent_id: watch::Sender<Option<AgentId>>,
    /// The master currently registered with, for `/state`.
    pub master: watch::Sender<Option<String>>,
    /// The stream to the current master, while registered: custom
    /// executors' messages (best effort) and exits go there.
    pub outbound: watch::Sender<Option<mpsc::Sender<v1::AgentMessage>>>,
    pub metrics: Metrics,
    /// Written once a master has accepted this agent's task list.
    pub checkpoints_marker: PathBuf,
    /// Whether the first `Reregister` can say its task list is complete
    /// (false after the checkpoints were lost); every later one can.
    pub tasks_complete: bool,
}

/// How one connection ended.
enum Ended {
    /// The agent cannot go on (e.g. its disk failed).
    Fatal(AgentError),
    /// This master is not the leader and named the one that is.
    NotLeader {
        leader: String,
    },
    Failed(String),
}

impl From<AgentError> for Ended {
    fn from(e: AgentError) -> Self {
        Ended::Fatal(e)
    }
}

/// Stays attached to a master until a fatal error.
pub async fn run(deps: AttachDeps) -> Result<(), AgentError> {
    if deps.masters.is_empty() {
        return Err(AgentError::NoMasters);
    }
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).jitter(0.25);
    let mut register_wait = Backoff::new(REGISTER_TIMEOUT, MAX_REGISTER_WAIT);
    let mut next = 0;
    let mut leader_hint: Option<String> = None;
    let mut failed_in_round = 0usize;
    let mut followed = false;
    let mut tasks_complete = deps.tasks_complete;
    loop {
        let addr = leader_hint.take().unwrap_or_else(|| {
            let addr = deps.masters[next % deps.masters.len()].clone();
            next += 1;
            addr
        });
        // How long to wait before the next attempt: follow a redirect at
        // once (once in a row), try the rest of the list quickly, and back
        // off only after a whole round failed.
        let waits = Waits {
            backoff: &mut backoff,
            register: &mut register_wait,
        };
        let pause = match session(&deps, &addr, waits, &mut tasks_complete).await {
            Ok(()) => {
                tracing::info!(master = %addr, "master closed the connection");
                failed_in_round = 0;
                followed = false;
                Some(Duration::from_millis(50))
            }
            Err(Ended::Fatal(e)) => return Err(e),
            Err(Ended::NotLeader { leader }) => {
                tracing::info!(master = %addr, %leader, "not the leader; following");
                leader_hint = Some(leader);
                let at_once = !followed;
                followed = true;
                at_once.then_some(Duration::ZERO)
            }
            Err(Ended::Failed(why)) => {
                tracing::warn!(master = %addr, "{why}");
                followed = false;
                failed_in_round += 1;
                if failed_in_round < deps.masters.len() {
                    Some(Duration::from_millis(50))
                } else {
                    failed_in_round = 0;
                    None
                }
            }
        };
        deps.metrics.connected.set(0);
        deps.master.send_replace(None);
        deps.outbound.send_replace(None);
        deps.status.disconnected().await?;
        tokio::time::sleep(pause.unwrap_or_else(|| backoff.next_delay())).await;
    }
}

/// Turns a gRPC error into `NotLeader` when it names a leader.
fn refused(addr: &str, status: tonic::Status) -> Ended {
    if status.code() == tonic::Code::Unavailable {
        let leader = status
            .metadata()
            .get(LEADER_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != addr);
        if let Some(leader) = leader {
            return Ended::NotLeader {
                leader: leader.to_owned(),
            };
        }
    }
    Ended::Failed(format!(
        "master {addr} answered {:?}: {}",
        status.code(),
        status.message()
    ))
}

/// The delays a session resets once registered: between attempts, and
/// the wait for `Registered` (grown by the session when it runs out).
struct Waits<'a> {
    backoff: &'a mut Backoff,
    register: &'a mut Backoff,
}

/// One connection. `tasks_complete` turns true once a master has heard
/// the agent's task list: what it missed is then known to the master.
async fn session(deps: &AttachDeps, addr: &str, waits: Waits<'_>, tasks_complete: &mut bool) -> Result<(), Ended> {
    let endpoint = mezzo_proto::security::grpc::endpoint(addr, &deps.transport)
        .map_err(Ended::Failed)?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| {
        Ended::Failed(format!(
            "cannot connect to master {addr}: {}",
            mezzo_proto::security::grpc::error_chain(&e)
        ))
    })?;
    let mut client = AgentApiClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let wait = waits.register.peek();
    let mut deadline = Instant::now() + wait;
    let mut timed_out = |what: &str| {
        waits.register.next_delay();
        Err(Ended::Failed(format!("master {addr} {what} within {wait:?}")))
    };
    let attach = tokio::time::timeout_at(deadline, client.attach(ReceiverStream::new(rx)));
    let mut inbound = match attach.await {
        Err(_) => return timed_out("did not answer Attach"),
        Ok(Err(status)) => return Err(refused(addr, status)),
        Ok(Ok(response)) => response.into_inner(),
    };
    // The task list goes only to a master that took the stream: a master
    // answers Attach before reading anything, and a follower refuses it,
    // so a redirect costs no registration built, sent and thrown away
    // (most of a failover's 40,000 agents first reached a follower in
    // some runs).
    let known_id = deps.agent_id.borrow().clone();
    let (tasks, executors) = match known_id {
        Some(_) => {
            crate::failpoint::hit("before_reregister").await;
            (deps.table.reregistration().await?, deps.table.executors().await?)
        }
        None => (Vec::new(), Vec::new()),
    };
    let first = deps
        .identity
        .first_message(known_id.as_ref(), tasks, executors, *tasks_complete);
    tx.send(first)
        .await
        .map_err(|_| Ended::Failed("outbound stream closed before registering".to_owned()))?;
    deadline = deadline.max(Instant::now() + answered_wait(wait));

    let registered = loop {
        match tokio::time::timeout_at(deadline, inbound.next()).await {
            Err(_) => return timed_out("sent no Registered"),
            Ok(None) => {
                return Err(Ended::Failed(format!(
                    "master {addr} closed the stream before Registered"
                )));
            }
            Ok(Some(Err(status))) => return Err(refused(addr, status)),
            Ok(Some(Ok(v1::MasterMessage {
                message: Some(Message::Registered(r)),
            }))) => break r,
            Ok(Some(Ok(v1::MasterMessage {
                message: Some(Message::Heartbeat(hb)),
            }))) => {
                tracing::debug!(master = %addr, "the registration waits for its turn");
                deadline = Instant::now() + queued_wait(wait, &hb);
            }
            Ok(Some(Ok(other))) => tracing::warn!(master = %addr, "ignoring {other:?} before Registered"),
        }
    };
    let agent_id = AgentId::parse(&registered.agent_id)
        .map_err(|e| Ended::Failed(format!("master {addr} assigned an invalid agent id: {e}")))?;
    if known_id.as_ref().is_some_and(|k| *k != agent_id) {
        tracing::warn!(old = ?known_id, new = %agent_id, "master assigned a new agent id");
    }
    if known_id.as_ref() != Some(&agent_id) {
        let (dir, id) = (deps.work_dir.clone(), agent_id.clone());
        tokio::task::spawn_blocking(move || register::store_agent_id(&dir, &id))
            .await
            .map_err(|_| AgentError::ActorPanicked("agent id writer"))??;
        deps.agent_id.send_replace(Some(agent_id.clone()));
    }
    if !*tasks_complete || !deps.checkpoints_marker.exists() {
        let marker = deps.checkpoints_marker.clone();
        tokio::task::spawn_blocking(move || crate::paths::write_atomic(&marker, b"checkpoints kept since\n"))
            .await
            .map_err(|_| AgentError::ActorPanicked("checkpoints marker writer"))??;
        *tasks_complete = true;
    }
    let mut heartbeat = heartbeat_interval(registered.heartbeat_interval_secs);
    tracing::info!(master = %addr, %agent_id, ?heartbeat, "registered");
    waits.backoff.reset();
    waits.register.reset();
    deps.master.send_replace(Some(addr.to_owned()));
    deps.metrics.connected.set(1);
    deps.status.connected(tx.clone()).await?;
    deps.outbound.send_replace(Some(tx.clone()));
    deps.table.master_registered().await?;

    let mut silence = heartbeat * 3;
    let mut last_heard = Instant::now();
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut usage = usage::UsageReporter::default();
    loop {
        tokio::select! {
            msg = tokio::time::timeout_at(last_heard + silence, inbound.next()) => match msg {
                Err(_) => return Err(Ended::Failed(format!("master {addr} silent for {silence:?}"))),
                Ok(None) => return Ok(()),
                Ok(Some(Err(status))) => return Err(refused(addr, status)),
                Ok(Some(Ok(msg))) => {
                    last_heard = Instant::now();
                    if let Some(Message::Heartbeat(hb)) = &msg.message
                        && hb.interval_secs > 0.0
                        && heartbeat_interval(hb.interval_secs) != heartbeat
                    {
                        heartbeat = heartbeat_interval(hb.interval_secs);
                        silence = heartbeat * 3;
                        tracing::info!(master = %addr, ?heartbeat, "the leader set a new heartbeat interval");
                        ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
                        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                    dispatch(deps, msg).await?;
                }
            },
            _ = ticker.tick() => {
                let beat = v1::AgentMessage {
                    message: Some(v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
                };
                if tx.try_send(beat).is_err() {
                    tracing::debug!(master = %addr, "heartbeat skipped: outbound stream full");
                }
                // Container usage goes with the heartbeat (best effort, like it).
                if let Some(report) = usage.next(&deps.table).await?
                    && tx.try_send(report).is_err()
                {
                    tracing::debug!(master = %addr, "usage report skipped: outbound stream full");
                }
            }
        }
    }
}

/// How long to wait for `Registered`, or a heartbeat saying it is queued,
/// once the master has answered Attach: it answers at once and reads the
/// registration in turn (a new leader reads a failover's thousands of task
/// lists one after another, which takes seconds), then says it waits with
/// heartbeats every 5 s; as long as three of those, or the usual wait if
/// longer, before starting over at the back.
pub fn answered_wait(wait: Duration) -> Duration {
    wait.max(DEFAULT_HEARTBEAT * 3)
}

/// How long to wait for `Registered` after the master's heartbeat said
/// the registration is queued (a new leader admits a whole cluster's agents
/// after a failover): three of its heartbeats, or the usual wait if longer.
/// Giving up would put the agent, and its whole task list, at the back of
/// the queue again.
pub fn queued_wait(wait: Duration, hb: &v1::MasterHeartbeat) -> Duration {
    wait.max(heartbeat_interval(hb.interval_secs) * 3)
}

fn heartbeat_interval(secs: f64) -> Duration {
    if secs.is_finite() && secs > 0.0 {
        Duration::from_secs_f64(secs.clamp(0.01, 3600.0))
    } else {
        DEFAULT_HEARTBEAT
    }
}

async fn dispatch(deps: &AttachDeps, msg: v1::MasterMessage) -> Result<(), AgentError> {
    match msg.message {
        Some(Message::RunTask(run)) => deps.table.run_task(*run).await,
        Some(Message::KillTask(k)) => {
            let kill = crate::task::supervisor::Kill::from_proto(&k);
            deps.table.kill(k.framework_id, k.task_id, kill).await
        }
        // An executor's update was acknowledged to it once journaled.
        Some(Message::Acknowledge(ack)) => deps.status.acknowledge(ack).await,
        Some(Message::ShutdownFramework(s)) => deps.table.shutdown_framework(s.framework_id).await,
        Some(Message::Heartbeat(_)) => Ok(()),
        Some(Message::FrameworkMessage(m)) => deps.table.framework_message(m).await,
        Some(Message::ShutdownExecutor(s)) => deps.table.shutdown_executor(s).await,
        Some(Message::Volumes(v)) => deps.table.volumes(v.volumes).await,
        Some(Message::Registered(_)) => {
            tracing::debug!("duplicate Registered ignored");
            Ok(())
        }
        None => {
            tracing::debug!("empty master message ignored");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registration the master says is queued waits three of its
    /// heartbeats, or the usual wait if that is longer.
    #[test]
    fn a_queued_registration_waits_three_heartbeats() {
        let hb = |secs| v1::MasterHeartbeat { interval_secs: secs };
        let wait = REGISTER_TIMEOUT;
        assert_eq!(queued_wait(wait, &hb(5.0)), Duration::from_secs(15));
        assert_eq!(queued_wait(MAX_REGISTER_WAIT, &hb(5.0)), MAX_REGISTER_WAIT);
        // No interval named: the default heartbeat's.
        assert_eq!(queued_wait(wait, &hb(0.0)), DEFAULT_HEARTBEAT * 3);
        assert_eq!(queued_wait(wait, &hb(f64::NAN)), DEFAULT_HEARTBEAT * 3);
        assert_eq!(answered_wait(wait), Duration::from_secs(15));
        assert_eq!(answered_wait(MAX_REGISTER_WAIT), MAX_REGISTER_WAIT);
    }
}
