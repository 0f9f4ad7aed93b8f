//! Operator actions and bookkeeping in the core (issue 7): drain, gone,
//! operator kill and teardown, pending reports, events and history.

use super::*;
use crate::core::observe::{ClusterEvent, PRUNE_EVERY, PendingTask};

/// A drained agent gets no new offers and its outstanding ones are
/// rescinded; tasks at the deadline are killed; reactivating offers again.
#[test]
fn drain_stops_offers_and_kills_at_the_deadline() {
    let (mut s, f) = Sim::with_task();
    s.run();
    let agent = s.m.agents.keys().next().expect("agent").clone();
    let offers_before = s.offers().len();
    s.m.drain_agent(&agent, Some(Duration::ZERO)).expect("drain");
    s.run();
    assert!(s.m.is_draining(&agent));
    assert!(s.m.offers.is_empty(), "drain rescinds the agent's offers");
    // The deadline passed: the next tick kills the task, once.
    s.advance(Duration::from_millis(10));
    let kills = |s: &Sim| {
        s.agent_msgs()
            .iter()
            .filter(|m| matches!(m, v1::master_message::Message::KillTask(k) if k.task_id == "t"))
            .count()
    };
    assert_eq!(kills(&s), 1);
    s.advance(Duration::from_millis(10));
    assert_eq!(kills(&s), 1, "killed once per drain");
    // The kill says why, for the agent to report (issue 21: the events
    // said only "killed on request").
    let kill = s.agent_msgs().into_iter().find_map(|m| match m {
        v1::master_message::Message::KillTask(k) => Some(k),
        _ => None,
    });
    let kill = kill.expect("kill");
    assert_eq!(kill.reason, v1::StatusReason::ReasonAgentDraining as i32);
    assert!(kill.message.contains("drain"), "{}", kill.message);
    // The framework was told of the drain and its deadline, and is told
    // again when it subscribes anew.
    let drains = |s: &Sim| -> Vec<v1::AgentDrain> {
        s.events()
            .into_iter()
            .filter_map(|e| match e {
                v1::event::Event::AgentDrain(d) => Some(d),
                _ => None,
            })
            .collect()
    };
    let told = drains(&s);
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].agent_id, agent.to_string());
    assert!(told[0].draining && told[0].deadline.is_some(), "{told:?}");
    s.resubscribe(FW_CONN + 1, &f);
    assert_eq!(drains(&s).len(), 2, "told again after a subscription");
    // The task ends: the agent is empty and still not offered.
    s.m.status_update(
        AGENT_CONN,
        f.clone(),
        status("t", TaskState::Killed, 1),
        TaskState::Killed,
        s.now,
    )
    .expect("update");
    s.advance(Duration::from_secs(1));
    assert_eq!(s.offers().len(), offers_before, "no offers while draining");
    s.m.reactivate_agent(&agent).expect("reactivate");
    s.run();
    assert!(!s.m.is_draining(&agent));
    let ended = drains(&s).pop().expect("drain end");
    assert!(!ended.draining && ended.deadline.is_none(), "{ended:?}");
    assert!(s.offers().len() > offers_before, "offered again after reactivation");
    let events = s.m.take_events();
    assert!(events.contains(&ClusterEvent::AgentDraining {
        agent_id: agent.to_string(),
        draining: true
    }));
}

/// Gone: tasks become GONE, the agent is forgotten and may not register again.
#[test]
fn a_gone_agent_loses_its_tasks_and_cannot_return() {
    let (mut s, _f) = Sim::with_task();
    s.run();
    let agent = s.m.agents.keys().next().expect("agent").clone();
    s.m.mark_agent_gone(&agent).expect("gone");
    s.run();
    assert!(s.m.agents.is_empty());
    let u = s.updates().into_iter().find(|u| u.task_id == "t").expect("update");
    assert_eq!(TaskState::from_proto(u.state), Some(TaskState::Gone));
    assert_eq!(u.reason, v1::StatusReason::ReasonAgentRemoved as i32);
    let again = AgentHello::Reregister {
        id: agent.clone(),
        info: super::agent::AgentDescription {
            hostname: "h".into(),
            http_address: String::new(),
            resources: mezzo_proto::reservation::ReservedResources::unreserved(
                Resources::parse("cpus:1").expect("res"),
            ),
            attributes: vec![],
        },
        tasks: vec![],
        complete: true,
        executors: vec![],
    };
    assert_eq!(
        s.m.agent_attach(999, again, None, s.now),
        Err(MasterError::AgentGone(agent.to_string()))
    );
    assert_eq!(
        s.m.drain_agent(&agent, None),
        Err(MasterError::AgentGone(agent.to_string()))
    );
    let unknown = AgentId::parse("nope").expect("id");
    assert_eq!(
        s.m.mark_agent_gone(&unknown),
        Err(MasterError::UnknownAgent("nope".into()))
    );
}

/// Operators may kill and tear down for a framework that is not connected.
#[test]
fn operator_kill_and_teardown_work_without_a_subscription() {
    let (mut s, f) = Sim::with_task();
    s.run();
    s.m.framework_conn_closed(FW_CONN, s.now);
    s.run();
    let t = TaskId::parse("t").expect("id");
    assert!(matches!(s.m.kill(&f, &t, None), Err(MasterError::NotSubscribed(_))));
    s.m.operator_kill(&f, &t, None).expect("operator kill");
    s.run();
    assert!(s.agent_msgs().iter().any(|m| matches!(
        m,
        v1::master_message::Message::KillTask(k)
            if k.task_id == "t" && k.reason == v1::StatusReason::ReasonKilledByOperator as i32
    )));
    let ghost = FrameworkId::parse("ghost").expect("id");
    assert_eq!(
        s.m.operator_teardown(&ghost),
        Err(MasterError::UnknownFramework("ghost".into()))
    );
    s.m.operator_teardown(&f).expect("teardown");
    s.run();
    assert!(s.m.frameworks.is_empty());
    assert!(s.m.take_events().contains(&ClusterEvent::FrameworkRemoved {
        framework_id: f.to_string()
    }));
}

/// Pending reports: limits are enforced by field, and the master keeps
/// offer figures and status history per task.
#[test]
fn pending_reports_offer_figures_and_history() {
    let (mut s, f) = Sim::with_task();
    s.run();
    let ok = |id: &str, reason: &str| PendingTask {
        task_id: id.into(),
        reason: reason.into(),
        resources: None,
        priority: 0,
    };
    let too_many: Vec<_> = (0..1001).map(|i| ok(&format!("p{i}"), "x")).collect();
    assert!(matches!(s.m.report_pending(&f, too_many), Err(MasterError::Invalid(m)) if m.starts_with("tasks")));
    let long = "r".repeat(2000);
    assert!(
        matches!(s.m.report_pending(&f, vec![ok("p1", &long)]), Err(MasterError::Invalid(m)) if m.contains("reason"))
    );
    s.m.report_pending(&f, vec![ok("p1", "needs 8 cpus")]).expect("report");
    assert_eq!(s.m.observed.pending[&f].tasks.len(), 1);
    // A waiting task no agent could run even empty is named first by
    // `why` (the agent has cpus:1); one that fits some agent is not.
    let sized = |id: &str, res: &str| PendingTask {
        resources: Some(Resources::parse(res).expect("res")),
        ..ok(id, "no room")
    };
    s.m.report_pending(&f, vec![sized("big", "cpus:8"), sized("small", "cpus:0.5")])
        .expect("report");
    let why = crate::core::view::why_framework(&s.m, &f).expect("why");
    assert!(
        why.hints[0].starts_with("no agent can ever run big: it needs cpus:8") && why.hints[0].contains("cpus:1"),
        "{:?}",
        why.hints
    );
    assert!(!why.hints.iter().any(|h| h.contains("small")), "{:?}", why.hints);
    s.m.report_pending(&f, vec![]).expect("clear");
    assert!(!s.m.observed.pending.contains_key(&f));
    let stats = &s.m.observed.offer_stats[&f];
    assert!(stats.received >= 1 && stats.accepted == 1, "{stats:?}");
    assert!(stats.largest_offer.is_some());
    s.m.status_update(
        AGENT_CONN,
        f.clone(),
        status("t", TaskState::Running, 1),
        TaskState::Running,
        s.now,
    )
    .expect("update");
    let t = TaskId::parse("t").expect("id");
    let h = &s.m.observed.history[&(f.clone(), t)];
    let states: Vec<_> = h.iter().map(|e| e.state.as_ref()).collect();
    assert_eq!(states, ["TASK_STAGING", "TASK_RUNNING"]);
    assert_eq!(s.m.observed.unacked(), 1);
    s.m.acknowledge(
        &f,
        &s.m.agents.keys().next().expect("agent").clone(),
        &TaskId::parse("t").expect("id"),
        &[1; 16],
    )
    .expect("ack");
    assert_eq!(s.m.observed.unacked(), 0);
}

/// The histories of tasks the core forgot are swept away, and a sweep
/// waits for as many launches as a quarter of the histories kept: with many
/// tasks known, sweeping every few thousand launches walked them all
/// again and again.
#[test]
fn forgotten_histories_are_swept_at_a_constant_cost_per_launch() {
    let (mut s, f) = Sim::with_task();
    s.run();
    let agent = s.m.agents.keys().next().expect("agent").clone();
    let t = TaskId::parse("t").expect("id");
    let id = |i: usize| TaskId::parse(&format!("gone-{i}")).expect("id");
    // Launches of tasks the core then forgot (never in its tables).
    for i in 0..3 * PRUNE_EVERY {
        s.m.note_task_added(&f, &id(i), &agent);
    }
    let kept = s.m.observed.history.len();
    assert!(kept <= PRUNE_EVERY + 1, "{kept} histories kept");
    assert!(
        s.m.observed.history.contains_key(&(f.clone(), t.clone())),
        "a known task keeps its history"
    );
    assert_eq!(s.m.observed.sweeps, 3);

    // 4 × PRUNE_EVERY tasks known: a sweep waits for a third as many
    // launches, not PRUNE_EVERY.
    let task = s.m.frameworks[&f].tasks[&t].clone();
    let known = 4 * PRUNE_EVERY;
    for i in 0..known {
        let tid = TaskId::parse(&format!("known-{i}")).expect("id");
        let mut more = (*task).clone();
        more.id = tid.clone();
        s.m.frameworks
            .get_mut(&f)
            .expect("framework")
            .tasks
            .insert(tid.clone(), Arc::new(more));
        s.m.note_task_added(&f, &tid, &agent);
    }
    s.m.prune_ops();
    let before = s.m.observed.sweeps;
    let due = (known + 1) / 3;
    for i in 0..due - 100 {
        s.m.note_task_added(&f, &id(i), &agent);
    }
    assert_eq!(
        s.m.observed.sweeps,
        before,
        "{} histories kept",
        s.m.observed.history.len()
    );
    for i in 0..200 {
        s.m.note_task_added(&f, &id(known + i), &agent);
    }
    assert_eq!(s.m.observed.sweeps, before + 1);
    let gone = (s.m.observed.history.keys())
        .filter(|(_, t)| t.as_str().starts_with("gone-"))
        .count();
    assert!(gone <= 200, "{gone} forgotten histories kept after a sweep");
    assert_eq!(
        s.m.observed.history.len(),
        known + 1 + gone,
        "every known task keeps its history"
    );
}

/// An agent whose host name does not resolve from the master is flagged in
/// the agents view (issue 21: it registered without a word), until a check
/// of that name succeeds; a problem with a name no agent has shows nowhere.
#[test]
fn an_unresolvable_agent_host_name_is_flagged() {
    let (mut s, _f) = Sim::with_task();
    s.run();
    let warnings = |s: &Sim| -> Vec<String> {
        let page = crate::core::view::agents(&s.m, None, 10, 0);
        page.items.into_iter().flat_map(|a| a.warnings).collect()
    };
    assert!(warnings(&s).is_empty());
    s.m.agent_host_checked("h".into(), Some("Name or service not known".into()));
    let w = warnings(&s);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("\"h\" does not resolve") && w[0].contains("Name or service"),
        "{w:?}"
    );
    s.m.agent_host_checked("h".into(), None);
    assert!(warnings(&s).is_empty());
    s.m.agent_host_checked("other".into(), Some("x".into()));
    assert!(warnings(&s).is_empty(), "not the agent's name");
}

/// Mesos' operator reads take a snapshot (a pointer per task and its
/// history) that later updates do not change; its tasks read back as they
/// were, with their history.
#[test]
fn a_mesos_snapshot_is_unchanged_by_later_updates() {
    let (mut s, f) = Sim::with_task();
    s.run();
    s.m.status_update(
        AGENT_CONN,
        f.clone(),
        status("t", TaskState::Running, 1),
        TaskState::Running,
        s.now,
    )
    .expect("running");
    let snap = crate::core::view::mesos_state(&s.m);
    s.m.status_update(
        AGENT_CONN,
        f.clone(),
        status("t", TaskState::Finished, 2),
        TaskState::Finished,
        s.now,
    )
    .expect("finished");
    let fw = snap
        .frameworks
        .iter()
        .find(|x| x.id == f.to_string())
        .expect("framework");
    let tasks: Vec<_> = fw.tasks.iter().collect();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].state, "TASK_RUNNING");
    let states: Vec<_> = tasks[0].statuses.iter().map(|e| e.state.as_ref()).collect();
    assert_eq!(states, ["TASK_STAGING", "TASK_RUNNING"]);
    // The core went on: its history has the end, a new snapshot shows it.
    let t = TaskId::parse("t").expect("id");
    assert_eq!(s.m.observed.history[&(f.clone(), t)].len(), 3);
    let now = crate::core::view::mesos_state(&s.m);
    let fw = now
        .frameworks
        .iter()
        .find(|x| x.id == f.to_string())
        .expect("framework");
    assert!(fw.tasks.iter().all(|t| t.state != "TASK_RUNNING"));
}
