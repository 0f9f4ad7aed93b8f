//! The executor API's JSON shapes against Mesos' field names.

use serde_json::json;

use super::*;

fn uuid_b64() -> String {
    B64.encode([7u8; 16])
}

#[test]
fn a_subscribe_call_parses_with_what_the_executor_still_holds() {
    let body = json!({
        "executor_id": {"value": "ex-1"},
        "framework_id": {"value": "fw-1"},
        "type": "SUBSCRIBE",
        "subscribe": {
            "unacknowledged_tasks": [{"name": "t", "task_id": {"value": "t-1"}, "agent_id": {"value": "a"}}],
            "unacknowledged_updates": [{"status": {"task_id": {"value": "t-1"}, "state": "TASK_RUNNING",
                "source": "SOURCE_EXECUTOR", "uuid": uuid_b64()}}]
        }
    });
    let call: Call = super::super::parse(body.to_string().as_bytes()).expect("parses");
    assert_eq!(call.kind, "SUBSCRIBE");
    assert_eq!(call.executor_id.value, "ex-1");
    let sub = call.subscribe.expect("subscribe");
    assert_eq!(sub.unacknowledged_tasks[0].task_id.value, "t-1");
    assert_eq!(sub.unacknowledged_updates[0].status.state, "TASK_RUNNING");
    let back: Call = serde_json::from_value(
        serde_json::to_value(&Call {
            subscribe: Some(sub.clone()),
            ..Call::default()
        })
        .expect("to json"),
    )
    .expect("round trip");
    assert_eq!(back.subscribe, Some(sub));
}

#[test]
fn a_call_without_its_ids_does_not_parse() {
    let r: Result<Call, _> = super::super::parse(br#"{"type":"HEARTBEAT","executor_id":{"value":"e"}}"#);
    assert!(r.is_err_and(|e| e.contains("framework_id")));
}

#[test]
fn an_update_is_checked_as_mesos_checks_it() {
    let ok = TaskStatus {
        task_id: Id::new("t-1"),
        state: "TASK_RUNNING".into(),
        source: Some("SOURCE_EXECUTOR".into()),
        uuid: Some(uuid_b64()),
        message: Some("up".into()),
        data: Some(B64.encode(b"hi")),
        reason: Some("REASON_TASK_INVALID".into()),
        healthy: Some(true),
        ..Default::default()
    };
    let s = status_in(&ok, "ex-1").expect("valid");
    assert_eq!(s.uuid, vec![7u8; 16]);
    assert_eq!(s.state, v1::TaskState::TaskRunning as i32);
    assert_eq!(s.source, v1::StatusSource::SourceExecutor as i32);
    assert_eq!(s.reason, v1::StatusReason::ReasonTaskInvalid as i32);
    assert_eq!(
        (s.message.as_str(), s.data.as_slice(), s.healthy),
        ("up", &b"hi"[..], Some(true))
    );
    assert_eq!(s.executor_id, "ex-1");
    let bad = |f: fn(&mut TaskStatus), why: &str| {
        let mut s = ok.clone();
        f(&mut s);
        let e = status_in(&s, "ex-1").expect_err("refused");
        assert!(e.contains(why), "{e} should say {why}");
    };
    bad(|s| s.uuid = None, "uuid");
    bad(|s| s.uuid = Some(B64.encode([1u8; 15])), "16 bytes");
    bad(|s| s.uuid = Some("***".into()), "base64");
    bad(|s| s.source = Some("SOURCE_AGENT".into()), "SOURCE_EXECUTOR");
    bad(|s| s.state = "TASK_STAGING".into(), "TASK_STAGING");
    bad(|s| s.state = "RUNNING".into(), "not a task state");
    bad(|s| s.executor_id = Some(Id::new("other")), "calling executor");
}

#[test]
fn events_have_mesos_field_names() {
    let ack = serde_json::to_value(acknowledged("t-1", &[7u8; 16])).expect("json");
    assert_eq!(
        ack,
        json!({"type": "ACKNOWLEDGED", "acknowledged": {"task_id": {"value": "t-1"}, "uuid": uuid_b64()}})
    );
    let msg = serde_json::to_value(message(b"hello")).expect("json");
    assert_eq!(msg, json!({"type": "MESSAGE", "message": {"data": "aGVsbG8="}}));
    let kill = serde_json::to_value(kill("t-1", Some(1500))).expect("json");
    assert_eq!(
        kill,
        json!({"type": "KILL", "kill": {"task_id": {"value": "t-1"},
            "kill_policy": {"grace_period": {"nanoseconds": 1_500_000_000i64}}}})
    );
    assert_eq!(
        serde_json::to_value(Event::of("SHUTDOWN")).expect("json"),
        json!({"type": "SHUTDOWN"})
    );
    let err = Event {
        error: Some(Error { message: "no".into() }),
        ..Event::of("ERROR")
    };
    assert_eq!(
        serde_json::to_value(err).expect("json"),
        json!({"type": "ERROR", "error": {"message": "no"}})
    );
}

#[test]
fn subscribed_and_launch_carry_the_executor_its_framework_and_tasks() {
    let exec = v1::ExecutorInfo {
        executor_id: "ex-1".into(),
        name: "my executor".into(),
        command: Some(v1::CommandInfo {
            value: "python3".into(),
            arguments: vec!["exec.py".into()],
            shell: false,
            ..Default::default()
        }),
        resources: vec![v1::Resource {
            name: "cpus".into(),
            scalar: 0.1,
            ..Default::default()
        }],
        data: b"cfg".to_vec(),
        shutdown_grace_period_ms: Some(5000),
        ..Default::default()
    };
    let task = v1::TaskInfo {
        task_id: "t-1".into(),
        name: "t".into(),
        executor: Some(Box::new(exec.clone())),
        data: b"payload".to_vec(),
        ..Default::default()
    };
    let ev = Event {
        subscribed: Some(Subscribed {
            executor_info: executor_out(&exec, "fw-1"),
            framework_info: framework_out(
                &v1::FrameworkInfo {
                    name: "fw".into(),
                    user: "root".into(),
                    ..Default::default()
                },
                "fw-1",
            ),
            agent_info: agent_info_out(
                &v1::AgentInfo {
                    hostname: "h".into(),
                    ..Default::default()
                },
                "ag-1",
                5051,
            ),
            container_id: Some(ContainerId {
                value: "fw-1/executors/ex-1".into(),
            }),
        }),
        ..Event::of("SUBSCRIBED")
    };
    let v = serde_json::to_value(&ev).expect("json");
    assert_eq!(v["type"], "SUBSCRIBED");
    let s = &v["subscribed"];
    assert_eq!(s["executor_info"]["executor_id"]["value"], "ex-1");
    assert_eq!(s["executor_info"]["framework_id"]["value"], "fw-1");
    assert_eq!(
        s["executor_info"]["command"]["arguments"],
        json!(["python3", "exec.py"])
    );
    assert_eq!(s["executor_info"]["command"]["shell"], false);
    assert_eq!(s["executor_info"]["data"], "Y2Zn");
    assert_eq!(
        s["executor_info"]["shutdown_grace_period"]["nanoseconds"],
        5_000_000_000i64
    );
    assert_eq!(s["executor_info"]["resources"][0]["scalar"]["value"], 0.1);
    assert_eq!(s["framework_info"]["id"]["value"], "fw-1");
    assert_eq!(s["agent_info"]["id"]["value"], "ag-1");
    assert_eq!(s["agent_info"]["port"], 5051);
    assert_eq!(s["container_id"]["value"], "fw-1/executors/ex-1");
    let back: Event = serde_json::from_value(v).expect("round trip");
    assert_eq!(back, ev);
    // What Mezzo writes, Mezzo's own Mesos reader takes back.
    let again = super::super::convert::executor_in(&executor_out(&exec, "fw-1")).expect("executor_in");
    assert_eq!(again, exec);

    let launch = Event {
        launch: Some(Launch {
            task: task_out(&task, "fw-1", "ag-1"),
        }),
        ..Event::of("LAUNCH")
    };
    let v = serde_json::to_value(&launch).expect("json");
    assert_eq!(v["launch"]["task"]["task_id"]["value"], "t-1");
    assert_eq!(v["launch"]["task"]["agent_id"]["value"], "ag-1");
    assert_eq!(v["launch"]["task"]["data"], "cGF5bG9hZA==");
    assert_eq!(v["launch"]["task"]["executor"]["executor_id"]["value"], "ex-1");
}

/// Mesos' `executor.proto`: `Event.type = LAUNCH_GROUP` with
/// `Event.launch_group` (`Event.LaunchGroup { required TaskGroupInfo
/// task_group = 1; }`), and `mesos.proto`'s `TaskGroupInfo { repeated
/// TaskInfo tasks = 1; }`: each task as LAUNCH carries it.
#[test]
fn launch_group_has_mesos_field_names_and_the_tasks_launch_carries() {
    let task = |id: &str| v1::TaskInfo {
        task_id: id.into(),
        name: id.into(),
        data: b"payload".to_vec(),
        ..Default::default()
    };
    let tasks = [task("t-1"), task("t-2")];
    let v = serde_json::to_value(launch_group(&tasks, "fw-1", "ag-1")).expect("json");
    let one =
        |t: &v1::TaskInfo| serde_json::to_value(launch(t, "fw-1", "ag-1")).expect("json")["launch"]["task"].clone();
    assert_eq!(
        v,
        json!({"type": "LAUNCH_GROUP", "launch_group": {"task_group": {"tasks": [one(&tasks[0]), one(&tasks[1])]}}})
    );
    assert_eq!(v["launch_group"]["task_group"]["tasks"][1]["task_id"]["value"], "t-2");
    assert_eq!(v["launch_group"]["task_group"]["tasks"][0]["agent_id"]["value"], "ag-1");
    let back: Event = serde_json::from_value(v).expect("round trip");
    assert_eq!(back.launch_group.map(|g| g.task_group.tasks.len()), Some(2));
}
