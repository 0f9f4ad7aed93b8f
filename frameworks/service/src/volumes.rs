//! Where a stateful service's volumes go, with no I/O (docs/service.md,
//! "Persistent volumes"): given one round of offers and the service's
//! bindings (record.rs), which volumes an offer shows to exist, and which
//! to make, from which offer.
//!
//! Instance `i` of service `s` owns the volume `s-i`. The first time,
//! from an offer with enough *unreserved* room, its resources and its
//! volume's disk are reserved for the framework's role and the volume is
//! created (one Accept); its launch then waits for an offer that lists the
//! volume (the controller's `Launch::volume`), so it always comes back to
//! that agent, with the resources to run there kept for it. The id is
//! deterministic so that a volume made but never recorded (a crash between
//! the two) is found again in the offers instead of made twice.

use std::collections::{BTreeMap, BTreeSet};

use mezzo_sdk::offers::{Location, Placed, Strategy, TaskRequest, offer_with_volume, plan, reserved, unreserved};
use mezzo_sdk::{Resources, v1};

use crate::record::VolumeBinding;
use crate::spec::{ServiceSpec, SpecError};

/// A creation not confirmed by an offer listing the volume after this
/// many seconds is asked for again on the same agent (the Accept may have
/// been lost, or not committed before a master failover).
pub const CREATE_RETRY_SECS: f64 = 30.0;

pub use crate::spec::volume_id;

/// What is reserved for one instance: its resources (ports are not
/// reserved) and its volume's disk.
pub fn reservation(spec: &ServiceSpec) -> Result<Resources, SpecError> {
    let mut r = spec.resources()?;
    if let Some(v) = &spec.volume {
        let disk = Resources::parse(&format!("disk:{}", v.disk_mib)).map_err(|e| SpecError::Invalid {
            field: "volume.disk_mib".into(),
            why: e.to_string(),
        })?;
        r.add(&disk);
    }
    Ok(r)
}

/// One stateful service, as this round needs it.
#[derive(Debug)]
pub struct Need<'a> {
    /// The service's name.
    pub service: &'a str,
    /// What each instance reserves ([`reservation`]).
    pub reserve: &'a Resources,
    /// Its volume's size.
    pub disk_mib: u64,
    /// Its placement constraints, for where new volumes go.
    pub constraints: &'a [mezzo_sdk::offers::Constraint],
    /// Instances `0..instances` must have a volume.
    pub instances: u32,
    /// Where the volumes are, by instance.
    pub bindings: &'a BTreeMap<u32, VolumeBinding>,
    /// Instances with a live task: their volume is in use, so it is in no
    /// offer, and its absence says nothing.
    pub in_use: &'a BTreeSet<u32>,
}

/// What to do about one instance's volume.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// An offer lists the volume: it exists there. Recorded (the binding
    /// was missing, or the creation unconfirmed).
    Found {
        /// The instance.
        ordinal: u32,
        /// Where it is.
        binding: VolumeBinding,
    },
    /// Accept `offer_id` reserving `reserve` (nothing when it is already
    /// reserved) for the role and creating the volume; record `binding`
    /// first.
    Create {
        /// The instance.
        ordinal: u32,
        /// The offer to accept.
        offer_id: String,
        /// The volume's id.
        volume_id: String,
        /// What to reserve first (may be empty).
        reserve: Resources,
        /// The binding to record before the Accept.
        binding: VolumeBinding,
    },
}

/// The actions of one round for one service. Offers in `taken` are
/// already used this round; those an action uses are added. `now` is in
/// unix seconds.
pub fn step(need: &Need<'_>, offers: &[v1::Offer], taken: &mut BTreeSet<String>, now: f64) -> Vec<Action> {
    let mut out = Vec::new();
    let mut ordinals: BTreeSet<u32> = (0..need.instances).collect();
    ordinals.extend(need.bindings.keys());
    for ordinal in ordinals {
        let id = volume_id(need.service, ordinal);
        let binding = need.bindings.get(&ordinal);
        if let Some(o) = offer_with_volume(offers, &id) {
            let confirms = binding.is_none_or(|b| b.agent_id == o.agent_id && b.creating_since.is_some());
            if confirms {
                let reserved = binding.map(|b| b.reserved.clone()).unwrap_or_default();
                out.push(Action::Found {
                    ordinal,
                    binding: bind(&Location::of(o), reserved, None),
                });
            }
            continue;
        }
        let action = match binding {
            None if ordinal < need.instances => make(need, ordinal, &id, offers, taken, now),
            Some(b)
                if b.creating_since.is_some_and(|t| now - t >= CREATE_RETRY_SECS)
                    && !need.in_use.contains(&ordinal) =>
            {
                retry(need, ordinal, &id, b, offers, taken, now)
            }
            _ => None,
        };
        if let Some(a) = action {
            if let Action::Create { offer_id, .. } = &a {
                taken.insert(offer_id.clone());
            }
            out.push(a);
        }
    }
    out
}

fn bind(at: &Location, reserved: String, creating_since: Option<f64>) -> VolumeBinding {
    VolumeBinding {
        agent_id: at.agent_id.clone(),
        hostname: at.hostname.clone(),
        attributes: at.attributes.clone(),
        reserved,
        creating_since,
    }
}

/// A new volume: on an offer whose unreserved part has room for the
/// whole reservation, spread within the constraints over the hosts of the
/// service's other volumes.
fn make(
    need: &Need<'_>,
    ordinal: u32,
    id: &str,
    offers: &[v1::Offer],
    taken: &BTreeSet<String>,
    now: f64,
) -> Option<Action> {
    let free: Vec<v1::Offer> = offers
        .iter()
        .filter(|o| !taken.contains(&o.offer_id))
        .filter_map(|o| {
            let room = unreserved(o).ok()?;
            Some(v1::Offer {
                resources: room.to_proto(),
                ..o.clone()
            })
        })
        .collect();
    let mut placed = Placed::default();
    for (i, b) in need.bindings {
        let at = Location {
            agent_id: b.agent_id.clone(),
            hostname: b.hostname.clone(),
            attributes: b.attributes.clone(),
        };
        placed.place(&volume_id(need.service, *i), at);
    }
    let work = [(TaskRequest::new(need.reserve), ())];
    let chosen = plan(&free, work, Strategy::Spread, need.constraints, &mut placed).ok()?;
    let a = chosen.assignments.into_iter().next()?;
    Some(Action::Create {
        ordinal,
        offer_id: a.offer_id,
        volume_id: id.to_owned(),
        reserve: need.reserve.clone(),
        binding: bind(&a.location, need.reserve.to_string(), Some(now)),
    })
}

/// An unconfirmed creation, asked for again from an offer of its agent:
/// without the reservation if it went through, with it if there is room.
fn retry(
    need: &Need<'_>,
    ordinal: u32,
    id: &str,
    b: &VolumeBinding,
    offers: &[v1::Offer],
    taken: &BTreeSet<String>,
    now: f64,
) -> Option<Action> {
    let o = offers
        .iter()
        .find(|o| o.agent_id == b.agent_id && !taken.contains(&o.offer_id))?;
    let disk = Resources::parse(&format!("disk:{}", need.disk_mib)).ok()?;
    let reserve = if reserved(o).ok()?.contains(&disk) {
        Resources::default()
    } else if unreserved(o).ok()?.contains(need.reserve) {
        need.reserve.clone()
    } else {
        return None;
    };
    Some(Action::Create {
        ordinal,
        offer_id: o.offer_id.clone(),
        volume_id: id.to_owned(),
        reserve,
        binding: bind(&Location::of(o), b.reserved.clone(), Some(now)),
    })
}

#[cfg(test)]
mod tests {
    use mezzo_sdk::offers::Constraint;

    use super::*;

    const NOW: f64 = 1_000.0;

    fn offer(id: &str, agent: &str, res: &str, volumes: &[&str]) -> v1::Offer {
        let mut resources = Vec::new();
        for part in res.split(';').filter(|p| !p.is_empty()) {
            // `cpus(svc):1` is reserved for the offer's role.
            let (name, value) = part.split_once(':').expect("name:value");
            let (name, role) = match name.split_once('(') {
                Some((n, r)) => (n, r.trim_end_matches(')')),
                None => (name, ""),
            };
            resources.push(v1::Resource {
                name: name.into(),
                scalar: value.parse().expect("number"),
                role: role.into(),
                ..Default::default()
            });
        }
        v1::Offer {
            offer_id: id.into(),
            agent_id: agent.into(),
            hostname: format!("host-{agent}"),
            allocation_role: "svc".into(),
            resources,
            volumes: volumes
                .iter()
                .map(|v| v1::Volume {
                    id: (*v).into(),
                    disk_mib: 64.0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn binding(agent: &str, creating_since: Option<f64>) -> VolumeBinding {
        VolumeBinding {
            agent_id: agent.into(),
            hostname: format!("host-{agent}"),
            attributes: vec![],
            reserved: "cpus:1;mem:64;disk:64".into(),
            creating_since,
        }
    }

    struct Case {
        reserve: Resources,
        constraints: Vec<Constraint>,
        bindings: BTreeMap<u32, VolumeBinding>,
        in_use: BTreeSet<u32>,
    }

    impl Case {
        fn new(bindings: &[(u32, VolumeBinding)]) -> Case {
            Case {
                reserve: Resources::parse("cpus:1;mem:64;disk:64").expect("res"),
                constraints: vec![],
                bindings: bindings.iter().cloned().collect(),
                in_use: BTreeSet::new(),
            }
        }

        fn step(&self, instances: u32, offers: &[v1::Offer]) -> Vec<Action> {
            let need = Need {
                service: "db",
                reserve: &self.reserve,
                disk_mib: 64,
                constraints: &self.constraints,
                instances,
                bindings: &self.bindings,
                in_use: &self.in_use,
            };
            step(&need, offers, &mut BTreeSet::new(), NOW)
        }
    }

    /// (ordinal, offer, what is reserved) of each creation.
    fn creates(actions: &[Action]) -> Vec<(u32, &str, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Create {
                    ordinal,
                    offer_id,
                    reserve,
                    ..
                } => Some((*ordinal, offer_id.as_str(), reserve.to_string())),
                Action::Found { .. } => None,
            })
            .collect()
    }

    #[test]
    fn ids_are_the_service_and_the_instance_and_valid() {
        assert_eq!(volume_id("db", 3), "db-3");
        let spec = ServiceSpec::parse(
            "name = \"db\"\ninstances = 1\ncommand = \"x\"\nresources = \"cpus:1;mem:64;disk:10\"\nvolume = { disk_mib = 64 }\n",
        )
        .expect("spec");
        assert_eq!(reservation(&spec).expect("ok").to_string(), "cpus:1;mem:64;disk:74");
    }

    /// A new volume needs unreserved room for the whole reservation; one
    /// creation per offer per round.
    #[test]
    fn new_volumes_take_unreserved_room_one_per_offer() {
        let offers = [
            offer("o1", "a1", "cpus:4;mem:1024;disk:1024", &[]),
            offer("o2", "a2", "cpus:0.5;mem:1024;disk:1024", &[]),
            offer("o3", "a3", "cpus(svc):4;mem(svc):1024;disk(svc):1024", &[]),
        ];
        let got = Case::new(&[]).step(2, &offers);
        assert_eq!(creates(&got), [(0, "o1", "cpus:1;mem:64;disk:64".to_owned())]);
        let Action::Create { binding, volume_id, .. } = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(volume_id, "db-0");
        assert_eq!((binding.agent_id.as_str(), binding.creating_since), ("a1", Some(NOW)));
        assert_eq!(binding.reserved, "cpus:1;mem:64;disk:64");
    }

    /// New volumes spread within the constraints over the hosts of the
    /// service's other volumes.
    #[test]
    fn new_volumes_keep_the_constraints() {
        let mut case = Case::new(&[(0, binding("a1", None))]);
        case.constraints = vec![Constraint::UniqueHost];
        let offers = [
            offer("o1", "a1", "cpus:4;mem:1024;disk:1024", &[]),
            offer("o2", "a2", "cpus:4;mem:1024;disk:1024", &[]),
        ];
        assert_eq!(
            creates(&case.step(2, &offers)),
            [(1, "o2", "cpus:1;mem:64;disk:64".to_owned())]
        );
        assert!(creates(&case.step(2, &offers[..1])).is_empty(), "a1 holds instance 0");
    }

    /// An offer listing a volume records it: found (no binding, say after a
    /// crash or a re-deploy of a removed service) or confirmed; one bound
    /// elsewhere is left alone.
    #[test]
    fn listed_volumes_are_found_or_confirmed() {
        let offers = [
            offer("o1", "a1", "cpus:1", &["db-0", "db-1"]),
            offer("o2", "a2", "cpus:1", &["db-2"]),
        ];
        let case = Case::new(&[(1, binding("a1", Some(NOW - 1.0))), (2, binding("a9", None))]);
        let got = case.step(3, &offers);
        let found: Vec<(u32, &str, Option<f64>)> = got
            .iter()
            .filter_map(|a| match a {
                Action::Found { ordinal, binding } => {
                    Some((*ordinal, binding.agent_id.as_str(), binding.creating_since))
                }
                Action::Create { .. } => None,
            })
            .collect();
        assert_eq!(found, [(0, "a1", None), (1, "a1", None)]);
        assert!(creates(&got).is_empty(), "db-2 is bound to a9: nothing made twice");
    }

    /// A volume that exists and is not offered (its instance runs, or its
    /// agent is away) is waited for; an unconfirmed creation is asked for
    /// again on its agent after a while, without reserving twice, unless
    /// its instance runs.
    #[test]
    fn unconfirmed_creations_are_retried_on_their_agent() {
        let ready = Case::new(&[(0, binding("a1", None))]);
        let roomy = [offer("o1", "a1", "cpus:4;mem:1024;disk:1024", &[])];
        assert!(ready.step(1, &roomy).is_empty());

        let fresh = Case::new(&[(0, binding("a1", Some(NOW - 1.0)))]);
        assert!(fresh.step(1, &roomy).is_empty(), "too soon to ask again");

        let mut old = Case::new(&[(0, binding("a1", Some(NOW - CREATE_RETRY_SECS)))]);
        let elsewhere = [offer("o2", "a2", "cpus:4;mem:1024;disk:1024", &[])];
        assert!(old.step(1, &elsewhere).is_empty(), "only on its agent");
        assert_eq!(
            creates(&old.step(1, &roomy)),
            [(0, "o1", "cpus:1;mem:64;disk:64".to_owned())]
        );
        let reserved = [offer("o1", "a1", "cpus(svc):1;mem(svc):64;disk(svc):64", &[])];
        assert_eq!(creates(&old.step(1, &reserved)), [(0, "o1", String::new())]);
        old.in_use.insert(0);
        assert!(old.step(1, &roomy).is_empty(), "in use: it exists");
    }
}
