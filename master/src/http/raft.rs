//! The Raft routes: this master's view of the group (`/raft`), its
//! applied registry (`/raft/registry`, for comparing replicas), and
//! membership changes (`POST /raft/members {"address"}`, `DELETE
//! /raft/members/{id}`), which only the leader makes. Plain-text errors.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};

use super::{HttpState, to_leader};
use crate::auth::{Action, Caller};
use crate::error::MasterError;
use crate::raft::{MemberChange, MembershipError};

#[derive(serde::Deserialize)]
pub(super) struct AddMember {
    address: String,
}

pub(super) async fn add_member(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<AddMember>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(r) = s.check(&caller, Action::ManageMasters, "masters") {
        return r;
    }
    match body {
        Ok(Json(b)) => member_change(&s, MemberChange::Add { address: b.address }, "/raft/members").await,
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("expected {{\"address\": \"host:port\"}}: {e}"),
        )
            .into_response(),
    }
}

pub(super) async fn remove_member(
    State(s): State<HttpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = s.check(&caller, Action::ManageMasters, "masters") {
        return r;
    }
    match id.parse::<u64>() {
        Ok(id) => member_change(&s, MemberChange::Remove { id }, &format!("/raft/members/{id}")).await,
        Err(_) => (StatusCode::BAD_REQUEST, format!("master id {id:?} is not a number")).into_response(),
    }
}

/// Runs a membership change on the leader (a follower redirects with 307,
/// which keeps the method and body).
async fn member_change(s: &HttpState, change: MemberChange, path: &str) -> Response {
    match s.raft.change_members(change).await {
        Ok(id) => Json(serde_json::json!({ "id": id, "members": s.raft.members() })).into_response(),
        Err(MembershipError::NotLeader(leader)) => to_leader(MasterError::NotLeader { leader }, path),
        Err(e @ (MembershipError::BadAddress(_) | MembershipError::LastMember(_))) => {
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(e @ MembershipError::UnknownMember(_)) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
        Err(e @ (MembershipError::AlreadyMember { .. } | MembershipError::Busy | MembershipError::IsLeader(_))) => {
            (StatusCode::CONFLICT, e.to_string()).into_response()
        }
        Err(e @ MembershipError::Raft(_)) => unavailable(e),
    }
}

/// This master's applied registry (no redirect: for comparing replicas),
/// with frameworks' key-value data and sealed secrets shown only by
/// digest: replicas still compare, and no value leaves in a dump.
pub(super) async fn registry(State(s): State<HttpState>) -> Response {
    match s.raft.registry().await {
        Some(r) => Json(r.redacted()).into_response(),
        None => unavailable("raft node stopped"),
    }
}

pub(super) async fn status(State(s): State<HttpState>) -> Response {
    match s.raft.status().await {
        Some(s) => Json(s).into_response(),
        None => unavailable("raft node stopped"),
    }
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
}
