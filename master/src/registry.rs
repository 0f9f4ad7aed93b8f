//! The durable registry (DESIGN.md "Durable state") as a command log.
//!
//! [`RegistryOp`] is the only payload of the log; [`Registry::apply`] is
//! deterministic, so every replica that applies the same ops in the same
//! order holds the same registry. Running tasks are not here: agents are
//! their source of truth.

use std::collections::BTreeMap;

use mezzo_proto::ids::{AgentId, FrameworkId};
use serde::{Deserialize, Serialize};

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
    RemoveFramework {
        id: FrameworkId,
    },
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
    /// Highest master id ever used (ids are never reused).
    #[serde(default)]
    pub highest_master_id: u64,
    /// Number of ops applied, for observability and snapshots.
    pub applied: u64,
    /// Agents being drained (DESIGN.md "Durable state": maintenance).
    #[serde(default)]
    pub draining: BTreeMap<AgentId, DrainRecord>,
    /// Agents marked gone, with the unix seconds when; never re-admitted.
    #[serde(default)]
    pub gone: BTreeMap<AgentId, f64>,
}

impl Registry {
    /// Applies one committed op. Never fails: ops are validated before
    /// they are proposed, and applying an op about an unknown id is a no-op
    /// so that replay is always possible.
    pub fn apply(&mut self, op: &RegistryOp) {
        self.applied += 1;
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
            RegistryOp::RemoveFramework { id } => {
                self.frameworks.remove(id);
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
                    self.gone.insert(id.clone(), *at);
                }
            }
        }
    }
}

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
}
