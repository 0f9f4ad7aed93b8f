//! The leader's side of the task history (see [`crate::history`]): task
//! ends are remembered in each framework's completed ring at once and
//! batched into one `RecordTaskEnds` registry op a second; a new leader
//! rebuilds the rings from the registry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mezzo_proto::clock::unix_now;
use mezzo_proto::ids::FrameworkId;
use mezzo_proto::reservation::ReservedResources;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;

use super::task_index::Table;
use super::{Effect, Master, Task};
use crate::history::{HistoryBounds, TaskRecord};
use crate::registry::RegistryOp;

/// Ends are proposed at least this often...
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// ...or as soon as this many wait, which keeps one entry near 100 KiB.
const FLUSH_AT: usize = 512;

impl Task {
    /// What the history keeps of this (terminal) task.
    fn record(&self, ended_at: f64) -> TaskRecord {
        let status = self.last_status.as_ref();
        TaskRecord {
            id: self.id.clone(),
            framework_id: self.framework_id.clone(),
            name: self.info.name.clone(),
            agent_id: self.agent_id.clone(),
            role: self.role.clone(),
            resources: self.resources.total(),
            state: self.state.name().to_owned(),
            reason: status
                .and_then(|s| v1::StatusReason::try_from(s.reason).ok())
                .filter(|r| *r != v1::StatusReason::ReasonUnspecified)
                .map(|r| r.as_str_name().to_owned())
                .unwrap_or_default(),
            message: status.map(|s| s.message.clone()).unwrap_or_default(),
            exit_code: status.and_then(|s| s.exit_code),
            launched_at: self.launched_at,
            ended_at,
        }
        .bounded()
    }

    /// A finished task as the history kept it (no command, no usage).
    pub(super) fn from_record(r: &TaskRecord) -> Task {
        let state = TaskState::from_name(&r.state).unwrap_or(TaskState::Lost);
        let reason = v1::StatusReason::from_str_name(&r.reason).unwrap_or(v1::StatusReason::ReasonUnspecified);
        Task {
            id: r.id.clone(),
            framework_id: r.framework_id.clone(),
            agent_id: r.agent_id.clone(),
            resources: ReservedResources::unreserved(r.resources.clone()),
            role: r.role.clone(),
            info: v1::TaskInfo {
                name: r.name.clone(),
                task_id: r.id.to_string(),
                ..Default::default()
            },
            state,
            last_status: Some(v1::TaskStatus {
                task_id: r.id.to_string(),
                state: state.to_proto() as i32,
                reason: reason as i32,
                message: r.message.clone(),
                agent_id: r.agent_id.to_string(),
                exit_code: r.exit_code,
                framework_id: r.framework_id.to_string(),
                timestamp: r.ended_at,
                ..Default::default()
            }),
            unacked: None,
            forwarded: None,
            acked: None,
            launched_at: r.launched_at,
            ended_at: Some(r.ended_at),
            healthy: None,
        }
    }
}

impl Master {
    /// Puts a terminal task in its framework's completed ring and queues
    /// its end for the history. A task already there is left alone.
    pub(super) fn remember_completed(&mut self, fid: &FrameworkId, mut task: Arc<Task>) {
        let limit = self.cfg.completed_tasks_per_framework;
        let Some(fw) = self.frameworks.get_mut(fid) else { return };
        if fw.completed_by_id.contains_key(&task.id) {
            return;
        }
        let ended_at = *Arc::make_mut(&mut task).ended_at.get_or_insert_with(unix_now);
        self.unflushed_ends.push(task.record(ended_at));
        self.task_index.add(&task, Table::Completed);
        fw.completed_by_id.insert(task.id.clone(), task.clone());
        fw.completed.push_back(task);
        while fw.completed.len() > limit {
            if let Some(old) = fw.completed.pop_front() {
                if fw.completed_by_id.get(&old.id).is_some_and(|t| Arc::ptr_eq(t, &old)) {
                    fw.completed_by_id.remove(&old.id);
                }
                self.task_index.remove(&old, Table::Completed);
            }
        }
    }

    /// Rebuilds every registered framework's completed ring from the
    /// registry (a new leader).
    pub(super) fn rebuild_completed(&mut self) {
        for (fid, ring) in &self.registry.history.tasks {
            let Some(fw) = self.frameworks.get_mut(fid) else {
                continue;
            };
            for r in ring {
                // A reused id is in the ring twice; the map has the later.
                let task = Arc::new(Task::from_record(r));
                self.task_index.add(&task, Table::Completed);
                fw.completed_by_id.insert(task.id.clone(), task.clone());
                fw.completed.push_back(task);
            }
        }
    }

    /// Records the end of a removed framework's tasks still in its active
    /// table: those still running (or unreachable) as killed by the
    /// removal (the agents kill them, `ShutdownFramework`), and those that
    /// ended but whose last update was not yet acknowledged as they ended.
    pub(super) fn record_killed_by_removal(&mut self, tasks: impl Iterator<Item = Arc<Task>>) {
        let now = unix_now();
        for mut t in tasks {
            let t = Arc::make_mut(&mut t);
            if t.state.is_terminal() && t.state != TaskState::Unreachable {
                let ended_at = *t.ended_at.get_or_insert(now);
                self.unflushed_ends.push(t.record(ended_at));
                continue;
            }
            t.state = TaskState::Killed;
            t.last_status = Some(v1::TaskStatus {
                reason: v1::StatusReason::ReasonFrameworkRemoved as i32,
                message: "killed: its framework was removed".into(),
                ..Default::default()
            });
            self.unflushed_ends.push(t.record(now));
        }
    }

    /// Proposes the ends that wait, if it is time (or `now` is `None`:
    /// at once, e.g. before a framework's removal, so its ends precede it
    /// in the log).
    pub(super) fn flush_history(&mut self, now: Option<Instant>) {
        if !self.history_bounds_proposed {
            self.history_bounds_proposed = true;
            let bounds = HistoryBounds {
                tasks_per_framework: self.cfg.completed_tasks_per_framework,
                frameworks: self.cfg.completed_frameworks,
            };
            if self.registry.history.bounds != bounds {
                self.emit(Effect::Propose(RegistryOp::SetHistoryBounds { bounds }));
            }
        }
        if self.unflushed_ends.is_empty() {
            return;
        }
        if let Some(now) = now {
            if now.duration_since(self.last_history_flush) < FLUSH_EVERY && self.unflushed_ends.len() < FLUSH_AT {
                return;
            }
            self.last_history_flush = now;
        }
        let records = std::mem::take(&mut self.unflushed_ends);
        self.emit(Effect::Propose(RegistryOp::RecordTaskEnds { records }));
    }

    /// Proposes the removal of a framework, after its task ends.
    pub(super) fn propose_framework_removal(&mut self, id: FrameworkId) {
        self.flush_history(None);
        self.emit(Effect::Propose(RegistryOp::remove_framework(id)));
    }
}
