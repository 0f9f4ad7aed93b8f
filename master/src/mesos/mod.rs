//! Apache Mesos' v1 HTTP API, an adapter at the edge: a Mesos framework
//! or tool talks to a Mezzo master as to a Mesos 1.11 master. Calls become
//! the same core calls as Mezzo's gRPC API (`crate::api`), so allocation,
//! reservations, quotas, reliable updates, failover, authentication and
//! the ACL apply unchanged. Documented in `docs/mesos-api.md`.
//!
//! | Route | Module |
//! |---|---|
//! | `POST /api/v1/scheduler` | [`scheduler`] |
//! | `GET /master/state`, `/master/state.json`, `/state.json`, `POST /api/v1` (operator calls) | [`operator`] |
//! | `GET /version`, `GET /redirect`, `GET /master/redirect` | here |
//!
//! Served on the master's own port (TLS) and, when the operator asks
//! with `--mesos-listen`, on a plain-HTTP port for clients that cannot
//! speak TLS (still behind authentication: HTTP Basic with a principal
//! and one of its tokens).

mod acks;
pub mod operator;
mod scheduler;
#[cfg(test)]
mod tests;

pub use mezzo_proto::mesos::media::{self, Encoding};
pub use mezzo_proto::mesos::{convert, group, parse, protobuf, recordio, types};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
pub use scheduler::{STREAM_ID, Streams};

use crate::auth::Caller;
use crate::error::MasterError;
use crate::http::HttpState;

/// The Mesos version Mezzo's API follows, as `/version` and `MasterInfo`
/// give it: clients parse it as three integers.
pub const MESOS_VERSION: &str = "1.11.0";

/// What the Mesos routes of one listener share (behind an `Arc`: axum
/// clones the state for every request).
#[derive(Clone)]
pub struct MesosApi(Arc<Shared>);

impl std::ops::Deref for MesosApi {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    http: HttpState,
    streams: Streams,
    /// This master as `SUBSCRIBED` describes it.
    master: Arc<types::MasterInfo>,
    /// Serving `--mesos-listen`: redirect to the leader's such address.
    plain: bool,
}

/// `MasterInfo` of a master reached at `addr`.
pub fn master_info(id: &str, addr: SocketAddr, hostname: &str) -> types::MasterInfo {
    let ip = match addr.ip() {
        // Network byte order, read as Mesos' little-endian uint32.
        IpAddr::V4(v4) => u32::from_le_bytes(v4.octets()),
        IpAddr::V6(_) => 0,
    };
    types::MasterInfo {
        id: id.to_owned(),
        ip,
        port: u32::from(addr.port()),
        pid: Some(format!("master@{addr}")),
        hostname: Some(hostname.to_owned()),
        version: Some(MESOS_VERSION.to_owned()),
        address: Some(types::Address {
            hostname: Some(hostname.to_owned()),
            ip: Some(addr.ip().to_string()),
            port: u32::from(addr.port()),
        }),
    }
}

/// The Mesos routes, for one listener (`master`: this master as reached
/// through it). `streams` is shared by every listener of the master.
pub fn router(http: HttpState, streams: Streams, master: types::MasterInfo, plain: bool) -> Router {
    let api = MesosApi(Arc::new(Shared {
        http,
        streams,
        master: Arc::new(master),
        plain,
    }));
    let timeout =
        tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, crate::http::REQUEST_TIMEOUT);
    Router::new()
        .route("/api/v1/scheduler", post(scheduler_call))
        .route("/api/v1", post(operator::call))
        .route("/master/state", get(operator::state))
        .route("/master/state.json", get(operator::state))
        .route("/state.json", get(operator::state))
        .route("/version", get(version))
        .route("/redirect", get(redirect))
        .route("/master/redirect", get(redirect))
        .layer(DefaultBodyLimit::max(mezzo_proto::MAX_MESSAGE_BYTES))
        .layer(timeout)
        .with_state(api)
}

/// A refusal as Mesos words it: 400 with the reason as plain text.
pub(crate) fn bad_request(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, msg.into()).into_response()
}

/// A core error as Mesos answers it: plain text with the status of its
/// kind, or a redirect to the leader (`path` there).
pub(crate) async fn core_error(api: &MesosApi, e: MasterError, path: &str) -> Response {
    if let MasterError::NotLeader { .. } = e {
        return api.to_leader(path).await;
    }
    let text = e.to_string();
    let r = crate::http::error(e, path);
    (r.status(), text).into_response()
}

impl MesosApi {
    /// Whether this master leads (`None`: the Raft node is gone).
    async fn leads(&self) -> Option<bool> {
        Some(self.http.raft().status().await?.role == "leader")
    }

    /// 307 to `path` on the leader, through the same kind of listener
    /// (its `--mesos-listen` address from the plain one), or 503.
    async fn to_leader(&self, path: &str) -> Response {
        let Some(st) = self.http.raft().status().await else {
            return (StatusCode::SERVICE_UNAVAILABLE, "No leader elected").into_response();
        };
        let leader = if self.plain { st.leader_mesos } else { st.leader.clone() };
        match (leader, st.leader) {
            (Some(l), _) => (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, format!("//{l}{path}"))],
            )
                .into_response(),
            (None, Some(l)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the leader ({l}) serves Mesos' API on its TLS port only (it runs without --mesos-listen)"),
            )
                .into_response(),
            (None, None) => (StatusCode::SERVICE_UNAVAILABLE, "No leader elected").into_response(),
        }
    }
}

/// `POST /api/v1/scheduler`.
async fn scheduler_call(
    State(api): State<MesosApi>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let enc = match media::request_encoding(&headers, media::ANY) {
        Ok(e) => e,
        Err(r) => return refused(r),
    };
    let call: Result<types::Call, String> = match enc {
        Encoding::Json => parse(&body),
        Encoding::Protobuf => protobuf::call_from_protobuf(&body),
    };
    let call = match call {
        Ok(c) => c,
        Err(e) => return bad_request(format!("Failed to parse body into Call: {e}")),
    };
    scheduler::handle(&api, caller, &headers, call).await
}

/// A refusal of a request's media types, as its answer.
pub(crate) fn refused(r: mezzo_proto::mesos::media::Refusal) -> Response {
    (r.status, r.message).into_response()
}

/// `GET /version`: Mesos' shape, with Mezzo's own version beside it.
async fn version() -> Response {
    Json(serde_json::json!({
        "version": MESOS_VERSION,
        "build_date": "",
        "build_time": 0.0,
        "build_user": "",
        "git_sha": "",
        "mezzo_version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// `GET /redirect`: 307 to the leading master (itself when leading).
async fn redirect(State(api): State<MesosApi>) -> Response {
    api.to_leader("").await
}
