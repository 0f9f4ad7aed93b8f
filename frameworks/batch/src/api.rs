//! The batch framework's HTTP API, served by `mezzo batch serve`:
//!
//! | route | does |
//! |---|---|
//! | `POST /v1/jobs` (body: the TOML job file) | submit; `201 {"jobs": [names]}` |
//! | `GET /v1/jobs` | every job, in submission order |
//! | `GET /v1/jobs/{name}[?all=true][&index=N]` | one job and its unfinished or failed tasks (all with `all`, only task N with `index`), each with its runs |
//! | `POST /v1/jobs/{name}/cancel` | cancel; running tasks are killed |
//! | `GET /v1/jobs/{name}/logs?index=N&attempt=K&file=stdout` | tail of a task's output (its latest run, or attempt K), from its agent |
//! | `GET /health` | `ok` |
//!
//! Every route but `/health` needs the framework's API token as a bearer
//! token (`mezzo_sdk::api_token`; 401 without it).
//!
//! Errors are `{"error": "..."}` with 400 (bad job file, impossible
//! resources, bad index), 404 (unknown job), 503 (not connected yet, store
//! unavailable).

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::engine::{BatchError, Engine};

/// Largest job file accepted.
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Clone)]
struct Ctx {
    engine: Engine,
}

/// The routes, over a running [`Engine`]; `token` guards all but `/health`.
pub fn router(engine: Engine, token: String) -> Router {
    // Every route of `guarded` (only those added before `route_layer`).
    let guarded = Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{name}", get(status))
        .route("/v1/jobs/{name}/cancel", post(cancel))
        .route("/v1/jobs/{name}/logs", get(logs))
        .route_layer(axum::middleware::from_fn_with_state(token, require_token));
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .merge(guarded)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(Ctx { engine })
}

async fn require_token(State(token): State<String>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|h| h.as_bytes());
    if !mezzo_sdk::api_token::authorized(given, &token) {
        let error = "this call needs the batch framework's API token (its work dir's api-token) as a bearer token";
        return (StatusCode::UNAUTHORIZED, Json(serde_json::json!({ "error": error }))).into_response();
    }
    next.run(req).await
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
    index: Option<u32>,
}

async fn status(State(c): State<Ctx>, Path(name): Path<String>, Query(q): Query<StatusQuery>) -> Response {
    match c.engine.status(&name, q.all, q.index).await {
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
    /// An earlier attempt's output (default: the latest run's).
    attempt: Option<u32>,
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
    let loc = match c.engine.locate(&name, q.index, q.attempt).await {
        Ok(Some(loc)) => loc,
        Ok(None) => {
            let which = q.attempt.map_or(String::new(), |a| format!(" (attempt {a})"));
            return error_text(
                StatusCode::NOT_FOUND,
                format!(
                    "task {}{which} of job {name:?} has not run since the framework started",
                    q.index
                ),
            );
        }
        Err(e) => return error(e),
    };
    // Through the master's files proxy (it checks that this framework
    // owns the task, and reaches the agent with the master's own
    // credential): the last MiB.
    // The master's answer is passed on with its own status.
    let read = mezzo_sdk::SandboxRead::Tail(1 << 20);
    let path = mezzo_sdk::sandbox_read_path(&loc.framework_id, &loc.task_id, &q.file, read);
    match c.engine.master_http().request(reqwest::Method::GET, &path, None).await {
        Ok(a) => {
            let code = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let body: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
            if code.is_success() {
                body["data"].as_str().unwrap_or_default().to_owned().into_response()
            } else {
                let msg = body["error"].as_str().map_or_else(|| code.to_string(), str::to_owned);
                error_text(code, msg)
            }
        }
        Err(e) => error_text(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

fn error_text(code: StatusCode, msg: String) -> Response {
    (code, Json(serde_json::json!({ "error": msg }))).into_response()
}
