//! The master's HTTP endpoints: `/health`, `/state` (JSON) and `/metrics`
//! (Prometheus text).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::core::view::StateView;
use crate::error::MasterError;
use crate::raft::{MemberChange, MembershipError, RaftHandle, RaftStatus};
use crate::runtime::{Command, Handle};

#[derive(Clone)]
struct Ctx {
    ops: crate::operator::Ops,
    handle: Handle,
    raft: RaftHandle,
}

pub fn router(handle: Handle, raft: RaftHandle, ops: crate::operator::Ops) -> Router {
    let operator = crate::operator::router(ops.clone());
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/state", get(state))
        .route("/metrics", get(metrics))
        .route("/raft", get(raft_status))
        .route("/raft/registry", get(raft_registry))
        .route("/raft/members", axum::routing::post(add_member))
        .route("/raft/members/{id}", axum::routing::delete(remove_member))
        .with_state(Ctx {
            ops: ops.clone(),
            handle: handle.clone(),
            raft,
        })
        .merge(operator)
        .merge(crate::http_roles::router(handle, &ops.auth))
}

/// Answers a request a follower cannot serve: 307 to the leader's same
/// path, or 503 while there is no leader.
pub(crate) fn to_leader(e: MasterError, path: &str) -> Response {
    match e {
        MasterError::NotLeader { leader: Some(ref l) } => {
            let location = format!("http://{l}{path}");
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
                e.to_string(),
            )
                .into_response()
        }
        other => unavailable(other),
    }
}

#[derive(serde::Deserialize)]
struct AddMember {
    address: String,
}

async fn add_member(
    State(c): State<Ctx>,
    body: Result<Json<AddMember>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(Json(b)) => member_change(&c, MemberChange::Add { address: b.address }, "/raft/members").await,
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("expected {{\"address\": \"host:port\"}}: {e}"),
        )
            .into_response(),
    }
}

async fn remove_member(State(c): State<Ctx>, axum::extract::Path(id): axum::extract::Path<String>) -> Response {
    match id.parse::<u64>() {
        Ok(id) => member_change(&c, MemberChange::Remove { id }, &format!("/raft/members/{id}")).await,
        Err(_) => (StatusCode::BAD_REQUEST, format!("master id {id:?} is not a number")).into_response(),
    }
}

/// Runs a membership change on the leader (a follower redirects with 307,
/// which keeps the method and body).
async fn member_change(c: &Ctx, change: MemberChange, path: &str) -> Response {
    match c.raft.change_members(change).await {
        Ok(id) => Json(serde_json::json!({ "id": id, "members": c.raft.members() })).into_response(),
        Err(MembershipError::NotLeader(leader)) => to_leader(MasterError::NotLeader { leader }, path),
        Err(e @ (MembershipError::BadAddress(_) | MembershipError::LastMember(_))) => {
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(e @ MembershipError::UnknownMember(_)) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
        Err(e @ (MembershipError::AlreadyMember { .. } | MembershipError::Busy | MembershipError::IsLeader(_))) => {
            (StatusCode::CONFLICT, e.to_string()).into_response()
        }
        Err(e @ MembershipError::Raft(_)) => unavailable(e),
    }
}

/// This master's applied registry (no redirect: for comparing replicas).
async fn raft_registry(State(c): State<Ctx>) -> Response {
    match c.raft.registry().await {
        Some(r) => Json(r).into_response(),
        None => unavailable("raft node stopped"),
    }
}

async fn raft_status(State(c): State<Ctx>) -> Response {
    match c.raft.status().await {
        Some(s) => Json(s).into_response(),
        None => unavailable("raft node stopped"),
    }
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
}

async fn state(State(c): State<Ctx>) -> Response {
    match c.handle.ask(Command::State).await.and_then(|r| r) {
        Ok(v) => Json(v).into_response(),
        Err(e) => to_leader(e, "/state"),
    }
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    reg.register(name, help, g);
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

/// Renders the metrics of this master: its Raft position always, the
/// cluster's figures when it leads.
pub fn render(
    view: Option<&StateView>,
    raft: Option<&RaftStatus>,
    tasks: &std::collections::BTreeMap<&'static str, u64>,
) -> String {
    let mut reg = Registry::with_prefix("mezzo_master");
    gauge(
        &mut reg,
        "elected",
        "1 when this master is the leader",
        i64::from(view.is_some()),
    );
    if let Some(r) = raft {
        gauge(&mut reg, "raft_term", "Current Raft term", r.term as i64);
        gauge(&mut reg, "raft_commit_index", "Raft commit index", r.commit as i64);
        gauge(&mut reg, "raft_applied_index", "Raft applied index", r.applied as i64);
        gauge(
            &mut reg,
            "raft_apply_lag",
            "Committed entries not yet applied",
            r.commit.saturating_sub(r.applied) as i64,
        );
        gauge(&mut reg, "raft_members", "Masters in the group", r.members.len() as i64);
    }
    let Some(view) = view else {
        return encode_registry(&reg);
    };
    gauge(
        &mut reg,
        "uptime_seconds",
        "Seconds since this master started leading",
        view.uptime_secs as i64,
    );
    let agents = Family::<Vec<(String, String)>, Gauge>::default();
    for a in &view.agents {
        let status = serde_json::to_value(a.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        agents.get_or_create(&vec![("status".into(), status)]).inc();
    }
    reg.register("agents", "Agents by status", agents);
    let fws = Family::<Vec<(String, String)>, Gauge>::default();
    for f in &view.frameworks {
        fws.get_or_create(&vec![("connected".into(), f.connected.to_string())])
            .inc();
    }
    reg.register("frameworks", "Frameworks by connection", fws);
    let by_state = Family::<Vec<(String, String)>, Gauge>::default();
    for (state, n) in tasks {
        by_state
            .get_or_create(&vec![("state".into(), (*state).to_owned())])
            .set(*n as i64);
    }
    reg.register(
        "tasks",
        "Known tasks by state (active and recently completed)",
        by_state,
    );
    let res = Family::<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (kind, r) in [
        ("total", &view.totals.total),
        ("used", &view.totals.used),
        ("offered", &view.totals.offered),
    ] {
        res.get_or_create(&vec![("resource".into(), "cpus".into()), ("kind".into(), kind.into())])
            .set(r.cpus.0 as f64 / 1000.0);
        res.get_or_create(&vec![("resource".into(), "mem".into()), ("kind".into(), kind.into())])
            .set(r.mem.0 as f64);
        res.get_or_create(&vec![("resource".into(), "disk".into()), ("kind".into(), kind.into())])
            .set(r.disk.0 as f64);
    }
    reg.register(
        "resources",
        "Cluster resources of active agents (cpus; mem and disk in MiB)",
        res,
    );
    usage_metrics(&mut reg, view);
    gauge(
        &mut reg,
        "offers_outstanding",
        "Offers not yet used",
        view.offers.len() as i64,
    );
    let c = &view.counters;
    counter(&mut reg, "offers_sent", "Offers sent to frameworks", c.offers_sent);
    counter(&mut reg, "offers_declined", "Offers declined", c.offers_declined);
    counter(&mut reg, "offers_rescinded", "Offers rescinded", c.offers_rescinded);
    counter(&mut reg, "offers_accepted", "Offers accepted", c.offers_accepted);
    counter(&mut reg, "tasks_launched", "Tasks sent to agents", c.tasks_launched);
    counter(
        &mut reg,
        "status_updates",
        "Status updates received from agents",
        c.status_updates,
    );
    counter(
        &mut reg,
        "acknowledgements",
        "Acknowledgements received from frameworks",
        c.acknowledgements,
    );
    counter(&mut reg, "invalid_calls", "Calls refused as invalid", c.invalid_calls);
    counter(&mut reg, "allocation_runs", "Allocator runs", c.allocation_runs);
    counter(
        &mut reg,
        "allocation_nanoseconds",
        "Time spent in the allocator",
        c.allocation_nanos,
    );
    encode_registry(&reg)
}

/// Per-agent container usage from the agents' latest reports.
fn usage_metrics(reg: &mut Registry, view: &StateView) {
    type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;
    let cpu = Family::<Vec<(String, String)>, F64Gauge>::default();
    let rss = Family::<Vec<(String, String)>, Gauge>::default();
    let cache = Family::<Vec<(String, String)>, Gauge>::default();
    let pids = Family::<Vec<(String, String)>, Gauge>::default();
    for a in view.agents.iter().filter(|a| a.usage.age_secs.is_some()) {
        let labels = vec![("agent_id".to_owned(), a.id.clone())];
        let u = &a.usage.total;
        cpu.get_or_create(&labels).set(u.cpu_time_secs);
        rss.get_or_create(&labels).set(u.memory_rss_bytes as i64);
        cache.get_or_create(&labels).set(u.memory_cache_bytes as i64);
        pids.get_or_create(&labels).set(u.pids as i64);
    }
    reg.register(
        "agent_container_cpu_seconds",
        "CPU time of the agent's live containers, as last reported",
        cpu,
    );
    reg.register(
        "agent_container_memory_rss_bytes",
        "Anonymous memory of the agent's live containers",
        rss,
    );
    reg.register(
        "agent_container_memory_cache_bytes",
        "Page cache of the agent's live containers",
        cache,
    );
    reg.register(
        "agent_container_pids",
        "Processes and threads in the agent's live containers",
        pids,
    );
}

fn encode_registry(reg: &Registry) -> String {
    let mut out = String::new();
    if encode(&mut out, reg).is_err() {
        out.clear();
    }
    out
}

/// Every master answers /metrics itself (a follower reports itself not
/// elected and its Raft position), so Prometheus can scrape all of them.
async fn metrics(State(c): State<Ctx>) -> Response {
    let view = c.handle.ask(Command::State).await.and_then(|r| r).ok();
    let tasks = c.handle.ask(Command::TaskCounts).await.unwrap_or_default();
    let raft = c.raft.status().await;
    let text = render(view.as_ref(), raft.as_ref(), &tasks);
    let text = crate::operator::metrics::append(text, &c.ops.handle).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
