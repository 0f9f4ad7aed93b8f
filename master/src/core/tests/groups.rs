//! Task groups in the core (Mesos' LAUNCH_GROUP, `Launch.group`): a group
//! is launched all or nothing, with the rest of its Accept (DESIGN.md
//! "Offers": an invalid Accept launches nothing and leaves its offers
//! usable), and every task the agent is sent names its whole group.

use crate::runtime::Call;

use super::*;

fn executor(id: &str) -> v1::ExecutorInfo {
    v1::ExecutorInfo {
        executor_id: id.into(),
        command: Some(v1::CommandInfo {
            value: "./exec".into(),
            ..Default::default()
        }),
        resources: Resources::parse("cpus:0.25;mem:32").expect("res").to_proto(),
        ..Default::default()
    }
}

fn task(id: &str, res: &str, exec: Option<&v1::ExecutorInfo>) -> v1::TaskInfo {
    v1::TaskInfo {
        task_id: id.into(),
        resources: Resources::parse(res).expect("res").to_proto(),
        command: exec.is_none().then(|| v1::CommandInfo {
            value: "true".into(),
            ..Default::default()
        }),
        executor: exec.cloned().map(Box::new),
        ..Default::default()
    }
}

/// An Accept of `offer` launching `tasks` as one group, as the API
/// layer makes it.
fn accept_group(s: &mut Sim, f: &FrameworkId, offer: &OfferId, tasks: Vec<v1::TaskInfo>) -> Result<(), MasterError> {
    let req = v1::AcceptRequest {
        framework_id: f.to_string(),
        offer_ids: vec![offer.to_string()],
        operations: vec![v1::Operation {
            operation: Some(v1::operation::Operation::Launch(v1::Launch { tasks, group: true })),
        }],
        filters: None,
    };
    let Call::Accept {
        offers,
        operations,
        refuse,
    } = crate::api::scheduler::accept(req)?
    else {
        panic!("an accept");
    };
    s.m.accept_operations(f, &offers, operations, refuse, s.now)
}

fn run_tasks(s: &Sim) -> Vec<v1::TaskInfo> {
    s.agent_msgs()
        .into_iter()
        .filter_map(|m| match m {
            v1::master_message::Message::RunTask(r) => r.task,
            _ => None,
        })
        .collect()
}

#[test]
fn a_group_with_one_bad_task_launches_nothing_and_its_offer_stays_usable() {
    let mut s = Sim::new();
    let f = s.framework();
    s.agent(AGENT_CONN, "cpus:1;mem:512");
    let o = oid(&s.offers()[0]);
    let e = executor("e1");
    let too_big = vec![
        task("a", "cpus:0.25;mem:32", Some(&e)),
        task("b", "cpus:0.25;mem:32", Some(&e)),
        task("c", "cpus:2;mem:32", Some(&e)),
    ];
    let err = accept_group(&mut s, &f, &o, too_big).expect_err("beyond the offer");
    assert!(matches!(err, MasterError::BeyondOffer { .. }), "{err}");
    s.run();
    assert!(run_tasks(&s).is_empty(), "nothing of the group was sent");
    assert!(s.m.agents.values().all(|a| a.used.is_empty()), "nothing is held");
    // The same offer launches the group once it is valid: every task
    // names the whole group, in order, and the executor once.
    let group = vec![
        task("a", "cpus:0.25;mem:32", Some(&e)),
        task("b", "cpus:0.25;mem:32", Some(&e)),
        task("c", "cpus:0.25;mem:32", Some(&e)),
    ];
    accept_group(&mut s, &f, &o, group).expect("a valid group");
    s.run();
    let sent = run_tasks(&s);
    assert_eq!(sent.len(), 3);
    for t in &sent {
        let ids = t.group.as_ref().map(|g| g.task_ids.clone()).unwrap_or_default();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(t.executor.as_ref().map(|x| x.executor_id.as_str()), Some("e1"));
    }
    let used = s.m.agents.values().next().expect("agent").used.clone();
    assert_eq!(used, Resources::parse("cpus:1;mem:128").expect("res"));
}

#[test]
fn a_group_naming_a_known_task_id_launches_nothing() {
    let mut s = Sim::new();
    let f = s.framework();
    s.agent(AGENT_CONN, "cpus:2;mem:512");
    let o = oid(&s.offers()[0]);
    accept_group(&mut s, &f, &o, vec![task("a", "cpus:0.1", None)]).expect("a group of one");
    s.run();
    let o2 = oid(s.offers().last().expect("offer"));
    let twice = vec![task("b", "cpus:0.1", None), task("a", "cpus:0.1", None)];
    let err = accept_group(&mut s, &f, &o2, twice).expect_err("duplicate");
    assert!(matches!(err, MasterError::DuplicateTask(_)), "{err}");
    s.run();
    let ids: Vec<String> = run_tasks(&s).into_iter().map(|t| t.task_id).collect();
    assert_eq!(ids, ["a"], "only the first group's task was sent");
    let empty = accept_group(&mut s, &f, &o2, Vec::new()).expect_err("empty");
    assert!(empty.to_string().contains("at least one task"), "{empty}");
}
