//! Automatic acknowledgement and the implicit reconciliation after a
//! re-subscription. Both run beside the driver, through the ordinary call
//! path, so that a slow answer never stalls the event stream (a master may
//! push the reconciliation's updates before it answers the call).

use std::sync::Arc;

use mezzo_proto::v1;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use super::calls::Calls;
use crate::error::SdkError;

/// Most acknowledgements sent in one call.
const ACK_BATCH: usize = 1024;
/// Acknowledge calls in flight at once. An agent sends a task's next
/// update only once the current one is acknowledged, so an acknowledgement
/// queued behind a slow call delays the task's next update (STARTING's
/// holds back RUNNING): a few calls at once keep that wait short.
const ACK_CALLS: usize = 4;

/// True for updates the agent will resend until they are acknowledged;
/// master-generated and reconciliation updates carry no uuid.
pub(crate) fn needs_ack(status: &v1::TaskStatus) -> bool {
    !status.uuid.is_empty()
}

/// Starts the acknowledger and returns its queue. With fewer than
/// [`ACK_CALLS`] calls in flight it sends what is queued at once; otherwise
/// everything queued meanwhile goes in the next call. So acknowledgements
/// cost one call each at low rates and a fraction of one under load,
/// without ever waiting to fill a batch. It ends when the queue's sender is
/// dropped. A failure is harmless: the agent resends the update and it is
/// acknowledged then.
pub(crate) fn spawn_acker(calls: Calls) -> mpsc::UnboundedSender<v1::TaskStatus> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let slots = Arc::new(Semaphore::new(ACK_CALLS));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut batch = Vec::with_capacity(ACK_BATCH);
            if rx.recv_many(&mut batch, ACK_BATCH).await == 0 {
                return;
            }
            let calls = calls.clone();
            tokio::spawn(async move {
                acknowledge(&calls, &batch).await;
                drop(slot);
            });
        }
    });
    tx
}

async fn acknowledge(calls: &Calls, batch: &[v1::TaskStatus]) {
    match calls.acknowledge_all(batch).await {
        Ok(()) => debug!(count = batch.len(), "acknowledged updates"),
        // One bad entry (say, of an agent removed meanwhile) refuses the
        // whole call: the others go one by one.
        Err(SdkError::Rejected { message, .. }) if batch.len() > 1 => {
            debug!(%message, "batched acknowledgement refused; acknowledging one by one");
            for status in batch {
                if let Err(e) = calls.acknowledge(status).await {
                    warn!(task = %status.task_id, error = %e, "acknowledgement failed; the agent will resend");
                }
            }
        }
        Err(e) => warn!(count = batch.len(), error = %e, "acknowledgement failed; the agent will resend"),
    }
}

/// Asks for the state of every task, so the framework learns what changed
/// while it was away.
pub(crate) fn spawn_implicit_reconcile(calls: &Calls) {
    let calls = calls.clone();
    tokio::spawn(async move {
        if let Err(e) = calls.reconcile(Vec::new()).await {
            warn!(error = %e, "implicit reconciliation failed");
        }
    });
}
