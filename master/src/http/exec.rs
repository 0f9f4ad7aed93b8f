//! `mezzo exec`: `GET /api/v1/tasks/{framework}/{task}/exec` upgraded to
//! a WebSocket (protocol: [`mezzo_proto::exec`]). The leader checks the
//! caller's ACL (`exec_task` on the framework's owner: owning the
//! framework is not enough), opens the same WebSocket to the task's agent
//! as itself (its certificate; the agent answers masters only), and only
//! then accepts the caller's, so that a refusal comes back as an HTTP
//! error. Then it passes every message on both ways until one side closes.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use mezzo_proto::exec::{ExecRequest, MAX_MESSAGE};
use mezzo_proto::ids::{FrameworkId, TaskId};
use mezzo_proto::security::Principal;
use mezzo_proto::security::ws::{self, WsError};
use tokio_tungstenite::tungstenite::Message as AgentMessage;

use super::{HttpState, error, error_body, path_of, refused};
use crate::auth::{Action, Caller};
use crate::core::view;

/// How long the agent has to accept the session.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[allow(clippy::too_many_arguments)]
pub(super) async fn exec(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    u: OriginalUri,
    Path((fid, tid)): Path<(String, String)>,
    Query(req): Query<ExecRequest>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let ids = FrameworkId::parse(&fid).and_then(|f| Ok((f, TaskId::parse(&tid)?)));
    let (fid, tid) = match ids {
        Ok(v) => v,
        Err(e) => return error(e.into(), ""),
    };
    // Who asks, before anything is looked up for them.
    if matches!(caller, Caller::Anonymous) {
        return refused(crate::auth::AuthzError::Unauthenticated);
    }
    let argv = match req.argv() {
        Ok(a) => a,
        Err(why) => return error_body(StatusCode::BAD_REQUEST, why),
    };
    let (f2, t2) = (fid.clone(), tid.clone());
    let found = match s.handle.try_read(move |m| view::task_agent(m, &f2, &t2)).await {
        Ok(found) if found.removed_owner.is_none() => found,
        Ok(_) => {
            return error_body(
                StatusCode::NOT_FOUND,
                format!("task {tid}'s framework {fid} is gone: nothing runs to exec in"),
            );
        }
        Err(e) => return error(e, &path_of(&u)),
    };
    let owner = s.raft.auth().owner(&fid).unwrap_or_default();
    let object = if owner.is_empty() { "*" } else { owner.as_str() };
    if let Err(e) = caller.may(&s.raft.auth().acl, Action::ExecTask, object) {
        return refused(e);
    }
    let name = match found.principal.as_deref().map(str::parse::<Principal>) {
        Some(Ok(p)) => p.dns_name().unwrap_or_default(),
        _ => "agent.mezzo".to_owned(),
    };
    // The request as read here, not as it came.
    let path = format!("/containers/{fid}/{tid}/exec?{}", req.query());
    let agent = match ws::connect(
        &s.transport,
        &found.addr,
        &name,
        &path,
        CONNECT_TIMEOUT,
        MAX_MESSAGE + 16,
    )
    .await
    {
        Ok(socket) => socket,
        // The agent's refusal (no such task, not running) is the answer.
        Err(WsError::Refused { status, body, .. }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            return error_body(status, format!("agent {}: {}", found.addr, body.trim()));
        }
        Err(e) => return error_body(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    // The program only: arguments may hold what must not be logged.
    tracing::info!(caller = %caller.owner(), task = %tid, framework = %fid, program = %argv[0], args = argv.len() - 1, tty = req.tty, "exec");
    upgrade
        .max_message_size(MAX_MESSAGE + 16)
        .on_upgrade(move |client| pump(client, agent))
        .into_response()
}

/// Passes messages both ways until either side closes.
async fn pump(client: WebSocket, agent: ws::Socket) {
    let (to_client, from_client) = client.split();
    let (to_agent, from_agent) = agent.split();
    let up = relay(from_client, to_agent, |m| match m {
        Message::Binary(b) => Flow::Send(AgentMessage::Binary(b)),
        Message::Close(_) => Flow::Stop,
        _ => Flow::Skip,
    });
    let down = relay(from_agent, to_client, |m| match m {
        AgentMessage::Binary(b) => Flow::Send(Message::Binary(b)),
        AgentMessage::Close(_) => Flow::Stop,
        _ => Flow::Skip,
    });
    // Whichever side ends first ends the session (dropping the other).
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// What one side's message becomes on the other.
enum Flow<T> {
    Send(T),
    Skip,
    Stop,
}

/// Forwards `from`'s messages, as `map` says, to `to` until either ends,
/// then closes `to`.
async fn relay<A, B, E>(
    mut from: impl futures::Stream<Item = Result<A, E>> + Unpin,
    mut to: impl futures::Sink<B> + Unpin,
    map: impl Fn(A) -> Flow<B>,
) {
    while let Some(Ok(msg)) = from.next().await {
        match map(msg) {
            Flow::Send(m) => {
                if to.send(m).await.is_err() {
                    break;
                }
            }
            Flow::Skip => {}
            Flow::Stop => break,
        }
    }
    let _ = to.close().await;
}
