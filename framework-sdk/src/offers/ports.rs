//! Choosing ports from the ranges an offer holds.

use mezzo_proto::resources::Resources;

/// Takes `count` ports from `available`, lowest first. Returns the ports
/// and the resources that name them (to add to a task's resources), or
/// `None` if fewer than `count` ports are available.
///
/// ```
/// use mezzo_sdk::offers::ports;
/// use mezzo_sdk::Resources;
/// let offered = Resources::parse("ports:[31000-31001,32000-32005]").unwrap();
/// let (list, _resources) = ports::take(&offered, 3).unwrap();
/// assert_eq!(list, vec![31000, 31001, 32000]);
/// assert!(ports::take(&offered, 9).is_none());
/// ```
pub fn take(available: &Resources, count: usize) -> Option<(Vec<u64>, Resources)> {
    let set = available.take_ports(count)?;
    let list = set.iter().flat_map(|r| r.clone()).collect();
    let resources = Resources {
        ports: set,
        ..Resources::default()
    };
    Some((list, resources))
}

/// Claims exactly the ports in `wanted` (for a service that must listen on
/// a fixed port), or `None` if any of them is not available.
pub fn take_exact(available: &Resources, wanted: &[u64]) -> Option<Resources> {
    let mut want = Resources::default();
    for p in wanted {
        want.ports.insert(*p..=*p);
    }
    available.contains(&want).then_some(want)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn exact_ports_must_all_be_offered() {
        let offered = Resources::parse("ports:[80-80,8000-8010]").expect("res");
        assert!(take_exact(&offered, &[80, 8005]).is_some());
        assert!(take_exact(&offered, &[80, 443]).is_none());
        assert!(take(&offered, 0).is_some_and(|(l, _)| l.is_empty()));
    }

    proptest! {
        /// Taken ports are distinct, offered, as many as asked, and the
        /// returned resources name exactly them.
        #[test]
        fn taken_ports_are_offered_and_distinct(
            ranges in proptest::collection::vec((1000u64..1100, 0u64..20), 1..5),
            count in 0usize..60,
        ) {
            let mut offered = Resources::default();
            for (start, len) in &ranges {
                offered.ports.insert(*start..=*start + len);
            }
            match take(&offered, count) {
                Some((list, res)) => {
                    prop_assert_eq!(list.len(), count);
                    let mut sorted = list.clone();
                    sorted.dedup();
                    prop_assert_eq!(sorted.len(), count);
                    prop_assert!(offered.contains(&res));
                    prop_assert_eq!(res.port_count() as usize, count);
                    for p in list {
                        prop_assert!(offered.ports.contains(&p));
                    }
                }
                None => prop_assert!(offered.port_count() < count as u64),
            }
        }
    }
}
