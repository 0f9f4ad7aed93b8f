//! `mezzo.v1.Scheduler`: the framework-facing gRPC service.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use mezzo_proto::ids::{AgentId, ExecutorId, FrameworkId, OfferId, TaskId, VolumeId};
use mezzo_proto::reservation::Role;
use mezzo_proto::v1;
use mezzo_proto::v1::scheduler_server::Scheduler;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::{kv, operation_resources, refuse, validate_framework, validate_task};
use crate::auth::Caller;
use crate::core::volumes::new_volume;
use crate::core::{ConnId, OfferOperation};
use crate::error::MasterError;
use crate::runtime::{Call, Command, Handle};

/// Capacity of one framework's event queue; behind it the owner task holds
/// task updates (one per task) and a bounded number of other events
/// before it disconnects the framework (`runtime::outbox`).
pub const EVENT_QUEUE: usize = 65536;
/// Most acknowledgements one call may carry (an SDK batches what arrived
/// while its previous call was in flight: a few dozen under load).
pub const MAX_ACKS_PER_CALL: usize = 10_000;

#[derive(Debug, Clone)]
pub struct SchedulerApi {
    handle: Handle,
}

impl SchedulerApi {
    pub fn new(handle: Handle) -> Self {
        SchedulerApi { handle }
    }

    async fn call(
        &self,
        caller: Caller,
        framework_id: &str,
        call: impl FnOnce() -> Result<Call, MasterError>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let fid = FrameworkId::parse(framework_id).map_err(MasterError::from)?;
        self.handle.call(fid, call()?, caller).await?;
        Ok(Response::new(v1::CallResponse {}))
    }
}

/// The event stream handed to tonic; tells the owner when the framework
/// goes away (tonic drops the stream when the client disconnects).
pub struct EventStream {
    rx: mpsc::Receiver<Result<v1::Event, Status>>,
    conn: ConnId,
    handle: Handle,
}

impl Stream for EventStream {
    type Item = Result<v1::Event, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.handle.notify(Command::FrameworkClosed(self.conn));
    }
}

fn offer_ids(ids: &[String]) -> Result<Vec<OfferId>, MasterError> {
    ids.iter()
        .map(|s| OfferId::parse(s).map_err(MasterError::from))
        .collect()
}

#[tonic::async_trait]
impl Scheduler for SchedulerApi {
    type SubscribeStream = EventStream;

    async fn subscribe(&self, req: Request<v1::SubscribeRequest>) -> Result<Response<EventStream>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let info = validate_framework(req.framework)?;
        let id = match req.framework_id.as_str() {
            "" => None,
            s => Some(FrameworkId::parse(s).map_err(MasterError::from)?),
        };
        let suppressed = roles(&req.suppressed_roles)?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let conn = self.handle.subscribe(info, id, suppressed, caller, tx).await?;
        Ok(Response::new(EventStream {
            rx,
            conn,
            handle: self.handle.clone(),
        }))
    }

    async fn accept(&self, req: Request<v1::AcceptRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let caller = Caller::of(&req);
        let mut req = req.into_inner();
        let fid = std::mem::take(&mut req.framework_id);
        self.call(caller, &fid, || accept(req)).await
    }

    async fn decline(&self, req: Request<v1::DeclineRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        self.call(caller, &req.framework_id, || decline(&req)).await
    }

    async fn revive(&self, req: Request<v1::ReviveRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        self.call(caller, &req.framework_id, || Ok(Call::Revive(roles(&req.roles)?)))
            .await
    }

    async fn suppress(&self, req: Request<v1::SuppressRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        self.call(caller, &req.framework_id, || Ok(Call::Suppress(roles(&req.roles)?)))
            .await
    }

    async fn kill(&self, req: Request<v1::KillRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        self.call(caller, &req.framework_id, || kill(&req)).await
    }

    async fn acknowledge(&self, req: Request<v1::AcknowledgeRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let caller = Caller::of(&req);
        let mut req = req.into_inner();
        let fid = std::mem::take(&mut req.framework_id);
        self.call(caller, &fid, || acknowledge(req)).await
    }

    async fn message(&self, req: Request<v1::MessageRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let caller = Caller::of(&req);
        let mut req = req.into_inner();
        let fid = std::mem::take(&mut req.framework_id);
        self.call(caller, &fid, || message(req)).await
    }

    async fn shutdown_executor(
        &self,
        req: Request<v1::ShutdownExecutorRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        self.call(caller, &req.framework_id, || shutdown_executor(&req)).await
    }

    async fn reconcile(&self, req: Request<v1::ReconcileRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        self.call(caller, &req.framework_id, || reconcile(&req)).await
    }

    async fn teardown(&self, req: Request<v1::TeardownRequest>) -> Result<Response<v1::CallResponse>, Status> {
        let caller = Caller::of(&req);
        self.call(caller, &req.into_inner().framework_id, || Ok(Call::Teardown))
            .await
    }

    async fn kv_get(&self, req: Request<v1::KvGetRequest>) -> Result<Response<v1::KvGetResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let answer = kv::ask(&self.handle, caller, &req.framework_id, kv::get(&req)?).await?;
        Ok(Response::new(kv::get_response(&req.key, answer)?))
    }

    async fn kv_put(&self, req: Request<v1::KvPutRequest>) -> Result<Response<v1::KvPutResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let framework_id = req.framework_id.clone();
        let answer = kv::ask(&self.handle, caller, &framework_id, kv::put(req)?).await?;
        Ok(Response::new(kv::put_response(answer)?))
    }

    async fn kv_delete(&self, req: Request<v1::KvDeleteRequest>) -> Result<Response<v1::KvDeleteResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let framework_id = req.framework_id.clone();
        let answer = kv::ask(&self.handle, caller, &framework_id, kv::delete(req)?).await?;
        Ok(Response::new(kv::delete_response(answer)?))
    }

    async fn kv_list(&self, req: Request<v1::KvListRequest>) -> Result<Response<v1::KvListResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let answer = kv::ask(&self.handle, caller, &req.framework_id, kv::list(&req)?).await?;
        Ok(Response::new(kv::list_response(answer)?))
    }

    async fn report_pending(
        &self,
        req: Request<v1::ReportPendingRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let fid = FrameworkId::parse(&req.framework_id).map_err(MasterError::from)?;
        let tasks = super::pending::pending_tasks(req.tasks)?;
        self.handle.call(fid, Call::ReportPending(tasks), caller).await?;
        Ok(Response::new(v1::CallResponse {}))
    }
}

/// Most volumes the `create` and `destroy` operations of one Accept name.
const MAX_VOLUMES_PER_OPERATION: usize = 100;

/// Checks an Accept and converts it (the framework id is checked by the
/// caller).
pub fn accept(req: v1::AcceptRequest) -> Result<Call, MasterError> {
    let offers = offer_ids(&req.offer_ids)?;
    let mut operations = Vec::new();
    // Volumes created or destroyed by every operation together.
    let mut volumes = 0;
    for op in req.operations {
        match op.operation {
            Some(v1::operation::Operation::Launch(l)) => {
                let launches = operations.len() + l.tasks.len();
                if launches > super::MAX_TASKS_PER_ACCEPT {
                    return Err(MasterError::Invalid(format!(
                        "one accept launches at most {} tasks, not {launches}",
                        super::MAX_TASKS_PER_ACCEPT
                    )));
                }
                let tasks = l.tasks.into_iter().map(validate_task).collect::<Result<Vec<_>, _>>()?;
                let tasks = if l.group {
                    super::group::task_group(tasks)?
                } else {
                    tasks
                };
                operations.extend(tasks.into_iter().map(OfferOperation::Launch));
            }
            Some(v1::operation::Operation::Reserve(r)) => {
                operations.push(OfferOperation::Reserve(operation_resources("reserve", &r.resources)?));
            }
            Some(v1::operation::Operation::Unreserve(r)) => operations.push(OfferOperation::Unreserve(
                operation_resources("unreserve", &r.resources)?,
            )),
            Some(v1::operation::Operation::Create(c)) => {
                volumes += c.volumes.len();
                if c.volumes.is_empty() || volumes > MAX_VOLUMES_PER_OPERATION {
                    return Err(MasterError::Invalid(format!(
                        "create: give at least 1 volume, and at most {MAX_VOLUMES_PER_OPERATION} in the creates and destroys of one accept"
                    )));
                }
                let volumes = c.volumes.iter().map(new_volume).collect::<Result<_, _>>()?;
                operations.push(OfferOperation::Create(volumes));
            }
            Some(v1::operation::Operation::Destroy(d)) => {
                volumes += d.volume_ids.len();
                if d.volume_ids.is_empty() || volumes > MAX_VOLUMES_PER_OPERATION {
                    return Err(MasterError::Invalid(format!(
                        "destroy: give at least 1 volume id, and at most {MAX_VOLUMES_PER_OPERATION} in the creates and destroys of one accept"
                    )));
                }
                let ids = d
                    .volume_ids
                    .iter()
                    .map(|id| VolumeId::parse(id))
                    .collect::<Result<_, _>>()?;
                operations.push(OfferOperation::Destroy(ids));
            }
            None => return Err(MasterError::Invalid("empty operation".into())),
        }
    }
    Ok(Call::Accept {
        offers,
        operations,
        refuse: refuse(req.filters.as_ref())?,
    })
}

/// Checks a Decline and converts it.
pub fn decline(req: &v1::DeclineRequest) -> Result<Call, MasterError> {
    if req.offer_ids.is_empty() {
        return Err(MasterError::Invalid("decline names no offers".into()));
    }
    Ok(Call::Decline {
        offers: offer_ids(&req.offer_ids)?,
        refuse: refuse(req.filters.as_ref())?,
    })
}

/// Checks a Kill and converts it.
pub fn kill(req: &v1::KillRequest) -> Result<Call, MasterError> {
    let grace = req.kill_grace_period_ms.map(Duration::from_millis);
    if grace.is_some_and(|g| g > super::MAX_KILL_GRACE) {
        return Err(MasterError::Invalid("kill grace period exceeds an hour".into()));
    }
    Ok(Call::Kill {
        task: TaskId::parse(&req.task_id)?,
        grace,
    })
}

/// The roles of a revive or suppress (at most a framework's).
pub fn roles(names: &[String]) -> Result<Vec<Role>, MasterError> {
    if names.len() > super::MAX_ROLES_PER_FRAMEWORK {
        return Err(MasterError::Invalid(format!(
            "at most {} roles, not {}",
            super::MAX_ROLES_PER_FRAMEWORK,
            names.len()
        )));
    }
    names
        .iter()
        .map(|r| Role::parse(r).map_err(|e| MasterError::Invalid(format!("roles: {e}"))))
        .collect()
}

/// Checks a message for an executor and converts it.
pub fn message(req: v1::MessageRequest) -> Result<Call, MasterError> {
    if req.data.len() > super::MAX_OPAQUE_BYTES {
        return Err(MasterError::Invalid(format!(
            "a message may hold at most {} bytes",
            super::MAX_OPAQUE_BYTES
        )));
    }
    Ok(Call::Message {
        agent: AgentId::parse(&req.agent_id)?,
        executor: ExecutorId::parse(&req.executor_id)?,
        data: req.data,
    })
}

/// Checks an executor shutdown and converts it.
pub fn shutdown_executor(req: &v1::ShutdownExecutorRequest) -> Result<Call, MasterError> {
    Ok(Call::ShutdownExecutor {
        agent: AgentId::parse(&req.agent_id)?,
        executor: ExecutorId::parse(&req.executor_id)?,
    })
}

/// Checks an Acknowledge, one or a batch (parsed whole), and converts it.
pub fn acknowledge(req: v1::AcknowledgeRequest) -> Result<Call, MasterError> {
    let single = !(req.agent_id.is_empty() && req.task_id.is_empty() && req.uuid.is_empty());
    if req.acks.is_empty() || single {
        if !req.acks.is_empty() {
            return Err(MasterError::Invalid(
                "name one acknowledgement (agent_id, task_id, uuid) or several in acks, not both".into(),
            ));
        }
        return Ok(Call::Acknowledge(vec![(
            AgentId::parse(&req.agent_id)?,
            TaskId::parse(&req.task_id)?,
            req.uuid,
        )]));
    }
    if req.acks.len() > MAX_ACKS_PER_CALL {
        return Err(MasterError::Invalid(format!(
            "{} acknowledgements in one call; at most {MAX_ACKS_PER_CALL}",
            req.acks.len()
        )));
    }
    let acks = req
        .acks
        .into_iter()
        .map(|a| Ok((AgentId::parse(&a.agent_id)?, TaskId::parse(&a.task_id)?, a.uuid)))
        .collect::<Result<Vec<_>, MasterError>>()?;
    Ok(Call::Acknowledge(acks))
}

/// Checks a Reconcile and converts it.
pub fn reconcile(req: &v1::ReconcileRequest) -> Result<Call, MasterError> {
    let mut tasks = Vec::with_capacity(req.tasks.len());
    for t in &req.tasks {
        let agent = match t.agent_id.as_str() {
            "" => None,
            a => Some(AgentId::parse(a)?),
        };
        tasks.push((TaskId::parse(&t.task_id)?, agent));
    }
    Ok(Call::Reconcile { tasks })
}
