//! Fitting task requests into offers: first fit and best fit bin-packing
//! across several offers, with ports and constraints.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use mezzo_proto::reservation::ReservationError;
use mezzo_proto::resources::Resources;
use mezzo_proto::v1;

use super::constraints::{Constraint, Placed, check_all};
use super::ports;

/// What one task needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    /// Scalars (cpus, mem, disk, named scalars); ports here are ignored.
    pub resources: Resources,
    /// How many ports to pick from the offer's ranges.
    pub ports: usize,
}

impl TaskRequest {
    /// A request for these resources and no ports (borrowed, as
    /// [`TaskBuilder::resources`](crate::TaskBuilder::resources) takes them).
    pub fn new(resources: &Resources) -> Self {
        TaskRequest {
            resources: resources.clone(),
            ports: 0,
        }
    }

    /// Also asks for `count` ports, chosen from the offer.
    pub fn ports(mut self, count: usize) -> Self {
        self.ports = count;
        self
    }
}

/// How to choose an offer for each task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// The first offer (in the order given) with room: fast, and it fills
    /// offers one after another.
    #[default]
    FirstFit,
    /// The offer left with the least room after placing the task (summed
    /// over cpus, mem and disk as fractions of all offered): packs tightly
    /// and keeps large offers free for large tasks.
    BestFit,
    /// The offer whose host runs the fewest tasks of the group (from
    /// `placed`, which `pack` keeps up to date), then the one left with
    /// the most room: spreads a service's instances or a job's tasks over
    /// the hosts at hand instead of piling them on the first one, as
    /// Kubernetes' default scheduling and Nomad's `spread` do.
    Spread,
}

/// One task placed on one offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Index of the request in the slice given to [`pack`].
    pub request: usize,
    /// Index of the offer in the slice given to [`pack`].
    pub offer: usize,
    /// The resources to give the task: the request's plus its ports.
    pub resources: Resources,
    /// The ports chosen, in order (to pass to the task, e.g. as `PORT0`).
    pub ports: Vec<u64>,
}

/// The result of [`pack`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packing {
    /// Placed tasks, in request order.
    pub placements: Vec<Placement>,
    /// Indices of requests that fit nowhere (or broke a constraint
    /// everywhere).
    pub unplaced: Vec<usize>,
}

impl Packing {
    /// Placements grouped by offer index, in offer order: one accept call
    /// per entry (an accept takes offers of one agent).
    pub fn by_offer(&self) -> Vec<(usize, Vec<&Placement>)> {
        let mut groups: BTreeMap<usize, Vec<&Placement>> = BTreeMap::new();
        for p in &self.placements {
            groups.entry(p.offer).or_default().push(p);
        }
        groups.into_iter().collect()
    }

    /// Indices of offers that received no task (to decline).
    pub fn unused_offers(&self, offers: usize) -> Vec<usize> {
        let used: std::collections::BTreeSet<usize> = self.placements.iter().map(|p| p.offer).collect();
        (0..offers).filter(|i| !used.contains(i)).collect()
    }
}

/// Places each request, in order, on an offer with room for it that breaks
/// no constraint, choosing by `strategy`. `placed` says where the group's
/// tasks already run and is updated with every placement. An offer's room
/// is all its role may use ([`usable`](super::usable)): its unreserved
/// resources and those reserved for its role. Fails only if an offer's
/// resources do not parse.
///
/// Each request costs a few heap operations, not a look at every offer:
/// a framework offered 8,000 agents with 4,000 tasks waiting made 32
/// million checks a round before.
pub fn pack(
    offers: &[v1::Offer],
    requests: &[TaskRequest],
    strategy: Strategy,
    constraints: &[Constraint],
    placed: &mut Placed,
) -> Result<Packing, ReservationError> {
    let mut left = offers.iter().map(super::usable).collect::<Result<Vec<_>, _>>()?;
    placed.note_agents(offers, constraints);
    let mut total = Resources::default();
    for r in &left {
        total.add(r);
    }
    let mut choice = Choice::new(strategy, offers, &left, &total, placed);
    let mut packing = Packing::default();
    for (request, want) in requests.iter().enumerate() {
        let mut need = want.resources.clone();
        need.ports.clear();
        let fits = |room: &Resources| room.contains(&need) && room.port_count() >= want.ports as u64;
        let allowed = |i: usize, placed: &Placed| check_all(constraints, &offers[i], placed, offers).is_ok();
        let Some(i) = choice.best((&need, want.ports), &left, placed, fits, allowed) else {
            packing.unplaced.push(request);
            continue;
        };
        let (port_list, port_res) = ports::take(&left[i], want.ports).unwrap_or_default();
        need.add(&port_res);
        left[i] = left[i].saturating_sub(&need);
        placed.add(&offers[i]);
        choice.placed(i, &left[i]);
        packing.placements.push(Placement {
            request,
            offer: i,
            resources: need,
            ports: port_list,
        });
    }
    Ok(packing)
}

/// The offers in the strategy's order of preference, in a heap. An
/// offer's key only grows while a pack runs (its host gains tasks, its
/// room shrinks) except for the offer just taken, which goes back with
/// its new key: so a popped key that is still current is the best one
/// ("lazy" keys), and a stale one goes back with its current key.
struct Choice<'a> {
    strategy: Strategy,
    offers: &'a [v1::Offer],
    heap: BinaryHeap<Ranked>,
    /// Tasks of the group per host of the offers (spread only).
    hosts: HashMap<&'a str, usize>,
    /// Offers too small for the last request's need (resources and
    /// ports): tried again only for a different need (rooms only shrink).
    too_small: Vec<usize>,
    last_need: Option<(Resources, usize)>,
    total: Resources,
}

/// An offer and its key; the heap's top is the lowest key, then the
/// lowest index (as a scan in offer order would choose among equals).
#[derive(Debug, Clone, Copy)]
struct Ranked {
    key: f64,
    offer: usize,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: `BinaryHeap` is a max-heap.
        (other.key.total_cmp(&self.key)).then(other.offer.cmp(&self.offer))
    }
}

impl<'a> Choice<'a> {
    fn new(
        strategy: Strategy,
        offers: &'a [v1::Offer],
        left: &[Resources],
        total: &Resources,
        placed: &Placed,
    ) -> Self {
        let mut hosts = HashMap::new();
        if strategy == Strategy::Spread {
            for o in offers {
                hosts
                    .entry(o.hostname.as_str())
                    .or_insert_with(|| placed.count("hostname", &o.hostname));
            }
        }
        let mut choice = Choice {
            strategy,
            offers,
            heap: BinaryHeap::with_capacity(offers.len()),
            hosts,
            too_small: Vec::new(),
            last_need: None,
            total: total.clone(),
        };
        for (offer, room) in left.iter().enumerate() {
            let key = choice.key(offer, room);
            choice.heap.push(Ranked { key, offer });
        }
        choice
    }

    /// Lower is better: nothing for first fit (offer order decides); the
    /// room for best fit (the need is the same for every offer, so the
    /// room before it is taken orders them alike); for spread, the host's
    /// tasks first (each counts more than any room can: slack is at most
    /// 3), then the most room.
    fn key(&self, offer: usize, room: &Resources) -> f64 {
        match self.strategy {
            Strategy::FirstFit => 0.0,
            Strategy::BestFit => slack(room, &self.total),
            Strategy::Spread => {
                let host = self.offers[offer].hostname.as_str();
                let here = self.hosts.get(host).copied().unwrap_or(0) as f64;
                here * 4.0 - slack(room, &self.total)
            }
        }
    }

    /// The best offer with room (`fits`) that the constraints allow, if
    /// any; taken off the heap until [`Choice::placed`] puts it back.
    fn best(
        &mut self,
        need: (&Resources, usize),
        left: &[Resources],
        placed: &Placed,
        fits: impl Fn(&Resources) -> bool,
        allowed: impl Fn(usize, &Placed) -> bool,
    ) -> Option<usize> {
        if self.last_need.as_ref().is_none_or(|(r, p)| (r, *p) != need) {
            for offer in std::mem::take(&mut self.too_small) {
                let key = self.key(offer, &left[offer]);
                self.heap.push(Ranked { key, offer });
            }
            self.last_need = Some((need.0.clone(), need.1));
        }
        let mut refused = Vec::new();
        let mut found = None;
        while let Some(top) = self.heap.pop() {
            let i = top.offer;
            let current = Ranked {
                key: self.key(i, &left[i]),
                offer: i,
            };
            if current.key > top.key {
                self.heap.push(current);
            } else if !fits(&left[i]) {
                self.too_small.push(i);
            } else if !allowed(i, placed) {
                refused.push(current);
            } else {
                found = Some(i);
                break;
            }
        }
        // The constraints may allow them for the next request.
        self.heap.extend(refused);
        found
    }

    /// Offer `i` took a task and has `room` left: back in the heap.
    fn placed(&mut self, i: usize, room: &Resources) {
        if let Some(n) = self.hosts.get_mut(self.offers[i].hostname.as_str()) {
            *n += 1;
        }
        let key = self.key(i, room);
        self.heap.push(Ranked { key, offer: i });
    }
}

/// An offer's room as the sum of its fractions of all offered cpus, mem
/// and disk (at most 3; on the scalars: port ranges do not count).
fn slack(room: &Resources, total: &Resources) -> f64 {
    let frac = |a: u64, t: u64| if t == 0 { 0.0 } else { a as f64 / t as f64 };
    frac(room.cpus.0, total.cpus.0) + frac(room.mem.0, total.mem.0) + frac(room.disk.0, total.disk.0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::{Strategy as Gen, any, prop_assert, prop_assert_eq, proptest};

    use super::*;

    use crate::offers::test_offers::req;

    fn offer(i: usize, host: &str, res: &str) -> v1::Offer {
        crate::offers::test_offers::offer(&format!("o{i}"), &format!("a-{host}"), host, res)
    }

    #[test]
    fn first_fit_fills_in_order_best_fit_packs_tightly() {
        let offers = [offer(0, "a", "cpus:4;mem:4096"), offer(1, "b", "cpus:1;mem:1024")];
        let small = [req("cpus:1;mem:512")];
        let first = pack(&offers, &small, Strategy::FirstFit, &[], &mut Placed::default()).expect("pack");
        assert_eq!(first.placements[0].offer, 0);
        let best = pack(&offers, &small, Strategy::BestFit, &[], &mut Placed::default()).expect("pack");
        assert_eq!(best.placements[0].offer, 1, "the small offer is the tighter fit");
        assert_eq!(best.unused_offers(2), vec![0]);
    }

    /// Resources reserved for the offer's role count as room (the master
    /// takes a task's unreserved ask from them when the rest is short).
    #[test]
    fn reserved_resources_of_the_offers_role_are_room() {
        let mut o = offer(0, "a", "cpus:1;mem:128");
        o.allocation_role = "svc".into();
        o.resources.extend(
            mezzo_proto::reservation::ReservedResources::parse("cpus(svc):1;mem(svc):128")
                .expect("res")
                .to_proto(),
        );
        let p = pack(
            &[o],
            &[req("cpus:2;mem:256")],
            Strategy::FirstFit,
            &[],
            &mut Placed::default(),
        )
        .expect("pack");
        assert_eq!(p.placements.len(), 1, "{p:?}");
    }

    /// Spread: each task goes to the host with the fewest of the group,
    /// counting those already placed; among equals, the one with the most
    /// room left.
    #[test]
    fn spread_takes_the_least_loaded_host() {
        let offers = [offer(0, "a", "cpus:4;mem:4096"), offer(1, "b", "cpus:2;mem:2048")];
        let four = [
            req("cpus:0.5;mem:64"),
            req("cpus:0.5;mem:64"),
            req("cpus:0.5;mem:64"),
            req("cpus:0.5;mem:64"),
        ];
        let p = pack(&offers, &four, Strategy::Spread, &[], &mut Placed::default()).expect("pack");
        let on: Vec<usize> = p.placements.iter().map(|p| p.offer).collect();
        assert_eq!(on, vec![0, 1, 0, 1], "alternating, the larger first");
        // Two already run on "a": the next two go to "b".
        let mut placed = Placed::default();
        placed.add(&offers[0]);
        placed.add(&offers[0]);
        let p = pack(&offers, &four[..2], Strategy::Spread, &[], &mut placed).expect("pack");
        assert!(p.placements.iter().all(|p| p.offer == 1), "{p:?}");
        // A host without room is skipped whatever its count.
        let full = [offer(0, "a", "cpus:0.1;mem:64"), offer(1, "b", "cpus:2;mem:2048")];
        let p = pack(&full, &four[..2], Strategy::Spread, &[], &mut Placed::default()).expect("pack");
        assert!(
            p.placements.iter().all(|p| p.offer == 1) && p.unplaced.is_empty(),
            "{p:?}"
        );
    }

    #[test]
    fn ports_come_from_the_chosen_offer() {
        let offers = [offer(0, "a", "cpus:1;mem:64;ports:[8000-8001]")];
        let reqs = [req("cpus:0.1").ports(2), req("cpus:0.1").ports(1)];
        let p = pack(&offers, &reqs, Strategy::FirstFit, &[], &mut Placed::default()).expect("pack");
        assert_eq!(p.placements[0].ports, vec![8000, 8001]);
        assert_eq!(p.unplaced, vec![1], "no port left");
        let res = &p.placements[0].resources;
        assert_eq!(res.port_count(), 2);
        assert_eq!(res.cpus.0, 100);
    }

    #[test]
    fn max_per_host_holds_across_offers_of_one_host() {
        let offers = [
            offer(0, "a", "cpus:8"),
            offer(1, "a", "cpus:8"),
            offer(2, "b", "cpus:8"),
        ];
        let reqs = vec![req("cpus:1"); 6];
        let c = [Constraint::MaxPerHost(2)];
        let mut placed = Placed::default();
        let p = pack(&offers, &reqs, Strategy::FirstFit, &c, &mut placed).expect("pack");
        assert_eq!(p.placements.len(), 4);
        assert_eq!(placed.count("hostname", "a"), 2);
        assert_eq!(placed.count("hostname", "b"), 2);
    }

    #[test]
    fn bad_offer_resources_are_an_error() {
        let mut bad = offer(0, "a", "cpus:1");
        bad.resources[0].scalar = -1.0;
        assert!(
            pack(
                &[bad],
                &[req("cpus:1")],
                Strategy::FirstFit,
                &[],
                &mut Placed::default()
            )
            .is_err()
        );
    }

    fn arb_offers() -> impl Gen<Value = Vec<v1::Offer>> {
        proptest::collection::vec((1u64..8, 1u64..8, 0u64..4, 0usize..3), 1..6).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (c, m, p, h))| {
                    let ports = if p == 0 {
                        String::new()
                    } else {
                        format!(";ports:[{}-{}]", 9000 + 10 * i, 9000 + 10 * i + p as usize - 1)
                    };
                    offer(i, &format!("h{h}"), &format!("cpus:{c};mem:{}{ports}", m * 128))
                })
                .collect()
        })
    }

    fn arb_requests() -> impl Gen<Value = Vec<TaskRequest>> {
        proptest::collection::vec((1u64..4, 1u64..4, 0usize..3), 0..20).prop_map(|v| {
            v.into_iter()
                .map(|(c, m, p)| req(&format!("cpus:{};mem:{}", c as f64 / 2.0, m * 64)).ports(p))
                .collect()
        })
    }

    proptest! {
        /// No strategy overcommits an offer; every request is either placed
        /// once or listed unplaced; ports are distinct and from the offer.
        #[test]
        fn packing_never_overcommits(offers in arb_offers(), reqs in arb_requests(), which in 0u8..3, unique in any::<bool>()) {
            let strategy = [Strategy::FirstFit, Strategy::BestFit, Strategy::Spread][usize::from(which)];
            let constraints = if unique { vec![Constraint::UniqueHost] } else { vec![] };
            let mut placed = Placed::default();
            let p = pack(&offers, &reqs, strategy, &constraints, &mut placed).expect("pack");
            prop_assert_eq!(p.placements.len() + p.unplaced.len(), reqs.len());
            for (offer, tasks) in p.by_offer() {
                let mut used = Resources::default();
                for t in &tasks {
                    prop_assert!(used.ports.iter().all(|r| t.resources.ports.gaps(r).next().is_some()), "ports reused");
                    used.add(&t.resources);
                }
                let have = Resources::from_proto(&offers[offer].resources).expect("res");
                prop_assert!(have.contains(&used), "offer {} overcommitted: {} > {}", offer, used, have);
            }
            if unique {
                let mut hosts: Vec<_> = p.placements.iter().map(|t| offers[t.offer].hostname.clone()).collect();
                let n = hosts.len();
                hosts.sort();
                hosts.dedup();
                prop_assert_eq!(hosts.len(), n, "two tasks on one host");
            }
        }

        /// First fit takes, for each request, the first offer in order with
        /// room that the constraints allow (the heap gives what a scan of
        /// the offers would).
        #[test]
        fn first_fit_takes_the_first_offer_a_scan_would(offers in arb_offers(), reqs in arb_requests(), unique in any::<bool>()) {
            let constraints = if unique { vec![Constraint::UniqueHost] } else { vec![] };
            let mut placed = Placed::default();
            let p = pack(&offers, &reqs, Strategy::FirstFit, &constraints, &mut placed).expect("pack");
            let mut room: Vec<Resources> = offers.iter().map(|o| Resources::from_proto(&o.resources).expect("res")).collect();
            let mut replay = Placed::default();
            let mut placements = p.placements.iter().peekable();
            for (i, r) in reqs.iter().enumerate() {
                let first = (0..offers.len()).find(|&o| {
                    room[o].contains(&r.resources)
                        && room[o].port_count() >= r.ports as u64
                        && check_all(&constraints, &offers[o], &replay, &offers).is_ok()
                });
                let got = placements.next_if(|pl| pl.request == i);
                prop_assert_eq!(got.map(|pl| pl.offer), first, "request {}", i);
                if let Some(pl) = got {
                    room[pl.offer] = room[pl.offer].saturating_sub(&pl.resources);
                    replay.add(&offers[pl.offer]);
                }
            }
        }

        /// Spread puts each task on a host with the fewest of the group
        /// among the hosts with an offer that has room for it.
        #[test]
        fn spread_takes_a_least_loaded_host(offers in arb_offers(), reqs in arb_requests()) {
            let mut placed = Placed::default();
            let p = pack(&offers, &reqs, Strategy::Spread, &[], &mut placed).expect("pack");
            let mut room: Vec<Resources> = offers.iter().map(|o| Resources::from_proto(&o.resources).expect("res")).collect();
            let mut on_host: BTreeMap<&str, usize> = BTreeMap::new();
            let mut placements = p.placements.iter().peekable();
            for (i, r) in reqs.iter().enumerate() {
                let fits = |o: usize| room[o].contains(&r.resources) && room[o].port_count() >= r.ports as u64;
                let count = |o: usize| on_host.get(offers[o].hostname.as_str()).copied().unwrap_or(0);
                let least = (0..offers.len()).filter(|&o| fits(o)).map(count).min();
                match placements.next_if(|pl| pl.request == i) {
                    Some(pl) => {
                        prop_assert!(fits(pl.offer));
                        prop_assert_eq!(Some(count(pl.offer)), least, "request {}", i);
                        room[pl.offer] = room[pl.offer].saturating_sub(&pl.resources);
                        *on_host.entry(offers[pl.offer].hostname.as_str()).or_default() += 1;
                    }
                    None => prop_assert_eq!(least, None, "request {} fit somewhere", i),
                }
            }
        }

        /// First fit leaves a request unplaced only when no offer could
        /// take it at that point (no constraints).
        #[test]
        fn first_fit_is_complete(offers in arb_offers(), reqs in arb_requests()) {
            let p = pack(&offers, &reqs, Strategy::FirstFit, &[], &mut Placed::default()).expect("pack");
            // Replay to know each offer's room when an unplaced request came.
            let mut room: Vec<Resources> = offers.iter().map(|o| Resources::from_proto(&o.resources).expect("res")).collect();
            let mut placements = p.placements.iter().peekable();
            for (i, r) in reqs.iter().enumerate() {
                if let Some(pl) = placements.next_if(|pl| pl.request == i) {
                    room[pl.offer] = room[pl.offer].saturating_sub(&pl.resources);
                } else {
                    let fits = room.iter().any(|x| x.contains(&r.resources) && x.port_count() >= r.ports as u64);
                    prop_assert!(!fits, "request {} fit somewhere but was not placed", i);
                }
            }
        }
    }
}
