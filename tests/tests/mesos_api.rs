//! Issue 18: Mesos' v1 scheduler HTTP API on a real cluster, spoken as a
//! Mesos framework speaks it (JSON calls, a RecordIO event stream named by
//! `Mesos-Stream-Id`, HTTP Basic). The shapes of every event and answer
//! are checked against the field names of Mesos' own protos
//! (`include/mesos/v1/scheduler/scheduler.proto`, `mesos.proto`).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mezzo_tests::mesos::{MesosClient, Subscription, Wire, keys};
use mezzo_tests::{Cluster, ClusterSpec};
use reqwest::StatusCode;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);

fn spec(masters: usize) -> ClusterSpec {
    ClusterSpec {
        masters,
        agents: 1,
        agent_resources: "cpus:4;mem:2048;disk:2048;ports:[31000-31099]".into(),
        mesos_listen: true,
        ..Default::default()
    }
}

/// A principal `user:NAME` with the rights a framework in `role`
/// (`*`: any) running as `nobody` needs, and a Basic credential of it.
async fn framework_principal(c: &Cluster, name: &str, role: &str) -> Result<(String, String)> {
    let p = format!("user:{name}");
    c.allow(&p, &["register_framework"], role).await?;
    c.allow(&p, &["run_as"], "nobody").await?;
    Ok((name.to_owned(), c.issue_token(&p).await?))
}

fn plain(c: &Cluster, i: usize, auth: &(String, String)) -> Result<MesosClient> {
    MesosClient::new(
        &format!("http://{}", c.mesos_addr(i)?),
        None,
        Some((auth.0.as_str(), auth.1.as_str())),
    )
}

fn subscribe_body(name: &str, extra: Value) -> Value {
    let mut info = json!({ "user": "nobody", "name": name, "failover_timeout": 60.0 });
    if let (Some(i), Some(e)) = (info.as_object_mut(), extra.as_object()) {
        i.extend(e.clone());
    }
    json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": info } })
}

async fn subscribe(m: &MesosClient, body: &Value) -> Result<Subscription> {
    match m.subscribe(body).await? {
        Ok(s) => Ok(s),
        Err(a) => anyhow::bail!("SUBSCRIBE refused: {a:?}"),
    }
}

fn task(id: &str, agent: &str, command: Value) -> Value {
    json!({
        "name": id,
        "task_id": { "value": id },
        "agent_id": { "value": agent },
        "resources": [
            { "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.1 } },
            { "name": "mem", "type": "SCALAR", "scalar": { "value": 32 } }
        ],
        "command": command
    })
}

fn fid(s: &Subscription) -> Value {
    json!({ "value": s.framework_id })
}

/// Updates of `task` until a terminal one.
async fn follow(m: &MesosClient, s: &mut Subscription, seen: &mut Vec<Value>, task: &str) -> Result<Vec<Value>> {
    follow_until(m, s, seen, task, |st| {
        matches!(
            st,
            "TASK_FINISHED" | "TASK_FAILED" | "TASK_KILLED" | "TASK_ERROR" | "TASK_LOST" | "TASK_DROPPED"
        )
    })
    .await
}

/// Updates of `task` until one in a state `until` likes; every update
/// seen (of any task) is acknowledged as a Mesos framework does, when it
/// carries a uuid, and kept in `seen` (the master sends each once).
async fn follow_until(
    m: &MesosClient,
    s: &mut Subscription,
    seen: &mut Vec<Value>,
    task: &str,
    until: impl Fn(&str) -> bool,
) -> Result<Vec<Value>> {
    let mine = |seen: &[Value]| -> Vec<Value> {
        seen.iter()
            .filter(|st| st["task_id"]["value"] == task)
            .cloned()
            .collect()
    };
    if mine(seen).iter().any(|st| until(st["state"].as_str().unwrap_or(""))) {
        return Ok(mine(seen));
    }
    loop {
        let e = s.next_of("UPDATE", T, |_| true).await?;
        let st = e["update"]["status"].clone();
        s.acknowledge(m, &st).await?;
        let state = st["state"].as_str().unwrap_or("").to_owned();
        let ours = st["task_id"]["value"] == task;
        seen.push(st);
        if ours && until(&state) {
            return Ok(mine(seen));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesos_framework_runs_command_tasks_through_the_scheduler_api() -> Result<()> {
    let c = Cluster::start(spec(1)).await?;
    let result = async {
        let auth = framework_principal(&c, "mesos-fw", "dev").await?;
        let m = plain(&c, 0, &auth)?;
        let mut s = subscribe(&m, &subscribe_body("mesos-fw", json!({ "role": "dev" }))).await?;
        ensure!(s.headers["content-type"] == "application/json", "{:?}", s.headers);
        ensure!(
            s.stream_id.len() == 36 && s.framework_id.len() == 36,
            "{} {}",
            s.stream_id,
            s.framework_id
        );
        // Mesos follows SUBSCRIBED with a heartbeat at once.
        let hb = s.next(T).await?;
        ensure!(hb == json!({ "type": "HEARTBEAT" }), "{hb}");

        // OFFERS, as a framework without capabilities sees them: role "*",
        // a type on every resource, ports as ranges.
        let offers = s.next_of("OFFERS", T, |_| true).await?;
        ensure!(keys(&offers) == ["offers", "type"], "{offers}");
        let o = offers["offers"]["offers"][0].clone();
        ensure!(
            keys(&o) == ["agent_id", "framework_id", "hostname", "id", "resources"],
            "{o}"
        );
        ensure!(o["framework_id"] == fid(&s), "{o}");
        let agent = o["agent_id"]["value"].as_str().context("agent id")?.to_owned();
        for r in o["resources"].as_array().context("resources")? {
            let kind = if r["name"] == "ports" { "RANGES" } else { "SCALAR" };
            ensure!(r["type"] == kind && r["role"] == "*", "{r}");
            let want = if kind == "RANGES" {
                ["name", "ranges", "role", "type"]
            } else {
                ["name", "role", "scalar", "type"]
            };
            ensure!(keys(r) == want, "{r}");
        }
        let cpus = o["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == "cpus"))
            .context("cpus")?;
        ensure!(cpus["scalar"]["value"] == 4.0, "{cpus}");

        // Three tasks: a shell command, an argv command (argv[0] first, as
        // Mesos has it) that fails with its environment's value, and one to
        // kill.
        let tasks = json!([
            task("shell", &agent, json!({ "value": "echo hello from $MESOS_TASK_ID" })),
            task(
                "argv",
                &agent,
                json!({
                    "shell": false, "value": "/bin/sh", "arguments": ["sh", "-c", "exit $CODE"],
                    "environment": { "variables": [{ "name": "CODE", "value": "3" }] }
                })
            ),
            task("sleeper", &agent, json!({ "value": "sleep 300" })),
        ]);
        m.call_ok(
            &s.stream_id,
            &json!({
                "framework_id": fid(&s), "type": "ACCEPT",
                "accept": {
                    "offer_ids": [o["id"]],
                    "operations": [{ "type": "LAUNCH", "launch": { "task_infos": tasks } }],
                    "filters": { "refuse_seconds": 1 }
                }
            }),
        )
        .await?;
        let mut seen = Vec::new();
        let shell = follow(&m, &mut s, &mut seen, "shell").await?;
        let states: Vec<&str> = shell.iter().filter_map(|u| u["state"].as_str()).collect();
        ensure!(states.last() == Some(&"TASK_FINISHED"), "{shell:?}");
        let done = shell.last().context("final")?;
        // A TaskStatus as Mesos writes it: ids as objects, a base64 uuid of
        // 16 bytes, the source named.
        ensure!(
            keys(done) == ["agent_id", "source", "state", "task_id", "timestamp", "uuid"]
                || keys(done) == ["agent_id", "message", "source", "state", "task_id", "timestamp", "uuid"],
            "{done}"
        );
        ensure!(
            done["agent_id"]["value"] == agent.as_str() && done["source"] == "SOURCE_AGENT",
            "{done}"
        );
        use base64::Engine as _;
        let uuid = base64::engine::general_purpose::STANDARD.decode(done["uuid"].as_str().context("uuid")?)?;
        ensure!(uuid.len() == 16, "{done}");
        let argv = follow(&m, &mut s, &mut seen, "argv").await?;
        let last = argv.last().context("final")?;
        ensure!(
            last["state"] == "TASK_FAILED" && last["reason"] == "REASON_COMMAND_EXECUTOR_FAILED",
            "{argv:?}"
        );
        ensure!(last["message"].as_str().is_some_and(|m| m.contains('3')), "{last}");

        // RUNNING (its earlier updates were not acknowledged, so they come
        // again), then KILL with a kill policy: TASK_KILLED.
        follow_until(&m, &mut s, &mut seen, "sleeper", |st| st == "TASK_RUNNING").await?;
        m.call_ok(
            &s.stream_id,
            &json!({
                "framework_id": fid(&s), "type": "KILL",
                "kill": { "task_id": { "value": "sleeper" }, "agent_id": { "value": agent },
                          "kill_policy": { "grace_period": { "nanoseconds": 100_000_000 } } }
            }),
        )
        .await?;
        let killed = follow(&m, &mut s, &mut seen, "sleeper").await?;
        ensure!(killed.last().is_some_and(|u| u["state"] == "TASK_KILLED"), "{killed:?}");
        // Killing a task the master does not know is answered with its
        // state, as reconciliation tells it (a Mesos framework waits for one).
        m.call_ok(
            &s.stream_id,
            &json!({ "framework_id": fid(&s), "type": "KILL", "kill": { "task_id": { "value": "ghost" } } }),
        )
        .await?;
        let e = s
            .next_of("UPDATE", T, |e| e["update"]["status"]["task_id"]["value"] == "ghost")
            .await?;
        ensure!(
            e["update"]["status"]["state"] == "TASK_LOST" && e["update"]["status"]["reason"] == "REASON_RECONCILIATION",
            "{e}"
        );

        // Explicit reconciliation: the master answers from its own state,
        // with no uuid to acknowledge.
        m.call_ok(
            &s.stream_id,
            &json!({
                "framework_id": fid(&s), "type": "RECONCILE",
                "reconcile": { "tasks": [{ "task_id": { "value": "shell" } }, { "task_id": { "value": "nope" } }] }
            }),
        )
        .await?;
        let mut answers = Vec::new();
        while answers.len() < 2 {
            let e = s.next_of("UPDATE", T, |_| true).await?;
            answers.push(e["update"]["status"].clone());
        }
        for a in &answers {
            ensure!(a["reason"] == "REASON_RECONCILIATION" && a.get("uuid").is_none(), "{a}");
            ensure!(a["source"] == "SOURCE_MASTER", "{a}");
        }
        let of = |id: &str| answers.iter().find(|a| a["task_id"]["value"] == id).cloned();
        ensure!(
            of("shell").is_some_and(|a| a["state"] == "TASK_FINISHED"),
            "{answers:?}"
        );
        ensure!(of("nope").is_some_and(|a| a["state"] == "TASK_LOST"), "{answers:?}");

        // DECLINE, SUPPRESS, REVIVE and the calls Mezzo need not act on.
        let offers = s.next_of("OFFERS", T, |_| true).await?;
        let ids: Vec<Value> = offers["offers"]["offers"]
            .as_array()
            .context("offers")?
            .iter()
            .map(|o| o["id"].clone())
            .collect();
        m.call_ok(
            &s.stream_id,
            &json!({ "framework_id": fid(&s), "type": "DECLINE",
                     "decline": { "offer_ids": ids, "filters": { "refuse_seconds": 0.5 } } }),
        )
        .await?;
        for kind in ["SUPPRESS", "REVIVE", "REQUEST"] {
            m.call_ok(&s.stream_id, &json!({ "framework_id": fid(&s), "type": kind }))
                .await?;
        }
        // Revived: offers come again.
        s.next_of("OFFERS", T, |_| true).await?;

        // The master's own view agrees: the acknowledged tasks are done.
        let state = c
            .wait_master("three completed tasks", |st| {
                st["completed_tasks"].as_array().is_some_and(|t| t.len() == 3)
            })
            .await?;
        let fw = &state["frameworks"][0];
        ensure!(fw["name"] == "mesos-fw" && fw["roles"] == json!(["dev"]), "{fw}");

        // UPDATE_FRAMEWORK: a new role needs the right to register in it;
        // once given, it applies at once (200) without a new stream.
        let update = json!({ "framework_id": fid(&s), "type": "UPDATE_FRAMEWORK", "update_framework": {
            "framework_info": { "user": "nobody", "name": "mesos-fw", "role": "eng", "failover_timeout": 30 } } });
        let a = m.call(&s.stream_id, &update).await?;
        ensure!(a.status == StatusCode::FORBIDDEN, "{a:?}");
        c.allow("user:mesos-fw", &["register_framework"], "eng").await?;
        let a = m.call(&s.stream_id, &update).await?;
        ensure!(a.status == StatusCode::OK, "{a:?}");
        c.wait_master("the framework in role eng", |st| {
            st["frameworks"][0]["roles"] == json!(["eng"])
        })
        .await?;

        // TEARDOWN ends the stream and the framework.
        m.call_ok(&s.stream_id, &json!({ "framework_id": fid(&s), "type": "TEARDOWN" }))
            .await?;
        s.until_end(T).await?;
        c.wait_master("no frameworks", |st| {
            st["frameworks"].as_array().is_some_and(|f| f.is_empty())
        })
        .await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_are_refused_as_mesos_refuses_them_and_change_nothing() -> Result<()> {
    let c = Cluster::start(spec(1)).await?;
    let result = async {
        let auth = framework_principal(&c, "fw", "*").await?;
        let m = plain(&c, 0, &auth)?;
        let json_ct = ("Content-Type", "application/json");
        let post = |headers: Vec<(&'static str, String)>, body: String| {
            let m = m.clone();
            async move {
                let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                m.post_raw("/api/v1/scheduler", &h, &body).await
            }
        };
        let expect = |a: &mezzo_tests::mesos::Answer, status: StatusCode, says: &str| {
            ensure!(a.status == status && a.body.contains(says), "wanted {status} {says:?}, got {a:?}");
            Ok(())
        };
        // Without a credential, and with another principal's name.
        let anon = MesosClient::new(&m.base, None, None)?;
        let a = anon
            .post_raw("/api/v1/scheduler", &[json_ct], &subscribe_body("x", json!({})).to_string())
            .await?;
        expect(&a, StatusCode::UNAUTHORIZED, "credential")?;
        ensure!(
            a.headers
                .get_all("www-authenticate")
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.starts_with("Basic"))),
            "{a:?}"
        );
        // The redirects need a credential; /version, like /health, does not.
        for (path, want) in [
            ("/redirect", StatusCode::UNAUTHORIZED),
            ("/master/redirect", StatusCode::UNAUTHORIZED),
            ("/version", StatusCode::OK),
        ] {
            let got = reqwest::get(format!("{}{path}", m.base)).await?.status();
            ensure!(got == want, "{path}: {got}");
        }
        // Only Mesos' routes challenge for Basic: a browser meeting the
        // challenge on the dashboard's API would prompt for a password.
        let a = anon.post_raw("/api/v1/tasks", &[json_ct], "{}").await?;
        ensure!(
            a.status == StatusCode::UNAUTHORIZED
                && !a
                    .headers
                    .get_all("www-authenticate")
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|v| v.starts_with("Basic"))),
            "{a:?}"
        );
        let wrong = MesosClient::new(&m.base, None, Some(("someone-else", auth.1.as_str())))?;
        let a = wrong.subscribe(&subscribe_body("x", json!({}))).await?;
        ensure!(a.as_ref().err().is_some_and(|a| a.status == StatusCode::UNAUTHORIZED), "{:?}", a.err());
        // A principal without the right to register in the role.
        let stranger = c.issue_token("user:stranger").await?;
        let s = MesosClient::new(&m.base, None, Some(("stranger", stranger.as_str())))?;
        let a = s.subscribe(&subscribe_body("x", json!({}))).await?;
        ensure!(a.as_ref().err().is_some_and(|a| a.status == StatusCode::FORBIDDEN), "{:?}", a.err());

        // Malformed requests.
        let sub = subscribe_body("fw", json!({})).to_string();
        expect(&post(vec![], sub.clone()).await?, StatusCode::BAD_REQUEST, "Content-Type")?;
        let text = ("Content-Type", "text/plain".to_owned());
        expect(&post(vec![text], sub.clone()).await?, StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json")?;
        let html = vec![
            ("Content-Type", "application/json".to_owned()),
            ("Accept", "text/html".to_owned()),
        ];
        expect(&post(html, sub.clone()).await?, StatusCode::NOT_ACCEPTABLE, "Accept")?;
        let ct = || vec![("Content-Type", "application/json".to_owned())];
        expect(&post(ct(), "{not json".into()).await?, StatusCode::BAD_REQUEST, "parse")?;
        expect(&post(ct(), "[1,2]".into()).await?, StatusCode::BAD_REQUEST, "parse")?;
        let with_stream = vec![
            ("Content-Type", "application/json".to_owned()),
            ("Mesos-Stream-Id", "x".to_owned()),
        ];
        expect(&post(with_stream, sub.clone()).await?, StatusCode::BAD_REQUEST, "must not include")?;
        let roles = subscribe_body("fw", json!({ "roles": ["a"] })).to_string();
        expect(&post(ct(), roles).await?, StatusCode::BAD_REQUEST, "MULTI_ROLE")?;
        let nameless = json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": { "user": "nobody", "name": "" } } });
        expect(&post(ct(), nameless.to_string()).await?, StatusCode::BAD_REQUEST, "name")?;
        let no_info = json!({ "type": "SUBSCRIBE" });
        expect(&post(ct(), no_info.to_string()).await?, StatusCode::BAD_REQUEST, "subscribe")?;
        // On a connection of its own: the master answers before reading the
        // body and closes it, which a pooled connection would trip over.
        let huge = format!("{{\"type\":\"SUBSCRIBE\",\"pad\":\"{}\"}}", "x".repeat(5 << 20));
        let alone = MesosClient::new(&m.base, None, Some((auth.0.as_str(), auth.1.as_str())))?;
        let a = alone
            .post_raw("/api/v1/scheduler", &[json_ct], &huge)
            .await?;
        ensure!(a.status == StatusCode::PAYLOAD_TOO_LARGE, "{:?}", a.status);
        let a = m.call("any", &json!({ "type": "TEARDOWN" })).await?;
        expect(&a, StatusCode::BAD_REQUEST, "framework_id")?;

        // A real subscription, then calls that break the rules.
        let mut s = subscribe(&m, &subscribe_body("fw", json!({}))).await?;
        let offers = s.next_of("OFFERS", T, |_| true).await?;
        let o = offers["offers"]["offers"][0].clone();
        let f = fid(&s);
        let teardown = json!({ "framework_id": f, "type": "TEARDOWN" });
        let a = m
            .post_raw("/api/v1/scheduler", &[json_ct], &teardown.to_string())
            .await?;
        expect(&a, StatusCode::BAD_REQUEST, "Mesos-Stream-Id")?;
        expect(&m.call("wrong-stream", &teardown).await?, StatusCode::FORBIDDEN, "stream ID")?;
        let unknown = json!({ "framework_id": { "value": "3f1c1d6e-7f43-4a4c-9d57-2f1b0a9e0c11" }, "type": "REVIVE" });
        expect(&m.call(&s.stream_id, &unknown).await?, StatusCode::FORBIDDEN, "stream ID")?;
        let odd = json!({ "framework_id": f, "type": "FLY" });
        expect(&m.call(&s.stream_id, &odd).await?, StatusCode::BAD_REQUEST, "FLY")?;
        let no_kill = json!({ "framework_id": f, "type": "KILL" });
        expect(&m.call(&s.stream_id, &no_kill).await?, StatusCode::BAD_REQUEST, "'kill'")?;
        let bad_uuid = json!({ "framework_id": f, "type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": o["agent_id"], "task_id": { "value": "t" }, "uuid": "%%%" } });
        expect(&m.call(&s.stream_id, &bad_uuid).await?, StatusCode::BAD_REQUEST, "base64")?;
        let short_uuid = json!({ "framework_id": f, "type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": o["agent_id"], "task_id": { "value": "t" }, "uuid": "AAAA" } });
        expect(&m.call(&s.stream_id, &short_uuid).await?, StatusCode::BAD_REQUEST, "16 bytes")?;
        // Well formed but of nothing: accepted (202) and dropped, as on Mesos.
        let of_nothing = json!({ "framework_id": f, "type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": { "value": "3f1c1d6e-7f43-4a4c-9d57-2f1b0a9e0c11" }, "task_id": { "value": "t" },
            "uuid": "AAAAAAAAAAAAAAAAAAAAAA==" } });
        m.call_ok(&s.stream_id, &of_nothing).await?;
        let agent = o["agent_id"]["value"].as_str().context("agent")?.to_owned();
        let unparsable = json!({ "framework_id": f, "type": "ACCEPT", "accept": { "offer_ids": [o["id"]],
            "operations": [{ "type": "LAUNCH", "launch": { "task_infos": [{ "name": "x", "task_id": "x" }] } }] } });
        expect(&m.call(&s.stream_id, &unparsable).await?, StatusCode::BAD_REQUEST, "parse")?;
        let grow = json!({ "framework_id": f, "type": "ACCEPT", "accept": { "offer_ids": [o["id"]],
            "operations": [{ "type": "GROW_VOLUME", "grow_volume": {} }] } });
        expect(&m.call(&s.stream_id, &grow).await?, StatusCode::BAD_REQUEST, "GROW_VOLUME")?;
        // A volume of unreserved disk: Mesos' error, and nothing changed.
        let create = json!({ "framework_id": f, "type": "ACCEPT", "accept": { "offer_ids": [o["id"]],
            "operations": [{ "type": "CREATE", "create": { "volumes": [{
                "name": "disk", "type": "SCALAR", "scalar": { "value": 8 }, "role": "*",
                "disk": { "persistence": { "id": "v" }, "volume": { "mode": "RW", "container_path": "v" } } }] } }] } });
        expect(&m.call(&s.stream_id, &create).await?, StatusCode::BAD_REQUEST, "reserved")?;
        // A launch that parses but cannot run is answered 202, as on Mesos,
        // and each task's update says why (clients do not read answers).
        // Each on an offer of its own: a refused launch gives its offers back.
        let accept = |tasks: Value| {
            json!({ "framework_id": f, "type": "ACCEPT", "accept": {
                "operations": [{ "type": "LAUNCH", "launch": { "task_infos": tasks } }],
                "filters": { "refuse_seconds": 0.1 } } })
        };
        let mut huge = task("huge", &agent, json!({ "value": "true" }));
        huge["resources"][0]["scalar"]["value"] = json!(1000);
        let mut set = task("set", &agent, json!({ "value": "true" }));
        set["resources"] = json!([{ "name": "colors", "type": "SET", "set": { "item": ["red"] } },
                                  { "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.1 } }]);
        let mut exec = task("exec", &agent, json!({ "value": "true" }));
        exec["executor"] = json!({ "executor_id": { "value": "e" }, "command": { "value": "x" } });
        let twins = json!([task("twin", &agent, json!({ "value": "true" })), task("twin", &agent, json!({ "value": "true" }))]);
        let mut offer = o.clone();
        for (mut body, id, says) in [
            (accept(json!([huge])), "huge", "asks for"),
            (accept(json!([set])), "set", "SET"),
            (accept(json!([exec])), "exec", "executor"),
            (accept(twins), "twin", "twin"),
        ] {
            body["accept"]["offer_ids"] = json!([offer["id"]]);
            m.call_ok(&s.stream_id, &body).await?;
            let e = s
                .next_of("UPDATE", T, |e| e["update"]["status"]["task_id"]["value"] == id)
                .await?;
            let st = &e["update"]["status"];
            ensure!(
                st["state"] == "TASK_ERROR"
                    && st["reason"] == "REASON_TASK_INVALID"
                    && st["source"] == "SOURCE_MASTER"
                    && st.get("uuid").is_none()
                    && st["message"].as_str().is_some_and(|m| m.contains(says)),
                "{id}: {e}"
            );
            let next = s.next_of("OFFERS", T, |_| true).await?;
            offer = next["offers"]["offers"][0].clone();
        }
        let stale = json!({ "framework_id": f, "type": "ACCEPT", "accept": {
            "offer_ids": [{ "value": "3f1c1d6e-7f43-4a4c-9d57-2f1b0a9e0c11" }],
            "operations": [{ "type": "LAUNCH", "launch": { "task_infos": [task("t", &agent, json!({ "value": "true" }))] } }] } });
        m.call_ok(&s.stream_id, &stale).await?;
        let e = s
            .next_of("UPDATE", T, |e| e["update"]["status"]["task_id"]["value"] == "t")
            .await?;
        // TASK_DROPPED, told as TASK_LOST to a framework not PARTITION_AWARE.
        let st = &e["update"]["status"];
        ensure!(st["state"] == "TASK_LOST" && st["reason"] == "REASON_INVALID_OFFERS", "{e}");

        // Nothing of it launched a task; the framework is still subscribed.
        let st = c.master_state().await?;
        ensure!(
            st["tasks"].as_array().is_some_and(Vec::is_empty)
                && st["completed_tasks"].as_array().is_some_and(Vec::is_empty),
            "{st}"
        );
        m.call_ok(&s.stream_id, &json!({ "framework_id": f, "type": "REVIVE" }))
            .await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_redirect_to_the_leader_and_a_framework_fails_over_to_a_new_stream() -> Result<()> {
    let c = Cluster::start(spec(3)).await?;
    let result = async {
        let auth = framework_principal(&c, "ha-fw", "*").await?;
        let leader = c.wait_leader().await?;
        let follower = (leader + 1) % 3;
        // The registry learns each leader's --mesos-listen address.
        let want = format!("//{}/api/v1/scheduler", c.mesos_addr(leader)?);
        let deadline = tokio::time::Instant::now() + T;
        let body = subscribe_body("ha-fw", json!({}));
        loop {
            let a = plain(&c, follower, &auth)?
                .post_raw(
                    "/api/v1/scheduler",
                    &[("Content-Type", "application/json")],
                    &body.to_string(),
                )
                .await?;
            if a.status == StatusCode::TEMPORARY_REDIRECT && a.headers["location"] == want.as_str() {
                break;
            }
            ensure!(tokio::time::Instant::now() < deadline, "no redirect to {want}: {a:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The TLS port redirects to the leader's TLS port.
        let tls = MesosClient::new(
            &format!("https://{}", c.masters()[follower]),
            Some(&c.anonymous_transport()?),
            Some((auth.0.as_str(), auth.1.as_str())),
        )?;
        let a = tls
            .post_raw(
                "/api/v1/scheduler",
                &[("Content-Type", "application/json")],
                &body.to_string(),
            )
            .await?;
        ensure!(
            a.status == StatusCode::TEMPORARY_REDIRECT
                && a.headers["location"] == format!("//{}/api/v1/scheduler", c.masters()[leader]).as_str(),
            "{a:?}"
        );
        // /redirect and /version, as Mesos tools read them.
        let get = |url: String| {
            let auth = auth.clone();
            async move {
                let r = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()?
                    .get(url)
                    .basic_auth(auth.0.clone(), Some(auth.1.clone()))
                    .send()
                    .await?;
                anyhow::Ok((r.status(), r.headers().clone(), r.text().await?))
            }
        };
        let (st, h, _) = get(format!("http://{}/master/redirect", c.mesos_addr(follower)?)).await?;
        ensure!(
            st == StatusCode::TEMPORARY_REDIRECT && h["location"] == format!("//{}", c.mesos_addr(leader)?).as_str(),
            "{st} {h:?}"
        );
        let (st, _, v) = get(format!("http://{}/version", c.mesos_addr(follower)?)).await?;
        let v: Value = serde_json::from_str(&v)?;
        let numeric = v["version"]
            .as_str()
            .is_some_and(|s| s.split('.').count() == 3 && s.split('.').all(|p| p.parse::<u32>().is_ok()));
        ensure!(st == StatusCode::OK && numeric, "{v}");

        // Subscribe at the leader (TLS), then again with the framework id
        // (plain HTTP): the old stream hears ERROR and ends, its id is
        // refused, the new one works and gets offers.
        let at_leader = MesosClient::new(
            &format!("https://{}", c.masters()[leader]),
            Some(&c.anonymous_transport()?),
            Some((auth.0.as_str(), auth.1.as_str())),
        )?;
        let mut first = subscribe(&at_leader, &body).await?;
        first.next_of("OFFERS", T, |_| true).await?;
        let again = json!({ "type": "SUBSCRIBE", "framework_id": fid(&first), "subscribe": { "framework_info": {
            "user": "nobody", "name": "ha-fw", "failover_timeout": 60.0, "id": fid(&first) } } });
        let m = plain(&c, leader, &auth)?;
        let mut second = subscribe(&m, &again).await?;
        ensure!(
            second.framework_id == first.framework_id && second.stream_id != first.stream_id,
            "{} {}",
            second.stream_id,
            first.stream_id
        );
        let old = first.until_end(T).await?;
        ensure!(
            old.iter()
                .any(|e| e["type"] == "ERROR" && e["error"]["message"].is_string()),
            "{old:?}"
        );
        let revive = json!({ "framework_id": fid(&second), "type": "REVIVE" });
        let a = m.call(&first.stream_id, &revive).await?;
        ensure!(a.status == StatusCode::FORBIDDEN, "{a:?}");
        m.call_ok(&second.stream_id, &revive).await?;
        second.next_of("OFFERS", T, |_| true).await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesos_framework_speaks_protobuf() -> Result<()> {
    let c = Cluster::start(spec(1)).await?;
    let result = async {
        let auth = framework_principal(&c, "pb-fw", "*").await?;
        let m = plain(&c, 0, &auth)?;
        let sub = subscribe_body("pb-fw", json!({}));
        let pb = Wire::Protobuf.media_type();

        // Bad input: not a Call, a text body, an Accept of neither.
        let a = m
            .post_bytes(
                "/api/v1/scheduler",
                &[("Content-Type", pb)],
                b"{\"type\":\"SUBSCRIBE\"}".to_vec(),
            )
            .await?;
        ensure!(a.status == StatusCode::BAD_REQUEST && a.body.contains("Call"), "{a:?}");
        let a = m
            .post_bytes(
                "/api/v1/scheduler",
                &[("Content-Type", "text/plain")],
                Wire::Protobuf.encode(&sub)?,
            )
            .await?;
        ensure!(a.status == StatusCode::UNSUPPORTED_MEDIA_TYPE, "{a:?}");
        let a = m
            .post_bytes(
                "/api/v1/scheduler",
                &[("Content-Type", pb), ("Accept", "text/html")],
                Wire::Protobuf.encode(&sub)?,
            )
            .await?;
        ensure!(a.status == StatusCode::NOT_ACCEPTABLE, "{a:?}");

        let mut s = match m.subscribe_in(Wire::Protobuf, &sub).await? {
            Ok(s) => s,
            Err(a) => anyhow::bail!("SUBSCRIBE refused: {a:?}"),
        };
        ensure!(s.headers["content-type"] == pb, "{:?}", s.headers);
        ensure!(s.framework_id.len() == 36, "{}", s.framework_id);
        let hb = s.next(T).await?;
        ensure!(hb == json!({ "type": "HEARTBEAT" }), "{hb}");
        let offers = s.next_of("OFFERS", T, |_| true).await?;
        let o = offers["offers"]["offers"][0].clone();
        ensure!(o["framework_id"] == fid(&s), "{o}");
        let agent = o["agent_id"]["value"].as_str().context("agent id")?.to_owned();
        ensure!(
            o["resources"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["name"] == "ports" && r["type"] == "RANGES")),
            "{o}"
        );

        m.call_ok_in(
            Wire::Protobuf,
            &s.stream_id,
            &json!({
                "framework_id": fid(&s), "type": "ACCEPT",
                "accept": {
                    "offer_ids": [o["id"]],
                    "operations": [{ "type": "LAUNCH", "launch": { "task_infos": [
                        task("pb-true", &agent, json!({ "value": "true" }))
                    ] } }],
                    "filters": { "refuse_seconds": 1 }
                }
            }),
        )
        .await?;
        // `follow` acknowledges every update in protobuf (the stream's
        // wire) until the task ends.
        let mut seen = Vec::new();
        let ups = follow(&m, &mut s, &mut seen, "pb-true").await?;
        let last = ups.last().context("final")?;
        ensure!(last["state"] == "TASK_FINISHED", "{ups:?}");
        ensure!(last["uuid"].as_str().is_some_and(|u| u.len() == 24), "{last}");
        ensure!(last["agent_id"]["value"] == agent.as_str(), "{last}");
        // A non-SUBSCRIBE call that is not a Call is refused as text.
        let a = m
            .post_bytes(
                "/api/v1/scheduler",
                &[("Content-Type", pb), ("Mesos-Stream-Id", s.stream_id.as_str())],
                vec![0x0a, 0x7f],
            )
            .await?;
        ensure!(a.status == StatusCode::BAD_REQUEST && a.body.contains("parse"), "{a:?}");

        m.call_ok_in(
            Wire::Protobuf,
            &s.stream_id,
            &json!({ "framework_id": fid(&s), "type": "TEARDOWN" }),
        )
        .await?;
        s.until_end(T).await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

/// Handles events until `pick` takes one: every update is acknowledged
/// (as a Mesos framework does) and shown to `pick` as ("UPDATE", status);
/// every offer as ("OFFER", offer), and declined at once if not taken
/// (an offer left outstanding would hold the volume it lists).
async fn until(
    m: &MesosClient,
    s: &mut Subscription,
    what: &str,
    pick: impl Fn(&str, &Value) -> bool,
) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + T;
    let mut taken = None;
    while taken.is_none() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let e = s.next(left).await.with_context(|| format!("waiting for {what}"))?;
        if e["type"] == "UPDATE" {
            let st = &e["update"]["status"];
            s.acknowledge(m, st).await?;
            if pick("UPDATE", st) {
                taken = Some(st.clone());
            }
        }
        for o in e["offers"]["offers"].as_array().into_iter().flatten() {
            if taken.is_none() && pick("OFFER", o) {
                taken = Some(o.clone());
                continue;
            }
            // It may be rescinded already (a new volume rescinds its agent's offers).
            let decline = json!({ "framework_id": { "value": s.framework_id }, "type": "DECLINE",
                "decline": { "offer_ids": [o["id"]], "filters": { "refuse_seconds": 0 } } });
            m.call_in(s.wire, &s.stream_id, &decline).await?;
        }
    }
    taken.context(what.to_owned())
}

/// The resource of an offer that is persistent volume `id`.
fn volume_in<'a>(offer: &'a Value, id: &str) -> Option<&'a Value> {
    offer["resources"]
        .as_array()?
        .iter()
        .find(|r| r["disk"]["persistence"]["id"] == id)
}

/// The next offer that lists volume `id` (others declined).
async fn offer_listing(m: &MesosClient, s: &mut Subscription, id: &str) -> Result<Value> {
    until(m, s, &format!("an offer of {id}"), |k, o| {
        k == "OFFER" && volume_in(o, id).is_some()
    })
    .await
}

/// The offer's disk reserved for `role` that is no volume.
fn plain_disk(offer: &Value, role: &str) -> f64 {
    let rs = offer["resources"].as_array().into_iter().flatten();
    rs.filter(|r| r["name"] == "disk" && r["role"] == role && r.get("disk").is_none())
        .filter_map(|r| r["scalar"]["value"].as_f64())
        .sum()
}

/// The terminal update of `task`.
async fn end_of(m: &MesosClient, s: &mut Subscription, task: &str) -> Result<Value> {
    until(m, s, &format!("the end of {task}"), |kind, st| {
        kind == "UPDATE"
            && st["task_id"]["value"] == task
            && !matches!(
                st["state"].as_str(),
                Some("TASK_STAGING" | "TASK_STARTING" | "TASK_RUNNING")
            )
    })
    .await
}

/// A persistent volume through the Mesos API, as a Mesos framework uses
/// one (docs/mesos-api.md, "Persistent volumes"; DESIGN.md, "Resources"):
/// RESERVE and CREATE, the volume in the next offer (its disk not offered
/// again as plain reserved disk), a task that writes into it, one that
/// names a volume the agent lacks (TASK_ERROR), one that reads the file
/// back, then DESTROY, and the next offer without it.
async fn a_volume_lives_through_the_mesos_api(wire: Wire) -> Result<()> {
    let c = Cluster::start(spec(1)).await?;
    let result = async {
        let auth = framework_principal(&c, "vol-fw", "eng").await?;
        let m = plain(&c, 0, &auth)?;
        let body = subscribe_body("vol-fw", json!({ "role": "eng", "principal": "vol-fw" }));
        let mut s = match m.subscribe_in(wire, &body).await? {
            Ok(s) => s,
            Err(a) => anyhow::bail!("SUBSCRIBE refused: {a:?}"),
        };
        let f = fid(&s);
        let accept = |offer: &Value, operations: Value| {
            json!({ "framework_id": f, "type": "ACCEPT", "accept": {
                "offer_ids": [offer["id"]], "operations": operations, "filters": { "refuse_seconds": 0 } } })
        };
        let o = until(&m, &mut s, "a first offer", |kind, _| kind == "OFFER").await?;
        let agent = o["agent_id"]["value"].as_str().context("agent id")?.to_owned();
        let reserved = |name: &str, amount: u32, extra: Value| {
            let mut r = json!({ "name": name, "type": "SCALAR", "scalar": { "value": amount },
                                "role": "eng", "reservation": { "principal": "vol-fw" } });
            if let (Some(r), Some(e)) = (r.as_object_mut(), extra.as_object()) {
                r.extend(e.clone());
            }
            r
        };
        let v1 = reserved(
            "disk",
            64,
            json!({ "disk": { "persistence": { "id": "v1", "principal": "vol-fw" },
                              "volume": { "mode": "RW", "container_path": "data" } } }),
        );
        // With cpus and memory: a reservation of disk alone is too small
        // to offer (Mezzo's minimum offer, as Mesos' minimum allocatable
        // resources).
        let reservation = [
            reserved("cpus", 1, json!({})),
            reserved("mem", 256, json!({})),
            reserved("disk", 128, json!({})),
        ];
        let ops = json!([
            { "type": "RESERVE", "reserve": { "resources": reservation } },
            { "type": "CREATE", "create": { "volumes": [v1] } }
        ]);
        m.call_ok_in(wire, &s.stream_id, &accept(&o, ops)).await?;

        // Offered: the volume as reserved disk with its persistence, and
        // only the rest of the reservation as plain reserved disk (in no
        // offer more than that, while the volume exists).
        let most = std::cell::Cell::new(0.0f64);
        let o = until(&m, &mut s, "an offer of v1 and the rest of the reservation", |k, o| {
            most.set(most.get().max(plain_disk(o, "eng")));
            k == "OFFER" && volume_in(o, "v1").is_some() && plain_disk(o, "eng") == 64.0
        })
        .await?;
        ensure!(
            most.get() <= 64.0,
            "the volume's disk offered again: {} MiB",
            most.get()
        );
        let vol = volume_in(&o, "v1").context("v1")?.clone();
        ensure!(
            vol["name"] == "disk" && vol["scalar"]["value"] == 64.0 && vol["role"] == "eng",
            "{vol}"
        );
        ensure!(
            vol["disk"]["volume"] == json!({ "mode": "RW", "container_path": "v1" }),
            "{vol}"
        );

        // A task writes into it, mounted where the framework says.
        let mut mine = vol.clone();
        mine["disk"]["volume"]["container_path"] = json!("data");
        // One task with a volume among its resources, in a LAUNCH.
        let launch = |id: &str, command: &str, volume: Value| {
            let mut t = task(id, &agent, json!({ "value": command }));
            if let Some(rs) = t["resources"].as_array_mut() {
                rs.push(volume);
            }
            json!([{ "type": "LAUNCH", "launch": { "task_infos": [t] } }])
        };
        let writer = launch("writer", "echo kept > data/file", mine);
        m.call_ok_in(wire, &s.stream_id, &accept(&o, writer)).await?;
        let end = end_of(&m, &mut s, "writer").await?;
        ensure!(end["state"] == "TASK_FINISHED", "{end}");

        // A volume the agent does not have: the launch fails, as Mezzo
        // fails it, and the offer comes back.
        let o = offer_listing(&m, &mut s, "v1").await?;
        let mut nope = vol.clone();
        nope["disk"]["persistence"]["id"] = json!("nope");
        m.call_ok_in(wire, &s.stream_id, &accept(&o, launch("ghost", "true", nope)))
            .await?;
        let end = end_of(&m, &mut s, "ghost").await?;
        ensure!(
            end["state"] == "TASK_ERROR" && end["message"].as_str().is_some_and(|m| m.contains("nope")),
            "{end}"
        );

        // The next task reads the file back, at the offered path.
        let o = offer_listing(&m, &mut s, "v1").await?;
        let offered = volume_in(&o, "v1").context("v1")?.clone();
        let reader = launch("reader", "test \"$(cat v1/file)\" = kept", offered);
        m.call_ok_in(wire, &s.stream_id, &accept(&o, reader)).await?;
        let end = end_of(&m, &mut s, "reader").await?;
        ensure!(end["state"] == "TASK_FINISHED", "{end}");

        // DESTROY: the volume is gone from the offers, its disk back as
        // plain reserved disk.
        let o = offer_listing(&m, &mut s, "v1").await?;
        let gone = volume_in(&o, "v1").context("v1")?.clone();
        let ops = json!([{ "type": "DESTROY", "destroy": { "volumes": [gone] } }]);
        m.call_ok_in(wire, &s.stream_id, &accept(&o, ops)).await?;
        let o = until(&m, &mut s, "an offer of the whole reservation", |k, o| {
            k == "OFFER" && plain_disk(o, "eng") == 128.0
        })
        .await?;
        ensure!(volume_in(&o, "v1").is_none(), "{o}");
        c.wait_master("no volumes", |st| st["volumes"].as_array().is_none_or(|v| v.is_empty()))
            .await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesos_framework_keeps_data_in_a_persistent_volume() -> Result<()> {
    a_volume_lives_through_the_mesos_api(Wire::Json).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_framework_keeps_data_in_a_persistent_volume() -> Result<()> {
    a_volume_lives_through_the_mesos_api(Wire::Protobuf).await
}
