//! `POST /api/v1/scheduler`: Mesos' scheduler HTTP API over the core's
//! framework calls. `SUBSCRIBE` opens a RecordIO stream of events (JSON
//! or protobuf, as negotiated) named by a `Mesos-Stream-Id`; every other
//! call carries that id and is answered `202` at once. Each call becomes
//! the `mezzo.v1` request the gRPC API takes and goes through the same
//! checks (`crate::api`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use mezzo_proto::v1;
use tokio::sync::mpsc;

use super::convert::{self, Format};
use super::group;
use super::types as m;
use super::{Encoding, MesosApi, acks, bad_request, core_error, media, protobuf, recordio};
use crate::api::scheduler::{self as api, EVENT_QUEUE};
use crate::auth::Caller;
use crate::core::ConnId;
use crate::error::MasterError;
use crate::runtime::{Call, Command, Handle};

pub const STREAM_ID: &str = "Mesos-Stream-Id";

const PATH: &str = "/api/v1/scheduler";

/// How long a new framework may wait for its registration to commit.
/// (Within the router's request timeout, so that the answer says why.)
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(25);

/// One framework's stream: its id, and a way to add events to it that
/// does not keep it open (the core closes it by dropping its sender).
#[derive(Debug, Clone)]
struct OpenStream {
    id: String,
    /// The core's connection: a newer subscription's stream wins.
    conn: ConnId,
    events: mpsc::WeakSender<Result<v1::Event, tonic::Status>>,
    acks: acks::AckTx,
}

/// The stream of each framework subscribed through this API on this
/// master: a call must name its framework's current one.
#[derive(Debug, Clone, Default)]
pub struct Streams(Arc<Mutex<HashMap<FrameworkId, OpenStream>>>);

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FrameworkId, OpenStream>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, id: &FrameworkId) -> Option<OpenStream> {
        self.lock().get(id).cloned()
    }
}

/// Ends a subscription when its stream is dropped (the client went away,
/// or the core closed it): the core learns the framework disconnected.
struct Subscription {
    conn: ConnId,
    handle: Handle,
    streams: Streams,
    framework: Option<(FrameworkId, String)>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.handle.notify(Command::FrameworkClosed(self.conn));
        if let Some((id, stream)) = &self.framework {
            let mut s = self.streams.lock();
            if s.get(id).is_some_and(|x| x.id == *stream) {
                s.remove(id);
            }
        }
    }
}

/// The SUBSCRIBE answer's body: the core's events, as Mesos events, in
/// RecordIO.
struct EventBody {
    rx: mpsc::Receiver<Result<v1::Event, tonic::Status>>,
    first: Option<Bytes>,
    fmt: Format,
    enc: Encoding,
    master: Arc<m::MasterInfo>,
    _subscription: Subscription,
}

/// Appends `e` to `out` as one RecordIO record, encoded as `enc`.
fn append_record(out: &mut Vec<u8>, e: &m::Event, enc: Encoding) {
    match enc {
        // Serializing plain structs of strings and numbers cannot fail.
        Encoding::Json => recordio::append(out, &serde_json::to_vec(e).unwrap_or_default()),
        // Fails only if our .proto lacks a field of `types` (a bug the
        // tests catch): the event is left out rather than sent broken.
        Encoding::Protobuf => match protobuf::event_to_protobuf(e) {
            Ok(b) => recordio::append(out, &b),
            Err(err) => tracing::warn!(event = %e.kind, "a Mesos event has no protobuf form: {err}"),
        },
    }
}

/// Most bytes of events sent in one chunk: the events waiting when the
/// stream is written go out together (one write, not one per event).
const CHUNK: usize = 256 * 1024;

impl EventBody {
    /// Appends `ev` as a record, if Mesos has a word for it.
    fn append(&self, out: &mut Vec<u8>, ev: &v1::Event) {
        if let Some(e) = convert::event_out(ev, self.fmt, &self.master) {
            append_record(out, &e, self.enc);
        }
    }
}

impl Stream for EventBody {
    type Item = Result<Bytes, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(b) = self.first.take() {
            return Poll::Ready(Some(Ok(b)));
        }
        let mut out = Vec::new();
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None | Some(Err(_))) => return Poll::Ready(None),
                Poll::Ready(Some(Ok(ev))) => self.append(&mut out, &ev),
            }
            // And whatever else is waiting, up to a chunk.
            while out.len() < CHUNK {
                match self.rx.try_recv() {
                    Ok(Ok(ev)) => self.append(&mut out, &ev),
                    // The core ended the stream: what came before goes out.
                    Ok(Err(_)) => {
                        self.rx.close();
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Bytes::from(out))));
            }
        }
    }
}

/// The handler: SUBSCRIBE, or any other call.
pub async fn handle(api: &MesosApi, caller: Caller, headers: &HeaderMap, call: m::Call) -> Response {
    if call.kind == "SUBSCRIBE" {
        return subscribe(api, caller, headers, call).await;
    }
    // Mesos answers UPDATE_FRAMEWORK once applied (200), the rest at once.
    let done = if call.kind == "UPDATE_FRAMEWORK" {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    match other_call(api, caller, headers, call).await {
        Ok(()) => done.into_response(),
        Err(r) => r,
    }
}

async fn subscribe(api: &MesosApi, caller: Caller, headers: &HeaderMap, call: m::Call) -> Response {
    let enc = match media::response_encoding(headers, media::ANY) {
        Ok(e) => e,
        Err(r) => return super::refused(r),
    };
    let Some(sub) = call.subscribe else {
        return bad_request("Expecting 'subscribe' to be present");
    };
    let suppressed = match api::roles(&sub.suppressed_roles) {
        Ok(r) => r,
        Err(e) => return bad_request(e.to_string()),
    };
    let info = sub.framework_info;
    let from_info = info.id.as_ref().map(|i| i.value.clone());
    let from_call = call.framework_id.as_ref().map(|i| i.value.clone());
    let id = match (from_call, from_info) {
        (Some(a), Some(b)) if a != b => {
            return bad_request("'framework_id' differs from 'subscribe.framework_info.id'");
        }
        (a, b) => a.or(b),
    };
    let id = match id.map(|s| FrameworkId::parse(&s)).transpose() {
        Ok(id) => id,
        Err(e) => return bad_request(format!("framework id: {e}")),
    };
    let fmt = Format::of(&info);
    if headers.contains_key(STREAM_ID) {
        return bad_request(format!("A SUBSCRIBE call must not include the '{STREAM_ID}' header"));
    }
    let info = match convert::framework_in(&info) {
        Ok(i) => crate::api::validate_framework(Some(i)),
        Err(e) => return bad_request(e),
    };
    let info = match info {
        Ok(i) => i,
        Err(e) => return bad_request(e.to_string()),
    };
    if let Some(r) = suppressed.iter().find(|r| !info.roles.iter().any(|n| n == r.as_str())) {
        return bad_request(format!("suppressed role {r} is not one of the framework's roles"));
    }
    let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
    let events = tx.downgrade();
    let handle = api.http.handle().clone();
    let conn = match handle.subscribe(info, id, suppressed, caller, tx).await {
        Ok(c) => c,
        Err(e) => return core_error(api, e, PATH).await,
    };
    let mut subscription = Subscription {
        conn,
        handle,
        streams: api.streams.clone(),
        framework: None,
    };
    // The first event says who the framework is (a new one is told once
    // its registration commits).
    let first = match tokio::time::timeout(SUBSCRIBE_WAIT, rx.recv()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(status))) => return core_error(api, MasterError::Invalid(status.message().to_owned()), PATH).await,
        Ok(None) | Err(_) => {
            return core_error(
                api,
                MasterError::Internal("the framework's registration did not complete in time; retry".into()),
                PATH,
            )
            .await;
        }
    };
    let Some(v1::event::Event::Subscribed(s)) = &first.event else {
        let msg = match first.event {
            Some(v1::event::Event::Error(e)) => e.message,
            _ => "the master did not confirm the subscription".into(),
        };
        return bad_request(msg);
    };
    let Ok(fid) = FrameworkId::parse(&s.framework_id) else {
        return core_error(
            api,
            MasterError::Internal("bad framework id from the core".into()),
            PATH,
        )
        .await;
    };
    let stream_id = uuid::Uuid::new_v4().to_string();
    let entry = OpenStream {
        id: stream_id.clone(),
        conn,
        events,
        acks: acks::start(api.http.handle().clone(), fid.clone()),
    };
    // Two subscriptions of one framework may get here in either order:
    // the newer (the one the core keeps) must stay.
    let replaced = {
        let mut streams = api.streams.lock();
        let newer = streams.get(&fid).is_some_and(|s| s.conn > conn);
        if !newer {
            streams.insert(fid.clone(), entry);
        }
        newer
    };
    if replaced {
        return bad_request("a newer subscription of this framework replaced this one");
    }
    subscription.framework = Some((fid.clone(), stream_id.clone()));
    // Mesos follows SUBSCRIBED with a heartbeat at once.
    let first = convert::event_out(&first, fmt, &api.master).map(|e| {
        let mut b = Vec::new();
        append_record(&mut b, &e, enc);
        append_record(&mut b, &m::Event::of("HEARTBEAT"), enc);
        Bytes::from(b)
    });
    let body = EventBody {
        rx,
        first,
        fmt,
        enc,
        master: api.master.clone(),
        _subscription: subscription,
    };
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(enc.media_type()));
    if let Ok(v) = HeaderValue::from_str(&stream_id) {
        h.insert(STREAM_ID, v);
    }
    resp
}

/// Checks the call's framework and stream, converts it and hands it to
/// the core.
async fn other_call(api: &MesosApi, caller: Caller, headers: &HeaderMap, call: m::Call) -> Result<(), Response> {
    let Some(fid) = call.framework_id.as_ref() else {
        return Err(bad_request("Expecting 'framework_id' to be present"));
    };
    let fid = FrameworkId::parse(&fid.value).map_err(|e| bad_request(format!("framework id: {e}")))?;
    let Some(stream) = headers.get(STREAM_ID).and_then(|v| v.to_str().ok()) else {
        return Err(bad_request(format!(
            "All non-subscribe calls should include the '{STREAM_ID}' header"
        )));
    };
    let Some(open) = api.streams.get(&fid).filter(|s| s.id == stream) else {
        // A follower knows no streams: send the caller to the leader.
        if api.leads().await == Some(false) {
            return Err(api.to_leader(PATH).await);
        }
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "The stream ID '{stream}' included in this request didn't match the stream ID currently \
                 associated with framework ID {fid}"
            ),
        )
            .into_response());
    };
    if call.kind == "ACKNOWLEDGE" {
        let ack = acknowledgement(call).map_err(bad_request)?;
        let (agent, task, uuid) = ack;
        // Waits only while the batcher's queue is full.
        let _ = open.acks.send(acks::Queued::Ack(caller, agent, task, uuid)).await;
        return Ok(());
    }
    // Calls after acknowledgements reach the core after them.
    acks::flush(&open.acks).await;
    let events = open.events;
    // An ACCEPT that launches is refused as Mesos refuses it: 202, and an
    // update for each task saying why (clients ignore the answer to a call).
    let launches = launched_tasks(&call);
    let offers = call.accept.as_ref().map(|a| ids(&a.offer_ids)).unwrap_or_default();
    let refuse = call.accept.as_ref().and_then(|a| filters(a.filters.as_ref()));
    let converted = convert_call(&fid, call);
    if !launches.is_empty() {
        let refusal = match converted {
            Ok(Some(c)) => api.http.handle().call(fid.clone(), c, caller.clone()).await.err(),
            Ok(None) => None,
            Err(e) => Some(MasterError::Invalid(e)),
        };
        match refusal {
            None => {}
            Some(e) if refused_launch(&e) => {
                refuse_launches(api, &fid, caller, &events, &launches, (offers, refuse), &e).await;
            }
            // Leadership, rights, the framework's subscription: nothing
            // about the tasks, so no update says so; the caller may retry.
            Some(e) => return Err(core_error(api, e, PATH).await),
        }
        return Ok(());
    }
    let Some(c) = converted.map_err(bad_request)? else {
        return Ok(());
    };
    let killed = match &c {
        Call::Kill { task, .. } => Some(task.clone()),
        _ => None,
    };
    let to_executor = matches!(c, Call::Message { .. } | Call::ShutdownExecutor { .. });
    match api.http.handle().call(fid.clone(), c, caller.clone()).await {
        Ok(()) => Ok(()),
        // Mesos forwards messages and shutdowns without knowing the
        // executor, answering 202 whether or not it (or its agent) exists.
        Err(
            e
            @ (MasterError::UnknownExecutor { .. } | MasterError::UnknownAgent(_) | MasterError::AgentDisconnected(_)),
        ) if to_executor => {
            tracing::debug!(framework = %fid, "{e}: dropped");
            Ok(())
        }
        // A kill of a task the master does not know, or that already
        // ended, is answered as Mesos answers it: with the task's state,
        // as reconciliation tells it.
        Err(MasterError::UnknownTask(_) | MasterError::TaskTerminal { .. }) if killed.is_some() => {
            let tasks = killed.into_iter().map(|t| (t, None)).collect();
            match api.http.handle().call(fid, Call::Reconcile { tasks }, caller).await {
                Ok(()) => Ok(()),
                Err(e) => Err(core_error(api, e, PATH).await),
            }
        }
        Err(e) => Err(core_error(api, e, PATH).await),
    }
}

/// The (task id, agent id, in a task group) of every task an ACCEPT
/// launches.
fn launched_tasks(call: &m::Call) -> Vec<(String, String, bool)> {
    let Some(a) = call.accept.as_ref().filter(|_| call.kind == "ACCEPT") else {
        return Vec::new();
    };
    a.operations
        .iter()
        .flat_map(|op| {
            let launch = op.launch.iter().flat_map(|l| &l.task_infos).map(|t| (t, false));
            let group = op
                .launch_group
                .iter()
                .flat_map(|g| &g.task_group.tasks)
                .map(|t| (t, true));
            launch.chain(group)
        })
        .map(|(t, grouped)| (t.task_id.value.clone(), t.agent_id.value.clone(), grouped))
        .collect()
}

/// Whether a refused ACCEPT was refused for its tasks or offers (told as
/// task updates, as Mesos tells them), not for the master's state or the
/// caller's rights (answered as HTTP errors).
fn refused_launch(e: &MasterError) -> bool {
    matches!(
        e,
        MasterError::Invalid(_)
            | MasterError::BadId(_)
            | MasterError::BadResources(_)
            | MasterError::MixedAgents(..)
            | MasterError::BeyondOffer { .. }
            | MasterError::DuplicateTask(_)
            | MasterError::UnknownOffer(_)
            | MasterError::ForeignOffer { .. }
            | MasterError::UnknownAgent(_)
            | MasterError::AgentDisconnected(_)
            | MasterError::AgentGone(_)
            | MasterError::UnknownVolume { .. }
    )
}

/// Tells the framework why its launch was refused, one update per task
/// (no uuid: nothing to acknowledge), and gives back the offers it named.
async fn refuse_launches(
    api: &MesosApi,
    fid: &FrameworkId,
    caller: Caller,
    events: &mpsc::WeakSender<Result<v1::Event, tonic::Status>>,
    launches: &[(String, String, bool)],
    (offers, refuse): (Vec<String>, Option<v1::Filters>),
    why: &MasterError,
) {
    use v1::{StatusReason as R, TaskState as S};
    let (state, reason) = match why {
        MasterError::UnknownOffer(_)
        | MasterError::ForeignOffer { .. }
        | MasterError::UnknownAgent(_)
        | MasterError::AgentDisconnected(_)
        | MasterError::AgentGone(_) => (S::TaskDropped, R::ReasonInvalidOffers),
        _ => (S::TaskError, R::ReasonTaskInvalid),
    };
    // As Mesos refuses a task group: every task of it, for the group.
    let reason_of = |grouped: bool| match (state, grouped) {
        (S::TaskError, true) => R::ReasonTaskGroupInvalid,
        _ => reason,
    };
    // Each offer on its own: those that are gone are refused, the others
    // go back (with the accept's filters, or none if those were bad).
    for offer in offers {
        for filters in [refuse, None] {
            let decline = api::decline(&v1::DeclineRequest {
                framework_id: fid.to_string(),
                offer_ids: vec![offer.clone()],
                filters,
            });
            let Ok(c) = decline else { continue };
            if api.http.handle().call(fid.clone(), c, caller.clone()).await.is_ok() {
                break;
            }
        }
    }
    let Some(tx) = events.upgrade() else { return };
    for (task, agent, grouped) in launches {
        let status = v1::TaskStatus {
            task_id: task.clone(),
            state: state as i32,
            reason: reason_of(*grouped) as i32,
            message: why.to_string(),
            source: v1::StatusSource::SourceMaster as i32,
            agent_id: agent.clone(),
            timestamp: mezzo_proto::clock::unix_now(),
            framework_id: fid.to_string(),
            ..Default::default()
        };
        let ev = v1::Event {
            event: Some(v1::event::Event::Update(v1::Update { status: Some(status) })),
        };
        if tx.try_send(Ok(ev)).is_err() {
            return;
        }
    }
}

/// An `ACKNOWLEDGE`, checked whole at the edge: its answer (202) comes
/// before the core applies it.
fn acknowledgement(call: m::Call) -> Result<(AgentId, TaskId, Vec<u8>), String> {
    let a = need(call.acknowledge, "acknowledge")?;
    let uuid = convert::uuid_in(&a.uuid)?;
    if uuid.len() != 16 {
        return Err(format!("acknowledge: uuid must be 16 bytes, got {}", uuid.len()));
    }
    let agent = AgentId::parse(&a.agent_id.value).map_err(|e| format!("acknowledge: {e}"))?;
    let task = TaskId::parse(&a.task_id.value).map_err(|e| format!("acknowledge: {e}"))?;
    Ok((agent, task, uuid))
}

fn ids(list: &[m::Id]) -> Vec<String> {
    list.iter().map(|i| i.value.clone()).collect()
}

fn filters(f: Option<&m::Filters>) -> Option<v1::Filters> {
    f.map(|f| v1::Filters {
        refuse_seconds: f.refuse_seconds,
    })
}

fn need<T>(x: Option<T>, field: &str) -> Result<T, String> {
    x.ok_or_else(|| format!("Expecting '{field}' to be present"))
}

fn master_err(e: MasterError) -> String {
    e.to_string()
}

/// An offer operation as Mezzo's.
fn operation(op: m::Operation) -> Result<Vec<v1::Operation>, String> {
    use v1::operation::Operation as O;
    let launch = |tasks: Vec<m::TaskInfo>| -> Result<O, String> {
        let tasks = tasks.iter().map(convert::task_in).collect::<Result<_, _>>()?;
        Ok(O::Launch(v1::Launch { tasks, group: false }))
    };
    let op = match op.kind.as_str() {
        "LAUNCH" => launch(need(op.launch, "launch")?.task_infos)?,
        // All or nothing, as the rest of its ACCEPT (docs/mesos-api.md,
        // "Task groups").
        "LAUNCH_GROUP" => O::Launch(v1::Launch {
            tasks: group::launch_group_in(&need(op.launch_group, "launch_group")?)?,
            group: true,
        }),
        "RESERVE" => O::Reserve(v1::Reserve {
            resources: convert::resources_in(&need(op.reserve, "reserve")?.resources)?,
        }),
        "UNRESERVE" => O::Unreserve(v1::Unreserve {
            resources: convert::resources_in(&need(op.unreserve, "unreserve")?.resources)?,
        }),
        "CREATE" => O::Create(convert::create_in(&need(op.create, "create")?.volumes)?),
        "DESTROY" => O::Destroy(convert::destroy_in(&need(op.destroy, "destroy")?.volumes)?),
        other => {
            return Err(format!(
                "offer operation {other:?} is not supported by Mezzo's Mesos API \
                 (LAUNCH, LAUNCH_GROUP, RESERVE, UNRESERVE, CREATE and DESTROY are)"
            ));
        }
    };
    Ok(vec![v1::Operation { operation: Some(op) }])
}

/// A call (not SUBSCRIBE) as the core's; `None` for calls that change
/// nothing in Mezzo (answered 202 all the same, as Mesos does).
fn convert_call(fid: &FrameworkId, call: m::Call) -> Result<Option<Call>, String> {
    let framework_id = fid.to_string();
    let c = match call.kind.as_str() {
        "ACCEPT" => {
            let a = need(call.accept, "accept")?;
            let mut operations = Vec::new();
            for op in a.operations {
                operations.extend(operation(op)?);
            }
            api::accept(v1::AcceptRequest {
                framework_id,
                offer_ids: ids(&a.offer_ids),
                operations,
                filters: filters(a.filters.as_ref()),
            })
            .map_err(master_err)?
        }
        "DECLINE" => {
            let d = need(call.decline, "decline")?;
            api::decline(&v1::DeclineRequest {
                framework_id,
                offer_ids: ids(&d.offer_ids),
                filters: filters(d.filters.as_ref()),
            })
            .map_err(master_err)?
        }
        "REVIVE" => Call::Revive(api::roles(&call.revive.unwrap_or_default().roles).map_err(master_err)?),
        "SUPPRESS" => Call::Suppress(api::roles(&call.suppress.unwrap_or_default().roles).map_err(master_err)?),
        "KILL" => {
            let k = need(call.kill, "kill")?;
            let grace = k
                .kill_policy
                .and_then(|p| p.grace_period)
                .map(|g| convert::millis_in("kill: a grace period", &g))
                .transpose()?;
            api::kill(&v1::KillRequest {
                framework_id,
                task_id: k.task_id.value,
                kill_grace_period_ms: grace,
            })
            .map_err(master_err)?
        }
        "RECONCILE" => {
            let r = call.reconcile.unwrap_or_default();
            api::reconcile(&v1::ReconcileRequest {
                framework_id,
                tasks: r
                    .tasks
                    .into_iter()
                    .map(|t| v1::ReconcileTask {
                        task_id: t.task_id.value,
                        agent_id: t.agent_id.map(|a| a.value).unwrap_or_default(),
                    })
                    .collect(),
            })
            .map_err(master_err)?
        }
        "TEARDOWN" => Call::Teardown,
        "UPDATE_FRAMEWORK" => {
            let u = need(call.update_framework, "update_framework")?;
            if u.framework_info.id.as_ref().is_some_and(|i| i.value != framework_id) {
                return Err("'update_framework.framework_info.id' differs from 'framework_id'".into());
            }
            let info = convert::framework_in(&u.framework_info)?;
            let suppressed = api::roles(&u.suppressed_roles).map_err(master_err)?;
            Call::UpdateFramework(
                crate::api::validate_framework(Some(info)).map_err(master_err)?,
                Some(suppressed),
            )
        }
        // Mezzo sends no inverse offers; resource requests were never acted on by Mesos either.
        "ACCEPT_INVERSE_OFFERS" | "DECLINE_INVERSE_OFFERS" | "REQUEST" => return Ok(None),
        "MESSAGE" => {
            let x = need(call.message, "message")?;
            api::message(v1::MessageRequest {
                framework_id,
                agent_id: x.agent_id.value,
                executor_id: x.executor_id.value,
                data: convert::bytes_in("message.data", &x.data)?,
            })
            .map_err(master_err)?
        }
        "SHUTDOWN" => {
            let x = need(call.shutdown, "shutdown")?;
            api::shutdown_executor(&v1::ShutdownExecutorRequest {
                framework_id,
                agent_id: x.agent_id.value,
                executor_id: x.executor_id.value,
            })
            .map_err(master_err)?
        }
        "SUBSCRIBE" => return Err("SUBSCRIBE opens a stream: send it on its own connection".into()),
        "" | "UNKNOWN" => return Err("Expecting 'type' to be present".into()),
        other => return Err(format!("Unsupported call type {other:?}")),
    };
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn launch_group(executor: serde_json::Value) -> m::Operation {
        let task = |id: &str| json!({"name": id, "task_id": {"value": id}, "agent_id": {"value": "a"}});
        serde_json::from_value(json!({"type": "LAUNCH_GROUP", "launch_group": {
            "executor": executor, "task_group": {"tasks": [task("t1"), task("t2")]}}}))
        .expect("an operation")
    }

    fn launched(op: m::Operation) -> Result<v1::Launch, String> {
        match operation(op)?.pop().and_then(|o| o.operation) {
            Some(v1::operation::Operation::Launch(l)) => Ok(l),
            other => Err(format!("not a launch: {other:?}")),
        }
    }

    #[test]
    fn a_launch_group_is_one_group_launch_with_its_executor_on_every_task() {
        let custom = json!({"type": "CUSTOM", "executor_id": {"value": "ex"}, "command": {"value": "./ex"}});
        let l = launched(launch_group(custom)).expect("a group");
        assert!(l.group);
        assert_eq!(l.tasks.len(), 2);
        assert!(
            l.tasks
                .iter()
                .all(|t| t.executor.as_ref().is_some_and(|e| e.executor_id == "ex"))
        );
        // An executor without a type or a command is refused, not ignored.
        let e = launched(launch_group(json!({"executor_id": {"value": "ex"}}))).expect_err("refused");
        assert!(e.contains("neither a type nor a command"), "{e}");
    }

    #[test]
    fn the_tasks_of_a_refused_group_are_reported_as_a_group() {
        let call: m::Call = serde_json::from_value(json!({"type": "ACCEPT", "accept": {"offer_ids": [],
            "operations": [serde_json::to_value(launch_group(json!({"type": "DEFAULT",
                "executor_id": {"value": "d"}}))).expect("json")]}}))
        .expect("a call");
        let tasks = launched_tasks(&call);
        assert_eq!(tasks.len(), 2);
        assert!(tasks.iter().all(|(_, _, grouped)| *grouped));
    }
}
