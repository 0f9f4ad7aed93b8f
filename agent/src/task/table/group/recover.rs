//! Task groups after an agent restart, once every task is back in the
//! table: what a crash may have cut short is finished here.
//!
//! - A custom executor's group is checkpointed one task after the other;
//!   a crash partway leaves some of its tasks without the others. Such a
//!   group never arrived whole: its executor was never handed it, and
//!   never will be, so the tasks that are here are dropped (journaled,
//!   so that the master frees what they hold).
//! - A group of commands whose task failed (journaled before the crash,
//!   or found gone by the recovery) has its other tasks still running
//!   killed, as if the agent had not stopped in between.

use std::collections::{BTreeMap, HashSet};

use mezzo_proto::state::TaskState;
use mezzo_proto::v1::StatusReason;

use super::super::Table;
use crate::key::TaskKey;
use crate::task::agent_status;
use crate::{AgentError, paths};

/// What a task of a custom executor's group cut short is told.
const NEVER_WHOLE: &str = "the agent restarted before it had checkpointed the whole task group: its task group never arrived whole on the agent, and the task never reached its executor; it never ran and is safe to launch again";

impl Table {
    /// Checks every group again after a restart (see the module's doc);
    /// `journaled` holds the reasons of the updates the journal kept.
    pub(in crate::task::table) async fn recover_groups(
        &mut self,
        journaled: &BTreeMap<TaskKey, StatusReason>,
    ) -> Result<(), AgentError> {
        self.drop_groups_never_whole().await?;
        let running: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, e)| !e.state.is_terminal() && e.supervisor.is_some() && e.info.group.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for key in running {
            self.join_group_given(&key, journaled);
        }
        Ok(())
    }

    /// Drops the STAGING tasks of every custom executor's group that did
    /// not arrive whole.
    async fn drop_groups_never_whole(&mut self) -> Result<(), AgentError> {
        let staging: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, e)| e.state == TaskState::Staging && e.executor.is_some() && e.info.group.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let mut checked = HashSet::new();
        for key in staging {
            if checked.contains(&key) {
                continue;
            }
            let group: Vec<TaskKey> = std::iter::once(key.clone()).chain(self.siblings(&key)).collect();
            checked.extend(group.iter().cloned());
            if self.arrived_whole(&group) {
                continue;
            }
            for member in &group {
                self.drop_never_whole(member).await?;
            }
        }
        Ok(())
    }

    /// Whether a recovered group was checkpointed whole: every task of it
    /// is here, or one is marked so ([`paths::GROUP_WHOLE`]: another may
    /// have ended and been forgotten since), or one has gone past STAGING
    /// (its executor was handed the group).
    fn arrived_whole(&self, group: &[TaskKey]) -> bool {
        let present: Vec<&TaskKey> = group.iter().filter(|k| self.tasks.contains_key(k)).collect();
        present.len() == group.len()
            || present.iter().any(|k| {
                let dir = paths::task_meta_dir(&self.deps.runtime_dir, &k.framework_id, &k.task_id);
                let staging = self.tasks.get(k).is_some_and(|e| e.state == TaskState::Staging);
                !staging || dir.join(paths::GROUP_WHOLE).exists()
            })
    }

    /// Drops `key` (if it is a STAGING task of an executor): TASK_DROPPED,
    /// no longer queued for its executor.
    async fn drop_never_whole(&mut self, key: &TaskKey) -> Result<(), AgentError> {
        let agent_id = self.agent_id();
        let Some(entry) = self
            .tasks
            .get_mut(key)
            .filter(|e| e.state == TaskState::Staging && e.executor.is_some())
        else {
            return Ok(());
        };
        tracing::warn!(task = %key, "{NEVER_WHOLE}");
        let status = agent_status(
            key,
            &agent_id,
            TaskState::Dropped,
            StatusReason::ReasonAgentRestarted,
            NEVER_WHOLE,
        );
        self.deps.metrics.task_state(entry.state).dec();
        self.deps.metrics.task_state(TaskState::Dropped).inc();
        entry.state = TaskState::Dropped;
        entry.statuses.push(&status);
        if let Some(eid) = entry.executor.clone() {
            self.unqueue(key, eid);
        }
        self.deps.status.update(key.clone(), status).await
    }
}
