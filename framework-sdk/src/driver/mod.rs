//! The scheduler driver: one owner task that holds the connection to the
//! master, and the cheap [`Scheduler`] handle that frameworks call.
//!
//! ```text
//!  Scheduler (Clone) ──calls: read `session` watch, call master directly──▶ master
//!        │  stop: `stop` watch                      ▲
//!        ▼                                          │ Subscribe stream
//!  driver task (run.rs) ── owns framework id, master list, backoff
//!        │  publishes `session` (watch), receives leader hints (`Command`, mpsc)
//!        ▼
//!  Events (mpsc, bounded) ──▶ framework
//! ```
//!
//! Calls never queue behind the event stream: they clone the current
//! connection's client out of the `session` watch, or fail fast with
//! [`SdkError::NotConnected`] while there is none. The call path and the
//! session it reads live in [`crate::calls`], which the key-value handle
//! shares.

mod acks;
mod connect;
mod run;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::v1;
use tokio::sync::{mpsc, watch};

use crate::calls::{Calls, Link, Session};
use crate::config::SchedulerConfig;
use crate::error::SdkError;
use crate::event::{Events, Unread};
use crate::kv::Kv;
use crate::suppressed::Suppressed;

/// Capacity of the events channel: enough for bursts of offers and updates,
/// small enough that a stuck framework applies back-pressure.
const EVENTS_CAPACITY: usize = 1024;

/// Handle on a running scheduler driver. Cloning is cheap; every clone talks
/// to the same driver.
///
/// The driver stops on [`Scheduler::stop`], on [`Event::Error`](crate::Event::Error), or once
/// every handle *and* the [`Events`] receiver have been dropped.
#[derive(Clone, Debug)]
pub struct Scheduler {
    calls: Calls,
    acker: acks::Acker,
    stop: Arc<watch::Sender<bool>>,
}

/// Teardown calls made before [`Scheduler::teardown`] gives up waiting for
/// the removal to be confirmed.
pub const TEARDOWN_TRIES: usize = 3;

impl Scheduler {
    /// Starts the driver task and returns at once; the driver connects in
    /// the background and reports [`Event::Subscribed`](crate::Event::Subscribed) when it is ready.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(config: SchedulerConfig) -> (Scheduler, Events) {
        let (events_tx, events_rx) = mpsc::channel(EVENTS_CAPACITY);
        let (session_tx, session_rx) = watch::channel(Session {
            framework_id: config.framework_id.clone().filter(|id| !id.is_empty()),
            link: Link::Connecting,
        });
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = watch::channel(false);
        let suppressed = Suppressed::new(&config.framework.roles);
        let calls = Calls::new(session_rx, cmd_tx, config.call_timeout, suppressed);
        let acker = acks::Acker::spawn(calls.clone());
        let unread = Unread::default();
        run::spawn(
            config,
            calls.clone(),
            acker.clone(),
            session_tx,
            (events_tx, unread.clone()),
            cmd_rx,
            stop_rx,
        );
        let scheduler = Scheduler {
            calls,
            acker,
            stop: Arc::new(stop_tx),
        };
        (scheduler, Events::new(events_rx, unread))
    }

    /// The framework's id, once the master has assigned (or confirmed) it.
    pub fn framework_id(&self) -> Option<String> {
        self.calls.framework_id()
    }

    /// True while subscribed to a master.
    pub fn is_connected(&self) -> bool {
        self.calls.is_connected()
    }

    /// The framework's durable key-value namespace (see [`Kv`](crate::Kv)).
    pub fn kv(&self) -> Kv {
        Kv::new(self.calls.clone())
    }

    /// The address of the master the driver is subscribed to, if any.
    pub fn master(&self) -> Option<String> {
        self.calls.master()
    }

    /// Launches `tasks` on the resources of `offer_ids` (all from one agent).
    /// Whatever is not used is declined, filtered for `refuse_seconds`.
    pub async fn accept(
        &self,
        offer_ids: Vec<String>,
        tasks: Vec<v1::TaskInfo>,
        refuse_seconds: Option<f64>,
    ) -> Result<(), SdkError> {
        self.calls.accept(offer_ids, tasks, refuse_seconds).await
    }

    /// Accepts `offer_ids` (all from one agent) with `operations`, done in
    /// order: reservations, persistent volumes and launches
    /// ([`operations`](crate::operations)). Nothing is done unless every
    /// operation fits; whatever is not used is declined, filtered for
    /// `refuse_seconds`.
    pub async fn accept_operations(
        &self,
        offer_ids: Vec<String>,
        operations: Vec<v1::Operation>,
        refuse_seconds: Option<f64>,
    ) -> Result<(), SdkError> {
        self.calls
            .accept_operations(offer_ids, operations, refuse_seconds)
            .await
    }

    /// Gives offers back; their resources are not offered to this framework
    /// again for `refuse_seconds` (master default if `None`).
    pub async fn decline(&self, offer_ids: Vec<String>, refuse_seconds: Option<f64>) -> Result<(), SdkError> {
        self.calls.decline(offer_ids, refuse_seconds).await
    }

    /// Clears offer filters and resumes offers after [`Scheduler::suppress`].
    pub async fn revive(&self) -> Result<(), SdkError> {
        self.revive_roles(&[]).await
    }

    /// Asks the master to stop sending offers. It holds until a revive,
    /// across re-subscriptions and master failovers (the driver names the
    /// suppressed roles when it subscribes again), even if this call fails.
    pub async fn suppress(&self) -> Result<(), SdkError> {
        self.suppress_roles(&[]).await
    }

    /// [`Scheduler::revive`] in some of the framework's roles only.
    pub async fn revive_roles(&self, roles: &[&str]) -> Result<(), SdkError> {
        self.calls.revive(roles.iter().map(|r| (*r).to_owned()).collect()).await
    }

    /// [`Scheduler::suppress`] in some of the framework's roles only: it
    /// is still offered resources in the others.
    pub async fn suppress_roles(&self, roles: &[&str]) -> Result<(), SdkError> {
        self.calls
            .suppress(roles.iter().map(|r| (*r).to_owned()).collect())
            .await
    }

    /// Sends bytes to one of the framework's custom executors (at most
    /// 1 MiB; best effort: dropped if the executor is not subscribed to
    /// its agent). Its answers arrive as [`Event::Message`](crate::Event::Message).
    pub async fn message(&self, agent_id: &str, executor_id: &str, data: Vec<u8>) -> Result<(), SdkError> {
        self.calls
            .message(agent_id.to_owned(), executor_id.to_owned(), data)
            .await
    }

    /// Shuts one of the framework's custom executors down (SHUTDOWN, then
    /// a kill after its grace period); [`Event::ExecutorLost`](crate::Event::ExecutorLost)
    /// follows once it exited.
    pub async fn shutdown_executor(&self, agent_id: &str, executor_id: &str) -> Result<(), SdkError> {
        self.calls
            .shutdown_executor(agent_id.to_owned(), executor_id.to_owned())
            .await
    }

    /// Kills a task; `grace` overrides the task's own kill grace period.
    pub async fn kill(&self, task_id: &str, grace: Option<Duration>) -> Result<(), SdkError> {
        self.calls.kill(task_id, grace).await
    }

    /// Acknowledges a status update so the agent stops resending it. A
    /// status without a uuid needs no acknowledgement: `Ok` without a call.
    /// Only needed when [`SchedulerConfig::auto_acknowledge`] is off.
    pub async fn acknowledge(&self, status: &v1::TaskStatus) -> Result<(), SdkError> {
        self.calls.acknowledge(status).await
    }

    /// Asks the master for the current state of `(task_id, agent_id)` pairs
    /// (agent id may be empty); an empty list asks for every task. Answers
    /// arrive as [`Event::Update`](crate::Event::Update)s without uuid.
    pub async fn reconcile(&self, tasks: Vec<(String, String)>) -> Result<(), SdkError> {
        self.calls.reconcile(tasks).await
    }

    /// Removes the framework from the cluster: its tasks are killed and the
    /// master ends the subscription. Returns once the removal is confirmed
    /// (the master's [`Event::Error`](crate::Event::Error) came, after the
    /// removal committed, and the driver has stopped); a leader that fails
    /// before committing forgets the call, so it is made again, up to
    /// [`TEARDOWN_TRIES`] times (then [`SdkError::Timeout`]). Automatic
    /// acknowledgements already queued are sent first.
    pub async fn teardown(&self) -> Result<(), SdkError> {
        // Acknowledgements still out would be refused once the framework is
        // gone, and agents would resend their updates until the master
        // acknowledges them instead: let them land first.
        let _ = tokio::time::timeout(self.calls.timeout(), self.acker.flush()).await;
        for tries in 1..=TEARDOWN_TRIES {
            match self.calls.teardown().await {
                // Nothing was sent: say so at once, as every call does.
                Err(SdkError::NotConnected) if tries == 1 => return Err(SdkError::NotConnected),
                // No answer (a loaded master answers once the removal is
                // proposed): the removal may be on its way; wait, then ask again.
                Ok(()) | Err(SdkError::NotConnected | SdkError::Transport(_) | SdkError::Timeout) => {}
                // Stopped meanwhile: the removal came.
                Err(SdkError::Stopped) => return Ok(()),
                // An earlier call was taken: a framework the master no
                // longer holds a subscription of is being removed (its
                // removal commits, then closes the stream) — wait for it.
                Err(SdkError::Rejected {
                    code: tonic::Code::FailedPrecondition | tonic::Code::NotFound,
                    ..
                }) if tries > 1 => {}
                Err(e) => return Err(e),
            }
            if tokio::time::timeout(self.calls.timeout(), self.calls.stopped())
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        Err(SdkError::Timeout)
    }

    /// Tells operators which tasks wait to be placed and why (shown by
    /// the dashboard and `mezzo why`). Each report replaces the previous
    /// one; an empty list clears it. Build entries with [`pending_task`](crate::pending_task).
    pub async fn report_pending(&self, tasks: Vec<v1::PendingTask>) -> Result<(), SdkError> {
        self.calls.report_pending(tasks).await
    }

    /// Stops the driver and waits until it has; the framework stays
    /// registered and can be resumed within its failover timeout. Calls
    /// made afterwards return [`SdkError::Stopped`].
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        self.calls.stopped().await;
    }
}
