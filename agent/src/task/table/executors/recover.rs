//! Executors after an agent restart: each whose process is found again
//! is watched by a new supervisor and keeps its token (it resubscribes,
//! as Mesos executors do; unless the executor API lost its port, see
//! [`super::ExecutorDeps::rotate_tokens`]); the tasks of one that is gone
//! fail. One whose checkpoint is partial is killed if found: it cannot
//! be checked or talked to.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mezzo_proto::ids::{ExecutorId, FrameworkId};
use mezzo_proto::state::TaskState;
use mezzo_proto::v1::{self, StatusReason};
use tokio::time::Instant;

use super::super::{Statuses, Table};
use super::{ExecutorEntry, container_id, new_token, write_token};
use crate::containerizer::Recovery;
use crate::key::TaskKey;
use crate::task::agent_status;
use crate::{AgentError, paths};

impl Table {
    /// Finds the executors that ran before a restart: each whose container
    /// is found again is watched by a new supervisor (its run dir is added
    /// to `adopted`) and keeps its token; the others are gone (their
    /// checkpoints removed; their tasks fail as they are recovered).
    pub(in crate::task::table) async fn recover_executors(&mut self, adopted: &mut Vec<PathBuf>) {
        let root = paths::executors_meta_root(&self.deps.runtime_dir);
        for fw in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for ex in std::fs::read_dir(fw.path()).into_iter().flatten().flatten() {
                let dir = ex.path();
                let ids = (
                    FrameworkId::parse(&fw.file_name().to_string_lossy()),
                    ExecutorId::parse(&ex.file_name().to_string_lossy()),
                );
                let (Ok(fid), Ok(eid)) = ids else {
                    tracing::warn!(path = %dir.display(), "not an executor's checkpoint; skipped");
                    continue;
                };
                let ekey = (fid, eid);
                let run = std::fs::read(dir.join(paths::TASK_CHECKPOINT))
                    .ok()
                    .and_then(|b| <v1::RunTask as prost::Message>::decode(b.as_slice()).ok());
                let token = std::fs::read_to_string(dir.join(paths::EXECUTOR_TOKEN)).ok();
                let task = run.and_then(|r| r.task);
                let info = task.as_ref().and_then(|t| t.executor.clone());
                // Always asked, also with a partial checkpoint: a live
                // process must be adopted or killed, never left untracked.
                let id = container_id(&ekey.0, &ekey.1);
                let found = match self.deps.containerizer.recover(id, dir.clone()).await {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::warn!(framework = %ekey.0, executor = %ekey.1, "cannot recover the executor's container: {e}");
                        Recovery::Gone
                    }
                };
                let token = match token {
                    Some(_) if self.deps.executors.rotate_tokens => {
                        tracing::warn!(framework = %ekey.0, executor = %ekey.1, "the executor API's former port is held by another process, where this executor reconnects: its token is replaced so that one collected there is useless; it is killed if it does not subscribe in time");
                        new_token()
                            .and_then(|t| write_token(&dir, &t).map(|()| t))
                            .inspect_err(|e| tracing::warn!("cannot replace the executor's token: {e}"))
                            .ok()
                    }
                    t => t,
                };
                match (found, task.zip(info), token) {
                    (Recovery::Adopted(container), Some((task, info)), Some(token)) => {
                        adopted.push(dir.clone());
                        let sup = self.supervise_executor(&ekey, task, Default::default(), Some(container));
                        let sandbox = paths::executor_sandbox_dir(&self.deps.work_dir, &ekey.0, &ekey.1);
                        self.deps.gc.launched(&sandbox);
                        tracing::info!(framework = %ekey.0, executor = %ekey.1, "watching a recovered executor");
                        self.executors.insert(
                            ekey,
                            ExecutorEntry {
                                info: *info,
                                framework: v1::FrameworkInfo::default(),
                                sandbox,
                                run_dir: dir,
                                token: token.trim().to_owned(),
                                supervisor: sup,
                                running: true,
                                stream: None,
                                queued: Vec::new(),
                                register_by: Some(Instant::now() + self.deps.executors.registration_timeout),
                                kill_at: None,
                                end_reason: None,
                                uuids: BTreeMap::new(),
                            },
                        );
                    }
                    (Recovery::Adopted(container), _, _) => {
                        tracing::warn!(framework = %ekey.0, executor = %ekey.1, "the executor's checkpoint or token is missing or unreadable: its process is killed");
                        kill_orphan(container);
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    _ => {
                        tracing::info!(framework = %ekey.0, executor = %ekey.1, "the executor is gone since the agent restarted");
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
            }
        }
    }

    /// A recovered task of an executor: its state as journaled (see
    /// `Table::unjournaled_state` if nothing is pending; queued again if
    /// STAGING); FAILED if its executor is gone. Its framework
    /// is remembered for the executor's next SUBSCRIBED, the uuids of its
    /// `pending` updates so that the executor's resubscription does not
    /// queue them twice.
    pub(in crate::task::table) async fn recover_executor_task(
        &mut self,
        key: &TaskKey,
        run: &v1::RunTask,
        eid: &ExecutorId,
        state: TaskState,
        pending: Vec<Vec<u8>>,
        statuses: &mut Statuses,
    ) -> Result<TaskState, AgentError> {
        let ekey = (key.framework_id.clone(), eid.clone());
        if let Some(exec) = self.executors.get_mut(&ekey) {
            if let Some(f) = &run.framework {
                exec.framework = f.clone();
            }
            exec.uuids.entry(key.task_id.clone()).or_default().extend(pending);
            if state == TaskState::Staging {
                // It never reached the executor: LAUNCH when it subscribes.
                exec.queued.push(key.task_id.clone());
            }
            return Ok(state);
        }
        if state.is_terminal() {
            return Ok(state);
        }
        let message = "the agent restarted and the task's executor is gone";
        let status = agent_status(
            key,
            &self.agent_id(),
            TaskState::Failed,
            StatusReason::ReasonExecutorTerminated,
            message,
        );
        statuses.push(&status);
        self.deps.status.update(key.clone(), status).await?;
        Ok(TaskState::Failed)
    }
}

/// Kills a process found again that cannot be run as an executor (its
/// checkpoint is partial): off the recovery, which need not wait.
fn kill_orphan(mut container: Box<dyn crate::containerizer::Container>) {
    tokio::spawn(async move {
        if let Err(e) = container.signal(crate::containerizer::Signal::SIGKILL) {
            tracing::warn!("cannot kill an untracked executor: {e}");
            return;
        }
        let _ = container.wait().await;
        let _ = container.cleanup().await;
    });
}
