//! An offer's persistent volumes: those of its role on its agent that no
//! task uses. A launch from the offer may mount them
//! ([`TaskBuilder::volume`](crate::TaskBuilder::volume)); a volume is in
//! at most one outstanding offer, and in none while a task uses it.

use mezzo_proto::v1;

/// The volume `id`, if the offer lists it.
pub fn volume<'a>(offer: &'a v1::Offer, id: &str) -> Option<&'a v1::Volume> {
    offer.volumes.iter().find(|v| v.id == id)
}

/// The first offer that lists the volume `id`: the only place a task
/// mounting it can be launched from now.
pub fn offer_with_volume<'a>(offers: &'a [v1::Offer], id: &str) -> Option<&'a v1::Offer> {
    offers.iter().find(|o| volume(o, id).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_found_by_id() {
        let with = |id: &str, vols: &[&str]| v1::Offer {
            offer_id: id.into(),
            volumes: vols
                .iter()
                .map(|v| v1::Volume {
                    id: (*v).into(),
                    disk_mib: 64.0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let offers = [with("o1", &[]), with("o2", &["db-0", "db-1"])];
        assert_eq!(volume(&offers[1], "db-1").map(|v| v.disk_mib), Some(64.0));
        assert!(volume(&offers[0], "db-1").is_none());
        assert_eq!(
            offer_with_volume(&offers, "db-0").map(|o| o.offer_id.as_str()),
            Some("o2")
        );
        assert!(offer_with_volume(&offers, "db-2").is_none());
    }
}
