//! `/state` in batches, as Mesos 1.7 answers it: a read that arrives
//! while a snapshot is being written waits for the next one, and every
//! read waiting then shares it. The snapshot is taken on the owner task
//! (a pointer per task, see [`StateSnapshot`]) and written to JSON on the
//! blocking pool, so ten clients polling a big cluster cost about what
//! one does and never hold the owner task while JSON is written.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::core::view::state::StateSnapshot;
use crate::error::MasterError;
use crate::runtime::Handle;

type Reply = oneshot::Sender<Result<Bytes, MasterError>>;

/// The way to the task that answers `/state`.
#[derive(Debug, Clone)]
pub(crate) struct StateReads {
    tx: mpsc::Sender<Reply>,
}

impl StateReads {
    /// Starts the answering task; it ends with the last handle.
    pub(crate) fn start(handle: Handle) -> StateReads {
        // Readers beyond this many wait to be queued: back-pressure, not
        // an unbounded list of open requests.
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(answer(handle, rx));
        StateReads { tx }
    }

    /// `/state` as JSON, taken after this call began.
    pub(crate) async fn get(&self) -> Result<Bytes, MasterError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(reply).await.map_err(|_| MasterError::ShuttingDown)?;
        answer.await.map_err(|_| MasterError::ShuttingDown)?
    }
}

async fn answer(handle: Handle, mut rx: mpsc::Receiver<Reply>) {
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let json = write(&handle).await;
        for reply in waiting {
            let _ = reply.send(json.clone());
        }
    }
}

async fn write(handle: &Handle) -> Result<Bytes, MasterError> {
    let snapshot: StateSnapshot = handle.read(|m| m.state_snapshot(true)).await?;
    tokio::task::spawn_blocking(move || snapshot.to_json())
        .await
        .map_err(|e| MasterError::Internal(format!("writing /state: {e}")))?
        .map(Bytes::from)
        .map_err(|e| MasterError::Internal(format!("writing /state: {e}")))
}
