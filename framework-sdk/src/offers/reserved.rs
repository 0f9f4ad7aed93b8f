//! An offer's resources split by reservation. An offer holds unreserved
//! resources and those reserved for its `allocation_role`; a task asking
//! for unreserved resources may be given the role's reserved ones too (the
//! master takes the unreserved part first), so placement counts both,
//! while a reservation can only be made of the unreserved part.

use mezzo_proto::reservation::{ReservationError, ReservedResources, Role};
use mezzo_proto::resources::Resources;
use mezzo_proto::v1;

fn split(offer: &v1::Offer) -> Result<ReservedResources, ReservationError> {
    ReservedResources::from_proto(&offer.resources)
}

/// Everything a task launched from the offer may use: the unreserved
/// part and the part reserved for the offer's role (an offer holds no
/// other).
pub fn usable(offer: &v1::Offer) -> Result<Resources, ReservationError> {
    Ok(split(offer)?.total())
}

/// The unreserved part: what a reservation may take.
pub fn unreserved(offer: &v1::Offer) -> Result<Resources, ReservationError> {
    Ok(split(offer)?.unreserved)
}

/// The part reserved for the offer's role (`allocation_role`).
pub fn reserved(offer: &v1::Offer) -> Result<Resources, ReservationError> {
    let Ok(role) = Role::parse(&offer.allocation_role) else {
        return Ok(Resources::default());
    };
    Ok(split(offer)?.reserved.remove(&role).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use mezzo_proto::reservation::ReservedResources;

    use super::*;

    fn offer(res: &str) -> v1::Offer {
        v1::Offer {
            allocation_role: "svc".into(),
            resources: ReservedResources::parse(res).expect("res").to_proto(),
            ..Default::default()
        }
    }

    #[test]
    fn parts_are_split_by_the_offers_role() {
        let o = offer("cpus:2;mem:256;cpus(svc):1;mem(svc):128;disk(svc):64");
        assert_eq!(usable(&o).expect("ok").to_string(), "cpus:3;mem:384;disk:64");
        assert_eq!(unreserved(&o).expect("ok").to_string(), "cpus:2;mem:256");
        assert_eq!(reserved(&o).expect("ok").to_string(), "cpus:1;mem:128;disk:64");
        let star = v1::Offer {
            allocation_role: "*".into(),
            ..offer("cpus:1")
        };
        assert!(reserved(&star).expect("ok").is_empty());
    }

    #[test]
    fn a_bad_part_is_an_error() {
        let mut o = offer("cpus:1");
        o.resources.push(o.resources[0].clone());
        assert!(usable(&o).is_err(), "cpus twice in one part");
    }
}
