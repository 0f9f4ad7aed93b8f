//! Tests of the allocator alone (DESIGN.md "Allocator"): table-driven
//! cases, properties over random clusters, and fairness simulations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use mezzo_proto::ids::{AgentId, FrameworkId};
use mezzo_proto::reservation::{ReservedResources, Role};
use mezzo_proto::resources::{Mib, MilliCpus, Resources};
use proptest::prelude::*;

use super::*;

fn aid(i: usize) -> AgentId {
    AgentId::parse(&format!("a{i}")).expect("id")
}
fn fid(i: usize) -> FrameworkId {
    FrameworkId::parse(&format!("f{i}")).expect("id")
}
fn role(s: &str) -> Role {
    Role::parse(s).expect("role")
}
fn rr(s: &str) -> ReservedResources {
    ReservedResources::parse(s).expect(s)
}
fn res(s: &str) -> Resources {
    Resources::parse(s).expect(s)
}

/// DESIGN.md "Allocator": the framework with the lowest dominant share
/// gets the next agent, and shares are updated as offers are made.
#[test]
fn lowest_dominant_share_goes_first_and_alternates() {
    let now = Instant::now();
    let mut al = Allocator::new();
    for i in 0..4 {
        al.add_agent(&aid(i), rr("cpus:1;mem:1024"), true);
    }
    al.add_framework(&fid(1), &[Role::star()], true);
    al.add_framework(&fid(2), &[Role::star()], true);
    let got = al.allocate(now);
    assert_eq!(got.len(), 4);
    let per: HashMap<String, usize> = got.iter().fold(HashMap::new(), |mut m, a| {
        *m.entry(a.framework.to_string()).or_default() += 1;
        m
    });
    assert_eq!(per["f1"], 2);
    assert_eq!(per["f2"], 2);
    // Nothing is left: a second cycle offers nothing.
    assert!(al.allocate(now).is_empty());
}

#[test]
fn reserved_resources_go_only_to_their_role() {
    let now = Instant::now();
    let mut al = Allocator::new();
    al.add_agent(&aid(0), rr("cpus:2;mem:2048;cpus(eng):2;mem(eng):1024"), true);
    al.add_framework(&fid(1), &[Role::star()], true);
    let got = al.allocate(now);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].resources, rr("cpus:2;mem:2048"));
    al.add_framework(&fid(2), &[role("eng")], true);
    let got = al.allocate(now);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].framework, fid(2));
    assert_eq!(got[0].role, role("eng"));
    assert_eq!(got[0].resources, rr("cpus(eng):2;mem(eng):1024"));
}

/// Reserved disk alone is too little to offer, but it joins an offer the
/// role's framework gets anyway (as Mesos' minimum applies to the whole
/// offer): a framework that reserved disk for its volumes sees it.
#[test]
fn reserved_disk_alone_joins_its_roles_offer() {
    let now = Instant::now();
    let mut al = Allocator::new();
    al.add_agent(&aid(0), rr("cpus:2;mem:2048;disk(eng):100"), true);
    al.add_framework(&fid(1), &[role("eng")], true);
    let got = al.allocate(now);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].resources, rr("cpus:2;mem:2048;disk(eng):100"));
    // Nothing else to offer: the disk alone is not offered.
    let mut al = Allocator::new();
    al.add_agent(&aid(0), rr("disk:10;disk(eng):100"), true);
    al.add_framework(&fid(1), &[role("eng")], true);
    assert!(al.allocate(now).is_empty());
}

#[test]
fn a_guarantee_is_set_aside_and_a_limit_is_never_passed() {
    let now = Instant::now();
    let mut al = Allocator::new();
    for i in 0..4 {
        al.add_agent(&aid(i), rr("cpus:4;mem:4096"), true);
    }
    al.set_quota(
        &role("eng"),
        Quota {
            guarantee: res("cpus:6;mem:6144"),
            limit: Resources::default(),
        },
    );
    al.set_quota(
        &role("ops"),
        Quota {
            guarantee: Resources::default(),
            limit: res("cpus:3"),
        },
    );
    al.add_framework(&fid(1), &[Role::star()], true);
    al.add_framework(&fid(2), &[role("ops")], true);
    al.allocate(now);
    // eng has no framework yet, but 6 cpus are kept for it.
    let star = al.held(&fid(1), &Role::star());
    let ops = al.held(&fid(2), &role("ops"));
    assert!(ops.cpus <= MilliCpus(3000), "ops over its limit: {ops}");
    assert!(
        star.cpus.0 + ops.cpus.0 <= 16_000 - 6000,
        "guarantee eaten: {star} + {ops}"
    );
    al.add_framework(&fid(3), &[role("eng")], true);
    al.allocate(now);
    let eng = al.held(&fid(3), &role("eng"));
    assert!(eng.contains(&res("cpus:6;mem:6144")), "eng got {eng}");
}

/// DESIGN.md "Offers": the allocator takes offers back when a quota needs them.
#[test]
fn a_hoarder_loses_offers_to_a_guarantee() {
    let now = Instant::now();
    let mut al = Allocator::new();
    for i in 0..2 {
        al.add_agent(&aid(i), rr("cpus:4;mem:4096"), true);
    }
    al.add_framework(&fid(1), &[Role::star()], true);
    assert_eq!(al.allocate(now).len(), 2);
    assert!(al.quota_rescinds().is_empty());
    al.set_quota(
        &role("eng"),
        Quota {
            guarantee: res("cpus:2;mem:1024"),
            limit: Resources::default(),
        },
    );
    // No framework in eng wants offers yet: nothing is taken back.
    assert!(al.quota_rescinds().is_empty());
    al.add_framework(&fid(2), &[role("eng")], true);
    let back = al.quota_rescinds();
    assert_eq!(back.len(), 1, "{back:?}");
    let (f, a) = &back[0];
    assert_eq!(f, &fid(1));
    al.recover_offered(f, &Role::star(), a, &rr("cpus:4;mem:4096"));
    let got = al.allocate(now);
    let eng: Vec<_> = got.iter().filter(|x| x.framework == fid(2)).collect();
    assert_eq!(eng.len(), 1, "{got:?}");
    assert!(eng[0].resources.unreserved.contains(&res("cpus:2;mem:1024")));
    // eng's share is still the lower one, so DRF gives it the rest too.
    assert!(al.quota_rescinds().is_empty());
}

#[test]
fn filters_hold_until_they_expire_and_revive_clears_them() {
    let now = Instant::now();
    let mut al = Allocator::new();
    al.add_agent(&aid(0), rr("cpus:1;mem:512"), true);
    al.add_framework(&fid(1), &[Role::star()], true);
    let got = al.allocate(now);
    al.recover_offered(&fid(1), &Role::star(), &aid(0), &got[0].resources);
    al.filter(&fid(1), &aid(0), now + Duration::from_secs(5));
    assert!(al.allocate(now + Duration::from_secs(1)).is_empty());
    assert_eq!(al.allocate(now + Duration::from_secs(5)).len(), 1);
    let got = al.allocate(now);
    assert!(got.is_empty());
    al.recover_offered(&fid(1), &Role::star(), &aid(0), &rr("cpus:1;mem:512"));
    al.filter(&fid(1), &aid(0), now + Duration::from_secs(60));
    assert!(al.allocate(now).is_empty());
    al.revive(&fid(1), &[]);
    assert_eq!(al.allocate(now).len(), 1);
    al.recover_offered(&fid(1), &Role::star(), &aid(0), &rr("cpus:1;mem:512"));
    al.suppress(&fid(1), &[]);
    assert!(al.allocate(now).is_empty());
    al.revive(&fid(1), &[]);
    assert_eq!(al.allocate(now).len(), 1);
}

#[test]
fn a_framework_suppressed_in_one_role_is_still_offered_in_its_others() {
    let now = Instant::now();
    let mut al = Allocator::new();
    let (a, b) = (Role::parse("a").expect("role"), Role::parse("b").expect("role"));
    al.add_agent(&aid(0), rr("cpus:1;mem:512"), true);
    al.add_framework(&fid(1), &[a.clone(), b.clone()], true);
    al.suppress(&fid(1), std::slice::from_ref(&a));
    let got = al.allocate(now);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].role, b);
    al.recover_offered(&fid(1), &b, &aid(0), &got[0].resources);
    al.suppress(&fid(1), std::slice::from_ref(&b));
    assert!(al.allocate(now).is_empty());
    al.revive(&fid(1), std::slice::from_ref(&a));
    let got = al.allocate(now);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].role, a);
    // Leaving a role forgets its suppression.
    al.recover_offered(&fid(1), &a, &aid(0), &got[0].resources);
    al.add_framework(&fid(1), std::slice::from_ref(&a), true);
    al.add_framework(&fid(1), &[a.clone(), b.clone()], true);
    al.suppress(&fid(1), std::slice::from_ref(&a));
    let got = al.allocate(now);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].role, b);
}

#[test]
fn one_task_ending_touches_one_agent() {
    let now = Instant::now();
    let mut al = Allocator::new();
    for i in 0..100 {
        al.add_agent(&aid(i), rr("cpus:2;mem:2048"), true);
    }
    al.add_framework(&fid(1), &[Role::star()], true);
    let got = al.allocate(now);
    for g in &got {
        al.offer_used(&g.framework, &g.role, &g.agent, &g.resources);
    }
    let task = rr("cpus:1;mem:1024");
    al.recover_used(&fid(1), &Role::star(), &aid(7), &task);
    assert_eq!(al.pending(), 1);
    let got = al.allocate(now);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].agent, aid(7));
    assert_eq!(got[0].resources, task);
}

/// A framework that launches `task`-sized tasks from every offer until it
/// cannot, and returns the rest; shares are returned per framework.
fn simulate(weights: &[(usize, &str, f64)], agents: usize, task: &str) -> Vec<f64> {
    let now = Instant::now();
    let mut al = Allocator::new();
    for i in 0..agents {
        al.add_agent(&aid(i), rr("cpus:8;mem:16384"), true);
    }
    for (f, r, w) in weights {
        al.add_framework(&fid(*f), &[role(r)], true);
        al.set_weight(&role(r), *w);
    }
    let task = rr(task);
    let mut held: BTreeMap<usize, Resources> = BTreeMap::new();
    for _ in 0..10_000 {
        let got = al.allocate(now);
        if got.is_empty() {
            break;
        }
        for g in got {
            // Launch one task per offer (so shares move in small steps), and
            // return the rest.
            let f: usize = g.framework.as_str()[1..].parse().expect("index");
            let mut left = g.resources.clone();
            if let Some(after) = left.checked_sub(&task) {
                al.offer_used(&g.framework, &g.role, &g.agent, &task);
                held.entry(f).or_default().add(&task.total());
                left = after;
            } else {
                al.filter(&g.framework, &g.agent, now + Duration::from_secs(3600));
            }
            al.recover_offered(&g.framework, &g.role, &g.agent, &left);
        }
    }
    let total = al.total().total();
    weights
        .iter()
        .map(|(f, _, _)| held.get(f).map(|h| h.dominant_share(&total)).unwrap_or(0.0))
        .collect()
}

/// DESIGN.md "Allocator": with equal weights and unbounded demand,
/// dominant shares converge within one task's size of each other.
#[test]
fn equal_weights_converge_within_one_task() {
    let shares = simulate(&[(1, "a", 1.0), (2, "b", 1.0), (3, "c", 1.0)], 20, "cpus:1;mem:1024");
    let task_share = 1.0 / (20.0 * 8.0);
    let (min, max) = (
        shares.iter().copied().fold(f64::MAX, f64::min),
        shares.iter().copied().fold(0.0, f64::max),
    );
    assert!(max - min <= task_share + 1e-9, "{shares:?}");
    assert!(min > 0.3, "cluster not filled: {shares:?}");
}

/// With weights 1:3 the shares converge 1:3.
#[test]
fn weights_one_to_three_converge_one_to_three() {
    let shares = simulate(&[(1, "a", 1.0), (2, "b", 3.0)], 20, "cpus:1;mem:1024");
    let ratio = shares[1] / shares[0];
    assert!((ratio - 3.0).abs() < 0.15, "{shares:?} ratio {ratio}");
}

/// Frameworks inside one role share that role's part by DRF; roles in a
/// tree share by subtree.
#[test]
fn hierarchy_shares_by_subtree_then_framework() {
    let shares = simulate(
        &[(1, "eng/a", 1.0), (2, "eng/b", 1.0), (3, "ops", 1.0)],
        16,
        "cpus:1;mem:1024",
    );
    // eng (two frameworks) and ops (one) get half each.
    let eng = shares[0] + shares[1];
    assert!((eng - shares[2]).abs() <= 2.0 / 128.0 + 1e-9, "{shares:?}");
    assert!((shares[0] - shares[1]).abs() <= 1.0 / 128.0 + 1e-9, "{shares:?}");
}

// ---- properties ----

/// An agent: cpus, GiB of mem, and maybe (role index, cpus) reserved.
type AgentSpec = (u64, u64, Option<(usize, u64)>);

#[derive(Debug, Clone)]
struct Scenario {
    agents: Vec<AgentSpec>,
    frameworks: Vec<usize>,
    limits: Vec<Option<u64>>,
    ops: Vec<(u8, usize, usize)>,
}

const ROLES: [&str; 4] = ["*", "eng", "eng/batch", "ops"];

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        proptest::collection::vec((1u64..8, 1u64..8, proptest::option::of((1usize..4, 1u64..3))), 1..12),
        proptest::collection::vec(0usize..4, 1..6),
        proptest::collection::vec(proptest::option::of(1u64..10), 4),
        proptest::collection::vec((0u8..9, 0usize..16, 0usize..16), 1..40),
    )
        .prop_map(|(agents, frameworks, limits, ops)| Scenario {
            agents,
            frameworks,
            limits,
            ops,
        })
}

/// The test's own account of what is out: offers and tasks.
#[derive(Debug, Default)]
struct Model {
    offers: Vec<Allocation>,
    tasks: Vec<Allocation>,
}

fn check(
    al: &Allocator,
    m: &Model,
    totals: &[ReservedResources],
    limits: &[Option<u64>],
    now: Instant,
    filters: &HashMap<(usize, usize), Instant>,
    fresh: &[Allocation],
) -> Result<(), TestCaseError> {
    let mut per_agent: HashMap<String, ReservedResources> = HashMap::new();
    let mut ports: HashMap<String, Vec<std::ops::RangeInclusive<u64>>> = HashMap::new();
    let mut per_role: HashMap<String, Resources> = HashMap::new();
    for x in m.offers.iter().chain(&m.tasks) {
        for r in x
            .resources
            .unreserved
            .ports
            .iter()
            .chain(x.resources.reserved.values().flat_map(|r| r.ports.iter()))
        {
            let list = ports.entry(x.agent.to_string()).or_default();
            prop_assert!(
                !list.iter().any(|p| p.start() <= r.end() && r.start() <= p.end()),
                "port {r:?} allocated twice"
            );
            list.push(r.clone());
        }
        per_agent.entry(x.agent.to_string()).or_default().add(&x.resources);
        let mut r = Some(x.role.clone());
        while let Some(cur) = r {
            per_role.entry(cur.to_string()).or_default().add(&x.resources.total());
            r = cur.parent();
        }
        for reserved in x.resources.reserved.keys() {
            prop_assert_eq!(reserved, &x.role, "reserved resources offered to another role");
        }
    }
    for (i, total) in totals.iter().enumerate() {
        if let Some(used) = per_agent.get(&aid(i).to_string()) {
            prop_assert!(
                total.contains(used),
                "agent a{} over-allocated: {} of {}",
                i,
                used,
                total
            );
        }
    }
    for (i, limit) in limits.iter().enumerate().skip(1) {
        if let (Some(l), Some(held)) = (limit, per_role.get(ROLES[i])) {
            prop_assert!(
                held.cpus.0 <= l * 1000,
                "role {} beyond its limit {}: {}",
                ROLES[i],
                l,
                held
            );
        }
    }
    for x in fresh {
        let f: usize = x.framework.as_str()[1..].parse().expect("index");
        let a: usize = x.agent.as_str()[1..].parse().expect("index");
        if let Some(until) = filters.get(&(f, a)) {
            prop_assert!(*until <= now, "filtered agent a{} offered to f{}", a, f);
        }
    }
    let _ = al;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Nothing is allocated twice or beyond an agent; limits hold;
    /// reserved resources go only to their role; filters hold until they
    /// expire.
    #[test]
    fn allocations_respect_agents_limits_reservations_and_filters(s in scenario()) {
        let start = Instant::now();
        let mut now = start;
        let mut al = Allocator::new();
        let mut totals = Vec::new();
        for (i, (c, m, rsv)) in s.agents.iter().enumerate() {
            let mut t = rr(&format!("cpus:{c};mem:{};ports:[{}-{}]", m * 1024, 1000 + i * 10, 1000 + i * 10 + 9));
            if let Some((r, n)) = rsv
                && let Some(x) = t.reserve(&role(ROLES[*r]), &res(&format!("cpus:{}", (*n).min(*c))))
            {
                t = x;
            }
            al.add_agent(&aid(i), t.clone(), true);
            totals.push(t);
        }
        for (i, l) in s.limits.iter().enumerate().skip(1) {
            if let Some(l) = l {
                al.set_quota(&role(ROLES[i]), Quota { guarantee: Resources::default(), limit: res(&format!("cpus:{l}")) });
            }
        }
        for (i, r) in s.frameworks.iter().enumerate() {
            al.add_framework(&fid(i), &[role(ROLES[*r])], true);
        }
        let mut m = Model::default();
        let mut filters: HashMap<(usize, usize), Instant> = HashMap::new();
        let (mut suppressed, mut away) = (HashSet::new(), HashSet::new());
        for (op, x, y) in &s.ops {
            match op {
                0 | 1 => {
                    let got = al.allocate(now);
                    for x in &got {
                        let f: usize = x.framework.as_str()[1..].parse().expect("index");
                        prop_assert!(!suppressed.contains(&f) && !away.contains(&f), "f{} offered while suppressed or inactive", f);
                    }
                    m.offers.extend(got.iter().cloned());
                    check(&al, &m, &totals, &s.limits, now, &filters, &got)?;
                }
                2 if !m.offers.is_empty() => {
                    // Decline with a filter.
                    let o = m.offers.remove(x % m.offers.len());
                    al.recover_offered(&o.framework, &o.role, &o.agent, &o.resources);
                    let f: usize = o.framework.as_str()[1..].parse().expect("index");
                    let a: usize = o.agent.as_str()[1..].parse().expect("index");
                    let until = now + Duration::from_secs(1 + (*y as u64 % 5));
                    al.filter(&o.framework, &o.agent, until);
                    filters.insert((f, a), until);
                }
                3 if !m.offers.is_empty() => {
                    // Accept: the whole offer becomes a task.
                    let o = m.offers.remove(x % m.offers.len());
                    al.offer_used(&o.framework, &o.role, &o.agent, &o.resources);
                    m.tasks.push(o);
                }
                4 if !m.tasks.is_empty() => {
                    let t = m.tasks.remove(x % m.tasks.len());
                    al.recover_used(&t.framework, &t.role, &t.agent, &t.resources);
                }
                5 => now += Duration::from_secs(1 + (*y as u64 % 3)),
                6 => {
                    let f = x % s.frameworks.len();
                    let named = if y % 2 == 0 { vec![] } else { vec![role(ROLES[s.frameworks[f]])] };
                    al.suppress(&fid(f), &named);
                    suppressed.insert(f);
                }
                7 => {
                    let f = x % s.frameworks.len();
                    al.revive(&fid(f), &[]);
                    suppressed.remove(&f);
                    filters.retain(|(g, _), _| *g != f);
                }
                8 => {
                    let f = x % s.frameworks.len();
                    let active = y % 2 == 0;
                    al.set_framework_active(&fid(f), active);
                    if active {
                        away.remove(&f);
                    } else {
                        away.insert(f);
                    }
                }
                _ => {}
            }
            al.check_wanting().map_err(TestCaseError::fail)?;
        }
    }

    /// Guarantees are met whenever the cluster can meet them, even when a
    /// framework of another role was there first.
    #[test]
    fn guarantees_are_met_when_the_cluster_can(
        agents in proptest::collection::vec((1u64..6, 1u64..6), 1..10),
        g in proptest::collection::vec((0u64..4, 0u64..4), 3),
        first in any::<bool>(),
    ) {
        let now = Instant::now();
        let mut al = Allocator::new();
        let (mut cpus, mut mem) = (0, 0);
        for (i, (c, m)) in agents.iter().enumerate() {
            al.add_agent(&aid(i), rr(&format!("cpus:{c};mem:{}", m * 1024)), true);
            cpus += c;
            mem += m;
        }
        let quota_roles = ["eng", "eng/batch", "ops"];
        // Guarantees that fit the cluster together (eng's includes eng/batch's).
        // A parent's guarantee covers its children's (the operator API
        // refuses anything else).
        let mut want: Vec<(u64, u64)> = g.clone();
        if want[0] != (0, 0) {
            want[0] = (want[0].0.max(want[1].0), want[0].1.max(want[1].1));
        }
        let sum_c = want[0].0.max(want[1].0) + want[2].0;
        let sum_m = want[0].1.max(want[1].1) + want[2].1;
        prop_assume!(sum_c <= cpus && sum_m <= mem);
        let mut hoarder = || { al.add_framework(&fid(9), &[Role::star()], true); };
        if first { hoarder(); al.allocate(now); }
        for (i, (c, m)) in want.iter().enumerate() {
            if *c == 0 && *m == 0 { continue; }
            let guarantee = Resources {
                cpus: MilliCpus(c * 1000),
                mem: Mib(m * 1024),
                ..Default::default()
            };
            al.set_quota(&role(quota_roles[i]), Quota { guarantee, limit: Resources::default() });
        }
        for (i, r) in quota_roles.iter().enumerate() {
            al.add_framework(&fid(i), &[role(r)], true);
        }
        if !first { al.add_framework(&fid(9), &[Role::star()], true); }
        for _ in 0..4 {
            for (f, a) in al.quota_rescinds() {
                let offered = al.offered_on(&f, &Role::star(), &a);
                al.recover_offered(&f, &Role::star(), &a, &offered);
            }
            al.allocate(now);
        }
        let held = |i: usize| al.held(&fid(i), &role(quota_roles[i]));
        let eng = { let mut e = held(0); e.add(&held(1)); e };
        prop_assert!(eng.cpus.0 >= want[0].0 * 1000 && eng.mem.0 >= want[0].1 * 1024, "eng {} < {:?}", eng, want[0]);
        prop_assert!(held(1).cpus.0 >= want[1].0 * 1000 && held(1).mem.0 >= want[1].1 * 1024, "eng/batch {} < {:?}", held(1), want[1]);
        prop_assert!(held(2).cpus.0 >= want[2].0 * 1000 && held(2).mem.0 >= want[2].1 * 1024, "ops {} < {:?}", held(2), want[2]);
    }
}

/// A framework that changes its roles (a re-subscription, Mesos'
/// UPDATE_FRAMEWORK) is no longer listed in a role it left.
#[test]
fn a_framework_leaves_the_roles_it_no_longer_names() {
    let mut a = Allocator::new();
    a.add_framework(&fid(1), &[role("a"), role("b")], true);
    a.add_framework(&fid(1), &[role("b")], true);
    let listed = |a: &Allocator, r: &str| {
        a.roles_view()
            .into_iter()
            .find(|v| v.role == r)
            .map(|v| v.frameworks)
            .unwrap_or_default()
    };
    assert!(listed(&a, "a").is_empty(), "{:?}", listed(&a, "a"));
    assert_eq!(listed(&a, "b"), vec![fid(1).to_string()]);
}
