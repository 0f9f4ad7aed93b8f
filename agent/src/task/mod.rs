//! Tasks on this agent: one supervisor per task ([`supervisor`]) and one
//! owner of the task table ([`table`]).

pub mod health;
pub mod supervisor;
pub mod table;

#[cfg(test)]
mod table_tests;
#[cfg(test)]
mod tests;

use mezzo_proto::clock::unix_now;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;

use crate::key::TaskKey;

/// A state change a supervisor reports; the uuid is added by the status
/// update manager.
#[derive(Debug, Clone)]
pub struct StatusReport {
    pub key: TaskKey,
    pub status: v1::TaskStatus,
}

impl StatusReport {
    pub fn state(&self) -> Option<TaskState> {
        TaskState::from_proto(self.status.state)
    }
}

/// A status generated on this agent, stamped now.
pub fn agent_status(
    key: &TaskKey,
    agent_id: &str,
    state: TaskState,
    reason: v1::StatusReason,
    message: impl Into<String>,
) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: key.task_id.to_string(),
        framework_id: key.framework_id.to_string(),
        agent_id: agent_id.to_owned(),
        state: state.to_proto() as i32,
        reason: reason as i32,
        message: message.into(),
        source: v1::StatusSource::SourceAgent as i32,
        timestamp: unix_now(),
        ..Default::default()
    }
}
