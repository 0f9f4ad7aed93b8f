//! The allocation policy operators set: role weights, quotas, and
//! dynamic reservations.
//!
//! Each request is validated here, proposed as a registry op, and
//! answered ([`Effect::PolicyDone`]) only once that op has committed
//! and the allocator has taken it in. Resources being reserved or
//! unreserved are held aside from the moment the request is accepted, so
//! that no offer is made of them while the op waits for its commit.

use std::collections::BTreeMap;

use mezzo_proto::ids::{AgentId, OfferId};
use mezzo_proto::reservation::{ReservedResources, Role};

use super::{Effect, Master};
use crate::allocator::{Quota, QuotaError, valid_weight};
use crate::auth::state::{MAX_SECRETS, SecurityOp};
use crate::error::MasterError;
use crate::registry::RegistryOp;

/// An operator's change to the allocation policy, checked for syntax.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyRequest {
    SetWeights(BTreeMap<Role, f64>),
    /// Sets a role's quota; an empty quota removes it.
    SetQuota {
        role: Role,
        quota: Quota,
    },
    Reserve {
        agent: AgentId,
        resources: ReservedResources,
        principal: String,
    },
    Unreserve {
        agent: AgentId,
        resources: ReservedResources,
    },
    /// Destroys a persistent volume no task uses, and its data.
    DestroyVolume {
        agent: AgentId,
        id: mezzo_proto::ids::VolumeId,
    },
    /// A change to the ACL, the credentials on record or the secrets
    /// (checked by the HTTP layer, which holds the CA and data key).
    Security(SecurityOp),
}

fn invalid(e: impl std::fmt::Display) -> MasterError {
    MasterError::Invalid(e.to_string())
}

impl Master {
    /// Starts a policy change; the answer comes as
    /// `Effect::PolicyDone(ticket, ..)` after the commit.
    pub fn policy(&mut self, ticket: u64, req: PolicyRequest) -> Result<(), MasterError> {
        match req {
            PolicyRequest::SetWeights(weights) => {
                if weights.is_empty() {
                    return Err(invalid("weights: give at least one role=weight"));
                }
                for (role, w) in &weights {
                    if !valid_weight(*w) {
                        return Err(invalid(QuotaError::BadWeight {
                            role: role.to_string(),
                            weight: *w,
                        }));
                    }
                }
                self.propose_ticket(RegistryOp::SetWeights { weights }, ticket);
            }
            PolicyRequest::SetQuota { role, quota } => {
                if quota.is_empty() {
                    if !self.registry.quotas.contains_key(&role) {
                        return Err(MasterError::Invalid(format!("role {role} has no quota to remove")));
                    }
                } else {
                    quota.validate(role.as_str(), &self.known_scalars()).map_err(invalid)?;
                    self.check_nesting(&role, &quota)?;
                }
                self.propose_ticket(RegistryOp::SetQuota { role, quota }, ticket);
            }
            PolicyRequest::Reserve {
                agent,
                resources,
                principal,
            } => self.reserve_for_operator(ticket, agent, resources, principal)?,
            PolicyRequest::Unreserve { agent, resources } => self.unreserve_for_operator(ticket, agent, resources)?,
            PolicyRequest::DestroyVolume { agent, id } => self.destroy_for_operator(ticket, agent, id)?,
            PolicyRequest::Security(op) => {
                if let SecurityOp::PutSecret { role, name, .. } = &op {
                    let s = &self.registry.security;
                    let known = s.secrets.get(role).is_some_and(|r| r.contains_key(name));
                    if !known && s.secret_count() >= MAX_SECRETS {
                        return Err(MasterError::ResourceExhausted(format!(
                            "the cluster holds {MAX_SECRETS} secrets already; delete some first"
                        )));
                    }
                }
                self.propose_ticket(RegistryOp::Security { security: op }, ticket);
            }
        }
        Ok(())
    }

    /// A parent's guarantee must cover its children's together (as in
    /// Mesos), so that meeting the children's meets the parent's.
    fn check_nesting(&self, role: &Role, quota: &Quota) -> Result<(), MasterError> {
        let quotas = &self.registry.quotas;
        let mut children = mezzo_proto::resources::Resources::default();
        for (r, q) in quotas {
            if r.parent().as_ref() == Some(role) {
                children.add(&q.guarantee);
            }
        }
        if !quota.guarantee.is_empty() && !quota.guarantee.contains(&children) {
            return Err(MasterError::Invalid(format!(
                "quota for role {role}: guarantee {} is less than its child roles' guarantees together ({children})",
                quota.guarantee
            )));
        }
        if let Some(parent) = role.parent()
            && let Some(pq) = quotas.get(&parent).filter(|q| !q.guarantee.is_empty())
        {
            let mut siblings = quota.guarantee.clone();
            for (r, q) in quotas {
                if r != role && r.parent().as_ref() == Some(&parent) {
                    siblings.add(&q.guarantee);
                }
            }
            if !pq.guarantee.contains(&siblings) {
                return Err(MasterError::Invalid(format!(
                    "quota for role {role}: with it, the child roles of {parent} would be guaranteed {siblings}, more than {parent}'s own guarantee {}",
                    pq.guarantee
                )));
            }
        }
        Ok(())
    }

    fn propose_ticket(&mut self, op: RegistryOp, ticket: u64) {
        self.pending_tickets.push((op.clone(), ticket));
        self.emit(Effect::Propose(op));
    }

    /// Named scalars that some agent offers (quotas may name only those).
    fn known_scalars(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .agents
            .values()
            .flat_map(|a| a.total.total().scalars.into_keys())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The resources of a reservation request, per role; refuses an
    /// unreserved part or an empty request.
    fn reservation_parts(
        what: &str,
        r: &ReservedResources,
    ) -> Result<Vec<(Role, mezzo_proto::resources::Resources)>, MasterError> {
        if !r.unreserved.is_empty() {
            return Err(MasterError::Invalid(format!(
                "{what}: every resource must name a role, e.g. cpus(eng):2; {} names none",
                r.unreserved
            )));
        }
        if r.reserved.is_empty() {
            return Err(MasterError::Invalid(format!("{what}: no resources given")));
        }
        Ok(r.reserved.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// Free resources of the agent once its outstanding offers are counted
    /// as free (they are rescinded if the request needs them).
    fn free_with_offers(&self, agent: &AgentId) -> Result<(ReservedResources, Vec<OfferId>), MasterError> {
        let mut free = self
            .alloc
            .agent_free(agent)
            .ok_or_else(|| MasterError::UnknownAgent(agent.to_string()))?;
        let offers = self.offers_of(agent);
        for o in offers.iter().filter_map(|id| self.offers.get(id)) {
            free.add(&o.resources);
        }
        Ok((free, offers))
    }

    fn reserve_for_operator(
        &mut self,
        ticket: u64,
        agent: AgentId,
        resources: ReservedResources,
        principal: String,
    ) -> Result<(), MasterError> {
        let parts = Self::reservation_parts("reserve", &resources)?;
        if !self.agents.contains_key(&agent) {
            return Err(MasterError::UnknownAgent(agent.to_string()));
        }
        let (free, offers) = self.free_with_offers(&agent)?;
        let mut want = mezzo_proto::resources::Resources::default();
        for (_, r) in &parts {
            want.add(r);
        }
        if !free.unreserved.contains(&want) {
            let total = self
                .agents
                .get(&agent)
                .map(|a| a.total.unreserved.to_string())
                .unwrap_or_default();
            return Err(MasterError::Invalid(format!(
                "reserve: agent {agent} cannot reserve {want}: it has {total} unreserved, of which only {} is not in use by tasks",
                free.unreserved
            )));
        }
        self.rescind_if_needed(&agent, offers, &ReservedResources::unreserved(want));
        let ops = parts
            .into_iter()
            .map(|(role, r)| {
                let op = RegistryOp::Reserve {
                    agent: agent.clone(),
                    role,
                    resources: r.to_string(),
                    principal: principal.clone(),
                };
                (op, ReservedResources::unreserved(r))
            })
            .collect();
        self.propose_held(&agent, ops, Some(ticket));
        Ok(())
    }

    /// The agent's dynamic reservations less what pending unreserves
    /// already give back: what may still be unreserved.
    pub(crate) fn unreservable(&self, agent: &AgentId) -> ReservedResources {
        let mut dynamic = self.registry.dynamic_reservations(agent);
        for (op, a, held, _) in &self.pending_ops {
            if a == agent && matches!(op, RegistryOp::Unreserve { .. }) {
                dynamic = dynamic.saturating_sub(held);
            }
        }
        dynamic
    }

    /// Holds each op's resources aside and proposes the ops; `ticket` is
    /// answered when the last one commits.
    pub(crate) fn propose_held(
        &mut self,
        agent: &AgentId,
        ops: Vec<(RegistryOp, ReservedResources)>,
        ticket: Option<u64>,
    ) {
        let n = ops.len();
        for (i, (op, held)) in ops.into_iter().enumerate() {
            self.alloc.hold(agent, &held);
            let t = if i + 1 == n { ticket } else { None };
            self.pending_ops.push((op.clone(), agent.clone(), held, t));
            self.emit(Effect::Propose(op));
        }
    }

    fn unreserve_for_operator(
        &mut self,
        ticket: u64,
        agent: AgentId,
        resources: ReservedResources,
    ) -> Result<(), MasterError> {
        let parts = Self::reservation_parts("unreserve", &resources)?;
        if !self.agents.contains_key(&agent) {
            return Err(MasterError::UnknownAgent(agent.to_string()));
        }
        let dynamic = self.unreservable(&agent);
        let (free, offers) = self.free_with_offers(&agent)?;
        for (role, r) in &parts {
            if !dynamic.part(role).is_some_and(|d| d.contains(r)) {
                let have = dynamic.part(role).map(|d| d.to_string()).unwrap_or_default();
                return Err(MasterError::Invalid(format!(
                    "unreserve: {r} is not dynamically reserved for role {role} on agent {agent} (reserved: {}; static reservations cannot be unreserved)",
                    if have.is_empty() { "nothing".into() } else { have }
                )));
            }
            if !free.part(role).is_some_and(|f| f.contains(r)) {
                return Err(MasterError::Invalid(format!(
                    "unreserve: {r} reserved for role {role} on agent {agent} is in use by tasks"
                )));
            }
        }
        self.rescind_if_needed(&agent, offers, &resources);
        let ops = parts
            .into_iter()
            .map(|(role, r)| {
                let held = ReservedResources::for_role(&role, r.clone());
                let op = RegistryOp::Unreserve {
                    agent: agent.clone(),
                    role,
                    resources: r.to_string(),
                };
                (op, held)
            })
            .collect();
        self.propose_held(&agent, ops, Some(ticket));
        Ok(())
    }

    /// Rescinds the agent's offers when its free resources alone do not
    /// hold `need`.
    fn rescind_if_needed(&mut self, agent: &AgentId, offers: Vec<OfferId>, need: &ReservedResources) {
        if self.alloc.agent_free(agent).is_some_and(|f| f.contains(need)) {
            return;
        }
        for id in offers {
            self.rescind_offer(&id, true);
        }
    }

    /// A committed weight, quota or reservation op: the allocator takes it
    /// in, held resources are released, the operator is answered.
    pub(crate) fn policy_applied(&mut self, op: RegistryOp) {
        match &op {
            RegistryOp::Security {
                security: SecurityOp::Revoke { id, .. },
            } => self.close_revoked(id),
            RegistryOp::SetWeights { weights } => {
                for (role, w) in weights {
                    self.alloc.set_weight(role, *w);
                }
            }
            RegistryOp::SetQuota { role, quota } => self.alloc.set_quota(role, quota.clone()),
            RegistryOp::Reserve { agent, .. }
            | RegistryOp::Unreserve { agent, .. }
            | RegistryOp::CreateVolume { agent, .. }
            | RegistryOp::DestroyVolume { agent, .. } => {
                if let Some(i) = self.pending_ops.iter().position(|(o, ..)| o == &op) {
                    let (_, a, held, ticket) = self.pending_ops.remove(i);
                    self.alloc.release(&a, &held);
                    if let Some(t) = ticket {
                        self.emit(Effect::PolicyDone(t, Ok(())));
                    }
                }
                self.refresh_agent_total(agent);
                match &op {
                    RegistryOp::CreateVolume { volume, .. } => self.volumes_changed(agent, Some(&volume.role)),
                    RegistryOp::DestroyVolume { .. } => self.volumes_changed(agent, None),
                    _ => {}
                }
            }
            _ => {}
        }
        if let Some(i) = self.pending_tickets.iter().position(|(o, _)| o == &op) {
            let (_, t) = self.pending_tickets.remove(i);
            self.emit(Effect::PolicyDone(t, Ok(())));
        }
        self.allocation_needed = true;
    }

    /// Recomputes an agent's resources from what it reports, the
    /// registry's dynamic reservations and its volumes.
    pub(crate) fn refresh_agent_total(&mut self, agent: &AgentId) {
        let Some(a) = self.agents.get_mut(agent) else { return };
        a.total = super::agent::offerable_total(agent, &a.reported, &self.registry);
        self.alloc.update_agent_total(agent, a.total.clone());
    }
}
