//! The allocation policy over HTTP: the roles read, role weights, quotas
//! and dynamic reservations (JSON). Every change goes through the
//! registry and is answered only once committed; a follower answers 307
//! to the leader.
//!
//! | Method and path | Body | Does |
//! |---|---|---|
//! | `GET /api/v1/roles` (canonical; `GET /roles` is the same handler, kept for scripts) | | roles with weight, quota, allocation, offers, share; weights, quotas, reservations |
//! | `PUT /weights` | `{"eng": 2, "eng/batch": 1.5}` | sets weights (1 is the default) |
//! | `PUT /quota` | `{"role": "eng", "guarantee": "cpus:4;mem:8192", "limit": "cpus:8"}` | sets a quota |
//! | `DELETE /quota/{role}` | | removes a quota (the role may hold `/`) |
//! | `POST /reserve` | `{"agent": "ID", "resources": "cpus(eng):2;mem(eng):1024"}` | reserves |
//! | `POST /unreserve` | `{"agent": "ID", "resources": "cpus(eng):2"}` | unreserves |
//! | `GET /api/v1/volumes` | | persistent volumes and the task using each |
//! | `POST /api/v1/volumes/destroy` | `{"agent": "ID", "volume": "ID"}` | destroys a volume no task uses |
//!
//! Each change needs its ACL action on every role it touches
//! (`set_weights`, `set_quota`, `reserve`, `unreserve`, `destroy_volume`;
//! see `docs/security.md`).

// The parsing helpers return the error answer itself, ready to send.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use mezzo_proto::ids::{AgentId, VolumeId};
use mezzo_proto::reservation::{ReservedResources, Role};
use mezzo_proto::resources::Resources;
use serde::Deserialize;

use super::{HttpState, error, error_body, path_of, reply};
use crate::allocator::Quota;
use crate::auth::{Action, Caller};
use crate::core::PolicyRequest;
use crate::core::view;
use crate::error::MasterError;
use crate::runtime::Command;

/// How long a request waits for its registry op to commit.
const COMMIT_WAIT: Duration = Duration::from_secs(15);

fn bad(msg: impl std::fmt::Display) -> Response {
    error_body(StatusCode::BAD_REQUEST, msg.to_string())
}

/// Sends a change to the owner and waits for its commit.
pub(super) async fn run(s: &HttpState, request: PolicyRequest, path: &str, done: serde_json::Value) -> Response {
    let asked = s.handle.ask(|reply| Command::Policy { request, reply });
    match tokio::time::timeout(COMMIT_WAIT, asked).await {
        Err(_) => error_body(
            StatusCode::GATEWAY_TIMEOUT,
            "not committed within 15 s; it may still be applied: check /roles",
        ),
        Ok(Err(MasterError::ShuttingDown)) | Ok(Ok(Err(MasterError::ShuttingDown))) => error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "leadership changed before the change committed; check /roles and retry",
        ),
        Ok(Err(e)) | Ok(Ok(Err(e))) => error(e, path),
        Ok(Ok(Ok(()))) => Json(done).into_response(),
    }
}

/// The roles read model, at `/api/v1/roles` and `/roles`.
pub(super) async fn roles(State(s): State<HttpState>, u: OriginalUri) -> Response {
    reply(s.handle.read(view::roles).await, &path_of(&u))
}

fn role(s: &str) -> Result<Role, Response> {
    Role::parse(s).map_err(bad)
}

/// Refuses the caller unless it may do `action` on every role.
fn may<'a>(
    s: &HttpState,
    caller: &Caller,
    action: Action,
    roles: impl IntoIterator<Item = &'a Role>,
) -> Result<(), Response> {
    roles.into_iter().try_for_each(|r| s.check(caller, action, r.as_str()))
}

pub(super) async fn set_weights(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<BTreeMap<String, f64>>, JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return bad("expected a JSON object of role to weight, e.g. {\"eng\": 2}");
    };
    let mut weights = BTreeMap::new();
    for (r, w) in body {
        match role(&r) {
            Ok(r) => weights.insert(r, w),
            Err(resp) => return resp,
        };
    }
    if let Err(r) = may(&s, &caller, Action::SetWeights, weights.keys()) {
        return r;
    }
    let done = serde_json::json!({ "weights": &weights });
    run(&s, PolicyRequest::SetWeights(weights), "/weights", done).await
}

#[derive(Deserialize)]
pub(super) struct QuotaBody {
    role: String,
    #[serde(default)]
    guarantee: String,
    #[serde(default)]
    limit: String,
}

fn resources(field: &str, text: &str) -> Result<Resources, Response> {
    if text.trim().is_empty() {
        return Ok(Resources::default());
    }
    Resources::parse(text).map_err(|e| bad(format!("{field}: {e}")))
}

pub(super) async fn set_quota(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<QuotaBody>, JsonRejection>,
) -> Response {
    let Ok(Json(b)) = body else {
        return bad(
            "expected {\"role\": \"eng\", \"guarantee\": \"cpus:4;mem:8192\", \"limit\": \"cpus:8\"} (guarantee or limit may be left out)",
        );
    };
    let parsed = (
        role(&b.role),
        resources("guarantee", &b.guarantee),
        resources("limit", &b.limit),
    );
    let (role, guarantee, limit) = match parsed {
        (Ok(r), Ok(g), Ok(l)) => (r, g, l),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
    };
    let quota = Quota { guarantee, limit };
    if quota.is_empty() {
        return bad(format!("quota for role {role} sets neither a guarantee nor a limit"));
    }
    if let Err(r) = may(&s, &caller, Action::SetQuota, [&role]) {
        return r;
    }
    let done = serde_json::json!({ "role": role, "quota": &quota });
    run(&s, PolicyRequest::SetQuota { role, quota }, "/quota", done).await
}

pub(super) async fn remove_quota(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(r): Path<String>,
) -> Response {
    let role = match role(r.trim_start_matches('/')) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if let Err(r) = may(&s, &caller, Action::SetQuota, [&role]) {
        return r;
    }
    let path = format!("/quota/{role}");
    let done = serde_json::json!({ "role": role, "removed": true });
    run(
        &s,
        PolicyRequest::SetQuota {
            role,
            quota: Quota::default(),
        },
        &path,
        done,
    )
    .await
}

#[derive(Deserialize)]
pub(super) struct ReserveBody {
    agent: String,
    resources: String,
    #[serde(default)]
    principal: String,
}

fn reservation(b: &ReserveBody) -> Result<(AgentId, ReservedResources), Response> {
    let agent = AgentId::parse(&b.agent).map_err(|e| bad(format!("agent: {e}")))?;
    let r = ReservedResources::parse(&b.resources).map_err(|e| bad(format!("resources: {e}")))?;
    Ok((agent, r))
}

pub(super) async fn reserve(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<ReserveBody>, JsonRejection>,
) -> Response {
    let Ok(Json(b)) = body else {
        return bad("expected {\"agent\": \"ID\", \"resources\": \"cpus(eng):2;mem(eng):1024\"}");
    };
    let (agent, resources) = match reservation(&b) {
        Ok(v) => v,
        Err(e) => return e,
    };
    if let Err(r) = may(&s, &caller, Action::Reserve, resources.reserved.keys()) {
        return r;
    }
    let done = serde_json::json!({ "agent": agent, "reserved": resources.to_string() });
    // Who reserved is who asked: a body's `principal` counts only on an
    // `--insecure` cluster, where nobody is authenticated.
    let principal = match &caller {
        Caller::Authenticated { principal, .. } => principal.to_string(),
        _ => b.principal,
    };
    let req = PolicyRequest::Reserve {
        agent,
        resources,
        principal,
    };
    run(&s, req, "/reserve", done).await
}

pub(super) async fn unreserve(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<ReserveBody>, JsonRejection>,
) -> Response {
    let Ok(Json(b)) = body else {
        return bad("expected {\"agent\": \"ID\", \"resources\": \"cpus(eng):2\"}");
    };
    let (agent, resources) = match reservation(&b) {
        Ok(v) => v,
        Err(e) => return e,
    };
    if let Err(r) = may(&s, &caller, Action::Unreserve, resources.reserved.keys()) {
        return r;
    }
    let done = serde_json::json!({ "agent": agent, "unreserved": resources.to_string() });
    run(&s, PolicyRequest::Unreserve { agent, resources }, "/unreserve", done).await
}

/// The persistent volumes, at `/api/v1/volumes`.
pub(super) async fn volumes(State(s): State<HttpState>, u: OriginalUri) -> Response {
    reply(s.handle.read(|m| m.volume_views()).await, &path_of(&u))
}

#[derive(Deserialize)]
pub(super) struct VolumeBody {
    agent: String,
    volume: String,
}

/// Destroys a volume no task uses: `destroy_volume` on its role.
pub(super) async fn destroy_volume(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<VolumeBody>, JsonRejection>,
) -> Response {
    let Ok(Json(b)) = body else {
        return bad("expected {\"agent\": \"ID\", \"volume\": \"ID\"}");
    };
    let (agent, id) = match (AgentId::parse(&b.agent), VolumeId::parse(&b.volume)) {
        (Ok(a), Ok(v)) => (a, v),
        (Err(e), _) => return bad(format!("agent: {e}")),
        (_, Err(e)) => return bad(format!("volume: {e}")),
    };
    let path = "/api/v1/volumes/destroy";
    // Which volumes exist is for readers of the cluster only.
    if let Err(r) = s.check_read(&caller) {
        return r;
    }
    let (a, v) = (agent.clone(), id.clone());
    let role = match s.handle.try_read(move |m| Ok(m.volume_role(&a, &v))).await {
        Ok(Some(role)) => role,
        Ok(None) => {
            let e = MasterError::UnknownVolume {
                agent: agent.to_string(),
                volume: id.to_string(),
            };
            return error(e, path);
        }
        Err(e) => return error(e, path),
    };
    if let Err(r) = may(&s, &caller, Action::DestroyVolume, [&role]) {
        return r;
    }
    let done = serde_json::json!({ "agent": agent, "destroyed": id });
    run(&s, PolicyRequest::DestroyVolume { agent, id }, path, done).await
}
