//! Mesos' operator reads on a real cluster, as Mesos tools make them:
//! the v0 state JSON (`/master/state`, `/state.json`), the v1 operator
//! calls on `POST /api/v1` and its SUBSCRIBE event stream, with a task
//! run through Mesos' scheduler API. Field names are checked against
//! Mesos' `master.proto` and `mesos.proto`, and the v0 writers' names.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use mezzo_master::mesos::recordio::Decoder;
use mezzo_tests::mesos::{MesosClient, Subscription, keys};
use mezzo_tests::{Cluster, ClusterSpec};
use reqwest::StatusCode;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);

type Auth = (String, String);

/// An operator's plain-HTTP client of one master.
struct Operator {
    http: reqwest::Client,
    base: String,
    auth: Option<Auth>,
}

impl Operator {
    fn new(base: String, auth: Option<&Auth>) -> Result<Operator> {
        Ok(Operator {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()?,
            base,
            auth: auth.cloned(),
        })
    }

    fn with_auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// GET `path`: status, Location, body.
    async fn get(&self, path: &str) -> Result<(StatusCode, String, String)> {
        let resp = self
            .with_auth(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await?;
        let status = resp.status();
        let location = header(&resp, "location");
        Ok((status, location, resp.text().await?))
    }

    /// POST `body` to `/api/v1` with `ctype`.
    async fn post(&self, ctype: &str, body: &str) -> Result<(StatusCode, String, String)> {
        let resp = self
            .with_auth(self.http.post(format!("{}/api/v1", self.base)))
            .header("Content-Type", ctype)
            .header("Accept", "application/json")
            .body(body.to_owned())
            .send()
            .await?;
        let status = resp.status();
        let location = header(&resp, "location");
        Ok((status, location, resp.text().await?))
    }

    /// A call that must be answered 200 with `{"type": kind, "kind": ...}`.
    async fn call(&self, kind: &str) -> Result<Value> {
        let (status, _, body) = self
            .post("application/json", &json!({ "type": kind }).to_string())
            .await?;
        ensure!(status == StatusCode::OK, "{kind}: {status} {body}");
        let v: Value = serde_json::from_str(&body)?;
        let field = kind.to_ascii_lowercase();
        ensure!(v["type"] == kind && keys(&v) == [field.as_str(), "type"], "{kind}: {v}");
        Ok(v[field.as_str()].clone())
    }

    /// `/master/state` and the like, as JSON.
    async fn state(&self, path: &str) -> Result<Value> {
        let (status, _, body) = self.get(path).await?;
        ensure!(status == StatusCode::OK, "{path}: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// Opens the operator SUBSCRIBE stream.
    async fn subscribe(&self) -> Result<Events> {
        let resp = self
            .with_auth(self.http.post(format!("{}/api/v1", self.base)))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .timeout(Duration::from_secs(3600))
            .body(json!({ "type": "SUBSCRIBE" }).to_string())
            .send()
            .await?;
        ensure!(resp.status() == StatusCode::OK, "SUBSCRIBE: {}", resp.status());
        ensure!(
            header(&resp, "content-type") == "application/json",
            "{:?}",
            resp.headers()
        );
        Ok(Events {
            resp,
            decoder: Decoder::new(16 << 20),
        })
    }
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// An operator event stream.
struct Events {
    resp: reqwest::Response,
    decoder: Decoder,
}

impl Events {
    async fn next(&mut self, limit: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(rec) = self.decoder.next_record()? {
                return Ok(serde_json::from_slice(&rec)?);
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .context("no event in time")??
            {
                Some(c) => self.decoder.push(&c),
                None => bail!("the stream ended"),
            }
        }
    }

    /// The next event of `kind` passing `ok`; others are skipped.
    async fn next_of(&mut self, kind: &str, ok: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + T;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self
                .next(left)
                .await
                .with_context(|| format!("waiting for {kind}; skipped {skipped:?}"))?;
            if e["type"] == kind && ok(&e) {
                return Ok(e);
            }
            skipped.push(e["type"].clone());
        }
    }
}

async fn principal(c: &Cluster, name: &str, rules: &[(&[&str], &str)]) -> Result<Auth> {
    let p = format!("user:{name}");
    for (actions, object) in rules {
        c.allow(&p, actions, object).await?;
    }
    Ok((name.to_owned(), c.issue_token(&p).await?))
}

fn resource<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|r| r["name"] == name)
}

/// Subscribes a Mesos framework and launches `sleep 300` as task `t1`
/// on the first offer; waits for it to run.
async fn run_task(m: &MesosClient) -> Result<(Subscription, String)> {
    let body = json!({
        "type": "SUBSCRIBE",
        "subscribe": { "framework_info": { "user": "nobody", "name": "op-fw", "failover_timeout": 60.0 } }
    });
    let mut s = match m.subscribe(&body).await? {
        Ok(s) => s,
        Err(a) => bail!("SUBSCRIBE refused: {a:?}"),
    };
    let fid = json!({ "value": s.framework_id });
    let offers = s.next_of("OFFERS", T, |_| true).await?;
    let o = offers["offers"]["offers"][0].clone();
    let agent = o["agent_id"]["value"].as_str().context("agent id")?.to_owned();
    let task = json!({
        "name": "t1", "task_id": { "value": "t1" }, "agent_id": { "value": agent },
        "resources": [
            { "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.1 } },
            { "name": "mem", "type": "SCALAR", "scalar": { "value": 32 } }
        ],
        "command": { "value": "sleep 300" }
    });
    m.call_ok(
        &s.stream_id,
        &json!({
            "framework_id": fid, "type": "ACCEPT",
            "accept": { "offer_ids": [o["id"]], "operations": [{ "type": "LAUNCH", "launch": { "task_infos": [task] } }] }
        }),
    )
    .await?;
    loop {
        let e = s.next_of("UPDATE", T, |_| true).await?;
        let st = e["update"]["status"].clone();
        s.acknowledge(m, &st).await?;
        match st["state"].as_str() {
            Some("TASK_RUNNING") => return Ok((s, agent)),
            Some("TASK_STAGING" | "TASK_STARTING") => {}
            other => bail!("t1 did not run: {other:?} {st}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesos_tools_read_the_cluster_through_the_operator_api() -> Result<()> {
    let c = Cluster::start(ClusterSpec {
        masters: 3,
        agents: 1,
        agent_resources: "cpus:4;mem:2048;disk:2048;ports:[31000-31099]".into(),
        mesos_listen: true,
        ..Default::default()
    })
    .await?;
    let result = async {
        let leader = c.wait_leader().await?;
        let follower = (leader + 1) % 3;
        let fw = principal(&c, "op-fw", &[(&["register_framework"], "*"), (&["run_as"], "nobody")]).await?;
        let ops = principal(&c, "ops", &[(&["read"], "cluster")]).await?;
        let base = |i: usize| -> Result<String> { Ok(format!("http://{}", c.mesos_addr(i)?)) };
        let op = Operator::new(base(leader)?, Some(&ops))?;

        // SUBSCRIBE first: SUBSCRIBED with the state, a HEARTBEAT at once.
        let mut events = op.subscribe().await?;
        let first = events.next(T).await?;
        ensure!(
            keys(&first) == ["subscribed", "type"] && first["type"] == "SUBSCRIBED",
            "{first}"
        );
        ensure!(
            keys(&first["subscribed"]) == ["get_state", "heartbeat_interval_seconds"]
                && first["subscribed"]["heartbeat_interval_seconds"] == 15.0,
            "{first}"
        );
        let st = &first["subscribed"]["get_state"];
        ensure!(
            keys(st) == ["get_agents", "get_executors", "get_frameworks", "get_tasks"],
            "{st}"
        );
        ensure!(st["get_agents"]["agents"].as_array().map(Vec::len) == Some(1), "{st}");
        let hb = events.next(T).await?;
        ensure!(hb == json!({ "type": "HEARTBEAT" }), "{hb}");

        // A task through Mesos' scheduler API; the stream tells of it.
        let m = MesosClient::new(&base(leader)?, None, Some((fw.0.as_str(), fw.1.as_str())))?;
        let (s, agent) = run_task(&m).await?;
        let added = events.next_of("FRAMEWORK_ADDED", |_| true).await?;
        let info = &added["framework_added"]["framework"]["framework_info"];
        ensure!(
            info["id"]["value"] == s.framework_id && info["name"] == "op-fw",
            "{added}"
        );
        let added = events.next_of("TASK_ADDED", |_| true).await?;
        let t = &added["task_added"]["task"];
        ensure!(
            t["task_id"]["value"] == "t1"
                && t["framework_id"]["value"] == s.framework_id
                && t["agent_id"]["value"] == agent.as_str()
                && t["name"] == "t1",
            "{added}"
        );
        ensure!(
            resource(&t["resources"], "cpus").is_some_and(|r| r["scalar"]["value"] == 0.1),
            "{t}"
        );
        let updated = events
            .next_of("TASK_UPDATED", |e| e["task_updated"]["state"] == "TASK_RUNNING")
            .await?;
        let u = &updated["task_updated"];
        ensure!(keys(u) == ["framework_id", "state", "status"], "{updated}");
        ensure!(
            u["framework_id"]["value"] == s.framework_id
                && u["status"]["task_id"]["value"] == "t1"
                && u["status"]["state"] == "TASK_RUNNING",
            "{updated}"
        );

        // The v0 state JSON, on its three routes.
        let state = op.state("/master/state").await?;
        ensure!(
            state["version"] == "1.11.0" && state["activated_slaves"] == 1,
            "{state}"
        );
        for k in [
            "id",
            "pid",
            "hostname",
            "leader",
            "leader_info",
            "start_time",
            "elected_time",
        ] {
            ensure!(state.get(k).is_some(), "{k} missing: {state}");
        }
        ensure!(state["leader"] == state["pid"], "{state}");
        ensure!(
            state["orphan_tasks"] == json!([]) && state["unregistered_frameworks"] == json!([]),
            "{state}"
        );
        let slave = &state["slaves"][0];
        ensure!(slave["id"] == agent.as_str() && slave["active"] == true, "{slave}");
        ensure!(
            slave["resources"]
                == json!({ "cpus": 4.0, "gpus": 0.0, "mem": 2048.0, "disk": 2048.0, "ports": "[31000-31099]" }),
            "{slave}"
        );
        ensure!(slave["used_resources"]["cpus"] == 0.1, "{slave}");
        // (No `registered_time`: Mezzo does not keep when an agent registered.)
        for k in [
            "hostname",
            "port",
            "pid",
            "offered_resources",
            "reserved_resources",
            "unreserved_resources",
            "attributes",
            "version",
        ] {
            ensure!(slave.get(k).is_some(), "{k} missing: {slave}");
        }
        let f = state["frameworks"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["id"] == s.framework_id.as_str()))
            .with_context(|| format!("framework missing: {state}"))?;
        ensure!(
            f["name"] == "op-fw" && f["user"] == "nobody" && f["principal"] == "user:op-fw" && f["role"] == "*",
            "{f}"
        );
        ensure!(
            f["active"] == true && f["connected"] == true && f["failover_timeout"] == 60.0,
            "{f}"
        );
        ensure!(
            f["used_resources"]["cpus"] == 0.1 && f["resources"]["mem"].as_f64() >= Some(32.0),
            "{f}"
        );
        let t = &f["tasks"][0];
        ensure!(
            t["id"] == "t1"
                && t["executor_id"] == ""
                && t["slave_id"] == agent.as_str()
                && t["state"] == "TASK_RUNNING"
                && t["resources"]["cpus"] == 0.1
                && t["resources"]["mem"] == 32.0,
            "{t}"
        );
        ensure!(
            t["statuses"].as_array().is_some_and(|st| st
                .iter()
                .any(|x| x["state"] == "TASK_RUNNING" && x["timestamp"].is_f64())),
            "{t}"
        );
        for path in ["/master/state.json", "/state.json"] {
            let other = op.state(path).await?;
            ensure!(keys(&other) == keys(&state), "{path}: {other}");
        }

        // Each v1 call.
        ensure!(op.call("GET_HEALTH").await? == json!({ "healthy": true }), "health");
        let v = op.call("GET_VERSION").await?;
        ensure!(v["version_info"]["version"] == "1.11.0", "{v}");
        let agents = op.call("GET_AGENTS").await?;
        let a = &agents["agents"][0];
        ensure!(
            a["agent_info"]["id"]["value"] == agent.as_str() && a["active"] == true && a["pid"].is_string(),
            "{a}"
        );
        ensure!(
            resource(&a["total_resources"], "ports").is_some_and(
                |r| r["type"] == "RANGES" && r["ranges"]["range"][0] == json!({ "begin": 31000, "end": 31099 })
            ),
            "{a}"
        );
        ensure!(resource(&a["allocated_resources"], "cpus").is_some(), "{a}");
        let fws = op.call("GET_FRAMEWORKS").await?;
        let f = &fws["frameworks"][0];
        ensure!(
            f["framework_info"]["id"]["value"] == s.framework_id
                && f["framework_info"]["user"] == "nobody"
                && f["active"] == true
                && f["connected"] == true
                && f["registered_time"]["nanoseconds"].is_i64(),
            "{f}"
        );
        let tasks = op.call("GET_TASKS").await?;
        let t = &tasks["tasks"][0];
        ensure!(
            keys(t)
                == [
                    "agent_id",
                    "framework_id",
                    "name",
                    "resources",
                    "state",
                    "statuses",
                    "task_id"
                ],
            "{t}"
        );
        ensure!(
            t["state"] == "TASK_RUNNING" && t["agent_id"]["value"] == agent.as_str(),
            "{t}"
        );
        // A command task: no custom executor to list.
        let executors = op.call("GET_EXECUTORS").await?;
        ensure!(executors == json!({}), "{executors}");
        let roles = op.call("GET_ROLES").await?;
        ensure!(
            roles["roles"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["name"] == "*" && r["weight"].is_f64())),
            "{roles}"
        );
        let gs = op.call("GET_STATE").await?;
        ensure!(gs["get_tasks"]["tasks"][0]["task_id"]["value"] == "t1", "{gs}");
        ensure!(
            gs["get_frameworks"]["frameworks"].as_array().map(Vec::len) == Some(1),
            "{gs}"
        );
        let master = op.call("GET_MASTER").await?;
        ensure!(
            keys(&master) == ["elected_time", "master_info", "start_time"],
            "{master}"
        );
        ensure!(
            master["master_info"]["version"] == "1.11.0" && master["master_info"]["id"].is_string(),
            "{master}"
        );

        // Refusals: no credential, no `read`, bad calls.
        let anon = Operator::new(base(leader)?, None)?;
        ensure!(
            anon.get("/master/state").await?.0 == StatusCode::UNAUTHORIZED,
            "anonymous state"
        );
        let (st, _, _) = anon.post("application/json", r#"{"type":"GET_HEALTH"}"#).await?;
        ensure!(st == StatusCode::UNAUTHORIZED, "anonymous call: {st}");
        let stranger = principal(&c, "stranger", &[]).await?;
        let stranger = Operator::new(base(leader)?, Some(&stranger))?;
        ensure!(
            stranger.get("/master/state").await?.0 == StatusCode::FORBIDDEN,
            "stranger state"
        );
        let (st, _, _) = stranger.post("application/json", r#"{"type":"GET_STATE"}"#).await?;
        ensure!(st == StatusCode::FORBIDDEN, "stranger call: {st}");
        let (st, _, body) = op.post("application/json", r#"{"type":"GET_FLAGS"}"#).await?;
        ensure!(
            st == StatusCode::BAD_REQUEST && body.contains("not supported"),
            "{st} {body}"
        );
        let (st, _, body) = op.post("application/json", r#"{"type":"FLY"}"#).await?;
        ensure!(st == StatusCode::BAD_REQUEST && body.contains("FLY"), "{st} {body}");
        let (st, _, _) = op.post("application/json", "{not json").await?;
        ensure!(st == StatusCode::BAD_REQUEST, "malformed: {st}");
        let (st, _, _) = op.post("text/plain", r#"{"type":"GET_HEALTH"}"#).await?;
        ensure!(st == StatusCode::UNSUPPORTED_MEDIA_TYPE, "text/plain: {st}");

        // A follower: health and version itself, the rest at the leader.
        let at_follower = Operator::new(base(follower)?, Some(&ops))?;
        ensure!(
            at_follower.call("GET_HEALTH").await?["healthy"] == true,
            "follower health"
        );
        let want = format!("//{}/api/v1", c.mesos_addr(leader)?);
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let (st, location, body) = at_follower.post("application/json", r#"{"type":"GET_STATE"}"#).await?;
            if st == StatusCode::TEMPORARY_REDIRECT && location == want {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "no redirect to {want}: {st} {location} {body}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (st, location, _) = at_follower.get("/master/state").await?;
        ensure!(
            st == StatusCode::TEMPORARY_REDIRECT && location == format!("//{}/master/state", c.mesos_addr(leader)?),
            "{st} {location}"
        );

        // The framework's end reaches the stream.
        m.call_ok(
            &s.stream_id,
            &json!({ "framework_id": { "value": s.framework_id }, "type": "TEARDOWN" }),
        )
        .await?;
        let removed = events.next_of("FRAMEWORK_REMOVED", |_| true).await?;
        ensure!(
            removed["framework_removed"]["framework_info"]["id"]["value"] == s.framework_id,
            "{removed}"
        );
        // And a HEARTBEAT every 15 s.
        events.next_of("HEARTBEAT", |_| true).await?;
        Ok(())
    }
    .await;
    result.with_context(|| c.logs())
}
