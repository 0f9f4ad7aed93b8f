//! Reliable status updates (DESIGN.md "Status updates").
//!
//! One actor, the status update manager ([`manager`]), owns an ordered
//! queue of updates per task. Each update gets a fresh UUID and is written
//! and fsynced to the [`journal`] before it is sent; only the head of a
//! task's queue is in flight; the head is resent with capped exponential
//! backoff, and all heads at once on every new master connection; an
//! acknowledgement of the head removes it and releases the next. When a
//! terminal update is acknowledged the task is forgotten, and the task
//! table is told so on the `forget` channel.

pub mod journal;
mod manager;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use mezzo_proto::state::TaskState;
use mezzo_proto::v1;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::key::TaskKey;
use crate::metrics::Metrics;
use crate::{AgentError, paths};

/// Settings of the status update manager.
#[derive(Debug, Clone)]
pub struct StatusConfig {
    pub work_dir: PathBuf,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// A task that had unacknowledged updates when the agent last stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    pub key: TaskKey,
    /// State of the newest pending update.
    pub latest_state: TaskState,
    /// The reason of the newest pending update (a task of a group of
    /// commands killed by a limit ends its group; see the task table).
    pub latest_reason: v1::StatusReason,
    /// The uuids of its pending updates, oldest first: a custom executor
    /// resubscribing after the restart lists some of them again.
    pub uuids: Vec<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) enum StatusCmd {
    Update(TaskKey, v1::TaskStatus),
    Ack(v1::AcknowledgeUpdate),
    /// A new master connection: send every head on `outbound` from now on.
    Connected(mpsc::Sender<v1::AgentMessage>),
    Disconnected,
    Pending(oneshot::Sender<usize>),
}

/// Cloneable handle on the status update manager.
#[derive(Debug, Clone)]
pub struct StatusHandle {
    tx: mpsc::Sender<StatusCmd>,
}

impl StatusHandle {
    async fn send(&self, cmd: StatusCmd) -> Result<(), AgentError> {
        self.tx
            .send(cmd)
            .await
            .map_err(|_| AgentError::ActorStopped("status update manager"))
    }

    /// Queues a new update of a task (stamped with a fresh UUID by the
    /// manager, unless it carries a 16-byte one: a custom executor's).
    pub async fn update(&self, key: TaskKey, status: v1::TaskStatus) -> Result<(), AgentError> {
        self.send(StatusCmd::Update(key, status)).await
    }

    pub async fn acknowledge(&self, ack: v1::AcknowledgeUpdate) -> Result<(), AgentError> {
        self.send(StatusCmd::Ack(ack)).await
    }

    /// Updates go to `outbound` from now on; every pending head is resent.
    pub async fn connected(&self, outbound: mpsc::Sender<v1::AgentMessage>) -> Result<(), AgentError> {
        self.send(StatusCmd::Connected(outbound)).await
    }

    pub async fn disconnected(&self) -> Result<(), AgentError> {
        self.send(StatusCmd::Disconnected).await
    }

    /// Number of updates not yet acknowledged.
    pub async fn pending(&self) -> Result<usize, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(StatusCmd::Pending(tx)).await?;
        rx.await.map_err(|_| AgentError::ActorStopped("status update manager"))
    }
}

/// Replays the journal in `config.work_dir` and starts the manager.
pub async fn start(
    config: StatusConfig,
    metrics: Metrics,
    forget: mpsc::UnboundedSender<TaskKey>,
) -> Result<(StatusHandle, Vec<Recovered>, JoinHandle<Result<(), AgentError>>), AgentError> {
    let path = paths::status_journal(&config.work_dir);
    let (journal, records) = tokio::task::spawn_blocking(move || journal::Journal::open(&path))
        .await
        .map_err(|_| AgentError::ActorPanicked("status journal replay"))??;
    let (tx, rx) = mpsc::channel(4096);
    let manager = manager::Manager::recover(config, journal, records, rx, forget, metrics);
    let recovered = manager.recovered();
    let join = tokio::spawn(manager.run());
    Ok((StatusHandle { tx }, recovered, join))
}
