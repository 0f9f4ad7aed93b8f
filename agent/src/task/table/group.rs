//! Task groups (`TaskInfo.group`, Mesos' LAUNCH_GROUP), as the task table
//! keeps them: the table is the one owner of every task's state, so it is
//! the one that knows a group's tasks.
//!
//! - A group for a custom executor is gathered here until every task of it
//!   has come (the master sends one `RunTask` per task, one after the
//!   other), then handed to the executor whole, in one LAUNCH_GROUP.
//! - A group of commands (Mesos' default executor) runs each task in its
//!   own container; when one of them fails, the others still running are
//!   killed, as Mesos' default executor kills a group whose task failed.
//!
//! A child of the table, not a sibling: it is the table's own state.

use mezzo_proto::ids::{FrameworkId, TaskId};
use mezzo_proto::state::TaskState;
use mezzo_proto::v1::{self, StatusReason};

use std::collections::BTreeMap;

use super::Table;
use crate::key::TaskKey;
use crate::task::supervisor::Kill;

mod recover;

/// A group is named by its framework and its first task.
pub(crate) type GroupKey = (FrameworkId, String);

/// Most tasks of one group the agent gathers (the master's limit of tasks
/// per Accept is lower).
const MAX_GROUP_TASKS: usize = 10_000;

/// Where a task of a group stands once it has come.
pub(super) enum Gathered {
    /// Every task of its group has come: here they are, in the group's
    /// order.
    Complete(Vec<v1::RunTask>),
    /// Others of its group are still to come.
    Waiting,
    /// Its group does not hold it, or is too big, or holds it twice.
    Invalid(String),
    /// Its group was killed while it was gathered: this task is killed
    /// too, with this reason and message.
    Killed(StatusReason, String),
}

/// A group killed while it was gathered, some of whose tasks are still to
/// come (each is killed as it comes).
pub(crate) struct Killed {
    reason: StatusReason,
    /// What each task still to come is told.
    message: String,
    /// How many are still to come.
    left: usize,
}

/// Whether the end of a task of a group of commands ends the group: a
/// failure, not a finish nor a kill the framework asked for.
pub(super) fn ends_group(state: TaskState, reason: StatusReason) -> bool {
    use StatusReason as R;
    match state {
        TaskState::Failed | TaskState::Lost | TaskState::Error | TaskState::Gone | TaskState::Dropped => true,
        TaskState::Killed => matches!(
            reason,
            R::ReasonContainerLimitationMemory | R::ReasonContainerLimitationDisk
        ),
        _ => false,
    }
}

impl Table {
    /// Takes one task of a group: keeps it until its whole group is here.
    pub(super) fn gather(&mut self, run: v1::RunTask, key: &TaskKey, group: &v1::TaskGroup) -> Gathered {
        let ids = &group.task_ids;
        let invalid = |why: &str| Gathered::Invalid(format!("task group of {} tasks: {why}", ids.len()));
        if ids.len() > MAX_GROUP_TASKS {
            return invalid(&format!("more than {MAX_GROUP_TASKS} tasks"));
        }
        if !ids.iter().any(|t| t == key.task_id.as_str()) {
            return invalid(&format!("it does not list task {}", key.task_id));
        }
        let gkey = (key.framework_id.clone(), ids[0].clone());
        if let Some(killed) = self.killed_groups.get_mut(&gkey) {
            killed.left = killed.left.saturating_sub(1);
            let gathered = Gathered::Killed(killed.reason, killed.message.clone());
            if killed.left == 0 {
                self.killed_groups.remove(&gkey);
            }
            return gathered;
        }
        let waiting = self.pending_groups.entry(gkey.clone()).or_default();
        let same = |r: &v1::RunTask| r.task.as_ref().is_some_and(|t| t.task_id == key.task_id.as_str());
        if waiting.iter().any(same) {
            return invalid(&format!("task {} came twice", key.task_id));
        }
        waiting.push(run);
        if waiting.len() < ids.len() {
            return Gathered::Waiting;
        }
        let mut runs = self.pending_groups.remove(&gkey).unwrap_or_default();
        let place = |r: &v1::RunTask| {
            let id = r.task.as_ref().map(|t| t.task_id.as_str()).unwrap_or_default();
            ids.iter().position(|t| t == id).unwrap_or(usize::MAX)
        };
        runs.sort_by_key(place);
        Gathered::Complete(runs)
    }

    /// A master registered the agent: a group still incomplete lost the
    /// rest of its tasks with the old connection (the master sends a
    /// group's `RunTask`s together). Its tasks were not in the
    /// re-registration, so the master reports them as never received;
    /// they are dropped here too, never launched.
    pub(super) fn drop_partial_groups(&mut self) {
        // Nor is the rest of a killed group still to come.
        self.killed_groups.clear();
        for ((fid, first), runs) in std::mem::take(&mut self.pending_groups) {
            tracing::warn!(framework = %fid, group = %first, tasks = runs.len(), "a task group that never came whole is dropped");
        }
    }

    /// Takes the group being gathered that holds `key` (its tasks come so
    /// far, and how many tasks the group has), if one does.
    pub(super) fn take_gathered(&mut self, key: &TaskKey) -> Option<(GroupKey, Vec<v1::RunTask>, usize)> {
        let holds = |r: &v1::RunTask| r.task.as_ref().is_some_and(|t| t.task_id == key.task_id.as_str());
        let gkey = self
            .pending_groups
            .iter()
            .find(|((fid, _), runs)| *fid == key.framework_id && runs.iter().any(holds))
            .map(|(k, _)| k.clone())?;
        let runs = self.pending_groups.remove(&gkey)?;
        let size = runs
            .iter()
            .find_map(|r| r.task.as_ref()?.group.as_ref())
            .map_or(runs.len(), |g| g.task_ids.len());
        Some((gkey, runs, size))
    }

    /// The tasks still to come of a group killed while it was gathered are
    /// killed as they come, with `reason` and `message`.
    pub(super) fn killed_while_gathered(&mut self, gkey: GroupKey, reason: StatusReason, message: String, left: usize) {
        if left > 0 {
            let killed = Killed { reason, message, left };
            self.killed_groups.insert(gkey, killed);
        }
    }

    /// The tasks of `key`'s group other than `key` (none if it has no
    /// group).
    pub(super) fn siblings(&self, key: &TaskKey) -> Vec<TaskKey> {
        let Some(group) = self.tasks.get(key).and_then(|e| e.info.group.as_ref()) else {
            return Vec::new();
        };
        group
            .task_ids
            .iter()
            .filter(|t| *t != key.task_id.as_str())
            .filter_map(|t| TaskId::parse(t).ok())
            .map(|task_id| TaskKey {
                framework_id: key.framework_id.clone(),
                task_id,
            })
            .collect()
    }

    /// A task of a group of commands ended in `state`: if that ends its
    /// group, the others still running are killed, told why.
    pub(super) fn end_group_of(&self, key: &TaskKey, state: TaskState, reason: StatusReason) {
        if !ends_group(state, reason) {
            return;
        }
        for sibling in self.siblings(key) {
            self.kill_for_group(&sibling, key, state);
        }
    }

    /// A task of a group of commands just launched: killed at once if
    /// another task of its group has already ended the group.
    pub(super) fn join_group(&self, key: &TaskKey) {
        self.join_group_given(key, &BTreeMap::new());
    }

    /// [`Table::join_group`], with the reasons of the journaled updates of
    /// the tasks recovered after a restart (their statuses are not kept).
    fn join_group_given(&self, key: &TaskKey, journaled: &BTreeMap<TaskKey, StatusReason>) {
        let ended = self.siblings(key).into_iter().find_map(|s| {
            let e = self.tasks.get(&s)?;
            let reason = match e.statuses.is_empty() {
                true => journaled.get(&s).copied().unwrap_or(StatusReason::ReasonUnspecified),
                false => e.statuses.last_reason(),
            };
            ends_group(e.state, reason).then_some((s, e.state))
        });
        if let Some((failed, state)) = ended {
            self.kill_for_group(key, &failed, state);
        }
    }

    /// Kills `key` (if it runs) because `failed` ended in `state`.
    fn kill_for_group(&self, key: &TaskKey, failed: &TaskKey, state: TaskState) {
        let Some(sup) = self
            .tasks
            .get(key)
            .filter(|e| !e.state.is_terminal())
            .and_then(|e| e.supervisor.as_ref())
        else {
            return;
        };
        let why = format!(
            "killed with its task group: task {} ended {}",
            failed.task_id,
            state.name()
        );
        tracing::info!(task = %key, "{why}");
        sup.kill_with(Kill {
            grace: None,
            why: Some((StatusReason::ReasonTaskKilled, why)),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_ends_when_a_task_fails_not_when_it_finishes_or_is_killed() {
        use StatusReason as R;
        let cases = [
            (TaskState::Failed, R::ReasonCommandExited, true),
            (TaskState::Lost, R::ReasonUnspecified, true),
            (TaskState::Error, R::ReasonTaskInvalid, true),
            (TaskState::Killed, R::ReasonContainerLimitationMemory, true),
            (TaskState::Killed, R::ReasonTaskKilled, false),
            (TaskState::Killed, R::ReasonKilledByOperator, false),
            (TaskState::Finished, R::ReasonCommandExited, false),
            (TaskState::Running, R::ReasonUnspecified, false),
        ];
        for (state, reason, ends) in cases {
            assert_eq!(ends_group(state, reason), ends, "{state:?} {reason:?}");
        }
    }
}
