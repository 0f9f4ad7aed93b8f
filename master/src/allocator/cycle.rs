//! One allocation cycle: the agents marked since the last one, each
//! through the reservation, quota and fair-share stages.

use std::collections::BTreeMap;
use std::time::Instant;

use mezzo_proto::ids::{AgentId, FrameworkId};
use mezzo_proto::reservation::ReservedResources;
use mezzo_proto::resources::Resources;

use super::quota::{Cap, add_sub, need, overlaps};
use super::roles::{FwIx, RoleIx};
use super::{Allocation, Allocator, allocatable, allocatable_any};

/// One agent's pass through the stages: what is still free, and what
/// each (framework, role) was given so far.
struct AgentPass {
    a: u32,
    now: Instant,
    free: ReservedResources,
    given: BTreeMap<(FwIx, RoleIx), ReservedResources>,
}

impl Allocator {
    /// Allocates the free resources of every agent marked since the last
    /// cycle. Expired filters are dropped first.
    pub fn allocate(&mut self, now: Instant) -> Vec<Allocation> {
        for a in self.filters.expire(now) {
            self.mark(a);
        }
        if self.keys_stale {
            self.roles.refresh(&self.total_flat);
            self.keys_stale = false;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        let mut out = Vec::new();
        for a in dirty {
            self.is_dirty[a as usize] = false;
            self.allocate_agent(a, now, &mut out);
        }
        out
    }

    /// One agent's pass, in three stages, each taking from what the one
    /// before left free: reservations to their own roles, then roles
    /// below their quota guarantee, then hierarchical DRF over the rest.
    fn allocate_agent(&mut self, a: u32, now: Instant, out: &mut Vec<Allocation>) {
        let Some(ag) = self.agent(a) else { return };
        if !ag.active {
            self.idle.remove(&a);
            return;
        }
        let mut pass = AgentPass {
            a,
            now,
            free: ag.total.saturating_sub(&ag.allocated),
            given: BTreeMap::new(),
        };
        self.give_reservations(&mut pass);
        self.give_guarantees(&mut pass);
        self.give_fair_share(&mut pass);
        self.give_reserved_leftovers(&mut pass);
        self.finish_agent(pass, out);
    }

    /// Last: what a role has reserved here that was too little to offer
    /// alone (disk only, say) joins an offer made to one of its
    /// frameworks in this pass, as Mesos applies its minimum to a whole
    /// offer, not to its reserved part.
    fn give_reserved_leftovers(&mut self, pass: &mut AgentPass) {
        let left: Vec<_> = (pass.free.reserved.iter())
            .filter(|(_, part)| !part.is_empty())
            .map(|(role, part)| (role.clone(), part.clone()))
            .collect();
        for (role, part) in left {
            let Some(rix) = self.roles.get(&role) else { continue };
            let Some(f) = pass.given.keys().find(|(_, r)| *r == rix).map(|(f, _)| *f) else {
                continue;
            };
            let give = self.limit_cap(rix).apply(&part);
            if give.is_empty() {
                continue;
            }
            let r = ReservedResources::for_role(&role, give);
            pass.free = pass.free.saturating_sub(&r);
            self.give(f, rix, pass, &r);
        }
    }

    /// Stage 1: each role's reservation goes to one of its own frameworks
    /// (the one holding the least of this agent in that role).
    fn give_reservations(&mut self, pass: &mut AgentPass) {
        let reserved: Vec<_> = pass.free.reserved.keys().cloned().collect();
        for role in reserved {
            let Some(rix) = self.roles.get(&role) else { continue };
            let part = pass.free.reserved.get(&role).cloned().unwrap_or_default();
            let give = self.limit_cap(rix).apply(&part);
            if !allocatable(&give) {
                continue;
            }
            let (fws, filters) = (&self.fws, &self.filters);
            let hit = self.roles.nodes[rix]
                .clients()
                .filter(|f| eligible(fws, filters, *f, rix, pass.a, pass.now))
                .min_by_key(|f| (self.roles.nodes[rix].client_alloc.get(f).map(|x| x.1), *f));
            if let Some(f) = hit {
                let r = ReservedResources::for_role(&role, give);
                pass.free = pass.free.saturating_sub(&r);
                self.give(f, rix, pass, &r);
            }
        }
    }

    /// Stage 2: roles below their guarantee get what they lack first.
    /// Deepest roles first, so that a child's guarantee is met by the
    /// child, and counts towards its parent's.
    fn give_guarantees(&mut self, pass: &mut AgentPass) {
        let mut quota_roles: Vec<(usize, RoleIx)> = self
            .quota_roles
            .iter()
            .map(|q| (self.roles.path(*q).count(), *q))
            .collect();
        quota_roles.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, q) in quota_roles {
            if !allocatable(&pass.free.unreserved) {
                break;
            }
            let lack = need(&self.roles.nodes[q].quota.guarantee, &self.roles.nodes[q].subtree);
            if lack.is_empty() {
                continue;
            }
            // Kinds the guarantee names: up to what is lacking (roles below
            // their guarantees take turns, agent by agent); the others
            // within the headroom other roles' guarantees leave.
            let mut cap = self.headroom_cap(q);
            cap.set(&lack, &self.roles.nodes[q].quota.guarantee);
            let give = self.limit_cap(q).apply(&cap.apply(&pass.free.unreserved));
            if !allocatable(&give) || !overlaps(&give, &lack) {
                continue;
            }
            let hit = {
                let (fws, filters) = (&self.fws, &self.filters);
                let mut enter = |_: RoleIx| true;
                let mut ok = |r: RoleIx, f: FwIx| eligible(fws, filters, f, r, pass.a, pass.now);
                self.roles.pick(q, &mut enter, &mut ok)
            };
            if let Some((rix, f)) = hit {
                // A deeper role may have a tighter limit of its own.
                let give = self.limit_cap(rix).apply(&give);
                if allocatable(&give) {
                    let r = ReservedResources::unreserved(give);
                    pass.free = pass.free.saturating_sub(&r);
                    self.give(f, rix, pass, &r);
                }
            }
        }
    }

    /// Stage 3: the rest, whole, by hierarchical DRF; a role whose caps
    /// leave it nothing is skipped for the rest of this agent's pass.
    fn give_fair_share(&mut self, pass: &mut AgentPass) {
        let mut skip: Vec<RoleIx> = Vec::new();
        while allocatable(&pass.free.unreserved) {
            let hit = {
                let (fws, filters, roles) = (&self.fws, &self.filters, &self.roles);
                let mut enter = |r: RoleIx| !skip.contains(&r);
                let mut ok = |r: RoleIx, f: FwIx| !skip.contains(&r) && eligible(fws, filters, f, r, pass.a, pass.now);
                roles.pick(0, &mut enter, &mut ok)
            };
            let Some((rix, f)) = hit else { break };
            let mut cap = self.limit_cap(rix);
            let room = self.headroom_cap(rix);
            cap.tighten(&room.at, &room.named);
            let give = cap.apply(&pass.free.unreserved);
            if !allocatable(&give) {
                skip.push(rix);
                continue;
            }
            pass.free.unreserved = pass.free.unreserved.saturating_sub(&give);
            self.give(f, rix, pass, &ReservedResources::unreserved(give));
            // Whatever a cap left stays for other roles.
            skip.push(rix);
        }
    }

    /// Marks the agent idle if anything worth offering is left, and turns
    /// what each (framework, role) was given into one allocation.
    fn finish_agent(&mut self, pass: AgentPass, out: &mut Vec<Allocation>) {
        let a = pass.a;
        if allocatable_any(&pass.free) {
            self.idle.insert(a);
        } else {
            self.idle.remove(&a);
        }
        let Some(agent_id) = self.agent(a).map(|g| g.id.clone()) else {
            return;
        };
        for ((f, rix), resources) in pass.given {
            let (Some(fw), Some(role)) = (
                self.fws.get(f as usize).and_then(Option::as_ref),
                self.roles.nodes[rix].role.clone(),
            ) else {
                continue;
            };
            out.push(Allocation {
                framework: fw.id.clone(),
                role,
                agent: agent_id.clone(),
                resources,
            });
        }
    }

    /// Records `r` as offered to framework `f` in role `rix` on the pass's
    /// agent.
    fn give(&mut self, f: FwIx, rix: RoleIx, pass: &mut AgentPass, r: &ReservedResources) {
        let a = pass.a;
        self.holdings.entry((f, rix, a)).or_default().offered.add(r);
        if let Some(ag) = self.agents.get_mut(a as usize).and_then(Option::as_mut) {
            ag.allocated.add(r);
        }
        self.allocated.add(&super::no_ports(r));
        self.roles
            .change(rix, Some(f), &super::shares(r), true, &self.total_flat);
        pass.given.entry((f, rix)).or_default().add(r);
    }

    /// How much more `rix` may get before it or an ancestor hits its limit.
    fn limit_cap(&self, rix: RoleIx) -> Cap {
        let mut cap = Cap::default();
        for n in self.roles.path(rix) {
            let node = &self.roles.nodes[n];
            if !node.quota.limit.is_empty() {
                cap.tighten(&node.quota.limit.saturating_sub(&node.subtree), &node.quota.limit);
            }
        }
        cap
    }

    /// How much `rix` may take of the free unreserved resources without
    /// eating into other roles' unmet guarantees.
    fn headroom_cap(&self, rix: RoleIx) -> Cap {
        let mut required = Resources::default();
        let mut own = Resources::default();
        for &q in &self.quota_roles {
            let node = &self.roles.nodes[q];
            let lack = need(&node.quota.guarantee, &node.subtree);
            if lack.is_empty() {
                continue;
            }
            if q == rix || self.roles.is_within(rix, q) {
                own.add(&lack);
            }
            required.add(&lack);
        }
        let mut cap = Cap::default();
        if required.is_empty() {
            return cap;
        }
        let available = super::strip(&self.total.unreserved).saturating_sub(&self.allocated.unreserved);
        let allowed = add_sub(&available, &own, &required);
        cap.tighten(&allowed, &required);
        cap
    }

    /// Outstanding offers to take back so that roles below their
    /// guarantee, with frameworks that want offers, can be given it: only
    /// when the free resources cannot cover what they lack, and only
    /// offers of roles that are not themselves below a guarantee.
    pub fn quota_rescinds(&self) -> Vec<(FrameworkId, AgentId)> {
        let mut out = Vec::new();
        let available = super::strip(&self.total.unreserved).saturating_sub(&self.allocated.unreserved);
        for &q in &self.quota_roles {
            let node = &self.roles.nodes[q];
            let lack = need(&node.quota.guarantee, &node.subtree);
            if lack.is_empty() || !self.wants_offers(q) {
                continue;
            }
            let mut short = lack.saturating_sub(&available);
            if !overlaps(&short, &lack) {
                continue;
            }
            for ((f, r, a), h) in &self.holdings {
                if h.offered.unreserved.is_empty()
                    || *r == q
                    || self.roles.is_within(*r, q)
                    || self.below_guarantee(*r)
                    || !overlaps(&h.offered.unreserved, &short)
                {
                    continue;
                }
                let (Some(fw), Some(ag)) = (self.fws.get(*f as usize).and_then(Option::as_ref), self.agent(*a)) else {
                    continue;
                };
                let pair = (fw.id.clone(), ag.id.clone());
                if !out.contains(&pair) {
                    out.push(pair);
                }
                short = short.saturating_sub(&h.offered.unreserved);
                if !overlaps(&short, &lack) {
                    break;
                }
            }
        }
        out
    }

    /// True when some active, unsuppressed framework is subscribed in `q`
    /// or a role under it.
    fn wants_offers(&self, q: RoleIx) -> bool {
        self.fws.iter().flatten().any(|fw| {
            fw.roles
                .iter()
                .any(|&r| fw.wants(r) && (r == q || self.roles.is_within(r, q)))
        })
    }

    fn below_guarantee(&self, r: RoleIx) -> bool {
        self.roles.path(r).any(|n| {
            let node = &self.roles.nodes[n];
            !node.quota.guarantee.is_empty() && !need(&node.quota.guarantee, &node.subtree).is_empty()
        })
    }
}

/// May framework `f` be offered agent `a` in role `r` now?
fn eligible(
    fws: &[Option<super::FwSt>],
    filters: &super::filters::Filters,
    f: FwIx,
    r: RoleIx,
    a: u32,
    now: Instant,
) -> bool {
    fws.get(f as usize)
        .and_then(Option::as_ref)
        .is_some_and(|fw| fw.wants(r))
        && !filters.blocks(f, a, now)
}
