//! The durable registry (DESIGN.md "Durable state") as a command log.
//!
//! [`RegistryOp`] is the only payload of the log; [`Registry::apply`] is
//! deterministic, so every replica that applies the same ops in the same
//! order holds the same registry. Running tasks are not here: agents are
//! their source of truth.

use std::collections::BTreeMap;

use mezzo_proto::ids::{AgentId, FrameworkId, VolumeId};
use mezzo_proto::reservation::{ReservedResources, Role};
use mezzo_proto::resources::Resources;
use serde::{Deserialize, Serialize};

use crate::allocator::{Quota, valid_weight};
use crate::auth::state::{SecurityOp, SecurityState};
use crate::history::{History, HistoryBounds, RemovedFramework, Sample, TaskRecord};
use crate::kv::{self, KvDone, KvError, KvWrite, Namespace};

/// An agent the master has admitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: AgentId,
    pub hostname: String,
    pub http_address: String,
    /// Text form of its total resources (`Resources::parse`).
    pub resources: String,
    pub attributes: Vec<(String, String)>,
    /// Unix seconds when it was marked unreachable; `None` while reachable.
    pub unreachable_since: Option<f64>,
    /// The principal that registered it (`agent:NAME`): only the same
    /// credential may re-register it. `None` for an `--insecure` cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

/// A registered framework.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkRecord {
    pub id: FrameworkId,
    pub name: String,
    pub user: String,
    pub principal: String,
    pub roles: Vec<String>,
    pub failover_timeout_secs: f64,
    pub hostname: String,
    /// Unix seconds of its first registration, so that every master (and
    /// a new leader) shows the same time; 0 in records from before.
    #[serde(default)]
    pub registered_at: f64,
}

/// A persistent volume: disk of an agent reserved for `role`, made into a
/// named directory there that outlives its tasks (docs/frameworks.md,
/// "Volumes").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub role: Role,
    /// Its size (`disk:N`): taken out of the role's reservation on the
    /// agent, so never offered as disk while the volume exists.
    pub disk: Resources,
    /// The principal of the framework that created it.
    pub principal: String,
    /// Unix seconds.
    pub created_at: f64,
}

/// Every change to the registry. Serialized as one JSON object per entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RegistryOp {
    /// Admit a new agent, or re-admit a known one (re-registration also
    /// clears `unreachable_since`).
    AdmitAgent(AgentRecord),
    MarkAgentUnreachable {
        id: AgentId,
        at: f64,
    },
    RegisterFramework(FrameworkRecord),
    /// Removes a framework; its record and finished tasks move into the
    /// history. `at`: unix seconds when proposed (0 in logs written
    /// before the history existed).
    RemoveFramework {
        id: FrameworkId,
        #[serde(default)]
        at: f64,
    },
    /// Task ends the leader batched (see [`crate::history`]).
    RecordTaskEnds {
        records: Vec<TaskRecord>,
    },
    /// Utilisation samples the leader batched (see [`crate::history`]).
    RecordSamples {
        samples: Vec<Sample>,
    },
    /// How much history to keep (the leader's flags).
    SetHistoryBounds {
        bounds: HistoryBounds,
    },
    /// Where master `master` serves Mesos' API in plain HTTP
    /// (`--mesos-listen`), so that the others can redirect Mesos clients
    /// to it while it leads; `None` when it no longer does.
    SetMesosEndpoint {
        master: u64,
        addr: Option<String>,
    },
    /// Role weights to set (others keep theirs; 1 is the default).
    SetWeights {
        weights: BTreeMap<Role, f64>,
    },
    /// A role's quota; an empty one removes it.
    SetQuota {
        role: Role,
        quota: Quota,
    },
    /// Dynamically reserves an agent's unreserved resources (text form)
    /// for a role.
    Reserve {
        agent: AgentId,
        role: Role,
        resources: String,
        principal: String,
    },
    /// Gives back dynamically reserved resources (text form).
    Unreserve {
        agent: AgentId,
        role: Role,
        resources: String,
    },
    /// Makes a persistent volume of disk reserved for its role (a no-op
    /// when the agent already has a volume of that id). With `reserve`,
    /// its disk is reserved for the role by the same op: it came
    /// unreserved in the Accept that reserved and created it at once.
    CreateVolume {
        agent: AgentId,
        id: VolumeId,
        volume: VolumeRecord,
        #[serde(default)]
        reserve: bool,
    },
    /// Removes a persistent volume; its disk stays reserved for its role.
    DestroyVolume {
        agent: AgentId,
        id: VolumeId,
    },
    /// Write a key of a framework's namespace (see [`crate::kv`]).
    KvPut(KvWrite),
    /// Delete a key of a framework's namespace (`value` is `None`).
    KvDelete(KvWrite),
    /// An operator drains an agent: no new offers; tasks still running at
    /// `deadline` (unix seconds) are killed.
    DrainAgent {
        id: AgentId,
        deadline: Option<f64>,
        at: f64,
    },
    /// Ends a drain: the agent is offered again.
    ReactivateAgent {
        id: AgentId,
    },
    /// An operator marks an agent gone for good: its tasks become GONE and
    /// it may never register again under this id.
    MarkAgentGone {
        id: AgentId,
        at: f64,
    },
    /// ACLs, credentials, revocations and secrets (see [`crate::auth::state`]).
    Security {
        security: SecurityOp,
    },
}

impl RegistryOp {
    /// Removes framework `id` now.
    pub fn remove_framework(id: FrameworkId) -> RegistryOp {
        RegistryOp::RemoveFramework {
            id,
            at: mezzo_proto::clock::unix_now(),
        }
    }
}

/// An agent being drained by an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainRecord {
    /// Unix seconds after which its remaining tasks are killed.
    pub deadline: Option<f64>,
    /// Unix seconds when the drain started.
    pub since: f64,
}

/// The registry state: what must survive the loss of any master.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    pub agents: BTreeMap<AgentId, AgentRecord>,
    pub frameworks: BTreeMap<FrameworkId, FrameworkRecord>,
    /// The masters of the Raft group: id -> address.
    #[serde(default)]
    pub masters: BTreeMap<u64, String>,
    /// Masters' plain-HTTP addresses for Mesos' API (`--mesos-listen`).
    #[serde(default)]
    pub mesos_endpoints: BTreeMap<u64, String>,
    /// Highest master id ever used (ids are never reused).
    #[serde(default)]
    pub highest_master_id: u64,
    /// Frameworks' own durable key-value namespaces (see [`crate::kv`]).
    #[serde(default)]
    pub kv: BTreeMap<FrameworkId, Namespace>,
    /// Number of ops applied, for observability and snapshots.
    pub applied: u64,
    /// Role weights other than the default 1.
    #[serde(default)]
    pub weights: BTreeMap<Role, f64>,
    #[serde(default)]
    pub quotas: BTreeMap<Role, Quota>,
    /// Dynamic reservations per agent, in text form (`cpus(eng):2;...`).
    #[serde(default)]
    pub reservations: BTreeMap<AgentId, String>,
    /// Persistent volumes per agent.
    #[serde(default)]
    pub volumes: BTreeMap<AgentId, BTreeMap<VolumeId, VolumeRecord>>,
    /// Agents being drained (DESIGN.md "Durable state": maintenance).
    #[serde(default)]
    pub draining: BTreeMap<AgentId, DrainRecord>,
    /// Agents marked gone, with the unix seconds when; never re-admitted.
    #[serde(default)]
    pub gone: BTreeMap<AgentId, f64>,
    /// ACLs, issued and revoked credentials, sealed secrets.
    #[serde(default)]
    pub security: SecurityState,
    /// Finished tasks and removed frameworks, bounded.
    #[serde(default)]
    pub history: History,
}

impl Registry {
    /// Applies one committed op. Never fails: ops are validated before
    /// they are proposed, and applying an op about an unknown id is a no-op
    /// so that replay is always possible. A key-value write returns its
    /// outcome (decided here, so every replica agrees); other ops `None`.
    pub fn apply(&mut self, op: &RegistryOp) -> Option<Result<KvDone, KvError>> {
        // Saturating: a damaged snapshot's count must not crash a replica.
        self.applied = self.applied.saturating_add(1);
        match op {
            RegistryOp::AdmitAgent(rec) => {
                let mut rec = rec.clone();
                rec.unreachable_since = None;
                self.agents.insert(rec.id.clone(), rec);
            }
            RegistryOp::MarkAgentUnreachable { id, at } => {
                if let Some(a) = self.agents.get_mut(id) {
                    a.unreachable_since = Some(*at);
                }
            }
            RegistryOp::RegisterFramework(rec) => {
                self.frameworks.insert(rec.id.clone(), rec.clone());
            }
            RegistryOp::RemoveFramework { id, at } => {
                if let Some(rec) = self.frameworks.remove(id) {
                    self.history.framework_removed(RemovedFramework {
                        id: rec.id,
                        name: rec.name,
                        principal: rec.principal,
                        roles: rec.roles,
                        removed_at: *at,
                    });
                }
                self.kv.remove(id);
            }
            RegistryOp::RecordTaskEnds { records } => {
                let frameworks = &self.frameworks;
                self.history.record(records, |id| frameworks.contains_key(id));
            }
            RegistryOp::RecordSamples { samples } => self.history.record_samples(samples),
            RegistryOp::SetHistoryBounds { bounds } => self.history.set_bounds(*bounds),
            RegistryOp::SetMesosEndpoint { master, addr } => match addr {
                Some(a) => {
                    self.mesos_endpoints.insert(*master, a.clone());
                }
                None => {
                    self.mesos_endpoints.remove(master);
                }
            },
            RegistryOp::KvPut(w) | RegistryOp::KvDelete(w) => {
                let registered = self.frameworks.contains_key(&w.framework);
                return Some(kv::apply(&mut self.kv, registered, w, self.applied));
            }
            RegistryOp::SetWeights { weights } => {
                // Checked before proposing; a weight no allocator could use
                // (from a damaged log) is skipped the same way everywhere.
                for (role, w) in weights.iter().filter(|(_, w)| valid_weight(**w)) {
                    if *w == 1.0 {
                        self.weights.remove(role);
                    } else {
                        self.weights.insert(role.clone(), *w);
                    }
                }
            }
            RegistryOp::SetQuota { role, quota } => {
                if quota.is_empty() {
                    self.quotas.remove(role);
                } else {
                    self.quotas.insert(role.clone(), quota.clone());
                }
            }
            // An agent gone meanwhile keeps no reservation.
            RegistryOp::Reserve { agent, .. } if !self.agents.contains_key(agent) => {}
            RegistryOp::Reserve {
                agent, role, resources, ..
            } => {
                let mut r = self.dynamic_reservations(agent);
                if let Ok(add) = Resources::parse(resources) {
                    r.add(&ReservedResources::for_role(role, add));
                }
                self.set_reservations(agent, r);
            }
            RegistryOp::Unreserve { agent, role, resources } => {
                let r = self.dynamic_reservations(agent);
                let r = match Resources::parse(resources) {
                    Ok(sub) => r.saturating_sub(&ReservedResources::for_role(role, sub)),
                    Err(_) => r,
                };
                self.set_reservations(agent, r);
            }
            RegistryOp::CreateVolume {
                agent,
                id,
                volume,
                reserve,
            } => {
                // An agent gone meanwhile keeps no volume (nor its disk).
                let on = match self.agents.contains_key(agent) {
                    true => self.volumes.entry(agent.clone()).or_default(),
                    false => return None,
                };
                if !on.contains_key(id) {
                    on.insert(id.clone(), volume.clone());
                    if *reserve {
                        let mut r = self.dynamic_reservations(agent);
                        r.add(&ReservedResources::for_role(&volume.role, volume.disk.clone()));
                        self.set_reservations(agent, r);
                    }
                }
            }
            RegistryOp::DestroyVolume { agent, id } => {
                if let Some(on) = self.volumes.get_mut(agent) {
                    on.remove(id);
                    if on.is_empty() {
                        self.volumes.remove(agent);
                    }
                }
            }
            RegistryOp::DrainAgent { id, deadline, at } => {
                if self.agents.contains_key(id) {
                    let rec = DrainRecord {
                        deadline: *deadline,
                        since: *at,
                    };
                    self.draining.insert(id.clone(), rec);
                }
            }
            RegistryOp::ReactivateAgent { id } => {
                self.draining.remove(id);
            }
            RegistryOp::MarkAgentGone { id, at } => {
                if self.agents.remove(id).is_some() {
                    self.draining.remove(id);
                    // Its disk, and the data on it, are gone with it, and
                    // so are its reservations.
                    self.volumes.remove(id);
                    self.reservations.remove(id);
                    self.gone.insert(id.clone(), *at);
                }
            }
            RegistryOp::Security { security } => self.security.apply(security),
        }
        None
    }

    /// A copy for dumps: every key-value value and sealed secret replaced
    /// by its SHA-256 (`sha256:<hex>`), so two replicas still compare equal
    /// exactly when their data does.
    pub fn redacted(&self) -> Registry {
        let mut r = self.clone();
        for ns in r.kv.values_mut() {
            for e in ns.entries.values_mut() {
                e.value = digest(&e.value).into_bytes();
            }
        }
        for secrets in r.security.secrets.values_mut() {
            for s in secrets.values_mut() {
                s.sealed = digest(s.sealed.as_bytes());
            }
        }
        r
    }

    /// The agent's dynamic reservations (unreserved part always empty).
    pub fn dynamic_reservations(&self, agent: &AgentId) -> ReservedResources {
        self.reservations
            .get(agent)
            .and_then(|t| ReservedResources::parse(t).ok())
            .unwrap_or_default()
    }

    fn set_reservations(&mut self, agent: &AgentId, r: ReservedResources) {
        if r.is_empty() {
            self.reservations.remove(agent);
        } else {
            self.reservations.insert(agent.clone(), r.to_string());
        }
    }
}

fn digest(b: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let hex: String = d.as_ref().iter().map(|x| format!("{x:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
#[path = "registry_fuzz_tests.rs"]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> AgentRecord {
        AgentRecord {
            id: AgentId::parse(id).expect("id"),
            hostname: "h".into(),
            http_address: "127.0.0.1:1".into(),
            resources: "cpus:1".into(),
            attributes: vec![],
            unreachable_since: None,
            principal: None,
        }
    }

    /// DESIGN.md "Durable state": apply is deterministic and replayable.
    #[test]
    fn replaying_the_same_ops_gives_the_same_registry() {
        let a = AgentId::parse("a1").expect("id");
        let ops = vec![
            RegistryOp::AdmitAgent(agent("a1")),
            RegistryOp::MarkAgentUnreachable { id: a.clone(), at: 5.0 },
            RegistryOp::MarkAgentUnreachable {
                id: AgentId::parse("nope").expect("id"),
                at: 6.0,
            },
            RegistryOp::AdmitAgent(agent("a1")),
        ];
        let mut r1 = Registry::default();
        let mut r2 = Registry::default();
        for op in &ops {
            r1.apply(op);
        }
        for op in &ops {
            let text = serde_json::to_string(op).expect("ser");
            r2.apply(&serde_json::from_str(&text).expect("de"));
        }
        assert_eq!(r1, r2);
        assert_eq!(r1.agents[&a].unreachable_since, None);
        assert_eq!(r1.applied, 4);
    }

    /// A snapshot written before weights, quotas and reservations existed
    /// still loads.
    #[test]
    fn old_snapshots_load_without_the_new_fields() {
        let old = r#"{"agents":{},"frameworks":{},"masters":{"1":"127.0.0.1:5050"},"highest_master_id":1,"applied":7}"#;
        let r: Registry = serde_json::from_str(old).expect("old snapshot");
        assert_eq!(r.applied, 7);
        assert!(r.weights.is_empty() && r.quotas.is_empty() && r.reservations.is_empty());
    }

    /// DESIGN.md "Durable state": weights, quotas and dynamic reservations
    /// are registry ops, replayable like the others.
    #[test]
    fn policy_ops_apply_and_replay() {
        let a = AgentId::parse("a1").expect("id");
        let eng = Role::parse("eng").expect("role");
        let quota = Quota {
            guarantee: Resources::parse("cpus:2").expect("r"),
            limit: Resources::default(),
        };
        let ops = vec![
            RegistryOp::AdmitAgent(agent("a1")),
            RegistryOp::SetWeights {
                weights: [(eng.clone(), 2.0)].into_iter().collect(),
            },
            RegistryOp::SetQuota {
                role: eng.clone(),
                quota: quota.clone(),
            },
            RegistryOp::Reserve {
                agent: a.clone(),
                role: eng.clone(),
                resources: "cpus:2;mem:512".into(),
                principal: "ops".into(),
            },
            RegistryOp::Unreserve {
                agent: a.clone(),
                role: eng.clone(),
                resources: "cpus:1".into(),
            },
        ];
        let mut r1 = Registry::default();
        let mut r2 = Registry::default();
        for op in &ops {
            r1.apply(op);
            let text = serde_json::to_string(op).expect("ser");
            r2.apply(&serde_json::from_str(&text).expect("de"));
        }
        assert_eq!(r1, r2);
        assert_eq!(r1.weights[&eng], 2.0);
        assert_eq!(r1.quotas[&eng], quota);
        assert_eq!(r1.reservations[&a], "cpus(eng):1;mem(eng):512");
        r1.apply(&RegistryOp::Unreserve {
            agent: a.clone(),
            role: eng.clone(),
            resources: "cpus:1;mem:512".into(),
        });
        assert!(r1.reservations.is_empty());
        r1.apply(&RegistryOp::SetQuota {
            role: eng.clone(),
            quota: Quota::default(),
        });
        assert!(r1.quotas.is_empty());
        let snap = serde_json::to_string(&r2).expect("ser");
        assert_eq!(serde_json::from_str::<Registry>(&snap).expect("de"), r2);
    }

    fn framework(id: &str) -> FrameworkRecord {
        FrameworkRecord {
            id: FrameworkId::parse(id).expect("id"),
            name: "f".into(),
            user: String::new(),
            principal: String::new(),
            roles: vec!["*".into()],
            failover_timeout_secs: 60.0,
            hostname: String::new(),
            registered_at: 0.0,
        }
    }

    fn put(fw: &str, key: &str, value: &[u8]) -> RegistryOp {
        RegistryOp::KvPut(KvWrite {
            framework: FrameworkId::parse(fw).expect("id"),
            key: key.into(),
            value: Some(value.to_vec()),
            expected_version: None,
            request: 1,
        })
    }

    /// A framework's namespace is replicated like any registry state: it
    /// survives a snapshot round trip, is versioned by registry index, and
    /// goes away with the framework.
    #[test]
    fn kv_namespace_lives_and_dies_with_its_framework() {
        let mut r = Registry::default();
        assert!(matches!(
            r.apply(&put("f1", "k", b"v")),
            Some(Err(KvError::UnknownFramework(_)))
        ));
        r.apply(&RegistryOp::RegisterFramework(framework("f1")));
        assert_eq!(r.apply(&put("f1", "k", b"v")), Some(Ok(KvDone::Put { version: 3 })));
        let snapshot: Registry = serde_json::from_slice(&serde_json::to_vec(&r).expect("ser")).expect("de");
        assert_eq!(snapshot, r);
        let fid = FrameworkId::parse("f1").expect("id");
        assert_eq!(
            kv::get(snapshot.kv.get(&fid), "k").map(|e| e.value),
            Some(b"v".to_vec())
        );
        r.apply(&RegistryOp::RemoveFramework {
            id: fid.clone(),
            at: 0.0,
        });
        assert!(r.kv.is_empty());
    }

    /// Snapshots written before namespaces existed still load.
    #[test]
    fn old_snapshot_without_kv_loads() {
        let old = r#"{"agents":{},"frameworks":{},"masters":{},"highest_master_id":1,"applied":9}"#;
        let r: Registry = serde_json::from_str(old).expect("old snapshot");
        assert!(r.kv.is_empty());
        assert_eq!(r.applied, 9);
    }

    /// Drain and gone survive a JSON round trip, and a registry written
    /// before they existed still loads.
    #[test]
    fn drain_and_gone_are_durable_and_old_snapshots_load() {
        let a = AgentId::parse("a1").expect("id");
        let mut r = Registry::default();
        r.apply(&RegistryOp::AdmitAgent(agent("a1")));
        r.apply(&RegistryOp::DrainAgent {
            id: a.clone(),
            deadline: Some(10.0),
            at: 1.0,
        });
        assert!(r.draining.contains_key(&a));
        let back: Registry = serde_json::from_str(&serde_json::to_string(&r).expect("ser")).expect("de");
        assert_eq!(back, r);
        r.apply(&RegistryOp::MarkAgentGone { id: a.clone(), at: 2.0 });
        assert!(!r.agents.contains_key(&a) && !r.draining.contains_key(&a));
        assert_eq!(r.gone.get(&a), Some(&2.0));
        // A drain of an unknown (or gone) agent is a no-op.
        r.apply(&RegistryOp::DrainAgent {
            id: a.clone(),
            deadline: None,
            at: 3.0,
        });
        assert!(r.draining.is_empty());
        let old = r#"{"agents":{},"frameworks":{},"applied":3}"#;
        let old: Registry = serde_json::from_str(old).expect("old snapshot loads");
        assert!(old.draining.is_empty() && old.gone.is_empty());
    }

    /// Volumes are replayable ops: a second create of an id keeps the
    /// first, destroy removes, an agent marked gone takes its volumes.
    #[test]
    fn volumes_apply_replay_and_go_with_their_agent() {
        let a = AgentId::parse("a1").expect("id");
        let v = VolumeId::parse("db-0").expect("id");
        let rec = |mib: &str| VolumeRecord {
            role: Role::parse("eng").expect("role"),
            disk: Resources::parse(mib).expect("disk"),
            principal: "p".into(),
            created_at: 1.0,
        };
        let create = |mib: &str| RegistryOp::CreateVolume {
            agent: a.clone(),
            id: v.clone(),
            volume: rec(mib),
            reserve: false,
        };
        let mut r = Registry::default();
        r.apply(&RegistryOp::AdmitAgent(agent("a1")));
        r.apply(&create("disk:10"));
        r.apply(&create("disk:20"));
        assert_eq!(r.volumes[&a][&v], rec("disk:10"));
        let back: Registry = serde_json::from_slice(&serde_json::to_vec(&r).expect("ser")).expect("de");
        assert_eq!(back, r);
        r.apply(&RegistryOp::DestroyVolume {
            agent: a.clone(),
            id: v.clone(),
        });
        assert!(r.volumes.is_empty());
        r.apply(&create("disk:10"));
        r.apply(&RegistryOp::MarkAgentGone { id: a.clone(), at: 2.0 });
        assert!(r.volumes.is_empty());
        r.apply(&create("disk:10"));
        assert!(r.volumes.is_empty(), "a create that commits after its agent is gone");
        r.apply(&RegistryOp::Reserve {
            agent: a.clone(),
            role: Role::parse("eng").expect("role"),
            resources: "disk:10".into(),
            principal: "p".into(),
        });
        assert!(r.reservations.is_empty(), "nor a reservation");
    }

    /// Found by fuzzing (docs/fuzzing.md): a weight no allocator can use
    /// (zero, negative, huge) from a damaged log or snapshot reached DRF,
    /// whose shares became NaN, and `/state` no longer read back. Apply
    /// skips such weights, and the allocator ignores them.
    #[test]
    fn unusable_weights_are_skipped() {
        let eng = Role::parse("eng").expect("role");
        let mut r = Registry::default();
        for w in [0.0, -1.0, 1e7, -5.4e-106] {
            r.apply(&RegistryOp::SetWeights {
                weights: [(eng.clone(), w)].into_iter().collect(),
            });
        }
        assert!(r.weights.is_empty());
        let snapshot = r#"{"agents":{},"frameworks":{},"applied":1,"weights":{"eng":0.0}}"#;
        let r: Registry = serde_json::from_str(snapshot).expect("snapshot");
        let m = crate::core::Master::recover(crate::core::CoreConfig::default(), r, std::time::Instant::now());
        let view = serde_json::to_value(m.view(true)).expect("ser");
        assert!(
            serde_json::from_value::<crate::core::view::state::StateView>(view).is_ok(),
            "/state reads back"
        );
    }

    /// Found by fuzzing: floats read back from JSON could be one ulp off,
    /// so a snapshot differed from the registry it was taken of (and a
    /// master restored from it from one that applied the log).
    #[test]
    fn snapshots_read_back_exactly() {
        let mut r = Registry::default();
        r.apply(&RegistryOp::AdmitAgent(agent("a1")));
        r.apply(&RegistryOp::MarkAgentGone {
            id: AgentId::parse("a1").expect("id"),
            at: -5.373845867286946e-106,
        });
        r.apply(&RegistryOp::RegisterFramework(FrameworkRecord {
            failover_timeout_secs: 1.3723250794740873e19,
            ..framework("f1")
        }));
        let back: Registry = serde_json::from_slice(&serde_json::to_vec(&r).expect("ser")).expect("de");
        assert_eq!(back, r);
    }

    /// Found by fuzzing: a snapshot whose `applied` count or namespace byte
    /// count sat at the top of `u64` made the next op overflow (a panic in
    /// debug builds, a wrapped count in release ones).
    #[test]
    fn counts_at_their_limit_do_not_overflow() {
        let max = u64::MAX;
        let snapshot = format!(
            r#"{{"agents":{{}},"frameworks":{{"f1":{{"id":"f1","name":"f","user":"","principal":"","roles":[],"failover_timeout_secs":1.0,"hostname":""}}}},"applied":{max},"kv":{{"f1":{{"entries":{{"k":{{"value":"dg==","version":1}}}},"bytes":{max}}}}}}}"#
        );
        let mut r: Registry = serde_json::from_str(&snapshot).expect("snapshot");
        assert!(matches!(
            r.apply(&put("f1", "other", b"v")),
            Some(Err(KvError::NamespaceFull { .. }))
        ));
        assert_eq!(r.applied, max);
    }
}
