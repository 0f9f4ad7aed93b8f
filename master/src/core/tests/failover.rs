//! What a new leader knows of tasks and utilisation (issue 21: after a
//! failover, reasons were blank, exit codes null, histories empty, every
//! task launched at its agent's re-registration and the charts empty).
//! DESIGN.md "Durable state" and "Leadership": running tasks are rebuilt
//! from the agents' re-registrations, which carry each task's launch time
//! and status updates; ended ones from the registry's history; the charts'
//! samples from the registry.

use super::*;
use crate::core::view::{self, TaskFilter};

/// A new leader (a `Sim` on a fresh core) over the old one's registry.
fn new_leader(old: &Sim) -> Sim {
    let cfg = CoreConfig {
        agent_timeout: Duration::from_secs(5),
        ..CoreConfig::default()
    };
    Sim {
        m: Master::recover(cfg, old.m.registry().clone(), old.now),
        now: old.now,
        sent: Vec::new(),
    }
}

/// A status update as the agent sent it (`at`: its time).
fn update(task: &str, state: TaskState, uuid: u8, at: f64) -> v1::TaskStatus {
    v1::TaskStatus {
        timestamp: at,
        message: format!("{} at {at}", state.name()),
        reason: v1::StatusReason::ReasonCommandExited as i32,
        exit_code: state.is_terminal().then_some(3),
        ..status(task, state, uuid)
    }
}

/// The agent's update `st`, acknowledged by the framework.
fn deliver(s: &mut Sim, f: &FrameworkId, st: v1::TaskStatus) {
    let state = TaskState::from_proto(st.state).expect("state");
    let (tid, uuid) = (TaskId::parse(&st.task_id).expect("id"), st.uuid.clone());
    s.m.status_update(AGENT_CONN, f.clone(), st, state, s.now)
        .expect("update");
    let agent = agent_id(s);
    s.m.acknowledge(f, &agent, &tid, &uuid).expect("ack");
    s.run();
}

fn listed(m: &Master, f: &FrameworkId, id: &str) -> view::TaskView {
    let q = TaskFilter {
        framework: Some(f.to_string()),
        ..Default::default()
    };
    let page = view::tasks(m, &q.check().expect("query"));
    let mut hits = page.items.into_iter().filter(|t| t.id == id);
    let t = hits.next().unwrap_or_else(|| panic!("{id} not listed"));
    assert!(hits.next().is_none(), "{id} listed twice");
    t
}

fn history(m: &Master, f: &FrameworkId, id: &str) -> Vec<(String, f64)> {
    let t = view::task(m, f, &TaskId::parse(id).expect("id"), true).expect("task");
    t.history.into_iter().map(|e| (e.state.into_owned(), e.at)).collect()
}

/// A task as its agent reports it, with its launch time and statuses.
fn reported_with(
    f: &FrameworkId,
    id: &str,
    state: TaskState,
    launched_at: f64,
    statuses: Vec<v1::TaskStatus>,
) -> agent::ReportedTask {
    agent::ReportedTask {
        launched_at: Some(launched_at),
        statuses,
        ..reported(f.clone(), id, state)
    }
}

/// A running task keeps its launch time, latest status and history; a task
/// that ended (and was acknowledged) in the last second before the old
/// leader died, so that its end never reached the registry, keeps its
/// reason, message and exit code, and the history records them.
#[test]
fn a_new_leader_takes_launch_times_statuses_and_histories_from_the_agents() {
    let (mut old, f) = Sim::with_task();
    let a = agent_id(&old);
    let launched_at = listed(&old.m, &f, "t").launched_at;
    let (starting, running) = (
        update("t", TaskState::Starting, 1, 10.0),
        update("t", TaskState::Running, 2, 11.0),
    );
    deliver(&mut old, &f, starting.clone());
    deliver(&mut old, &f, running.clone());

    let mut s = new_leader(&old);
    let ended = update("done", TaskState::Failed, 3, 20.0);
    let tasks = vec![
        reported_with(&f, "t", TaskState::Running, launched_at, vec![starting, running]),
        reported_with(
            &f,
            "done",
            TaskState::Failed,
            5.0,
            vec![update("done", TaskState::Running, 4, 6.0), ended],
        ),
    ];
    reregister_reported(&mut s, AGENT_CONN + 1, &a, tasks, true);

    let t = listed(&s.m, &f, "t");
    assert_eq!(t.launched_at, launched_at, "not the re-registration's time");
    assert_eq!(
        (t.state.as_ref(), t.message.as_str()),
        ("TASK_RUNNING", "TASK_RUNNING at 11")
    );
    assert_eq!(
        history(&s.m, &f, "t"),
        [
            ("TASK_STAGING".to_owned(), launched_at),
            ("TASK_STARTING".to_owned(), 10.0),
            ("TASK_RUNNING".to_owned(), 11.0)
        ]
    );

    let done = listed(&s.m, &f, "done");
    assert_eq!(
        (done.state.as_ref(), done.reason.as_str(), done.exit_code),
        ("TASK_FAILED", "REASON_COMMAND_EXITED", Some(3))
    );
    assert_eq!((done.launched_at, done.ended_at), (5.0, Some(20.0)));
    assert_eq!(history(&s.m, &f, "done").len(), 3);
    s.advance(Duration::from_millis(1100));
    let ring = &s.m.registry().history.tasks[&f];
    let rec = ring.iter().find(|r| r.id.as_str() == "done").expect("recorded");
    assert_eq!(
        (
            rec.reason.as_str(),
            rec.message.as_str(),
            rec.exit_code,
            rec.launched_at,
            rec.ended_at
        ),
        ("REASON_COMMAND_EXITED", "TASK_FAILED at 20", Some(3), 5.0, 20.0)
    );
}

/// An ended task the new leader knows only from the registry keeps its
/// reason, message and exit code, and shows its launch and end as its
/// history; its agent's report of it (the acknowledgement that reached the
/// old leader had not reached the agent) neither makes it active again
/// nor lists it twice.
#[test]
fn an_ended_task_from_the_registry_keeps_its_outcome_and_shows_a_history() {
    let (mut old, f) = Sim::with_task();
    let a = agent_id(&old);
    let mut end = update("t", TaskState::Failed, 1, 30.0);
    end.message = "exited with status 3".into();
    deliver(&mut old, &f, end.clone());
    old.advance(Duration::from_millis(1100));

    let mut s = new_leader(&old);
    let t = listed(&s.m, &f, "t");
    assert_eq!(
        (t.reason.as_str(), t.message.as_str(), t.exit_code),
        ("REASON_COMMAND_EXITED", "exited with status 3", Some(3))
    );
    let ended_at = t.ended_at.expect("ended");
    assert_eq!(
        history(&s.m, &f, "t"),
        [
            ("TASK_STAGING".to_owned(), t.launched_at),
            ("TASK_FAILED".to_owned(), ended_at)
        ]
    );

    let mut unacked = reported_with(&f, "t", TaskState::Failed, t.launched_at, vec![end.clone()]);
    unacked.end_unacknowledged = true;
    reregister_reported(&mut s, AGENT_CONN + 1, &a, vec![unacked], true);
    assert!(s.m.view(true).tasks.is_empty(), "not active again");
    assert_eq!(listed(&s.m, &f, "t").exit_code, Some(3));
    // The agent resends the end; it reaches the framework, whose
    // acknowledgement reaches the agent.
    s.resubscribe(FW_CONN + 1, &f);
    s.m.status_update(AGENT_CONN + 1, f.clone(), end, TaskState::Failed, s.now)
        .expect("resent update");
    s.run();
    assert_eq!(s.updates().last().map(|u| u.exit_code), Some(Some(3)));
    s.m.acknowledge(&f, &a, &TaskId::parse("t").expect("id"), &[1; 16])
        .expect("ack");
    s.run();
    assert_eq!(s.acks_forwarded(), 1);
}

/// A new leader adopts one agent's tasks of several frameworks at once
/// (gathered per agent, issue 17): the agent's use, each framework's
/// allocation and the allocator's (no offer of the cpus the tasks hold)
/// come out as they would one task at a time.
#[test]
fn a_new_leader_adopts_the_tasks_of_several_frameworks_on_one_agent() {
    let (mut old, f) = Sim::with_task();
    let a = agent_id(&old);
    let info = v1::FrameworkInfo {
        name: "g".into(),
        failover_timeout_secs: 60.0,
        ..Default::default()
    };
    old.m
        .subscribe(FW_CONN + 7, info, None, Vec::new(), old.now)
        .expect("subscribe");
    old.run();
    let g = old.m.frameworks.keys().find(|k| **k != f).expect("g").clone();

    let mut s = new_leader(&old);
    let tasks = vec![
        (f.clone(), "t", TaskState::Running),
        (g.clone(), "u", TaskState::Running),
        (f.clone(), "done", TaskState::Finished),
    ];
    reregister_with(&mut s, AGENT_CONN + 1, &a, tasks, true);
    let view = s.m.view(true);
    assert_eq!(view.agents[0].used.cpus.0, 1000, "two running tasks of 0.5 cpus");
    let allocated = |id: &FrameworkId| {
        let fw = view.frameworks.iter().find(|x| x.id == id.to_string());
        fw.map(|x| x.allocated.cpus.0)
    };
    assert_eq!((allocated(&f), allocated(&g)), (Some(500), Some(500)));
    s.resubscribe(FW_CONN + 1, &f);
    s.resubscribe(FW_CONN + 2, &g);
    s.advance(Duration::from_secs(1));
    let offers = s.offers();
    assert!(!offers.is_empty(), "the agent's memory is offered");
    let cpus: f64 = offers
        .iter()
        .flat_map(|o| &o.resources)
        .filter(|r| r.name == "cpus")
        .map(|r| r.scalar)
        .sum();
    assert_eq!(cpus, 0.0, "the cpus the tasks hold were offered");
}

/// An agent that does not report launch times or statuses (an older
/// agent) still re-registers; its tasks are launched at its return.
#[test]
fn an_agent_without_launch_times_still_reregisters() {
    let (old, f) = Sim::with_task();
    let a = agent_id(&old);
    let mut s = new_leader(&old);
    reregister(&mut s, AGENT_CONN + 1, &a, vec![(f.clone(), "t", TaskState::Running)]);
    let t = listed(&s.m, &f, "t");
    assert!(t.launched_at > 0.0);
    assert!(history(&s.m, &f, "t").is_empty());
}

/// The utilisation charts' samples are taken every 10 s and reach the
/// registry six at a time; a new leader goes on from them, and takes none
/// while agents may still re-register.
#[test]
fn utilisation_samples_survive_a_failover() {
    let (mut old, f) = Sim::with_task();
    let a = agent_id(&old);
    old.run();
    for _ in 0..70 {
        old.m.agent_heartbeat(AGENT_CONN, old.now);
        old.advance(Duration::from_secs(1));
    }
    assert_eq!(old.m.registry().history.samples.len(), 6, "batched");
    let samples = view::samples(&old.m);
    assert_eq!(samples.len(), 7);
    assert_eq!((samples[0].cpus_total, samples[0].cpus_allocated), (1.0, 0.5));
    assert_eq!(samples[0].active_tasks, 1);

    let mut s = new_leader(&old);
    s.advance(crate::core::samples::SAMPLE_EVERY);
    assert_eq!(
        view::samples(&s.m),
        old.m.registry().history.samples.iter().cloned().collect::<Vec<_>>()
    );
    reregister(&mut s, AGENT_CONN + 1, &a, vec![(f, "t", TaskState::Running)]);
    s.advance(Duration::from_millis(10));
    let samples = view::samples(&s.m);
    assert_eq!(samples.len(), 7);
    assert_eq!(samples[6].cpus_allocated, 0.5);
}

/// The registry keeps one hour of samples.
#[test]
fn the_registry_keeps_an_hour_of_samples() {
    let mut r = Registry::default();
    let sample = |at: f64| crate::history::Sample {
        at,
        cpus_total: 1.0,
        cpus_allocated: 0.0,
        cpus_offered: 0.0,
        mem_total: 0,
        mem_allocated: 0,
        mem_offered: 0,
        disk_total: 0,
        disk_allocated: 0,
        active_tasks: 0,
    };
    for batch in 0..70 {
        let samples = (0..6).map(|i| sample((batch * 6 + i) as f64)).collect();
        r.apply(&RegistryOp::RecordSamples { samples });
    }
    assert_eq!(r.history.samples.len(), crate::history::SAMPLES_KEPT);
    assert_eq!(r.history.samples.front().map(|s| s.at), Some(60.0));
}

/// A framework keeps its registration time over a failover and over a
/// change of its info (every framework showed as registered at the
/// failover before).
#[test]
fn a_framework_keeps_its_registration_time() {
    let mut s = Sim::new();
    let f = s.framework();
    let at = s.m.frameworks[&f].registered_at;
    std::thread::sleep(Duration::from_millis(5));
    let info = v1::FrameworkInfo {
        name: "f".into(),
        failover_timeout_secs: 120.0,
        ..Default::default()
    };
    s.m.subscribe(FW_CONN + 1, info, Some(f.clone()), Vec::new(), s.now)
        .expect("resubscribe");
    s.run();
    let n = new_leader(&s);
    assert_eq!(
        n.m.frameworks[&f].info.failover_timeout_secs, 120.0,
        "the change committed"
    );
    assert_eq!(n.m.frameworks[&f].registered_at, at);
}

/// Issue 17: a new leader gives the agents it recovered
/// `agent_reregister_timeout`, not one agent's silence, to come back: at
/// 40,000 agents the late ones were marked unreachable while they queued
/// to re-register, and the frameworks' streams overflowed with the news.
/// An agent that came back and then fell silent has the usual limit.
#[test]
fn recovered_agents_have_the_reregister_timeout_to_come_back() {
    let (mut old, _f) = Sim::with_task();
    let second = old.agent(AGENT_CONN + 1, "cpus:1;mem:256");
    let first = old.m.agents.keys().find(|id| **id != second).cloned().expect("agent");
    let mut s = new_leader(&old);
    let limit = s.m.cfg.agent_reregister_timeout;
    assert!(limit > s.m.agent_silence_limit() * 2, "the test needs a longer limit");
    let marked = |s: &Sim, id: &AgentId| s.m.agents[id].status == AgentStatus::Unreachable;

    reregister(&mut s, AGENT_CONN + 1, &second, vec![]);
    s.advance(s.m.agent_silence_limit() + Duration::from_secs(1));
    assert!(marked(&s, &second), "a re-registered agent gone silent was not marked");
    assert!(
        !marked(&s, &first),
        "a recovering agent was marked after one agent's silence"
    );
    assert_eq!(s.m.agents[&first].status, AgentStatus::Recovering);

    s.advance(limit);
    assert!(
        marked(&s, &first),
        "a recovering agent never came back and was not marked"
    );
}

/// Issue 17: an agent that came back to a new leader and lost its stream
/// again while other agents are still to come back has the re-registration
/// timeout too (it queues behind them); once every agent is back, one
/// agent's silence again.
#[test]
fn an_agent_disconnected_during_the_takeover_has_as_long_to_come_back() {
    let (mut old, _f) = Sim::with_task();
    let second = old.agent(AGENT_CONN + 1, "cpus:1;mem:256");
    let first = old.m.agents.keys().find(|id| **id != second).cloned().expect("agent");
    let mut s = new_leader(&old);
    let silence = s.m.agent_silence_limit();
    assert!(
        s.m.cfg.agent_reregister_timeout > silence * 2,
        "the test needs a longer limit"
    );
    let marked = |s: &Sim, id: &AgentId| s.m.agents[id].status == AgentStatus::Unreachable;

    reregister(&mut s, AGENT_CONN + 1, &second, vec![]);
    s.m.agent_conn_closed(AGENT_CONN + 1, s.now);
    s.advance(silence * 2);
    assert!(
        !marked(&s, &second),
        "marked after one agent's silence while another was still to come back"
    );
    reregister(&mut s, AGENT_CONN + 2, &second, vec![]);

    // Every agent back: a disconnected one has one agent's silence.
    reregister(&mut s, AGENT_CONN, &first, vec![]);
    s.m.agent_conn_closed(AGENT_CONN + 2, s.now);
    s.advance(silence + Duration::from_secs(1));
    assert!(
        marked(&s, &second),
        "a disconnected agent was not marked after the takeover"
    );
}
