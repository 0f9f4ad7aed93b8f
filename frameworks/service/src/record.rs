//! What the framework keeps in its durable key-value namespace: one record
//! per service (key `service/<name>`), holding its versions and
//! deployment, written as one value so that a service changes atomically.
//! It is the desired object of the SDK's controller
//! ([`mezzo_sdk::controller`]), which keeps the instances' tasks beside it
//! (`service/<name>/tasks`, written before a task is launched, so a
//! restart never forgets a task it may have started).

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
    /// The service is being removed: every instance is stopped, then the
    /// record is deleted.
    #[serde(default)]
    pub removing: bool,
    /// The last few notable events, newest last.
    #[serde(default)]
    pub events: Vec<String>,
    /// Where each instance's persistent volume is, by instance number
    /// (stateful services only): written before the volume is created, so
    /// that a restarted framework knows where its instances belong.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<u32, VolumeBinding>,
    /// Instances as records written before the controller kept them
    /// (read once, handed to the controller, never written again).
    #[serde(default, rename = "instances", skip_serializing)]
    pub(crate) legacy: BTreeMap<String, LegacyInstance>,
}

/// One instance's persistent volume: on which agent, and what was
/// reserved there for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeBinding {
    /// The agent that holds it.
    pub agent_id: String,
    /// The agent's host and attributes, for placement constraints.
    pub hostname: String,
    /// The agent's attributes.
    #[serde(default)]
    pub attributes: Vec<(String, String)>,
    /// The resources reserved for the instance with it (text form; empty
    /// for a volume found rather than made), to give back.
    #[serde(default)]
    pub reserved: String,
    /// Unix seconds when its creation was asked for; `None` once an offer
    /// has listed it (it exists).
    #[serde(default)]
    pub creating_since: Option<f64>,
}

/// An instance as an older record held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LegacyInstance {
    pub(crate) version: u64,
    pub(crate) agent_id: String,
    pub(crate) host: String,
    #[serde(default)]
    pub(crate) attributes: Vec<(String, String)>,
    pub(crate) ports: Vec<u64>,
    #[serde(default)]
    pub(crate) seq: u64,
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
            removing: false,
            events: Vec::new(),
            volumes: BTreeMap::new(),
            legacy: BTreeMap::new(),
        };
        rec.event("created at version 1");
        rec
    }

    /// The spec of the target version.
    pub fn target_spec(&self) -> Option<&ServiceSpec> {
        self.versions.get(&self.deployment.target)
    }

    /// Adds `spec` as a new version and starts a rolling update to it;
    /// `running` are the versions instances run now.
    pub fn add_version(&mut self, spec: ServiceSpec, running: &[u64]) -> u64 {
        let v = self.next_version;
        self.next_version += 1;
        self.desired = spec.instances;
        self.versions.insert(v, spec);
        self.deployment.update_to(v);
        self.prune_versions(running);
        v
    }

    /// Drops versions nothing runs (`running` are those instances run)
    /// and nothing can roll back to.
    pub fn prune_versions(&mut self, running: &[u64]) {
        let mut keep = self.deployment.versions_in_use();
        keep.extend(running);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_pruned_to_those_in_use() {
        let spec =
            ServiceSpec::parse("name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\n").expect("spec");
        let mut r = ServiceRecord::new(spec.clone());
        assert_eq!(r.add_version(spec.clone(), &[]), 2);
        assert_eq!(r.add_version(spec.clone(), &[]), 3);
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

    /// A record from before the controller: its instances are read (to
    /// hand over), and not written again.
    #[test]
    fn instances_of_an_older_record_are_read_once() {
        let spec =
            ServiceSpec::parse("name = \"w\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1\"\n").expect("spec");
        let mut json = serde_json::to_value(ServiceRecord::new(spec)).expect("json");
        assert!(json.get("instances").is_none());
        json["instances"] =
            serde_json::json!({"w.1.abc": {"version": 1, "agent_id": "a", "host": "h", "ports": [31000], "seq": 4}});
        let r: ServiceRecord = serde_json::from_value(json).expect("older record");
        assert_eq!(r.legacy["w.1.abc"].ports, [31000]);
        assert!(serde_json::to_value(&r).expect("json").get("instances").is_none());
    }
}
