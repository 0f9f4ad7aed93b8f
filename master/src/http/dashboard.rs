//! The web dashboard: plain HTML, JS and CSS embedded in the binary (no
//! build step), served at `/` and `/ui/<file>`. A follower redirects `/`
//! to the leader, whose data and event stream the page then uses.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{HttpState, error, error_body};

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
