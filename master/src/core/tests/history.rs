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
