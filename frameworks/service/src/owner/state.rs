//! What the owner holds per service: its record and the live state of
//! each instance, and the task-id format that ties an instance to its
//! service.

use std::collections::BTreeMap;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::plan::{Health, Inst, Limits, Phase, RestartHold};
use crate::record::{InstanceRecord, ServiceRecord};
use crate::view::Summary;

/// Agents an operator drains, by id, with the drain's deadline: their
/// instances are moved elsewhere. Not stored: the master tells the
/// framework again after every subscription.
pub(super) type Draining = BTreeMap<String, Option<std::time::SystemTime>>;

/// Live state of one instance, next to its record.
#[derive(Debug)]
pub(super) struct Live {
    pub(super) phase: Phase,
    pub(super) health: Health,
    pub(super) running_since: Option<Instant>,
    pub(super) failures: u32,
    pub(super) checker: Option<AbortHandle>,
    pub(super) kill_sent: Option<Instant>,
}

impl Live {
    pub(super) fn new(phase: Phase) -> Live {
        Live {
            phase,
            health: Health::Unknown,
            running_since: None,
            failures: 0,
            checker: None,
            kill_sent: None,
        }
    }

    pub(super) fn stop_checker(&mut self) {
        if let Some(h) = self.checker.take() {
            h.abort();
        }
    }
}

/// One service: its durable record and its instances' live state.
#[derive(Debug)]
pub(super) struct Svc {
    pub(super) rec: ServiceRecord,
    pub(super) live: BTreeMap<String, Live>,
    pub(super) backoff: RestartHold,
    pub(super) dirty: bool,
    /// When the current update (or rollback) was first seen running.
    pub(super) update_seen: Option<Instant>,
}

impl Svc {
    pub(super) fn new(rec: ServiceRecord, phase: Phase) -> Svc {
        let restart = rec.target_spec().map(|s| s.restart.clone()).unwrap_or_default();
        let live = rec.instances.keys().map(|k| (k.clone(), Live::new(phase))).collect();
        Svc {
            rec,
            live,
            backoff: RestartHold::new(&restart),
            dirty: false,
            update_seen: None,
        }
    }

    /// The instances as the planner sees them; those on a `draining`
    /// agent are to be moved.
    pub(super) fn insts(&self, draining: &Draining) -> Vec<Inst> {
        self.rec
            .instances
            .iter()
            .filter_map(|(id, r)| {
                let l = self.live.get(id)?;
                Some(Inst {
                    id: id.clone(),
                    version: r.version,
                    phase: l.phase,
                    health: l.health,
                    seq: r.seq,
                    moving: draining.contains_key(&r.agent_id),
                })
            })
            .collect()
    }

    pub(super) fn summary(&self) -> Summary {
        let d = &self.rec.deployment;
        let healthy = self.healthy().count() as u32;
        let state = if self.rec.removing {
            "removing".to_owned()
        } else {
            match (d.from, d.rolling_back) {
                // Not "stable" while below its count (issue 21: a drained
                // service read "stable" with no instance up).
                (None, _) if healthy < self.rec.desired => {
                    format!("degraded ({healthy}/{} healthy)", self.rec.desired)
                }
                (None, _) => "stable".to_owned(),
                (Some(f), false) => format!("updating {f} -> {}", d.target),
                (Some(f), true) => format!("rolling back {f} -> {}", d.target),
            }
        };
        let running = self.live.values().filter(|l| l.phase == Phase::Running).count() as u32;
        Summary {
            name: self.rec.name.clone(),
            version: d.target,
            desired: self.rec.desired,
            running,
            healthy,
            state,
        }
    }

    pub(super) fn healthy(&self) -> impl Iterator<Item = (&String, &InstanceRecord)> {
        self.rec.instances.iter().filter(|(id, _)| {
            self.live
                .get(*id)
                .is_some_and(|l| l.phase == Phase::Running && l.health == Health::Healthy)
        })
    }

    /// An instance passed its check (or runs, without one): healthy, and
    /// the restart backoff starts over.
    pub(super) fn healthy_now(&mut self, id: &str) {
        let Some(l) = self.live.get_mut(id) else { return };
        l.failures = 0;
        if l.health != Health::Healthy {
            l.health = Health::Healthy;
            let restart = self.rec.target_spec().map(|t| t.restart.clone()).unwrap_or_default();
            self.backoff.reset(&restart);
        }
    }

    pub(super) fn desired(&self) -> u32 {
        if self.rec.removing { 0 } else { self.rec.desired }
    }

    pub(super) fn limits(&self) -> Limits {
        let u = self.rec.target_spec().map(|s| s.upgrade.clone()).unwrap_or_default();
        Limits {
            max_surge: u.max_surge,
            max_unavailable: u.max_unavailable,
        }
    }
}

/// The id of a new instance of `name` at `version`: `<service>.<version>.<uuid>`.
pub(super) fn task_id(name: &str, version: u64) -> String {
    format!("{name}.{version}.{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The service a task id belongs to: ids are `<service>.<version>.<uuid>`.
pub(super) fn service_of(task_id: &str) -> &str {
    task_id.split('.').next().unwrap_or_default()
}
