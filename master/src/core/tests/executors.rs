//! Custom executors in the core (issue 18): an executor's resources are
//! taken from the offer with its first task and held until its agent says
//! it exited; later tasks must name the same executor; messages and
//! shutdowns go to the executor's agent; a re-registration rebuilds them.

use std::time::Duration;

use mezzo_proto::ids::ExecutorId;
use mezzo_proto::reservation::ReservedResources;

use super::*;
use crate::core::executors::ReportedExecutor;

fn executor(id: &str, cmd: &str) -> v1::ExecutorInfo {
    v1::ExecutorInfo {
        executor_id: id.into(),
        command: Some(v1::CommandInfo {
            value: cmd.into(),
            ..Default::default()
        }),
        resources: Resources::parse("cpus:0.25;mem:32").expect("res").to_proto(),
        ..Default::default()
    }
}

/// A task run by `exec`.
fn run_by(id: &str, exec: v1::ExecutorInfo) -> LaunchRequest {
    validate_task(v1::TaskInfo {
        task_id: id.into(),
        resources: Resources::parse("cpus:0.25;mem:64").expect("res").to_proto(),
        executor: Some(Box::new(exec)),
        ..Default::default()
    })
    .expect("valid task")
}

/// A framework, an agent of `res`, and task t1 run by executor e1 there.
fn with_executor(res: &str) -> (Sim, FrameworkId, AgentId) {
    let mut s = Sim::new();
    let f = s.framework();
    let a = s.agent(AGENT_CONN, res);
    let o = oid(&s.offers()[0]);
    s.m.accept(&f, &[o], vec![run_by("t1", executor("e1", "./a"))], None, s.now)
        .expect("accept");
    s.run();
    (s, f, a)
}

fn used(s: &Sim) -> Resources {
    s.m.agents.values().next().expect("agent").used.clone()
}

fn eid(id: &str) -> ExecutorId {
    ExecutorId::parse(id).expect("id")
}

#[test]
fn an_executors_resources_are_taken_once_with_its_first_task_and_freed_when_it_exits() {
    let mut s = Sim::new();
    let f = s.framework();
    let a = s.agent(AGENT_CONN, "cpus:2;mem:512");
    let o = oid(&s.offers()[0]);
    let e = executor("e1", "./exec");
    s.m.accept(&f, &[o], vec![run_by("t1", e.clone()), run_by("t2", e)], None, s.now)
        .expect("accept");
    s.run();
    // Two tasks and one executor.
    assert_eq!(used(&s), Resources::parse("cpus:0.75;mem:160").expect("res"));
    let sent: Vec<_> = s
        .agent_msgs()
        .into_iter()
        .filter_map(|m| match m {
            v1::master_message::Message::RunTask(r) => r.task,
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter()
            .all(|t| t.executor.as_ref().is_some_and(|x| x.executor_id == "e1"))
    );

    // A later task of the same executor takes only its own resources.
    let o = oid(s.offers().last().expect("offer"));
    s.m.accept(&f, &[o], vec![run_by("t3", executor("e1", "./exec"))], None, s.now)
        .expect("accept");
    s.run();
    assert_eq!(used(&s), Resources::parse("cpus:1;mem:224").expect("res"));

    // The executor exits: its resources are free, its framework told.
    let exited = v1::ExecutorExited {
        framework_id: f.to_string(),
        executor_id: "e1".into(),
        status: Some(0),
        message: "exited".into(),
    };
    s.m.executor_exited(AGENT_CONN, exited, s.now);
    s.run();
    assert_eq!(used(&s), Resources::parse("cpus:0.75;mem:192").expect("res"));
    let failure = s.events().into_iter().find_map(|e| match e {
        v1::event::Event::Failure(x) => Some(x),
        _ => None,
    });
    assert_eq!(
        failure,
        Some(v1::Failure {
            agent_id: a.to_string(),
            executor_id: "e1".into(),
            status: Some(0),
        })
    );
}

#[test]
fn a_task_naming_a_running_executor_with_another_info_is_refused_and_nothing_changes() {
    let mut s = Sim::new();
    let f = s.framework();
    s.agent(AGENT_CONN, "cpus:2;mem:512");
    let o = oid(&s.offers()[0]);
    let err =
        s.m.accept(
            &f,
            std::slice::from_ref(&o),
            vec![run_by("t1", executor("e1", "./a")), run_by("t2", executor("e1", "./b"))],
            None,
            s.now,
        )
        .expect_err("two infos for one executor");
    assert!(
        matches!(err, MasterError::Invalid(ref m) if m.contains("another ExecutorInfo")),
        "{err}"
    );
    assert_eq!(used(&s), Resources::default());
    // The offer is still usable.
    s.m.accept(&f, &[o], vec![run_by("t1", executor("e1", "./a"))], None, s.now)
        .expect("accept");
    s.run();
    let o = oid(s.offers().last().expect("offer"));
    let err =
        s.m.accept(&f, &[o], vec![run_by("t2", executor("e1", "./b"))], None, s.now)
            .expect_err("another info for a running executor");
    assert!(matches!(err, MasterError::Invalid(_)), "{err}");
}

#[test]
fn an_executor_that_does_not_fit_the_offer_refuses_its_task() {
    let mut s = Sim::new();
    let f = s.framework();
    s.agent(AGENT_CONN, "cpus:0.4;mem:512");
    let o = oid(&s.offers()[0]);
    // The task and its executor take 0.5 cpus together.
    let err =
        s.m.accept(&f, &[o], vec![run_by("t1", executor("e1", "./a"))], None, s.now)
            .expect_err("beyond the offer");
    assert!(matches!(err, MasterError::BeyondOffer { .. }), "{err}");
    assert_eq!(used(&s), Resources::default());
}

#[test]
fn messages_and_shutdowns_go_to_the_executors_agent_and_unknown_executors_are_refused() {
    let (mut s, f, a) = with_executor("cpus:2;mem:512");
    s.m.framework_message(&f, &a, &eid("e1"), b"hi".to_vec())
        .expect("message");
    s.m.shutdown_executor(&f, &a, &eid("e1")).expect("shutdown");
    let err =
        s.m.framework_message(&f, &a, &eid("nope"), b"hi".to_vec())
            .expect_err("unknown executor");
    assert!(matches!(err, MasterError::UnknownExecutor { .. }), "{err}");
    s.run();
    let msgs = s.agent_msgs();
    assert!(msgs.iter().any(|m| matches!(m,
        v1::master_message::Message::FrameworkMessage(x) if x.executor_id == "e1" && x.data == b"hi")));
    assert!(msgs.iter().any(|m| matches!(m,
        v1::master_message::Message::ShutdownExecutor(x) if x.executor_id == "e1")));
    // Still held until the agent says it exited.
    assert_eq!(used(&s), Resources::parse("cpus:0.5;mem:96").expect("res"));

    // The executor's message reaches its framework; a stranger's does not.
    for id in ["e1", "nope"] {
        let m = v1::ExecutorMessage {
            framework_id: f.to_string(),
            executor_id: id.into(),
            data: b"back".to_vec(),
        };
        s.m.executor_message(AGENT_CONN, m, s.now);
    }
    s.run();
    let got: Vec<_> = s
        .events()
        .into_iter()
        .filter_map(|e| match e {
            v1::event::Event::Message(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![v1::Message {
            agent_id: a.to_string(),
            executor_id: "e1".into(),
            data: b"back".to_vec(),
        }]
    );
}

#[test]
fn a_new_leader_holds_the_executors_an_agent_reports_and_frees_those_it_no_longer_runs() {
    let (mut s, f, a) = with_executor("cpus:1;mem:256");
    let running = |id: &str| ReportedExecutor {
        framework_id: f.clone(),
        executor_id: eid(id),
        info: executor(id, "./a"),
        resources: ReservedResources::parse("cpus:0.25;mem:32").expect("res"),
        role: "*".into(),
    };
    let info = AgentDescription {
        hostname: "h".into(),
        http_address: String::new(),
        resources: ReservedResources::parse("cpus:1;mem:256").expect("res"),
        attributes: vec![],
    };
    let mut task = super::reported(f.clone(), "t1", TaskState::Running);
    task.resources = ReservedResources::parse("cpus:0.25;mem:64").expect("res");
    // The agent comes back running e2 (started before a failover, say) but not e1.
    let hello = AgentHello::Reregister {
        id: a.clone(),
        info,
        tasks: vec![task],
        complete: true,
        executors: vec![running("e2")],
    };
    s.m.agent_attach(AGENT_CONN + 1, hello, None, s.now).expect("attach");
    s.run();
    let agent = s.m.agents.get(&a).expect("agent");
    assert!(agent.executors.contains_key(&(f.clone(), eid("e2"))));
    assert!(!agent.executors.contains_key(&(f.clone(), eid("e1"))));
    assert_eq!(used(&s), Resources::parse("cpus:0.5;mem:96").expect("res"));
    assert!(s.events().iter().any(|e| matches!(e,
        v1::event::Event::Failure(x) if x.executor_id == "e1")));
}

#[test]
fn a_removed_frameworks_executors_are_shut_down_with_it() {
    let (mut s, f, a) = with_executor("cpus:1;mem:256");
    s.m.teardown(&f).expect("teardown");
    s.run();
    let agent = s.m.agents.get(&a).expect("agent");
    assert!(agent.executors.is_empty());
    assert_eq!(agent.used, Resources::default());
    assert!(s.agent_msgs().iter().any(|m| matches!(m,
        v1::master_message::Message::ShutdownFramework(x) if x.framework_id == f.to_string())));
}

#[test]
fn the_edge_refuses_tasks_with_both_a_command_and_an_executor_and_bad_executors() {
    let mut t = run_by("t1", executor("e1", "./a")).info;
    t.command = Some(v1::CommandInfo {
        value: "true".into(),
        ..Default::default()
    });
    assert!(validate_task(t).is_err());
    for bad in [executor("", "./a"), executor("e/1", "./a"), executor("e1", "  ")] {
        let t = v1::TaskInfo {
            task_id: "t".into(),
            resources: Resources::parse("cpus:0.25").expect("res").to_proto(),
            executor: Some(Box::new(bad)),
            ..Default::default()
        };
        assert!(validate_task(t).is_err());
    }
    let mut isolated = executor("e1", "./a");
    isolated.labels.push(v1::Attribute {
        name: "mezzo.network".into(),
        value: "isolated".into(),
    });
    let t = v1::TaskInfo {
        task_id: "t".into(),
        resources: Resources::parse("cpus:0.25").expect("res").to_proto(),
        executor: Some(Box::new(isolated)),
        ..Default::default()
    };
    let err = validate_task(t).expect_err("isolated executor");
    assert!(err.to_string().contains("must reach its agent"), "{err}");
}

/// A task its executor runs has no container of its own: an image or a
/// volume given to it would be accepted and never made (a review found a
/// volume's data lost that way), so both are refused at the edge.
#[test]
fn the_edge_refuses_an_image_or_a_volume_on_a_task_an_executor_runs() {
    for container in [
        v1::ContainerInfo {
            mounts: vec![v1::Mount {
                container_path: "data".into(),
                volume_id: "v1".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
        v1::ContainerInfo {
            image: Some(v1::Image {
                reference: "docker.io/library/alpine:3.20".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    ] {
        let mut t = run_by("t1", executor("e1", "./a")).info;
        t.container = Some(Box::new(container));
        let err = validate_task(t).expect_err("refused");
        assert!(err.to_string().contains("runs in its executor's container"), "{err}");
    }
}

#[test]
fn an_executor_taken_from_a_reservation_is_reported_and_booked_back_as_taken() {
    let mut s = Sim::new();
    let f = s.framework_in(&["r"]);
    let a = s.agent(AGENT_CONN, "cpus(r):1;mem(r):256");
    let o = oid(&s.offers()[0]);
    s.m.accept(&f, &[o], vec![run_by("t1", executor("e1", "./a"))], None, s.now)
        .expect("accept");
    s.run();
    // The agent is told what the executor took, and for which role.
    let sent = s
        .agent_msgs()
        .into_iter()
        .find_map(|m| match m {
            v1::master_message::Message::RunTask(r) => r.task.and_then(|t| t.executor),
            _ => None,
        })
        .expect("a RunTask with its executor");
    assert_eq!(sent.allocation_role, "r");
    let taken = ReservedResources::from_proto(&sent.resources).expect("resources");
    assert_eq!(taken, ReservedResources::parse("cpus(r):0.25;mem(r):32").expect("res"));

    // The agent comes back with it as it was sent: booked the same, and
    // a task naming it as the framework does is still the same executor.
    let before = used(&s);
    let desc = AgentDescription {
        hostname: "h".into(),
        http_address: String::new(),
        resources: ReservedResources::parse("cpus(r):1;mem(r):256").expect("res"),
        attributes: vec![],
    };
    s.m.agent_conn_closed(AGENT_CONN, s.now);
    s.advance(Duration::from_secs(6));
    let mut task = super::reported(f.clone(), "t1", TaskState::Running);
    task.resources = ReservedResources::parse("cpus(r):0.25;mem(r):64").expect("res");
    task.info.allocation_role = "r".into();
    let hello = AgentHello::Reregister {
        id: a.clone(),
        info: desc,
        tasks: vec![task],
        complete: true,
        executors: vec![ReportedExecutor {
            framework_id: f.clone(),
            executor_id: eid("e1"),
            info: *sent,
            resources: taken,
            role: "r".into(),
        }],
    };
    s.m.agent_attach(AGENT_CONN + 1, hello, None, s.now).expect("attach");
    s.run();
    assert_eq!(used(&s), before);
    let o = oid(s.offers().last().expect("offer"));
    s.m.accept(&f, &[o], vec![run_by("t2", executor("e1", "./a"))], None, s.now)
        .expect("the same executor");
}

#[test]
fn an_executor_of_a_framework_removed_while_its_agent_was_away_is_shut_down() {
    let (mut s, f, a) = with_executor("cpus:1;mem:256");
    s.m.agent_conn_closed(AGENT_CONN, s.now);
    s.run();
    s.m.teardown(&f).expect("teardown");
    s.run();
    let desc = AgentDescription {
        hostname: "h".into(),
        http_address: String::new(),
        resources: ReservedResources::parse("cpus:1;mem:256").expect("res"),
        attributes: vec![],
    };
    let hello = AgentHello::Reregister {
        id: a.clone(),
        info: desc,
        tasks: Vec::new(),
        complete: true,
        executors: vec![ReportedExecutor {
            framework_id: f.clone(),
            executor_id: eid("e1"),
            info: executor("e1", "./a"),
            resources: ReservedResources::parse("cpus:0.25;mem:32").expect("res"),
            role: "*".into(),
        }],
    };
    let shutdowns = |s: &Sim| {
        s.agent_msgs()
            .iter()
            .filter(
                |m| matches!(m, v1::master_message::Message::ShutdownFramework(x) if x.framework_id == f.to_string()),
            )
            .count()
    };
    let before = shutdowns(&s);
    s.m.agent_attach(AGENT_CONN + 1, hello, None, s.now).expect("attach");
    s.run();
    assert_eq!(shutdowns(&s), before + 1);
    assert_eq!(used(&s), Resources::default());
}

#[test]
fn a_framework_with_only_an_executor_on_a_lost_agent_is_told() {
    let (mut s, f, a) = with_executor("cpus:1;mem:256");
    let t1 = mezzo_proto::ids::TaskId::parse("t1").expect("id");
    for (state, uuid) in [(TaskState::Running, 1), (TaskState::Finished, 2)] {
        s.m.status_update(AGENT_CONN, f.clone(), super::status("t1", state, uuid), state, s.now)
            .expect("update");
        s.m.acknowledge(&f, &a, &t1, &[uuid; 16]).expect("ack");
    }
    s.run();
    let failures = |s: &Sim| {
        s.events()
            .iter()
            .filter(|e| matches!(e, v1::event::Event::Failure(x) if x.executor_id.is_empty()))
            .count()
    };
    assert_eq!(failures(&s), 0);
    s.m.agent_conn_closed(AGENT_CONN, s.now);
    s.advance(Duration::from_secs(6));
    assert_eq!(failures(&s), 1);
    assert_eq!(used(&s), Resources::default());
}

#[test]
fn the_edge_refuses_executors_with_secrets_or_an_endless_shutdown_grace() {
    let task = |e: v1::ExecutorInfo| v1::TaskInfo {
        task_id: "t".into(),
        resources: Resources::parse("cpus:0.25").expect("res").to_proto(),
        executor: Some(Box::new(e)),
        ..Default::default()
    };
    let mut secret = executor("e1", "./a");
    if let Some(c) = secret.command.as_mut() {
        c.environment.push(v1::EnvVar {
            name: "K".into(),
            secret: "key".into(),
            ..Default::default()
        });
    }
    let err = validate_task(task(secret)).expect_err("a secret");
    assert!(err.to_string().contains("cannot take secrets"), "{err}");
    let mut slow = executor("e1", "./a");
    slow.shutdown_grace_period_ms = Some(10 * 3600 * 1000);
    let err = validate_task(task(slow)).expect_err("ten hours");
    assert!(err.to_string().contains("shutdown grace period"), "{err}");
}

#[test]
fn update_framework_sets_the_suppressed_roles_and_keeps_decline_filters() {
    let mut s = Sim::new();
    let f = s.framework_in(&["a", "b"]);
    let info = s.m.frameworks.get(&f).expect("framework").info.clone();
    s.agent(AGENT_CONN, "cpus:1;mem:256");
    let o = oid(&s.offers()[0]);
    s.m.decline(&f, &[o], Some(Duration::from_secs(60)), s.now)
        .expect("decline");
    s.run();
    let offered = s.offers().len();
    let role = |r: &str| mezzo_proto::reservation::Role::parse(r).expect("role");
    s.m.update_framework(&f, info.clone(), Some(vec![role("a")]))
        .expect("update");
    s.advance(Duration::from_secs(1));
    // The agent declined stays filtered: no new offer.
    assert_eq!(s.offers().len(), offered);
    let fw = s.m.frameworks.get(&f).expect("framework");
    assert_eq!(fw.suppressed_role_names(), vec!["a".to_owned()]);
    s.m.update_framework(&f, info, Some(Vec::new())).expect("update");
    assert!(s.m.frameworks.get(&f).expect("framework").suppressed_roles.is_empty());
}
