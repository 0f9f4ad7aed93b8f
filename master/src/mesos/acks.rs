//! Acknowledgements of one Mesos subscription, batched on their way to
//! the core. A Mesos framework acknowledges each update in a call of its
//! own; Mezzo's SDK batches them. Each `ACKNOWLEDGE` is checked at the
//! edge and answered 202 at once (as Mesos answers it, before applying
//! it); the ones that arrive while the core applies a batch go together
//! in the next, so the owner task sees one call per batch, not per update.

use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::runtime::{Call, Handle};

/// Acknowledgements queued at most per subscription; a client further
/// ahead waits for room (its call is answered later).
const QUEUE: usize = 16 * 1024;
/// Most acknowledgements in one core call.
const BATCH: usize = 1024;

/// One acknowledgement, checked: who made it, and what it acknowledges.
pub type Ack = (Caller, AgentId, TaskId, Vec<u8>);

/// The way into a subscription's batcher; the batcher ends when the last
/// sender goes (the stream closed).
pub type AckTx = mpsc::Sender<Ack>;

/// Starts the batcher of framework `fid`'s acknowledgements.
pub fn start(handle: Handle, fid: FrameworkId) -> AckTx {
    let (tx, mut rx) = mpsc::channel::<Ack>(QUEUE);
    tokio::spawn(async move {
        let mut queued = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut queued, BATCH).await > 0 {
            // Consecutive acknowledgements of one caller go in one call
            // (the core checks the caller's right once per call).
            let mut rest = queued.drain(..).peekable();
            while let Some((caller, agent, task, uuid)) = rest.next() {
                let mut batch = vec![(agent, task, uuid)];
                while let Some((_, a, t, u)) = rest.next_if(|(c, ..)| *c == caller) {
                    batch.push((a, t, u));
                }
                apply(&handle, &fid, caller, batch).await;
            }
        }
    });
    tx
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
