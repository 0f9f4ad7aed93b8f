//! The operators' view of a master: the JSON operator API under
//! `/api/v1/`, its event stream, operator actions behind a token, a proxy
//! to the agents' sandbox files, the utilisation sampler and the web
//! dashboard at `/`. Documented in `docs/operator-api.md`.
//!
//! Every answer about the cluster is computed on the owner task (through
//! [`Handle::with_core`]); a follower answers 307 to the leader, as the
//! other HTTP routes do.

mod actions;
pub mod auth;
mod dashboard;
mod events;
mod files;
pub mod metrics;
pub mod query;
mod reads;
pub mod sampler;

use std::time::Duration;

use axum::Router;
use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Serialize;

use crate::error::{ErrorCode, MasterError};
use crate::raft::RaftHandle;
use crate::runtime::Handle;
pub use auth::{Operator, OperatorAuth};
pub use sampler::Samples;

/// Shared state of the operator routes.
#[derive(Clone)]
pub struct Ops {
    pub(crate) handle: Handle,
    pub(crate) raft: RaftHandle,
    pub(crate) auth: OperatorAuth,
    pub(crate) samples: Samples,
    /// For the agents' files API.
    pub(crate) http: reqwest::Client,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops").field("auth", &self.auth).finish_non_exhaustive()
    }
}

impl FromRef<Ops> for OperatorAuth {
    fn from_ref(o: &Ops) -> OperatorAuth {
        o.auth.clone()
    }
}

impl Ops {
    /// Starts the utilisation sampler; call once per master.
    pub fn start(handle: Handle, raft: RaftHandle, auth: OperatorAuth) -> Ops {
        let samples = sampler::spawn(handle.clone(), sampler::INTERVAL);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Ops {
            handle,
            raft,
            auth,
            samples,
            http,
        }
    }
}

/// The operator routes (reads, events, actions, files, dashboard).
pub fn router(ops: Ops) -> Router {
    let actions = Router::new()
        .route("/api/v1/frameworks/{framework}/teardown", post(actions::teardown))
        .route("/api/v1/tasks/{framework}/{task}/kill", post(actions::kill))
        .route("/api/v1/agents/{agent}/drain", post(actions::drain))
        .route("/api/v1/agents/{agent}/reactivate", post(actions::reactivate))
        .route("/api/v1/agents/{agent}/gone", post(actions::gone));
    let actions = ops.auth.protect(actions);
    Router::new()
        .route("/", get(dashboard::index))
        .route("/ui/{file}", get(dashboard::asset))
        .route("/api/v1/overview", get(reads::overview))
        .route("/api/v1/agents", get(reads::agents))
        .route("/api/v1/frameworks", get(reads::frameworks))
        .route("/api/v1/tasks", get(reads::tasks))
        .route("/api/v1/tasks/{framework}/{task}", get(reads::task))
        .route("/api/v1/roles", get(reads::roles))
        .route("/api/v1/masters", get(reads::masters))
        .route("/api/v1/why/framework/{framework}", get(reads::why_framework))
        .route("/api/v1/why/task/{task}", get(reads::why_task))
        .route("/api/v1/events", get(events::stream))
        .route("/api/v1/tasks/{framework}/{task}/files/browse", get(files::browse))
        .route("/api/v1/tasks/{framework}/{task}/files/read", get(files::read))
        .merge(actions)
        .with_state(ops)
}

/// An error as JSON `{"error": ..., "code": ...}` with its HTTP status; a
/// follower's NotLeader becomes a 307 to the leader's `path`.
pub(crate) fn fail(e: MasterError, path: &str) -> Response {
    let status = match e.code() {
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::FailedPrecondition | ErrorCode::AlreadyExists | ErrorCode::Aborted => StatusCode::CONFLICT,
        ErrorCode::ResourceExhausted => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unavailable => match e {
            MasterError::NotLeader { .. } => return crate::http::to_leader(e, path),
            _ => StatusCode::SERVICE_UNAVAILABLE,
        },
    };
    bad(status, e.to_string())
}

pub(crate) fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct Body {
        error: String,
        status: u16,
    }
    let body = Body {
        error: msg.into(),
        status: status.as_u16(),
    };
    (status, Json(body)).into_response()
}

/// Answers `T` as JSON, or the error.
pub(crate) fn reply<T: Serialize>(r: Result<T, MasterError>, path: &str) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => fail(e, path),
    }
}
