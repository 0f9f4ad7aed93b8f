//! Tasks on this agent: one supervisor per task ([`supervisor`]) and one
//! owner of the task table ([`table`]).

pub mod supervisor;
pub mod table;

#[cfg(test)]
mod tests;

use mezzo_proto::clock::unix_now;

use mezzo_proto::ids::{FrameworkId, TaskId};
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;

/// A task is unique within its framework.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
}

impl TaskKey {
    /// Validates the two ids as they arrive from the wire.
    pub fn parse(framework_id: &str, task_id: &str) -> Result<TaskKey, mezzo_proto::ids::IdError> {
        Ok(TaskKey {
            framework_id: FrameworkId::parse(framework_id)?,
            task_id: TaskId::parse(task_id)?,
        })
    }
}

impl std::fmt::Display for TaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.framework_id, self.task_id)
    }
}

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
