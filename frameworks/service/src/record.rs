//! What the framework keeps in its durable key-value namespace: one record
//! per service (key `service/<name>`), holding its versions, deployment
//! and instance → task mapping, written as one value so that a service
//! changes atomically. An instance is written *before* its task is
//! launched, so a restart never forgets a task it may have started.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::Deployment;
use crate::spec::ServiceSpec;

/// Key prefix of service records.
pub const PREFIX: &str = "service/";

/// The key of service `name`.
pub fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// One service, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Its name (also in the key).
    pub name: String,
    /// Instances wanted (from the file, or `scale`).
    pub desired: u32,
    /// Versions still in use or to roll back to, by number.
    pub versions: BTreeMap<u64, ServiceSpec>,
    /// The number the next version gets.
    pub next_version: u64,
    /// Which version runs; an update in progress.
    pub deployment: Deployment,
    /// Live instances by task id.
    pub instances: BTreeMap<String, InstanceRecord>,
    /// The service is being removed: every instance is stopped, then the
    /// record is deleted.
    #[serde(default)]
    pub removing: bool,
    /// Launch counter, for ordering instances.
    #[serde(default)]
    pub next_seq: u64,
    /// The last few notable events, newest last.
    #[serde(default)]
    pub events: Vec<String>,
}

/// Most events kept per service.
const MAX_EVENTS: usize = 20;

impl ServiceRecord {
    /// A new service at version 1.
    pub fn new(spec: ServiceSpec) -> ServiceRecord {
        let mut rec = ServiceRecord {
            name: spec.name.clone(),
            desired: spec.instances,
            versions: BTreeMap::from([(1, spec)]),
            next_version: 2,
            deployment: Deployment::new(1),
            instances: BTreeMap::new(),
            removing: false,
            next_seq: 0,
            events: Vec::new(),
        };
        rec.event("created at version 1");
        rec
    }

    /// The spec of the target version.
    pub fn target_spec(&self) -> Option<&ServiceSpec> {
        self.versions.get(&self.deployment.target)
    }

    /// Adds `spec` as a new version and starts a rolling update to it.
    pub fn add_version(&mut self, spec: ServiceSpec) -> u64 {
        let v = self.next_version;
        self.next_version += 1;
        self.desired = spec.instances;
        self.versions.insert(v, spec);
        self.deployment.update_to(v);
        self.prune_versions();
        v
    }

    /// Drops versions nothing runs and nothing can roll back to.
    pub fn prune_versions(&mut self) {
        let mut keep = self.deployment.versions_in_use();
        keep.extend(self.instances.values().map(|i| i.version));
        self.versions.retain(|v, _| keep.contains(v));
    }

    /// Records an event (a timestamp is added; old ones are dropped).
    pub fn event(&mut self, what: impl Into<String>) {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        self.events.push(format!("{now} {}", what.into()));
        let excess = self.events.len().saturating_sub(MAX_EVENTS);
        self.events.drain(..excess);
    }
}

/// One instance, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Version it runs.
    pub version: u64,
    /// Agent it was launched on (for explicit reconciliation).
    pub agent_id: String,
    /// Host name of that agent (for health checks and discovery).
    pub host: String,
    /// Agent attributes (for placement constraints).
    #[serde(default)]
    pub attributes: Vec<(String, String)>,
    /// Ports assigned, in the order of the spec's `ports`.
    pub ports: Vec<u64>,
    /// Launch order.
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_pruned_to_those_in_use() {
        let spec =
            ServiceSpec::parse("name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\n").expect("spec");
        let mut r = ServiceRecord::new(spec.clone());
        assert_eq!(r.add_version(spec.clone()), 2);
        assert_eq!(r.add_version(spec.clone()), 3);
        // 3 replaces 2 which replaced 1: nothing runs 1 any more.
        assert_eq!(r.versions.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        let json = serde_json::to_vec(&r).expect("json");
        assert_eq!(serde_json::from_slice::<ServiceRecord>(&json).expect("back"), r);
        for i in 0..30 {
            r.event(format!("e{i}"));
        }
        assert_eq!(r.events.len(), MAX_EVENTS);
        assert!(r.events.last().is_some_and(|e| e.ends_with("e29")));
    }
}
