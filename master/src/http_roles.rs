//! Operator HTTP endpoints for the allocator: role weights, quotas and
//! dynamic reservations (JSON). Every change goes through the registry and
//! is answered only once committed; a follower answers 307 to the leader.
//!
//! | Method and path | Body | Does |
//! |---|---|---|
//! | `GET /roles` | | roles with weight, quota, allocation, offers, share; reservations |
//! | `PUT /weights` | `{"eng": 2, "eng/batch": 1.5}` | sets weights (1 is the default) |
//! | `PUT /quota` | `{"role": "eng", "guarantee": "cpus:4;mem:8192", "limit": "cpus:8"}` | sets a quota |
//! | `DELETE /quota/{role}` | | removes a quota (the role may hold `/`) |
//! | `POST /reserve` | `{"agent": "ID", "resources": "cpus(eng):2;mem(eng):1024"}` | reserves |
//! | `POST /unreserve` | `{"agent": "ID", "resources": "cpus(eng):2"}` | unreserves |
//!
//! All handlers sit in this one router, so an authentication layer can be
//! put in front of it in one place.

// The parsing helpers return the error answer itself, ready to send.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post, put};
use mezzo_proto::ids::AgentId;
use mezzo_proto::reservation::{ReservedResources, Role};
use mezzo_proto::resources::Resources;
use serde::Deserialize;

use crate::allocator::Quota;
use crate::core::PolicyRequest;
use crate::error::MasterError;
use crate::http::to_leader;
use crate::runtime::{Command, Handle};

/// How long a request waits for its registry op to commit.
const COMMIT_WAIT: Duration = Duration::from_secs(15);

/// The routes; the changing ones need the operator token (see
/// `docs/operator-api.md`), reading `/roles` does not.
pub fn router(handle: Handle, auth: &crate::operator::OperatorAuth) -> Router {
    let changes = Router::new()
        .route("/weights", put(set_weights))
        .route("/quota", put(set_quota))
        .route("/quota/{*role}", delete(remove_quota))
        .route("/reserve", post(reserve))
        .route("/unreserve", post(unreserve));
    Router::new()
        .route("/roles", get(roles))
        .merge(auth.protect(changes))
        .with_state(handle)
}

fn bad(msg: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": msg.to_string() })),
    )
        .into_response()
}

fn error(e: MasterError, path: &str) -> Response {
    match e {
        e @ MasterError::NotLeader { .. } => to_leader(e, path),
        e @ (MasterError::UnknownAgent(_) | MasterError::UnknownFramework(_)) => {
            (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
        MasterError::ShuttingDown => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "leadership changed before the change committed; check /roles and retry" })),
        )
            .into_response(),
        e => bad(e),
    }
}

/// Sends a request to the owner and waits for its commit.
async fn run(handle: &Handle, request: PolicyRequest, path: &str, done: serde_json::Value) -> Response {
    let asked = handle.ask(|reply| Command::Policy { request, reply });
    match tokio::time::timeout(COMMIT_WAIT, asked).await {
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            Json(serde_json::json!({ "error": "not committed within 15 s; it may still be applied: check /roles" })),
        )
            .into_response(),
        Ok(Err(e)) | Ok(Ok(Err(e))) => error(e, path),
        Ok(Ok(Ok(()))) => Json(done).into_response(),
    }
}

async fn roles(State(h): State<Handle>) -> Response {
    match h.ask(Command::State).await.and_then(|r| r) {
        Ok(v) => Json(v.allocation).into_response(),
        Err(e) => error(e, "/roles"),
    }
}

fn role(s: &str) -> Result<Role, Response> {
    Role::parse(s).map_err(bad)
}

async fn set_weights(State(h): State<Handle>, body: Result<Json<BTreeMap<String, f64>>, JsonRejection>) -> Response {
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
    let done = serde_json::json!({ "weights": &weights });
    run(&h, PolicyRequest::SetWeights(weights), "/weights", done).await
}

#[derive(Deserialize)]
struct QuotaBody {
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

async fn set_quota(State(h): State<Handle>, body: Result<Json<QuotaBody>, JsonRejection>) -> Response {
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
    let done = serde_json::json!({ "role": role, "quota": &quota });
    run(&h, PolicyRequest::SetQuota { role, quota }, "/quota", done).await
}

async fn remove_quota(State(h): State<Handle>, Path(r): Path<String>) -> Response {
    let role = match role(r.trim_start_matches('/')) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let path = format!("/quota/{role}");
    let done = serde_json::json!({ "role": role, "removed": true });
    run(
        &h,
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
struct ReserveBody {
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

async fn reserve(State(h): State<Handle>, body: Result<Json<ReserveBody>, JsonRejection>) -> Response {
    let Ok(Json(b)) = body else {
        return bad("expected {\"agent\": \"ID\", \"resources\": \"cpus(eng):2;mem(eng):1024\"}");
    };
    let (agent, resources) = match reservation(&b) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let done = serde_json::json!({ "agent": agent, "reserved": resources.to_string() });
    let req = PolicyRequest::Reserve {
        agent,
        resources,
        principal: b.principal,
    };
    run(&h, req, "/reserve", done).await
}

async fn unreserve(State(h): State<Handle>, body: Result<Json<ReserveBody>, JsonRejection>) -> Response {
    let Ok(Json(b)) = body else {
        return bad("expected {\"agent\": \"ID\", \"resources\": \"cpus(eng):2\"}");
    };
    let (agent, resources) = match reservation(&b) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let done = serde_json::json!({ "agent": agent, "unreserved": resources.to_string() });
    run(&h, PolicyRequest::Unreserve { agent, resources }, "/unreserve", done).await
}
