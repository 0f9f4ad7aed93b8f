//! Task states and the one function that says which changes are allowed.

use serde::{Deserialize, Serialize};

use crate::v1;

/// The state of a task (DESIGN.md "Tasks"), Mesos names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    Staging,
    Starting,
    Running,
    Killing,
    Finished,
    Failed,
    Killed,
    Lost,
    Unreachable,
    Gone,
    Error,
    Dropped,
    Unknown,
}

/// A state change that the task's lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task cannot go from {from:?} to {to:?}")]
pub struct TransitionError {
    pub from: TaskState,
    pub to: TaskState,
}

impl TaskState {
    /// Terminal states never change again, except that an UNREACHABLE task
    /// may be found again when its agent comes back.
    pub fn is_terminal(self) -> bool {
        use TaskState::*;
        matches!(
            self,
            Finished | Failed | Killed | Lost | Gone | Error | Dropped | Unreachable
        )
    }

    /// The single place that decides whether `self -> to` is legal.
    pub fn transition(self, to: TaskState) -> Result<TaskState, TransitionError> {
        use TaskState::*;
        let ok = match (self, to) {
            (a, b) if a == b => true,
            (Unreachable, Starting | Running | Killing) => true,
            (Unreachable, b) => b.is_terminal(),
            (a, _) if a.is_terminal() => false,
            (_, Staging | Unknown) => false,
            (Running | Killing, Starting) => false,
            (Killing, Running) => false,
            _ => true,
        };
        if ok {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }

    pub fn from_proto(s: i32) -> Option<TaskState> {
        use v1::TaskState as P;
        Some(match P::try_from(s).ok()? {
            P::Unspecified => return None,
            P::TaskStaging => TaskState::Staging,
            P::TaskStarting => TaskState::Starting,
            P::TaskRunning => TaskState::Running,
            P::TaskKilling => TaskState::Killing,
            P::TaskFinished => TaskState::Finished,
            P::TaskFailed => TaskState::Failed,
            P::TaskKilled => TaskState::Killed,
            P::TaskLost => TaskState::Lost,
            P::TaskUnreachable => TaskState::Unreachable,
            P::TaskGone => TaskState::Gone,
            P::TaskError => TaskState::Error,
            P::TaskDropped => TaskState::Dropped,
            P::TaskUnknown => TaskState::Unknown,
        })
    }

    pub fn to_proto(self) -> v1::TaskState {
        use v1::TaskState as P;
        match self {
            TaskState::Staging => P::TaskStaging,
            TaskState::Starting => P::TaskStarting,
            TaskState::Running => P::TaskRunning,
            TaskState::Killing => P::TaskKilling,
            TaskState::Finished => P::TaskFinished,
            TaskState::Failed => P::TaskFailed,
            TaskState::Killed => P::TaskKilled,
            TaskState::Lost => P::TaskLost,
            TaskState::Unreachable => P::TaskUnreachable,
            TaskState::Gone => P::TaskGone,
            TaskState::Error => P::TaskError,
            TaskState::Dropped => P::TaskDropped,
            TaskState::Unknown => P::TaskUnknown,
        }
    }

    /// The Mesos-style name, e.g. `TASK_FINISHED`.
    pub fn name(self) -> &'static str {
        self.to_proto().as_str_name()
    }

    /// The state named by [`TaskState::name`].
    pub fn from_name(name: &str) -> Option<TaskState> {
        crate::v1::TaskState::from_str_name(name).and_then(|p| TaskState::from_proto(p as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::TaskState::*;
    use super::*;

    /// DESIGN.md "Tasks": the table of allowed and refused changes.
    #[test]
    fn transitions_table() {
        let cases = [
            (Staging, Starting, true),
            (Staging, Running, true),
            (Staging, Failed, true),
            (Starting, Running, true),
            (Running, Finished, true),
            (Running, Killing, true),
            (Killing, Killed, true),
            (Running, Unreachable, true),
            (Unreachable, Running, true),
            (Unreachable, Gone, true),
            (Finished, Running, false),
            (Killed, Failed, false),
            (Running, Starting, false),
            (Running, Staging, false),
            (Killing, Running, false),
            // DESIGN.md "Tasks": DROPPED never ran, and never runs later.
            (Staging, Dropped, true),
            (Starting, Dropped, true),
            (Running, Dropped, true),
            (Dropped, Running, false),
            (Dropped, Starting, false),
            (Staging, Error, true),
        ];
        for (from, to, ok) in cases {
            assert_eq!(from.transition(to).is_ok(), ok, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn proto_round_trip() {
        for s in [
            Staging,
            Starting,
            Running,
            Killing,
            Finished,
            Failed,
            Killed,
            Lost,
            Unreachable,
            Gone,
            Error,
            Dropped,
            Unknown,
        ] {
            assert_eq!(TaskState::from_proto(s.to_proto() as i32), Some(s));
        }
        assert_eq!(TaskState::from_proto(0), None);
        assert_eq!(TaskState::from_proto(999), None);
    }
}
