//! The key every actor files a task under. A leaf module: the task table,
//! the status update manager, the garbage collector and the metrics all
//! use it, and it uses none of them.

use mezzo_proto::ids::{FrameworkId, IdError, TaskId};

/// A task is unique within its framework.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
}

impl TaskKey {
    /// Validates the two ids as they arrive from the wire.
    pub fn parse(framework_id: &str, task_id: &str) -> Result<TaskKey, IdError> {
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
