//! The task history (issue 16): task ends reach the replicated registry
//! within a second, a new leader rebuilds from it, and a removed framework
//! stays visible until the bounds push it out.

use super::*;
use crate::core::view::{self, TaskFilter};
use crate::history::HistoryBounds;

/// Finishes task "t" of `with_task` with exit code 3, acknowledged.
fn finish(s: &mut Sim, f: &FrameworkId) {
    let mut st = status("t", TaskState::Failed, 1);
    st.exit_code = Some(3);
    s.m.status_update(AGENT_CONN, f.clone(), st, TaskState::Failed, s.now)
        .expect("update");
    let agent = agent_id(s);
    s.m.acknowledge(f, &agent, &TaskId::parse("t").expect("id"), &[1; 16])
        .expect("ack");
    s.run();
}

fn listed(m: &Master, f: &FrameworkId) -> Vec<view::TaskView> {
    let q = TaskFilter {
        framework: Some(f.to_string()),
        ..Default::default()
    };
    view::tasks(m, &q.check().expect("query")).items
}

#[test]
fn task_ends_reach_the_registry_within_a_second_and_a_new_leader_keeps_them() {
    let (mut s, f) = Sim::with_task();
    s.run();
    finish(&mut s, &f);
    assert!(s.m.registry().history.tasks.is_empty(), "batched, not one op per end");
    s.advance(Duration::from_millis(1100));
    let ring = &s.m.registry().history.tasks[&f];
    assert_eq!(ring.len(), 1);
    assert_eq!((ring[0].state.as_str(), ring[0].exit_code), ("TASK_FAILED", Some(3)));

    // A new leader starts from the registry alone.
    let registry = s.m.registry().clone();
    let mut next = Master::recover(CoreConfig::default(), registry, s.now);
    let tasks = listed(&next, &f);
    assert_eq!(tasks.len(), 1);
    assert_eq!((tasks[0].state.as_ref(), tasks[0].exit_code), ("TASK_FAILED", Some(3)));
    assert!(tasks[0].ended_at.is_some());
    // Names beside the ids (issue 21), the agent's from the registry.
    assert_eq!(
        (tasks[0].framework_name.as_str(), tasks[0].agent_hostname.as_str()),
        ("f", "h")
    );
    // Nothing is recorded twice by the new leader.
    next.tick(s.now + Duration::from_secs(2));
    assert!(
        !next
            .take_effects()
            .iter()
            .any(|e| matches!(e, Effect::Propose(RegistryOp::RecordTaskEnds { .. })))
    );
}

#[test]
fn a_removed_framework_keeps_its_history_with_the_tasks_its_removal_killed() {
    let (mut s, f) = Sim::with_task();
    s.run();
    s.m.teardown(&f).expect("teardown");
    s.run();
    s.advance(Duration::from_millis(1100));
    let h = &s.m.registry().history;
    assert_eq!(h.removed.len(), 1);
    assert!(h.removed[0].removed_at > 0.0);
    let tasks = listed(&s.m, &f);
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].state, "TASK_KILLED");
    assert_eq!(tasks[0].reason, "REASON_FRAMEWORK_REMOVED");
    assert_eq!(tasks[0].framework_name, "f", "a removed framework's name is remembered");
    let rows = view::frameworks(&s.m, 100, 0).items;
    let row = rows.iter().find(|r| r.id == f.as_str()).expect("listed");
    assert!(row.removed_at.is_some() && !row.connected);
    assert_eq!(row.tasks_by_state.get("TASK_KILLED"), Some(&1));
}

/// A task that ended but whose end the framework had not acknowledged
/// when it tore down keeps its own end in the history.
#[test]
fn a_removed_framework_keeps_the_end_it_had_not_acknowledged() {
    let (mut s, f) = Sim::with_task();
    s.run();
    let mut st = status("t", TaskState::Finished, 1);
    st.exit_code = Some(0);
    s.m.status_update(AGENT_CONN, f.clone(), st, TaskState::Finished, s.now)
        .expect("update");
    s.run();
    s.m.teardown(&f).expect("teardown");
    s.run();
    s.advance(Duration::from_millis(1100));
    let tasks = listed(&s.m, &f);
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(
        (tasks[0].state.as_ref(), tasks[0].exit_code),
        ("TASK_FINISHED", Some(0))
    );
}

/// The frameworks page lists registered frameworks, then removed ones,
/// and pages across the two (rows are built for the page only).
#[test]
fn the_frameworks_page_runs_on_from_registered_to_removed() {
    let (mut s, gone) = Sim::with_task();
    s.run();
    s.m.teardown(&gone).expect("teardown");
    s.run();
    s.framework();
    s.framework();
    let ids = |limit, offset| -> (usize, Vec<String>) {
        let page = view::frameworks(&s.m, limit, offset);
        (page.total, page.items.into_iter().map(|r| r.id).collect())
    };
    let (total, all) = ids(10, 0);
    assert_eq!((total, all.len()), (3, 3));
    assert_eq!(all[2], gone.to_string(), "the removed one last");
    assert!(all[0] < all[1], "registered ones by id");
    assert_eq!(ids(1, 1), (3, vec![all[1].clone()]));
    assert_eq!(ids(2, 1), (3, all[1..].to_vec()));
    assert_eq!(ids(5, 2), (3, vec![gone.to_string()]));
    assert_eq!(ids(5, 3), (3, vec![]));
    assert_eq!(ids(5, 9), (3, vec![]));
}

#[test]
fn ends_are_recorded_before_the_removal_that_follows_them() {
    let (mut s, f) = Sim::with_task();
    s.run();
    finish(&mut s, &f);
    s.m.teardown(&f).expect("teardown");
    let proposed: Vec<_> =
        s.m.take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Propose(op) => Some(op),
                _ => None,
            })
            .collect();
    assert!(
        matches!(
            proposed.as_slice(),
            [RegistryOp::RecordTaskEnds { .. }, RegistryOp::RemoveFramework { .. }]
        ),
        "{proposed:?}"
    );
}

#[test]
fn the_leader_puts_its_bounds_in_the_registry() {
    let now = Instant::now();
    let cfg = CoreConfig {
        completed_tasks_per_framework: 2,
        completed_frameworks: 1,
        ..CoreConfig::default()
    };
    let mut s = Sim {
        m: Master::recover(cfg, Registry::default(), now),
        now,
        sent: Vec::new(),
    };
    s.advance(Duration::from_millis(10));
    assert_eq!(
        s.m.registry().history.bounds,
        HistoryBounds {
            tasks_per_framework: 2,
            frameworks: 1
        }
    );
}

/// Offers sent on `conn`.
fn offers_on(s: &Sim, conn: ConnId) -> Vec<OfferId> {
    (s.sent.iter())
        .filter_map(|e| match e {
            Effect::ToFramework(
                c,
                v1::Event {
                    event: Some(v1::event::Event::Offers(o)),
                },
            ) if *c == conn => Some(o.offers.iter().map(oid).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// TaskIndex `ids` with an outstanding offer sent on `conn`.
fn launch_all(s: &mut Sim, f: &FrameworkId, conn: ConnId, ids: &[&str]) {
    let offers = offers_on(s, conn);
    let offer = (offers.into_iter().rev())
        .find(|o| s.m.offers.contains_key(o))
        .expect("an offer");
    let tasks = ids.iter().map(|id| launch(id, "cpus:0.1;mem:1")).collect();
    s.m.accept(f, &[offer], tasks, None, s.now).expect("accept");
    s.run();
}

/// Task `id` of `f` on the agent of `conn` ends and its end is acknowledged.
fn end(s: &mut Sim, f: &FrameworkId, conn: ConnId, id: &str, uuid: u8) {
    s.m.status_update(
        conn,
        f.clone(),
        status(id, TaskState::Finished, uuid),
        TaskState::Finished,
        s.now,
    )
    .expect("update");
    let agent = s.m.agent_conns[&conn].clone();
    s.m.acknowledge(f, &agent, &TaskId::parse(id).expect("id"), &[uuid; 16])
        .expect("ack");
    s.run();
}

/// The page of every task comes off the launch index: the same rows in the
/// same order (newest launch first, then id) as a filter that matches
/// every task finds by walking them all, at every offset, across active
/// and completed tasks, a removed framework's history and a new leader's
/// rebuilt rings.
#[test]
fn the_page_of_every_task_is_the_walk_s_order_read_off_the_index() {
    let mut s = Sim::new();
    let f = s.framework();
    s.agent(AGENT_CONN, "cpus:64;mem:65536");
    launch_all(&mut s, &f, FW_CONN, &["a1", "a2", "a3", "a4", "a5", "a6"]);
    for (i, id) in ["a2", "a5", "a6"].iter().enumerate() {
        end(&mut s, &f, AGENT_CONN, id, i as u8 + 1);
    }
    // A second framework on its own agent, ended with one task completed.
    let g = s.second_framework();
    s.agent(AGENT_CONN + 1, "cpus:64;mem:65536");
    launch_all(&mut s, &g, FW_CONN + 1, &["a3", "b1", "b2"]);
    end(&mut s, &g, AGENT_CONN + 1, "b1", 9);
    s.m.teardown(&g).expect("teardown");
    s.run();
    s.advance(Duration::from_millis(1100));
    assert_eq!(s.m.registry().history.removed.len(), 1);
    s.advance(Duration::from_secs(2));
    launch_all(&mut s, &f, FW_CONN, &["c1", "c2"]);

    let page = |m: &Master, every_state: bool, limit, offset| {
        let q = TaskFilter {
            state: every_state.then(|| "active,terminal".to_owned()),
            limit: Some(limit),
            offset: Some(offset),
            ..Default::default()
        };
        let page = view::tasks(m, &q.check().expect("query"));
        let rows: Vec<_> = (page.items.iter())
            .map(|t| (t.framework_id.clone(), t.id.clone(), t.state.to_string()))
            .collect();
        (page.total, rows)
    };
    let same_as_the_walk = |m: &Master, tasks: usize| {
        let (total, all) = page(m, false, 100, 0);
        assert_eq!((total, all.len()), (tasks, tasks));
        assert_eq!((total, all.clone()), page(m, true, 100, 0));
        for (limit, offset) in [(1, 0), (3, 0), (3, 2), (4, 7), (5, 9), (2, tasks), (1, tasks + 5)] {
            let (total, rows) = page(m, false, limit, offset);
            assert_eq!(
                (total, rows.clone()),
                page(m, true, limit, offset),
                "limit {limit} offset {offset}"
            );
            let want: Vec<_> = all.iter().skip(offset).take(limit).cloned().collect();
            assert_eq!(rows, want, "limit {limit} offset {offset}");
        }
        all
    };
    // f: 8 tasks, 3 of them completed; g: 3 tasks in the history.
    let all = same_as_the_walk(&s.m, 11);
    assert_eq!(&all[0].1[..1], "c", "the newest launches first: {all:?}");
    assert!(
        all.iter().any(|(fw, id, _)| fw == g.as_str() && id == "a3"),
        "an id in two frameworks"
    );

    // A new leader: f's completed ring and g's history, from the registry.
    let next = Master::recover(CoreConfig::default(), s.m.registry().clone(), s.now);
    assert_eq!(same_as_the_walk(&next, 6).len(), 6);
}
