//! Offers: allocation into offers, decline filters, revive, suppress,
//! expiry and rescind.

use std::time::{Duration, Instant};

use mezzo_proto::ids::{AgentId, FrameworkId, OfferId};
use mezzo_proto::reservation::Role;
use mezzo_proto::v1;

use super::{Master, Offer};
use crate::error::MasterError;

/// The most an `Offers` event carries, encoded: well under the 4 MiB
/// frameworks accept in one message. One pass may offer a framework every
/// agent of a big cluster (40,000 offers are about 8 MiB), and one event
/// that size failed its stream at every subscription.
const OFFERS_EVENT_BYTES: usize = mezzo_proto::MAX_MESSAGE_BYTES / 4;

/// `offers` in events of at most [`OFFERS_EVENT_BYTES`] each (an offer
/// bigger than that alone in one), in order.
fn in_events(offers: Vec<v1::Offer>) -> Vec<Vec<v1::Offer>> {
    let mut events = Vec::new();
    let (mut event, mut bytes) = (Vec::new(), 0);
    for offer in offers {
        // As field 1 of `Offers`: its tag, length and body.
        let len = prost::encoding::message::encoded_len(1, &offer);
        if !event.is_empty() && bytes + len > OFFERS_EVENT_BYTES {
            events.push(std::mem::take(&mut event));
            bytes = 0;
        }
        bytes += len;
        event.push(offer);
    }
    if !event.is_empty() {
        events.push(event);
    }
    events
}

impl Master {
    /// True when something changed since the last allocation pass.
    pub fn allocation_wanted(&self) -> bool {
        self.allocation_needed || self.alloc.pending() > 0
    }

    /// Runs the allocator if anything changed since the last run.
    pub fn allocate_if_needed(&mut self, now: Instant) {
        if self.allocation_wanted() {
            self.allocation_needed = false;
            self.allocate(now);
        }
    }

    /// Takes back offers that quota guarantees need, then offers the free
    /// resources of the agents the allocator has marked.
    pub fn allocate(&mut self, now: Instant) {
        let started = Instant::now();
        for (fid, agent) in self.alloc.quota_rescinds() {
            let ids: Vec<OfferId> = self
                .frameworks
                .get(&fid)
                .map(|f| {
                    f.offers
                        .iter()
                        .filter(|o| self.offers.get(*o).is_some_and(|o| o.agent_id == agent))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for id in ids {
                tracing::info!(offer = %id, framework = %fid, agent = %agent, "rescinding an offer for a quota guarantee");
                self.rescind_offer(&id, true);
            }
        }
        let decisions = self.alloc.allocate(now);
        let mut batches: std::collections::BTreeMap<FrameworkId, Vec<v1::Offer>> = Default::default();
        for d in decisions {
            let id = OfferId::generate();
            let volumes = self.offerable_volumes(&d.agent, &d.role);
            let volume_protos = super::volumes::of_agent(&self.registry, &d.agent)
                .map(|on| {
                    volumes
                        .iter()
                        .filter_map(|v| on.get(v).map(|rec| super::volumes::volume_proto(&d.agent, v, rec)))
                        .collect()
                })
                .unwrap_or_default();
            let (Some(agent), Some(fw)) = (self.agents.get_mut(&d.agent), self.frameworks.get_mut(&d.framework)) else {
                // The allocator and the core disagree: give it back.
                self.alloc
                    .recover_offered(&d.framework, &d.role, &d.agent, &d.resources);
                continue;
            };
            let flat = d.resources.total();
            agent.offered.add(&flat);
            fw.offered.add(&flat);
            fw.offers.insert(id.clone());
            batches.entry(d.framework.clone()).or_default().push(v1::Offer {
                offer_id: id.to_string(),
                framework_id: d.framework.to_string(),
                agent_id: d.agent.to_string(),
                hostname: agent.hostname.clone(),
                resources: d.resources.to_proto(),
                attributes: agent
                    .attributes
                    .iter()
                    .map(|(k, v)| v1::Attribute {
                        name: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                allocation_role: d.role.to_string(),
                volumes: volume_protos,
            });
            self.agent_offers.entry(d.agent.clone()).or_default().insert(id.clone());
            self.offers.insert(
                id.clone(),
                Offer {
                    id,
                    framework_id: d.framework,
                    agent_id: d.agent,
                    role: d.role,
                    resources: d.resources,
                    volumes,
                    expires: now + self.cfg.offer_timeout,
                },
            );
        }
        for (fid, offers) in batches {
            self.counters.offers_sent += offers.len() as u64;
            self.observed.offered(&fid, &offers);
            for offers in in_events(offers) {
                self.send_framework(&fid, v1::event::Event::Offers(v1::Offers { offers }));
            }
        }
        self.counters.allocation_runs += 1;
        self.counters.allocation_nanos += started.elapsed().as_nanos() as u64;
        self.observed.allocation_took(started.elapsed());
    }

    /// The outstanding offers of agent `id`.
    pub(super) fn offers_of(&self, id: &AgentId) -> Vec<OfferId> {
        self.agent_offers
            .get(id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Removes an offer from the books without returning its resources
    /// (the caller accounts for them).
    pub(super) fn take_offer(&mut self, id: &OfferId) -> Option<Offer> {
        let offer = self.offers.remove(id)?;
        if let Some(set) = self.agent_offers.get_mut(&offer.agent_id) {
            set.remove(id);
            if set.is_empty() {
                self.agent_offers.remove(&offer.agent_id);
            }
        }
        let flat = offer.resources.total();
        if let Some(agent) = self.agents.get_mut(&offer.agent_id) {
            agent.offered = agent.offered.saturating_sub(&flat);
        }
        if let Some(fw) = self.frameworks.get_mut(&offer.framework_id) {
            fw.offered = fw.offered.saturating_sub(&flat);
            fw.offers.remove(id);
        }
        Some(offer)
    }

    /// Removes an offer and returns its resources to the pool. With
    /// `notify` the framework is sent a Rescind event.
    pub(super) fn rescind_offer(&mut self, id: &OfferId, notify: bool) -> Option<Offer> {
        let offer = self.take_offer(id)?;
        self.alloc
            .recover_offered(&offer.framework_id, &offer.role, &offer.agent_id, &offer.resources);
        if notify {
            self.counters.offers_rescinded += 1;
            self.send_framework(
                &offer.framework_id,
                v1::event::Event::Rescind(v1::Rescind {
                    offer_id: id.to_string(),
                }),
            );
        }
        self.allocation_needed = true;
        Some(offer)
    }

    pub(crate) fn rescind_framework_offers(&mut self, fid: &FrameworkId, notify: bool) {
        let ids: Vec<OfferId> = self
            .frameworks
            .get(fid)
            .map(|f| f.offers.iter().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            self.rescind_offer(&id, notify);
        }
    }

    pub(crate) fn expire_offers(&mut self, now: Instant) {
        let expired: Vec<OfferId> = self
            .offers
            .values()
            .filter(|o| o.expires <= now)
            .map(|o| o.id.clone())
            .collect();
        for id in expired {
            tracing::debug!(offer = %id, "offer timed out");
            self.rescind_offer(&id, true);
        }
    }

    /// Declines offers; their agents are not offered to this framework
    /// again for `refuse` (default 5 s). An offer no longer outstanding
    /// (rescinded, expired, used) is skipped, as Mesos skips it: a busy
    /// framework's decline names offers that ran out while it planned, and
    /// refusing the whole call left every other offer in it held until it
    /// expired (a 40,000-agent cluster stalled so, every agent offered and
    /// nothing accepted). Another framework's offer refuses the call.
    pub fn decline(
        &mut self,
        fid: &FrameworkId,
        ids: &[OfferId],
        refuse: Option<Duration>,
        now: Instant,
    ) -> Result<(), MasterError> {
        self.subscribed(fid)?;
        for id in ids {
            match self.owned_offer(fid, id) {
                Ok(_) | Err(MasterError::UnknownOffer(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let refuse = refuse.unwrap_or(self.cfg.default_refuse);
        for id in ids {
            let Some(offer) = self.rescind_offer(id, false) else {
                tracing::debug!(offer = %id, framework = %fid, "declined an offer no longer outstanding");
                continue;
            };
            self.counters.offers_declined += 1;
            self.observed.declined(fid);
            if !refuse.is_zero() {
                self.alloc.filter(fid, &offer.agent_id, now + refuse);
            }
        }
        Ok(())
    }

    /// Checks that `id` is an outstanding offer of framework `fid`.
    pub(super) fn owned_offer(&self, fid: &FrameworkId, id: &OfferId) -> Result<&Offer, MasterError> {
        let offer = self
            .offers
            .get(id)
            .ok_or_else(|| MasterError::UnknownOffer(id.to_string()))?;
        if &offer.framework_id != fid {
            return Err(MasterError::ForeignOffer { offer: id.to_string() });
        }
        Ok(offer)
    }

    /// Clears the framework's filters and ends a suppress in `roles` (in
    /// all of its roles when empty).
    pub fn revive(&mut self, fid: &FrameworkId, roles: &[Role]) -> Result<(), MasterError> {
        self.subscribed(fid)?;
        let fw = self
            .frameworks
            .get_mut(fid)
            .ok_or_else(|| MasterError::NotSubscribed(fid.to_string()))?;
        known_roles(&fw.info, roles)?;
        fw.suppressed_roles.retain(|r| !roles.is_empty() && !roles.contains(r));
        self.alloc.revive(fid, roles);
        self.allocation_needed = true;
        Ok(())
    }

    /// Stops offers to the framework in `roles` (in all of its roles when
    /// empty) until it revives them; its outstanding offers in them are
    /// rescinded.
    pub fn suppress(&mut self, fid: &FrameworkId, roles: &[Role]) -> Result<(), MasterError> {
        self.subscribed(fid)?;
        let fw = self
            .frameworks
            .get_mut(fid)
            .ok_or_else(|| MasterError::NotSubscribed(fid.to_string()))?;
        known_roles(&fw.info, roles)?;
        let all: Vec<Role> = fw.info.roles.iter().filter_map(|r| Role::parse(r).ok()).collect();
        let now_suppressed = if roles.is_empty() { &all[..] } else { roles };
        fw.suppressed_roles.extend(now_suppressed.iter().cloned());
        self.alloc.suppress(fid, roles);
        self.rescind_suppressed_offers(fid);
        Ok(())
    }

    /// Makes `roles` exactly the framework's suppressed roles (Mesos'
    /// `UPDATE_FRAMEWORK`): unlike a revive, its decline filters stay.
    pub(super) fn set_suppressed(&mut self, fid: &FrameworkId, roles: Vec<Role>) -> Result<(), MasterError> {
        let fw = self
            .frameworks
            .get_mut(fid)
            .ok_or_else(|| MasterError::NotSubscribed(fid.to_string()))?;
        known_roles(&fw.info, &roles)?;
        fw.suppressed_roles = roles.iter().cloned().collect();
        self.alloc.set_suppressed(fid, &roles);
        self.rescind_suppressed_offers(fid);
        self.allocation_needed = true;
        Ok(())
    }

    /// Rescinds the framework's outstanding offers in roles it suppressed.
    fn rescind_suppressed_offers(&mut self, fid: &FrameworkId) {
        let Some(fw) = self.frameworks.get(fid) else { return };
        let rescinded: Vec<OfferId> = fw
            .offers
            .iter()
            .filter(|o| {
                self.offers
                    .get(*o)
                    .is_some_and(|o| fw.suppressed_roles.contains(&o.role))
            })
            .cloned()
            .collect();
        for id in rescinded {
            self.rescind_offer(&id, true);
        }
    }
}

/// Every role of a revive or suppress must be one of the framework's.
pub(super) fn known_roles(info: &v1::FrameworkInfo, roles: &[Role]) -> Result<(), MasterError> {
    match roles.iter().find(|r| !info.roles.iter().any(|n| n == r.as_str())) {
        Some(r) => Err(MasterError::Invalid(format!(
            "role {r} is not one of the framework's roles ({})",
            info.roles.join(", ")
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// An `Offers` event for every agent of a big cluster stays within
    /// what a framework accepts in one message, split without a loss.
    #[test]
    fn offers_for_many_agents_go_in_several_events() {
        let offer = |i: usize| v1::Offer {
            offer_id: format!("offer-{i:036}"),
            framework_id: "f".repeat(36),
            agent_id: format!("agent-{i:036}"),
            hostname: "host.example.com".into(),
            allocation_role: "*".into(),
            ..Default::default()
        };
        let offers: Vec<v1::Offer> = (0..40_000).map(offer).collect();
        let whole = v1::Offers { offers: offers.clone() }.encoded_len();
        assert!(whole > OFFERS_EVENT_BYTES, "{whole} bytes fit in one event anyway");
        let events = in_events(offers.clone());
        assert!(events.len() > 1);
        for e in &events {
            let event = v1::Event {
                event: Some(v1::event::Event::Offers(v1::Offers { offers: e.clone() })),
            };
            assert!(
                event.encoded_len() <= OFFERS_EVENT_BYTES + 16,
                "{}",
                event.encoded_len()
            );
        }
        assert_eq!(events.concat(), offers);
        assert_eq!(in_events(vec![offer(1)]), [vec![offer(1)]]);
        assert!(in_events(Vec::new()).is_empty());
    }
}
