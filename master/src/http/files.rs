//! The dashboard's and CLI's way to a task's sandbox: the master finds the
//! task's agent and passes the request on to that agent's files API
//! (`/files/<framework>/<task>/{browse,read}`, or for a task a custom
//! executor runs, that executor's sandbox), answering with the agent's
//! status and JSON. One origin for the browser, and the agent does the
//! confinement.

use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mezzo_proto::ids::{FrameworkId, TaskId};

use super::{HttpState, error, error_body, path_of};
use std::time::Duration;

use mezzo_proto::security::{Principal, https};

use crate::auth::{Action, Caller};
use crate::core::view;

pub(super) async fn browse(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    u: OriginalUri,
    Path((fid, tid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    pass(&s, &caller, &u, &fid, &tid, "browse", q).await
}

pub(super) async fn read(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    u: OriginalUri,
    Path((fid, tid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    pass(&s, &caller, &u, &fid, &tid, "read", q).await
}

async fn pass(
    s: &HttpState,
    caller: &Caller,
    u: &OriginalUri,
    fid: &str,
    tid: &str,
    what: &str,
    q: Option<String>,
) -> Response {
    let ids = FrameworkId::parse(fid).and_then(|f| Ok((f, TaskId::parse(tid)?)));
    let (fid, tid) = match ids {
        Ok(v) => v,
        Err(e) => return error(e.into(), ""),
    };
    let (f2, t2) = (fid.clone(), tid.clone());
    let found = s.handle.try_read(move |m| view::task_agent(m, &f2, &t2)).await;
    // The owner of a registered framework, or of one that has gone (its
    // tasks' output stays readable to it within the task history).
    let owner = s
        .raft
        .auth()
        .owner(&fid)
        .or_else(|| found.as_ref().ok().and_then(|a| a.removed_owner.clone()))
        .unwrap_or_default();
    if let Err(r) = s.check_owner_is(caller, Action::ReadSandbox, &owner) {
        return r;
    }
    let (addr, agent, executor) = match found {
        Ok(a) => (a.addr, a.principal, a.executor),
        Err(e) => return error(e, &path_of(u)),
    };
    // Only the agent that registered (its own certificate name) is asked,
    // and a redirect is not followed: the request goes nowhere else.
    let name = match agent.as_deref().map(str::parse::<Principal>) {
        Some(Ok(p)) => p.dns_name().unwrap_or_default(),
        _ => "agent.mezzo".to_owned(),
    };
    let client = match https::client(&s.transport, &name, Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => return error_body(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    // A task a custom executor runs shares the executor's sandbox. The
    // query string goes on as it came: the agent decodes it once.
    let sandbox = match executor {
        Some(e) => format!("{fid}/executors/{e}"),
        None => format!("{fid}/{tid}"),
    };
    let url = https::url(
        &s.transport,
        &addr,
        &format!("/files/{sandbox}/{what}?{}", q.unwrap_or_default()),
    );
    match client.get(&url).send().await {
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
