//! The spine's allocator: Dominant Resource Fairness across frameworks.
//!
//! Pure and synchronous over a view of the cluster: no network, no disk,
//! no clock. Each agent's free resources go, whole, to the eligible
//! framework with the lowest dominant share (ties broken by id, so the
//! result is deterministic); that framework's share grows by what it got
//! before the next agent is handed out. The hierarchical allocator with
//! roles, quotas and reservations replaces this behind the same inputs.

use mezzo_proto::ids::{AgentId, FrameworkId};
use mezzo_proto::resources::{Mib, MilliCpus, Resources};

/// Smallest offer worth making (Mesos' minimum allocatable resources).
pub const MIN_CPUS: MilliCpus = MilliCpus(10);
pub const MIN_MEM: Mib = Mib(32);

/// An agent with resources to hand out.
#[derive(Debug, Clone)]
pub struct AgentSlot {
    pub id: AgentId,
    pub free: Resources,
}

/// A framework that may receive offers, with what it holds already
/// (allocated to tasks plus outstanding offers).
#[derive(Debug, Clone)]
pub struct FrameworkSlot {
    pub id: FrameworkId,
    pub held: Resources,
}

/// True when `r` is big enough to offer.
pub fn allocatable(r: &Resources) -> bool {
    r.cpus >= MIN_CPUS || r.mem >= MIN_MEM
}

/// Decides which framework gets each agent's free resources.
/// `refused(framework, agent)` reports an active decline filter.
pub fn allocate(
    total: &Resources,
    agents: &[AgentSlot],
    frameworks: &[FrameworkSlot],
    refused: impl Fn(&FrameworkId, &AgentId) -> bool,
) -> Vec<(AgentId, FrameworkId, Resources)> {
    let mut held: Vec<(FrameworkId, Resources, f64)> = frameworks
        .iter()
        .map(|f| (f.id.clone(), f.held.clone(), f.held.dominant_share(total)))
        .collect();
    let mut out = Vec::new();
    for agent in agents {
        if !allocatable(&agent.free) {
            continue;
        }
        let pick = held
            .iter_mut()
            .filter(|(id, _, _)| !refused(id, &agent.id))
            .min_by(|a, b| a.2.total_cmp(&b.2).then_with(|| a.0.cmp(&b.0)));
        if let Some((id, res, share)) = pick {
            res.add(&agent.free);
            *share = res.dominant_share(total);
            out.push((agent.id.clone(), id.clone(), agent.free.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, r: &str) -> AgentSlot {
        AgentSlot {
            id: AgentId::parse(id).expect("id"),
            free: Resources::parse(r).expect("res"),
        }
    }
    fn fw(id: &str, r: &str) -> FrameworkSlot {
        FrameworkSlot {
            id: FrameworkId::parse(id).expect("id"),
            held: Resources::parse(r).expect("res"),
        }
    }

    /// DESIGN.md "Allocator": the framework with the lowest dominant share
    /// is offered first; shares are updated as offers are made.
    #[test]
    fn lowest_dominant_share_goes_first_and_alternates() {
        let total = Resources::parse("cpus:4;mem:4096").expect("res");
        let agents = [
            agent("a1", "cpus:1;mem:1024"),
            agent("a2", "cpus:1;mem:1024"),
            agent("a3", "cpus:1;mem:1024"),
        ];
        let fws = [fw("f1", "cpus:1"), fw("f2", "mem:100")];
        let got = allocate(&total, &agents, &fws, |_, _| false);
        let order: Vec<&str> = got.iter().map(|(_, f, _)| f.as_str()).collect();
        // f2's share (100/4096) < f1's (1/4); after a1 f2 holds 1/4 +, so a2 goes to f1.
        assert_eq!(order, ["f2", "f1", "f2"]);
    }

    #[test]
    fn filters_and_tiny_agents_are_skipped() {
        let total = Resources::parse("cpus:4;mem:4096").expect("res");
        let agents = [agent("a1", "cpus:0.005;mem:8"), agent("a2", "cpus:1;mem:1024")];
        let fws = [fw("f1", "cpus:0.001"), fw("f2", "cpus:2")];
        let got = allocate(&total, &agents, &fws, |f, a| f.as_str() == "f1" && a.as_str() == "a2");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.as_str(), "f2");
        assert!(allocate(&total, &agents, &[], |_, _| false).is_empty());
    }
}
