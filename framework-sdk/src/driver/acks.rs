//! Automatic acknowledgement and the implicit reconciliation after a
//! re-subscription. Both run beside the driver, through the ordinary call
//! path, so that a slow answer never stalls the event stream (a master may
//! push the reconciliation's updates before it answers the call).

use mezzo_proto::v1;
use tracing::{debug, warn};

use super::calls::Calls;

/// True for updates the agent will resend until they are acknowledged;
/// master-generated and reconciliation updates carry no uuid.
pub(crate) fn needs_ack(status: &v1::TaskStatus) -> bool {
    !status.uuid.is_empty()
}

/// Acknowledges `status` in the background. A failure is harmless: the
/// agent resends the update and it is acknowledged then.
pub(crate) fn spawn_ack(calls: &Calls, status: v1::TaskStatus) {
    let calls = calls.clone();
    tokio::spawn(async move {
        match calls.acknowledge(&status).await {
            Ok(()) => debug!(task = %status.task_id, "acknowledged update"),
            Err(e) => warn!(task = %status.task_id, error = %e, "acknowledgement failed; the agent will resend"),
        }
    });
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
