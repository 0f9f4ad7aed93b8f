//! The master's HTTP API, all of it: one router, one leader redirect,
//! one JSON error shape. Documented in `docs/operator-api.md` and
//! `docs/allocator.md`.
//!
//! | Routes | Module | Token |
//! |---|---|---|
//! | `/health`, `/state`, `/api/v1/{overview,agents,frameworks,tasks,masters,why/...}` | [`reads`] | secrets only |
//! | `/metrics` (OpenMetrics) | [`metrics`] | no |
//! | `/api/v1/roles` (canonical) and `/roles` (the same handler) | `policy.rs` | no |
//! | `GET /api/v1/volumes` | `policy.rs` | no |
//! | `PUT /weights`, `PUT /quota`, `DELETE /quota/{role}`, `POST /reserve`, `POST /unreserve`, `POST /api/v1/volumes/destroy` | `policy.rs` | yes |
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
pub mod authn;
mod dashboard;
mod events;
mod exec;
mod files;
pub mod metrics;
mod policy;
mod raft;
pub mod reads;
mod security;
mod state_reads;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::OriginalUri;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post, put};
use mezzo_proto::ids::FrameworkId;
use mezzo_proto::security::Transport;
use serde::{Deserialize, Serialize};

use self::authn::Authenticator;
use crate::auth::{Action, AuthzError, Caller};
use crate::error::{ErrorCode, MasterError};
pub use crate::history::Sample;
use crate::pki::Authority;
use crate::raft::RaftHandle;
use crate::runtime::Handle;
pub use reads::{MastersBody, OverviewBody};

/// What every HTTP handler shares: the way to the owner task and the Raft
/// node, the authenticator, the CA, this master's transport (for the
/// agents' files API) and the metrics registry.
#[derive(Clone)]
pub struct HttpState {
    handle: Handle,
    raft: RaftHandle,
    authn: Authenticator,
    /// None on an insecure cluster.
    authority: Option<Arc<Authority>>,
    transport: Transport,
    metrics: Arc<metrics::Metrics>,
    state: state_reads::StateReads,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("authn", &self.authn)
            .finish_non_exhaustive()
    }
}

// The checks return the refusal itself, ready to send.
#[allow(clippy::result_large_err)]
impl HttpState {
    /// Builds the metrics registry and starts the `/state` writer;
    /// call once per master, inside the runtime (every listener shares the result).
    pub fn start(
        handle: Handle,
        raft: RaftHandle,
        authn: Authenticator,
        authority: Option<Arc<Authority>>,
        transport: Transport,
    ) -> HttpState {
        HttpState {
            state: state_reads::StateReads::start(handle.clone()),
            handle,
            raft,
            authn,
            authority,
            transport,
            metrics: Arc::new(metrics::Metrics::new()),
        }
    }

    /// The authenticator every listener's layer uses.
    pub(crate) fn authn(&self) -> Authenticator {
        self.authn.clone()
    }

    /// The way to the owner task.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The Raft node (leadership, the applied registry's views).
    pub(crate) fn raft(&self) -> &RaftHandle {
        &self.raft
    }

    /// Refuses the caller unless it may do `action` to `object`.
    pub(crate) fn check(&self, caller: &Caller, action: Action, object: &str) -> Result<(), Response> {
        caller.may(&self.raft.auth().acl, action, object).map_err(refused)
    }

    /// Refuses the caller unless it owns the framework or a rule lets it
    /// do `action` to it.
    pub(crate) fn check_owner(&self, caller: &Caller, action: Action, framework: &FrameworkId) -> Result<(), Response> {
        let owner = self.raft.auth().owner(framework).unwrap_or_default();
        self.check_owner_is(caller, action, &owner)
    }

    /// Refuses the caller unless it may do `action` on what `owner` owns.
    pub(crate) fn check_owner_is(&self, caller: &Caller, action: Action, owner: &str) -> Result<(), Response> {
        caller.may_touch(&self.raft.auth().acl, action, owner).map_err(refused)
    }

    /// Refuses the caller unless it may read the cluster.
    pub(crate) fn check_read(&self, caller: &Caller) -> Result<(), Response> {
        caller
            .may_read(&self.raft.auth().acl, self.authn.anonymous_read)
            .map_err(refused)
    }
}

/// 401 without a credential, 403 without the right.
pub(crate) fn refused(e: AuthzError) -> Response {
    match e {
        AuthzError::Unauthenticated => error_body(StatusCode::UNAUTHORIZED, e.to_string()),
        _ => error_body(StatusCode::FORBIDDEN, e.to_string()),
    }
}

/// The whole application of a master's port: the gRPC services in
/// `grpc` and every HTTP route, behind the one authentication layer
/// ([`authn::layer`]), which gives every request its [`Caller`].
pub fn app(state: HttpState, grpc: Router) -> Router {
    let authn = state.authn.clone();
    authenticated(authn, grpc.merge(router(state)))
}

/// Routes of their own (Mesos' API on its plain-HTTP port) behind the
/// same authentication layer as [`app`].
pub fn authenticated(authn: Authenticator, routes: Router) -> Router {
    routes.layer(axum::middleware::from_fn_with_state(authn, authn::layer))
}

/// Every route of the master's HTTP API. Reads need the `read` action
/// (checked by a layer on their group); every other route checks its own
/// action on its object.
fn router(state: HttpState) -> Router {
    let reads = Router::new()
        .route("/state", get(reads::state))
        .route("/metrics", get(metrics::scrape))
        .route("/raft", get(raft::status))
        .route("/raft/registry", get(raft::registry))
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
        .route("/api/v1/volumes", get(policy::volumes))
        .route("/api/v1/acl", get(security::acl))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_read));
    // The event stream lasts as long as its reader: no request timeout.
    let streams = Router::new()
        .route("/api/v1/events", get(events::stream))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_read))
        // Checks its own right (`exec_task`).
        .route("/api/v1/tasks/{framework}/{task}/exec", get(exec::exec));
    let changes = Router::new()
        .route("/raft/members", post(raft::add_member))
        .route("/raft/members/{id}", delete(raft::remove_member))
        .route("/weights", put(policy::set_weights))
        .route("/quota", put(policy::set_quota))
        .route("/quota/{*role}", delete(policy::remove_quota))
        .route("/reserve", post(policy::reserve))
        .route("/unreserve", post(policy::unreserve))
        .route("/api/v1/volumes/destroy", post(policy::destroy_volume))
        .route("/api/v1/frameworks/{framework}/teardown", post(actions::teardown))
        .route("/api/v1/tasks/{framework}/{task}/kill", post(actions::kill))
        .route("/api/v1/agents/{agent}/drain", post(actions::drain))
        .route("/api/v1/agents/{agent}/reactivate", post(actions::reactivate))
        .route("/api/v1/agents/{agent}/gone", post(actions::gone))
        .route("/api/v1/tasks/{framework}/{task}/files/browse", get(files::browse))
        .route("/api/v1/tasks/{framework}/{task}/files/read", get(files::read))
        .route("/api/v1/acl", put(security::set_acl))
        .route("/api/v1/credentials", get(security::credentials).post(security::issue))
        .route("/api/v1/credentials/revoke", post(security::revoke))
        .route("/api/v1/credentials/self", post(security::own_token))
        .route("/api/v1/tokens", post(security::join_token))
        .route(
            "/api/v1/secrets",
            get(security::secrets)
                .put(security::put_secret)
                .delete(security::delete_secret),
        );
    let open = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/api/v1/ca", get(security::ca))
        .route("/api/v1/join", post(security::join))
        .route("/", get(dashboard::index))
        .route("/ui/{file}", get(dashboard::asset))
        .route("/ui/login", post(dashboard::login))
        .route("/ui/logout", post(dashboard::logout));
    // Every other request gets an answer (408 at worst) within this.
    let timeout = tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT);
    reads
        .merge(changes)
        .merge(open)
        .layer(timeout)
        .merge(streams)
        .with_state(state)
}

/// Longest an HTTP request (not a stream) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn require_read(
    axum::extract::State(s): axum::extract::State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match s.check_read(&caller) {
        Ok(()) => next.run(req).await,
        Err(r) => r,
    }
}

/// Answers a request a follower cannot serve: 307 to the leader's same
/// path (which keeps the method and body), or 503 while there is no
/// leader. Plain text, as `/state` and the raft routes answer.
pub(crate) fn to_leader(e: MasterError, path: &str) -> Response {
    match e {
        MasterError::NotLeader { leader: Some(ref l) } => {
            // Scheme-relative (as Mesos answers): the client keeps https,
            // or http on an insecure cluster.
            let location = format!("//{l}{path}");
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
        ErrorCode::ResourceExhausted => match e {
            MasterError::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::PAYLOAD_TOO_LARGE,
        },
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
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
