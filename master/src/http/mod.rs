//! The master's HTTP API, all of it: one router, one leader redirect,
//! one JSON error shape. Documented in `docs/operator-api.md` and
//! `docs/allocator.md`.
//!
//! | Routes | Module | Token |
//! |---|---|---|
//! | `/health`, `/state`, `/api/v1/{overview,agents,frameworks,tasks,masters,why/...}` | [`reads`] | secrets only |
//! | `/metrics` (OpenMetrics) | [`metrics`] | no |
//! | `/api/v1/roles` (canonical) and `/roles` (the same handler) | `policy.rs` | no |
//! | `PUT /weights`, `PUT /quota`, `DELETE /quota/{role}`, `POST /reserve`, `POST /unreserve` | `policy.rs` | yes |
//! | `/raft`, `/raft/registry`, `/raft/members` | `raft.rs` | no |
//! | `POST /api/v1/{frameworks,tasks,agents}/.../{teardown,kill,drain,reactivate,gone}` | `actions.rs` | yes |
//! | `/api/v1/events` (server-sent events) | `events.rs` | no |
//! | `/api/v1/tasks/{fw}/{task}/files/{browse,read}` | `files.rs` | no |
//! | `/`, `/ui/{file}` | `dashboard.rs` | no |
//!
//! Every route is built in [`router`], so a layer for every request (the
//! coming authentication and authorization) has one place to go; today
//! [`auth`] guards the operator's changes there. Answers about the cluster
//! come from the owner task through read models ([`crate::core::view`]);
//! a follower answers 307 to the leader's same path (`to_leader`).

mod actions;
pub mod auth;
mod dashboard;
mod events;
mod files;
pub mod metrics;
mod policy;
mod raft;
pub mod reads;
pub mod sampler;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, OriginalUri};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post, put};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, MasterError};
use crate::raft::RaftHandle;
use crate::runtime::Handle;
pub use auth::{Operator, OperatorAuth};
pub use reads::{MastersBody, OverviewBody};
pub use sampler::{Sample, Samples};

/// What every HTTP handler shares: the way to the owner task and the Raft
/// node, the operator token, the utilisation history, the metrics
/// registry and a client for the agents' files API.
#[derive(Clone)]
pub struct HttpState {
    handle: Handle,
    raft: RaftHandle,
    auth: OperatorAuth,
    samples: Samples,
    metrics: Arc<metrics::Metrics>,
    /// For the agents' files API.
    agents: reqwest::Client,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl FromRef<HttpState> for OperatorAuth {
    fn from_ref(s: &HttpState) -> OperatorAuth {
        s.auth.clone()
    }
}

impl HttpState {
    /// Starts the utilisation sampler and builds the metrics registry;
    /// call once per master (every listener shares the result).
    pub fn start(handle: Handle, raft: RaftHandle, auth: OperatorAuth) -> HttpState {
        let samples = sampler::spawn(handle.clone(), sampler::INTERVAL);
        let agents = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        HttpState {
            handle,
            raft,
            auth,
            samples,
            metrics: Arc::new(metrics::Metrics::new()),
            agents,
        }
    }
}

/// Every route of the master's HTTP API.
pub fn router(state: HttpState) -> Router {
    let open = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/state", get(reads::state))
        .route("/metrics", get(metrics::scrape))
        .route("/raft", get(raft::status))
        .route("/raft/registry", get(raft::registry))
        .route("/raft/members", post(raft::add_member))
        .route("/raft/members/{id}", delete(raft::remove_member))
        .route("/", get(dashboard::index))
        .route("/ui/{file}", get(dashboard::asset))
        .route("/api/v1/overview", get(reads::overview))
        .route("/api/v1/agents", get(reads::agents))
        .route("/api/v1/frameworks", get(reads::frameworks))
        .route("/api/v1/tasks", get(reads::tasks))
        .route("/api/v1/tasks/{framework}/{task}", get(reads::task))
        .route("/api/v1/masters", get(reads::masters))
        .route("/api/v1/why/framework/{framework}", get(reads::why_framework))
        .route("/api/v1/why/task/{task}", get(reads::why_task))
        .route("/api/v1/roles", get(policy::roles))
        .route("/roles", get(policy::roles))
        .route("/api/v1/events", get(events::stream))
        .route("/api/v1/tasks/{framework}/{task}/files/browse", get(files::browse))
        .route("/api/v1/tasks/{framework}/{task}/files/read", get(files::read));
    let operator = Router::new()
        .route("/weights", put(policy::set_weights))
        .route("/quota", put(policy::set_quota))
        .route("/quota/{*role}", delete(policy::remove_quota))
        .route("/reserve", post(policy::reserve))
        .route("/unreserve", post(policy::unreserve))
        .route("/api/v1/frameworks/{framework}/teardown", post(actions::teardown))
        .route("/api/v1/tasks/{framework}/{task}/kill", post(actions::kill))
        .route("/api/v1/agents/{agent}/drain", post(actions::drain))
        .route("/api/v1/agents/{agent}/reactivate", post(actions::reactivate))
        .route("/api/v1/agents/{agent}/gone", post(actions::gone));
    open.merge(state.auth.protect(operator)).with_state(state)
}

/// Answers a request a follower cannot serve: 307 to the leader's same
/// path (which keeps the method and body), or 503 while there is no
/// leader. Plain text, as `/state` and the raft routes answer.
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
        other => (StatusCode::SERVICE_UNAVAILABLE, other.to_string()).into_response(),
    }
}

/// An error as JSON `{"error": ..., "status": ...}` with the HTTP status
/// of its kind; a follower's NotLeader becomes a 307 to the leader's
/// `path`.
pub(crate) fn error(e: MasterError, path: &str) -> Response {
    let status = match e.code() {
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::FailedPrecondition | ErrorCode::AlreadyExists | ErrorCode::Aborted => StatusCode::CONFLICT,
        ErrorCode::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unavailable => match e {
            MasterError::NotLeader { .. } => return to_leader(e, path),
            _ => StatusCode::SERVICE_UNAVAILABLE,
        },
    };
    error_body(status, e.to_string())
}

/// The JSON error of every JSON route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// The HTTP status, repeated for clients that only keep the body.
    #[serde(default)]
    pub status: u16,
}

/// Answers an [`ErrorBody`] with its status.
pub(crate) fn error_body(status: StatusCode, msg: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: msg.into(),
        status: status.as_u16(),
    };
    (status, Json(body)).into_response()
}

/// Answers `T` as JSON, or the error.
pub(crate) fn reply<T: Serialize>(r: Result<T, MasterError>, path: &str) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(e, path),
    }
}

/// The request's path and query, for a redirect to the same place.
fn path_of(u: &OriginalUri) -> String {
    u.0.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default()
}
