#![allow(clippy::unwrap_used)]

use super::*;

fn fw(id: &str, at: f64) -> RemovedFramework {
    RemovedFramework {
        id: FrameworkId::parse(id).unwrap(),
        name: format!("name-{id}"),
        principal: "user:alice".into(),
        roles: vec!["*".into()],
        removed_at: at,
    }
}

fn end(fid: &str, tid: &str) -> TaskRecord {
    TaskRecord {
        id: TaskId::parse(tid).unwrap(),
        framework_id: FrameworkId::parse(fid).unwrap(),
        name: tid.into(),
        agent_id: AgentId::parse("a1").unwrap(),
        role: Role::star(),
        resources: Resources::default(),
        state: "TASK_FINISHED".into(),
        reason: String::new(),
        message: String::new(),
        exit_code: Some(0),
        launched_at: 1.0,
        ended_at: 2.0,
    }
}

fn ids(h: &History, fid: &str) -> Vec<String> {
    h.tasks
        .get(&FrameworkId::parse(fid).unwrap())
        .map(|r| r.iter().map(|t| t.id.to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn each_framework_keeps_its_newest_ends_within_the_bound() {
    let mut h = History::default();
    h.set_bounds(HistoryBounds {
        tasks_per_framework: 2,
        frameworks: 1,
    });
    let ends: Vec<_> = ["t1", "t2", "t3"].iter().map(|t| end("f1", t)).collect();
    h.record(&ends, |_| true);
    assert_eq!(ids(&h, "f1"), ["t2", "t3"]);
}

#[test]
fn ends_of_unknown_frameworks_are_dropped() {
    let mut h = History::default();
    h.record(&[end("f9", "t1")], |_| false);
    assert!(h.tasks.is_empty());
}

#[test]
fn a_removed_framework_keeps_its_tasks_until_pushed_out() {
    let mut h = History::default();
    h.set_bounds(HistoryBounds {
        tasks_per_framework: 10,
        frameworks: 1,
    });
    h.record(&[end("f1", "t1")], |_| true);
    h.framework_removed(fw("f1", 5.0));
    // Ends that arrive after the removal (tasks killed by it) still count.
    h.record(&[end("f1", "t2")], |_| false);
    assert_eq!(ids(&h, "f1"), ["t1", "t2"]);
    assert_eq!(h.removed[0].removed_at, 5.0);

    h.record(&[end("f2", "t1")], |_| true);
    h.framework_removed(fw("f2", 6.0));
    assert_eq!(h.removed.len(), 1);
    assert_eq!(h.removed[0].id.as_str(), "f2");
    assert!(ids(&h, "f1").is_empty(), "f1's tasks go with it");
    assert_eq!(ids(&h, "f2"), ["t1"]);
}

#[test]
fn tighter_bounds_apply_to_what_is_kept() {
    let mut h = History::default();
    let ends: Vec<_> = (0..5).map(|i| end("f1", &format!("t{i}"))).collect();
    h.record(&ends, |_| true);
    h.framework_removed(fw("f1", 1.0));
    h.framework_removed(fw("f2", 2.0));
    h.set_bounds(HistoryBounds {
        tasks_per_framework: 3,
        frameworks: 1,
    });
    assert!(ids(&h, "f1").is_empty());
    assert_eq!(h.removed.len(), 1);
    let mut h = History::default();
    h.record(&ends, |_| true);
    h.set_bounds(HistoryBounds {
        tasks_per_framework: 3,
        frameworks: 1,
    });
    assert_eq!(ids(&h, "f1"), ["t2", "t3", "t4"]);
}

#[test]
fn messages_are_cut_on_a_character_boundary() {
    let mut r = end("f1", "t1");
    r.message = "é".repeat(200); // 400 bytes
    let r = r.bounded();
    assert!(r.message.len() <= MAX_MESSAGE_BYTES);
    assert_eq!(r.message.len() % 2, 0);
}

#[test]
fn the_size_estimate_grows_with_what_is_kept() {
    let mut h = History::default();
    let empty = h.approx_bytes();
    h.record(&[end("f1", "t1"), end("f1", "t2")], |_| true);
    let two = h.approx_bytes();
    assert!(two > empty);
    let json = serde_json::to_string(&h).unwrap().len();
    assert!(two >= json / 2 && two <= json * 2, "estimate {two}, JSON {json}");
}
