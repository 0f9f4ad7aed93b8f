//! Issue 18: a custom executor written against Mesos' v1 executor HTTP API
//! (tests/executors/echo_executor.py, Python's standard library only) runs
//! the tasks of a framework speaking Mesos' v1 scheduler API, unmodified:
//! the agent starts the executor a task names (`TaskInfo.executor`) and
//! serves it `POST /api/v1/executor` at `MESOS_AGENT_ENDPOINT` with a
//! bearer token; the executor's updates reach the framework, framework
//! messages go both ways, the executor outlives a restart of its agent
//! (subscribing again with what was not acknowledged), and `SHUTDOWN` ends
//! it with a `FAILURE` event and gives its resources back. Bad launches are
//! `TASK_ERROR`, as on Mesos. Task groups (LAUNCH_GROUP) reach the executor
//! whole.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mezzo_tests::mesos::{MesosClient, Subscription};
use mezzo_tests::{Cluster, ClusterSpec};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Generous: an executor starts a Python interpreter, an agent restarts.
const T: Duration = Duration::from_secs(60);
const AGENT_CPUS: f64 = 4.0;
const AGENT_MEM: f64 = 2048.0;

fn spec() -> ClusterSpec {
    ClusterSpec {
        masters: 1,
        agents: 1,
        agent_resources: format!("cpus:{AGENT_CPUS};mem:{AGENT_MEM};disk:2048;ports:[31000-31099]"),
        mesos_listen: true,
        ..Default::default()
    }
}

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A marker unique to this run of a test, in the executor's argv: how the
/// test finds its processes.
fn marker(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("mezzo-extest-{test}-{}-{nanos}", std::process::id())
}

/// The executor's command as a framework writes it: the host's python
/// (tasks run as `nobody`, who cannot read a python under /root), the
/// script from the repository (the host is read-only to tasks, but
/// readable), and the marker.
fn executor_command(marker: &str) -> String {
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let script = repo().join("tests/executors/echo_executor.py");
    format!("{python} {} --marker {marker}", script.display())
}

/// A Mesos `ExecutorInfo`: a custom executor with resources of its own.
fn executor_info(id: &str, command: &str) -> Value {
    json!({
        "type": "CUSTOM",
        "executor_id": { "value": id },
        "name": "echo executor",
        "command": { "value": command, "shell": true },
        "resources": [
            { "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.1 } },
            { "name": "mem", "type": "SCALAR", "scalar": { "value": 32 } }
        ]
    })
}

/// A task for `executor`, whose `data` is the shell command the echo
/// executor runs for it.
fn executor_task(id: &str, agent: &str, executor: &Value, script: &str) -> Value {
    json!({
        "name": id,
        "task_id": { "value": id },
        "agent_id": { "value": agent },
        "resources": [
            { "name": "cpus", "type": "SCALAR", "scalar": { "value": 0.1 } },
            { "name": "mem", "type": "SCALAR", "scalar": { "value": 16 } }
        ],
        "executor": executor,
        "data": B64.encode(script)
    })
}

/// The argv of every live process but this one, by pid.
fn processes() -> Vec<(i32, Vec<String>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // A zombie is dead: only its parent has not reaped it yet.
        if stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')) {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let argv = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push((pid, argv));
    }
    out.sort_unstable();
    out
}

/// The pids of the live processes whose argv holds `marker` (the
/// executor, and whatever shell or wrapper started it).
fn processes_with(marker: &str) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, argv)| argv.iter().any(|a| a.contains(marker)))
        .map(|(pid, _)| pid)
        .collect()
}

/// The pids of the Python processes running the echo executor with
/// `marker`: the executors themselves.
fn executors_with(marker: &str) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, argv)| {
            argv.first().is_some_and(|a| a.contains("python"))
                && argv.iter().any(|a| a.ends_with("echo_executor.py"))
                && argv.iter().any(|a| a.contains(marker))
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// Waits until no process holds `marker` in its argv.
async fn no_process_left(marker: &str, limit: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "processes of the executor are left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `n` bytes of `text` (or a little less, at a character).
fn tail(text: &str, n: usize) -> &str {
    let start = text.len().saturating_sub(n);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    &text[start..]
}

/// The executor's own log (its stderr in its sandbox), for a failure.
fn executor_logs(c: &Cluster) -> String {
    let mut out = String::new();
    for root in [c.dir.path(), c.runtime.path()] {
        for f in mezzo_tests::files_holding(root, "echo_executor[") {
            if f.extension().is_some_and(|e| e == "log") {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            out += &format!("\n--- {} ---\n{}", f.display(), tail(&text, 8000));
        }
    }
    out
}

/// A Mesos framework: its client, its subscription, and the events it
/// has read but not used yet. Every UPDATE read is acknowledged at once
/// when it carries a uuid, as a Mesos framework does.
struct Framework {
    m: MesosClient,
    s: Subscription,
    backlog: VecDeque<Value>,
}

impl Framework {
    /// Subscribes as a principal of its own, with `checkpoint` (Mesos'
    /// condition for executors to outlive their agent).
    async fn start(c: &Cluster, name: &str) -> Result<Framework> {
        let p = format!("user:{name}");
        c.allow(&p, &["register_framework"], "*").await?;
        c.allow(&p, &["run_as"], "nobody").await?;
        let token = c.issue_token(&p).await?;
        let m = MesosClient::new(
            &format!("http://{}", c.mesos_addr(0)?),
            None,
            Some((name, token.as_str())),
        )?;
        let body = json!({
            "type": "SUBSCRIBE",
            "subscribe": { "framework_info": {
                "user": "nobody", "name": name, "failover_timeout": 60.0, "checkpoint": true
            } }
        });
        let s = match m.subscribe(&body).await? {
            Ok(s) => s,
            Err(a) => bail!("SUBSCRIBE refused: {a:?}"),
        };
        Ok(Framework {
            m,
            s,
            backlog: VecDeque::new(),
        })
    }

    fn fid(&self) -> Value {
        json!({ "value": self.s.framework_id })
    }

    /// A call that must be answered 202.
    async fn call(&self, kind: &str, field: &str, body: Value) -> Result<()> {
        let mut call = json!({ "framework_id": self.fid(), "type": kind });
        call[field] = body;
        self.m.call_ok(&self.s.stream_id, &call).await
    }

    /// The first event (the backlog's first) that `ok` likes; the others
    /// are kept for later.
    async fn wait(&mut self, what: &str, limit: Duration, ok: impl Fn(&Value) -> bool) -> Result<Value> {
        if let Some(i) = self.backlog.iter().position(&ok) {
            return self.backlog.remove(i).context("backlog");
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self
                .s
                .next(left)
                .await
                .with_context(|| format!("waiting for {what}; unused events: {:?}", self.backlog))?;
            if e["type"] == "UPDATE" {
                self.s.acknowledge(&self.m, &e["update"]["status"]).await?;
            }
            if e["type"] == "RESCIND" {
                // The offer is gone: forget it, as a framework does.
                let gone = &e["rescind"]["offer_id"];
                for held in self.backlog.iter_mut().filter(|h| h["type"] == "OFFERS") {
                    if let Some(offers) = held["offers"]["offers"].as_array_mut() {
                        offers.retain(|o| o["id"] != *gone);
                    }
                }
                self.backlog.retain(|h| {
                    h["type"] != "OFFERS" || h["offers"]["offers"].as_array().is_some_and(|a| !a.is_empty())
                });
                continue;
            }
            if ok(&e) {
                return Ok(e);
            }
            if e["type"] != "HEARTBEAT" {
                self.backlog.push_back(e);
            }
        }
    }

    /// The status of the next update of `task` in `state`; an error at
    /// once if the task ends in another state.
    async fn update(&mut self, task: &str, state: &str) -> Result<Value> {
        let e = self
            .wait(&format!("{task} {state}"), T, |e| {
                let st = &e["update"]["status"];
                e["type"] == "UPDATE"
                    && st["task_id"]["value"] == task
                    && (st["state"] == state || terminal(st["state"].as_str().unwrap_or_default()))
            })
            .await?;
        let status = e["update"]["status"].clone();
        ensure!(status["state"] == state, "{task}: wanted {state}, got {status}");
        Ok(status)
    }

    /// An offer of the agent with at least `cpus`; every other offer read
    /// meanwhile is declined (held offers would keep resources away).
    async fn offer(&mut self, cpus: f64) -> Result<Value> {
        loop {
            let e = self.wait("an offer", T, |e| e["type"] == "OFFERS").await?;
            let offers = e["offers"]["offers"].as_array().cloned().unwrap_or_default();
            let mut found = None;
            let mut others = Vec::new();
            for o in offers {
                if found.is_none() && scalar(&o, "cpus") >= cpus {
                    found = Some(o);
                } else {
                    others.push(o["id"].clone());
                }
            }
            if !others.is_empty() {
                self.decline(others).await?;
            }
            if let Some(o) = found {
                return Ok(o);
            }
        }
    }

    async fn decline(&self, ids: Vec<Value>) -> Result<()> {
        self.call(
            "DECLINE",
            "decline",
            json!({ "offer_ids": ids, "filters": { "refuse_seconds": 0.5 } }),
        )
        .await
    }

    /// Declines every offer in the backlog.
    async fn decline_held(&mut self) -> Result<()> {
        let mut ids = Vec::new();
        self.backlog.retain(|e| {
            if e["type"] == "OFFERS" {
                ids.extend(
                    e["offers"]["offers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|o| o["id"].clone()),
                );
                false
            } else {
                true
            }
        });
        if !ids.is_empty() {
            self.decline(ids).await?;
        }
        Ok(())
    }

    /// Launches `tasks` on `offer`.
    async fn launch(&self, offer: &Value, tasks: Vec<Value>) -> Result<()> {
        self.call(
            "ACCEPT",
            "accept",
            json!({
                "offer_ids": [offer["id"]],
                "operations": [{ "type": "LAUNCH", "launch": { "task_infos": tasks } }],
                "filters": { "refuse_seconds": 0.5 }
            }),
        )
        .await
    }

    /// Sends `data` to the executor and waits for its echo (the executor
    /// answers `echo:` + the data). A framework message is best effort:
    /// one sent while the executor is not subscribed is dropped, so it is
    /// sent again every few seconds until the answer comes.
    async fn echo(&mut self, agent: &str, executor: &str, data: &str) -> Result<Value> {
        let want = B64.encode(format!("echo:{data}"));
        let deadline = tokio::time::Instant::now() + T;
        loop {
            self.message(agent, executor, data).await?;
            let got = self
                .wait("the executor's MESSAGE", Duration::from_secs(3), |e| {
                    e["type"] == "MESSAGE" && e["message"]["data"] == want.as_str()
                })
                .await;
            match got {
                Ok(e) => return Ok(e),
                Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
                Err(_) => {}
            }
        }
    }

    async fn message(&self, agent: &str, executor: &str, data: &str) -> Result<()> {
        self.call(
            "MESSAGE",
            "message",
            json!({
                "agent_id": { "value": agent },
                "executor_id": { "value": executor },
                "data": B64.encode(data)
            }),
        )
        .await
    }
}

fn terminal(state: &str) -> bool {
    matches!(
        state,
        "TASK_FINISHED" | "TASK_FAILED" | "TASK_KILLED" | "TASK_ERROR" | "TASK_LOST" | "TASK_DROPPED" | "TASK_GONE"
    )
}

/// The total of the scalar `name` in an offer.
fn scalar(offer: &Value, name: &str) -> f64 {
    offer["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["name"] == name)
        .filter_map(|r| r["scalar"]["value"].as_f64())
        .sum()
}

/// Checks that an update came from the executor, as Mesos marks it.
fn from_executor(status: &Value, executor: &str) -> Result<()> {
    ensure!(status["source"] == "SOURCE_EXECUTOR", "{status}");
    ensure!(status["executor_id"]["value"] == executor, "{status}");
    let uuid = B64
        .decode(status["uuid"].as_str().context("no uuid")?)
        .context("uuid")?;
    ensure!(uuid.len() == 16, "{status}");
    Ok(())
}

/// Shuts the executor down and checks it is gone with its resources:
/// a FAILURE event names it, no process of it is left, the master counts
/// nothing used on the agent, and an offer holds the whole agent again.
async fn shutdown_and_check(c: &Cluster, fw: &mut Framework, agent: &str, executor: &str, marker: &str) -> Result<()> {
    fw.call(
        "SHUTDOWN",
        "shutdown",
        json!({ "executor_id": { "value": executor }, "agent_id": { "value": agent } }),
    )
    .await?;
    let failure = fw
        .wait("FAILURE of the executor", T, |e| {
            e["type"] == "FAILURE" && e["failure"]["executor_id"]["value"] == executor
        })
        .await?;
    ensure!(failure["failure"]["agent_id"]["value"] == agent, "{failure}");
    no_process_left(marker, Duration::from_secs(30)).await?;
    mezzo_tests::wait_for(
        "nothing used on the agent",
        Duration::from_secs(30),
        || c.master_state(),
        |s| {
            s["agents"].as_array().into_iter().flatten().any(|a| {
                a["id"] == agent && a["used"]["cpus"].as_f64() == Some(0.0) && a["used"]["mem"].as_f64() == Some(0.0)
            })
        },
    )
    .await?;
    fw.decline_held().await?;
    fw.call("REVIVE", "revive", json!({})).await?;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let o = fw.offer(0.0).await?;
        if o["agent_id"]["value"] == agent && scalar(&o, "cpus") >= AGENT_CPUS && scalar(&o, "mem") >= AGENT_MEM {
            fw.decline(vec![o["id"].clone()]).await?;
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no offer of the whole agent; the last: {o}"
        );
        fw.decline(vec![o["id"].clone()]).await?;
    }
}

/// Ends a test: its cluster goes, and no process of its executor may be
/// left; a failure carries the cluster's and the executor's logs.
async fn finish(c: Cluster, marker: &str, result: Result<()>) -> Result<()> {
    let logs = format!("{}\n--- executor ---{}", c.logs(), executor_logs(&c));
    drop(c);
    let left = no_process_left(marker, Duration::from_secs(10)).await;
    result.with_context(|| logs.clone())?;
    left.with_context(|| logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_executor_runs_tasks_exchanges_messages_and_outlives_its_agent() -> Result<()> {
    let mut c = Cluster::start(spec()).await?;
    let marker = marker("lifecycle");
    let result = async {
        let mut fw = Framework::start(&c, "echo-fw").await?;
        let executor_id = "echo";
        let executor = executor_info(executor_id, &executor_command(&marker));

        // Four tasks for one executor: one executor process runs them all.
        let o = fw.offer(1.0).await?;
        let agent = o["agent_id"]["value"].as_str().context("agent id")?.to_owned();
        let tasks: Vec<Value> = (1..=4)
            .map(|i| executor_task(&format!("t{i}"), &agent, &executor, "sleep 0.2"))
            .collect();
        fw.launch(&o, tasks).await?;
        for i in 1..=4 {
            let task = format!("t{i}");
            let running = fw.update(&task, "TASK_RUNNING").await?;
            from_executor(&running, executor_id)?;
            let finished = fw.update(&task, "TASK_FINISHED").await?;
            from_executor(&finished, executor_id)?;
            ensure!(finished["agent_id"]["value"] == agent.as_str(), "{finished}");
        }
        let pids = executors_with(&marker);
        ensure!(pids.len() == 1, "one executor process, not {pids:?}");

        // A framework message there and back.
        let m = fw.echo(&agent, executor_id, "hello").await?;
        ensure!(
            m["message"]["agent_id"]["value"] == agent.as_str() && m["message"]["executor_id"]["value"] == executor_id,
            "{m}"
        );
        // Operators see the executor under its framework, with its agent,
        // and the tasks it ran name it.
        let state = c.get(&c.masters[0].addr, "/master/state").await?;
        let f = &state["frameworks"][0];
        ensure!(
            f["executors"][0]["executor_id"] == executor_id
                && f["executors"][0]["slave_id"] == agent.as_str()
                && f["completed_tasks"][0]["executor_id"] == executor_id,
            "{f}"
        );
        // A task it ran shares its sandbox: the files API shows the
        // executor's output for it.
        let path = format!("/api/v1/tasks/{}/t1/files/read?path=stderr", fw.s.framework_id);
        let out = c.get(&c.masters[0].addr, &path).await?;
        ensure!(
            out["data"].as_str().is_some_and(|d| d.contains("echo_executor[")),
            "{out}"
        );

        // A task in flight while the agent is SIGKILLed and restarted: the
        // executor keeps running it, subscribes again when the agent is
        // back (with its unacknowledged updates), and it finishes.
        let o = fw.offer(0.5).await?;
        fw.launch(&o, vec![executor_task("slow", &agent, &executor, "sleep 3")])
            .await?;
        fw.update("slow", "TASK_RUNNING").await?;
        c.agents[0].kill().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        ensure!(executors_with(&marker) == pids, "the executor died with its agent");
        c.restart_agent(0).await?;
        let finished = fw.update("slow", "TASK_FINISHED").await?;
        from_executor(&finished, executor_id)?;
        fw.echo(&agent, executor_id, "again").await?;
        ensure!(
            executors_with(&marker) == pids,
            "the same executor process serves after the restart: {:?} then {:?}",
            pids,
            executors_with(&marker)
        );
        // No task ended otherwise, and the executor was not reported gone.
        for e in &fw.backlog {
            ensure!(e["type"] != "FAILURE" || e["failure"]["executor_id"].is_null(), "{e}");
            ensure!(
                e["type"] != "UPDATE"
                    || !matches!(
                        e["update"]["status"]["state"].as_str(),
                        Some("TASK_LOST" | "TASK_FAILED" | "TASK_ERROR" | "TASK_KILLED")
                    ),
                "{e}"
            );
        }

        shutdown_and_check(&c, &mut fw, &agent, executor_id, &marker).await
    }
    .await;
    // The agent's log before its restart, then everything's now.
    let before = std::fs::read_to_string(c.dir.path().join("agent0.log")).unwrap_or_default();
    let logs = format!(
        "\n--- agent0 before its restart ---\n{}{}\n--- executor ---{}",
        tail(&before, 6000),
        c.logs(),
        executor_logs(&c)
    );
    drop(c);
    let left = no_process_left(&marker, Duration::from_secs(10)).await;
    result.with_context(|| logs.clone())?;
    left.with_context(|| logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_executor_launches_are_task_errors_and_change_nothing() -> Result<()> {
    let c = Cluster::start(spec()).await?;
    let marker = marker("bad");
    let result = async {
        let mut fw = Framework::start(&c, "bad-executor-fw").await?;
        let executor_id = "echo";
        let command = executor_command(&marker);
        let executor = executor_info(executor_id, &command);

        // Both a command and an executor: TASK_ERROR (Mesos: exactly one).
        let o = fw.offer(1.0).await?;
        let agent = o["agent_id"]["value"].as_str().context("agent id")?.to_owned();
        let mut both = executor_task("both", &agent, &executor, "true");
        both["command"] = json!({ "value": "true" });
        fw.launch(&o, vec![both]).await?;
        let error = fw.update("both", "TASK_ERROR").await?;
        ensure!(
            error["source"] == "SOURCE_MASTER" && error["reason"] == "REASON_TASK_INVALID",
            "{error}"
        );
        ensure!(
            processes_with(&marker).is_empty(),
            "an executor started for a task in error"
        );

        // A long task on the executor.
        let o = fw.offer(1.0).await?;
        fw.launch(&o, vec![executor_task("long", &agent, &executor, "sleep 300")])
            .await?;
        fw.update("long", "TASK_RUNNING").await?;

        // The same executor id with another command on the same agent:
        // TASK_ERROR, and the running executor is untouched.
        let other = executor_info(executor_id, &format!("{command} --other"));
        let o = fw.offer(1.0).await?;
        fw.launch(&o, vec![executor_task("clash", &agent, &other, "true")])
            .await?;
        let error = fw.update("clash", "TASK_ERROR").await?;
        ensure!(
            error["source"] == "SOURCE_MASTER" && error["reason"] == "REASON_TASK_INVALID",
            "{error}"
        );
        ensure!(executors_with(&marker).len() == 1, "{:?}", executors_with(&marker));

        // A message to an executor that does not exist: accepted (202) and
        // dropped, as Mesos does; the real one still answers.
        fw.message(&agent, "no-such-executor", "lost").await?;
        let unknown_agent =
            fw.m.call(
                &fw.s.stream_id,
                &json!({
                    "framework_id": fw.fid(), "type": "MESSAGE",
                    "message": {
                        "agent_id": { "value": "no-such-agent" },
                        "executor_id": { "value": executor_id },
                        "data": B64.encode("lost")
                    }
                }),
            )
            .await?;
        ensure!(
            unknown_agent.status == StatusCode::ACCEPTED || unknown_agent.status == StatusCode::BAD_REQUEST,
            "{unknown_agent:?}"
        );
        fw.echo(&agent, executor_id, "still here").await?;

        // KILL reaches the executor, which reports TASK_KILLED itself.
        fw.call(
            "KILL",
            "kill",
            json!({ "task_id": { "value": "long" }, "agent_id": { "value": agent } }),
        )
        .await?;
        let killed = fw.update("long", "TASK_KILLED").await?;
        from_executor(&killed, executor_id)?;

        shutdown_and_check(&c, &mut fw, &agent, executor_id, &marker).await
    }
    .await;
    finish(c, &marker, result).await
}

/// A task of a group: its group's executor runs it, so it names none.
fn group_task(id: &str, agent: &str, script: &str) -> Value {
    let mut t = executor_task(id, agent, &Value::Null, script);
    if let Some(o) = t.as_object_mut() {
        o.remove("executor");
    }
    t
}

/// A task of a group of the DEFAULT executor: a command of its own.
fn command_task(id: &str, agent: &str, command: &str) -> Value {
    let mut t = group_task(id, agent, "");
    t["command"] = json!({ "value": command, "shell": true });
    t.as_object_mut().map(|o| o.remove("data"));
    t
}

impl Framework {
    /// Launches `tasks` on `offer` as one task group of `executor`.
    async fn launch_group(&self, offer: &Value, executor: Value, tasks: Vec<Value>) -> Result<()> {
        self.call(
            "ACCEPT",
            "accept",
            json!({
                "offer_ids": [offer["id"]],
                "operations": [{ "type": "LAUNCH_GROUP", "launch_group": {
                    "executor": executor, "task_group": { "tasks": tasks } } }],
                "filters": { "refuse_seconds": 0.5 }
            }),
        )
        .await
    }
}

/// Mesos' LAUNCH_GROUP (docs/mesos-api.md, "Task groups"): a group for a
/// custom executor reaches it in one LAUNCH_GROUP event (the executor
/// says so with a message naming the tasks it held) and every task
/// finishes; in a group of the DEFAULT executor (each task a command),
/// a task that fails gets its running sibling killed at once; a group
/// whose executor has neither a type nor a command is refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_groups_reach_a_custom_executor_whole_and_a_failure_ends_a_default_group() -> Result<()> {
    let c = Cluster::start(spec()).await?;
    let marker = marker("group");
    let result = async {
        let mut fw = Framework::start(&c, "group-fw").await?;
        let executor_id = "echo";
        let executor = executor_info(executor_id, &executor_command(&marker));

        let o = fw.offer(1.0).await?;
        let agent = o["agent_id"]["value"].as_str().context("agent id")?.to_owned();
        let ids = ["g1", "g2", "g3"];
        let tasks = ids.iter().map(|id| group_task(id, &agent, "sleep 0.2")).collect();
        fw.launch_group(&o, executor, tasks).await?;
        let told = B64.encode("group:g1,g2,g3");
        fw.wait("the executor's word on its LAUNCH_GROUP", T, |e| {
            e["type"] == "MESSAGE" && e["message"]["data"] == told.as_str()
        })
        .await?;
        for id in ids {
            from_executor(&fw.update(id, "TASK_RUNNING").await?, executor_id)?;
            from_executor(&fw.update(id, "TASK_FINISHED").await?, executor_id)?;
        }

        // The DEFAULT executor: each task a command; one fails, and its
        // sibling (a minute's sleep) is killed at once.
        let default = json!({ "type": "DEFAULT", "executor_id": { "value": "default" } });
        let o = fw.offer(0.5).await?;
        let tasks = vec![
            command_task("sleeper", &agent, "sleep 60"),
            command_task("fails", &agent, "sleep 0.5; exit 1"),
        ];
        let started = std::time::Instant::now();
        fw.launch_group(&o, default, tasks).await?;
        fw.update("fails", "TASK_FAILED").await?;
        let killed = fw.update("sleeper", "TASK_KILLED").await?;
        ensure!(
            killed["message"].as_str().is_some_and(|m| m.contains("task fails")),
            "{killed}"
        );
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the sibling was not killed at once"
        );

        // An executor with neither a type nor a command: the whole group
        // is refused, TASK_ERROR for each task, and nothing runs.
        let o = fw.offer(0.5).await?;
        let neither = json!({ "executor_id": { "value": "neither" } });
        let tasks = vec![
            command_task("bad1", &agent, "true"),
            command_task("bad2", &agent, "true"),
        ];
        fw.launch_group(&o, neither, tasks).await?;
        for id in ["bad1", "bad2"] {
            let error = fw.update(id, "TASK_ERROR").await?;
            ensure!(error["reason"] == "REASON_TASK_GROUP_INVALID", "{error}");
            ensure!(
                error["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("neither a type nor a command")),
                "{error}"
            );
        }

        shutdown_and_check(&c, &mut fw, &agent, executor_id, &marker).await
    }
    .await;
    finish(c, &marker, result).await
}

/// The echo executor itself, against a fake agent in Python
/// (tests/executors/test_echo_executor.py): its calls, its RecordIO reader,
/// and its subscribing again, with what was not acknowledged, to an agent
/// that went away and came back on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_executor_speaks_the_executor_api_to_a_fake_agent() -> Result<()> {
    let script = repo().join("tests/executors/test_echo_executor.py");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("python3")
            .arg(&script)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the executor's own test took over 120 s")??;
    ensure!(
        out.status.success(),
        "{}: {}\n{}{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
