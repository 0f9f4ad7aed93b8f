//! Protobuf bodies built and read by hand with prost's wire primitives and
//! the field numbers of Mesos 1.11 (not our `.proto`), so that a wrong
//! number there is caught here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};

use super::*;

fn varint(out: &mut Vec<u8>, tag: u32, v: u64) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(v, out);
}

fn bytes(out: &mut Vec<u8>, tag: u32, data: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

fn double(out: &mut Vec<u8>, tag: u32, v: f64) {
    encode_key(tag, WireType::SixtyFourBit, out);
    out.extend_from_slice(&v.to_le_bytes());
}

/// An id (`{value#1}`) as field `tag`.
fn id(out: &mut Vec<u8>, tag: u32, value: &str) {
    let mut m = Vec::new();
    bytes(&mut m, 1, value.as_bytes());
    bytes(out, tag, &m);
}

/// A scalar `Resource`: name#1, type#2 (SCALAR=0), scalar#3 {value#1}.
fn scalar(name: &str, v: f64) -> Vec<u8> {
    let mut s = Vec::new();
    double(&mut s, 1, v);
    let mut r = Vec::new();
    bytes(&mut r, 1, name.as_bytes());
    varint(&mut r, 2, 0);
    bytes(&mut r, 3, &s);
    r
}

/// Call{framework_id#1 "fw-1", type#2=ACCEPT(3), accept#4{offer_ids#1
/// "o-1", operations#2, filters#3}}.
fn accept_call(operations: &[Vec<u8>], filters: Option<&[u8]>) -> Vec<u8> {
    let mut accept = Vec::new();
    id(&mut accept, 1, "o-1");
    for op in operations {
        bytes(&mut accept, 2, op);
    }
    if let Some(f) = filters {
        bytes(&mut accept, 3, f);
    }
    let mut call = Vec::new();
    id(&mut call, 1, "fw-1");
    varint(&mut call, 2, 3);
    bytes(&mut call, 4, &accept);
    call
}

/// One field read back by hand.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Varint(u64),
    Bytes(Vec<u8>),
    Fixed64(u64),
}

fn fields(mut buf: &[u8]) -> Vec<(u32, Field)> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).expect("key");
        let f = match wire {
            WireType::Varint => Field::Varint(decode_varint(&mut buf).expect("varint")),
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf).expect("len")).expect("len");
                let (f, rest) = buf.split_at(len);
                buf = rest;
                Field::Bytes(f.to_vec())
            }
            WireType::SixtyFourBit => {
                let (f, rest) = buf.split_at(8);
                buf = rest;
                Field::Fixed64(u64::from_le_bytes(f.try_into().expect("8 bytes")))
            }
            w => panic!("unexpected wire type {w:?}"),
        };
        out.push((tag, f));
    }
    out
}

fn field(buf: &[u8], tag: u32) -> Field {
    fields(buf)
        .into_iter()
        .find(|(t, _)| *t == tag)
        .map(|(_, f)| f)
        .unwrap_or_else(|| panic!("no field {tag} in {buf:?}"))
}

fn sub(buf: &[u8], tag: u32) -> Vec<u8> {
    match field(buf, tag) {
        Field::Bytes(b) => b,
        f => panic!("field {tag} is {f:?}"),
    }
}

fn string(buf: &[u8], tag: u32) -> String {
    String::from_utf8(sub(buf, tag)).expect("utf-8")
}

#[test]
fn a_subscribe_call_decodes() {
    // Call{type#2=SUBSCRIBE(1), subscribe#3{framework_info#1{user#1,
    // name#2, failover_timeout#4, capabilities#10{type#1=MULTI_ROLE(6)},
    // roles#12}}}.
    let mut cap = Vec::new();
    varint(&mut cap, 1, 6);
    let mut info = Vec::new();
    bytes(&mut info, 1, b"nobody");
    bytes(&mut info, 2, b"fw");
    double(&mut info, 4, 60.0);
    bytes(&mut info, 10, &cap);
    bytes(&mut info, 12, b"dev");
    let mut s = Vec::new();
    bytes(&mut s, 1, &info);
    let mut call = Vec::new();
    varint(&mut call, 2, 1);
    bytes(&mut call, 3, &s);

    let c = call_from_protobuf(&call).expect("decodes");
    let want = types::Call {
        kind: "SUBSCRIBE".into(),
        subscribe: Some(types::Subscribe {
            framework_info: types::FrameworkInfo {
                user: "nobody".into(),
                name: "fw".into(),
                failover_timeout: Some(60.0),
                roles: vec!["dev".into()],
                capabilities: vec![types::Capability {
                    kind: "MULTI_ROLE".into(),
                }],
                ..Default::default()
            },
            suppressed_roles: vec![],
        }),
        ..Default::default()
    };
    assert_eq!(c, want);
    // And back, byte for byte the same fields.
    let again = call_from_protobuf(&call_to_protobuf(&c).expect("encodes")).expect("decodes");
    assert_eq!(again, want);
}

#[test]
fn an_accept_launching_a_task_with_an_executor_decodes() {
    // TaskInfo{name#1, task_id#2, agent_id#3, resources#4, executor#5
    // {executor_id#1, command#7 {value#3, shell#6=false, arguments#7},
    // resources#5}, data#6}; Operation{type#1=LAUNCH(1), launch#2
    // {task_infos#1}}; Accept{offer_ids#1, operations#2, filters#3
    // {refuse_seconds#1}}.
    let mut cmd = Vec::new();
    bytes(&mut cmd, 3, b"/bin/exec");
    varint(&mut cmd, 6, 0);
    bytes(&mut cmd, 7, b"/bin/exec");
    bytes(&mut cmd, 7, b"--flag");
    let mut ex = Vec::new();
    id(&mut ex, 1, "ex-1");
    bytes(&mut ex, 7, &cmd);
    bytes(&mut ex, 5, &scalar("cpus", 0.1));
    let mut task = Vec::new();
    bytes(&mut task, 1, b"t");
    id(&mut task, 2, "t-1");
    id(&mut task, 3, "a-1");
    bytes(&mut task, 4, &scalar("cpus", 0.5));
    bytes(&mut task, 4, &scalar("mem", 32.0));
    bytes(&mut task, 5, &ex);
    bytes(&mut task, 6, &[0, 1, 2]);
    let mut launch = Vec::new();
    bytes(&mut launch, 1, &task);
    let mut op = Vec::new();
    varint(&mut op, 1, 1);
    bytes(&mut op, 2, &launch);
    let mut filters = Vec::new();
    double(&mut filters, 1, 1.5);
    let call = accept_call(&[op], Some(&filters));

    let c = call_from_protobuf(&call).expect("decodes");
    assert_eq!(c.kind, "ACCEPT");
    assert_eq!(c.framework_id, Some(types::Id::new("fw-1")));
    let a = c.accept.expect("accept");
    assert_eq!(a.offer_ids, vec![types::Id::new("o-1")]);
    assert_eq!(a.filters.and_then(|f| f.refuse_seconds), Some(1.5));
    assert_eq!(a.operations.len(), 1);
    assert_eq!(a.operations[0].kind, "LAUNCH");
    let t = &a.operations[0].launch.as_ref().expect("launch").task_infos[0];
    assert_eq!((t.name.as_str(), t.task_id.value.as_str()), ("t", "t-1"));
    assert_eq!(t.agent_id.value, "a-1");
    assert_eq!(t.data.as_deref(), Some(B64.encode([0, 1, 2]).as_str()));
    let r: Vec<_> = t
        .resources
        .iter()
        .map(|r| (r.name.as_str(), r.kind.as_str(), r.scalar.as_ref().map(|s| s.value)))
        .collect();
    assert_eq!(r, [("cpus", "SCALAR", Some(0.5)), ("mem", "SCALAR", Some(32.0))]);
    let e = t.executor.as_ref().expect("executor");
    assert_eq!(e.executor_id.value, "ex-1");
    assert_eq!(e.resources[0].name, "cpus");
    let cmd = e.command.as_ref().expect("command");
    assert_eq!(cmd.value.as_deref(), Some("/bin/exec"));
    // Set to its default explicitly: still there (proto2 presence).
    assert_eq!(cmd.shell, Some(false));
    assert_eq!(cmd.arguments, ["/bin/exec", "--flag"]);
    assert!(t.command.is_none());
}

#[test]
fn an_acknowledge_keeps_its_uuid() {
    // Acknowledge{agent_id#1, task_id#2, uuid#3}; Call.acknowledge#8,
    // type ACKNOWLEDGE(8).
    let uuid: Vec<u8> = (1..=16).collect();
    let mut ack = Vec::new();
    id(&mut ack, 1, "a-1");
    id(&mut ack, 2, "t-1");
    bytes(&mut ack, 3, &uuid);
    let mut call = Vec::new();
    id(&mut call, 1, "fw-1");
    varint(&mut call, 2, 8);
    bytes(&mut call, 8, &ack);
    let c = call_from_protobuf(&call).expect("decodes");
    assert_eq!(c.kind, "ACKNOWLEDGE");
    let a = c.acknowledge.expect("acknowledge");
    assert_eq!(a.agent_id.value, "a-1");
    assert_eq!(a.task_id.value, "t-1");
    assert_eq!(B64.decode(&a.uuid).expect("base64"), uuid);
}

#[test]
fn bad_calls_are_refused() {
    // Not protobuf at all; a field running past the end.
    assert!(call_from_protobuf(b"{\"type\":\"SUBSCRIBE\"}").is_err());
    assert!(call_from_protobuf(&[0x1a, 0x05, 0x0a]).is_err());
    // A required id without its value: refused as JSON refuses it.
    let mut call = Vec::new();
    varint(&mut call, 2, 8);
    let mut ack = Vec::new();
    bytes(&mut ack, 1, &[]);
    bytes(&mut call, 8, &ack);
    assert!(call_from_protobuf(&call).is_err());
    // An enum value Mesos does not have.
    let mut call = Vec::new();
    varint(&mut call, 2, 99);
    assert!(call_from_protobuf(&call).is_err());
    // Unsupported volumes come through, to be refused by the handler.
    let mut container = Vec::new();
    varint(&mut container, 1, 2);
    bytes(&mut container, 2, &[]);
    let mut task = Vec::new();
    bytes(&mut task, 1, b"t");
    id(&mut task, 2, "t");
    id(&mut task, 3, "a");
    bytes(&mut task, 9, &container);
    let mut launch = Vec::new();
    bytes(&mut launch, 1, &task);
    let mut op = Vec::new();
    bytes(&mut op, 2, &launch);
    let mut accept = Vec::new();
    bytes(&mut accept, 2, &op);
    let mut call = Vec::new();
    bytes(&mut call, 4, &accept);
    let c = call_from_protobuf(&call).expect("decodes");
    let t = &c.accept.expect("accept").operations[0]
        .launch
        .clone()
        .expect("launch")
        .task_infos[0];
    assert_eq!(t.container.as_ref().map(|c| c.volumes.len()), Some(1));
}

#[test]
fn too_many_messages_are_refused_before_decoding() {
    // Call.reconcile#9 {tasks#1 [{}...]}: two bytes a message.
    let mut rec = Vec::new();
    for _ in 0..=MAX_JSON_NODES {
        bytes(&mut rec, 1, &[]);
    }
    let mut call = Vec::new();
    bytes(&mut call, 9, &rec);
    let e = call_from_protobuf(&call).expect_err("too many");
    assert!(e.contains("messages"), "{e}");
}

#[test]
fn events_encode_with_mesos_field_numbers() {
    // SUBSCRIBED: Event{type#1=1, subscribed#2{framework_id#1,
    // heartbeat_interval_seconds#2, master_info#3{id#1, ip#2, port#3}}}.
    let e = types::Event {
        subscribed: Some(types::Subscribed {
            framework_id: types::Id::new("fw-1"),
            heartbeat_interval_seconds: Some(15.0),
            master_info: Some(types::MasterInfo {
                id: "m".into(),
                ip: 16842879,
                port: 5050,
                ..Default::default()
            }),
        }),
        ..types::Event::of("SUBSCRIBED")
    };
    let b = event_to_protobuf(&e).expect("encodes");
    assert_eq!(field(&b, 1), Field::Varint(1));
    let s = sub(&b, 2);
    assert_eq!(string(&sub(&s, 1), 1), "fw-1");
    assert_eq!(field(&s, 2), Field::Fixed64(15.0f64.to_bits()));
    let mi = sub(&s, 3);
    assert_eq!(string(&mi, 1), "m");
    assert_eq!(field(&mi, 2), Field::Varint(16842879));
    assert_eq!(field(&mi, 3), Field::Varint(5050));
    assert_eq!(event_from_protobuf(&b).expect("decodes"), e);

    // OFFERS: Event{type#1=2, offers#3{offers#1[Offer{id#1,
    // framework_id#2, agent_id#3, hostname#4, resources#5}]}}, ports as
    // RANGES(1) in ranges#4{range#1{begin#1, end#2}}.
    let offer = types::Offer {
        id: types::Id::new("o-1"),
        framework_id: types::Id::new("fw-1"),
        agent_id: types::Id::new("a-1"),
        hostname: "h".into(),
        resources: vec![types::Resource {
            name: "ports".into(),
            kind: "RANGES".into(),
            ranges: Some(types::Ranges {
                range: vec![types::Range {
                    begin: 31000,
                    end: 31099,
                }],
            }),
            role: Some("*".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let e = types::Event {
        offers: Some(types::Offers { offers: vec![offer] }),
        ..types::Event::of("OFFERS")
    };
    let b = event_to_protobuf(&e).expect("encodes");
    assert_eq!(field(&b, 1), Field::Varint(2));
    let o = sub(&sub(&b, 3), 1);
    assert_eq!(string(&sub(&o, 1), 1), "o-1");
    assert_eq!(string(&sub(&o, 2), 1), "fw-1");
    assert_eq!(string(&sub(&o, 3), 1), "a-1");
    assert_eq!(string(&o, 4), "h");
    let r = sub(&o, 5);
    assert_eq!(string(&r, 1), "ports");
    assert_eq!(field(&r, 2), Field::Varint(1));
    assert_eq!(string(&r, 6), "*");
    let range = sub(&sub(&r, 4), 1);
    assert_eq!(field(&range, 1), Field::Varint(31000));
    assert_eq!(field(&range, 2), Field::Varint(31099));
    assert_eq!(event_from_protobuf(&b).expect("decodes"), e);

    // UPDATE: Event{type#1=4, update#5{status#1{task_id#1, state#2,
    // source#9, reason#10, agent_id#5, timestamp#6, uuid#11}}}.
    let uuid: Vec<u8> = (100..116).collect();
    let e = types::Event {
        update: Some(types::Update {
            status: types::TaskStatus {
                task_id: types::Id::new("t-1"),
                state: "TASK_FINISHED".into(),
                source: Some("SOURCE_EXECUTOR".into()),
                reason: Some("REASON_COMMAND_EXECUTOR_FAILED".into()),
                agent_id: Some(types::Id::new("a-1")),
                timestamp: Some(1.5),
                uuid: Some(B64.encode(&uuid)),
                ..Default::default()
            },
        }),
        ..types::Event::of("UPDATE")
    };
    let b = event_to_protobuf(&e).expect("encodes");
    assert_eq!(field(&b, 1), Field::Varint(4));
    let st = sub(&sub(&b, 5), 1);
    assert_eq!(string(&sub(&st, 1), 1), "t-1");
    assert_eq!(field(&st, 2), Field::Varint(2));
    assert_eq!(field(&st, 9), Field::Varint(2));
    // Zero, yet sent: it was set.
    assert_eq!(field(&st, 10), Field::Varint(0));
    assert_eq!(string(&sub(&st, 5), 1), "a-1");
    assert_eq!(field(&st, 6), Field::Fixed64(1.5f64.to_bits()));
    assert_eq!(sub(&st, 11), uuid);
    assert_eq!(event_from_protobuf(&b).expect("decodes"), e);

    // HEARTBEAT: just type#1=8.
    let b = event_to_protobuf(&types::Event::of("HEARTBEAT")).expect("encodes");
    assert_eq!(b, [0x08, 8]);
}

#[test]
fn every_event_and_call_field_of_types_is_in_the_descriptors() {
    // Encoding is strict about unknown fields: a full event and a full
    // call of `types` must encode, or the .proto is missing a field.
    let status = types::TaskStatus {
        task_id: types::Id::new("t"),
        state: "TASK_RUNNING".into(),
        message: Some("m".into()),
        source: Some("SOURCE_AGENT".into()),
        reason: Some("REASON_TASK_INVALID".into()),
        data: Some(B64.encode(b"d")),
        agent_id: Some(types::Id::new("a")),
        executor_id: Some(types::Id::new("e")),
        timestamp: Some(1.0),
        uuid: Some(B64.encode([1u8; 16])),
        healthy: Some(true),
    };
    for e in [
        types::Event {
            update: Some(types::Update { status }),
            ..types::Event::of("UPDATE")
        },
        types::Event {
            rescind: Some(types::Rescind {
                offer_id: types::Id::new("o"),
            }),
            ..types::Event::of("RESCIND")
        },
        types::Event {
            message: Some(types::Message {
                agent_id: types::Id::new("a"),
                executor_id: types::Id::new("e"),
                data: B64.encode(b"hi"),
            }),
            ..types::Event::of("MESSAGE")
        },
        types::Event {
            failure: Some(types::Failure {
                agent_id: Some(types::Id::new("a")),
                executor_id: Some(types::Id::new("e")),
                status: Some(-1),
            }),
            ..types::Event::of("FAILURE")
        },
        types::Event {
            error: Some(types::ErrorEvent { message: "no".into() }),
            ..types::Event::of("ERROR")
        },
    ] {
        let b = event_to_protobuf(&e).expect("encodes");
        assert_eq!(event_from_protobuf(&b).expect("decodes"), e);
    }
    let accept = serde_json::json!({"offer_ids": [{"value": "o"}], "operations": [
        {"type": "RESERVE", "reserve": {"resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0},
            "reservations": [{"type": "DYNAMIC", "role": "r", "principal": "p"}],
            "allocation_info": {"role": "r"}}]}},
        {"type": "UNRESERVE", "unreserve": {"resources": [{"name": "s", "type": "SET", "set": {"item": ["x"]},
            "reservation": {"principal": "p"}}]}},
        {"type": "CREATE", "create": {"volumes": [{"name": "disk", "type": "SCALAR", "scalar": {"value": 64.0},
            "role": "r", "disk": {"persistence": {"id": "v", "principal": "p"},
                "volume": {"mode": "RO", "container_path": "d", "host_path": "h",
                    "image": {"type": "DOCKER", "docker": {"name": "i"}}, "source": {}},
                "source": {"type": "MOUNT"}}, "shared": {}}]}},
        {"type": "DESTROY", "destroy": {"volumes": [{"name": "disk", "type": "SCALAR", "scalar": {"value": 64.0},
            "disk": {"persistence": {"id": "v"}}}]}},
        {"type": "LAUNCH_GROUP", "launch_group": {
            "executor": {"type": "DEFAULT", "executor_id": {"value": "e"}, "framework_id": {"value": "f"},
                "name": "n", "data": "ZA==", "shutdown_grace_period": {"nanoseconds": 1},
                "labels": {"labels": [{"key": "k"}]},
                "container": {"type": "MESOS", "mesos": {"image": {"type": "DOCKER", "docker": {"name": "i"}}}}},
            "task_group": {"tasks": [{"name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "a"},
                "container": {"type": "DOCKER", "docker": {"image": "i"}},
                "health_check": {"type": "HTTP", "delay_seconds": 1.0, "interval_seconds": 1.0,
                    "timeout_seconds": 1.0, "consecutive_failures": 3, "grace_period_seconds": 1.0,
                    "http": {"port": 80, "path": "/", "scheme": "http"}},
                "kill_policy": {"grace_period": {"nanoseconds": 1}},
                "command": {"uris": [{"value": "u", "executable": true, "extract": false, "cache": true,
                    "output_file": "o"}], "user": "u", "shell": true, "value": "true",
                    "environment": {"variables": [{"name": "A", "type": "VALUE", "value": "1"},
                        {"name": "B", "type": "SECRET", "secret": {"type": "REFERENCE",
                            "reference": {"name": "s", "key": "k"}}}]}}}]}}}
    ]});
    let json = serde_json::json!({
        "framework_id": {"value": "f"}, "type": "UPDATE_FRAMEWORK",
        "update_framework": {"framework_info": {
            "user": "u", "name": "n", "id": {"value": "f"}, "failover_timeout": 1.0, "checkpoint": true,
            "role": "r", "hostname": "h", "principal": "p", "webui_url": "w",
            "capabilities": [{"type": "TASK_KILLING_STATE"}], "labels": {"labels": [{"key": "k", "value": "v"}]}
        }, "suppressed_roles": ["r"]},
        "kill": {"task_id": {"value": "t"}, "agent_id": {"value": "a"},
            "kill_policy": {"grace_period": {"nanoseconds": 5_000_000_000_i64}}},
        "shutdown": {"executor_id": {"value": "e"}, "agent_id": {"value": "a"}},
        "reconcile": {"tasks": [{"task_id": {"value": "t"}, "agent_id": {"value": "a"}}]},
        "decline": {"offer_ids": [{"value": "o"}], "filters": {"refuse_seconds": 2.0}},
        "revive": {"roles": ["r"]}, "suppress": {"roles": ["r"]},
        "message": {"agent_id": {"value": "a"}, "executor_id": {"value": "e"}, "data": "aGk="},
        "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": B64.encode([2u8; 16])}
    });
    let c = types::Call {
        accept: Some(serde_json::from_value(accept).expect("an accept")),
        ..serde_json::from_value(json).expect("a call")
    };
    let b = call_to_protobuf(&c).expect("encodes");
    assert_eq!(call_from_protobuf(&b).expect("decodes"), c);
}

/// A persistent volume resource: a disk scalar with role#6 and
/// disk#7{persistence#1{id#1, principal#2}, volume#2{container_path#1,
/// mode#3}}.
fn volume_resource(id_: &str, mode: u64) -> Vec<u8> {
    let mut persistence = Vec::new();
    bytes(&mut persistence, 1, id_.as_bytes());
    bytes(&mut persistence, 2, b"p");
    let mut volume = Vec::new();
    bytes(&mut volume, 1, b"data");
    varint(&mut volume, 3, mode);
    let mut disk = Vec::new();
    bytes(&mut disk, 1, &persistence);
    bytes(&mut disk, 2, &volume);
    let mut r = scalar("disk", 64.0);
    bytes(&mut r, 6, b"eng");
    bytes(&mut r, 7, &disk);
    r
}

#[test]
fn create_destroy_and_a_volume_in_an_offer_use_mesos_field_numbers() {
    // Operation{type#1=CREATE(4), create#5{volumes#1}} and
    // {type#1=DESTROY(5), destroy#6{volumes#1}} in one ACCEPT.
    let mut create = Vec::new();
    bytes(&mut create, 1, &volume_resource("v-1", 1));
    let mut op1 = Vec::new();
    varint(&mut op1, 1, 4);
    bytes(&mut op1, 5, &create);
    let mut destroy = Vec::new();
    bytes(&mut destroy, 1, &volume_resource("v-0", 2));
    let mut op2 = Vec::new();
    varint(&mut op2, 1, 5);
    bytes(&mut op2, 6, &destroy);
    let call = accept_call(&[op1, op2], None);

    let c = call_from_protobuf(&call).expect("decodes");
    let ops = c.accept.expect("accept").operations;
    assert_eq!((ops[0].kind.as_str(), ops[1].kind.as_str()), ("CREATE", "DESTROY"));
    let v = &ops[0].create.as_ref().expect("create").volumes[0];
    let disk = v.disk.as_ref().expect("disk");
    assert_eq!(disk.persistence.as_ref().map(|p| p.id.as_str()), Some("v-1"));
    let vol = disk.volume.as_ref().expect("volume");
    assert_eq!((vol.mode.as_deref(), vol.container_path.as_str()), (Some("RW"), "data"));
    assert_eq!(
        crate::mesos::convert::create_in(&ops[0].create.as_ref().expect("create").volumes)
            .expect("a Mezzo create")
            .volumes[0]
            .id,
        "v-1"
    );
    let v = &ops[1].destroy.as_ref().expect("destroy").volumes[0];
    let mode = v
        .disk
        .as_ref()
        .and_then(|d| d.volume.as_ref())
        .and_then(|v| v.mode.clone());
    assert_eq!(mode.as_deref(), Some("RO"));

    // A free volume in an offer: the same shape on the way out.
    let offer = crate::v1::Offer {
        offer_id: "o-1".into(),
        framework_id: "fw-1".into(),
        agent_id: "a-1".into(),
        hostname: "h".into(),
        allocation_role: "eng".into(),
        volumes: vec![crate::v1::Volume {
            id: "v-1".into(),
            disk_mib: 64.0,
            role: "eng".into(),
            principal: "p".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let e = types::Event {
        offers: Some(types::Offers {
            offers: vec![crate::mesos::convert::offer_out(&offer, Default::default())],
        }),
        ..types::Event::of("OFFERS")
    };
    let b = event_to_protobuf(&e).expect("encodes");
    let r = sub(&sub(&sub(&b, 3), 1), 5);
    let disk = sub(&r, 7);
    assert_eq!(string(&sub(&disk, 1), 1), "v-1");
    assert_eq!(string(&sub(&disk, 1), 2), "p");
    assert_eq!(string(&sub(&disk, 2), 1), "v-1");
    assert_eq!(field(&sub(&disk, 2), 3), Field::Varint(1));
    assert_eq!(string(&r, 6), "eng");
    assert_eq!(event_from_protobuf(&b).expect("decodes"), e);
}
