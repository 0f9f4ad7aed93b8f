//! Operator actions, each allowed by its ACL action (see
//! [`crate::auth::acl`]). Each is
//! checked on the leader and answered 202: durable ones (drain, gone,
//! teardown) take effect once their registry op commits; kill once the
//! agent reports the task killed. Follow `/api/v1/events` to see them land.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use serde::Deserialize;

use super::{HttpState, error, error_body, path_of};
use crate::auth::{Action, Caller};
use crate::core::OperatorAction;
use crate::error::MasterError;

/// Longest drain deadline or kill grace accepted (a week).
const MAX_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// A request refused before it reaches the core.
struct Reject(Box<Response>);

impl From<MasterError> for Reject {
    fn from(e: MasterError) -> Self {
        Reject(Box::new(error(e, "")))
    }
}

fn invalid(msg: String) -> Reject {
    Reject(Box::new(error_body(StatusCode::BAD_REQUEST, msg)))
}

/// Parses an optional JSON body; an empty body or `null` is the default.
fn body<T: for<'de> Deserialize<'de> + Default>(b: &Bytes) -> Result<T, Reject> {
    if b.iter().all(u8::is_ascii_whitespace) || b.trim_ascii() == b"null" {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| invalid(format!("bad JSON body: {e}")))
}

fn secs(field: &str, v: Option<f64>) -> Result<Option<Duration>, Reject> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && (0.0..=MAX_SECS).contains(&s) => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(invalid(format!(
            "{field}: {s} is not a number of seconds in 0..={MAX_SECS}"
        ))),
    }
}

/// Runs the action on the leader: 202 once it is checked.
async fn act(s: &HttpState, u: &OriginalUri, what: &'static str, action: OperatorAction) -> Response {
    match s.handle.operator(action).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(serde_json::json!({ "accepted": what }))).into_response(),
        Err(e) => error(e, &path_of(u)),
    }
}

pub(super) async fn teardown(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    u: OriginalUri,
    Path(fid): Path<String>,
) -> Response {
    let fid = match FrameworkId::parse(&fid) {
        Ok(f) => f,
        Err(e) => return error(e.into(), ""),
    };
    if let Err(r) = s.check_owner(&caller, Action::TeardownFramework, &fid) {
        return r;
    }
    act(&s, &u, "teardown", OperatorAction::Teardown { framework: fid }).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KillBody {
    grace_secs: Option<f64>,
}

pub(super) async fn kill(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    u: OriginalUri,
    Path((fid, tid)): Path<(String, String)>,
    b: Bytes,
) -> Response {
    let ids = FrameworkId::parse(&fid).and_then(|f| Ok((f, TaskId::parse(&tid)?)));
    let (fid, tid) = match ids {
        Ok(v) => v,
        Err(e) => return error(e.into(), ""),
    };
    if let Err(r) = s.check_owner(&caller, Action::KillTask, &fid) {
        return r;
    }
    let grace = match body::<KillBody>(&b).and_then(|k| secs("grace_secs", k.grace_secs)) {
        Ok(g) => g,
        Err(Reject(r)) => return *r,
    };
    act(
        &s,
        &u,
        "kill",
        OperatorAction::KillTask {
            framework: fid,
            task: tid,
            grace,
        },
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    /// Tasks still running this many seconds from now are killed; absent
    /// lets them run to completion.
    deadline_secs: Option<f64>,
}

fn agent_id(s: &str) -> Result<AgentId, Reject> {
    Ok(AgentId::parse(s).map_err(MasterError::from)?)
}

pub(super) async fn drain(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    u: OriginalUri,
    Path(id): Path<String>,
    b: Bytes,
) -> Response {
    let id = match agent_id(&id) {
        Ok(a) => a,
        Err(Reject(r)) => return *r,
    };
    if let Err(r) = s.check(&caller, Action::DrainAgent, id.as_str()) {
        return r;
    }
    let deadline = match body::<DrainBody>(&b).and_then(|d| secs("deadline_secs", d.deadline_secs)) {
        Ok(d) => d,
        Err(Reject(r)) => return *r,
    };
    act(&s, &u, "drain", OperatorAction::Drain { agent: id, deadline }).await
}

pub(super) async fn reactivate(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    u: OriginalUri,
    Path(id): Path<String>,
) -> Response {
    let id = match agent_id(&id) {
        Ok(a) => a,
        Err(Reject(r)) => return *r,
    };
    if let Err(r) = s.check(&caller, Action::DrainAgent, id.as_str()) {
        return r;
    }
    act(&s, &u, "reactivate", OperatorAction::Reactivate { agent: id }).await
}

pub(super) async fn gone(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    u: OriginalUri,
    Path(id): Path<String>,
) -> Response {
    let id = match agent_id(&id) {
        Ok(a) => a,
        Err(Reject(r)) => return *r,
    };
    if let Err(r) = s.check(&caller, Action::DrainAgent, id.as_str()) {
        return r;
    }
    act(&s, &u, "gone", OperatorAction::MarkGone { agent: id }).await
}
