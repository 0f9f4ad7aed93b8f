//! The agent's HTTP endpoint: `/health`, `/state` (JSON), `/metrics`.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use mezzo_proto::ids::AgentId;
use mezzo_proto::resources::Resources;
use serde::Serialize;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::status::StatusHandle;
use crate::task::table::TableHandle;

#[derive(Clone)]
pub struct HttpState {
    pub table: TableHandle,
    pub status: StatusHandle,
    pub agent_id: watch::Receiver<Option<AgentId>>,
    pub master: watch::Receiver<Option<String>>,
    pub hostname: String,
    pub resources: Resources,
    pub metrics: Metrics,
}

#[derive(Serialize)]
struct AgentState {
    agent_id: Option<String>,
    hostname: String,
    master: Option<String>,
    resources: Resources,
    tasks: Vec<TaskState>,
    /// The custom executors running here.
    executors: Vec<ExecutorState>,
    pending_updates: usize,
}

#[derive(Serialize)]
struct ExecutorState {
    framework_id: String,
    executor_id: String,
    name: String,
    state: &'static str,
    resources: Resources,
    /// Its tasks still in the table.
    tasks: Vec<String>,
    sandbox: String,
}

#[derive(Serialize)]
struct TaskState {
    framework_id: String,
    task_id: String,
    name: String,
    state: &'static str,
    resources: Resources,
    sandbox: String,
    /// Measured usage of the task's container (isolated tasks).
    usage: Option<UsageView>,
}

#[derive(Serialize)]
struct UsageView {
    cpu_seconds: f64,
    memory_rss_bytes: u64,
    memory_cache_bytes: u64,
    pids: u64,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/state", get(agent_state))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn health() -> &'static str {
    "ok"
}

async fn agent_state(State(s): State<HttpState>) -> Response {
    let (tasks, executors, pending) = match (
        s.table.snapshot().await,
        s.table.executors().await,
        s.status.pending().await,
    ) {
        (Ok(tasks), Ok(executors), Ok(pending)) => (tasks, executors, pending),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
        }
    };
    let executors = executors
        .into_iter()
        .map(|e| ExecutorState {
            framework_id: e.framework_id,
            executor_id: e.info.executor_id.clone(),
            name: e.info.name.clone(),
            state: e.state,
            resources: mezzo_proto::reservation::ReservedResources::from_proto(&e.info.resources)
                .map(|r| r.total())
                .unwrap_or_default(),
            tasks: e.tasks,
            sandbox: e.sandbox.display().to_string(),
        })
        .collect();
    let tasks = tasks
        .into_iter()
        .map(|t| TaskState {
            framework_id: t.key.framework_id.to_string(),
            task_id: t.key.task_id.to_string(),
            name: t.info.name.clone(),
            state: t.state.name(),
            resources: mezzo_proto::reservation::ReservedResources::from_proto(&t.info.resources)
                .map(|r| r.total())
                .unwrap_or_default(),
            sandbox: t.sandbox.display().to_string(),
            usage: t.usage.map(|u| UsageView {
                cpu_seconds: u.cpu_time.as_secs_f64(),
                memory_rss_bytes: u.memory_rss,
                memory_cache_bytes: u.memory_cache,
                pids: u.pids,
            }),
        })
        .collect();
    let body = AgentState {
        agent_id: s.agent_id.borrow().as_ref().map(|a| a.to_string()),
        hostname: s.hostname.clone(),
        master: s.master.borrow().clone(),
        resources: s.resources.clone(),
        tasks,
        executors,
        pending_updates: pending,
    };
    Json(body).into_response()
}

async fn metrics(State(s): State<HttpState>) -> Response {
    if let Ok(tasks) = s.table.snapshot().await {
        s.metrics
            .set_usage(tasks.iter().filter_map(|t| Some((&t.key, t.usage.as_ref()?))));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}
