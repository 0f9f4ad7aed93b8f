//! The Mesos v1 executor API (`POST /api/v1/executor`), on a listener of
//! its own: plain HTTP on 127.0.0.1, because custom executors run on this
//! host and speak Mesos' protocol, while the agent's main port is TLS and
//! admits masters only.
//!
//! Every call carries `Authorization: Bearer <token>`, the token the agent
//! gave the executor it names (`MESOS_EXECUTOR_AUTHENTICATION_TOKEN`):
//! an executor can act for itself only. The HTTP answers are Mesos'
//! (research notes §4); SUBSCRIBE answers 200 with a RecordIO stream of
//! events, the others 202 once done (an UPDATE once journaled, when the
//! executor is also sent ACKNOWLEDGED for it). A call naming an executor
//! that is not here gets the wrong token's 403: the API tells nothing
//! before the token is checked.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mezzo_proto::mesos::{self, executor as mx, media, recordio};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::AgentError;
use crate::status::StatusHandle;
use crate::task::table::{CallError, ExecutorCall, MAX_EXECUTOR_DATA, TableHandle};

/// Largest request body.
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// How often a subscribed executor is sent HEARTBEAT.
const HEARTBEAT: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Api {
    table: TableHandle,
    status: StatusHandle,
}

pub fn router(table: TableHandle, status: StatusHandle) -> Router {
    Router::new()
        .route("/api/v1/executor", axum::routing::any(call))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Api { table, status })
}

/// Serves the executor API on `listener` until the agent stops.
pub async fn serve(listener: TcpListener, table: TableHandle, status: StatusHandle) -> Result<(), AgentError> {
    let addr = listener.local_addr().map_err(|source| AgentError::Bind {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        source,
    })?;
    axum::serve(listener, router(table, status))
        .await
        .map_err(|source| AgentError::Http { addr, source })
}

/// The executor API's listener, and whether it lost its former port.
#[derive(Debug)]
pub struct Bound {
    pub listener: TcpListener,
    /// The port kept from an earlier start is held by another process:
    /// running executors reconnect there, handing it their tokens, which
    /// must then be replaced ([`crate::task::table::ExecutorDeps::rotate_tokens`]).
    pub former_port_lost: bool,
}

/// Binds the executor API. With port 0 the port kept in the work dir from
/// an earlier start is taken again if free (running executors reconnect
/// there), and the port chosen is kept for the next start.
pub async fn bind(listen: std::net::SocketAddr, work_dir: &std::path::Path) -> Result<Bound, AgentError> {
    let file = crate::paths::executor_port_file(work_dir);
    let kept = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| t.trim().parse::<u16>().ok())
        .filter(|p| *p != 0);
    let bind_error = |source| AgentError::Bind { addr: listen, source };
    let mut former_port_lost = false;
    let listener = match kept {
        Some(port) if listen.port() == 0 => {
            let again = std::net::SocketAddr::new(listen.ip(), port);
            match TcpListener::bind(again).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(%again, "the executor API's former port is taken ({e}): running executors cannot reconnect, and whoever holds it may collect their tokens, which are replaced");
                    former_port_lost = true;
                    TcpListener::bind(listen).await.map_err(bind_error)?
                }
            }
        }
        _ => TcpListener::bind(listen).await.map_err(bind_error)?,
    };
    let addr = listener.local_addr().map_err(bind_error)?;
    if kept != Some(addr.port()) {
        crate::paths::write_atomic(&file, addr.port().to_string().as_bytes())?;
    }
    Ok(Bound {
        listener,
        former_port_lost,
    })
}

fn refuse(code: StatusCode, message: impl Into<String>) -> Response {
    (code, message.into()).into_response()
}

impl IntoResponse for CallError {
    fn into_response(self) -> Response {
        match self {
            CallError::BadRequest(m) => refuse(StatusCode::BAD_REQUEST, m),
            CallError::Forbidden(m) => refuse(StatusCode::FORBIDDEN, m),
        }
    }
}

/// The bearer token, or the 401 to answer.
#[allow(clippy::result_large_err)] // the refusal itself, ready to send
fn bearer(headers: &HeaderMap) -> Result<String, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match token {
        Some(t) => Ok(t.to_owned()),
        None => Err((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"mesos-agent-executor\"")],
            "an executor's calls need 'Authorization: Bearer' with its MESOS_EXECUTOR_AUTHENTICATION_TOKEN",
        )
            .into_response()),
    }
}

/// 415 unless the body is JSON (400 without a `Content-Type`), 406 unless
/// JSON may be answered, as Mesos' agent judges them.
#[allow(clippy::result_large_err)] // the refusal itself, ready to send
fn json_only(headers: &HeaderMap) -> Result<(), Response> {
    media::request_encoding(headers, media::JSON)
        .and_then(|_| media::response_encoding(headers, media::JSON))
        .map(|_| ())
        .map_err(|r| refuse(r.status, r.message))
}

async fn call(State(api): State<Api>, method: Method, headers: HeaderMap, body: Bytes) -> Response {
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            "Expecting 'POST'",
        )
            .into_response();
    }
    let token = match bearer(&headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if let Err(r) = json_only(&headers) {
        return r;
    }
    let call: mx::Call = match mesos::parse(&body) {
        Ok(c) => c,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("Failed to parse body into Call: {e}")),
    };
    let (framework_id, executor_id) = (call.framework_id.value, call.executor_id.value);
    match call.kind.as_str() {
        "HEARTBEAT" => {
            let (reply, rx) = oneshot::channel();
            let c = ExecutorCall::Heartbeat {
                framework_id,
                executor_id,
                token,
                reply,
            };
            match ask(&api, c, rx).await {
                Ok(()) => StatusCode::ACCEPTED.into_response(),
                Err(r) => r,
            }
        }
        "SUBSCRIBE" => {
            let (reply, rx) = oneshot::channel();
            let c = ExecutorCall::Subscribe {
                framework_id,
                executor_id,
                token,
                subscribe: call.subscribe.unwrap_or_default(),
                reply,
            };
            match ask(&api, c, rx).await {
                Ok(events) => stream(events),
                Err(r) => r,
            }
        }
        "UPDATE" => {
            let Some(update) = call.update else {
                return refuse(StatusCode::BAD_REQUEST, "Expecting 'update' to be present");
            };
            let (reply, rx) = oneshot::channel();
            let c = ExecutorCall::Update {
                framework_id,
                executor_id,
                token,
                status: update.status,
                reply,
            };
            if let Err(r) = ask(&api, c, rx).await {
                return r;
            }
            // The manager answers once everything queued before has been
            // journaled: the update is kept.
            match api.status.pending().await {
                Ok(_) => StatusCode::ACCEPTED.into_response(),
                Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        "MESSAGE" => {
            let Some(message) = call.message else {
                return refuse(StatusCode::BAD_REQUEST, "Expecting 'message' to be present");
            };
            let data = match mx::data_in(&message) {
                Ok(d) => d,
                Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
            };
            if data.len() > MAX_EXECUTOR_DATA {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("message data is larger than {MAX_EXECUTOR_DATA} bytes"),
                );
            }
            let (reply, rx) = oneshot::channel();
            let c = ExecutorCall::Message {
                framework_id,
                executor_id,
                token,
                data,
                reply,
            };
            match ask(&api, c, rx).await {
                Ok(()) => StatusCode::ACCEPTED.into_response(),
                Err(r) => r,
            }
        }
        other => refuse(
            StatusCode::BAD_REQUEST,
            format!("call type {other:?} is not one of SUBSCRIBE, UPDATE, MESSAGE, HEARTBEAT"),
        ),
    }
}

/// Hands the call to the table and waits for its answer.
async fn ask<T>(api: &Api, call: ExecutorCall, rx: oneshot::Receiver<Result<T, CallError>>) -> Result<T, Response> {
    let gone = |e: AgentError| refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    api.table.executor_call(call).await.map_err(gone)?;
    match rx.await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(e.into_response()),
        Err(_) => Err(gone(AgentError::ActorStopped("task table"))),
    }
}

/// The subscription's RecordIO stream: the table's events, and HEARTBEAT
/// now and then. It ends when the table drops the subscription (a newer
/// one, or the executor's end).
fn stream(events: mpsc::Receiver<mx::Event>) -> Response {
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let records = futures::stream::unfold((events, beat), |(mut events, mut beat)| async move {
        let event = tokio::select! {
            e = events.recv() => e?,
            _ = beat.tick() => mx::Event::of("HEARTBEAT"),
        };
        let json = serde_json::to_vec(&event).unwrap_or_default();
        Some((
            Ok::<_, std::convert::Infallible>(recordio::frame(&json)),
            (events, beat),
        ))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(records),
    )
        .into_response()
}
