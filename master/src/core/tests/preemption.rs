//! Priority and preemption in the core (issue 19): who may preempt whom,
//! the warning, the kill at the deadline, and what stops it.

use super::*;
use crate::core::observe::PendingTask;

const LOW_CONN: ConnId = 301;
const HIGH_CONN: ConnId = 302;

/// A full agent (cpus:2) running two tasks of role `low` at `low_priority`,
/// and a framework of role `high` (or `low`, with `same_role`) reporting a
/// task of priority 10 that needs one cpu.
fn full(low_priority: i32, same_role: bool) -> (Sim, FrameworkId, FrameworkId) {
    let mut s = Sim::new();
    s.m.cfg.preemption.delay = Duration::ZERO;
    // Within the Sim's agent timeout (5 s: its agent sends no heartbeat).
    s.m.cfg.preemption.grace = Duration::from_secs(2);
    let low = framework_in(&mut s, LOW_CONN, &["low"]);
    s.agent(AGENT_CONN, "cpus:2;mem:1024");
    let o = oid(&offers_to(&s, &low)[0]);
    let tasks = ["a", "b"]
        .into_iter()
        .map(|id| {
            let mut l = launch(id, "cpus:1;mem:64");
            l.info.priority = low_priority;
            l
        })
        .collect();
    s.m.accept(&low, &[o], tasks, None, s.now).expect("accept");
    s.run();
    for (id, uuid) in [("a", 1), ("b", 2)] {
        let st = v1::TaskStatus {
            framework_id: low.to_string(),
            ..status(id, TaskState::Running, uuid)
        };
        s.m.status_update(AGENT_CONN, low.clone(), st, TaskState::Running, s.now)
            .expect("update");
    }
    let high = framework_in(&mut s, HIGH_CONN, &[if same_role { "low" } else { "high" }]);
    let waiting = PendingTask {
        task_id: "urgent".into(),
        reason: "full".into(),
        resources: Some(Resources::parse("cpus:1").expect("res")),
        priority: 10,
    };
    s.m.report_pending(&high, vec![waiting]).expect("report");
    s.run();
    (s, low, high)
}

fn preemption_events(s: &Sim) -> Vec<v1::Preemption> {
    s.events()
        .into_iter()
        .filter_map(|e| match e {
            v1::event::Event::Preemption(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn kills(s: &Sim) -> Vec<v1::KillTask> {
    s.agent_msgs()
        .into_iter()
        .filter_map(|m| match m {
            v1::master_message::Message::KillTask(k) => Some(k),
            _ => None,
        })
        .collect()
}

#[test]
fn a_waiting_task_preempts_one_lower_priority_task_of_a_role_above_its_share() {
    let (mut s, low, high) = full(0, false);
    s.advance(Duration::from_millis(100));
    let warned = preemption_events(&s);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!((warned[0].task_ids.len(), warned[0].priority), (1, 10));
    assert_eq!(warned[0].for_framework_id, high.to_string());
    let victim = TaskId::parse(&warned[0].task_ids[0]).expect("id");
    assert!(
        crate::core::view::why_task(&s.m, &TaskId::parse("urgent").expect("id"))
            .expect("why")
            .preemption[0]
            .starts_with("waiting to preempt 1 task(s)")
    );
    assert!(
        s.m.preemption_of(&low, &victim)
            .expect("warned")
            .starts_with("to be preempted for task urgent")
    );
    // Nothing is killed before the deadline, and nothing more is warned.
    s.advance(Duration::from_secs(1));
    assert!(kills(&s).is_empty());
    assert_eq!(preemption_events(&s).len(), 1);
    s.advance(Duration::from_millis(1500));
    let k = kills(&s);
    assert_eq!(k.len(), 1, "{k:?}");
    assert_eq!(k[0].task_id, victim.to_string());
    assert_eq!(k[0].reason, v1::StatusReason::ReasonPreempted as i32);
    assert!(k[0].message.contains("preempted for task urgent"), "{k:?}");
}

#[test]
fn nothing_is_preempted_without_a_lower_priority_another_role_or_preemption_on() {
    // The same priority.
    let quiet = |mut s: Sim, what: &str| {
        s.advance(Duration::from_secs(3));
        assert!(preemption_events(&s).is_empty() && kills(&s).is_empty(), "{what}");
    };
    quiet(full(10, false).0, "the same priority");
    quiet(full(0, true).0, "the waiting task's own role");
    let (s, ..) = full(0, false);
    let mut off = s;
    off.m.cfg.preemption.enabled = false;
    quiet(off, "turned off");
}

/// A framework that repeats its report every half second (as the batch
/// framework does while it gets offers) still preempts once its task has
/// waited the delay since it was first reported.
#[test]
fn a_repeated_report_keeps_its_first_time() {
    let (mut s, _low, high) = full(0, false);
    s.m.cfg.preemption.delay = Duration::from_secs(2);
    let waiting = || PendingTask {
        task_id: "urgent".into(),
        reason: "full".into(),
        resources: Some(Resources::parse("cpus:1").expect("res")),
        priority: 10,
    };
    for _ in 0..3 {
        s.m.report_pending(&high, vec![waiting()]).expect("report");
        s.advance(Duration::from_millis(500));
        assert!(preemption_events(&s).is_empty(), "before the delay");
    }
    for _ in 0..3 {
        s.m.report_pending(&high, vec![waiting()]).expect("report");
        s.advance(Duration::from_millis(500));
    }
    assert_eq!(preemption_events(&s).len(), 1, "after the delay, once");
}

/// A priority above 0 is a right (`prioritize` on the framework's role):
/// owning the framework is not enough, for a launch or a report; 0 and
/// below need none.
#[test]
fn a_priority_above_zero_needs_the_prioritize_right() {
    use crate::auth::Caller;
    use crate::auth::acl::Rule;
    let (mut s, _low, high) = full(0, false);
    let ci = Caller::principal(mezzo_proto::security::Principal::user("ci").expect("principal"), "c1");
    let refused = s.m.check_priority(&ci, &high, 10).expect_err("no rule");
    assert!(refused.to_string().contains("prioritize"), "{refused}");
    s.m.check_priority(&ci, &high, 0).expect("0 needs no right");
    s.m.check_priority(&ci, &high, -5).expect("below 0 needs no right");
    s.m.registry.security.acl.rules.push(Rule {
        principals: vec!["user:ci".into()],
        actions: vec![crate::auth::Action::Prioritize],
        objects: vec!["high".into()],
    });
    s.m.check_priority(&ci, &high, 10).expect("the rule allows it");
    s.m.check_priority(&Caller::Insecure, &high, 10)
        .expect("an insecure cluster allows all");
}
