//! `GET /api/v1/events`: the cluster's changes as server-sent events, one
//! JSON object per event (`{"type": "task_updated", ...}`). A reader that
//! falls behind gets `{"type": "lagged", "missed": N}` and should re-read
//! the state it shows.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{OriginalUri, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{HttpState, error};

pub(super) async fn stream(State(s): State<HttpState>, u: OriginalUri) -> Response {
    // Subscribe first, then check leadership: nothing falls in between.
    let rx = s.handle.events();
    if let Err(e) = s.handle.read(|_| ()).await {
        return error(e, u.0.path());
    }
    let hello = futures::stream::once(async { Ok::<_, Infallible>(Event::default().data(r#"{"type":"hello"}"#)) });
    let events = BroadcastStream::new(rx).map(|item| {
        let data = match item {
            Ok(ev) => serde_json::to_string(&ev).unwrap_or_default(),
            Err(BroadcastStreamRecvError::Lagged(n)) => format!(r#"{{"type":"lagged","missed":{n}}}"#),
        };
        Ok::<_, Infallible>(Event::default().data(data))
    });
    Sse::new(hello.chain(events))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
