//! Automatic acknowledgement and the implicit reconciliation after a
//! re-subscription. Both run beside the driver, through the ordinary call
//! path, so that a slow answer never stalls the event stream (a master may
//! push the reconciliation's updates before it answers the call).

use std::sync::Arc;

use mezzo_proto::v1;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{debug, warn};

use crate::Backoff;
use crate::calls::Calls;
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

enum AckMsg {
    Ack(v1::TaskStatus),
    /// Answered once everything queued before it has been answered.
    Flush(oneshot::Sender<()>),
}

/// The acknowledger's queue. With fewer than [`ACK_CALLS`] calls in flight
/// it sends what is queued at once; otherwise everything queued meanwhile
/// goes in the next call. So acknowledgements cost one call each at low
/// rates and a fraction of one under load, without ever waiting to fill a
/// batch. It ends when every clone of the queue is dropped. A failure is
/// harmless: the agent resends the update and it is acknowledged then.
#[derive(Clone, Debug)]
pub(crate) struct Acker(mpsc::UnboundedSender<AckMsg>);

impl std::fmt::Debug for AckMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AckMsg::Ack(s) => write!(f, "Ack({})", s.task_id),
            AckMsg::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl Acker {
    pub(crate) fn spawn(calls: Calls) -> Acker {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(ACK_CALLS));
        tokio::spawn(async move {
            let mut msgs = Vec::with_capacity(ACK_BATCH);
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                if rx.recv_many(&mut msgs, ACK_BATCH).await == 0 {
                    return;
                }
                let mut batch = Vec::new();
                let mut flushes = Vec::new();
                for msg in msgs.drain(..) {
                    match msg {
                        AckMsg::Ack(status) => batch.push(status),
                        AckMsg::Flush(done) => flushes.push(done),
                    }
                }
                if batch.is_empty() {
                    drop(slot);
                } else {
                    let calls = calls.clone();
                    tokio::spawn(async move {
                        acknowledge(&calls, &batch).await;
                        drop(slot);
                    });
                }
                if !flushes.is_empty() {
                    // Every slot free = every call sent so far answered.
                    if let Ok(all) = slots.clone().acquire_many_owned(ACK_CALLS as u32).await {
                        drop(all);
                    }
                    for done in flushes {
                        let _ = done.send(());
                    }
                }
            }
        });
        Acker(tx)
    }

    /// Queues an acknowledgement of `status`.
    pub(crate) fn ack(&self, status: v1::TaskStatus) {
        // Fails only once the acknowledger is gone, with the driver.
        let _ = self.0.send(AckMsg::Ack(status));
    }

    /// Resolves once every acknowledgement queued before the call has been
    /// answered (or has failed).
    pub(crate) async fn flush(&self) {
        let (done, answered) = oneshot::channel();
        if self.0.send(AckMsg::Flush(done)).is_ok() {
            let _ = answered.await;
        }
    }
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

/// How long the implicit reconciliation is asked again while the master
/// answers that agents are still re-registering (they are marked
/// unreachable after the master's agent timeout, so this is ample).
const IMPLICIT_RECONCILE_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Asks for the state of every task, so the framework learns what changed
/// while it was away; the answers end with `Event::Reconciled`. Asked
/// again, with backoff, while the master cannot answer yet (agents still
/// re-registering after a failover) or the call fails in transit.
pub(crate) fn spawn_implicit_reconcile(calls: &Calls) {
    let calls = calls.clone();
    tokio::spawn(async move {
        let mut backoff = Backoff::new(std::time::Duration::from_millis(200), std::time::Duration::from_secs(2));
        let until = tokio::time::Instant::now() + IMPLICIT_RECONCILE_FOR;
        loop {
            match calls.reconcile(Vec::new()).await {
                Ok(()) => return,
                Err(e @ (SdkError::Transport(_) | SdkError::Timeout)) if tokio::time::Instant::now() < until => {
                    debug!(error = %e, "implicit reconciliation not answered yet; asking again");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => {
                    warn!(error = %e, "implicit reconciliation failed");
                    return;
                }
            }
        }
    });
}
