//! The executor API's calls, as the table answers them: each is checked
//! against the token of the executor it names; SUBSCRIBE opens its event
//! stream (replacing an older one), UPDATE queues a status for the master
//! with the executor's uuid, MESSAGE goes to the master.

use mezzo_proto::mesos::executor as mx;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;
use tokio::sync::mpsc;

use super::super::Table;
use super::{CallError, ExecKey, ExecutorCall, ExecutorEntry, container_id, tokens_equal};
use crate::AgentError;
use crate::key::TaskKey;
use mezzo_proto::ids::{ExecutorId, FrameworkId};

impl Table {
    /// The executor named by a call, checked against its token.
    fn caller(&mut self, fid: &str, eid: &str, token: &str) -> Result<(ExecKey, &mut ExecutorEntry), CallError> {
        let (Ok(f), Ok(e)) = (FrameworkId::parse(fid), ExecutorId::parse(eid)) else {
            return Err(CallError::BadRequest("invalid framework or executor id".into()));
        };
        if !self.executors.keys().any(|(x, _)| *x == f) {
            return Err(CallError::BadRequest("Framework cannot be found".into()));
        }
        let key = (f, e);
        let Some(exec) = self.executors.get_mut(&key) else {
            return Err(CallError::BadRequest("Executor cannot be found".into()));
        };
        if !tokens_equal(&exec.token, token) {
            return Err(CallError::Forbidden("the token is not this executor's".into()));
        }
        Ok((key, exec))
    }

    pub(in crate::task::table) async fn on_executor_call(&mut self, call: ExecutorCall) -> Result<(), AgentError> {
        match call {
            ExecutorCall::Subscribe {
                framework_id,
                executor_id,
                token,
                subscribe,
                reply,
            } => {
                let r = self.subscribe(&framework_id, &executor_id, &token, subscribe).await?;
                let _ = reply.send(r);
            }
            ExecutorCall::Update {
                framework_id,
                executor_id,
                token,
                status,
                reply,
            } => {
                let r = match self.caller(&framework_id, &executor_id, &token) {
                    Err(e) => Err(e),
                    Ok((_, exec)) if exec.stream.is_none() => {
                        Err(CallError::Forbidden("Executor is not subscribed".into()))
                    }
                    Ok((ekey, _)) => self.executor_update(&ekey, &status).await?,
                };
                let _ = reply.send(r);
            }
            ExecutorCall::Message {
                framework_id,
                executor_id,
                token,
                data,
                reply,
            } => {
                let r = match self.caller(&framework_id, &executor_id, &token) {
                    Err(e) => Err(e),
                    Ok((_, exec)) if exec.stream.is_none() => {
                        Err(CallError::Forbidden("Executor is not subscribed".into()))
                    }
                    Ok(((fid, eid), _)) => {
                        self.outbound(v1::agent_message::Message::ExecutorMessage(v1::ExecutorMessage {
                            framework_id: fid.to_string(),
                            executor_id: eid.to_string(),
                            data,
                        }));
                        Ok(())
                    }
                };
                let _ = reply.send(r);
            }
        }
        Ok(())
    }

    async fn subscribe(
        &mut self,
        fid: &str,
        eid: &str,
        token: &str,
        subscribe: mx::Subscribe,
    ) -> Result<Result<mpsc::UnboundedReceiver<mx::Event>, CallError>, AgentError> {
        let agent_id = self.agent_id();
        let agent_info = self.deps.executors.agent_info.clone();
        let port = self.deps.executors.endpoint.port();
        let ekey = match self.caller(fid, eid, token) {
            Ok((k, _)) => k,
            Err(e) => return Ok(Err(e)),
        };
        // Updates it sent that the agent may not have (it restarted).
        for u in &subscribe.unacknowledged_updates {
            if let Ok(Err(e)) = self.executor_update(&ekey, &u.status).await {
                tracing::debug!(executor = %ekey.1, "unacknowledged update not taken: {e}");
            }
        }
        let queued: Vec<v1::TaskInfo> = match self.executors.get(&ekey) {
            Some(e) => e
                .queued
                .iter()
                .filter_map(|t| {
                    self.tasks.get(&TaskKey {
                        framework_id: ekey.0.clone(),
                        task_id: t.clone(),
                    })
                })
                .map(|entry| entry.info.clone())
                .collect(),
            None => Vec::new(),
        };
        let Some(exec) = self.executors.get_mut(&ekey) else {
            return Ok(Err(CallError::BadRequest("Executor cannot be found".into())));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let subscribed = mx::Event {
            subscribed: Some(mx::Subscribed {
                executor_info: mx::executor_out(&exec.info, fid),
                framework_info: mx::framework_out(&exec.framework, fid),
                agent_info: mx::agent_info_out(&agent_info, &agent_id, port),
                container_id: Some(mx::ContainerId {
                    value: container_id(&ekey.0, &ekey.1),
                }),
            }),
            ..mx::Event::of("SUBSCRIBED")
        };
        let _ = tx.send(subscribed);
        for task in &queued {
            let launch = mx::Event {
                launch: Some(mx::Launch {
                    task: mx::task_out(task, fid, &agent_id),
                }),
                ..mx::Event::of("LAUNCH")
            };
            let _ = tx.send(launch);
        }
        exec.queued.clear();
        if exec.kill_at.is_some() {
            // Shut down meanwhile: it is told again.
            let _ = tx.send(mx::Event::of("SHUTDOWN"));
        }
        // A newer subscription replaces the older: its stream ends.
        exec.stream = Some(tx);
        exec.register_by = None;
        tracing::info!(framework = %fid, executor = %eid, launched = queued.len(), "executor subscribed");
        Ok(Ok(rx))
    }

    /// An UPDATE from a subscribed executor (or one of a resubscription's
    /// unacknowledged updates): checked, then queued for the master with
    /// the executor's uuid. One already taken is accepted again silently.
    async fn executor_update(
        &mut self,
        ekey: &ExecKey,
        status: &mezzo_proto::mesos::types::TaskStatus,
    ) -> Result<Result<(), CallError>, AgentError> {
        let mut status = match mx::status_in(status, ekey.1.as_str()) {
            Ok(s) => s,
            Err(e) => return Ok(Err(CallError::BadRequest(e))),
        };
        let key = match TaskKey::parse(ekey.0.as_str(), &status.task_id) {
            Ok(k) => k,
            Err(e) => return Ok(Err(CallError::BadRequest(e.to_string()))),
        };
        let Some(entry) = self.tasks.get(&key).filter(|e| e.executor.as_ref() == Some(&ekey.1)) else {
            return Ok(Err(CallError::BadRequest(format!(
                "task {} is not a task of executor {}",
                key.task_id, ekey.1
            ))));
        };
        let Some(exec) = self.executors.get_mut(ekey) else {
            return Ok(Err(CallError::BadRequest("Executor cannot be found".into())));
        };
        if exec.uuids.get(&key.task_id).is_some_and(|u| u.contains(&status.uuid)) {
            return Ok(Ok(()));
        }
        let Some(new) = TaskState::from_proto(status.state) else {
            return Ok(Err(CallError::BadRequest("no task state".into())));
        };
        if let Err(e) = entry.state.transition(new) {
            return Ok(Err(CallError::BadRequest(e.to_string())));
        }
        exec.uuids
            .entry(key.task_id.clone())
            .or_default()
            .insert(status.uuid.clone());
        exec.queued.retain(|t| *t != key.task_id);
        status.framework_id = key.framework_id.to_string();
        status.agent_id = self.agent_id();
        if let Some(entry) = self.tasks.get_mut(&key) {
            self.deps.metrics.task_state(entry.state).dec();
            self.deps.metrics.task_state(new).inc();
            entry.state = new;
            entry.statuses.push(&status);
        }
        self.deps.status.update(key, status).await?;
        Ok(Ok(()))
    }
}
