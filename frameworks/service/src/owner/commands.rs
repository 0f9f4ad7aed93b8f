//! The HTTP API's commands: deploy, scale, restart, roll back, remove,
//! and the reads. A change is written to the record before it is made.

use std::collections::BTreeMap;

use mezzo_sdk::SdkError;
use tracing::info;

use mezzo_sdk::controller::Task;

use super::state::{self, healthy, is_instance, phase, running_versions, version_of};
use super::{Cmd, Owner};
use crate::error::ApiError;
use crate::record::ServiceRecord;
use crate::spec::{MAX_INSTANCES, ServiceSpec};
use crate::view::{DeployReply, Endpoint, InstanceStatus, ServiceStatus, Summary};

impl Owner {
    pub(super) async fn on_cmd(&mut self, cmd: Cmd) {
        if !self.ctl.is_loaded() {
            match cmd {
                Cmd::Deploy(_, r) | Cmd::Restart(_, r) | Cmd::Rollback(_, r) => drop(r.send(not_ready())),
                Cmd::Scale(_, _, r) | Cmd::Remove(_, r) => drop(r.send(not_ready())),
                Cmd::Status(_, r) => drop(r.send(not_ready())),
                Cmd::List(r) => drop(r.send(not_ready())),
                Cmd::Endpoints(_, r) => drop(r.send(not_ready())),
            }
            return;
        }
        match cmd {
            Cmd::Deploy(spec, reply) => {
                let r = self.deploy(*spec).await;
                let _ = reply.send(r);
            }
            Cmd::Scale(name, n, reply) => {
                let r = if n > MAX_INSTANCES {
                    Err(ApiError::BadRequest(format!(
                        "instances: {n} is more than the limit of {MAX_INSTANCES}"
                    )))
                } else {
                    self.change(&name, |rec| {
                        rec.desired = n;
                        rec.event(format!("scaled to {n}"));
                        Ok(())
                    })
                    .await
                    .and_then(|()| self.summary(&name))
                };
                let _ = reply.send(r);
            }
            Cmd::Restart(name, reply) => {
                let running = running_versions(&self.ctl.tasks(&name));
                let r = self
                    .change(&name, |rec| {
                        let mut spec = rec
                            .target_spec()
                            .cloned()
                            .ok_or_else(|| ApiError::Conflict("no target version".into()))?;
                        spec.instances = rec.desired;
                        let v = rec.add_version(spec, &running);
                        rec.event(format!("restart: rolling to version {v}"));
                        Ok(reply_of(rec, "updated"))
                    })
                    .await;
                let _ = reply.send(r);
            }
            Cmd::Rollback(name, reply) => {
                let r = self
                    .change(&name, |rec| {
                        let to = rec.deployment.roll_back().ok_or_else(|| {
                            ApiError::Conflict(format!("service {} has no previous version to roll back to", rec.name))
                        })?;
                        rec.event(format!("rollback to version {to} requested"));
                        Ok(reply_of(rec, "rolling back"))
                    })
                    .await;
                let _ = reply.send(r);
            }
            Cmd::Remove(name, reply) => {
                let r = self
                    .change(&name, |rec| {
                        rec.removing = true;
                        rec.event("removal requested");
                        Ok(())
                    })
                    .await
                    .and_then(|()| self.summary(&name));
                let _ = reply.send(r);
            }
            Cmd::Status(name, reply) => {
                let _ = reply.send(self.status(&name));
            }
            Cmd::List(reply) => {
                let names: Vec<String> = self.ctl.desired().map(|(k, _)| k.to_owned()).collect();
                let _ = reply.send(names.iter().map(|n| self.summary(n)).collect());
            }
            Cmd::Endpoints(name, reply) => {
                let _ = reply.send(self.endpoints(&name));
            }
        }
    }

    async fn deploy(&mut self, spec: ServiceSpec) -> Result<DeployReply, ApiError> {
        let name = spec.name.clone();
        if spec.is_stateful() && self.role.is_star() {
            return Err(ApiError::BadRequest(format!(
                "service {name} has a volume: volumes are reserved for the framework's role, and this framework runs in role `*`; start the service framework in a role of its own (docs/service.md, \"Persistent volumes\")"
            )));
        }
        let Some(rec) = self.ctl.get(&name) else {
            let rec = ServiceRecord::new(spec);
            let reply = reply_of(&rec, "created");
            self.ctl.put(&name, rec).await.map_err(store_error)?;
            info!(service = %name, "created");
            return Ok(reply);
        };
        if rec.removing {
            return Err(ApiError::Conflict(format!(
                "service {name} is being removed; deploy it again once it is gone"
            )));
        }
        if rec.target_spec() == Some(&spec) {
            return Ok(reply_of(rec, "unchanged"));
        }
        if let Some(old) = rec.target_spec()
            && old.volume != spec.volume
        {
            return Err(ApiError::BadRequest(format!(
                "service {name}: `volume` cannot change once the service exists (its instances' volumes are made); remove the service and deploy it anew"
            )));
        }
        let running = running_versions(&self.ctl.tasks(&name));
        self.change(&name, |rec| {
            let v = rec.add_version(spec, &running);
            rec.event(format!("rolling update to version {v}"));
            Ok(reply_of(rec, "updated"))
        })
        .await
    }

    /// Applies `f` to a copy of a service's record, writes it, and only
    /// then makes it current: a refused or failed change leaves nothing
    /// half-done.
    async fn change<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut ServiceRecord) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let rec = self.ctl.get(name).ok_or_else(|| unknown(name))?;
        if rec.removing {
            return Err(ApiError::Conflict(format!("service {name} is being removed")));
        }
        let mut rec = rec.clone();
        let out = f(&mut rec)?;
        self.ctl.put(name, rec).await.map_err(store_error)?;
        Ok(out)
    }

    fn summary(&self, name: &str) -> Result<Summary, ApiError> {
        let rec = self.ctl.get(name).ok_or_else(|| unknown(name))?;
        Ok(state::summary(rec, &self.ctl.tasks(name), self.svc.svcs.get(name)))
    }

    fn status(&self, name: &str) -> Result<ServiceStatus, ApiError> {
        let rec = self.ctl.get(name).ok_or_else(|| unknown(name))?;
        let tasks = self.ctl.tasks(name);
        let instances = tasks
            .iter()
            .filter(|t| is_instance(t))
            .map(|t| InstanceStatus {
                task_id: t.id.clone(),
                version: version_of(t),
                host: t.location.hostname.clone(),
                agent_id: t.location.agent_id.clone(),
                ports: port_map(rec, t),
                phase: format!("{:?}", phase(t)),
                health: format!("{:?}", self.svc.health(name, &t.id)),
            })
            .collect();
        Ok(ServiceStatus {
            summary: state::summary(rec, &tasks, self.svc.svcs.get(name)),
            instances,
            events: rec.events.clone(),
            spec: rec
                .target_spec()
                .cloned()
                .ok_or_else(|| ApiError::Conflict("no target version".into()))?,
        })
    }

    fn endpoints(&self, name: &str) -> Result<Vec<Endpoint>, ApiError> {
        let rec = self.ctl.get(name).ok_or_else(|| unknown(name))?;
        let tasks = self.ctl.tasks(name);
        Ok(healthy(&tasks, self.svc.svcs.get(name))
            .map(|t| Endpoint {
                task_id: t.id.clone(),
                version: version_of(t),
                host: t.location.hostname.clone(),
                ports: port_map(rec, t),
                address: match t.ports.first() {
                    Some(p) => format!("{}:{p}", t.location.hostname),
                    None => t.location.hostname.clone(),
                },
            })
            .collect())
    }
}

fn not_ready<T>() -> Result<T, ApiError> {
    Err(ApiError::Unavailable(
        "the framework is still connecting to the masters".into(),
    ))
}

fn unknown(name: &str) -> ApiError {
    ApiError::NotFound(format!("no service named {name:?}"))
}

fn store_error(e: SdkError) -> ApiError {
    ApiError::Unavailable(format!(
        "cannot store the change in the masters' registry (nothing was changed): {e}"
    ))
}

fn reply_of(rec: &ServiceRecord, outcome: &str) -> DeployReply {
    DeployReply {
        name: rec.name.clone(),
        version: rec.deployment.target,
        outcome: outcome.into(),
    }
}

fn port_map(rec: &ServiceRecord, t: &Task) -> BTreeMap<String, u64> {
    let names = rec
        .versions
        .get(&version_of(t))
        .map(|v| v.ports.clone())
        .unwrap_or_default();
    names.into_iter().zip(t.ports.iter().copied()).collect()
}
