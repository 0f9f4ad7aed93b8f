//! Mesos' operator reads: the v0 state JSON that Mesos tools and UIs poll
//! (`GET /master/state`, `/master/state.json`, `/state.json`, with agents
//! as `slaves`) and the v1 operator API (`POST /api/v1`): `GET_HEALTH`,
//! `GET_VERSION`, `GET_STATE`, `GET_AGENTS`, `GET_FRAMEWORKS`,
//! `GET_TASKS`, `GET_ROLES`, `GET_MASTER` answered in one JSON object,
//! and `SUBSCRIBE` as a RecordIO event stream.
//!
//! Every route needs the `read` right (401 without a credential unless
//! the master runs with `--anonymous-read`, 403 without the right).
//! A follower serves `GET_HEALTH` and `GET_VERSION` itself (as a Mesos
//! follower does) and answers everything else 307 to the leader's same
//! route, through the same kind of listener (the leader's
//! `--mesos-listen` address from the plain one), or 503 with no leader.
//!
//! The answers come from one read model on the owner task
//! ([`view::mesos_state`]); resources in v1 answers are written as a
//! framework with `RESERVATION_REFINEMENT` reads them. Documented in
//! `docs/operator-api.md` ("Mesos operator API").

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use mezzo_proto::mesos::executor;
use mezzo_proto::reservation::ReservedResources;
use mezzo_proto::resources::Resources;
use mezzo_proto::v1;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::convert::{self, Format};
use super::types as m;
use super::{MESOS_VERSION, MesosApi, bad_request, core_error, media, refused};
use crate::auth::Caller;
use crate::core::observe::ClusterEvent;
use crate::core::view::{self, MesosAgent, MesosFramework, MesosState, MesosTask};

/// How often a SUBSCRIBE stream hears a HEARTBEAT (Mesos' default).
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// How resources are written in v1 answers: reservations as a stack.
const ENDPOINT: Format = Format {
    refinement: true,
    multi_role: false,
    partition_aware: true,
    task_killing: true,
};

/// The operator calls Mezzo answers.
const CALLS: [&str; 10] = [
    "GET_HEALTH",
    "GET_VERSION",
    "GET_STATE",
    "GET_AGENTS",
    "GET_FRAMEWORKS",
    "GET_EXECUTORS",
    "GET_TASKS",
    "GET_ROLES",
    "GET_MASTER",
    "SUBSCRIBE",
];

/// Operator calls Mesos has that Mezzo does not answer here.
const UNSUPPORTED: [&str; 30] = [
    "GET_FLAGS",
    "GET_METRICS",
    "GET_LOGGING_LEVEL",
    "SET_LOGGING_LEVEL",
    "LIST_FILES",
    "READ_FILE",
    "GET_OPERATIONS",
    "GET_WEIGHTS",
    "UPDATE_WEIGHTS",
    "RESERVE_RESOURCES",
    "UNRESERVE_RESOURCES",
    "CREATE_VOLUMES",
    "DESTROY_VOLUMES",
    "GROW_VOLUME",
    "SHRINK_VOLUME",
    "GET_MAINTENANCE_STATUS",
    "GET_MAINTENANCE_SCHEDULE",
    "UPDATE_MAINTENANCE_SCHEDULE",
    "START_MAINTENANCE",
    "STOP_MAINTENANCE",
    "DRAIN_AGENT",
    "DEACTIVATE_AGENT",
    "REACTIVATE_AGENT",
    "GET_QUOTA",
    "UPDATE_QUOTA",
    "SET_QUOTA",
    "REMOVE_QUOTA",
    "TEARDOWN",
    "MARK_AGENT_GONE",
    "UNKNOWN",
];

// ---- the routes ----

/// `GET /master/state`, `/master/state.json`, `/state.json`.
pub(super) async fn state(
    State(api): State<MesosApi>,
    axum::Extension(caller): axum::Extension<Caller>,
    u: OriginalUri,
) -> Response {
    if let Err(r) = api.http.check_read(&caller) {
        return r;
    }
    let path = u.0.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    match api.http.handle().read(view::mesos_state).await {
        Ok(s) => {
            let master = api.master.clone();
            written(s, move |s| state_json(s, &master)).await
        }
        Err(e) => core_error(&api, e, &path).await,
    }
}

/// Writes an answer from a snapshot on the blocking pool: on a big
/// cluster that is long work, for neither the owner task nor an async
/// worker.
async fn written(mut s: MesosState, answer: impl FnOnce(&MesosState) -> Value + Send + 'static) -> Response {
    let body = tokio::task::spawn_blocking(move || {
        s.sort_tasks();
        serde_json::to_vec(&answer(&s))
    })
    .await;
    match body {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("writing the answer: {e}")).into_response()
}

/// `POST /api/v1`: one operator call.
pub(super) async fn call(
    State(api): State<MesosApi>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = api.http.check_read(&caller) {
        return r;
    }
    if let Err(r) = media::request_encoding(&headers, media::JSON) {
        return refused(r);
    }
    if let Err(r) = media::response_encoding(&headers, media::JSON) {
        return refused(r);
    }
    let call: Value = match super::parse(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad_request("Failed to convert JSON into Call protobuf: Expecting a JSON object"),
        Err(e) => return bad_request(format!("Failed to parse body into JSON: {e}")),
    };
    let kind = match call.get("type") {
        Some(Value::String(k)) => k.as_str(),
        Some(_) => return bad_request("Failed to convert JSON into Call protobuf: 'type' must be a string"),
        None => return bad_request("Failed to convert JSON into Call protobuf: Missing required fields: type"),
    };
    if !CALLS.contains(&kind) {
        return bad_request(if UNSUPPORTED.contains(&kind) {
            format!(
                "Operator call {kind} is not supported by Mezzo's Mesos API (supported: {}); \
                 see docs/operator-api.md for Mezzo's own routes",
                CALLS.join(", ")
            )
        } else {
            format!("Failed to convert JSON into Call protobuf: Failed to find enum for '{kind}'")
        });
    }
    match kind {
        "GET_HEALTH" => return answer(kind, json!({ "healthy": true })),
        "GET_VERSION" => return answer(kind, json!({ "version_info": version_info() })),
        _ => {}
    }
    if kind == "SUBSCRIBE" {
        return subscribe(api).await;
    }
    let s = match api.http.handle().read(view::mesos_state).await {
        Ok(s) => s,
        Err(e) => return core_error(&api, e, "/api/v1").await,
    };
    let (kind, master) = (kind.to_owned(), api.master.clone());
    written(s, move |s| {
        let body = match kind.as_str() {
            "GET_STATE" => get_state(s),
            "GET_AGENTS" => get_agents(s),
            "GET_FRAMEWORKS" => get_frameworks(s),
            "GET_EXECUTORS" => get_executors(s),
            "GET_TASKS" => get_tasks(s),
            "GET_ROLES" => get_roles(s),
            _ => get_master(s, &master),
        };
        response(&kind, body)
    })
    .await
}

/// `{"type": "GET_X", "get_x": body}`.
fn answer(kind: &str, body: Value) -> Response {
    Json(response(kind, body)).into_response()
}

fn response(kind: &str, body: Value) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), Value::String(kind.to_owned()));
    out.insert(kind.to_ascii_lowercase(), body);
    Value::Object(out)
}

fn version_info() -> Value {
    json!({
        "version": MESOS_VERSION,
        "build_date": "",
        "build_time": 0.0,
        "build_user": "",
    })
}

// ---- SUBSCRIBE ----

/// One operator event as a RecordIO record.
fn record(event: &Value) -> Bytes {
    super::recordio::frame(event.to_string().as_bytes())
}

/// `SUBSCRIBE`: `SUBSCRIBED` with the whole state, a `HEARTBEAT` at once,
/// then the cluster's changes and a `HEARTBEAT` every 15 s. A reader that
/// falls behind the event broadcast has its stream ended (Mesos has no
/// event for a gap): it subscribes again and gets the state afresh.
async fn subscribe(api: MesosApi) -> Response {
    // Follow first, then read the state: no change falls in between.
    let mut rx = api.http.handle().events();
    let mut s = match api.http.handle().read(view::mesos_state).await {
        Ok(s) => s,
        Err(e) => return core_error(&api, e, "/api/v1").await,
    };
    s.sort_tasks();
    let subscribed = json!({
        "type": "SUBSCRIBED",
        "subscribed": {
            "get_state": get_state(&s),
            "heartbeat_interval_seconds": HEARTBEAT.as_secs_f64(),
        },
    });
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    let handle = api.http.handle().clone();
    tokio::spawn(async move {
        let heartbeat = record(&json!({ "type": "HEARTBEAT" }));
        if tx.send(Ok(record(&subscribed))).await.is_err() || tx.send(Ok(heartbeat.clone())).await.is_err() {
            return;
        }
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        loop {
            let ev = tokio::select! {
                _ = beat.tick() => {
                    if tx.send(Ok(heartbeat.clone())).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = tx.closed() => return,
                ev = rx.recv() => ev,
            };
            let ev = match ev {
                Ok(ev) => ev,
                Err(RecvError::Lagged(_) | RecvError::Closed) => return,
            };
            let Ok(out) = handle.read(move |m| event_out(m, &ev)).await else {
                // No longer the leader: the reader goes to the new one.
                return;
            };
            if let Some(out) = out
                && tx.send(Ok(record(&out))).await.is_err()
            {
                return;
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(out)),
    )
        .into_response()
}

/// The operator event for one of the cluster's, looked up on the owner
/// task; `None` for what Mesos has no event for (or what is already
/// gone).
fn event_out(core: &crate::core::Master, ev: &ClusterEvent) -> Option<Value> {
    Some(match ev {
        ClusterEvent::TaskAdded {
            framework_id, task_id, ..
        } => {
            let t = view::mesos_task(core, framework_id, task_id)?;
            json!({ "type": "TASK_ADDED", "task_added": { "task": task_v1(&t) } })
        }
        ClusterEvent::TaskUpdated {
            framework_id,
            task_id,
            agent_id,
            state,
            ..
        } => {
            let t = view::mesos_task(core, framework_id, task_id);
            let status = t
                .as_ref()
                .and_then(|t| t.last_status.as_ref())
                .filter(|s| s.state == state_proto(state))
                .map(|s| serde_json::to_value(convert::status_out(&strip(s), ENDPOINT)).unwrap_or(Value::Null))
                .unwrap_or_else(|| {
                    json!({
                        "task_id": { "value": task_id },
                        "agent_id": { "value": agent_id },
                        "state": state,
                        "timestamp": mezzo_proto::clock::unix_now(),
                    })
                });
            json!({
                "type": "TASK_UPDATED",
                "task_updated": {
                    "framework_id": { "value": framework_id },
                    "status": status,
                    "state": t.map_or(Value::from(*state), |t| Value::from(t.state.as_ref())),
                },
            })
        }
        ClusterEvent::AgentAdded { agent_id, .. } => {
            let a = view::mesos_agent(core, agent_id)?;
            json!({ "type": "AGENT_ADDED", "agent_added": { "agent": agent_v1(&a) } })
        }
        ClusterEvent::AgentRemoved { agent_id, .. } => {
            json!({ "type": "AGENT_REMOVED", "agent_removed": { "agent_id": { "value": agent_id } } })
        }
        ClusterEvent::FrameworkAdded { framework_id, .. } => {
            let f = view::mesos_framework(core, framework_id)?;
            json!({ "type": "FRAMEWORK_ADDED", "framework_added": { "framework": framework_v1(&f) } })
        }
        ClusterEvent::FrameworkRemoved { framework_id } => {
            let info = match view::mesos_removed_framework(core, framework_id) {
                Some(f) => removed_info(&f),
                None => json!({ "id": { "value": framework_id }, "name": "", "user": "" }),
            };
            json!({ "type": "FRAMEWORK_REMOVED", "framework_removed": { "framework_info": info } })
        }
        ClusterEvent::AgentDraining { .. } | ClusterEvent::LeaderChanged { .. } => return None,
    })
}

fn state_proto(name: &str) -> i32 {
    v1::TaskState::from_str_name(name).map_or(0, |s| s as i32)
}

/// A status as the master shows it: no uuid to acknowledge (Mesos strips
/// `data` too; Mezzo's statuses carry none).
fn strip(s: &v1::TaskStatus) -> v1::TaskStatus {
    v1::TaskStatus {
        uuid: Vec::new(),
        ..s.clone()
    }
}

// ---- v1 shapes ----

/// Resources in full v1 form, each reserved part with its role.
fn resources_v1(r: &ReservedResources) -> Vec<m::Resource> {
    r.to_proto()
        .iter()
        .map(|x| convert::resource_out(x, ENDPOINT, ""))
        .collect()
}

/// Unreserved resources (used, offered) in full v1 form.
fn plain_v1(r: &Resources) -> Vec<m::Resource> {
    resources_v1(&ReservedResources::unreserved(r.clone()))
}

fn id(value: &str) -> Value {
    json!({ "value": value })
}

fn time_info(secs: f64) -> Value {
    json!({ "nanoseconds": (secs * 1e9) as i64 })
}

/// `host:port` split, as Mesos' `AgentInfo` has them.
fn host_port(address: &str, fallback_host: &str) -> (String, u16) {
    match address.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']).to_owned(), p.parse().unwrap_or(5051)),
        None => (fallback_host.to_owned(), 5051),
    }
}

fn attributes_v1(attrs: &[(String, String)]) -> Vec<m::Attribute> {
    attrs
        .iter()
        .map(|(name, value)| m::Attribute {
            name: name.clone(),
            kind: "TEXT".into(),
            text: Some(m::Text { value: value.clone() }),
            scalar: None,
        })
        .collect()
}

/// `GetAgents.Agent`.
fn agent_v1(a: &MesosAgent) -> Value {
    let (_, port) = host_port(&a.http_address, &a.hostname);
    let mut info = json!({
        "hostname": a.hostname,
        "port": port,
        "id": id(&a.id),
        "resources": resources_v1(&a.total),
    });
    if !a.attributes.is_empty() {
        info["attributes"] = json!(attributes_v1(&a.attributes));
    }
    let mut out = json!({
        "agent_info": info,
        "active": a.status == crate::core::AgentStatus::Active,
        "deactivated": false,
        "version": MESOS_VERSION,
        "pid": format!("slave(1)@{}", a.http_address),
        "total_resources": resources_v1(&a.total),
        "capabilities": [{ "type": "MULTI_ROLE" }, { "type": "RESERVATION_REFINEMENT" }],
    });
    // Empty lists are left out, as Mesos leaves them out.
    if !a.used.is_empty() {
        out["allocated_resources"] = json!(plain_v1(&a.used));
    }
    if !a.offered.is_empty() {
        out["offered_resources"] = json!(plain_v1(&a.offered));
    }
    out
}

/// `FrameworkInfo` of a registered framework: Mezzo's frameworks are all
/// multi-role.
fn framework_info_v1(f: &MesosFramework) -> Value {
    let i = &f.info;
    let mut out = json!({
        "user": i.user,
        "name": i.name,
        "id": id(&f.id),
        "failover_timeout": i.failover_timeout_secs,
        "checkpoint": true,
        "roles": i.roles,
        "capabilities": [{ "type": "MULTI_ROLE" }, { "type": "RESERVATION_REFINEMENT" }],
    });
    if !i.hostname.is_empty() {
        out["hostname"] = json!(i.hostname);
    }
    if !i.principal.is_empty() {
        out["principal"] = json!(i.principal);
    }
    out
}

fn removed_info(f: &crate::history::RemovedFramework) -> Value {
    let mut out = json!({
        "user": "",
        "name": f.name,
        "id": id(f.id.as_str()),
        "roles": f.roles,
    });
    if !f.principal.is_empty() {
        out["principal"] = json!(f.principal);
    }
    out
}

fn offer_v1(o: &view::OfferView) -> Value {
    json!({
        "id": id(&o.id),
        "framework_id": id(&o.framework_id),
        "agent_id": id(&o.agent_id),
        "hostname": o.agent_hostname,
        "resources": resources_v1(&o.resources_by_role),
        "allocation_info": { "role": o.role },
    })
}

/// `GetFrameworks.Framework`.
fn framework_v1(f: &MesosFramework) -> Value {
    let mut out = json!({
        "framework_info": framework_info_v1(f),
        "active": f.connected,
        "connected": f.connected,
        "recovered": false,
        "registered_time": time_info(f.registered_at),
    });
    if !f.offers.is_empty() {
        out["offers"] = json!(f.offers.iter().map(offer_v1).collect::<Vec<_>>());
    }
    if !f.allocated.is_empty() {
        out["allocated_resources"] = json!(plain_v1(&f.allocated));
    }
    if !f.offered.is_empty() {
        out["offered_resources"] = json!(plain_v1(&f.offered));
    }
    out
}

/// `Task`, with its status history (oldest first) and, last, its newest
/// status in full.
fn task_v1(t: &MesosTask) -> Value {
    let mut statuses: Vec<Value> = t
        .statuses
        .iter()
        .map(|s| {
            let mut st = json!({
                "task_id": id(&t.id),
                "state": s.state,
                "agent_id": id(&t.agent_id),
                "timestamp": s.at,
            });
            if !s.message.is_empty() {
                st["message"] = json!(s.message);
            }
            st
        })
        .collect();
    if let Some(last) = &t.last_status
        && let Ok(v) = serde_json::to_value(convert::status_out(&strip(last), ENDPOINT))
    {
        // The history's own record of the newest update gives way to it.
        if statuses.last().is_some_and(|s| s["state"] == v["state"]) {
            statuses.pop();
        }
        statuses.push(v);
    }
    let mut out = json!({
        "name": t.name,
        "task_id": id(&t.id),
        "framework_id": id(&t.framework_id),
        "agent_id": id(&t.agent_id),
        "state": t.state,
        "resources": t.resources.to_proto().iter()
            .map(|r| convert::resource_out(r, Format { multi_role: true, ..ENDPOINT }, &t.role))
            .collect::<Vec<_>>(),
    });
    if !t.executor_id.is_empty() {
        out["executor_id"] = id(&t.executor_id);
    }
    if !statuses.is_empty() {
        out["statuses"] = json!(statuses);
    }
    if !t.labels.is_empty() {
        out["labels"] =
            json!({ "labels": t.labels.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect::<Vec<_>>() });
    }
    out
}

fn get_agents(s: &MesosState) -> Value {
    json!({ "agents": s.agents.iter().map(agent_v1).collect::<Vec<_>>() })
}

fn get_frameworks(s: &MesosState) -> Value {
    let mut out = json!({ "frameworks": s.frameworks.iter().map(framework_v1).collect::<Vec<_>>() });
    if !s.completed_frameworks.is_empty() {
        out["completed_frameworks"] = json!(
            s.completed_frameworks
                .iter()
                .map(|f| json!({
                    "framework_info": removed_info(f),
                    "active": false,
                    "connected": false,
                    "recovered": false,
                    "unregistered_time": time_info(f.removed_at),
                }))
                .collect::<Vec<_>>()
        );
    }
    out
}

fn get_tasks(s: &MesosState) -> Value {
    let tasks: Vec<Value> = (s.frameworks.iter())
        .flat_map(|f| f.tasks.iter())
        .map(|t| task_v1(&t))
        .collect();
    let completed: Vec<Value> = (s.frameworks.iter())
        .flat_map(|f| f.completed_tasks.iter())
        .map(|t| task_v1(&t))
        .collect();
    let mut out = json!({});
    if !tasks.is_empty() {
        out["tasks"] = json!(tasks);
    }
    if !completed.is_empty() {
        out["completed_tasks"] = json!(completed);
    }
    out
}

fn get_state(s: &MesosState) -> Value {
    json!({
        "get_tasks": get_tasks(s),
        "get_executors": get_executors(s),
        "get_frameworks": get_frameworks(s),
        "get_agents": get_agents(s),
    })
}

/// Custom executors (`GetExecutors`: each with its agent).
fn get_executors(s: &MesosState) -> Value {
    let executors: Vec<Value> = (s.executors.iter())
        .map(|e| {
            let info = executor::executor_out(&e.info, &e.framework_id);
            json!({ "executor_info": info, "agent_id": id(&e.agent_id) })
        })
        .collect();
    if executors.is_empty() {
        return json!({});
    }
    json!({ "executors": executors })
}

/// A framework's executors in the v0 state JSON.
fn executors_v0(s: &MesosState, framework_id: &str) -> Vec<Value> {
    (s.executors.iter())
        .filter(|e| e.framework_id == framework_id)
        .map(|e| {
            json!({
                "executor_id": e.info.executor_id,
                "name": e.info.name,
                "framework_id": e.framework_id,
                "slave_id": e.agent_id,
                "role": e.role,
                "resources": summary(&e.resources.total()),
            })
        })
        .collect()
}

fn get_roles(s: &MesosState) -> Value {
    let mut roles: Vec<Value> = s
        .allocation
        .roles
        .iter()
        .map(|r| {
            let mut role = json!({ "name": r.role, "weight": r.weight });
            if !r.frameworks.is_empty() {
                role["frameworks"] = json!(r.frameworks.iter().map(|f| id(f)).collect::<Vec<_>>());
            }
            if !r.allocated.is_empty() {
                role["resources"] = json!(plain_v1(&r.allocated));
            }
            role
        })
        .collect();
    // Mesos always lists the default role.
    if !s.allocation.roles.iter().any(|r| r.role == "*") {
        roles.insert(0, json!({ "name": "*", "weight": 1.0 }));
    }
    json!({ "roles": roles })
}

fn get_master(s: &MesosState, master: &m::MasterInfo) -> Value {
    json!({
        "master_info": master,
        "start_time": s.start_time,
        "elected_time": s.start_time,
    })
}

// ---- the v0 state JSON ----

/// Resources as Mesos' state JSON sums them up: `cpus`, `gpus`, `mem`,
/// `disk` always, other scalars by name, ports as `"[a-b, c-d]"`.
pub(crate) fn summary(r: &Resources) -> Value {
    let mut out = Map::new();
    out.insert("cpus".into(), json!(r.cpus.0 as f64 / 1000.0));
    out.insert("gpus".into(), json!(0.0));
    out.insert("mem".into(), json!(r.mem.0 as f64));
    out.insert("disk".into(), json!(r.disk.0 as f64));
    for (name, v) in &r.scalars {
        out.insert(name.clone(), json!(*v as f64 / 1000.0));
    }
    if !r.ports.is_empty() {
        let ranges: Vec<String> = r.ports.iter().map(|x| format!("{}-{}", x.start(), x.end())).collect();
        out.insert("ports".into(), json!(format!("[{}]", ranges.join(", "))));
    }
    Value::Object(out)
}

fn task_v0(t: &MesosTask) -> Value {
    let mut statuses: Vec<Value> = (t.statuses.iter())
        .map(|s| json!({ "state": s.state, "timestamp": s.at }))
        .collect();
    if statuses.is_empty()
        && let Some(s) = &t.last_status
    {
        statuses.push(json!({ "state": t.state, "timestamp": s.timestamp }));
    }
    let mut out = json!({
        "id": t.id,
        "name": t.name,
        "framework_id": t.framework_id,
        "executor_id": t.executor_id,
        "slave_id": t.agent_id,
        "state": t.state,
        "resources": summary(&t.resources.total()),
        "role": t.role,
        "statuses": statuses,
    });
    if !t.labels.is_empty() {
        out["labels"] = json!(
            t.labels
                .iter()
                .map(|(k, v)| json!({ "key": k, "value": v }))
                .collect::<Vec<_>>()
        );
    }
    out
}

fn slave_v0(a: &MesosAgent) -> Value {
    let (_, port) = host_port(&a.http_address, &a.hostname);
    let reserved: Map<String, Value> = (a.total.reserved.iter())
        .map(|(role, r)| (role.to_string(), summary(r)))
        .collect();
    json!({
        "id": a.id,
        "hostname": a.hostname,
        "port": port,
        "pid": format!("slave(1)@{}", a.http_address),
        "attributes": a.attributes.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<_, _>>(),
        "resources": summary(&a.total.total()),
        "used_resources": summary(&a.used),
        "offered_resources": summary(&a.offered),
        "reserved_resources": reserved,
        "unreserved_resources": summary(&a.total.unreserved),
        "active": a.status == crate::core::AgentStatus::Active,
        "deactivated": false,
        "version": MESOS_VERSION,
        "capabilities": ["MULTI_ROLE", "RESERVATION_REFINEMENT"],
    })
}

fn framework_v0(f: &MesosFramework, executors: Vec<Value>) -> Value {
    let i = &f.info;
    let mut used_and_offered = f.allocated.clone();
    used_and_offered.add(&f.offered);
    let mut out = json!({
        "id": f.id,
        "name": i.name,
        "user": i.user,
        "hostname": i.hostname,
        "webui_url": "",
        "capabilities": ["MULTI_ROLE", "RESERVATION_REFINEMENT"],
        "active": f.connected,
        "connected": f.connected,
        "recovered": false,
        "failover_timeout": i.failover_timeout_secs,
        "checkpoint": true,
        "registered_time": f.registered_at,
        "unregistered_time": 0.0,
        "roles": i.roles,
        "used_resources": summary(&f.allocated),
        "offered_resources": summary(&f.offered),
        "resources": summary(&used_and_offered),
        "tasks": f.tasks.iter().map(|t| task_v0(&t)).collect::<Vec<_>>(),
        "unreachable_tasks": [],
        "completed_tasks": f.completed_tasks.iter().map(|t| task_v0(&t)).collect::<Vec<_>>(),
        "offers": f.offers.iter().map(|o| json!({
            "id": o.id,
            "framework_id": o.framework_id,
            "slave_id": o.agent_id,
            "allocation_info": { "role": o.role },
            "resources": summary(&o.resources),
        })).collect::<Vec<_>>(),
        "executors": executors,
    });
    // Tools written before multi-role read `role`: given when there is one.
    if let [role] = i.roles.as_slice() {
        out["role"] = json!(role);
    }
    if !i.principal.is_empty() {
        out["principal"] = json!(i.principal);
    }
    out
}

fn completed_framework_v0(f: &crate::history::RemovedFramework) -> Value {
    let zero = summary(&Resources::default());
    let mut out = json!({
        "id": f.id.as_str(),
        "name": f.name,
        "user": "",
        "active": false,
        "connected": false,
        "recovered": false,
        "unregistered_time": f.removed_at,
        "roles": f.roles,
        "used_resources": zero,
        "offered_resources": zero,
        "resources": zero,
        "tasks": [],
        "unreachable_tasks": [],
        "completed_tasks": [],
        "offers": [],
        "executors": [],
    });
    if !f.principal.is_empty() {
        out["principal"] = json!(f.principal);
    }
    out
}

/// The v0 state JSON (`/master/state`); `master` is this master, the
/// leader (a follower redirects before this is written).
pub(crate) fn state_json(s: &MesosState, master: &m::MasterInfo) -> Value {
    let pid = master.pid.clone().unwrap_or_default();
    let hostname = master.hostname.clone().unwrap_or_default();
    let active = (s.agents.iter())
        .filter(|a| a.status == crate::core::AgentStatus::Active)
        .count();
    let unreachable = (s.agents.iter())
        .filter(|a| a.status == crate::core::AgentStatus::Unreachable)
        .count();
    json!({
        "version": MESOS_VERSION,
        "build_date": "",
        "build_time": 0.0,
        "build_user": "",
        "start_time": s.start_time,
        "elected_time": s.start_time,
        "id": s.master_id,
        "pid": pid,
        "hostname": hostname,
        "capabilities": ["AGENT_UPDATE"],
        "activated_slaves": active,
        "deactivated_slaves": s.agents.len() - active,
        "unreachable_slaves": unreachable,
        "leader": pid,
        "leader_info": {
            "id": s.master_id,
            "pid": pid,
            "port": master.port,
            "hostname": hostname,
        },
        "flags": {},
        "slaves": s.agents.iter().map(slave_v0).collect::<Vec<_>>(),
        "recovered_slaves": [],
        "frameworks": (s.frameworks.iter())
            .map(|f| framework_v0(f, executors_v0(s, &f.id)))
            .collect::<Vec<_>>(),
        "completed_frameworks": s.completed_frameworks.iter().map(completed_framework_v0).collect::<Vec<_>>(),
        "orphan_tasks": [],
        "unregistered_frameworks": [],
    })
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::BTreeMap;

    use super::*;
    use crate::allocator::RoleView;
    use crate::core::AgentStatus;
    use crate::core::observe::StatusEntry;

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().expect("an object").keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    fn res(text: &str) -> Resources {
        Resources::parse(text).expect("resources")
    }

    fn sample() -> MesosState {
        let mut total = ReservedResources::unreserved(res("cpus:3;mem:1024;disk:2048;ports:[31000-31009]"));
        total.reserved.insert(
            mezzo_proto::reservation::Role::parse("web").expect("role"),
            res("cpus:1;mem:512"),
        );
        let task = MesosTask {
            id: "t1".into(),
            name: "sleeper".into(),
            framework_id: "f1".into(),
            agent_id: "a1".into(),
            executor_id: String::new(),
            state: Cow::Borrowed("TASK_RUNNING"),
            role: "web".into(),
            resources: ReservedResources::unreserved(res("cpus:0.5;mem:64")),
            statuses: vec![
                StatusEntry {
                    state: Cow::Borrowed("TASK_STAGING"),
                    reason: Cow::Borrowed(""),
                    message: Cow::Borrowed("launched"),
                    at: 10.0,
                },
                StatusEntry {
                    state: Cow::Borrowed("TASK_RUNNING"),
                    reason: Cow::Borrowed(""),
                    message: Cow::Borrowed(""),
                    at: 11.0,
                },
            ],
            last_status: Some(v1::TaskStatus {
                task_id: "t1".into(),
                agent_id: "a1".into(),
                state: v1::TaskState::TaskRunning as i32,
                timestamp: 11.0,
                uuid: vec![1, 2, 3],
                ..Default::default()
            }),
            labels: vec![("team".into(), "blue".into())],
        };
        MesosState {
            master_id: "m1".into(),
            start_time: 5.0,
            agents: vec![MesosAgent {
                id: "a1".into(),
                hostname: "node1".into(),
                http_address: "10.0.0.1:5052".into(),
                status: AgentStatus::Active,
                total,
                used: res("cpus:0.5;mem:64"),
                offered: Resources::default(),
                attributes: vec![("rack".into(), "r1".into())],
            }],
            frameworks: vec![MesosFramework {
                id: "f1".into(),
                info: v1::FrameworkInfo {
                    name: "fw".into(),
                    user: "nobody".into(),
                    principal: "user:fw".into(),
                    roles: vec!["web".into()],
                    failover_timeout_secs: 60.0,
                    hostname: String::new(),
                },
                connected: true,
                registered_at: 7.5,
                allocated: res("cpus:0.5;mem:64"),
                offered: Resources::default(),
                tasks: vec![task].into(),
                completed_tasks: Default::default(),
                offers: Vec::new(),
            }],
            completed_frameworks: Vec::new(),
            executors: Vec::new(),
            allocation: view::AllocationView {
                roles: vec![RoleView {
                    role: "web".into(),
                    weight: 2.0,
                    guarantee: Resources::default(),
                    limit: Resources::default(),
                    allocated: res("cpus:0.5;mem:64"),
                    offered: Resources::default(),
                    dominant_share: 0.1,
                    frameworks: vec!["f1".into()],
                }],
                weights: BTreeMap::new(),
                quotas: BTreeMap::new(),
                reservations: BTreeMap::new(),
            },
        }
    }

    fn master() -> m::MasterInfo {
        super::super::master_info("m1", "10.0.0.9:5050".parse().expect("addr"), "master1")
    }

    #[test]
    fn the_v0_state_has_the_fields_mesos_tools_read() {
        let s = state_json(&sample(), &master());
        for k in [
            "version",
            "id",
            "pid",
            "hostname",
            "leader",
            "leader_info",
            "start_time",
            "elected_time",
            "activated_slaves",
            "slaves",
            "frameworks",
            "completed_frameworks",
            "orphan_tasks",
            "unregistered_frameworks",
        ] {
            assert!(s.get(k).is_some(), "{k} missing: {s}");
        }
        assert_eq!(s["version"], "1.11.0");
        assert_eq!(s["pid"], "master@10.0.0.9:5050");
        assert_eq!(s["leader"], s["pid"]);
        assert_eq!(keys(&s["leader_info"]), ["hostname", "id", "pid", "port"]);
        assert_eq!(s["activated_slaves"], 1);

        let slave = &s["slaves"][0];
        assert_eq!(slave["id"], "a1");
        assert_eq!(slave["port"], 5052);
        assert_eq!(slave["pid"], "slave(1)@10.0.0.1:5052");
        assert_eq!(slave["attributes"], json!({ "rack": "r1" }));
        assert_eq!(
            slave["resources"],
            json!({ "cpus": 4.0, "gpus": 0.0, "mem": 1536.0, "disk": 2048.0, "ports": "[31000-31009]" })
        );
        assert_eq!(slave["unreserved_resources"]["cpus"], 3.0);
        assert_eq!(slave["reserved_resources"]["web"]["mem"], 512.0);
        assert_eq!(slave["used_resources"]["cpus"], 0.5);
        assert_eq!(slave["active"], true);

        let f = &s["frameworks"][0];
        for k in [
            "id",
            "name",
            "user",
            "principal",
            "role",
            "roles",
            "active",
            "connected",
            "failover_timeout",
            "registered_time",
            "used_resources",
            "offered_resources",
            "resources",
            "tasks",
            "completed_tasks",
            "offers",
        ] {
            assert!(f.get(k).is_some(), "{k} missing: {f}");
        }
        assert_eq!(f["role"], "web");
        let t = &f["tasks"][0];
        assert_eq!(
            keys(t),
            [
                "executor_id",
                "framework_id",
                "id",
                "labels",
                "name",
                "resources",
                "role",
                "slave_id",
                "state",
                "statuses"
            ]
        );
        assert_eq!(t["executor_id"], "");
        assert_eq!(t["slave_id"], "a1");
        assert_eq!(t["resources"]["cpus"], 0.5);
        assert_eq!(
            t["statuses"],
            json!([{ "state": "TASK_STAGING", "timestamp": 10.0 }, { "state": "TASK_RUNNING", "timestamp": 11.0 }])
        );
    }

    /// Custom executors are listed in GET_STATE's `get_executors` with
    /// their agent, under their framework in the v0 state, and a task
    /// names its executor in both.
    #[test]
    fn custom_executors_are_listed_with_their_agent_and_tasks() {
        let mut s = sample();
        s.executors.push(view::MesosExecutor {
            agent_id: "a1".into(),
            framework_id: "f1".into(),
            info: v1::ExecutorInfo {
                executor_id: "e1".into(),
                name: "echo".into(),
                ..Default::default()
            },
            role: "web".into(),
            resources: ReservedResources::unreserved(res("cpus:0.1;mem:32")),
        });
        let mut t = s.frameworks[0].tasks.iter().next().expect("task").into_owned();
        t.executor_id = "e1".into();
        s.frameworks[0].tasks = vec![t].into();
        let v1 = get_state(&s);
        let e = &v1["get_executors"]["executors"][0];
        assert_eq!(e["agent_id"], json!({ "value": "a1" }), "{v1}");
        assert_eq!(e["executor_info"]["executor_id"], json!({ "value": "e1" }));
        assert_eq!(e["executor_info"]["framework_id"], json!({ "value": "f1" }));
        assert_eq!(v1["get_tasks"]["tasks"][0]["executor_id"], json!({ "value": "e1" }));
        let v0 = state_json(&s, &master());
        let f = &v0["frameworks"][0];
        assert_eq!(f["executors"][0]["executor_id"], "e1", "{f}");
        assert_eq!(f["executors"][0]["slave_id"], "a1");
        assert_eq!(f["executors"][0]["resources"]["cpus"], 0.1);
        assert_eq!(f["tasks"][0]["executor_id"], "e1");
        // Nothing to list: no `executors` at all, as Mesos leaves it out.
        assert_eq!(get_state(&sample())["get_executors"], json!({}));
    }

    #[test]
    fn ports_in_a_summary_are_a_range_list() {
        let r = summary(&res("ports:[1-2,5-9]"));
        assert_eq!(r["ports"], "[1-2, 5-9]");
        assert_eq!(r["cpus"], 0.0);
    }

    #[test]
    fn v1_answers_use_agent_naming_and_full_resources() {
        let s = sample();
        let agents = response("GET_AGENTS", get_agents(&s));
        assert_eq!(keys(&agents), ["get_agents", "type"]);
        let a = &agents["get_agents"]["agents"][0];
        assert_eq!(
            keys(a),
            [
                "active",
                "agent_info",
                "allocated_resources",
                "capabilities",
                "deactivated",
                "pid",
                "total_resources",
                "version"
            ]
        );
        assert_eq!(
            keys(&a["agent_info"]),
            ["attributes", "hostname", "id", "port", "resources"]
        );
        assert_eq!(a["agent_info"]["id"], json!({ "value": "a1" }));
        let reserved = a["total_resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["reservations"].is_array())
            .expect("a reserved resource");
        assert_eq!(reserved["reservations"][0]["role"], "web");
        assert_eq!(reserved["reservations"][0]["type"], "STATIC");
        let ports = a["total_resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["name"] == "ports")
            .expect("ports");
        assert_eq!(ports["type"], "RANGES");
        assert_eq!(ports["ranges"]["range"][0], json!({ "begin": 31000, "end": 31009 }));

        let fws = get_frameworks(&s);
        let f = &fws["frameworks"][0];
        assert_eq!(
            keys(f),
            [
                "active",
                "allocated_resources",
                "connected",
                "framework_info",
                "recovered",
                "registered_time"
            ]
        );
        assert_eq!(f["registered_time"], json!({ "nanoseconds": 7_500_000_000_i64 }));
        assert_eq!(f["framework_info"]["principal"], "user:fw");
        assert_eq!(f["framework_info"]["roles"], json!(["web"]));

        let tasks = get_tasks(&s);
        let t = &tasks["tasks"][0];
        assert_eq!(
            keys(t),
            [
                "agent_id",
                "framework_id",
                "labels",
                "name",
                "resources",
                "state",
                "statuses",
                "task_id"
            ]
        );
        assert_eq!(t["resources"][0]["allocation_info"], json!({ "role": "web" }));
        let statuses = t["statuses"].as_array().expect("statuses");
        assert_eq!(statuses.len(), 2, "{t}");
        let last = &statuses[1];
        assert_eq!(last["state"], "TASK_RUNNING");
        assert!(last.get("uuid").is_none(), "the master shows no uuid: {last}");

        let st = get_state(&s);
        assert_eq!(
            keys(&st),
            ["get_agents", "get_executors", "get_frameworks", "get_tasks"]
        );

        let roles = get_roles(&s);
        assert_eq!(roles["roles"][0], json!({ "name": "*", "weight": 1.0 }));
        assert_eq!(roles["roles"][1]["name"], "web");
        assert_eq!(roles["roles"][1]["frameworks"], json!([{ "value": "f1" }]));

        let gm = get_master(&s, &master());
        assert_eq!(keys(&gm), ["elected_time", "master_info", "start_time"]);
        assert_eq!(gm["master_info"]["version"], "1.11.0");
    }

    #[test]
    fn accept_allows_json_or_anything() {
        let json_accepted = |h: &HeaderMap| media::response_encoding(h, media::JSON);
        let mut h = HeaderMap::new();
        assert!(json_accepted(&h).is_ok());
        h.insert(header::ACCEPT, "application/json".parse().expect("header"));
        assert!(json_accepted(&h).is_ok());
        h.insert(header::ACCEPT, "application/x-protobuf".parse().expect("header"));
        assert!(json_accepted(&h).is_err());
        h.insert(
            header::ACCEPT,
            "application/x-protobuf, */*;q=0.1".parse().expect("header"),
        );
        assert!(json_accepted(&h).is_ok());
    }
}
