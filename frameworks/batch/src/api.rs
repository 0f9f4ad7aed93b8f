//! The batch framework's HTTP API, served by `mezzo batch serve`:
//!
//! | route | does |
//! |---|---|
//! | `POST /v1/jobs` (body: the TOML job file) | submit; `201 {"jobs": [names]}` |
//! | `GET /v1/jobs` | every job, in submission order |
//! | `GET /v1/jobs/{name}[?all=true]` | one job and its unfinished or failed tasks (all with `all`) |
//! | `POST /v1/jobs/{name}/cancel` | cancel; running tasks are killed |
//! | `GET /v1/jobs/{name}/logs?index=N&file=stdout` | tail of a task's output, from its agent |
//! | `GET /health` | `ok` |
//!
//! Errors are `{"error": "..."}` with 400 (bad job file, impossible
//! resources, bad index), 404 (unknown job), 503 (not connected yet, store
//! unavailable).

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::engine::{BatchError, Engine};

/// Largest job file accepted.
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Clone)]
struct Ctx {
    engine: Engine,
    http: reqwest::Client,
}

/// The routes, over a running [`Engine`].
pub fn router(engine: Engine) -> Router {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{name}", get(status))
        .route("/v1/jobs/{name}/cancel", post(cancel))
        .route("/v1/jobs/{name}/logs", get(logs))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(Ctx { engine, http })
}

fn error(e: BatchError) -> Response {
    let code = match e {
        BatchError::Spec(_) | BatchError::Unsatisfiable { .. } | BatchError::BadIndex { .. } => StatusCode::BAD_REQUEST,
        BatchError::UnknownJob(_) => StatusCode::NOT_FOUND,
        BatchError::NotReady | BatchError::Store(_) | BatchError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

async fn submit(State(c): State<Ctx>, body: String) -> Response {
    match c.engine.submit(body).await {
        Ok(jobs) => (StatusCode::CREATED, Json(serde_json::json!({ "jobs": jobs }))).into_response(),
        Err(e) => error(e),
    }
}

async fn list(State(c): State<Ctx>) -> Response {
    match c.engine.list().await {
        Ok(jobs) => Json(jobs).into_response(),
        Err(e) => error(e),
    }
}

#[derive(Deserialize)]
struct StatusQuery {
    #[serde(default)]
    all: bool,
}

async fn status(State(c): State<Ctx>, Path(name): Path<String>, Query(q): Query<StatusQuery>) -> Response {
    match c.engine.status(&name, q.all).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => error(e),
    }
}

async fn cancel(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    match c.engine.cancel(&name).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => error(e),
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    index: u32,
    #[serde(default = "stdout")]
    file: String,
}

fn stdout() -> String {
    "stdout".into()
}

async fn logs(State(c): State<Ctx>, Path(name): Path<String>, Query(q): Query<LogsQuery>) -> Response {
    if q.file != "stdout" && q.file != "stderr" {
        return error_text(
            StatusCode::BAD_REQUEST,
            format!("file {:?}: only stdout and stderr", q.file),
        );
    }
    let loc = match c.engine.locate(&name, q.index).await {
        Ok(Some(loc)) => loc,
        Ok(None) => {
            return error_text(
                StatusCode::NOT_FOUND,
                format!(
                    "task {} of job {name:?} has not run since the framework started",
                    q.index
                ),
            );
        }
        Err(e) => return error(e),
    };
    let Some(agent) = agent_address(&c, &loc.agent_id).await else {
        return error_text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "agent {} of task {} is not known to the master",
                loc.agent_id, loc.task_id
            ),
        );
    };
    // The agent's files API (confined to the sandbox): the last MiB.
    let url = format!(
        "http://{agent}/files/{}/{}/read?path={}&tail={}",
        loc.framework_id,
        loc.task_id,
        q.file,
        1 << 20
    );
    match c.http.get(&url).send().await {
        Ok(r) => {
            let code = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            if code.is_success() {
                body["data"].as_str().unwrap_or_default().to_owned().into_response()
            } else {
                let msg = body["error"].as_str().map_or_else(|| code.to_string(), str::to_owned);
                error_text(code, msg)
            }
        }
        Err(e) => error_text(StatusCode::BAD_GATEWAY, format!("agent {agent}: {e}")),
    }
}

fn error_text(code: StatusCode, msg: String) -> Response {
    (code, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// The agent's HTTP address, from the master's `/state`.
async fn agent_address(c: &Ctx, agent_id: &str) -> Option<String> {
    for m in c.engine.masters() {
        let Ok(r) = c.http.get(format!("http://{m}/state")).send().await else {
            continue;
        };
        let Ok(state) = r.json::<serde_json::Value>().await else {
            continue;
        };
        let agents = state["agents"].as_array()?;
        return agents
            .iter()
            .find(|a| a["id"] == agent_id)
            .and_then(|a| a["http_address"].as_str())
            .map(str::to_owned);
    }
    None
}
