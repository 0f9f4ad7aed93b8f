//! `mezzo.v1.AgentApi`: the agent's one bidirectional stream.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use mezzo_proto::ids::{AgentId, ExecutorId, FrameworkId, TaskId};
use mezzo_proto::reservation::ReservedResources;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;
use mezzo_proto::v1::agent_api_server::AgentApi;
use mezzo_proto::v1::agent_message::Message;
use tokio::sync::mpsc;
#[cfg(test)]
use tokio::sync::oneshot;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Caller;
use crate::core::agent_types::{AgentDescription, ReportedExecutor, ReportedTask};
use crate::core::observe::HISTORY_PER_TASK;
use crate::core::{AgentHello, ConnId};
use crate::error::MasterError;
use crate::history::{MAX_MESSAGE_BYTES, cut};
use crate::runtime::{AgentTx, Command, Handle, ToAgent};
use mezzo_proto::security::Kind;

/// How long an agent may take to send its first message.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a follower that knows no leader holds an agent's Attach for
/// the election's outcome (about 0.1 s after a leader's process dies).
const ELECTION_WAIT: Duration = Duration::from_secs(1);
/// A registration the owner has not answered within this hears that it
/// waits for its turn.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// How often an agent whose registration waits for its turn hears that it
/// does (a heartbeat before `Registered`).
pub const QUEUED_HEARTBEAT: Duration = Duration::from_secs(5);
const AGENT_QUEUE: usize = 65536;

#[derive(Debug, Clone)]
pub struct AgentService {
    handle: Handle,
}

impl AgentService {
    pub fn new(handle: Handle) -> Self {
        AgentService { handle }
    }
}

fn invalid(msg: impl Into<String>) -> MasterError {
    MasterError::Invalid(msg.into())
}

fn describe(info: Option<v1::AgentInfo>) -> Result<AgentDescription, MasterError> {
    let info = info.ok_or_else(|| invalid("registration carries no agent info"))?;
    if info.hostname.trim().is_empty() || info.hostname.len() > 255 {
        return Err(invalid("agent hostname must be 1 to 255 bytes"));
    }
    let resources =
        ReservedResources::from_proto(&info.resources).map_err(|e| invalid(format!("agent resources: {e}")))?;
    if resources.is_empty() {
        return Err(invalid("agent offers no resources"));
    }
    check_http_address(&info.http_address)?;
    Ok(AgentDescription {
        hostname: info.hostname,
        http_address: info.http_address,
        resources,
        attributes: info.attributes.into_iter().map(|a| (a.name, a.value)).collect(),
    })
}

/// The agent's HTTP address, to which the master's files proxy sends
/// requests: `host:port` (an IP address, `[IPv6]` or a DNS name), or empty
/// for none. Anything more (`user@`, a path, a query) would ride along
/// into the proxy's URL.
fn check_http_address(addr: &str) -> Result<(), MasterError> {
    if addr.is_empty() || addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let label = |l: &str| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let dns = |h: &str| h.len() <= 253 && h.split('.').all(label);
    let port = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok();
    match addr.rsplit_once(':') {
        Some((h, p)) if dns(h) && port(p) => Ok(()),
        _ => Err(invalid(format!(
            "agent http address {:?} must be host:port",
            addr.chars().take(64).collect::<String>()
        ))),
    }
}

/// A re-registering agent reports its tasks as it got them, secrets'
/// values included: the master keeps only their names.
fn forget_secret_values(info: &mut v1::TaskInfo) {
    if let Some(cmd) = info.command.as_mut() {
        for e in cmd.environment.iter_mut().filter(|e| !e.secret.is_empty()) {
            e.value.clear();
        }
        for f in cmd.secret_files.iter_mut() {
            f.value.clear();
        }
    }
    if let Some(image) = info.container.as_mut().and_then(|c| c.image.as_mut()) {
        image.credentials.clear();
    }
}

/// The launch time a re-registering agent reports, if it is one (0, from
/// an agent that does not know it, is none).
fn reported_launch(at: f64) -> Option<f64> {
    (at.is_finite() && at > 0.0).then_some(at)
}

/// The status updates a re-registering agent reports for one task, made
/// safe to keep and show: the newest [`HISTORY_PER_TASK`], each naming
/// this task and agent, with a known state (others are skipped), a known
/// reason (else none), a finite time, no uuid (nothing acknowledges them)
/// and a message cut to [`MAX_MESSAGE_BYTES`].
fn reported_statuses(
    agent: &AgentId,
    fid: &FrameworkId,
    tid: &TaskId,
    statuses: Vec<v1::TaskStatus>,
) -> Vec<v1::TaskStatus> {
    let skip = statuses.len().saturating_sub(HISTORY_PER_TASK);
    let mut kept: Vec<v1::TaskStatus> = statuses
        .into_iter()
        .skip(skip)
        .filter(|s| TaskState::from_proto(s.state).is_some())
        .map(|mut s| {
            // The agent's ids are not trusted; the latest status gets ours
            // below, and the earlier ones only feed the task's history,
            // which keeps none.
            s.task_id = String::new();
            s.framework_id = String::new();
            s.agent_id = String::new();
            s.uuid = Vec::new();
            if v1::StatusReason::try_from(s.reason).is_err() {
                s.reason = v1::StatusReason::ReasonUnspecified as i32;
            }
            if v1::StatusSource::try_from(s.source).is_err() {
                s.source = v1::StatusSource::SourceUnspecified as i32;
            }
            if !(s.timestamp.is_finite() && s.timestamp >= 0.0) {
                s.timestamp = 0.0;
            }
            cut(&mut s.message, MAX_MESSAGE_BYTES);
            s
        })
        .collect();
    if let Some(latest) = kept.last_mut() {
        latest.task_id = tid.to_string();
        latest.framework_id = fid.to_string();
        latest.agent_id = agent.to_string();
    }
    kept
}

/// How long a host name lookup may take before it counts as failed.
const HOST_LOOKUP_LIMIT: Duration = Duration::from_secs(5);

/// Resolves an attached agent's host name from this master and tells the
/// core (issue 21: an agent whose name did not resolve registered without
/// a word, and health checks then failed with an opaque error).
async fn check_host(handle: Handle, hostname: String) {
    let lookup = tokio::net::lookup_host((hostname.as_str(), 0));
    let problem = match tokio::time::timeout(HOST_LOOKUP_LIMIT, lookup).await {
        Ok(Ok(mut addrs)) => addrs.next().is_none().then(|| "no address".to_owned()),
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {HOST_LOOKUP_LIMIT:?}")),
    };
    handle.notify(Command::AgentHostChecked(hostname, problem));
}

/// The longest registration id an agent may name.
pub const MAX_REGISTRATION_ID: usize = 64;

/// Whether a registration id is short and plain: letters, digits and '-'.
pub fn valid_registration(id: &str) -> bool {
    id.len() <= MAX_REGISTRATION_ID && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A `Register`'s registration id: none if empty.
fn registration_id(id: String) -> Result<Option<String>, MasterError> {
    if !valid_registration(&id) {
        return Err(invalid(format!(
            "the registration id must be at most {MAX_REGISTRATION_ID} letters, digits and '-'"
        )));
    }
    Ok((!id.is_empty()).then_some(id))
}

/// Validates the first message of the stream.
pub fn hello(msg: v1::AgentMessage) -> Result<AgentHello, MasterError> {
    match msg.message {
        Some(Message::Register(r)) => Ok(AgentHello::Register {
            info: describe(r.agent)?,
            registration: registration_id(r.registration)?,
        }),
        Some(Message::Reregister(r)) => {
            let id = AgentId::parse(&r.agent_id)?;
            let info = describe(r.agent)?;
            let mut tasks = Vec::with_capacity(r.tasks.len());
            for t in r.tasks {
                let state = TaskState::from_proto(t.state).ok_or_else(|| invalid("reported task has no state"))?;
                // The agent is the source of truth for what it runs: only ids
                // and resources must make sense (a restarted agent may know
                // little more than the id of a task with pending updates).
                let mut info = t.task.ok_or_else(|| invalid("reported task carries no task info"))?;
                forget_secret_values(&mut info);
                let framework_id = FrameworkId::parse(&t.framework_id)?;
                let task_id = TaskId::parse(&info.task_id)?;
                tasks.push(ReportedTask {
                    resources: ReservedResources::from_proto(&info.resources)
                        .map_err(|e| invalid(format!("reported task {}: {e}", info.task_id)))?,
                    info,
                    state,
                    end_unacknowledged: t.end_unacknowledged,
                    launched_at: reported_launch(t.launched_at),
                    statuses: reported_statuses(&id, &framework_id, &task_id, t.statuses),
                    framework_id,
                    task_id,
                });
            }
            let executors = r
                .executors
                .into_iter()
                .map(reported_executor)
                .collect::<Result<_, _>>()?;
            Ok(AgentHello::Reregister {
                id,
                info,
                tasks,
                complete: r.tasks_complete,
                executors,
            })
        }
        _ => Err(invalid(
            "the first message on an agent stream must be register or reregister",
        )),
    }
}

/// An executor a re-registering agent runs: ids and resources must parse.
fn reported_executor(e: v1::RunningExecutor) -> Result<ReportedExecutor, MasterError> {
    let info = e
        .executor
        .ok_or_else(|| invalid("reported executor carries no executor info"))?;
    let executor_id = ExecutorId::parse(&info.executor_id)?;
    Ok(ReportedExecutor {
        framework_id: FrameworkId::parse(&e.framework_id)?,
        resources: ReservedResources::from_proto(&info.resources)
            .map_err(|x| invalid(format!("reported executor {executor_id}: {x}")))?,
        executor_id,
        role: info.allocation_role.clone(),
        info,
    })
}

/// Whether the agent's stream still exists once the owner admitted it:
/// whichever of the stream's drop and the admission comes second tells the
/// owner the stream closed.
#[derive(Debug, Default)]
enum Slot {
    #[default]
    Waiting,
    Admitted(ConnId),
    Dropped,
}

type SharedSlot = Arc<Mutex<Slot>>;

/// Notes the admitted connection; false if the stream is gone already (the
/// caller then tells the owner).
fn admitted(slot: &SharedSlot, conn: ConnId) -> bool {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    match *slot {
        Slot::Dropped => false,
        _ => {
            *slot = Slot::Admitted(conn);
            true
        }
    }
}

/// The stream to the agent; tells the owner when it is dropped.
pub struct ToAgentStream {
    rx: mpsc::Receiver<ToAgent>,
    slot: SharedSlot,
    handle: Handle,
}

impl Stream for ToAgentStream {
    type Item = Result<v1::MasterMessage, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Unboxed for tonic (boxed only while queued, see `ToAgent`).
        self.rx
            .poll_recv(cx)
            .map(|queued| queued.map(|item| item.map(|boxed| *boxed)))
    }
}

impl Drop for ToAgentStream {
    fn drop(&mut self) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Slot::Admitted(conn) = std::mem::replace(&mut *slot, Slot::Dropped) {
            self.handle.notify(Command::AgentClosed(conn));
        }
    }
}

/// The owner's answer to an attach: the connection, or why not.
type Answer = Pin<Box<dyn Future<Output = Result<ConnId, MasterError>> + Send>>;

/// The master's heartbeat an agent gets while its registration waits for
/// its turn: `interval_secs` says how often it comes.
fn queued_heartbeat() -> ToAgent {
    Ok(Box::new(v1::MasterMessage {
        message: Some(v1::master_message::Message::Heartbeat(v1::MasterHeartbeat {
            interval_secs: QUEUED_HEARTBEAT.as_secs_f64(),
        })),
    }))
}

/// Waits for the owner's answer to a registration: one not answered within
/// [`ANSWER_WITHIN`] tells the agent it is still queued, every
/// [`QUEUED_HEARTBEAT`] (while the owner moves on at all, so that a wedged
/// owner does not hold agents forever), and gives up its place when the
/// agent goes away (the owner then skips it). A refusal ends the stream
/// with its status, which names the leader as the answer to Attach would.
async fn wait_turn(handle: Handle, mut answer: Answer, tx: AgentTx, slot: SharedSlot) -> Option<ConnId> {
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + ANSWER_WITHIN, QUEUED_HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = None;
    let conn = loop {
        tokio::select! {
            biased;
            answer = &mut answer => match answer {
                Ok(conn) => break conn,
                Err(e) => {
                    let _ = tx.try_send(Err(e.into()));
                    return None;
                }
            },
            () = tx.closed() => {
                // The owner may have admitted it just now: that connection
                // is closed here, as nobody else knows it (an admission
                // dropped unread would leave a live session replaced by a
                // dead one, or a dead agent counted connected).
                if let Some(Ok(conn)) = answer.now_or_never() {
                    handle.notify(Command::AgentClosed(conn));
                }
                return None;
            }
            _ = beat.tick() => {
                let handled = handle.handled();
                if seen != Some(handled) {
                    seen = Some(handled);
                    let _ = tx.try_send(queued_heartbeat());
                }
            }
        }
    };
    if admitted(&slot, conn) {
        Some(conn)
    } else {
        handle.notify(Command::AgentClosed(conn));
        None
    }
}

/// Passes an admitted agent's messages to the owner until its stream ends.
async fn forward(handle: Handle, conn: ConnId, mut inbound: Streaming<v1::AgentMessage>) {
    while let Some(msg) = inbound.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(conn, error = %e, "agent stream ended");
                break;
            }
        };
        let cmd = match msg.message {
            Some(Message::StatusUpdate(u)) => match status_update(conn, u) {
                Ok(cmd) => cmd,
                Err(e) => {
                    tracing::warn!(conn, error = %e, "dropping an invalid status update");
                    continue;
                }
            },
            Some(Message::Heartbeat(_)) => Command::AgentHeartbeat(conn),
            Some(Message::ExecutorMessage(m)) => Command::ExecutorMessage(conn, m),
            Some(Message::ExecutorExited(e)) => Command::ExecutorExited(conn, e),
            Some(Message::Usage(u)) => match super::usage::report(u) {
                Ok(usage) => Command::AgentUsage(conn, usage),
                Err(e) => {
                    tracing::warn!(conn, error = %e, "dropping an invalid usage report");
                    continue;
                }
            },
            _ => {
                tracing::warn!(conn, "unexpected message on an attached agent stream");
                continue;
            }
        };
        if handle.send(cmd).await.is_err() {
            break;
        }
    }
    handle.notify(Command::AgentClosed(conn));
}

#[tonic::async_trait]
impl AgentApi for AgentService {
    type AttachStream = ToAgentStream;

    /// Answered at once, before the registration is read: a new leader
    /// gets a failover's 40,000 registrations within seconds, and agents
    /// whose Attach waited behind the others' decoding gave up after 5 s and
    /// sent their task lists again (26,000 of them in one failover). The
    /// registration's answer, or its refusal, comes on the stream. A
    /// follower refuses the Attach itself, naming the leader.
    async fn attach(&self, req: Request<Streaming<v1::AgentMessage>>) -> Result<Response<ToAgentStream>, Status> {
        let caller = Caller::of(&req);
        // Only an agent's credential may open an agent stream.
        caller.expect_kind(Kind::Agent).map_err(|e| e.status())?;
        // A follower refuses before reading anything, naming the leader:
        // during an election, once it is known.
        self.handle.refuse_unless_leading_soon(ELECTION_WAIT).await?;
        let (tx, rx) = mpsc::channel(AGENT_QUEUE);
        let slot = SharedSlot::default();
        let stream = ToAgentStream {
            rx,
            slot: slot.clone(),
            handle: self.handle.clone(),
        };
        tokio::spawn(register(self.handle.clone(), caller, req.into_inner(), tx, slot));
        Ok(Response::new(stream))
    }
}

/// Reads an attached agent's registration, has the owner admit it and then
/// passes its messages on; a refusal ends the stream with its status.
async fn register(
    handle: Handle,
    caller: Caller,
    mut inbound: Streaming<v1::AgentMessage>,
    tx: AgentTx,
    slot: SharedSlot,
) {
    if tx.is_closed() {
        return; // the agent gave up before its turn: nothing to decode
    }
    let first = match tokio::time::timeout(HELLO_TIMEOUT, inbound.next()).await {
        Err(_) => Err(Status::deadline_exceeded("no registration within 10 s")),
        Ok(None) => Err(Status::invalid_argument("stream closed before registration")),
        Ok(Some(first)) => first,
    };
    let hello = match first.and_then(|m| hello(m).map_err(Status::from)) {
        Ok(hello) => hello,
        Err(status) => {
            let _ = tx.try_send(Err(status));
            return;
        }
    };
    let hostname = match &hello {
        AgentHello::Register { info, .. } | AgentHello::Reregister { info, .. } => info.hostname.clone(),
    };
    let owner = handle.clone();
    let owner_tx = tx.clone();
    let answer: Answer = Box::pin(async move {
        owner
            .ask(|reply| Command::AgentAttach {
                hello,
                caller,
                tx: owner_tx,
                reply,
            })
            .await?
    });
    // Queued behind others (a failover's thousands of agents), the agent
    // hears so while it waits, instead of giving up and sending its task
    // list again at the back of the queue.
    let Some(conn) = wait_turn(handle.clone(), answer, tx, slot).await else {
        return;
    };
    tokio::spawn(check_host(handle.clone(), hostname));
    // A task of its own for the session: this one's state, sized for the
    // registration's steps too, held 3.4 KB for every agent for as long as
    // it ran (a heap profile of 20,000 agents); `forward`'s is a third less.
    tokio::spawn(forward(handle, conn, inbound));
}

pub(crate) fn status_update(conn: ConnId, u: v1::StatusUpdate) -> Result<Command, MasterError> {
    let framework = FrameworkId::parse(&u.framework_id)?;
    let status = u.status.ok_or_else(|| invalid("status update carries no status"))?;
    let latest = TaskState::from_proto(u.latest_state)
        .or_else(|| TaskState::from_proto(status.state))
        .ok_or_else(|| invalid("status update has no state"))?;
    if TaskState::from_proto(status.state).is_none() {
        return Err(invalid("status update has no state"));
    }
    Ok(Command::StatusUpdate {
        conn,
        framework,
        status,
        latest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(http_address: &str) -> v1::AgentMessage {
        v1::AgentMessage {
            message: Some(Message::Register(v1::Register {
                agent: Some(v1::AgentInfo {
                    hostname: "h".into(),
                    resources: mezzo_proto::resources::Resources::parse("cpus:1")
                        .map(|r| r.to_proto())
                        .unwrap_or_default(),
                    attributes: vec![],
                    http_address: http_address.into(),
                }),
                registration: String::new(),
            })),
        }
    }

    /// Found by fuzzing (docs/fuzzing.md): the agent's HTTP address was
    /// taken as sent, and the files proxy builds `http://{address}/files/..`
    /// from it, so `evil@host:1`, `host:1/x?` or `host:1#` pointed the
    /// master's requests elsewhere.
    #[test]
    fn agent_http_address_is_host_and_port_only() {
        for ok in [
            "127.0.0.1:5051",
            "[::1]:5051",
            "agent-1.example:5051",
            "localhost:1",
            "",
        ] {
            assert!(hello(register(ok)).is_ok(), "{ok:?} refused");
        }
        for bad in [
            "evil@host:1",
            "host:1/x?",
            "h:1#",
            "host",
            "host:99999",
            "host:+80",
            "h :1",
            "h..x:1",
            "\u{e9}:1",
        ] {
            let err = hello(register(bad)).expect_err(bad);
            assert!(err.to_string().contains("must be host:port"), "{bad:?}: {err}");
        }
    }

    /// An attach waiting for its turn, as the service leaves it: the
    /// owner's answer comes through `reply`.
    fn queued(
        handle: &Handle,
    ) -> (
        oneshot::Sender<Result<ConnId, MasterError>>,
        ToAgentStream,
        AgentTx,
        SharedSlot,
    ) {
        let (reply, answer) = oneshot::channel();
        let answer: Answer = Box::pin(async move { answer.await.map_err(|_| MasterError::ShuttingDown)? });
        let (tx, rx) = mpsc::channel(16);
        let slot = SharedSlot::default();
        let stream = ToAgentStream {
            rx,
            slot: slot.clone(),
            handle: handle.clone(),
        };
        let waiting = tx.clone();
        tokio::spawn(wait_turn(handle.clone(), answer, tx, slot.clone()));
        (reply, stream, waiting, slot)
    }

    fn is_heartbeat(m: &Option<Result<v1::MasterMessage, Status>>) -> bool {
        matches!(
            m,
            Some(Ok(v1::MasterMessage {
                message: Some(v1::master_message::Message::Heartbeat(hb)),
            })) if hb.interval_secs == QUEUED_HEARTBEAT.as_secs_f64()
        )
    }

    /// A registration queued behind others hears so every few seconds
    /// while the owner moves on, and not while it is stuck (a wedged
    /// owner must not hold agents forever); admitted, its stream carries
    /// what the owner sends, and closing it tells the owner.
    #[tokio::test(start_paused = true)]
    async fn a_queued_registration_hears_heartbeats_while_the_owner_moves_on() {
        let (handle, mut owner) = Handle::unowned();
        let (reply, mut stream, tx, _slot) = queued(&handle);
        assert!(is_heartbeat(&stream.next().await), "the first after ANSWER_WITHIN");
        // The owner handles nothing: no more heartbeats.
        let quiet = tokio::time::timeout(QUEUED_HEARTBEAT * 3, stream.next()).await;
        assert!(quiet.is_err(), "a heartbeat although the owner is stuck: {quiet:?}");
        handle.count_handled();
        let beat = tokio::time::timeout(QUEUED_HEARTBEAT * 2, stream.next()).await;
        assert!(beat.as_ref().is_ok_and(is_heartbeat), "{beat:?}");
        reply.send(Ok(7)).expect("waiting");
        // Admitted: no more heartbeats though the owner moves on (`tx`, the
        // owner's side, keeps the stream open); dropping it says conn 7 closed.
        handle.count_handled();
        let after = tokio::time::timeout(QUEUED_HEARTBEAT * 3, stream.next()).await;
        assert!(after.is_err(), "a heartbeat after the admission: {after:?}");
        drop(tx);
        drop(stream);
        match owner.recv().await {
            Some(Command::AgentClosed(7)) => {}
            other => panic!("expected AgentClosed(7), got {:?}", other.is_some()),
        }
    }

    /// A refusal ends the stream with its status, naming the leader as
    /// the answer to Attach would (the agent follows it).
    #[tokio::test(start_paused = true)]
    async fn a_queued_registration_refused_ends_with_the_status() {
        let (handle, _owner) = Handle::unowned();
        let (reply, mut stream, tx, _slot) = queued(&handle);
        drop(tx);
        assert!(is_heartbeat(&stream.next().await));
        let leader = Some("m2:5050".to_owned());
        reply.send(Err(MasterError::NotLeader { leader })).expect("waiting");
        let status = match stream.next().await {
            Some(Err(status)) => status,
            other => panic!("expected a status, got {other:?}"),
        };
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let named = status.metadata().get(crate::error::LEADER_METADATA);
        assert_eq!(named.and_then(|v| v.to_str().ok()), Some("m2:5050"));
        assert!(stream.next().await.is_none(), "the stream ends");
    }

    /// An agent that goes away gives up its place (the owner skips an
    /// attach whose reply is closed); one that goes away just as the owner
    /// admits it is closed by the waiting side.
    #[tokio::test(start_paused = true)]
    async fn a_queued_registration_whose_agent_left_gives_up_its_place() {
        let (handle, _owner) = Handle::unowned();
        let (reply, stream, tx, _slot) = queued(&handle);
        drop(tx);
        drop(stream);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(reply.is_closed(), "the owner would admit an agent that left");

        // The owner admits it just as the agent goes: that connection is
        // closed, not forgotten (the owner would count a dead agent).
        let (handle, mut owner) = Handle::unowned();
        let (reply, stream, tx, _slot) = queued(&handle);
        drop(tx);
        reply.send(Ok(5)).expect("waiting");
        drop(stream);
        match tokio::time::timeout(Duration::from_secs(1), owner.recv()).await {
            Ok(Some(Command::AgentClosed(5))) => {}
            other => panic!("expected AgentClosed(5), got {:?}", other.map(|c| c.is_some())),
        }

        // The stream goes while the owner admits: whoever comes second
        // tells the owner, once.
        let (handle, mut owner) = Handle::unowned();
        let slot = SharedSlot::default();
        let stream = ToAgentStream {
            rx: mpsc::channel(1).1,
            slot: slot.clone(),
            handle: handle.clone(),
        };
        drop(stream);
        assert!(owner.try_recv().is_err(), "nothing was admitted yet");
        assert!(
            !admitted(&slot, 9),
            "the stream is gone: the waiting side must close conn 9"
        );
    }
}
