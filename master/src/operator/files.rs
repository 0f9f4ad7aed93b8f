//! The dashboard's and CLI's way to a task's sandbox: the master finds the
//! task's agent and passes the request on to that agent's files API
//! (`/files/<framework>/<task>/{browse,read}`), answering with the agent's
//! status and JSON. One origin for the browser, and the agent does the
//! confinement.

use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mezzo_proto::ids::{FrameworkId, TaskId};

use super::{Ops, bad, fail};
use crate::error::MasterError;

pub(super) async fn browse(
    State(ops): State<Ops>,
    u: OriginalUri,
    Path((fid, tid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    pass(&ops, &u, &fid, &tid, "browse", q).await
}

pub(super) async fn read(
    State(ops): State<Ops>,
    u: OriginalUri,
    Path((fid, tid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    pass(&ops, &u, &fid, &tid, "read", q).await
}

async fn pass(ops: &Ops, u: &OriginalUri, fid: &str, tid: &str, what: &str, q: Option<String>) -> Response {
    let ids = FrameworkId::parse(fid).and_then(|f| Ok((f, TaskId::parse(tid)?)));
    let (fid, tid) = match ids {
        Ok(v) => v,
        Err(e) => return fail(e.into(), ""),
    };
    let (f2, t2) = (fid.clone(), tid.clone());
    let agent = ops
        .handle
        .with_core(move |c| {
            let m = c?;
            let fw = m
                .frameworks
                .get(&f2)
                .ok_or_else(|| MasterError::UnknownFramework(f2.to_string()))?;
            let task = fw
                .tasks
                .get(&t2)
                .or_else(|| fw.completed.iter().rev().find(|t| t.id == t2))
                .ok_or_else(|| MasterError::UnknownTask(t2.to_string()))?;
            m.agents
                .get(&task.agent_id)
                .map(|a| a.http_address.clone())
                .filter(|a| !a.is_empty())
                .ok_or_else(|| MasterError::UnknownAgent(task.agent_id.to_string()))
        })
        .await
        .and_then(|r| r);
    let addr = match agent {
        Ok(a) => a,
        Err(e) => return fail(e, u.0.path_and_query().map(|p| p.as_str()).unwrap_or_default()),
    };
    // The query string goes on as it came: the agent decodes it once.
    let url = format!("http://{addr}/files/{fid}/{tid}/{what}?{}", q.unwrap_or_default());
    match ops.http.get(&url).send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match r.bytes().await {
                Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
                Err(e) => bad(StatusCode::BAD_GATEWAY, format!("agent {addr}: {e}")),
            }
        }
        Err(e) => bad(StatusCode::BAD_GATEWAY, format!("agent {addr} did not answer: {e}")),
    }
}
