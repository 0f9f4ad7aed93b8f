//! Tasks handed to a custom executor: one task (LAUNCH), or a whole task
//! group at once (LAUNCH_GROUP, once the table has gathered every task of
//! it). The executor is started for the first of them if it is not
//! running; every task is checkpointed before the executor is told; and
//! what the agent refuses, it refuses for all of them (a group is handed
//! over whole or not at all).

use mezzo_proto::ids::ExecutorId;
use mezzo_proto::mesos::executor as mx;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1::{self, StatusReason};

use super::super::group::Gathered;
use super::super::{Entry, Statuses, Table};
use super::{ExecKey, same_executor};
use crate::key::TaskKey;
use crate::task::{agent_status, supervisor};
use crate::{AgentError, paths};

/// One task for an executor, as the master sent it.
struct Handed {
    key: TaskKey,
    task: v1::TaskInfo,
    launched_at: f64,
    /// Checkpointed with the task, as the master sent it.
    framework: Option<v1::FrameworkInfo>,
}

/// Why the agent refuses tasks for an executor.
struct Refusal {
    state: TaskState,
    reason: StatusReason,
    message: String,
}

impl Refusal {
    fn invalid(message: String) -> Refusal {
        Refusal {
            state: TaskState::Failed,
            reason: StatusReason::ReasonTaskInvalid,
            message,
        }
    }

    /// A group the agent refuses, as the master refuses one.
    fn group_invalid(message: String) -> Refusal {
        Refusal {
            state: TaskState::Error,
            reason: StatusReason::ReasonTaskGroupInvalid,
            message,
        }
    }
}

/// One task of a `RunTask` (none if it has no valid task).
fn handed(r: v1::RunTask) -> Option<Handed> {
    let task = r.task?;
    let key = TaskKey::parse(&r.framework_id, &task.task_id).ok()?;
    Some(Handed {
        key,
        task,
        launched_at: r.launched_at,
        framework: r.framework,
    })
}

impl Table {
    /// A task for a custom executor: alone, it is handed over at once; of
    /// a group, once the whole group is here.
    pub(in crate::task::table) async fn on_run_executor_task(
        &mut self,
        run: v1::RunTask,
        key: TaskKey,
        task: v1::TaskInfo,
    ) -> Result<(), AgentError> {
        let launched_at = run.launched_at;
        let (runs, grouped, refused) = match task.group.clone() {
            None => (vec![run], false, None),
            Some(group) => match self.gather(run, &key, &group) {
                Gathered::Waiting => return Ok(()),
                Gathered::Complete(runs) => (runs, true, None),
                Gathered::Invalid(why) => (Vec::new(), true, Some(Refusal::group_invalid(why))),
                Gathered::Killed(reason, message) => {
                    let refusal = Refusal {
                        state: TaskState::Killed,
                        reason,
                        message,
                    };
                    (Vec::new(), true, Some(refusal))
                }
            },
        };
        if let Some(refusal) = refused {
            let handed = Handed {
                key,
                task,
                launched_at,
                framework: None,
            };
            return self.refuse_executor_tasks(vec![handed], refusal).await;
        }
        let framework = runs.first().and_then(|r| r.framework.clone()).unwrap_or_default();
        let handed = runs.into_iter().filter_map(handed).collect();
        self.hand_to_executor(handed, grouped, framework).await
    }

    /// A kill of `key`, a task of a group still gathered (if it is one):
    /// the group is killed, its tasks here and those still to come
    /// (TASK_KILLED, the others' message naming `key`), as a group still
    /// waiting for its executor is. Whether `key` was so.
    pub(in crate::task::table) async fn kill_gathered(
        &mut self,
        key: &TaskKey,
        why: Option<(StatusReason, String)>,
    ) -> Result<bool, AgentError> {
        let Some((gkey, runs, size)) = self.take_gathered(key) else {
            return Ok(false);
        };
        let (reason, message) = why.unwrap_or((
            StatusReason::ReasonTaskKilledDuringLaunch,
            "killed before its task group arrived whole".to_owned(),
        ));
        let group_message = format!("killed with its task group: task {} was {message}", key.task_id);
        let came = runs.len();
        let (asked, others): (Vec<Handed>, Vec<Handed>) =
            runs.into_iter().filter_map(handed).partition(|h| h.key == *key);
        let killed = |message| Refusal {
            state: TaskState::Killed,
            reason,
            message,
        };
        self.refuse_executor_tasks(asked, killed(message)).await?;
        self.refuse_executor_tasks(others, killed(group_message.clone()))
            .await?;
        self.killed_while_gathered(gkey, reason, group_message, size.saturating_sub(came));
        Ok(true)
    }

    /// Starts the tasks' executor if it is not running, checkpoints the
    /// tasks, then hands them over (or queues them until the executor
    /// subscribes): in one LAUNCH_GROUP if `grouped`.
    async fn hand_to_executor(
        &mut self,
        handed: Vec<Handed>,
        grouped: bool,
        framework: v1::FrameworkInfo,
    ) -> Result<(), AgentError> {
        let Some(first) = handed.first() else { return Ok(()) };
        let info = first.task.executor.clone().unwrap_or_default();
        let eid = match ExecutorId::parse(&info.executor_id) {
            Ok(eid) => eid,
            Err(e) => {
                return self
                    .refuse_executor_tasks(handed, Refusal::invalid(e.to_string()))
                    .await;
            }
        };
        let ekey = (first.key.framework_id.clone(), eid.clone());
        if let Some(refusal) = self.executor_refusal(&ekey, &info, &handed) {
            return self.refuse_executor_tasks(handed, refusal).await;
        }
        let fresh = !self.executors.contains_key(&ekey);
        if fresh && let Err(e) = self.start_executor(&ekey, &info, framework) {
            let message = format!("executor {eid} cannot be started: {e}");
            self.never_started(&ekey, &message);
            let refusal = Refusal {
                state: TaskState::Failed,
                reason: StatusReason::ReasonContainerLaunchFailed,
                message,
            };
            return self.refuse_executor_tasks(handed, refusal).await;
        }
        let mut handed = handed;
        for h in &mut handed {
            // The task's own secrets (an image login) are not the
            // executor's business, and never written.
            let _ = supervisor::take_secrets(&mut h.task);
        }
        if let Err(e) = self.checkpoint_executor_tasks(&handed, grouped) {
            if fresh {
                // Started for these tasks alone: it would idle on the
                // master's books.
                self.shutdown_executor(&ekey);
            }
            let refusal = Refusal {
                state: TaskState::Dropped,
                reason: StatusReason::ReasonContainerLaunchFailed,
                message: format!("the agent cannot checkpoint the task, which was not launched: {e}"),
            };
            return self.refuse_executor_tasks(handed, refusal).await;
        }
        let agent_id = self.agent_id();
        let Some(exec) = self.executors.get_mut(&ekey) else {
            return Ok(());
        };
        let fid = ekey.0.as_str();
        let event = match grouped {
            true => mx::launch_group(handed.iter().map(|h| &h.task), fid, &agent_id),
            false => mx::launch(&first_task(&handed), fid, &agent_id),
        };
        if !exec.send(event) {
            exec.queued.extend(handed.iter().map(|h| h.key.task_id.clone()));
        }
        let sandbox = exec.sandbox.clone();
        for h in handed {
            tracing::debug!(task = %h.key, executor = %eid, grouped, "handed to its executor");
            self.deps.metrics.task_state(TaskState::Staging).inc();
            self.tasks.insert(
                h.key,
                Entry {
                    info: h.task,
                    state: TaskState::Staging,
                    sandbox: sandbox.clone(),
                    supervisor: None,
                    launched_at: h.launched_at,
                    statuses: Statuses::default(),
                    executor: Some(eid.clone()),
                },
            );
        }
        Ok(())
    }

    /// Why the executor cannot take these tasks now, if it cannot: it asks
    /// for an isolated network, runs here with another info, or is
    /// shutting down; or a task of the group names another executor.
    fn executor_refusal(&mut self, ekey: &ExecKey, info: &v1::ExecutorInfo, handed: &[Handed]) -> Option<Refusal> {
        let eid = &ekey.1;
        if let Some(h) = handed
            .iter()
            .find(|h| h.task.executor.as_ref().map(|e| e.executor_id.as_str()) != Some(eid.as_str()))
        {
            return Some(Refusal::group_invalid(format!(
                "task {} of the group does not name executor {eid}",
                h.key.task_id
            )));
        }
        let isolated = info
            .labels
            .iter()
            .any(|l| l.name == crate::containerizer::NETWORK_LABEL && l.value == "isolated");
        if isolated {
            let message = format!(
                "executor {eid} asks for {}=isolated: an executor must reach the agent on 127.0.0.1, it runs on the host's network",
                crate::containerizer::NETWORK_LABEL
            );
            if !self.executors.contains_key(ekey) {
                self.never_started(ekey, &message);
            }
            return Some(Refusal::invalid(message));
        }
        let e = self.executors.get(ekey)?;
        if !same_executor(&e.info, info) {
            return Some(Refusal::invalid(format!(
                "executor {eid} already runs on this agent with another command, resources or container"
            )));
        }
        e.kill_at.is_some().then(|| Refusal {
            state: TaskState::Failed,
            reason: StatusReason::ReasonExecutorTerminated,
            message: format!("executor {eid} is shutting down"),
        })
    }

    /// Writes every task's checkpoint, or none: one that fails takes back
    /// those written before it. A group's tasks are then each marked
    /// [`paths::GROUP_WHOLE`]: a crash before that leaves a group that
    /// recovery drops (see `group::recover`).
    fn checkpoint_executor_tasks(&self, handed: &[Handed], grouped: bool) -> Result<(), AgentError> {
        let mut written = Vec::new();
        for h in handed {
            let checkpoint = v1::RunTask {
                framework_id: h.key.framework_id.to_string(),
                framework: h.framework.clone(),
                task: Some(h.task.clone()),
                launched_at: h.launched_at,
            };
            let dir = paths::task_meta_dir(&self.deps.runtime_dir, &h.key.framework_id, &h.key.task_id);
            let write = std::fs::create_dir_all(&dir)
                .map_err(AgentError::io("create", &dir))
                .and_then(|()| {
                    paths::write_replace(
                        &dir.join(paths::TASK_CHECKPOINT),
                        &prost::Message::encode_to_vec(&checkpoint),
                    )
                });
            if let Err(e) = write {
                for d in written.iter().chain([&dir]) {
                    let _ = std::fs::remove_dir_all(d);
                }
                return Err(e);
            }
            written.push(dir);
        }
        if !grouped {
            return Ok(());
        }
        for dir in &written {
            let mark = dir.join(paths::GROUP_WHOLE);
            if let Err(e) = std::fs::write(&mark, b"").map_err(AgentError::io("write", &mark)) {
                for d in &written {
                    let _ = std::fs::remove_dir_all(d);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Fails tasks the agent will not hand to an executor: each is
    /// reported with the same state, reason and message.
    async fn refuse_executor_tasks(&mut self, handed: Vec<Handed>, why: Refusal) -> Result<(), AgentError> {
        for h in handed {
            let key = h.key;
            tracing::info!(task = %key, "{}", why.message);
            let status = agent_status(&key, &self.agent_id(), why.state, why.reason, why.message.clone());
            let mut statuses = Statuses::default();
            statuses.push(&status);
            self.deps.metrics.task_state(why.state).inc();
            let sandbox = paths::sandbox_dir(&self.deps.work_dir, &key.framework_id, &key.task_id);
            self.tasks.insert(
                key.clone(),
                Entry {
                    info: h.task,
                    state: why.state,
                    sandbox,
                    supervisor: None,
                    launched_at: h.launched_at,
                    statuses,
                    executor: None,
                },
            );
            self.deps.status.update(key, status).await?;
        }
        Ok(())
    }
}

/// The one task of a LAUNCH.
fn first_task(handed: &[Handed]) -> v1::TaskInfo {
    handed.first().map(|h| h.task.clone()).unwrap_or_default()
}
