//! Acknowledgements of one Mesos subscription, batched on their way to
//! the core. A Mesos framework acknowledges each update in a call of its
//! own; Mezzo's SDK batches them. Each `ACKNOWLEDGE` is checked at the
//! edge and answered 202 at once (as Mesos answers it, before applying
//! it); the ones that arrive while the core applies a batch go together
//! in the next, so the owner task sees one call per batch, not per update.

use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use tokio::sync::{mpsc, oneshot};

use crate::auth::Caller;
use crate::runtime::{Call, Handle};

/// Acknowledgements queued at most per subscription; a client further
/// ahead waits for room (its call is answered later).
const QUEUE: usize = 16 * 1024;
/// Most acknowledgements in one core call.
const BATCH: usize = 1024;

/// What goes through a subscription's batcher.
pub enum Queued {
    /// One acknowledgement, checked: who made it, and what it acknowledges.
    Ack(Caller, AgentId, TaskId, Vec<u8>),
    /// Answered once every acknowledgement queued before it is applied:
    /// a later call (a kill, a teardown) reaches the core after them.
    Barrier(oneshot::Sender<()>),
}

/// The way into a subscription's batcher; the batcher ends when the last
/// sender goes (the stream closed).
pub type AckTx = mpsc::Sender<Queued>;

/// Starts the batcher of framework `fid`'s acknowledgements.
pub fn start(handle: Handle, fid: FrameworkId) -> AckTx {
    let (tx, mut rx) = mpsc::channel::<Queued>(QUEUE);
    tokio::spawn(async move {
        let mut queued = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut queued, BATCH).await > 0 {
            // Consecutive acknowledgements of one caller go in one call
            // (the core checks the caller's right once per call).
            let mut batch: Vec<(AgentId, TaskId, Vec<u8>)> = Vec::new();
            let mut of: Option<Caller> = None;
            for q in queued.drain(..) {
                match q {
                    Queued::Ack(caller, agent, task, uuid) => {
                        if of.as_ref().is_some_and(|c| *c != caller)
                            && let Some(c) = of.take()
                        {
                            apply(&handle, &fid, c, std::mem::take(&mut batch)).await;
                        }
                        of = Some(caller);
                        batch.push((agent, task, uuid));
                    }
                    Queued::Barrier(done) => {
                        if let Some(c) = of.take() {
                            apply(&handle, &fid, c, std::mem::take(&mut batch)).await;
                        }
                        let _ = done.send(());
                    }
                }
            }
            if let Some(c) = of.take() {
                apply(&handle, &fid, c, std::mem::take(&mut batch)).await;
            }
        }
    });
    tx
}

/// Waits until the acknowledgements queued so far are applied.
pub async fn flush(tx: &AckTx) {
    let (done, applied) = oneshot::channel();
    if tx.send(Queued::Barrier(done)).await.is_ok() {
        let _ = applied.await;
    }
}

/// Applies a batch; a refused batch (one of its agents is gone, say) is
/// applied one by one, so the others still count. Refusals are only
/// logged: the call was answered already, as on Mesos.
async fn apply(handle: &Handle, fid: &FrameworkId, caller: Caller, batch: Vec<(AgentId, TaskId, Vec<u8>)>) {
    let single = batch.len() == 1;
    let Err(e) = handle
        .call(fid.clone(), Call::Acknowledge(batch.clone()), caller.clone())
        .await
    else {
        return;
    };
    if single {
        tracing::debug!(framework = %fid, error = %e, "acknowledgement refused");
        return;
    }
    for ack in batch {
        if let Err(e) = handle
            .call(fid.clone(), Call::Acknowledge(vec![ack]), caller.clone())
            .await
        {
            tracing::debug!(framework = %fid, error = %e, "acknowledgement refused");
        }
    }
}
