//! `GET /sandbox/{framework_id}/{task_id}/{stdout|stderr}`: the tail of a
//! task's output, for `mezzo batch logs` and operators. Only tasks the
//! agent still tracks (running or recently completed) are served, and only
//! those two files, so no path from the request reaches the file system.

use std::io::SeekFrom;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::http::HttpState;

/// Most bytes returned: the end of the file.
pub const MAX_TAIL: u64 = 1024 * 1024;

pub async fn task_file(
    State(s): State<HttpState>,
    Path((framework_id, task_id, file)): Path<(String, String, String)>,
) -> Response {
    if file != "stdout" && file != "stderr" {
        return (
            StatusCode::BAD_REQUEST,
            format!("file {file:?}: only stdout and stderr"),
        )
            .into_response();
    }
    // Live tasks and the recently completed ones the agent still knows.
    let tasks = match s.table.reregistration().await {
        Ok(t) => t,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let Some(task) = tasks
        .iter()
        .find(|t| t.key.framework_id.to_string() == framework_id && t.key.task_id.to_string() == task_id)
    else {
        let msg = format!("task {task_id} of framework {framework_id} is not known here (any more)");
        return (StatusCode::NOT_FOUND, msg).into_response();
    };
    let path = task.sandbox.join(&file);
    match tail(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, format!("{}: {e}", path.display())).into_response(),
    }
}

async fn tail(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut f = tokio::fs::File::open(path).await?;
    let len = f.metadata().await?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(MAX_TAIL))).await?;
    let mut out = Vec::new();
    f.take(MAX_TAIL).read_to_end(&mut out).await?;
    Ok(out)
}
