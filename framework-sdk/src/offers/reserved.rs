//! An offer's resources split by reservation. An offer holds unreserved
//! resources and those reserved for its `allocation_role`; a task asking
//! for unreserved resources may be given the role's reserved ones too (the
//! master takes the unreserved part first), so placement counts both,
//! while a reservation can only be made of the unreserved part.

use std::collections::BTreeMap;

use mezzo_proto::resources::{ResourceError, Resources};
use mezzo_proto::v1;

/// The offer's resources per role (`""` for unreserved), each part read
/// as plain resources. The role names are the master's, not checked here.
fn parts(offer: &v1::Offer) -> Result<BTreeMap<&str, Resources>, ResourceError> {
    let mut groups: BTreeMap<&str, Vec<v1::Resource>> = BTreeMap::new();
    for r in &offer.resources {
        let role = if r.role == "*" { "" } else { r.role.as_str() };
        let mut plain = r.clone();
        plain.role.clear();
        plain.reservation_principal.clear();
        groups.entry(role).or_default().push(plain);
    }
    groups
        .into_iter()
        .map(|(role, list)| Ok((role, Resources::from_proto(&list)?)))
        .collect()
}

/// Everything a task launched from the offer may use: the unreserved
/// part and the part reserved for the offer's role.
pub fn usable(offer: &v1::Offer) -> Result<Resources, ResourceError> {
    let mut total = Resources::default();
    for r in parts(offer)?.values() {
        total.add(r);
    }
    Ok(total)
}

/// The unreserved part: what a reservation may take.
pub fn unreserved(offer: &v1::Offer) -> Result<Resources, ResourceError> {
    Ok(parts(offer)?.remove("").unwrap_or_default())
}

/// The part reserved for the offer's role (`allocation_role`).
pub fn reserved(offer: &v1::Offer) -> Result<Resources, ResourceError> {
    let role = offer.allocation_role.as_str();
    if role.is_empty() || role == "*" {
        return Ok(Resources::default());
    }
    Ok(parts(offer)?.remove(role).unwrap_or_default())
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
