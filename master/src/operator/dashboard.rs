//! The web dashboard: plain HTML, JS and CSS embedded in the binary (no
//! build step), served at `/` and `/ui/<file>`. A follower redirects `/`
//! to the leader, whose data and event stream the page then uses.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Ops, bad};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

pub(super) async fn index(State(ops): State<Ops>) -> Response {
    match ops.handle.with_core(|c| c.map(|_| ())).await.and_then(|r| r) {
        Ok(()) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            INDEX,
        )
            .into_response(),
        Err(e) => super::fail(e, "/"),
    }
}

pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return bad(StatusCode::NOT_FOUND, format!("no dashboard file {file:?}")),
    };
    (
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}
