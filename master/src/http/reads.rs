//! The GET routes about the cluster: `/state` and the operator API's
//! reads under `/api/v1/`. Each answer is a read model computed on the
//! owner task ([`crate::core::view`]); a follower redirects to the leader.

use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use mezzo_proto::ids::{FrameworkId, TaskId};
use serde::{Deserialize, Serialize};

use super::{HttpState, error, error_body, path_of, reply, to_leader};
use crate::auth::{Action, Caller};
use crate::core::Master;
use crate::core::view::{self, Page, TaskFilter};
use crate::error::MasterError;
use crate::history::Sample;
use crate::http::state_reads::Encoding;
use crate::raft::RaftStatus;

fn bad_query(e: QueryRejection) -> Response {
    error_body(StatusCode::BAD_REQUEST, format!("bad query string: {}", e.body_text()))
}

/// Runs a read model on the owner task and answers it.
async fn read<T: Serialize + Send + 'static>(
    s: &HttpState,
    path: String,
    read: impl FnOnce(&Master) -> Result<T, MasterError> + Send + 'static,
) -> Response {
    reply(s.handle.try_read(read).await, &path)
}

/// `/state`: the whole leader (a follower redirects, in plain text),
/// written off the owner task and shared by concurrent readers; gzipped
/// for a reader that accepts it.
pub(super) async fn state(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    let encoding = if accepts_gzip(&headers) {
        Encoding::Gzip
    } else {
        Encoding::Identity
    };
    match s.state.get(encoding).await {
        Ok(json) => {
            let mut r = axum::body::Body::from_stream(json.into_stream()).into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            if encoding == Encoding::Gzip {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            r
        }
        Err(e @ MasterError::Internal(_)) => error(e, "/state"),
        Err(e) => to_leader(e, "/state"),
    }
}

/// Whether `Accept-Encoding` names gzip with a weight above zero
/// (RFC 9110 12.5.3; `*` is not taken as gzip).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    (headers.get_all(header::ACCEPT_ENCODING).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let weight = parts
                .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok());
            name.eq_ignore_ascii_case("gzip") && weight.is_some_and(|q| q > 0.0)
        })
}

/// `/api/v1/overview`: the leader's overview with this master's Raft view
/// and the last hour of utilisation samples (from the registry, so they
/// survive a failover).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverviewBody {
    #[serde(flatten)]
    pub overview: view::Overview,
    pub raft: Option<RaftStatus>,
    pub samples: Vec<Sample>,
}

pub(super) async fn overview(State(s): State<HttpState>, u: OriginalUri) -> Response {
    match s.handle.read(|m| (view::overview(m), view::samples(m))).await {
        Ok((overview, samples)) => Json(OverviewBody {
            overview,
            raft: s.raft.status().await,
            samples,
        })
        .into_response(),
        Err(e) => error(e, &path_of(&u)),
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
    s: &HttpState,
    u: &OriginalUri,
    q: Result<Query<PageQuery>, QueryRejection>,
    list: fn(&Master, Option<&str>, usize, usize) -> Page<T>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    read(s, path_of(u), move |m| {
        let (limit, offset) = view::pages::page(q.limit, q.offset)?;
        Ok(list(m, q.status.as_deref(), limit, offset))
    })
    .await
}

pub(super) async fn agents(
    State(s): State<HttpState>,
    u: OriginalUri,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    paged(&s, &u, q, view::agents).await
}

pub(super) async fn frameworks(
    State(s): State<HttpState>,
    u: OriginalUri,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    paged(&s, &u, q, |m, _, limit, offset| view::frameworks(m, limit, offset)).await
}

pub(super) async fn tasks(
    State(s): State<HttpState>,
    u: OriginalUri,
    q: Result<Query<TaskFilter>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let q = match q.check() {
        Ok(q) => q,
        Err(e) => return error(e, ""),
    };
    read(&s, path_of(&u), move |m| Ok(view::tasks(m, &q))).await
}

pub(super) async fn task(
    State(s): State<HttpState>,
    u: OriginalUri,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((fid, tid)): Path<(String, String)>,
) -> Response {
    let ids = FrameworkId::parse(&fid).and_then(|f| Ok((f, TaskId::parse(&tid)?)));
    let (fid, tid) = match ids {
        Ok(v) => v,
        Err(e) => return error(e.into(), ""),
    };
    // Environments often hold secrets: shown only to whoever may see them.
    let environment = s.check_owner(&caller, Action::ViewEnvironment, &fid).is_ok();
    read(&s, path_of(&u), move |m| view::task(m, &fid, &tid, environment)).await
}

/// `/api/v1/masters`: this master's Raft view and the members.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MastersBody {
    /// This master's Raft view (the leader's includes every peer's match index).
    pub raft: Option<RaftStatus>,
    pub members: std::collections::BTreeMap<u64, String>,
}

/// Answered by any master (no redirect): each tells its own Raft view.
pub(super) async fn masters(State(s): State<HttpState>) -> Response {
    Json(MastersBody {
        raft: s.raft.status().await,
        members: s.raft.members(),
    })
    .into_response()
}

pub(super) async fn why_framework(State(s): State<HttpState>, u: OriginalUri, Path(fid): Path<String>) -> Response {
    let fid = match FrameworkId::parse(&fid) {
        Ok(f) => f,
        Err(e) => return error(e.into(), ""),
    };
    read(&s, path_of(&u), move |m| view::why_framework(m, &fid)).await
}

pub(super) async fn why_task(State(s): State<HttpState>, u: OriginalUri, Path(tid): Path<String>) -> Response {
    let tid = match TaskId::parse(&tid) {
        Ok(t) => t,
        Err(e) => return error(e.into(), ""),
    };
    read(&s, path_of(&u), move |m| view::why_task(m, &tid)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_taken_only_when_accepted_with_a_weight() {
        let accepts = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).expect("header"));
            accepts_gzip(&h)
        };
        for yes in ["gzip", "GZip", "deflate, gzip", "br;q=1, gzip;q=0.5", "gzip ; q=0.001"] {
            assert!(accepts(yes), "{yes}");
        }
        for no in [
            "",
            "identity",
            "*",
            "gzip;q=0",
            "gzip;q=0.0",
            "gzip;q=nope",
            "x-gzip",
            "deflate",
        ] {
            assert!(!accepts(no), "{no}");
        }
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
