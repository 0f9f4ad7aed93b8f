//! The executor API's calls, as the table answers them: each is checked
//! against the token of the executor it names; SUBSCRIBE opens its event
//! stream (replacing an older one) and hands it every task it has not
//! seen, UPDATE queues a status for the master with the executor's uuid
//! and acknowledges it once journaled, MESSAGE goes to the master.

use std::collections::HashSet;

use mezzo_proto::ids::{ExecutorId, FrameworkId, TaskId};
use mezzo_proto::mesos::executor as mx;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;
use tokio::sync::mpsc;

use super::super::Table;
use super::{
    CallError, EVENTS_CAPACITY, ExecKey, ExecutorCall, ExecutorEntry, MAX_EXECUTOR_DATA, container_id, tokens_equal,
};
use crate::key::TaskKey;
use crate::{AgentError, paths};

/// Tasks a subscribing executor has not seen: one for a LAUNCH, or a
/// whole group for a LAUNCH_GROUP.
struct Unseen {
    tasks: Vec<v1::TaskInfo>,
    grouped: bool,
}

/// An update the agent has (taken now or before): the executor is owed
/// ACKNOWLEDGED for it once it is journaled.
struct Taken {
    task_id: TaskId,
    uuid: Vec<u8>,
}

impl Table {
    /// The executor named by a call, checked against its token. An
    /// unknown framework or executor gets the same answer as a wrong
    /// token: the API does not tell who runs here.
    fn caller(&mut self, fid: &str, eid: &str, token: &str) -> Result<(ExecKey, &mut ExecutorEntry), CallError> {
        let (Ok(f), Ok(e)) = (FrameworkId::parse(fid), ExecutorId::parse(eid)) else {
            return Err(CallError::BadRequest("invalid framework or executor id".into()));
        };
        let key = (f, e);
        match self.executors.get_mut(&key) {
            Some(exec) if tokens_equal(&exec.token, token) => Ok((key, exec)),
            _ => Err(CallError::Forbidden("the token is not this executor's".into())),
        }
    }

    /// The executor named by a call, checked, and subscribed.
    fn subscribed_caller(&mut self, fid: &str, eid: &str, token: &str) -> Result<ExecKey, CallError> {
        match self.caller(fid, eid, token)? {
            (_, exec) if exec.stream.is_none() => Err(CallError::Forbidden("Executor is not subscribed".into())),
            (key, _) => Ok(key),
        }
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
                let r = match self.subscribed_caller(&framework_id, &executor_id, &token) {
                    Err(e) => Err(e),
                    Ok(ekey) => match self.executor_update(&ekey, &status, false).await? {
                        Err(e) => Err(e),
                        Ok(taken) => {
                            if let Some(stream) = self.executors.get(&ekey).and_then(|e| e.stream.clone()) {
                                self.acknowledge_once_journaled(stream, vec![taken]);
                            }
                            Ok(())
                        }
                    },
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
                let r = self
                    .subscribed_caller(&framework_id, &executor_id, &token)
                    .map(|(fid, eid)| {
                        self.executor_message(v1::ExecutorMessage {
                            framework_id: fid.to_string(),
                            executor_id: eid.to_string(),
                            data,
                        })
                    });
                let _ = reply.send(r);
            }
            ExecutorCall::Heartbeat {
                framework_id,
                executor_id,
                token,
                reply,
            } => {
                let r = self.caller(&framework_id, &executor_id, &token).map(|_| ());
                let _ = reply.send(r);
            }
        }
        Ok(())
    }

    /// ACKNOWLEDGED for `taken` on `stream` once the status update manager
    /// has journaled everything queued so far (as Mesos' agent acknowledges
    /// an executor's update once checkpointed), without holding the table.
    fn acknowledge_once_journaled(&self, stream: mpsc::Sender<mx::Event>, taken: Vec<Taken>) {
        if taken.is_empty() {
            return;
        }
        let status = self.deps.status.clone();
        tokio::spawn(async move {
            if let Err(e) = status.pending().await {
                tracing::debug!("executor updates not acknowledged: {e}");
                return;
            }
            for t in taken {
                if stream.try_send(mx::acknowledged(t.task_id.as_str(), &t.uuid)).is_err() {
                    // It resends the update on resubscribing and is
                    // acknowledged then.
                    tracing::debug!(task = %t.task_id, "acknowledgement not passed on: the executor's stream is full or gone");
                    return;
                }
            }
        });
    }

    async fn subscribe(
        &mut self,
        fid: &str,
        eid: &str,
        token: &str,
        subscribe: mx::Subscribe,
    ) -> Result<Result<mpsc::Receiver<mx::Event>, CallError>, AgentError> {
        let agent_id = self.agent_id();
        let agent_info = self.deps.executors.agent_info.clone();
        let port = self.deps.executors.endpoint.port();
        let ekey = match self.caller(fid, eid, token) {
            Ok((k, _)) => k,
            Err(e) => return Ok(Err(e)),
        };
        // Updates it sent that the agent may not have (it restarted), or
        // whose acknowledgement it missed: each is acknowledged (again).
        let mut taken = Vec::new();
        for u in &subscribe.unacknowledged_updates {
            match self.executor_update(&ekey, &u.status, true).await? {
                Ok(t) => taken.push(t),
                Err(e) => tracing::debug!(executor = %ekey.1, "unacknowledged update not taken: {e}"),
            }
        }
        let launches = self.unseen_launches(&ekey, &subscribe);
        let Some(exec) = self.executors.get_mut(&ekey) else {
            return Ok(Err(CallError::Forbidden("the token is not this executor's".into())));
        };
        let (tx, rx) = mpsc::channel(EVENTS_CAPACITY);
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
        let _ = tx.try_send(subscribed);
        exec.queued.clear();
        let mut launched = 0;
        for launch in &launches {
            let event = match launch.grouped {
                true => mx::launch_group(&launch.tasks, fid, &agent_id),
                false => mx::launch(&launch.tasks[0], fid, &agent_id),
            };
            match tx.try_send(event) {
                Ok(()) => launched += launch.tasks.len(),
                // More than a stream holds: the rest at its next SUBSCRIBE.
                Err(_) => exec
                    .queued
                    .extend(launch.tasks.iter().filter_map(|t| TaskId::parse(&t.task_id).ok())),
            }
        }
        if exec.kill_at.is_some() {
            // Shut down meanwhile: it is told again.
            let _ = tx.try_send(mx::Event::of("SHUTDOWN"));
        }
        // A newer subscription replaces the older: its stream ends.
        exec.stream = Some(tx.clone());
        exec.register_by = None;
        self.acknowledge_once_journaled(tx, taken);
        tracing::info!(framework = %fid, executor = %eid, launched, "executor subscribed");
        Ok(Ok(rx))
    }

    /// What a subscribing executor is handed: every task of it still
    /// STAGING (it never sent an update for it) that it does not list as
    /// unacknowledged, in the order they were queued, then by id; a task
    /// of a group with its whole group, in one LAUNCH_GROUP, only if every
    /// task of the group is so (otherwise the executor has the group). A
    /// LAUNCH lost on a half-open stream or across an agent restart is so
    /// sent again, as Mesos' agent relaunches such tasks.
    fn unseen_launches(&self, ekey: &ExecKey, subscribe: &mx::Subscribe) -> Vec<Unseen> {
        let held: HashSet<&str> = subscribe
            .unacknowledged_tasks
            .iter()
            .map(|t| t.task_id.value.as_str())
            .collect();
        let unseen = |key: &TaskKey| {
            self.tasks
                .get(key)
                .filter(|e| e.state == TaskState::Staging && e.executor.as_ref() == Some(&ekey.1))
                .filter(|_| !held.contains(key.task_id.as_str()))
                .map(|e| &e.info)
        };
        let key_of = |task_id: TaskId| TaskKey {
            framework_id: ekey.0.clone(),
            task_id,
        };
        let queued = self.executors.get(ekey).map(|e| e.queued.clone()).unwrap_or_default();
        let others = self
            .tasks
            .keys()
            .filter(|k| k.framework_id == ekey.0 && !queued.contains(&k.task_id))
            .map(|k| k.task_id.clone());
        let mut out = Vec::new();
        let mut grouped_ids = HashSet::new();
        for key in queued.iter().cloned().chain(others).map(key_of) {
            let Some(info) = unseen(&key) else { continue };
            if info.group.is_none() {
                out.push(Unseen {
                    tasks: vec![info.clone()],
                    grouped: false,
                });
                continue;
            }
            if grouped_ids.contains(&key.task_id) {
                continue;
            }
            let group: Vec<TaskKey> = std::iter::once(key.clone()).chain(self.siblings(&key)).collect();
            grouped_ids.extend(group.iter().map(|k| k.task_id.clone()));
            let tasks: Option<Vec<v1::TaskInfo>> = group.iter().map(|k| unseen(k).cloned()).collect();
            if let Some(mut tasks) = tasks {
                let order = info.group.as_ref().map(|g| g.task_ids.clone()).unwrap_or_default();
                tasks.sort_by_key(|t| order.iter().position(|id| *id == t.task_id));
                out.push(Unseen { tasks, grouped: true });
            }
        }
        out
    }

    /// An UPDATE from a subscribed executor (or, `resent`, one of a
    /// resubscription's unacknowledged updates): checked, then queued for
    /// the master with the executor's uuid. One the agent already has is
    /// taken again without being queued twice: a known uuid, or, resent,
    /// the state the task is in (after an agent restart only the uuids
    /// still pending are known; an acknowledged update is not journaled
    /// again).
    async fn executor_update(
        &mut self,
        ekey: &ExecKey,
        status: &mezzo_proto::mesos::types::TaskStatus,
        resent: bool,
    ) -> Result<Result<Taken, CallError>, AgentError> {
        let mut status = match mx::status_in(status, ekey.1.as_str()) {
            Ok(s) => s,
            Err(e) => return Ok(Err(CallError::BadRequest(e))),
        };
        if status.data.len() > MAX_EXECUTOR_DATA {
            return Ok(Err(CallError::BadRequest(format!(
                "'status.data' is larger than {MAX_EXECUTOR_DATA} bytes"
            ))));
        }
        let key = match TaskKey::parse(ekey.0.as_str(), &status.task_id) {
            Ok(k) => k,
            Err(e) => return Ok(Err(CallError::BadRequest(e.to_string()))),
        };
        let taken = Taken {
            task_id: key.task_id.clone(),
            uuid: status.uuid.clone(),
        };
        if resent && !self.tasks.contains_key(&key) {
            // Forgotten once its end was acknowledged: nothing of it is
            // left to queue; the executor may drop it.
            return Ok(Ok(taken));
        }
        let Some(current) = self
            .tasks
            .get(&key)
            .filter(|e| e.executor.as_ref() == Some(&ekey.1))
            .map(|e| e.state)
        else {
            return Ok(Err(CallError::BadRequest(format!(
                "task {} is not a task of executor {}",
                key.task_id, ekey.1
            ))));
        };
        let Some(exec) = self.executors.get_mut(ekey) else {
            return Ok(Err(CallError::Forbidden("the token is not this executor's".into())));
        };
        if exec.uuids.get(&key.task_id).is_some_and(|u| u.contains(&status.uuid)) {
            return Ok(Ok(taken));
        }
        let Some(new) = TaskState::from_proto(status.state) else {
            return Ok(Err(CallError::BadRequest("no task state".into())));
        };
        if resent && new == current {
            exec.uuids.entry(key.task_id.clone()).or_default().insert(status.uuid);
            return Ok(Ok(taken));
        }
        if let Err(e) = current.transition(new) {
            return Ok(Err(CallError::BadRequest(e.to_string())));
        }
        exec.uuids
            .entry(key.task_id.clone())
            .or_default()
            .insert(status.uuid.clone());
        exec.queued.retain(|t| *t != key.task_id);
        if current == TaskState::Staging {
            let dir = paths::task_meta_dir(&self.deps.runtime_dir, &key.framework_id, &key.task_id);
            if let Err(e) = std::fs::write(dir.join(paths::EXECUTOR_TOOK), b"") {
                tracing::warn!(task = %key, "cannot mark the task taken by its executor: {e}");
            }
        }
        status.framework_id = key.framework_id.to_string();
        status.agent_id = self.agent_id();
        if let Some(entry) = self.tasks.get_mut(&key) {
            self.deps.metrics.task_state(entry.state).dec();
            self.deps.metrics.task_state(new).inc();
            entry.state = new;
            entry.statuses.push(&status);
        }
        self.deps.status.update(key, status).await?;
        Ok(Ok(taken))
    }
}
