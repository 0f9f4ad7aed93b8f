//! What the framework holds per service beside the controller's desired
//! record and observed tasks: health and the restart hold, which live
//! only in memory, and the task-name format that ties an instance to its
//! service and version.

use std::collections::BTreeMap;
use std::time::Duration;

use mezzo_sdk::TaskState;
use mezzo_sdk::controller::Task;
use tokio::time::Instant;

use crate::plan::{Health, Inst, Limits, Phase, RestartHold};
use crate::record::{LegacyInstance, ServiceRecord};
use crate::view::Summary;

/// The label that carries an instance's version.
pub(super) const VERSION_LABEL: &str = "mezzo.service.version";

/// The label that carries a stateful instance's number (its volume is
/// `<service>-<number>`).
pub(super) const ORDINAL_LABEL: &str = "mezzo.service.instance";

/// A stateful instance's number.
pub(super) fn ordinal_of(t: &Task) -> Option<u32> {
    t.labels.get(ORDINAL_LABEL).and_then(|v| v.parse().ok())
}

/// Live state of one instance, next to its task.
#[derive(Debug)]
pub(super) struct Live {
    pub(super) health: Health,
}

impl Live {
    fn new() -> Live {
        Live {
            health: Health::Unknown,
        }
    }
}

/// One service's memory: its instances' health and its restart hold.
#[derive(Debug)]
pub(super) struct Svc {
    pub(super) live: BTreeMap<String, Live>,
    pub(super) backoff: RestartHold,
    /// When the current update (or rollback) was first seen running.
    pub(super) update_seen: Option<Instant>,
}

impl Svc {
    pub(super) fn new(rec: &ServiceRecord) -> Svc {
        let restart = rec.target_spec().map(|s| s.restart.clone()).unwrap_or_default();
        Svc {
            live: BTreeMap::new(),
            backoff: RestartHold::new(&restart),
            update_seen: None,
        }
    }

    pub(super) fn live(&mut self, id: &str) -> &mut Live {
        self.live.entry(id.to_owned()).or_insert_with(Live::new)
    }

    pub(super) fn health(&self, id: &str) -> Health {
        self.live.get(id).map_or(Health::Unknown, |l| l.health)
    }

    /// An instance passed its check (or runs, without one): healthy, and
    /// the restart backoff starts over.
    pub(super) fn healthy_now(&mut self, rec: &ServiceRecord, id: &str) -> bool {
        let l = self.live(id);
        if l.health == Health::Healthy {
            return false;
        }
        l.health = Health::Healthy;
        let restart = rec.target_spec().map(|t| t.restart.clone()).unwrap_or_default();
        self.backoff.reset(&restart);
        true
    }

    /// Forgets an instance that ended.
    pub(super) fn forget(&mut self, id: &str) {
        self.live.remove(id);
    }
}

/// The reconciler's state: every service's memory.
pub(crate) struct Services {
    pub(super) svcs: BTreeMap<String, Svc>,
    started: Instant,
}

impl Services {
    pub(super) fn new() -> Services {
        Services {
            svcs: BTreeMap::new(),
            started: Instant::now(),
        }
    }

    /// The restart holds' clock.
    pub(super) fn now(&self) -> Duration {
        self.started.elapsed()
    }

    pub(super) fn svc(&mut self, name: &str, rec: &ServiceRecord) -> &mut Svc {
        self.svcs.entry(name.to_owned()).or_insert_with(|| Svc::new(rec))
    }

    pub(super) fn health(&self, name: &str, id: &str) -> Health {
        self.svcs.get(name).map_or(Health::Unknown, |s| s.health(id))
    }
}

/// An instance's task: one launched through the controller that has not
/// ended (an adopted task is no instance: no record holds it).
pub(super) fn is_instance(t: &Task) -> bool {
    !t.adopted && !t.ended()
}

/// The version an instance runs.
pub(super) fn version_of(t: &Task) -> u64 {
    t.labels
        .get(VERSION_LABEL)
        .map(String::as_str)
        .or_else(|| t.id.split('.').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

/// What an instance is doing, as the planner needs it.
pub(super) fn phase(t: &Task) -> Phase {
    if t.killing {
        return Phase::Killing;
    }
    match t.state {
        TaskState::Staging => Phase::Staging,
        TaskState::Starting => Phase::Starting,
        TaskState::Running => Phase::Running,
        TaskState::Unknown => Phase::Unknown,
        _ => Phase::Killing,
    }
}

/// The instances as the planner sees them, launch order as `seq` (a
/// stateful instance's number instead, so that scaling down stops the
/// highest, as a StatefulSet does); those on a draining agent are to be
/// moved.
pub(super) fn insts(tasks: &[Task], svc: Option<&Svc>, draining: impl Fn(&str) -> bool) -> Vec<Inst> {
    tasks
        .iter()
        .filter(|t| is_instance(t))
        .enumerate()
        .map(|(seq, t)| Inst {
            id: t.id.clone(),
            version: version_of(t),
            phase: phase(t),
            health: svc.map_or(Health::Unknown, |s| s.health(&t.id)),
            seq: ordinal_of(t).map_or(seq as u64, u64::from),
            moving: draining(&t.location.agent_id),
        })
        .collect()
}

/// Instances that run and pass their checks.
pub(super) fn healthy<'a>(tasks: &'a [Task], svc: Option<&'a Svc>) -> impl Iterator<Item = &'a Task> + 'a {
    tasks.iter().filter(move |t| {
        is_instance(t) && phase(t) == Phase::Running && svc.is_some_and(|s| s.health(&t.id) == Health::Healthy)
    })
}

/// The versions instances run.
pub(super) fn running_versions(tasks: &[Task]) -> Vec<u64> {
    tasks.iter().filter(|t| is_instance(t)).map(version_of).collect()
}

pub(super) fn summary(rec: &ServiceRecord, tasks: &[Task], svc: Option<&Svc>) -> Summary {
    let d = &rec.deployment;
    let healthy = healthy(tasks, svc).count() as u32;
    let state = if rec.removing {
        "removing".to_owned()
    } else {
        match (d.from, d.rolling_back) {
            // Not "stable" while below its count (issue 21: a drained
            // service read "stable" with no instance up).
            (None, _) if healthy < rec.desired => {
                format!("degraded ({healthy}/{} healthy)", rec.desired)
            }
            (None, _) => "stable".to_owned(),
            (Some(f), false) => format!("updating {f} -> {}", d.target),
            (Some(f), true) => format!("rolling back {f} -> {}", d.target),
        }
    };
    let running = tasks
        .iter()
        .filter(|t| is_instance(t) && phase(t) == Phase::Running)
        .count() as u32;
    Summary {
        name: rec.name.clone(),
        version: d.target,
        desired: rec.desired,
        running,
        healthy,
        state,
    }
}

/// The update limits. A stateful service never surges: an instance's
/// volume is used by one task at a time, so its replacement starts once
/// it has stopped, and at least one instance may be missing meanwhile.
pub(super) fn limits(rec: &ServiceRecord) -> Limits {
    let spec = rec.target_spec();
    let u = spec.map(|s| s.upgrade.clone()).unwrap_or_default();
    if spec.is_some_and(|s| s.is_stateful()) {
        return Limits {
            max_surge: 0,
            max_unavailable: u.max_unavailable.max(1),
        };
    }
    Limits {
        max_surge: u.max_surge,
        max_unavailable: u.max_unavailable,
    }
}

/// The name (within its service) of a new instance at `version`: its task
/// id is `<service>.<version>.<uuid>`.
pub(super) fn instance_name(version: u64) -> String {
    format!("{version}.{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// An instance of an older record, as the controller's task: launch
/// order kept (as the oldest launches), state unknown until the master
/// answers.
pub(super) fn legacy_task(name: &str, id: String, i: LegacyInstance) -> Task {
    Task {
        id,
        key: name.to_owned(),
        state: TaskState::Unknown,
        status: None,
        location: mezzo_sdk::offers::Location {
            agent_id: i.agent_id,
            hostname: i.host,
            attributes: i.attributes,
        },
        ports: i.ports,
        labels: BTreeMap::from([(VERSION_LABEL.to_owned(), i.version.to_string())]),
        launched: Some(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(i.seq)),
        killing: false,
        adopted: false,
    }
}
