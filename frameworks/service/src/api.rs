//! The framework's HTTP API (axum), a thin edge over the owner's commands.
//!
//! | Route | |
//! |---|---|
//! | `GET /health` | `ok` |
//! | `GET /v1/services` | every service's summary |
//! | `POST /v1/services` | deploy: the body is a TOML service file |
//! | `GET /v1/services/{name}` | status: counts, state, instances, events |
//! | `GET /v1/services/{name}/endpoints` | healthy instances' host:port |
//! | `POST /v1/services/{name}/scale` | `{"instances": N}` |
//! | `POST /v1/services/{name}/restart` | rolling restart |
//! | `POST /v1/services/{name}/rollback` | back to the previous version |
//! | `DELETE /v1/services/{name}` | stop every instance, then forget it |
//!
//! Every route but `/health` needs the framework's API token as a bearer
//! token (`mezzo_sdk::api_token`; 401 without it).
//!
//! Errors are `{"error": "..."}` with 400 (bad file or body), 404 (unknown
//! service), 409 (not possible now), 422 (resources no agent has) or 503
//! (not connected; nothing changed).

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::error::ApiError;
use crate::owner::{Cmd, Reply};
use crate::spec::{MAX_FILE_BYTES, ServiceSpec};
use crate::view::{ErrorBody, ScaleBody};

#[derive(Clone)]
struct Ctx {
    cmds: mpsc::Sender<Cmd>,
    masters: mezzo_sdk::MasterHttp,
}

/// The router; the masters are asked for agents' sizes when a service is
/// deployed.
/// `token` guards every route but `/health`.
pub(crate) fn router(cmds: mpsc::Sender<Cmd>, masters: mezzo_sdk::MasterHttp, token: String) -> Router {
    // Every route of `guarded` (only those added before `route_layer`).
    let guarded = Router::new()
        .route("/v1/services", get(list).post(deploy))
        .route("/v1/services/{name}", get(status).delete(remove))
        .route("/v1/services/{name}/endpoints", get(endpoints))
        .route("/v1/services/{name}/scale", post(scale))
        .route("/v1/services/{name}/restart", post(restart))
        .route("/v1/services/{name}/rollback", post(rollback))
        .route_layer(axum::middleware::from_fn_with_state(token, require_token));
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .merge(guarded)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FILE_BYTES + 1))
        .with_state(Ctx { cmds, masters })
}

async fn require_token(State(token): State<String>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|h| h.as_bytes());
    if mezzo_sdk::api_token::authorized(given, &token) {
        return next.run(req).await;
    }
    let error = "this call needs the service framework's API token (its work dir's api-token) as a bearer token";
    (StatusCode::UNAUTHORIZED, Json(ErrorBody { error: error.into() })).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// Sends a command and waits for its answer.
async fn ask<T: Serialize>(c: &Ctx, make: impl FnOnce(Reply<T>) -> Cmd) -> Response {
    let (tx, rx) = oneshot::channel();
    let gone = || ApiError::Unavailable("the framework is stopping".into()).into_response();
    if c.cmds.send(make(tx)).await.is_err() {
        return gone();
    }
    match rx.await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => gone(),
    }
}

async fn list(State(c): State<Ctx>) -> Response {
    ask(&c, Cmd::List).await
}

async fn status(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    ask(&c, |r| Cmd::Status(name, r)).await
}

async fn endpoints(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    ask(&c, |r| Cmd::Endpoints(name, r)).await
}

async fn restart(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    ask(&c, |r| Cmd::Restart(name, r)).await
}

async fn rollback(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    ask(&c, |r| Cmd::Rollback(name, r)).await
}

async fn remove(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    ask(&c, |r| Cmd::Remove(name, r)).await
}

async fn scale(State(c): State<Ctx>, Path(name): Path<String>, body: String) -> Response {
    // Parsed by hand so that any content type is accepted.
    match serde_json::from_str::<ScaleBody>(&body) {
        Ok(b) => ask(&c, |r| Cmd::Scale(name, b.instances, r)).await,
        Err(e) => ApiError::BadRequest(format!("expected {{\"instances\": N}}: {e}")).into_response(),
    }
}

async fn deploy(State(c): State<Ctx>, body: String) -> Response {
    let spec = match ServiceSpec::parse(&body) {
        Ok(s) => s,
        Err(e) => return ApiError::BadRequest(e.to_string()).into_response(),
    };
    if let Err(e) = check_fits(&c, &spec).await {
        return e.into_response();
    }
    ask(&c, |r| Cmd::Deploy(Box::new(spec), r)).await
}

/// Refuses a service whose instance fits on no registered agent, even an
/// empty one (from the masters' `/state`). Unknown when no master
/// answers or no agent is registered: then it is accepted, and waits.
async fn check_fits(c: &Ctx, spec: &ServiceSpec) -> Result<(), ApiError> {
    let state = match c.masters.get_json::<Value>("/state").await {
        Ok(v) => v,
        Err(e) => {
            warn!("cannot read the masters' /state: {e}");
            return Ok(());
        }
    };
    fits_some_agent(spec, &state).map_err(ApiError::Infeasible)
}

/// The pure part of [`check_fits`].
pub(crate) fn fits_some_agent(spec: &ServiceSpec, state: &Value) -> Result<(), String> {
    let need = spec.resources().map_err(|e| e.to_string())?;
    let Some(agents) = state["agents"].as_array().filter(|a| !a.is_empty()) else {
        return Ok(());
    };
    let mut largest = String::new();
    for a in agents {
        let Ok(total) = serde_json::from_value::<mezzo_sdk::Resources>(a["total"].clone()) else {
            continue;
        };
        if total.contains(&need) && total.port_count() >= spec.ports.len() as u64 {
            return Ok(());
        }
        if largest.is_empty() {
            largest = format!("e.g. agent {} has {total}", a["hostname"].as_str().unwrap_or("?"),);
        }
    }
    Err(format!(
        "service file: field `resources`: {} with {} port(s) per instance fits on none of the {} agent(s), even when empty ({largest})",
        spec.resources,
        spec.ports.len(),
        agents.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infeasible_resources_are_named() {
        let spec = |res: &str, ports: &str| {
            ServiceSpec::parse(&format!(
                "name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"{res}\"\nports = {ports}\n"
            ))
            .expect("spec")
        };
        let state = serde_json::json!({"agents": [
            {"hostname": "a", "total": {"cpus": 2.0, "mem": 1024, "disk": 0, "ports": "[31000-31001]"}},
            {"hostname": "b", "total": {"cpus": 8.0, "mem": 512, "disk": 0, "ports": ""}},
        ]});
        assert!(fits_some_agent(&spec("cpus:2;mem:1024", "[\"a\", \"b\"]"), &state).is_ok());
        assert!(fits_some_agent(&spec("cpus:8;mem:512", "[]"), &state).is_ok());
        let err = fits_some_agent(&spec("cpus:8;mem:1024", "[]"), &state).expect_err("too big");
        assert!(
            err.contains("`resources`") && err.contains("none of the 2 agent(s)"),
            "{err}"
        );
        assert!(
            fits_some_agent(&spec("cpus:1", "[\"a\", \"b\", \"c\"]"), &state).is_err(),
            "3 ports"
        );
        assert!(fits_some_agent(&spec("cpus:100", "[]"), &serde_json::json!({"agents": []})).is_ok());
    }
}
