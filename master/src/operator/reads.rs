//! GET handlers of the operator API.

use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use mezzo_proto::ids::{FrameworkId, TaskId};
use serde::{Deserialize, Serialize};

use super::auth::MaybeOperator;
use super::sampler::Sample;
use super::{Ops, bad, fail, query, reply};
use crate::error::MasterError;
use crate::raft::RaftStatus;

fn uri(u: &OriginalUri) -> String {
    u.0.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default()
}

fn bad_query(e: QueryRejection) -> Response {
    bad(StatusCode::BAD_REQUEST, format!("bad query string: {}", e.body_text()))
}

/// Runs a read on the core and answers it.
async fn read<T: Serialize + Send + 'static>(
    ops: &Ops,
    path: String,
    f: impl FnOnce(&crate::core::Master) -> Result<T, MasterError> + Send + 'static,
) -> Response {
    let r = ops.handle.with_core(move |c| c.and_then(|m| f(m))).await;
    reply(r.and_then(|r| r), &path)
}

#[derive(Debug, Serialize)]
struct OverviewBody {
    #[serde(flatten)]
    overview: query::Overview,
    raft: Option<RaftStatus>,
    samples: Vec<Sample>,
}

pub(super) async fn overview(State(ops): State<Ops>, u: OriginalUri) -> Response {
    let r = ops.handle.with_core(|c| c.map(|m| query::overview(m))).await;
    match r.and_then(|r| r) {
        Ok(overview) => Json(OverviewBody {
            overview,
            raft: ops.raft.status().await,
            samples: ops.samples.borrow().as_ref().clone(),
        })
        .into_response(),
        Err(e) => fail(e, &uri(&u)),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    status: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// A paged list: checks `limit`/`offset`, then lists on the core.
async fn paged<T: Serialize + Send + 'static>(
    ops: &Ops,
    u: &OriginalUri,
    q: Result<Query<PageQuery>, QueryRejection>,
    list: fn(&crate::core::Master, Option<&str>, usize, usize) -> query::Page<T>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    read(ops, uri(u), move |m| {
        let (limit, offset) = query::page(q.limit, q.offset)?;
        Ok(list(m, q.status.as_deref(), limit, offset))
    })
    .await
}

pub(super) async fn agents(
    State(ops): State<Ops>,
    u: OriginalUri,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    paged(&ops, &u, q, query::agents).await
}

pub(super) async fn frameworks(
    State(ops): State<Ops>,
    u: OriginalUri,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    paged(&ops, &u, q, |m, _, limit, offset| query::frameworks(m, limit, offset)).await
}

pub(super) async fn tasks(
    State(ops): State<Ops>,
    u: OriginalUri,
    q: Result<Query<query::TaskFilter>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let q = match q.check() {
        Ok(q) => q,
        Err(e) => return fail(e, ""),
    };
    read(&ops, uri(&u), move |m| Ok(query::tasks(m, &q))).await
}

pub(super) async fn task(
    State(ops): State<Ops>,
    u: OriginalUri,
    MaybeOperator(operator): MaybeOperator,
    Path((fid, tid)): Path<(String, String)>,
) -> Response {
    let ids = FrameworkId::parse(&fid).and_then(|f| Ok((f, TaskId::parse(&tid)?)));
    let (fid, tid) = match ids {
        Ok(v) => v,
        Err(e) => return fail(e.into(), ""),
    };
    read(&ops, uri(&u), move |m| query::task(m, &fid, &tid, operator)).await
}

pub(super) async fn roles(State(ops): State<Ops>, u: OriginalUri) -> Response {
    read(&ops, uri(&u), |m| Ok(query::roles(m))).await
}

#[derive(Debug, Serialize)]
struct Masters {
    /// This master's Raft view (the leader's includes every peer's match index).
    raft: Option<RaftStatus>,
    members: std::collections::BTreeMap<u64, String>,
}

/// Answered by any master (no redirect): each tells its own Raft view.
pub(super) async fn masters(State(ops): State<Ops>) -> Response {
    Json(Masters {
        raft: ops.raft.status().await,
        members: ops.raft.members(),
    })
    .into_response()
}

pub(super) async fn why_framework(State(ops): State<Ops>, u: OriginalUri, Path(fid): Path<String>) -> Response {
    let fid = match FrameworkId::parse(&fid) {
        Ok(f) => f,
        Err(e) => return fail(e.into(), ""),
    };
    read(&ops, uri(&u), move |m| query::why_framework(m, &fid)).await
}

pub(super) async fn why_task(State(ops): State<Ops>, u: OriginalUri, Path(tid): Path<String>) -> Response {
    let tid = match TaskId::parse(&tid) {
        Ok(t) => t,
        Err(e) => return fail(e.into(), ""),
    };
    read(&ops, uri(&u), move |m| query::why_task(m, &tid)).await
}
