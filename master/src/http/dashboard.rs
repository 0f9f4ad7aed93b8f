//! The web dashboard: plain HTML, JS and CSS embedded in the binary (no
//! build step), served at `/` and `/ui/<file>`. A follower redirects `/`
//! to the leader, whose data and event stream the page then uses.
//!
//! A browser has no client certificate: the page asks for a bearer token
//! (`mezzo dashboard` prints one) and `POST /ui/login` keeps it in an
//! HttpOnly, Secure, SameSite=Strict cookie, which the authentication
//! layer reads like an `Authorization` header.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use axum::Json;
use axum::extract::rejection::JsonRejection;

use super::{HttpState, error, error_body};
use crate::auth::Caller;
use crate::http::authn::COOKIE;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

pub(super) async fn index(State(s): State<HttpState>) -> Response {
    match s.handle.read(|_| ()).await {
        Ok(()) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            INDEX,
        )
            .into_response(),
        Err(e) => error(e, "/"),
    }
}

pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return error_body(StatusCode::NOT_FOUND, format!("no dashboard file {file:?}")),
    };
    (
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct Login {
    token: String,
}

/// Checks a bearer token and keeps it in the session cookie.
pub(super) async fn login(State(s): State<HttpState>, body: Result<Json<Login>, JsonRejection>) -> Response {
    let Ok(Json(login)) = body else {
        return error_body(StatusCode::BAD_REQUEST, "expected {\"token\": \"mzt....\"}");
    };
    let token = login.token.trim().to_owned();
    let mut headers = axum::http::HeaderMap::new();
    match format!("Bearer {token}").parse() {
        Ok(v) => headers.insert(header::AUTHORIZATION, v),
        Err(_) => return error_body(StatusCode::BAD_REQUEST, "the token holds characters a token never has"),
    };
    match s.authn.caller(None, &headers) {
        Ok(Caller::Authenticated { principal, .. }) => {
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict");
            (
                [(header::SET_COOKIE, cookie)],
                Json(serde_json::json!({ "principal": principal.to_string() })),
            )
                .into_response()
        }
        Ok(_) => error_body(StatusCode::BAD_REQUEST, "no token given"),
        Err(e) => error_body(StatusCode::UNAUTHORIZED, e.to_string()),
    }
}

/// Forgets the session cookie.
pub(super) async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], StatusCode::NO_CONTENT).into_response()
}
