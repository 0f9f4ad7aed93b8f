//! The dashboard's and CLI's way to a task's sandbox: the master finds the
//! task's agent and passes the request on to that agent's files API
//! (`/files/<framework>/<task>/{browse,read}`), answering with the agent's
//! status and JSON. One origin for the browser, and the agent does the
//! confinement.

use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mezzo_proto::ids::{FrameworkId, TaskId};

use super::{HttpState, error, error_body, path_of};
use crate::core::view;

pub(super) async fn browse(
    State(s): State<HttpState>,
    u: OriginalUri,
    Path((fid, tid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    pass(&s, &u, &fid, &tid, "browse", q).await
}

pub(super) async fn read(
    State(s): State<HttpState>,
    u: OriginalUri,
    Path((fid, tid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    pass(&s, &u, &fid, &tid, "read", q).await
}

async fn pass(s: &HttpState, u: &OriginalUri, fid: &str, tid: &str, what: &str, q: Option<String>) -> Response {
    let ids = FrameworkId::parse(fid).and_then(|f| Ok((f, TaskId::parse(tid)?)));
    let (fid, tid) = match ids {
        Ok(v) => v,
        Err(e) => return error(e.into(), ""),
    };
    let (f2, t2) = (fid.clone(), tid.clone());
    let addr = match s.handle.try_read(move |m| view::task_agent_address(m, &f2, &t2)).await {
        Ok(a) => a,
        Err(e) => return error(e, &path_of(u)),
    };
    // The query string goes on as it came: the agent decodes it once.
    let url = format!("http://{addr}/files/{fid}/{tid}/{what}?{}", q.unwrap_or_default());
    match s.agents.get(&url).send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match r.bytes().await {
                Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
                Err(e) => error_body(StatusCode::BAD_GATEWAY, format!("agent {addr}: {e}")),
            }
        }
        Err(e) => error_body(StatusCode::BAD_GATEWAY, format!("agent {addr} did not answer: {e}")),
    }
}
