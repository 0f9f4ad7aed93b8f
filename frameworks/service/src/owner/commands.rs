//! The HTTP API's commands: deploy, scale, restart, roll back, remove,
//! and the reads. A change is written to the record before it is made.

use std::collections::BTreeMap;

use mezzo_sdk::SdkError;
use tracing::info;

use super::state::Svc;
use super::store::put;
use super::{Cmd, Owner};
use crate::error::ApiError;
use crate::plan::Phase;
use crate::record::{InstanceRecord, ServiceRecord};
use crate::spec::{MAX_INSTANCES, ServiceSpec};
use crate::view::{DeployReply, Endpoint, InstanceStatus, ServiceStatus, Summary};

impl Owner {
    pub(super) async fn on_cmd(&mut self, cmd: Cmd) {
        if !self.loaded {
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
                let r = self
                    .change(&name, |rec| {
                        let mut spec = rec
                            .target_spec()
                            .cloned()
                            .ok_or_else(|| ApiError::Conflict("no target version".into()))?;
                        spec.instances = rec.desired;
                        let v = rec.add_version(spec);
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
                let _ = reply.send(Ok(self.services.values().map(Svc::summary).collect()));
            }
            Cmd::Endpoints(name, reply) => {
                let _ = reply.send(self.endpoints(&name));
            }
        }
    }

    async fn deploy(&mut self, spec: ServiceSpec) -> Result<DeployReply, ApiError> {
        let name = spec.name.clone();
        let Some(s) = self.services.get(&name) else {
            let rec = ServiceRecord::new(spec);
            put(&self.kv, &rec).await.map_err(store_error)?;
            info!(service = %name, "created");
            let reply = reply_of(&rec, "created");
            self.services.insert(name, Svc::new(rec, Phase::Staging));
            return Ok(reply);
        };
        if s.rec.removing {
            return Err(ApiError::Conflict(format!(
                "service {name} is being removed; deploy it again once it is gone"
            )));
        }
        if s.rec.target_spec() == Some(&spec) {
            return Ok(reply_of(&s.rec, "unchanged"));
        }
        self.change(&name, |rec| {
            let v = rec.add_version(spec);
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
        let s = self.services.get(name).ok_or_else(|| unknown(name))?;
        if s.rec.removing {
            return Err(ApiError::Conflict(format!("service {name} is being removed")));
        }
        let mut rec = s.rec.clone();
        let out = f(&mut rec)?;
        put(&self.kv, &rec).await.map_err(store_error)?;
        if let Some(s) = self.services.get_mut(name) {
            s.rec = rec;
            s.dirty = false;
        }
        Ok(out)
    }

    fn summary(&self, name: &str) -> Result<Summary, ApiError> {
        self.services.get(name).map(Svc::summary).ok_or_else(|| unknown(name))
    }

    fn status(&self, name: &str) -> Result<ServiceStatus, ApiError> {
        let s = self.services.get(name).ok_or_else(|| unknown(name))?;
        let instances = s
            .rec
            .instances
            .iter()
            .map(|(id, r)| {
                let l = s.live.get(id);
                InstanceStatus {
                    task_id: id.clone(),
                    version: r.version,
                    host: r.host.clone(),
                    agent_id: r.agent_id.clone(),
                    ports: port_map(&s.rec, r),
                    phase: l.map(|l| format!("{:?}", l.phase)).unwrap_or_default(),
                    health: l.map(|l| format!("{:?}", l.health)).unwrap_or_default(),
                }
            })
            .collect();
        Ok(ServiceStatus {
            summary: s.summary(),
            instances,
            events: s.rec.events.clone(),
            spec: s
                .rec
                .target_spec()
                .cloned()
                .ok_or_else(|| ApiError::Conflict("no target version".into()))?,
        })
    }

    fn endpoints(&self, name: &str) -> Result<Vec<Endpoint>, ApiError> {
        let s = self.services.get(name).ok_or_else(|| unknown(name))?;
        Ok(s.healthy()
            .map(|(id, r)| Endpoint {
                task_id: id.clone(),
                version: r.version,
                host: r.host.clone(),
                ports: port_map(&s.rec, r),
                address: match r.ports.first() {
                    Some(p) => format!("{}:{p}", r.host),
                    None => r.host.clone(),
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

fn port_map(rec: &ServiceRecord, r: &InstanceRecord) -> BTreeMap<String, u64> {
    let names = rec
        .versions
        .get(&r.version)
        .map(|v| v.ports.clone())
        .unwrap_or_default();
    names.into_iter().zip(r.ports.iter().copied()).collect()
}
