//! DESIGN.md "Tasks": a state tells the truth about what is known. The
//! master's part: tasks an agent came back without, and updates for tasks
//! it has already completed.

use super::*;

/// An agent whose task list is complete never received a task it came
/// back without: DROPPED, safe to launch again.
#[test]
fn reregistration_without_a_task_drops_it_when_complete() {
    let (mut s, f) = Sim::with_task();
    let a = agent_id(&s);
    s.m.agent_conn_closed(AGENT_CONN, s.now);
    reregister_with(&mut s, AGENT_CONN + 1, &a, vec![], true);
    let last = s.updates().pop().expect("update");
    assert_eq!(last.task_id, "t");
    assert_eq!(last.state, v1::TaskState::TaskDropped as i32);
    assert_eq!(last.reason, v1::StatusReason::ReasonAgentReregistered as i32);
    assert!(last.message.contains("never started"), "{}", last.message);
    let view = s.m.view(true);
    assert!(view.tasks.is_empty());
    assert_eq!(view.frameworks[0].allocated, Resources::default());
    let _ = f;
}

/// An agent that lost its checkpoints cannot say the task never ran: LOST.
#[test]
fn reregistration_after_lost_checkpoints_loses_it() {
    let (mut s, _f) = Sim::with_task();
    let a = agent_id(&s);
    s.m.agent_conn_closed(AGENT_CONN, s.now);
    reregister_with(&mut s, AGENT_CONN + 1, &a, vec![], false);
    let last = s.updates().pop().expect("update");
    assert_eq!(last.state, v1::TaskState::TaskLost as i32);
    assert_eq!(last.reason, v1::StatusReason::ReasonAgentRestarted as i32);
    assert!(last.message.contains("may have run"), "{}", last.message);
}

/// The agent's own DROPPED (recovery found the task never started) is
/// adopted on re-registration and forwarded when the agent sends it.
#[test]
fn an_agent_reported_drop_reaches_the_framework() {
    let (mut s, f) = Sim::with_task();
    let a = agent_id(&s);
    s.m.agent_conn_closed(AGENT_CONN, s.now);
    reregister_with(
        &mut s,
        AGENT_CONN + 1,
        &a,
        vec![(f.clone(), "t", TaskState::Dropped)],
        true,
    );
    assert_eq!(s.m.view(true).frameworks[0].allocated, Resources::default());
    s.m.status_update(
        AGENT_CONN + 1,
        f.clone(),
        status("t", TaskState::Dropped, 7),
        TaskState::Dropped,
        s.now,
    )
    .expect("update");
    s.run();
    let last = s.updates().pop().expect("update");
    assert_eq!(last.state, v1::TaskState::TaskDropped as i32);
    let t = TaskId::parse("t").expect("id");
    s.m.acknowledge(&f, &a, &t, &[7; 16]).expect("ack");
    s.run();
    assert!(s.m.view(true).tasks.is_empty(), "completed once acknowledged");
}

/// Bug of issue 16: after a failover, a task whose terminal update was
/// still pending at its agent is adopted as completed; the update the agent
/// then resends must reach the framework and be acknowledged, not be
/// refused forever.
#[test]
fn a_pending_terminal_update_after_failover_reaches_the_framework() {
    let mut s = Sim::new();
    let f = s.framework();
    let a = s.agent(AGENT_CONN, "cpus:1;mem:256");
    // A new leader learns of the ended task from the agent's re-registration.
    reregister_with(
        &mut s,
        AGENT_CONN + 1,
        &a,
        vec![(f.clone(), "done", TaskState::Failed)],
        true,
    );
    let before = s.updates().len();
    s.m.status_update(
        AGENT_CONN + 1,
        f.clone(),
        status("done", TaskState::Failed, 9),
        TaskState::Failed,
        s.now,
    )
    .expect("a resent update of a completed task is accepted");
    s.run();
    let updates = s.updates();
    assert_eq!(updates.len(), before + 1, "forwarded");
    assert_eq!(updates[before].uuid, vec![9; 16]);
    let acks = s.acks_forwarded();
    let done = TaskId::parse("done").expect("id");
    s.m.acknowledge(&f, &a, &done, &[9; 16]).expect("ack");
    s.run();
    assert_eq!(s.acks_forwarded(), acks + 1, "the agent is told and stops resending");
    // Still refused from an agent the task never ran on.
    s.agent(AGENT_CONN + 7, "cpus:1;mem:256");
    let err =
        s.m.status_update(
            AGENT_CONN + 7,
            f,
            status("done", TaskState::Failed, 9),
            TaskState::Failed,
            s.now,
        )
        .expect_err("refused");
    assert!(matches!(err, MasterError::Denied(_)), "{err}");
}

/// Reconciling a task the master does not know, on an agent that has come
/// back: DROPPED if the agent's list was complete (it never received the
/// task), LOST if it had lost its checkpoints.
#[test]
fn reconcile_unknown_task_on_a_complete_agent_is_dropped() {
    for (complete, state) in [(true, v1::TaskState::TaskDropped), (false, v1::TaskState::TaskLost)] {
        let mut s = Sim::new();
        let f = s.framework();
        let a = s.agent(AGENT_CONN, "cpus:1;mem:256");
        reregister_with(&mut s, AGENT_CONN + 1, &a, vec![], complete);
        let ghost = TaskId::parse("ghost").expect("id");
        s.m.reconcile(&f, &[(ghost, Some(a))]).expect("reconcile");
        s.run();
        let last = s.updates().pop().expect("an answer");
        assert_eq!(
            (last.state, last.reason),
            (state as i32, v1::StatusReason::ReasonReconciliation as i32),
            "complete: {complete}"
        );
    }
}

/// A7 of the plan for issue 16: a framework resubscribing to a new leader
/// asks for all its tasks; while an agent known before the failover may
/// still bring tasks back, the answer would be incomplete (and a batch
/// framework would launch again what still runs), so the master says to
/// ask again; once every agent is back, the answers end with Reconciled.
#[test]
fn implicit_reconcile_waits_for_recovering_agents() {
    let (mut s, f) = Sim::with_task();
    let a = agent_id(&s);
    let cfg = CoreConfig {
        agent_timeout: Duration::from_secs(5),
        ..CoreConfig::default()
    };
    s.m = Master::recover(cfg, s.m.registry().clone(), s.now);
    s.sent.clear();
    s.resubscribe(FW_CONN + 1, &f);
    let err = s.m.reconcile(&f, &[]).expect_err("an agent is still recovering");
    assert!(matches!(err, MasterError::AgentsRecovering), "{err}");
    reregister_with(
        &mut s,
        AGENT_CONN + 1,
        &a,
        vec![(f.clone(), "t", TaskState::Running)],
        true,
    );
    s.m.reconcile(&f, &[]).expect("reconcile");
    s.run();
    let events = s.events();
    let n = events.len();
    assert!(matches!(events[n - 1], v1::event::Event::Reconciled(_)), "{events:?}");
    assert!(
        matches!(&events[n - 2], v1::event::Event::Update(u) if u.status.as_ref().is_some_and(|st| st.task_id == "t")),
        "{events:?}"
    );
}

/// Found by the fault soak: a batch framework restarted while its task
/// ended on an agent that had lost the leader. The agent came back to the
/// new leader first, with the end not yet acknowledged; the implicit
/// reconciliation must report that end (it answered nothing, and the
/// framework launched the finished task again).
#[test]
fn implicit_reconcile_reports_ends_not_yet_acknowledged() {
    let (mut s, f) = Sim::with_task();
    let a = agent_id(&s);
    s.m = Master::recover(CoreConfig::default(), s.m.registry().clone(), s.now);
    s.sent.clear();
    let mut ended = reported(f.clone(), "t", TaskState::Finished);
    ended.end_unacknowledged = true;
    let acked = reported(f.clone(), "older", TaskState::Finished);
    reregister_reported(&mut s, AGENT_CONN + 1, &a, vec![acked, ended], true);
    s.resubscribe(FW_CONN + 1, &f);
    s.m.reconcile(&f, &[]).expect("reconcile");
    s.run();
    let answers: Vec<(String, i32)> = s
        .events()
        .iter()
        .filter_map(|e| match e {
            v1::event::Event::Update(u) => u.status.as_ref().map(|st| (st.task_id.clone(), st.state)),
            _ => None,
        })
        .collect();
    assert_eq!(answers, vec![("t".to_owned(), v1::TaskState::TaskFinished as i32)]);
    // Active until the agent's resent end is acknowledged, then completed.
    let t = TaskId::parse("t").expect("id");
    assert!(s.m.frameworks[&f].tasks.contains_key(&t));
    let resent = status("t", TaskState::Finished, 9);
    s.m.status_update(AGENT_CONN + 1, f.clone(), resent, TaskState::Finished, s.now)
        .expect("the resent end is taken");
    s.m.acknowledge(&f, &a, &t, &[9; 16]).expect("ack");
    s.run();
    assert!(!s.m.frameworks[&f].tasks.contains_key(&t));
    assert!(s.m.frameworks[&f].completed_by_id.contains_key(&t));
}
