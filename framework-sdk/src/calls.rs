//! The call path: every unary call (the framework's, the [`Kv`](crate::Kv)'s
//! and the driver's own acknowledgements and reconciliations) goes through
//! [`Calls::send`], reading the connection the driver publishes as a
//! [`Session`].
//!
//! A leaf below both the driver and the key-value handle: it knows neither,
//! so imports point one way (`driver` → `calls`, `kv` → `calls`).

use std::future::Future;
use std::time::Duration;

use mezzo_proto::security::grpc::BearerAuth;
use mezzo_proto::v1;
use mezzo_proto::v1::scheduler_client::SchedulerClient;
use tokio::sync::{mpsc, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::debug;

use crate::error::SdkError;
use crate::suppressed::Suppressed;
use crate::task::millis;

/// Metadata key with which a non-leading master names the leader.
pub(crate) const LEADER_METADATA: &str = "mezzo-leader";

/// A scheduler client whose calls carry the framework's bearer token, if
/// its credentials are a token.
pub(crate) type Client = SchedulerClient<InterceptedService<Channel, BearerAuth>>;

/// What the handles can see of the driver, published through a watch.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// Known once the first subscription succeeded.
    pub(crate) framework_id: Option<String>,
    pub(crate) link: Link,
}

// One per session, read through a watch: the size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub(crate) enum Link {
    /// No usable subscription right now.
    Connecting,
    /// Subscribed; calls go through this client (its address, for logs).
    Connected { client: Client, master: String },
    /// The driver has ended; it will not come back.
    Stopped,
}

/// Messages from the call path to the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// A call was answered by a master that is not the leader.
    FollowLeader(String),
}

/// The leader named by an UNAVAILABLE answer, if any.
pub(crate) fn leader_hint(status: &tonic::Status) -> Option<String> {
    if status.code() != tonic::Code::Unavailable {
        return None;
    }
    let leader = status.metadata().get(LEADER_METADATA)?.to_str().ok()?.trim();
    (!leader.is_empty()).then(|| leader.to_owned())
}

type Reply = Result<tonic::Response<v1::CallResponse>, tonic::Status>;

/// Cheap, cloneable access to the current connection.
#[derive(Clone, Debug)]
pub(crate) struct Calls {
    session: watch::Receiver<Session>,
    cmds: mpsc::Sender<Command>,
    timeout: Duration,
    /// What the framework's suppress and revive calls left suppressed.
    suppressed: Suppressed,
}

impl Calls {
    pub(crate) fn new(
        session: watch::Receiver<Session>,
        cmds: mpsc::Sender<Command>,
        timeout: Duration,
        suppressed: Suppressed,
    ) -> Self {
        Calls {
            session,
            cmds,
            timeout,
            suppressed,
        }
    }

    /// The roles the next subscription names as suppressed.
    pub(crate) fn suppressed_roles(&self) -> Vec<String> {
        self.suppressed.roles()
    }

    /// How long one call may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn framework_id(&self) -> Option<String> {
        self.session.borrow().framework_id.clone()
    }

    pub(crate) fn is_connected(&self) -> bool {
        matches!(self.session.borrow().link, Link::Connected { .. })
    }

    pub(crate) fn master(&self) -> Option<String> {
        match &self.session.borrow().link {
            Link::Connected { master, .. } => Some(master.clone()),
            _ => None,
        }
    }

    /// Resolves once the driver has stopped (or vanished).
    pub(crate) async fn stopped(&self) {
        let mut session = self.session.clone();
        // An error means the driver dropped its sender: it is gone too.
        let _ = session.wait_for(|s| matches!(s.link, Link::Stopped)).await;
    }

    /// The client and framework id to call with, or why there is none.
    fn link(&self) -> Result<(Client, String), SdkError> {
        let session = self.session.borrow();
        match (&session.link, &session.framework_id) {
            (Link::Connected { client, .. }, Some(id)) => Ok((client.clone(), id.clone())),
            (Link::Stopped, _) => Err(SdkError::Stopped),
            _ => Err(SdkError::NotConnected),
        }
    }

    /// Makes one call with the current client, within the call timeout.
    /// A "not the leader" answer is passed on to the driver so that it
    /// re-subscribes with the leader.
    async fn send<F, Fut>(&self, what: &'static str, call: F) -> Result<(), SdkError>
    where
        F: FnOnce(Client, String) -> Fut,
        Fut: Future<Output = Reply>,
    {
        self.ask(what, call).await.map(drop)
    }

    /// Like [`Calls::send`], for calls whose answer carries something.
    pub(crate) async fn ask<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T, SdkError>
    where
        F: FnOnce(Client, String) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (client, framework_id) = self.link()?;
        match tokio::time::timeout(self.timeout, call(client, framework_id)).await {
            Err(_) => Err(SdkError::Timeout),
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => {
                debug!(call = what, code = ?status.code(), message = status.message(), "call failed");
                if let Some(leader) = leader_hint(&status) {
                    // Full queue: the driver already has hints to act on.
                    let _ = self.cmds.try_send(Command::FollowLeader(leader));
                }
                Err(SdkError::from_status(&status))
            }
        }
    }

    pub(crate) async fn accept(
        &self,
        offer_ids: Vec<String>,
        tasks: Vec<v1::TaskInfo>,
        refuse_seconds: Option<f64>,
    ) -> Result<(), SdkError> {
        self.accept_operations(offer_ids, vec![crate::operations::launch(tasks)], refuse_seconds)
            .await
    }

    pub(crate) async fn accept_operations(
        &self,
        offer_ids: Vec<String>,
        operations: Vec<v1::Operation>,
        refuse_seconds: Option<f64>,
    ) -> Result<(), SdkError> {
        self.send("accept", |mut c, framework_id| async move {
            c.accept(v1::AcceptRequest {
                framework_id,
                offer_ids,
                operations,
                filters: Some(v1::Filters { refuse_seconds }),
            })
            .await
        })
        .await
    }

    pub(crate) async fn decline(&self, offer_ids: Vec<String>, refuse_seconds: Option<f64>) -> Result<(), SdkError> {
        self.send("decline", |mut c, framework_id| async move {
            c.decline(v1::DeclineRequest {
                framework_id,
                offer_ids,
                filters: Some(v1::Filters { refuse_seconds }),
            })
            .await
        })
        .await
    }

    /// A revive, remembered for the next subscription even if it fails.
    pub(crate) async fn revive(&self, roles: Vec<String>) -> Result<(), SdkError> {
        self.suppressed.revive(&roles);
        self.send("revive", |mut c, framework_id| async move {
            c.revive(v1::ReviveRequest { framework_id, roles }).await
        })
        .await
    }

    /// A suppress, remembered for the next subscription even if it fails.
    pub(crate) async fn suppress(&self, roles: Vec<String>) -> Result<(), SdkError> {
        self.suppressed.suppress(&roles);
        self.send("suppress", |mut c, framework_id| async move {
            c.suppress(v1::SuppressRequest { framework_id, roles }).await
        })
        .await
    }

    pub(crate) async fn message(&self, agent_id: String, executor_id: String, data: Vec<u8>) -> Result<(), SdkError> {
        self.send("message", |mut c, framework_id| async move {
            let req = v1::MessageRequest {
                framework_id,
                agent_id,
                executor_id,
                data,
            };
            c.message(req).await
        })
        .await
    }

    pub(crate) async fn shutdown_executor(&self, agent_id: String, executor_id: String) -> Result<(), SdkError> {
        self.send("shutdown_executor", |mut c, framework_id| async move {
            let req = v1::ShutdownExecutorRequest {
                framework_id,
                agent_id,
                executor_id,
            };
            c.shutdown_executor(req).await
        })
        .await
    }

    pub(crate) async fn kill(&self, task_id: &str, grace: Option<Duration>) -> Result<(), SdkError> {
        let task_id = task_id.to_owned();
        self.send("kill", |mut c, framework_id| async move {
            c.kill(v1::KillRequest {
                framework_id,
                task_id,
                kill_grace_period_ms: grace.map(millis),
            })
            .await
        })
        .await
    }

    pub(crate) async fn acknowledge(&self, status: &v1::TaskStatus) -> Result<(), SdkError> {
        self.acknowledge_all(std::slice::from_ref(status)).await
    }

    /// Acknowledges the updates that carry a uuid, in one call: the single
    /// form for one, `acks` for several (the master refuses a whole batch
    /// if one entry is bad).
    pub(crate) async fn acknowledge_all(&self, statuses: &[v1::TaskStatus]) -> Result<(), SdkError> {
        let mut acks: Vec<_> = statuses
            .iter()
            .filter(|s| !s.uuid.is_empty())
            .map(|s| v1::Acknowledgement {
                agent_id: s.agent_id.clone(),
                task_id: s.task_id.clone(),
                uuid: s.uuid.clone(),
            })
            .collect();
        let mut request = match acks.len() {
            0 => return Ok(()),
            1 => {
                let one = acks.pop().unwrap_or_default();
                v1::AcknowledgeRequest {
                    agent_id: one.agent_id,
                    task_id: one.task_id,
                    uuid: one.uuid,
                    ..Default::default()
                }
            }
            _ => v1::AcknowledgeRequest {
                acks,
                ..Default::default()
            },
        };
        self.send("acknowledge", |mut c, framework_id| async move {
            request.framework_id = framework_id;
            c.acknowledge(request).await
        })
        .await
    }

    pub(crate) async fn reconcile(&self, tasks: Vec<(String, String)>) -> Result<(), SdkError> {
        let tasks = tasks
            .into_iter()
            .map(|(task_id, agent_id)| v1::ReconcileTask { task_id, agent_id })
            .collect();
        self.send("reconcile", |mut c, framework_id| async move {
            c.reconcile(v1::ReconcileRequest { framework_id, tasks }).await
        })
        .await
    }

    pub(crate) async fn teardown(&self) -> Result<(), SdkError> {
        self.send("teardown", |mut c, framework_id| async move {
            c.teardown(v1::TeardownRequest { framework_id }).await
        })
        .await
    }

    pub(crate) async fn report_pending(&self, tasks: Vec<v1::PendingTask>) -> Result<(), SdkError> {
        self.send("report_pending", |mut c, framework_id| async move {
            c.report_pending(v1::ReportPendingRequest { framework_id, tasks }).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_hint_only_on_unavailable_with_metadata() {
        let mut s = tonic::Status::unavailable("not the leader");
        assert_eq!(leader_hint(&s), None);
        s.metadata_mut()
            .insert(LEADER_METADATA, "10.0.0.2:5050".parse().expect("ascii"));
        assert_eq!(leader_hint(&s).as_deref(), Some("10.0.0.2:5050"));
        let mut other = tonic::Status::internal("boom");
        other
            .metadata_mut()
            .insert(LEADER_METADATA, "10.0.0.2:5050".parse().expect("ascii"));
        assert_eq!(leader_hint(&other), None);
    }
}
