//! The hierarchical DRF allocator (DESIGN.md "Allocator").
//!
//! Pure and synchronous: no network, no disk, no clock (time is passed
//! in). The master core tells it what happens (agents and frameworks come
//! and go, offers are used or returned, tasks end, filters, suppress and
//! revive, weights, quotas and reservations change) and asks it to
//! [`Allocator::allocate`]; the answer is a list of [`Allocation`]s, each
//! one framework, one role and one agent, that the core turns into offers.
//!
//! Each agent's free resources are handed out in three stages:
//!
//! 1. **Reservations**: resources reserved for a role go to that role's
//!    frameworks only (lowest share first).
//! 2. **Quota**: a role below its guarantee gets, first, what it lacks.
//! 3. **Fair share**: the rest go, whole, to the framework picked by
//!    hierarchical DRF ([`roles`]): the role subtree with the lowest
//!    weighted dominant share at each level of the tree, then the
//!    framework with the lowest share inside the role.
//!
//! No role is ever given beyond its quota limit (or an ancestor's), and no
//! role is given what other roles' unmet guarantees need (the headroom):
//! guarantees are set aside. When a guarantee cannot be met from free
//! resources, [`Allocator::quota_rescinds`] names outstanding offers of
//! other roles to take back.
//!
//! Work is incremental: an event marks only the agents it touches (or, for
//! framework-wide events, the agents left with free resources) and the
//! next [`Allocator::allocate`] visits only those.

mod cycle;
mod filters;
pub mod quota;
mod roles;
#[cfg(test)]
mod tests;

use foldhash::{HashMap, HashMapExt};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use mezzo_proto::ids::{AgentId, FrameworkId};
use mezzo_proto::reservation::{ReservedResources, Role};
use mezzo_proto::resources::{Mib, MilliCpus, Resources};
use serde::{Deserialize, Serialize};

pub use quota::{Quota, QuotaError, valid_weight};
use roles::{FwIx, RoleIx, RoleTree};

/// Smallest offer worth making (Mesos' minimum allocatable resources).
pub const MIN_CPUS: MilliCpus = MilliCpus(10);
pub const MIN_MEM: Mib = Mib(32);

/// True when `r` is big enough to offer.
pub fn allocatable(r: &Resources) -> bool {
    r.cpus >= MIN_CPUS || r.mem >= MIN_MEM
}

/// The scalars of every part together, without ports: what shares and
/// headroom are computed from (ports never count, and copying port sets
/// is the dearest part of the arithmetic).
fn shares(r: &ReservedResources) -> Resources {
    let mut out = strip(&r.unreserved);
    for part in r.reserved.values() {
        out.add(&strip(part));
    }
    out
}

fn strip(r: &Resources) -> Resources {
    Resources {
        cpus: r.cpus,
        mem: r.mem,
        disk: r.disk,
        ports: Default::default(),
        scalars: r.scalars.clone(),
    }
}

/// `r` without its ports.
fn no_ports(r: &ReservedResources) -> ReservedResources {
    ReservedResources {
        unreserved: strip(&r.unreserved),
        reserved: r.reserved.iter().map(|(k, v)| (k.clone(), strip(v))).collect(),
    }
}

fn allocatable_any(r: &ReservedResources) -> bool {
    allocatable(&r.unreserved) || r.reserved.values().any(allocatable)
}

/// Resources given to one framework, in one role, on one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub framework: FrameworkId,
    pub role: Role,
    pub agent: AgentId,
    pub resources: ReservedResources,
}

/// What one framework holds in one role on one agent.
#[derive(Debug, Clone, Default)]
struct Holding {
    /// In outstanding offers (can be rescinded).
    offered: ReservedResources,
    /// In use by tasks.
    used: ReservedResources,
}

#[derive(Debug)]
struct AgentSt {
    id: AgentId,
    total: ReservedResources,
    /// Offered + used + held for pending operations.
    allocated: ReservedResources,
    active: bool,
}

#[derive(Debug)]
struct FwSt {
    id: FrameworkId,
    roles: Vec<RoleIx>,
    active: bool,
    /// Roles (among `roles`) it gets no offers in until it revives them.
    suppressed: Vec<RoleIx>,
}

impl FwSt {
    /// May it be offered resources in role `r`?
    fn wants(&self, r: RoleIx) -> bool {
        self.active && self.roles.contains(&r) && !self.suppressed.contains(&r)
    }
}

/// One role as `/state` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleView {
    pub role: String,
    pub weight: f64,
    pub guarantee: Resources,
    pub limit: Resources,
    /// Offered and used, this role and the roles under it.
    pub allocated: Resources,
    pub offered: Resources,
    /// Weighted dominant share of `allocated`.
    pub dominant_share: f64,
    pub frameworks: Vec<String>,
}

/// The allocator's state. See the module documentation.
#[derive(Debug, Default)]
pub struct Allocator {
    roles: RoleTree,
    agents: Vec<Option<AgentSt>>,
    agent_ix: HashMap<AgentId, u32>,
    free_agents: Vec<u32>,
    fws: Vec<Option<FwSt>>,
    fw_ix: HashMap<FrameworkId, FwIx>,
    free_fws: Vec<FwIx>,
    holdings: BTreeMap<(FwIx, RoleIx, u32), Holding>,
    filters: filters::Filters,
    /// Total and allocated resources of active agents.
    total: ReservedResources,
    total_flat: Resources,
    allocated: ReservedResources,
    keys_stale: bool,
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    /// Agents left with free resources after their last visit.
    idle: BTreeSet<u32>,
    /// Roles with a non-empty quota.
    quota_roles: BTreeSet<RoleIx>,
}

impl Allocator {
    pub fn new() -> Allocator {
        Allocator::default()
    }

    // ---- agents ----

    /// Adds an agent, or replaces a known agent's total (its holdings stay).
    pub fn add_agent(&mut self, id: &AgentId, total: ReservedResources, active: bool) {
        if let Some(&a) = self.agent_ix.get(id) {
            self.update_agent_total(id, total);
            self.set_agent_active(id, active);
            self.mark(a);
            return;
        }
        let a = match self.free_agents.pop() {
            Some(a) => a,
            None => {
                self.agents.push(None);
                self.is_dirty.push(false);
                (self.agents.len() - 1) as u32
            }
        };
        if active {
            self.total.add(&total);
            self.total_flat.add(&shares(&total));
            self.keys_stale = true;
        }
        self.agents[a as usize] = Some(AgentSt {
            id: id.clone(),
            total,
            allocated: ReservedResources::default(),
            active,
        });
        self.agent_ix.insert(id.clone(), a);
        self.mark(a);
    }

    /// Forgets an agent and everything held on it.
    pub fn remove_agent(&mut self, id: &AgentId) {
        let Some(a) = self.agent_ix.get(id).copied() else {
            return;
        };
        self.set_agent_active(id, false);
        let keys: Vec<(FwIx, RoleIx, u32)> = self.holdings.keys().filter(|k| k.2 == a).copied().collect();
        for k in keys {
            if let Some(h) = self.holdings.remove(&k) {
                let mut all = h.offered;
                all.add(&h.used);
                self.roles
                    .change(k.1, Some(k.0), &shares(&all), false, &self.total_flat);
            }
        }
        self.agent_ix.remove(id);
        self.agents[a as usize] = None;
        self.idle.remove(&a);
        self.free_agents.push(a);
    }

    /// Active agents are offered; inactive ones (disconnected, unreachable)
    /// keep their holdings but neither count in the total nor get offered.
    pub fn set_agent_active(&mut self, id: &AgentId, active: bool) {
        let Some(&a) = self.agent_ix.get(id) else { return };
        let Some(ag) = self.agents[a as usize].as_mut() else {
            return;
        };
        if ag.active == active {
            return;
        }
        ag.active = active;
        if active {
            self.total.add(&ag.total);
            self.total_flat.add(&shares(&ag.total));
            self.allocated.add(&no_ports(&ag.allocated));
            self.mark(a);
        } else {
            self.total = self.total.saturating_sub(&ag.total);
            self.total_flat = self.total_flat.saturating_sub(&shares(&ag.total));
            self.allocated = self.allocated.saturating_sub(&ag.allocated);
            self.idle.remove(&a);
        }
        self.keys_stale = true;
    }

    /// A new split of the agent's resources (a reservation changed).
    pub fn update_agent_total(&mut self, id: &AgentId, total: ReservedResources) {
        let Some(&a) = self.agent_ix.get(id) else { return };
        let Some(ag) = self.agents[a as usize].as_mut() else {
            return;
        };
        if ag.active {
            self.total = self.total.saturating_sub(&ag.total);
            self.total_flat = self.total_flat.saturating_sub(&shares(&ag.total));
            self.total.add(&total);
            self.total_flat.add(&shares(&total));
            self.keys_stale = true;
        }
        ag.total = total;
        self.mark(a);
    }

    /// The agent's resources that are neither offered, used nor held.
    pub fn agent_free(&self, id: &AgentId) -> Option<ReservedResources> {
        let ag = self.agent(*self.agent_ix.get(id)?)?;
        Some(ag.total.saturating_sub(&ag.allocated))
    }

    /// Sets resources aside on an agent (for an operation that waits to be
    /// committed) so that they are offered to no one meanwhile.
    pub fn hold(&mut self, id: &AgentId, r: &ReservedResources) {
        self.adjust_agent(id, r, true);
    }

    /// Gives back what [`Allocator::hold`] set aside.
    pub fn release(&mut self, id: &AgentId, r: &ReservedResources) {
        self.adjust_agent(id, r, false);
    }

    fn adjust_agent(&mut self, id: &AgentId, r: &ReservedResources, grow: bool) {
        let Some(&a) = self.agent_ix.get(id) else { return };
        let Some(ag) = self.agents[a as usize].as_mut() else {
            return;
        };
        if grow {
            ag.allocated.add(r);
            if ag.active {
                self.allocated.add(&no_ports(r));
            }
        } else {
            ag.allocated = ag.allocated.saturating_sub(r);
            if ag.active {
                self.allocated = self.allocated.saturating_sub(r);
            }
            self.mark(a);
        }
    }

    fn agent(&self, a: u32) -> Option<&AgentSt> {
        self.agents.get(a as usize).and_then(Option::as_ref)
    }

    // ---- frameworks ----

    /// Adds a framework subscribed in `roles`, or updates a known one's roles.
    pub fn add_framework(&mut self, id: &FrameworkId, roles: &[Role], active: bool) {
        let f = match self.fw_ix.get(id) {
            Some(&f) => f,
            None => {
                let f = match self.free_fws.pop() {
                    Some(f) => f,
                    None => {
                        self.fws.push(None);
                        (self.fws.len() - 1) as FwIx
                    }
                };
                self.fws[f as usize] = Some(FwSt {
                    id: id.clone(),
                    roles: Vec::new(),
                    active,
                    suppressed: Vec::new(),
                });
                self.fw_ix.insert(id.clone(), f);
                f
            }
        };
        let mut ixs = Vec::new();
        for r in roles {
            let rix = self.roles.ensure(r);
            self.roles.add_client(rix, f);
            if !ixs.contains(&rix) {
                ixs.push(rix);
            }
        }
        // Roles it no longer names: it leaves those where it holds nothing
        // (where it still holds, it stays until that is recovered).
        let left: Vec<RoleIx> = self.fws[f as usize]
            .as_ref()
            .map(|fw| fw.roles.iter().copied().filter(|r| !ixs.contains(r)).collect())
            .unwrap_or_default();
        for rix in left {
            if self.holdings.range((f, rix, 0)..=(f, rix, u32::MAX)).next().is_none() {
                self.roles.remove_client(rix, f, &self.total_flat);
            } else {
                self.roles.set_wants(rix, f, false);
            }
        }
        if let Some(fw) = self.fws[f as usize].as_mut() {
            fw.suppressed.retain(|r| ixs.contains(r));
            fw.roles = ixs;
            fw.active = active;
        }
        self.sync_wants(f);
        self.mark_idle();
    }

    /// Forgets a framework; what it held on agents is free again.
    pub fn remove_framework(&mut self, id: &FrameworkId) {
        let Some(f) = self.fw_ix.remove(id) else { return };
        let keys: Vec<(FwIx, RoleIx, u32)> = self
            .holdings
            .range((f, 0, 0)..=(f, RoleIx::MAX, u32::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(h) = self.holdings.remove(&k) {
                let mut all = h.offered;
                all.add(&h.used);
                self.take_back(k.2, &all);
                self.roles.change(k.1, Some(f), &shares(&all), false, &self.total_flat);
            }
        }
        for rix in 0..self.roles.nodes.len() {
            self.roles.remove_client(rix, f, &self.total_flat);
        }
        self.filters.clear_framework(f);
        self.fws[f as usize] = None;
        self.free_fws.push(f);
    }

    /// A connected framework is offered; a disconnected one keeps its tasks.
    pub fn set_framework_active(&mut self, id: &FrameworkId, active: bool) {
        if let Some(fw) = self.fw_mut(id) {
            fw.active = active;
        }
        self.sync_wants_of(id);
        if active {
            self.mark_idle();
        }
    }

    /// No more offers to the framework in `roles` (all of its roles when
    /// empty) until it revives them.
    pub fn suppress(&mut self, id: &FrameworkId, roles: &[Role]) {
        let named: Vec<RoleIx> = roles.iter().filter_map(|r| self.roles.get(r)).collect();
        if let Some(fw) = self.fw_mut(id) {
            for r in fw.roles.clone() {
                if (roles.is_empty() || named.contains(&r)) && !fw.suppressed.contains(&r) {
                    fw.suppressed.push(r);
                }
            }
        }
        self.sync_wants_of(id);
    }

    /// Makes `roles` exactly the framework's suppressed roles; its filters
    /// stay.
    pub fn set_suppressed(&mut self, id: &FrameworkId, roles: &[Role]) {
        let named: Vec<RoleIx> = roles.iter().filter_map(|r| self.roles.get(r)).collect();
        if let Some(fw) = self.fw_mut(id) {
            fw.suppressed = fw.roles.iter().copied().filter(|r| named.contains(r)).collect();
        }
        self.sync_wants_of(id);
        self.mark_idle();
    }

    /// Ends a suppress in `roles` (all when empty) and drops the
    /// framework's filters (kept per agent, not per role: a revive of one
    /// role may bring offers of agents the framework filtered in another).
    pub fn revive(&mut self, id: &FrameworkId, roles: &[Role]) {
        let Some(&f) = self.fw_ix.get(id) else { return };
        let named: Vec<RoleIx> = roles.iter().filter_map(|r| self.roles.get(r)).collect();
        if let Some(fw) = self.fws[f as usize].as_mut() {
            fw.suppressed.retain(|r| !roles.is_empty() && !named.contains(r));
        }
        self.sync_wants(f);
        for a in self.filters.clear_framework(f) {
            self.mark(a);
        }
        self.mark_idle();
    }

    /// Keeps `agent` from being offered to `framework` until `until`.
    pub fn filter(&mut self, framework: &FrameworkId, agent: &AgentId, until: Instant) {
        if let (Some(&f), Some(&a)) = (self.fw_ix.get(framework), self.agent_ix.get(agent)) {
            self.filters.insert(f, a, until);
        }
    }

    /// Puts framework `f` in (or out of) the DRF order of each of its
    /// roles, as [`FwSt::wants`] says.
    fn sync_wants(&mut self, f: FwIx) {
        let Some(fw) = self.fws.get(f as usize).and_then(Option::as_ref) else {
            return;
        };
        for (r, wants) in fw.roles.iter().map(|&r| (r, fw.wants(r))).collect::<Vec<_>>() {
            self.roles.set_wants(r, f, wants);
        }
    }

    fn sync_wants_of(&mut self, id: &FrameworkId) {
        if let Some(&f) = self.fw_ix.get(id) {
            self.sync_wants(f);
        }
    }

    fn fw_mut(&mut self, id: &FrameworkId) -> Option<&mut FwSt> {
        let f = *self.fw_ix.get(id)?;
        self.fws[f as usize].as_mut()
    }

    // ---- holdings ----

    fn holding_key(&mut self, fw: &FrameworkId, role: &Role, agent: &AgentId) -> Option<(FwIx, RoleIx, u32)> {
        let f = *self.fw_ix.get(fw)?;
        let a = *self.agent_ix.get(agent)?;
        let r = self.roles.ensure(role);
        self.roles.add_client(r, f);
        Some((f, r, a))
    }

    /// Records resources in use by a task the allocator did not offer
    /// (reported by an agent that re-registers with a new leader).
    pub fn track_used(&mut self, fw: &FrameworkId, role: &Role, agent: &AgentId, r: &ReservedResources) {
        let Some(k) = self.holding_key(fw, role, agent) else {
            return;
        };
        self.holdings.entry(k).or_default().used.add(r);
        self.adjust_agent(agent, r, true);
        self.roles.change(k.1, Some(k.0), &shares(r), true, &self.total_flat);
    }

    /// Part of an offer became a task: from offered to used.
    pub fn offer_used(&mut self, fw: &FrameworkId, role: &Role, agent: &AgentId, r: &ReservedResources) {
        let Some(k) = self.holding_key(fw, role, agent) else {
            return;
        };
        let h = self.holdings.entry(k).or_default();
        h.offered = h.offered.saturating_sub(r);
        h.used.add(r);
    }

    /// An offer (or part of one) came back unused: declined, rescinded,
    /// expired, or left over after an accept.
    pub fn recover_offered(&mut self, fw: &FrameworkId, role: &Role, agent: &AgentId, r: &ReservedResources) {
        self.recover(fw, role, agent, r, false);
    }

    /// A task ended: its resources are free again.
    pub fn recover_used(&mut self, fw: &FrameworkId, role: &Role, agent: &AgentId, r: &ReservedResources) {
        self.recover(fw, role, agent, r, true);
    }

    fn recover(&mut self, fw: &FrameworkId, role: &Role, agent: &AgentId, r: &ReservedResources, used: bool) {
        // An unknown framework's holdings went when it was removed.
        let (Some(&f), Some(&a), Some(rix)) = (self.fw_ix.get(fw), self.agent_ix.get(agent), self.roles.get(role))
        else {
            return;
        };
        let Some(h) = self.holdings.get_mut(&(f, rix, a)) else {
            return;
        };
        // Take back only what is actually held, so that a mismatch never
        // frees resources twice.
        let part = if used { &mut h.used } else { &mut h.offered };
        let back = ReservedResources {
            unreserved: clip(&r.unreserved, &part.unreserved),
            reserved: r
                .reserved
                .iter()
                .filter_map(|(role, x)| part.reserved.get(role).map(|p| (role.clone(), clip(x, p))))
                .collect(),
        };
        *part = part.saturating_sub(&back);
        if h.offered.is_empty() && h.used.is_empty() {
            self.holdings.remove(&(f, rix, a));
        }
        self.take_back(a, &back);
        self.roles.change(rix, Some(f), &shares(&back), false, &self.total_flat);
    }

    fn take_back(&mut self, a: u32, r: &ReservedResources) {
        if let Some(ag) = self.agents.get_mut(a as usize).and_then(Option::as_mut) {
            ag.allocated = ag.allocated.saturating_sub(r);
            if ag.active {
                self.allocated = self.allocated.saturating_sub(r);
            }
        }
        self.mark(a);
    }

    // ---- weights and quotas ----

    /// Sets a role's weight (validated by the caller; 1 is the default).
    /// A weight DRF cannot divide by (from a damaged snapshot) is ignored.
    pub fn set_weight(&mut self, role: &Role, weight: f64) {
        if !valid_weight(weight) {
            return;
        }
        let rix = self.roles.ensure(role);
        self.roles.set_weight(rix, weight, &self.total_flat);
        self.mark_idle();
    }

    /// Sets (or, with an empty quota, removes) a role's quota.
    pub fn set_quota(&mut self, role: &Role, quota: Quota) {
        let rix = self.roles.ensure(role);
        if quota.is_empty() {
            self.quota_roles.remove(&rix);
        } else {
            self.quota_roles.insert(rix);
        }
        self.roles.nodes[rix].quota = quota;
        self.mark_idle();
    }

    // ---- bookkeeping for incremental cycles ----

    fn mark(&mut self, a: u32) {
        if let Some(flag) = self.is_dirty.get_mut(a as usize)
            && !*flag
        {
            *flag = true;
            self.dirty.push(a);
        }
    }

    fn mark_idle(&mut self) {
        let idle: Vec<u32> = self.idle.iter().copied().collect();
        for a in idle {
            self.mark(a);
        }
    }

    /// Makes the next cycle visit every agent (a full cycle).
    pub fn mark_all(&mut self) {
        for a in 0..self.agents.len() as u32 {
            if self.agent(a).is_some() {
                self.mark(a);
            }
        }
    }

    /// Makes the next cycle visit every agent with free resources (the
    /// periodic cycle: cheap, since busy agents are skipped).
    pub fn mark_idle_agents(&mut self) {
        self.mark_idle();
    }

    /// Agents waiting for the next cycle.
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    // ---- views ----

    /// Every role with a weight, quota, framework or holding.
    pub fn roles_view(&self) -> Vec<RoleView> {
        let mut offered: HashMap<RoleIx, Resources> = HashMap::new();
        for ((_, r, _), h) in &self.holdings {
            for anc in self.roles.path(*r) {
                offered.entry(anc).or_default().add(&h.offered.total());
            }
        }
        let mut out: Vec<RoleView> = self
            .roles
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(ix, n)| {
                let role = n.role.as_ref()?;
                let mut frameworks: Vec<String> = n
                    .clients()
                    .filter_map(|f| self.fws.get(f as usize).and_then(Option::as_ref))
                    .map(|f| f.id.to_string())
                    .collect();
                frameworks.sort();
                Some(RoleView {
                    role: role.to_string(),
                    weight: n.weight,
                    guarantee: n.quota.guarantee.clone(),
                    limit: n.quota.limit.clone(),
                    allocated: n.subtree.clone(),
                    offered: offered.remove(&ix).unwrap_or_default(),
                    dominant_share: n.subtree.dominant_share(&self.total_flat) / n.weight,
                    frameworks,
                })
            })
            .collect();
        out.sort_by(|a, b| a.role.cmp(&b.role));
        out
    }

    /// What `framework` holds in `role` (offered + used), for tests and views.
    pub fn held(&self, framework: &FrameworkId, role: &Role) -> Resources {
        let (Some(&f), Some(r)) = (self.fw_ix.get(framework), self.roles.get(role)) else {
            return Resources::default();
        };
        self.roles.nodes[r]
            .client_alloc
            .get(&f)
            .map(|(h, _)| h.clone())
            .unwrap_or_default()
    }

    /// What `framework` has outstanding in offers in `role` on `agent`.
    pub fn offered_on(&self, framework: &FrameworkId, role: &Role, agent: &AgentId) -> ReservedResources {
        let key = (
            self.fw_ix.get(framework),
            self.roles.get(role),
            self.agent_ix.get(agent),
        );
        let (Some(&f), Some(r), Some(&a)) = key else {
            return ReservedResources::default();
        };
        self.holdings
            .get(&(f, r, a))
            .map(|h| h.offered.clone())
            .unwrap_or_default()
    }

    /// Total resources of active agents.
    pub fn total(&self) -> &ReservedResources {
        &self.total
    }

    /// Active filters.
    pub fn filter_count(&self) -> usize {
        self.filters.len()
    }

    /// Checks that exactly the frameworks that want offers are in the
    /// DRF order (tests).
    #[cfg(test)]
    fn check_wanting(&self) -> Result<(), String> {
        self.roles.check_wanting(|r, f| {
            self.fws
                .get(f as usize)
                .and_then(Option::as_ref)
                .is_some_and(|fw| fw.wants(r))
        })
    }

    /// Agents a framework's decline filters keep from it.
    pub fn filters_of(&self, id: &FrameworkId) -> usize {
        self.fw_ix.get(id).map_or(0, |f| self.filters.count_of(*f))
    }
}

/// `want` cut down to what `have` holds, kind by kind.
fn clip(want: &Resources, have: &Resources) -> Resources {
    let mut out = Resources {
        cpus: MilliCpus(want.cpus.0.min(have.cpus.0)),
        mem: Mib(want.mem.0.min(have.mem.0)),
        disk: Mib(want.disk.0.min(have.disk.0)),
        ..Default::default()
    };
    for r in want.ports.iter() {
        for o in have.ports.overlapping(r) {
            out.ports.insert(*o.start().max(r.start())..=*o.end().min(r.end()));
        }
    }
    for (k, v) in &want.scalars {
        let h = have.scalars.get(k).copied().unwrap_or(0);
        if h > 0 {
            out.scalars.insert(k.clone(), (*v).min(h));
        }
    }
    out
}
