//! Conformance of the Mesos JSON Mezzo reads and writes: field names and
//! shapes as Mesos' protos give them (`include/mesos/v1/mesos.proto`,
//! `scheduler/scheduler.proto`), for every call and event served.

use mezzo_proto::v1;
use serde_json::{Value, json};

use super::convert::{self, Format};
use super::types as m;

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    k.sort_unstable();
    k
}

fn to_json<T: serde::Serialize>(x: &T) -> Value {
    serde_json::to_value(x).expect("serializable")
}

fn call(v: Value) -> m::Call {
    serde_json::from_value(v).expect("a Mesos call")
}

fn reserved(name: &str, scalar: f64, role: &str, principal: &str) -> v1::Resource {
    v1::Resource {
        name: name.into(),
        scalar,
        role: role.into(),
        reservation_principal: principal.into(),
        ..Default::default()
    }
}

#[test]
fn resources_are_written_in_the_format_the_framework_asked_for() {
    let plain = Format::default();
    let refined = Format {
        refinement: true,
        multi_role: true,
        ..Default::default()
    };
    let unreserved = reserved("cpus", 2.0, "", "");
    let dynamic = reserved("mem", 64.0, "eng", "user:alice");
    let fixed = reserved("disk", 10.0, "eng", "");
    let ports = v1::Resource {
        name: "ports".into(),
        ranges: vec![v1::Range {
            begin: 31000,
            end: 31009,
        }],
        ..Default::default()
    };
    // Pre-refinement: `role`, and `reservation` for a dynamic one.
    assert_eq!(
        to_json(&convert::resource_out(&unreserved, plain, "eng")),
        json!({ "name": "cpus", "type": "SCALAR", "scalar": { "value": 2.0 }, "role": "*" })
    );
    assert_eq!(
        to_json(&convert::resource_out(&dynamic, plain, "eng")),
        json!({ "name": "mem", "type": "SCALAR", "scalar": { "value": 64.0 }, "role": "eng",
                "reservation": { "principal": "user:alice" } })
    );
    assert_eq!(
        to_json(&convert::resource_out(&fixed, plain, "eng")),
        json!({ "name": "disk", "type": "SCALAR", "scalar": { "value": 10.0 }, "role": "eng" })
    );
    assert_eq!(
        to_json(&convert::resource_out(&ports, plain, "")),
        json!({ "name": "ports", "type": "RANGES", "ranges": { "range": [{ "begin": 31000, "end": 31009 }] }, "role": "*" })
    );
    // Post-refinement with MULTI_ROLE: the reservation stack and the
    // allocation role, no `role`.
    assert_eq!(
        to_json(&convert::resource_out(&unreserved, refined, "eng")),
        json!({ "name": "cpus", "type": "SCALAR", "scalar": { "value": 2.0 }, "allocation_info": { "role": "eng" } })
    );
    assert_eq!(
        to_json(&convert::resource_out(&dynamic, refined, "eng")),
        json!({ "name": "mem", "type": "SCALAR", "scalar": { "value": 64.0 },
                "reservations": [{ "type": "DYNAMIC", "role": "eng", "principal": "user:alice" }],
                "allocation_info": { "role": "eng" } })
    );
    assert_eq!(
        to_json(&convert::resource_out(&fixed, refined, "eng"))["reservations"],
        json!([{ "type": "STATIC", "role": "eng" }])
    );
}

#[test]
fn resources_are_read_in_either_format_and_what_mezzo_lacks_is_refused() {
    let read = |v: Value| convert::resource_in(&serde_json::from_value(v).expect("a resource"));
    let r = read(json!({ "name": "cpus", "type": "SCALAR", "scalar": { "value": 1.5 }, "role": "*" })).expect("ok");
    assert_eq!((r.scalar, r.role.as_str()), (1.5, ""));
    let r = read(
        json!({ "name": "mem", "type": "SCALAR", "scalar": { "value": 8 }, "role": "eng",
                         "reservation": { "principal": "p" } }),
    )
    .expect("ok");
    assert_eq!((r.role.as_str(), r.reservation_principal.as_str()), ("eng", "p"));
    let r = read(json!({ "name": "mem", "type": "SCALAR", "scalar": { "value": 8 },
                         "reservations": [{ "type": "DYNAMIC", "role": "a", "principal": "p" },
                                          { "type": "DYNAMIC", "role": "a/b", "principal": "q" }],
                         "allocation_info": { "role": "a/b" } }))
    .expect("ok");
    assert_eq!((r.role.as_str(), r.reservation_principal.as_str()), ("a/b", "q"));
    let r = read(json!({ "name": "ports", "type": "RANGES", "ranges": { "range": [{ "begin": 1, "end": 2 }] } }))
        .expect("ok");
    assert_eq!(r.ranges, vec![v1::Range { begin: 1, end: 2 }]);
    for (bad, says) in [
        (json!({ "name": "x", "type": "SET", "set": { "item": ["a"] } }), "SET"),
        (json!({ "name": "x", "type": "TEXT" }), "TEXT"),
        (json!({ "name": "x", "type": "SCALAR" }), "without `scalar`"),
        (json!({ "name": "x", "type": "RANGES" }), "without `ranges`"),
        (json!({ "name": "x", "type": "BLOB" }), "unknown type"),
        (
            json!({ "name": "disk", "type": "SCALAR", "scalar": { "value": 1 },
                 "disk": { "persistence": { "id": "v" } } }),
            "persistent volume v",
        ),
        (
            json!({ "name": "disk", "type": "SCALAR", "scalar": { "value": 1 },
                 "disk": { "source": { "type": "MOUNT" } } }),
            "disk source MOUNT",
        ),
        (
            json!({ "name": "mem", "type": "SCALAR", "scalar": { "value": 1 }, "shared": {} }),
            "shared",
        ),
    ] {
        let e = read(bad.clone()).expect_err("refused");
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn a_task_info_becomes_the_same_task_in_mezzo_terms() {
    let t: m::TaskInfo = serde_json::from_value(json!({
        "name": "web", "task_id": { "value": "web-1" }, "slave_id": { "value": "a1" },
        "resources": [{ "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.5 },
                        "allocation_info": { "role": "eng" } }],
        "command": {
            "shell": false, "value": "/bin/echo", "arguments": ["echo", "hello", "world"], "user": "nobody",
            "environment": { "variables": [
                { "name": "A", "value": "1" },
                { "name": "B", "type": "SECRET", "secret": { "type": "REFERENCE", "reference": { "name": "db-pass" } } }
            ] },
            "uris": [{ "value": "http://x/app.tgz" }, { "value": "http://x/run.sh", "executable": true },
                     { "value": "http://x/data.tgz", "extract": false }]
        },
        "kill_policy": { "grace_period": { "nanoseconds": 2_500_000_000_i64 } },
        "labels": { "labels": [{ "key": "team", "value": "web" }] },
        "container": { "type": "MESOS", "mesos": { "image": { "type": "DOCKER", "docker": { "name": "reg:5000/app:1" } } } },
        "health_check": { "type": "HTTP", "http": { "port": 8080, "path": "/ok" }, "interval_seconds": 5 }
    }))
    .expect("a TaskInfo");
    let v = convert::task_in(&t).expect("converted");
    assert_eq!(
        (v.task_id.as_str(), v.agent_id.as_str(), v.name.as_str()),
        ("web-1", "a1", "web")
    );
    assert_eq!(v.allocation_role, "eng");
    let c = v.command.expect("command");
    // argv[0] is Mesos' own; Mezzo's arguments start after it.
    assert!(!c.shell);
    assert_eq!(
        (c.value.as_str(), c.arguments),
        ("/bin/echo", vec!["hello".to_owned(), "world".to_owned()])
    );
    assert_eq!(c.user, "nobody");
    assert_eq!(
        (c.environment[0].value.as_str(), c.environment[1].secret.as_str()),
        ("1", "db-pass")
    );
    // Archives are extracted by default, as on Mesos; not executables.
    let extract: Vec<bool> = c.uris.iter().map(|u| u.extract).collect();
    assert_eq!(extract, vec![true, false, false]);
    assert!(c.uris[1].executable);
    assert_eq!(v.kill_grace_period_ms, Some(2500));
    assert_eq!((v.labels[0].name.as_str(), v.labels[0].value.as_str()), ("team", "web"));
    let image = v.container.and_then(|c| c.image).expect("image");
    assert_eq!(image.reference, "reg:5000/app:1");
    let h = v.health_check.expect("check");
    assert_eq!(
        (h.http.map(|x| (x.port, x.path)), h.interval_secs),
        (Some((8080, "/ok".into())), Some(5.0))
    );

    // mesoshttp sends `slave_id` beside `agent_id`.
    let both: m::TaskInfo = serde_json::from_value(json!({
        "name": "b", "task_id": { "value": "b" }, "agent_id": { "value": "a1" }, "slave_id": { "value": "a1" },
        "command": { "value": "true" }
    }))
    .expect("both ids");
    assert_eq!(convert::task_in(&both).expect("ok").agent_id, "a1");

    // A shell command keeps its value and drops arguments; shell is the default.
    let t: m::TaskInfo = serde_json::from_value(json!({
        "name": "s", "task_id": { "value": "s" }, "agent_id": { "value": "a" }, "command": { "value": "echo $HOME" }
    }))
    .expect("a TaskInfo");
    let c = convert::task_in(&t).expect("ok").command.expect("command");
    assert!(c.shell && c.value == "echo $HOME");

    for (extra, says) in [
        (json!({ "executor": { "executor_id": { "value": "e" } } }), "executor"),
        (
            json!({ "container": { "type": "MESOS", "volumes": [{ "container_path": "x", "mode": "RW" }] } }),
            "volumes",
        ),
        (
            json!({ "container": { "type": "MESOS", "mesos": { "image": { "type": "APPC" } } } }),
            "APPC",
        ),
        (
            json!({ "kill_policy": { "grace_period": { "nanoseconds": -1 } } }),
            "negative",
        ),
        (json!({ "health_check": { "type": "HTTP" } }), "needs `http`"),
        (json!({ "slave_id": { "value": "b" } }), "differ"),
        (
            json!({ "command": { "value": "x", "environment": { "variables": [
            { "name": "S", "type": "SECRET", "secret": { "type": "VALUE", "value": { "data": "eA==" } } }] } } }),
            "reference",
        ),
    ] {
        let mut t = json!({ "name": "t", "task_id": { "value": "t" }, "agent_id": { "value": "a" } });
        if let (Some(o), Some(e)) = (t.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        let t: m::TaskInfo = serde_json::from_value(t).expect("parses");
        let e = convert::task_in(&t).expect_err("refused");
        assert!(e.contains(says), "{extra}: {e}");
    }
}

#[test]
fn a_task_with_a_custom_executor_carries_it_and_its_data() {
    let t: m::TaskInfo = serde_json::from_value(json!({
        "name": "t", "task_id": { "value": "t" }, "agent_id": { "value": "a" }, "data": "aGk=",
        "executor": { "type": "CUSTOM", "executor_id": { "value": "e" }, "name": "echo",
            "command": { "value": "./exec", "shell": true },
            "resources": [{ "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.1 } }],
            "data": "ZQ==", "shutdown_grace_period": { "nanoseconds": 3000000000i64 },
            "labels": { "labels": [{ "key": "k", "value": "v" }] } } }))
    .expect("a TaskInfo");
    let ours = convert::task_in(&t).expect("converts");
    assert!(ours.command.is_none());
    assert_eq!(ours.data, b"hi");
    let e = ours.executor.expect("executor");
    assert_eq!((e.executor_id.as_str(), e.name.as_str()), ("e", "echo"));
    assert_eq!(e.command.map(|c| (c.value, c.shell)), Some(("./exec".to_owned(), true)));
    assert_eq!((e.data, e.shutdown_grace_period_ms), (b"e".to_vec(), Some(3000)));
    assert_eq!(e.resources.len(), 1);
    assert_eq!(e.labels.len(), 1);
    for (executor, says) in [
        (
            json!({ "type": "DEFAULT", "executor_id": { "value": "e" } }),
            "not supported",
        ),
        (json!({ "executor_id": { "value": "e" } }), "needs a `command`"),
    ] {
        let t: m::TaskInfo = serde_json::from_value(json!({ "name": "t", "task_id": { "value": "t" },
            "agent_id": { "value": "a" }, "executor": executor }))
        .expect("a TaskInfo");
        let e = convert::task_in(&t).expect_err("refused");
        assert!(e.contains(says), "{e}");
    }
    let t: m::TaskInfo = serde_json::from_value(json!({ "name": "t", "task_id": { "value": "t" },
        "agent_id": { "value": "a" }, "command": { "value": "x" },
        "executor": { "executor_id": { "value": "e" }, "command": { "value": "y" } } }))
    .expect("a TaskInfo");
    assert!(convert::task_in(&t).expect_err("both").contains("not both"));
}

#[test]
fn executor_messages_and_failures_are_mesos_events() {
    use v1::event::Event as E;
    let master = convert::Format::default();
    let info = m::MasterInfo::default();
    let ev = |e: E| convert::event_out(&v1::Event { event: Some(e) }, master, &info).expect("an event");
    let msg = ev(E::Message(v1::Message {
        agent_id: "a".into(),
        executor_id: "e".into(),
        data: b"hi".to_vec(),
    }));
    assert_eq!(
        serde_json::to_value(&msg).expect("json"),
        json!({ "type": "MESSAGE", "message": { "agent_id": { "value": "a" },
            "executor_id": { "value": "e" }, "data": "aGk=" } })
    );
    let failure = ev(E::Failure(v1::Failure {
        agent_id: "a".into(),
        executor_id: "e".into(),
        status: Some(256),
    }));
    assert_eq!(
        serde_json::to_value(&failure).expect("json"),
        json!({ "type": "FAILURE", "failure": { "agent_id": { "value": "a" },
            "executor_id": { "value": "e" }, "status": 256 } })
    );
}

#[test]
fn statuses_use_mesos_states_reasons_and_a_base64_uuid() {
    let s = v1::TaskStatus {
        task_id: "t".into(),
        state: v1::TaskState::TaskFailed as i32,
        reason: v1::StatusReason::ReasonCommandExited as i32,
        message: "exited with status 3".into(),
        source: v1::StatusSource::SourceAgent as i32,
        agent_id: "a".into(),
        uuid: vec![0xff; 16],
        timestamp: 12.5,
        healthy: Some(true),
        ..Default::default()
    };
    assert_eq!(
        to_json(&convert::status_out(&s, Format::default())),
        json!({ "task_id": { "value": "t" }, "state": "TASK_FAILED", "message": "exited with status 3",
                "source": "SOURCE_AGENT", "reason": "REASON_COMMAND_EXECUTOR_FAILED", "agent_id": { "value": "a" },
                "timestamp": 12.5, "uuid": "/////////////////////w==", "healthy": true })
    );
    let with = |state: v1::TaskState, reason: v1::StatusReason, fmt: Format| {
        let s = v1::TaskStatus {
            task_id: "t".into(),
            state: state as i32,
            reason: reason as i32,
            ..Default::default()
        };
        let out = to_json(&convert::status_out(&s, fmt));
        (
            out["state"].as_str().map(str::to_owned),
            out["reason"].as_str().map(str::to_owned),
        )
    };
    let aware = Format {
        partition_aware: true,
        task_killing: true,
        ..Default::default()
    };
    use v1::{StatusReason as R, TaskState as S};
    let name = |s: &str| Some(s.to_owned());
    // A finished command has no reason on Mesos.
    assert_eq!(
        with(S::TaskFinished, R::ReasonCommandExited, aware),
        (name("TASK_FINISHED"), None)
    );
    // Partition states only for PARTITION_AWARE frameworks, KILLING only
    // for TASK_KILLING_STATE ones.
    for st in [S::TaskUnreachable, S::TaskDropped, S::TaskGone, S::TaskUnknown] {
        assert_eq!(with(st, R::ReasonUnspecified, Format::default()).0, name("TASK_LOST"));
        assert_eq!(with(st, R::ReasonUnspecified, aware).0, name(st.as_str_name()));
    }
    assert_eq!(
        with(S::TaskKilling, R::ReasonUnspecified, Format::default()).0,
        name("TASK_RUNNING")
    );
    assert_eq!(
        with(S::TaskKilling, R::ReasonUnspecified, aware).0,
        name("TASK_KILLING")
    );
    assert_eq!(
        with(S::TaskKilled, R::ReasonPreempted, aware).1,
        name("REASON_CONTAINER_PREEMPTED")
    );
    assert_eq!(
        with(S::TaskLost, R::ReasonAgentUnreachable, aware).1,
        name("REASON_AGENT_REMOVED")
    );
    assert_eq!(
        with(S::TaskFailed, R::ReasonFetchFailed, aware).1,
        name("REASON_CONTAINER_LAUNCH_FAILED")
    );
    // Every Mezzo reason maps to a name Mesos has, or to none.
    for r in 0..=21 {
        let reason = R::try_from(r).expect("a reason");
        let (_, out) = with(S::TaskFailed, reason, aware);
        assert!(
            out.is_none() || out.as_deref().is_some_and(|o| o.starts_with("REASON_")),
            "{reason:?}"
        );
    }
}

#[test]
fn every_event_has_the_shape_of_mesos_scheduler_events() {
    use v1::event::Event as E;
    let master = super::master_info("m1", "127.0.1.1:5050".parse().expect("addr"), "host");
    // MasterInfo.ip: network byte order in a little-endian uint32, as
    // Mesos' docs give it for 127.0.1.1.
    assert_eq!(master.ip, 16_842_879);
    let ev = |e: E| {
        let out = convert::event_out(&v1::Event { event: Some(e) }, Format::default(), &master);
        out.map(|o| to_json(&o))
    };
    let sub = ev(E::Subscribed(v1::Subscribed {
        framework_id: "f".into(),
        heartbeat_interval_secs: 15.0,
        master_id: "m1".into(),
    }))
    .expect("SUBSCRIBED");
    assert_eq!(keys(&sub), ["subscribed", "type"]);
    assert_eq!(
        keys(&sub["subscribed"]),
        ["framework_id", "heartbeat_interval_seconds", "master_info"]
    );
    assert_eq!(
        keys(&sub["subscribed"]["master_info"]),
        ["address", "hostname", "id", "ip", "pid", "port", "version"]
    );
    assert_eq!(sub["subscribed"]["master_info"]["version"], super::MESOS_VERSION);
    let offers = ev(E::Offers(v1::Offers {
        offers: vec![v1::Offer {
            offer_id: "o".into(),
            framework_id: "f".into(),
            agent_id: "a".into(),
            hostname: "h".into(),
            resources: vec![reserved("cpus", 1.0, "", "")],
            attributes: vec![v1::Attribute {
                name: "rack".into(),
                value: "r1".into(),
            }],
            allocation_role: "*".into(),
            ..Default::default()
        }],
    }))
    .expect("OFFERS");
    assert_eq!(
        offers["offers"]["offers"][0],
        json!({ "id": { "value": "o" }, "framework_id": { "value": "f" }, "agent_id": { "value": "a" }, "hostname": "h",
                "resources": [{ "name": "cpus", "type": "SCALAR", "scalar": { "value": 1.0 }, "role": "*" }],
                "attributes": [{ "name": "rack", "type": "TEXT", "text": { "value": "r1" } }] })
    );
    assert_eq!(
        ev(E::Rescind(v1::Rescind { offer_id: "o".into() })),
        Some(json!({ "type": "RESCIND", "rescind": { "offer_id": { "value": "o" } } }))
    );
    assert_eq!(
        ev(E::Failure(v1::Failure {
            agent_id: "a".into(),
            ..Default::default()
        })),
        Some(json!({ "type": "FAILURE", "failure": { "agent_id": { "value": "a" } } }))
    );
    assert_eq!(
        ev(E::Error(v1::Error { message: "gone".into() })),
        Some(json!({ "type": "ERROR", "error": { "message": "gone" } }))
    );
    assert_eq!(ev(E::Heartbeat(v1::Heartbeat {})), Some(json!({ "type": "HEARTBEAT" })));
    let update = ev(E::Update(v1::Update {
        status: Some(v1::TaskStatus {
            task_id: "t".into(),
            state: v1::TaskState::TaskRunning as i32,
            ..Default::default()
        }),
    }))
    .expect("UPDATE");
    assert_eq!(
        update,
        json!({ "type": "UPDATE", "update": { "status": { "task_id": { "value": "t" }, "state": "TASK_RUNNING" } } })
    );
    // Mezzo's own events have no Mesos word: not sent.
    assert_eq!(ev(E::Reconciled(v1::Reconciled {})), None);
}

#[test]
fn every_call_served_parses_with_mesos_field_names() {
    let fid = json!({ "value": "f" });
    let c = call(json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": {
        "user": "u", "name": "n", "id": fid, "failover_timeout": 10, "checkpoint": true, "roles": ["a", "b"],
        "capabilities": [{ "type": "MULTI_ROLE" }, { "type": "PARTITION_AWARE" }], "principal": "p",
        "hostname": "h", "webui_url": "http://x", "labels": { "labels": [{ "key": "k" }] } },
        "suppressed_roles": ["b"] }, "framework_id": fid }));
    let info = &c.subscribe.as_ref().expect("subscribe").framework_info;
    let v = convert::framework_in(info).expect("ok");
    assert_eq!(
        (v.roles, v.failover_timeout_secs),
        (vec!["a".to_owned(), "b".to_owned()], 10.0)
    );
    let f = Format::of(info);
    assert!(f.multi_role && f.partition_aware && !f.refinement && !f.task_killing);
    let c = call(json!({ "type": "ACCEPT", "framework_id": fid, "accept": {
        "offer_ids": [{ "value": "o1" }, { "value": "o2" }],
        "operations": [
            { "type": "RESERVE", "reserve": { "resources": [{ "name": "cpus", "type": "SCALAR", "scalar": { "value": 1 },
                "reservations": [{ "type": "DYNAMIC", "role": "a", "principal": "p" }] }] } },
            { "type": "LAUNCH_GROUP", "launch_group": { "executor": { "type": "DEFAULT", "executor_id": { "value": "e" } },
                "task_group": { "tasks": [{ "name": "t", "task_id": { "value": "t" }, "agent_id": { "value": "a" } }] } } }
        ],
        "filters": { "refuse_seconds": 7.5 } } }));
    let a = c.accept.expect("accept");
    assert_eq!((a.offer_ids.len(), a.operations.len()), (2, 2));
    assert_eq!(a.filters.and_then(|f| f.refuse_seconds), Some(7.5));
    let c = call(
        json!({ "type": "DECLINE", "framework_id": fid, "decline": { "offer_ids": [{ "value": "o" }],
        "filters": { "refuse_seconds": 1 } } }),
    );
    assert_eq!(c.decline.map(|d| d.offer_ids.len()), Some(1));
    let c = call(
        json!({ "type": "KILL", "framework_id": fid, "kill": { "task_id": { "value": "t" },
        "agent_id": { "value": "a" }, "kill_policy": { "grace_period": { "nanoseconds": 5 } } } }),
    );
    assert_eq!(c.kill.map(|k| k.task_id.value), Some("t".to_owned()));
    let c = call(json!({ "type": "ACKNOWLEDGE", "framework_id": fid, "acknowledge": {
        "agent_id": { "value": "a" }, "task_id": { "value": "t" }, "uuid": "AAAAAAAAAAAAAAAAAAAAAA==" } }));
    let uuid = convert::uuid_in(&c.acknowledge.expect("ack").uuid).expect("base64");
    assert_eq!(uuid.len(), 16);
    let c = call(
        json!({ "type": "RECONCILE", "framework_id": fid, "reconcile": { "tasks": [
        { "task_id": { "value": "t" }, "agent_id": { "value": "a" } }, { "task_id": { "value": "u" } }] } }),
    );
    assert_eq!(c.reconcile.map(|r| r.tasks.len()), Some(2));
    let c = call(json!({ "type": "REVIVE", "framework_id": fid, "revive": { "roles": ["a"] } }));
    assert_eq!(c.revive.map(|r| r.roles), Some(vec!["a".to_owned()]));
    let c = call(json!({ "type": "SUPPRESS", "framework_id": fid, "suppress": { "roles": ["a"] } }));
    assert!(c.suppress.is_some());
    let c = call(
        json!({ "type": "UPDATE_FRAMEWORK", "framework_id": fid, "update_framework": {
        "framework_info": { "user": "u", "name": "n", "role": "r" } } }),
    );
    assert_eq!(
        c.update_framework.map(|u| u.framework_info.role),
        Some(Some("r".to_owned()))
    );
    let c = call(json!({ "type": "MESSAGE", "framework_id": fid, "message": {
        "agent_id": { "value": "a" }, "executor_id": { "value": "e" }, "data": "aGk=" } }));
    assert!(c.message.is_some());
    let c = call(json!({ "type": "SHUTDOWN", "framework_id": fid, "shutdown": {
        "agent_id": { "value": "a" }, "executor_id": { "value": "e" } } }));
    assert_eq!(c.shutdown.map(|x| x.executor_id.value), Some("e".to_owned()));
    // Unknown fields are ignored, as Mesos ignores them (mesoshttp sends
    // `subscribe.credentials`).
    let c = call(json!({ "type": "TEARDOWN", "framework_id": fid, "whatever": 1,
        "subscribe": { "framework_info": { "name": "n" }, "credentials": [{ "principal": "p" }] } }));
    assert_eq!(c.kind, "TEARDOWN");
    // Role rules: `roles` needs MULTI_ROLE, `role` must not come with it.
    let info = |v: Value| serde_json::from_value::<m::FrameworkInfo>(v).expect("info");
    assert!(convert::framework_in(&info(json!({ "name": "n", "roles": ["a"] }))).is_err());
    assert!(
        convert::framework_in(&info(json!({ "name": "n", "role": "a",
        "capabilities": [{ "type": "MULTI_ROLE" }] })))
        .is_err()
    );
    assert_eq!(
        convert::framework_in(&info(json!({ "name": "n", "role": "a" })))
            .expect("ok")
            .roles,
        vec!["a"]
    );
    assert!(
        convert::framework_in(&info(json!({ "name": "n" })))
            .expect("ok")
            .roles
            .is_empty()
    );
}

#[test]
fn a_call_of_too_many_objects_is_refused_before_it_is_built() {
    let many = format!(
        "{{\"type\":\"ACCEPT\",\"accept\":{{\"operations\":[{}{{}}]}}}}",
        "{},".repeat(300_000)
    );
    let e = super::parse::<m::Call>(many.as_bytes()).expect_err("refused");
    assert!(e.contains("at most"), "{e}");
    // Braces inside strings are not objects.
    let text = format!(
        "{{\"type\":\"TEARDOWN\",\"x\":\"{}\\\"{}\"}}",
        "{".repeat(300_000),
        "[".repeat(10)
    );
    let c: m::Call = super::parse(text.as_bytes()).expect("parses");
    assert_eq!(c.kind, "TEARDOWN");
}

#[test]
fn every_event_has_a_protobuf_form_that_reads_back_the_same() {
    use v1::event::Event as E;
    let master = super::master_info("m1", "127.0.1.1:5050".parse().expect("addr"), "host");
    let offer = v1::Offer {
        offer_id: "o".into(),
        framework_id: "f".into(),
        agent_id: "a".into(),
        hostname: "h".into(),
        resources: vec![reserved("cpus", 1.0, "r", "p"), reserved("mem", 64.0, "", "")],
        attributes: vec![v1::Attribute {
            name: "rack".into(),
            value: "r1".into(),
        }],
        allocation_role: "r".into(),
        ..Default::default()
    };
    let status = v1::TaskStatus {
        task_id: "t".into(),
        state: v1::TaskState::TaskFinished as i32,
        source: v1::StatusSource::SourceExecutor as i32,
        agent_id: "a".into(),
        uuid: vec![7; 16],
        timestamp: 12.5,
        ..Default::default()
    };
    let events = [
        E::Subscribed(v1::Subscribed {
            framework_id: "f".into(),
            heartbeat_interval_secs: 15.0,
            master_id: "m1".into(),
        }),
        E::Offers(v1::Offers { offers: vec![offer] }),
        E::Rescind(v1::Rescind { offer_id: "o".into() }),
        E::Update(v1::Update { status: Some(status) }),
        E::Failure(v1::Failure {
            agent_id: "a".into(),
            ..Default::default()
        }),
        E::Error(v1::Error { message: "gone".into() }),
        E::Heartbeat(v1::Heartbeat {}),
    ];
    let both = Format {
        refinement: true,
        multi_role: true,
        ..Format::default()
    };
    for fmt in [Format::default(), both] {
        for e in &events {
            let out = convert::event_out(&v1::Event { event: Some(e.clone()) }, fmt, &master).expect("an event");
            let b = super::protobuf::event_to_protobuf(&out).expect("a protobuf form");
            assert_eq!(super::protobuf::event_from_protobuf(&b).expect("reads back"), out);
        }
    }
}
