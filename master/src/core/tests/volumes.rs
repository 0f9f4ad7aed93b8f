//! Persistent volumes in the core (issue 19): made of reserved disk by an
//! Accept's `create`, offered to their role while no task uses them,
//! mounted by one task at a time, destroyed only when free, and told to
//! their agent.

use mezzo_proto::ids::VolumeId;
use mezzo_proto::reservation::ReservedResources;

use super::*;
use crate::core::volumes::{NewVolume, new_volume};

const ENG_CONN: ConnId = 401;

fn create(id: &str, mib: u64) -> OfferOperation {
    OfferOperation::Create(vec![NewVolume {
        id: VolumeId::parse(id).expect("id"),
        disk: Resources::parse(&format!("disk:{mib}")).expect("disk"),
        role: None,
    }])
}

fn destroy(id: &str) -> OfferOperation {
    OfferOperation::Destroy(vec![VolumeId::parse(id).expect("id")])
}

/// A task that mounts `volume` at `data`.
fn launch_on(id: &str, volume: &str) -> OfferOperation {
    let mut l = launch(id, "cpus:1;mem:64");
    l.info.container = Some(Box::new(v1::ContainerInfo {
        mounts: vec![v1::Mount {
            container_path: "data".into(),
            volume_id: volume.into(),
            ..Default::default()
        }],
        ..Default::default()
    }));
    OfferOperation::Launch(l)
}

/// The outstanding offers to `fid` (one agent here) as one.
fn newest(s: &Sim, fid: &FrameworkId) -> Offered {
    let offers: Vec<v1::Offer> = offers_to(s, fid)
        .into_iter()
        .filter(|o| s.m.offers.contains_key(&oid(o)))
        .collect();
    assert!(!offers.is_empty(), "no outstanding offer");
    let mut r = ReservedResources::default();
    for o in &offers {
        r.add(&ReservedResources::from_proto(&o.resources).expect("resources"));
    }
    Offered {
        ids: offers.iter().map(oid).collect(),
        resources: r.to_string(),
        volumes: offers.into_iter().flat_map(|o| o.volumes).collect(),
    }
}

struct Offered {
    ids: Vec<OfferId>,
    resources: String,
    volumes: Vec<v1::Volume>,
}

/// The agent's latest list of volumes.
fn told(s: &Sim) -> Option<Vec<String>> {
    s.agent_msgs().into_iter().rev().find_map(|m| match m {
        v1::master_message::Message::Volumes(v) => Some(v.volumes.into_iter().map(|v| v.id).collect()),
        _ => None,
    })
}

/// An agent with 1000 MiB of disk, 500 of them reserved for `eng` by the
/// framework returned.
fn reserved() -> (Sim, AgentId, FrameworkId) {
    let mut s = Sim::new();
    let agent = s.agent(AGENT_CONN, "cpus:4;mem:1024;disk:1000");
    assert_eq!(told(&s), Some(vec![]), "a new agent is told it keeps no volumes");
    let eng = framework_in(&mut s, ENG_CONN, &["eng"]);
    let o = newest(&s, &eng);
    let r = "cpus(eng):1;mem(eng):64;disk(eng):500";
    let reserve = OfferOperation::Reserve(ReservedResources::parse(r).expect("r"));
    s.m.accept_operations(&eng, &o.ids, vec![reserve], None, s.now)
        .expect("reserve");
    s.run();
    assert_eq!(s.m.registry().reservations.get(&agent).map(String::as_str), Some(r));
    (s, agent, eng)
}

#[test]
fn a_volume_is_offered_while_free_mounted_by_one_task_and_destroyed_only_when_free() {
    let (mut s, agent, eng) = reserved();
    let o = newest(&s, &eng);
    assert!(o.resources.contains("disk(eng):500"), "{}", o.resources);
    s.m.accept_operations(&eng, &o.ids, vec![create("db-0", 400)], None, s.now)
        .expect("create");
    s.run();
    let rec = &s.m.registry().volumes[&agent][&VolumeId::parse("db-0").expect("id")];
    assert_eq!((rec.role.as_str(), rec.disk.disk.0), ("eng", 400));
    assert_eq!(told(&s), Some(vec!["db-0".to_owned()]));
    // Offered with what is left of the reservation, not as disk.
    let o = newest(&s, &eng);
    assert_eq!(o.volumes.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), ["db-0"]);
    assert_eq!(o.volumes[0].disk_mib, 400.0);
    assert!(o.resources.contains("disk(eng):100"), "{}", o.resources);
    let view = s.m.view(true);
    assert_eq!(view.volumes.len(), 1);
    assert!(view.volumes[0].used_by.is_none());

    s.m.accept_operations(&eng, &o.ids, vec![launch_on("t1", "db-0")], None, s.now)
        .expect("launch on the volume");
    s.run();
    let view = s.m.view(true);
    assert_eq!(view.volumes[0].used_by.as_ref().map(|u| u.task_id.as_str()), Some("t1"));
    // In use: in no offer, and a destroy names it in vain.
    let o = newest(&s, &eng);
    assert!(o.volumes.is_empty());
    let err =
        s.m.accept_operations(&eng, &o.ids, vec![destroy("db-0")], None, s.now)
            .expect_err("in use");
    assert!(err.to_string().contains("in use by task t1"), "{err}");
    let err =
        s.m.accept_operations(&eng, &o.ids, vec![launch_on("t2", "db-0")], None, s.now)
            .expect_err("in use");
    assert!(err.to_string().contains("in use by task t1"), "{err}");

    let end = v1::TaskStatus {
        framework_id: eng.to_string(),
        ..status("t1", TaskState::Finished, 1)
    };
    s.m.status_update(AGENT_CONN, eng.clone(), end, TaskState::Finished, s.now)
        .expect("update");
    s.run();
    s.m.decline(&eng, &o.ids, Some(Duration::ZERO), s.now).expect("decline");
    s.run();
    let o = newest(&s, &eng);
    assert_eq!(o.volumes.len(), 1, "free again, offered again");
    s.m.accept_operations(&eng, &o.ids, vec![destroy("db-0")], None, s.now)
        .expect("destroy");
    s.run();
    assert!(s.m.registry().volumes.is_empty());
    assert_eq!(told(&s), Some(vec![]));
    // Its disk is the role's reservation again.
    let o = newest(&s, &eng);
    assert!(o.resources.contains("disk(eng):500"), "{}", o.resources);
}

#[test]
fn bad_volume_operations_are_refused_and_change_nothing() {
    let (mut s, agent, eng) = reserved();
    let o = newest(&s, &eng);
    let cases = [
        (vec![create("v", 600)], "needs disk:600 of disk reserved for role eng"),
        (vec![create("v", 100), create("v", 100)], "already has a volume v"),
        (vec![launch_on("t", "nope")], "has no volume nope"),
        (vec![create("v", 100), launch_on("t", "v")], "created by this accept"),
        (vec![destroy("nope")], "has no volume nope"),
        (
            vec![OfferOperation::Create(vec![NewVolume {
                role: Some(Role::parse("web").expect("role")),
                ..new_volume(&v1::Volume {
                    id: "v".into(),
                    disk_mib: 100.0,
                    ..Default::default()
                })
                .expect("a volume")
            }])],
            "meant for role web, but the offer was made to role eng",
        ),
    ];
    for (ops, want) in cases {
        let err = s.m.accept_operations(&eng, &o.ids, ops, None, s.now).expect_err(want);
        assert!(err.to_string().contains(want), "{err} lacks {want}");
    }
    assert!(s.m.registry().volumes.is_empty());
    // The offer is still usable.
    s.m.accept_operations(&eng, &o.ids, vec![create("v", 100)], None, s.now)
        .expect("create");
    s.run();
    let o = newest(&s, &eng);
    let err =
        s.m.accept_operations(&eng, &o.ids, vec![create("v", 10)], None, s.now)
            .expect_err("same id");
    assert!(err.to_string().contains("already has a volume v"), "{err}");
    // One task at a time, even within one accept.
    let two = vec![launch_on("a", "v"), launch_on("b", "v")];
    let err =
        s.m.accept_operations(&eng, &o.ids, two, None, s.now)
            .expect_err("twice");
    assert!(
        err.to_string().contains("not among the volumes of these offers"),
        "{err}"
    );
    // Role * holds no volumes.
    let star = framework_in(&mut s, 402, &["*"]);
    s.m.decline(&eng, &o.ids, Some(Duration::from_secs(60)), s.now)
        .expect("decline");
    s.run();
    let so = newest(&s, &star);
    assert!(so.volumes.is_empty(), "another role's volume is not offered");
    let err =
        s.m.accept_operations(&star, &so.ids, vec![create("w", 1)], None, s.now)
            .expect_err("star");
    assert!(err.to_string().contains("role *"), "{err}");
    // Another role's volume is none of its business, not even by name.
    let err =
        s.m.accept_operations(&star, &so.ids, vec![destroy("v")], None, s.now)
            .expect_err("another role's");
    assert!(err.to_string().ends_with("has no volume v of role *"), "{err}");
    assert_eq!(s.m.registry().volumes[&agent].len(), 1);
}

/// [`reserved`] with a volume `db-0` that task `t1` mounts.
fn mounted() -> (Sim, AgentId, FrameworkId) {
    let (mut s, agent, eng) = reserved();
    let o = newest(&s, &eng);
    s.m.accept_operations(&eng, &o.ids, vec![create("db-0", 100)], None, s.now)
        .expect("create");
    s.run();
    let o = newest(&s, &eng);
    s.m.accept_operations(&eng, &o.ids, vec![launch_on("t1", "db-0")], None, s.now)
        .expect("launch");
    s.run();
    (s, agent, eng)
}

/// An agent that comes back is told its volumes after its tasks, and a
/// volume a reported task mounts stays in use.
#[test]
fn a_returning_agent_is_told_its_volumes_and_reported_users_keep_them() {
    let (mut s, agent, eng) = mounted();
    let info = s.agent_msgs().into_iter().rev().find_map(|m| match m {
        v1::master_message::Message::RunTask(r) => r.task,
        _ => None,
    });
    let info = info.expect("run task");
    s.m.agent_conn_closed(AGENT_CONN, s.now);
    s.sent.clear();
    let desc = AgentDescription {
        hostname: "h".into(),
        http_address: String::new(),
        resources: ReservedResources::parse("cpus:4;mem:1024;disk:1000").expect("res"),
        attributes: vec![],
    };
    let task = super::agent_types::ReportedTask {
        framework_id: eng.clone(),
        task_id: TaskId::parse("t1").expect("id"),
        resources: ReservedResources::from_proto(&info.resources).expect("res"),
        info,
        state: TaskState::Running,
        end_unacknowledged: false,
        launched_at: None,
        statuses: vec![],
    };
    let hello = AgentHello::Reregister {
        id: agent.clone(),
        info: desc,
        tasks: vec![task],
        complete: true,
        executors: Vec::new(),
    };
    s.m.agent_attach(AGENT_CONN + 1, hello, None, s.now).expect("attach");
    s.run();
    let msgs = s.agent_msgs();
    let registered = msgs
        .iter()
        .position(|m| matches!(m, v1::master_message::Message::Registered(_)));
    let volumes = msgs
        .iter()
        .position(|m| matches!(m, v1::master_message::Message::Volumes(_)));
    assert!(registered < volumes && registered.is_some(), "{msgs:?}");
    assert_eq!(told(&s), Some(vec!["db-0".to_owned()]));
    assert!(offers_to(&s, &eng).iter().all(|o| o.volumes.is_empty()), "still in use");
}

/// Mesos' RESERVE then CREATE in one Accept: the create takes its disk
/// from the reserve and reserves it itself, in one registry op.
#[test]
fn a_reserve_and_a_create_in_one_accept() {
    let mut s = Sim::new();
    let agent = s.agent(AGENT_CONN, "cpus:4;mem:1024;disk:1000");
    let eng = framework_in(&mut s, ENG_CONN, &["eng"]);
    let o = newest(&s, &eng);
    let reserve =
        OfferOperation::Reserve(ReservedResources::parse("cpus(eng):1;mem(eng):64;disk(eng):200").expect("r"));
    let err =
        s.m.accept_operations(&eng, &o.ids, vec![create("v", 150), reserve.clone()], None, s.now)
            .expect_err("create before its reserve");
    assert!(err.to_string().contains("by a reserve before it"), "{err}");
    s.m.accept_operations(&eng, &o.ids, vec![reserve, create("v", 150)], None, s.now)
        .expect("reserve and create");
    s.run();
    assert_eq!(
        s.m.registry().dynamic_reservations(&agent).to_string(),
        "cpus(eng):1;mem(eng):64;disk(eng):200"
    );
    assert!(s.m.registry().volumes[&agent].contains_key(&VolumeId::parse("v").expect("id")));
    let o = newest(&s, &eng);
    assert_eq!(o.volumes.len(), 1);
    assert!(
        o.resources.contains("disk:800;") && o.resources.contains("disk(eng):50"),
        "{}",
        o.resources
    );
}

/// A task on an unreachable agent may still run: its volume stays in use,
/// and an operator's destroy waits for the agent to be back.
#[test]
fn an_unreachable_task_keeps_its_volume_and_destroys_wait_for_the_agent() {
    let (mut s, agent, _) = mounted();
    s.m.agent_conn_closed(AGENT_CONN, s.now);
    s.advance(Duration::from_secs(6));
    s.advance(Duration::from_secs(6));
    let view = s.m.view(true);
    let t1 = view.tasks.iter().chain(&view.completed_tasks).find(|t| t.id == "t1");
    assert_eq!(t1.map(|t| &*t.state), Some("TASK_UNREACHABLE"));
    assert_eq!(view.volumes[0].used_by.as_ref().map(|u| u.task_id.as_str()), Some("t1"));
    let id = VolumeId::parse("db-0").expect("id");
    let err =
        s.m.policy(
            1,
            PolicyRequest::DestroyVolume {
                agent: agent.clone(),
                id: id.clone(),
            },
        )
        .expect_err("agent away");
    assert!(matches!(err, MasterError::AgentDisconnected(_)), "{err}");
    let err =
        s.m.policy(
            2,
            PolicyRequest::DestroyVolume {
                agent: agent.clone(),
                id: VolumeId::parse("nope").expect("id"),
            },
        )
        .expect_err("unknown");
    assert!(matches!(err, MasterError::UnknownVolume { .. }), "{err}");
    assert_eq!(s.m.registry().volumes[&agent].len(), 1);
}
