//! The service framework (`mezzo service`, frameworks/service) against a
//! real master and agents: it keeps the declared number of healthy
//! instances through killed tasks and a SIGKILLed agent, rolls a broken
//! update back without dropping below the allowed healthy count, adopts
//! its tasks after its own restart without starting duplicates, and
//! refuses bad input with clear errors and nothing half-deployed.
//!
//! Agents run with `--isolation none` (isolation does not matter here),
//! each with its own loopback host name (127.0.I.1) and port range, so
//! that instances of one service on different agents get different
//! addresses. Health checks run on the agents (issue 19).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use mezzo_tests::{Cluster, ClusterSpec, Daemon, mezzo_bin};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// `test` (0-9) gives each test's agents port ranges of their own
/// (2TI00-2TI99, below the ephemeral ports), as tests run in parallel.
fn spec(test: u32, agents: usize) -> ClusterSpec {
    let mut s = ClusterSpec {
        masters: 1,
        agents,
        agent_resources: format!("cpus:4;mem:4096;disk:4096;ports:[2{test}{{i}}00-2{test}{{i}}99]"),
        ..Default::default()
    };
    s.agent_args.extend(
        ["--isolation", "none", "--hostname", "127.0.{i}.1"]
            .into_iter()
            .map(String::from),
    );
    s
}

/// A healthy web service: busybox httpd serving its sandbox, checked by
/// HTTP. `extra` is appended (e.g. an `[upgrade]` section).
fn web(name: &str, instances: u32, command: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"
instances = {instances}
command = "{command}"
resources = "cpus:0.1;mem:32"
ports = ["http"]
constraints = ["hostname:GROUP_BY"]
kill_grace = "1s"
[health]
http = {{ port = "http", path = "/index.html" }}
grace_period = "10s"
interval = "300ms"
timeout = "2s"
failures = 3
[restart]
backoff = "200ms"
max_backoff = "2s"
{extra}
"#
    )
}

const HTTPD: &str = "echo ok > index.html; exec busybox httpd -f -p $PORT0 -h .";

/// The framework daemon and a client for it.
struct Service {
    daemon: Daemon,
    work_dir: PathBuf,
    http: reqwest::Client,
}

impl Service {
    async fn start(c: &Cluster, tag: &str) -> Result<Service> {
        Service::start_in(c, tag, "*").await
    }

    /// The framework in `role` (a named one holds reservations and volumes).
    async fn start_in(c: &Cluster, tag: &str, role: &str) -> Result<Service> {
        let work_dir = c.dir.path().join("service");
        let args: Vec<String> = vec![
            "service".into(),
            "serve".into(),
            "--role".into(),
            role.into(),
            "--masters".into(),
            c.masters().join(","),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--work-dir".into(),
            work_dir.display().to_string(),
        ];
        let log = c.dir.path().join(format!("service-{tag}.log"));
        let daemon = Daemon::spawn_env(&c.env(), "service", &args, log).await?;
        let svc = Service {
            daemon,
            http: mezzo_tests::framework_http(&work_dir, Duration::from_secs(10))?,
            work_dir,
        };
        // It answers 503 until it has subscribed and read its records.
        mezzo_tests::wait_for("the framework to be ready", LONG, || svc.get(""), Value::is_array).await?;
        Ok(svc)
    }

    /// Runs `mezzo service ARGS --service ADDR` (with the cluster's
    /// environment): (exit code, stdout, stderr).
    async fn cli(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let out = tokio::process::Command::new(mezzo_bin())
            .envs(self.daemon.env.iter().cloned())
            .arg("service")
            .args(args)
            .arg("--service")
            .arg(&self.daemon.addr)
            .arg("--token-file")
            .arg(mezzo_sdk::api_token::path_in(&self.work_dir))
            .output()
            .await?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Deploys a service file through the CLI; fails unless it exits 0.
    async fn deploy(&self, c: &Cluster, file_name: &str, text: &str) -> Result<String> {
        let path = c.dir.path().join(file_name);
        std::fs::write(&path, text)?;
        let (code, out, err) = self.cli(&["deploy", &path.display().to_string()]).await?;
        ensure!(code == 0, "deploy exited {code}: {out}{err}");
        Ok(out)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let url = format!("http://{}/v1/services{path}", self.daemon.addr);
        Ok(self.http.get(&url).send().await?.error_for_status()?.json().await?)
    }

    /// Polls the status of `name` until `ok` holds.
    async fn wait(&self, name: &str, what: &str, limit: Duration, ok: impl Fn(&Value) -> bool) -> Result<Value> {
        let path = format!("/{name}");
        mezzo_tests::wait_for(what, limit, || self.get(&path), ok).await
    }

    fn log(&self) -> String {
        self.daemon.log()
    }
}

fn healthy(s: &Value) -> u64 {
    s["healthy"].as_u64().unwrap_or(0)
}

fn instances(s: &Value) -> Vec<Value> {
    s["instances"].as_array().cloned().unwrap_or_default()
}

fn task_ids(s: &Value) -> BTreeSet<String> {
    instances(s)
        .iter()
        .map(|i| i["task_id"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Waits until the master's live tasks are exactly `ids`.
async fn master_holds(c: &Cluster, what: &str, ids: &BTreeSet<String>) -> Result<()> {
    let ok = |v: &Value| {
        v.as_array()
            .is_some_and(|a| a.len() == ids.len() && a.iter().all(|t| ids.contains(t.as_str().unwrap_or(""))))
    };
    let live = || async { Ok(Value::from(live_tasks(c).await?.into_iter().collect::<Vec<_>>())) };
    mezzo_tests::wait_for(what, Duration::from_secs(30), live, ok)
        .await
        .map(drop)
}

/// The framework's tasks the master holds as not ended.
async fn live_tasks(c: &Cluster) -> Result<BTreeSet<String>> {
    let state = c.master_state().await?;
    let mut ids = BTreeSet::new();
    for t in state["tasks"].as_array().context("tasks")? {
        let st = t["state"].as_str().unwrap_or("");
        if matches!(st, "TASK_STAGING" | "TASK_STARTING" | "TASK_RUNNING" | "TASK_KILLING") {
            ids.insert(t["id"].as_str().unwrap_or("").to_owned());
        }
    }
    Ok(ids)
}

/// SIGKILLs the httpd serving `port` (an instance dying on its own).
fn kill_instance(port: u64) -> Result<()> {
    let want = format!("-p\0{port}\0");
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("httpd") && cmd.contains(&want) {
            kill(Pid::from_raw(pid), Signal::SIGKILL)?;
            return Ok(());
        }
    }
    bail!("no httpd serves port {port}")
}

fn with_logs(r: Result<()>, c: &Cluster, svc: Option<&Service>) -> Result<()> {
    r.with_context(|| {
        let s = svc
            .map(|s| format!("\n--- service log ---\n{}", tail(&s.log())))
            .unwrap_or_default();
        format!("{}{s}", c.logs())
    })
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(8000);
    let start = (start..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
    &s[start..]
}

const LONG: Duration = Duration::from_secs(90);

/// Five instances stay five healthy ones while two are killed and then an
/// agent holding some of them is SIGKILLed (its tasks become unreachable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_instances_survive_killed_tasks_and_a_lost_agent() -> Result<()> {
    let mut c = Cluster::start(spec(0, 3)).await?;
    let svc = Service::start(&c, "a").await?;
    let result = async {
        svc.deploy(&c, "web.toml", &web("web", 5, HTTPD, "")).await?;
        let s = svc.wait("web", "5 healthy", LONG, |s| healthy(s) == 5).await?;
        let hosts: BTreeSet<String> = instances(&s)
            .iter()
            .map(|i| i["host"].as_str().unwrap_or("").to_owned())
            .collect();
        ensure!(
            hosts.len() == 3,
            "GROUP_BY hostname spreads over the 3 agents: {hosts:?}"
        );

        // Two instances die.
        let before = task_ids(&s);
        let victims: Vec<(String, u64)> = instances(&s)
            .iter()
            .take(2)
            .map(|i| {
                (
                    i["task_id"].as_str().unwrap_or("").to_owned(),
                    i["ports"]["http"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        for (_, port) in &victims {
            kill_instance(*port)?;
        }
        svc.wait("web", "the killed instances replaced", LONG, |s| {
            let ids = task_ids(s);
            healthy(s) == 5 && victims.iter().all(|(v, _)| !ids.contains(v)) && ids.len() == 5
        })
        .await?;

        // An operator kills one instance after another (`mezzo kill`):
        // each is replaced at once, the restart backoff never grows (it
        // doubled from 1 s per kill before, issue 21), and the events say
        // who stopped it.
        for round in 0..3 {
            let s = svc.get("/web").await?;
            let victim = instances(&s)
                .first()
                .and_then(|i| i["task_id"].as_str())
                .context("an instance")?
                .to_owned();
            let out = c.command().args(["kill", &victim]).output().await?;
            ensure!(out.status.success(), "kill: {}", String::from_utf8_lossy(&out.stderr));
            let started = Instant::now();
            svc.wait("web", "the operator's kill replaced", LONG, |s| {
                healthy(s) == 5 && !task_ids(s).contains(&victim)
            })
            .await?;
            ensure!(
                started.elapsed() < Duration::from_secs(6),
                "round {round}: replaced after {:?}",
                started.elapsed()
            );
        }
        let s = svc.get("/web").await?;
        ensure!(
            s["events"].to_string().contains("stopped by an operator or a drain"),
            "{}",
            s["events"]
        );

        // An agent holding instances is SIGKILLed.
        let s = svc.get("/web").await?;
        let on_agent0: Vec<String> = instances(&s)
            .iter()
            .filter(|i| i["host"] == "127.0.0.1")
            .map(|i| i["task_id"].as_str().unwrap_or("").to_owned())
            .collect();
        ensure!(!on_agent0.is_empty(), "agent0 runs some instance: {s}");
        c.agents[0].kill().await;
        let s = svc
            .wait("web", "5 healthy on the agents left", LONG, |s| {
                healthy(s) == 5 && instances(s).len() == 5 && instances(s).iter().all(|i| i["host"] != "127.0.0.1")
            })
            .await?;
        ensure!(before.len() == 5);
        // The master agrees: five live tasks, those the framework lists.
        let ids = task_ids(&s);
        master_holds(&c, "the master to hold exactly the 5 instances", &ids).await?;
        // Discovery lists exactly the healthy ones.
        let (code, out, err) = svc.cli(&["endpoints", "web"]).await?;
        ensure!(code == 0, "endpoints: {err}");
        ensure!(out.lines().count() == 5, "five endpoints: {out}");
        for line in out.lines() {
            let body = reqwest::get(format!("http://{line}/index.html")).await?.text().await?;
            ensure!(body.trim() == "ok", "{line} serves the instance: {body:?}");
        }
        Ok(())
    }
    .await;
    with_logs(result, &c, Some(&svc))
}

/// An update to a version that never passes its health check is rolled
/// back by itself, and the healthy instances never drop below
/// `instances - max_unavailable`, checked all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_update_rolls_back_without_dropping_below_the_floor() -> Result<()> {
    let c = Cluster::start(spec(1, 3)).await?;
    let svc = Service::start(&c, "a").await?;
    let result = async {
        let upgrade = "[upgrade]\nmax_surge = 1\nmax_unavailable = 1\n";
        svc.deploy(&c, "v1.toml", &web("api", 5, HTTPD, upgrade)).await?;
        svc.wait("api", "5 healthy", LONG, |s| healthy(s) == 5 && s["state"] == "stable")
            .await?;

        // Version 2 starts but never listens.
        let out = svc
            .deploy(&c, "v2.toml", &web("api", 5, "exec sleep 600", upgrade))
            .await?;
        ensure!(out.contains("updated (version 2)"), "{out}");
        let deadline = Instant::now() + LONG;
        let (mut lowest, mut saw_v2) = (5, false);
        loop {
            ensure!(Instant::now() < deadline, "no rollback within {LONG:?}");
            let s = svc.get("/api").await?;
            let eps = svc.get("/api/endpoints").await?;
            let n = eps.as_array().map_or(0, Vec::len);
            lowest = lowest.min(n);
            ensure!(n >= 4, "only {n} healthy endpoints during the update: {s}");
            saw_v2 |= instances(&s).iter().any(|i| i["version"] == 2);
            if saw_v2 && s["state"] == "stable" && s["version"] == 1 && healthy(&s) == 5 {
                let events = s["events"].to_string();
                ensure!(events.contains("rolling back to version 1"), "{events}");
                ensure!(instances(&s).iter().all(|i| i["version"] == 1), "{s}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(saw_v2, "version 2 was tried");
        // Nothing of version 2 is left running on the cluster either.
        let s = svc.get("/api").await?;
        let ids = task_ids(&s);
        master_holds(&c, "only the 5 version-1 tasks live", &ids).await?;
        eprintln!("lowest healthy count during the update: {lowest}");
        Ok(())
    }
    .await;
    with_logs(result, &c, Some(&svc))
}

/// The framework is SIGKILLed and started again: it resumes its framework
/// id, adopts the running tasks and launches nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_framework_adopts_its_tasks_and_starts_no_duplicates() -> Result<()> {
    let c = Cluster::start(spec(2, 2)).await?;
    let mut svc = Service::start(&c, "a").await?;
    let result = async {
        svc.deploy(&c, "web.toml", &web("web", 3, HTTPD, "")).await?;
        let s = svc.wait("web", "3 healthy", LONG, |s| healthy(s) == 3).await?;
        let ids = task_ids(&s);
        let framework_id = std::fs::read_to_string(svc.work_dir.join("framework_id"))?;

        svc.daemon.kill().await;
        let again = Service::start(&c, "b").await?;
        svc = again;
        let s = svc
            .wait("web", "3 adopted and healthy", LONG, |s| healthy(s) == 3)
            .await?;
        let adopted = task_ids(&s);
        ensure!(adopted == ids, "the same tasks: {ids:?} then {adopted:?}");
        ensure!(std::fs::read_to_string(svc.work_dir.join("framework_id"))? == framework_id);
        // Give a duplicate every chance to appear, then count.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let live = live_tasks(&c).await?;
            ensure!(live == ids, "the master holds {live:?}, wanted {ids:?}");
        }
        let state = c.master_state().await?;
        let frameworks = state["frameworks"].as_array().context("frameworks")?;
        ensure!(frameworks.len() == 1, "one framework: {frameworks:?}");

        // The adopted instances take part in a rolling restart like any
        // others: all replaced by version 2, never below 3 healthy
        // (max_unavailable 0).
        let (code, out, err) = svc.cli(&["restart", "web"]).await?;
        ensure!(code == 0 && out.contains("version 2"), "restart: {code}: {out}{err}");
        let deadline = Instant::now() + LONG;
        loop {
            ensure!(Instant::now() < deadline, "the rolling restart did not finish");
            let s = svc.get("/web").await?;
            ensure!(healthy(&s) >= 3, "below 3 healthy during the restart: {s}");
            if s["state"] == "stable" && s["version"] == 2 {
                let now = task_ids(&s);
                ensure!(
                    now.len() == 3 && now.is_disjoint(&ids),
                    "all replaced: {ids:?} then {now:?}"
                );
                ensure!(instances(&s).iter().all(|i| i["version"] == 2), "{s}");
                master_holds(&c, "only the 3 restarted tasks live", &now).await?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
    .await;
    with_logs(result, &c, Some(&svc))
}

/// Bad input: each refused with its own exit code and a message naming
/// the line or field; nothing is deployed or launched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_deploys_nothing() -> Result<()> {
    let c = Cluster::start(spec(3, 1)).await?;
    let svc = Service::start(&c, "a").await?;
    let result = async {
        let file = |name: &str, text: &str| -> Result<String> {
            let p = c.dir.path().join(name);
            std::fs::write(&p, text)?;
            Ok(p.display().to_string())
        };
        // Not TOML as expected: the line and the key are named.
        let bad = file("bad.toml", "name = \"web\"\ninstances = \"five\"\n")?;
        let (code, _, err) = svc.cli(&["deploy", &bad]).await?;
        ensure!(
            code == 2 && err.contains("line 2") && err.contains("instances"),
            "{code}: {err}"
        );
        // An unknown key.
        let typo = file("typo.toml", &web("web", 1, HTTPD, "colour = \"red\""))?;
        let (code, _, err) = svc.cli(&["deploy", &typo]).await?;
        ensure!(code == 2 && err.contains("colour"), "{code}: {err}");
        // A field with a bad value.
        let port = file(
            "port.toml",
            &web("web", 1, HTTPD, "").replace("port = \"http\"", "port = \"admin\""),
        )?;
        let (code, _, err) = svc.cli(&["deploy", &port]).await?;
        ensure!(code == 2 && err.contains("health.http.port"), "{code}: {err}");
        // Resources no agent could ever hold.
        let huge = file(
            "huge.toml",
            &web("web", 1, HTTPD, "").replace("cpus:0.1;mem:32", "cpus:64;mem:32"),
        )?;
        let (code, _, err) = svc.cli(&["deploy", &huge]).await?;
        ensure!(
            code == 5 && err.contains("`resources`") && err.contains("cpus:64"),
            "{code}: {err}"
        );
        // Unknown names.
        for args in [
            vec!["status", "nope"],
            vec!["scale", "nope", "3"],
            vec!["restart", "nope"],
            vec!["rollback", "nope"],
            vec!["remove", "nope"],
            vec!["endpoints", "nope"],
        ] {
            let (code, _, err) = svc.cli(&args).await?;
            ensure!(
                code == 3 && err.contains("no service named \"nope\""),
                "{args:?}: {code}: {err}"
            );
        }
        // A missing file is an error of its own.
        let (code, _, err) = svc.cli(&["deploy", "/nonexistent/web.toml"]).await?;
        ensure!(code == 1 && err.contains("/nonexistent/web.toml"), "{code}: {err}");
        // Without the framework's API token (a task on this machine can
        // reach the port, not the 0600 file): 401; `/health` stays open.
        let ok = file("ok.toml", &web("sneaky", 1, HTTPD, ""))?;
        let http = reqwest::Client::new();
        let url = |p: &str| format!("http://{}{p}", svc.daemon.addr);
        for (req, what) in [
            (http.get(url("/v1/services")), "list, no token"),
            (
                http.post(url("/v1/services")).body(std::fs::read_to_string(&ok)?),
                "deploy, no token",
            ),
            (
                http.delete(url("/v1/services/web")).bearer_auth("x"),
                "remove, a wrong token",
            ),
        ] {
            let r = req.send().await?;
            ensure!(
                r.status() == reqwest::StatusCode::UNAUTHORIZED,
                "{what}: {}",
                r.status()
            );
            ensure!(
                r.text().await?.contains("API token"),
                "{what}: the answer names the token"
            );
        }
        ensure!(
            http.get(url("/health")).send().await?.status().is_success(),
            "/health needs no token"
        );
        let out = tokio::process::Command::new(mezzo_bin())
            .args([
                "service",
                "list",
                "--service",
                &svc.daemon.addr,
                "--token-file",
                "/nonexistent/api-token",
            ])
            .output()
            .await?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains("API token"),
            "the CLI without a token: {err}"
        );
        // Nothing was deployed or launched.
        let (code, out, _) = svc.cli(&["list", "--json"]).await?;
        ensure!(
            code == 0 && serde_json::from_str::<Value>(&out)? == serde_json::json!([]),
            "{out}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        ensure!(live_tasks(&c).await?.is_empty(), "no task launched");

        // A valid service, then a rollback with nothing to go back to.
        svc.deploy(&c, "ok.toml", &web("web", 1, HTTPD, "")).await?;
        let (code, _, err) = svc.cli(&["rollback", "web"]).await?;
        ensure!(code == 4 && err.contains("no previous version"), "{code}: {err}");
        // No healthy instance: `endpoints` says so and fails (issue 21).
        let idle = web("idle", 1, "exec sleep 600", "").replace("grace_period = \"10s\"", "grace_period = \"10m\"");
        svc.deploy(&c, "idle.toml", &idle).await?;
        let (code, out, err) = svc.cli(&["endpoints", "idle"]).await?;
        ensure!(
            code == 7 && out.is_empty() && err.contains("idle has no healthy instance"),
            "{code}: {out} {err}"
        );
        // Nor is a service below its count "stable".
        let s = svc.get("/idle").await?;
        ensure!(s["state"] == "degraded (0/1 healthy)", "{s}");
        let (code, _, err) = svc.cli(&["remove", "idle"]).await?;
        ensure!(code == 0, "remove idle: {err}");
        // An update that never completes (its instance neither passes nor
        // fails its check) is rolled back at its progress deadline.
        let stuck = web("web", 1, "exec sleep 600", "[upgrade]\nprogress_deadline = \"2s\"\n")
            .replace("grace_period = \"10s\"", "grace_period = \"10m\"");
        svc.deploy(&c, "stuck.toml", &stuck).await?;
        svc.wait("web", "the stuck update rolled back", LONG, |s| {
            s["state"] == "stable" && s["version"] == 1 && s["events"].to_string().contains("not deployed within 2s")
        })
        .await?;
        // Removing leaves nothing behind.
        svc.wait("web", "1 healthy", LONG, |s| healthy(s) == 1).await?;
        let (code, _, err) = svc.cli(&["remove", "web"]).await?;
        ensure!(code == 0, "remove: {err}");
        mezzo_tests::wait_for(
            "the service gone",
            LONG,
            || async { svc.get("").await },
            |v| v.as_array().is_some_and(Vec::is_empty),
        )
        .await?;
        ensure!(live_tasks(&c).await?.is_empty(), "its task was killed");
        Ok(())
    }
    .await;
    with_logs(result, &c, Some(&svc))
}

/// The leading master is SIGKILLed: the framework follows the new leader,
/// keeps its instances (no duplicates), and its state is still there: a
/// scale, written to the new leader's registry, takes effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_failover_keeps_the_instances_and_the_state() -> Result<()> {
    let mut c = Cluster::start(ClusterSpec {
        masters: 3,
        ..spec(4, 2)
    })
    .await?;
    let svc = Service::start(&c, "a").await?;
    let result = async {
        svc.deploy(&c, "web.toml", &web("web", 3, HTTPD, "")).await?;
        let s = svc.wait("web", "3 healthy", LONG, |s| healthy(s) == 3).await?;
        let ids = task_ids(&s);

        let leader = c.wait_leader().await?;
        c.masters[leader].kill().await;
        c.wait_leader().await?;
        // Scaling needs the registry: retried until the framework has
        // re-subscribed to the new leader.
        let deadline = Instant::now() + LONG;
        loop {
            let (code, _, err) = svc.cli(&["scale", "web", "4"]).await?;
            if code == 0 {
                break;
            }
            ensure!(
                code == 6 && Instant::now() < deadline,
                "scale after failover: {code}: {err}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let s = svc.wait("web", "4 healthy", LONG, |s| healthy(s) == 4).await?;
        let now = task_ids(&s);
        ensure!(ids.is_subset(&now), "the first three kept: {ids:?} in {now:?}");
        master_holds(&c, "the new leader to hold exactly the 4 instances", &now).await?;
        // And down again.
        let (code, _, err) = svc.cli(&["scale", "web", "2"]).await?;
        ensure!(code == 0, "scale down: {err}");
        let s = svc
            .wait("web", "2 instances", LONG, |s| {
                healthy(s) == 2 && instances(s).len() == 2
            })
            .await?;
        master_holds(&c, "the 2 instances left", &task_ids(&s)).await?;
        Ok(())
    }
    .await;
    with_logs(result, &c, Some(&svc))
}

/// A drain keeps a service up (issue 21: `mezzo drain --deadline 10s`
/// killed all five `web` instances at once and `endpoints` was empty for
/// 16 s): told of the drain, the service starts replacements on the other
/// agent and stops the drained instances itself, never dropping below
/// `instances - max_unavailable` healthy ones, well before the deadline;
/// `mezzo drain --wait` returns once the agent is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_moves_the_instances_without_dropping_below_the_floor() -> Result<()> {
    let c = Cluster::start(spec(6, 2)).await?;
    let svc = Service::start(&c, "a").await?;
    let result = async {
        svc.deploy(&c, "web.toml", &web("web", 4, HTTPD, "")).await?;
        let s = svc
            .wait("web", "4 healthy", LONG, |s| healthy(s) == 4 && s["state"] == "stable")
            .await?;
        let on_first: Vec<Value> = instances(&s).into_iter().filter(|i| i["host"] == "127.0.0.1").collect();
        ensure!(on_first.len() == 2, "GROUP_BY spreads 2 and 2: {s}");
        let agent = on_first[0]["agent_id"].as_str().context("agent id")?.to_owned();

        // Watch the healthy count all along the drain.
        let least = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
        let watcher = {
            let (addr, least, http) = (svc.daemon.addr.clone(), least.clone(), svc.http.clone());
            tokio::spawn(async move {
                let url = format!("http://{addr}/v1/services/web");
                loop {
                    if let Ok(r) = http.get(&url).send().await
                        && let Ok(v) = r.json::<Value>().await
                    {
                        least.fetch_min(healthy(&v), std::sync::atomic::Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let started = Instant::now();
        let drain = c
            .command()
            .args(["drain", "127.0.0.1", "--deadline", "5m", "--wait"])
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(LONG, drain)
            .await
            .context("the agent was not emptied before the test's limit")??;
        let took = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "drain: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            stdout.contains("still running") && stdout.contains("is drained"),
            "{stdout}"
        );
        ensure!(took < LONG, "the agent emptied after {took:?}");
        let s = svc
            .wait("web", "4 healthy on the other agent", LONG, |s| {
                healthy(s) == 4
                    && instances(s).len() == 4
                    && instances(s).iter().all(|i| i["agent_id"] != agent.as_str())
            })
            .await?;
        watcher.abort();
        let least = least.load(std::sync::atomic::Ordering::Relaxed);
        ensure!(least >= 4, "only {least} healthy during the drain");
        ensure!(
            s["events"]
                .to_string()
                .contains("is drained: moving its 2 instance(s) elsewhere"),
            "{}",
            s["events"]
        );
        Ok(())
    }
    .await;
    with_logs(result, &c, Some(&svc))
}

/// "Why is my work not running?": instances the offers have no room for
/// are reported to the masters with the reason, for the dashboard and
/// `mezzo why`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_without_room_are_reported_as_pending() -> Result<()> {
    let c = Cluster::start(spec(5, 1)).await?;
    let svc = Service::start(&c, "a").await?;
    let result = async {
        // One agent of 4 cpus: two instances of 1.5 cpus fit, the third waits.
        let file = "name = \"wide\"\ninstances = 3\ncommand = \"sleep 600\"\nresources = \"cpus:1.5;mem:32\"\n";
        svc.deploy(&c, "wide.toml", file).await?;
        let fid = std::fs::read_to_string(svc.work_dir.join("framework_id"))?;
        let path = format!("/api/v1/why/framework/{}", fid.trim());
        let v = mezzo_tests::wait_for(
            "a pending report for the third instance",
            LONG,
            || c.get(c.master_addr(), &path),
            |v| v["pending"]["tasks"].as_array().is_some_and(|t| t.len() == 1),
        )
        .await?;
        let reason = v["pending"]["tasks"][0]["reason"].as_str().unwrap_or_default();
        ensure!(
            reason.contains("service wide") && reason.contains("find no room") && reason.contains("cpus:1.5"),
            "{reason}"
        );
        Ok(())
    }
    .await;
    with_logs(result, &c, Some(&svc))
}

/// Issue 19: an instance that stops answering its HTTP check (its server
/// runs on, but its page is gone) is found unhealthy by its agent, and
/// the framework replaces it; the checks run on the agent, not here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_stops_answering_its_check_is_replaced() -> Result<()> {
    let c = Cluster::start(spec(7, 1)).await?;
    let svc = Service::start(&c, "a").await?;
    let result = async {
        svc.deploy(&c, "web.toml", &web("web", 1, HTTPD, "")).await?;
        let s = svc.wait("web", "1 healthy", LONG, |s| healthy(s) == 1).await?;
        let old = task_ids(&s).into_iter().next().context("an instance")?;
        let state = c.master_state().await?;
        let listed = state["tasks"]
            .as_array()
            .context("tasks")?
            .iter()
            .find(|t| t["id"] == old.as_str())
            .cloned();
        ensure!(
            listed.as_ref().is_some_and(|t| t["healthy"] == true),
            "the leader shows the agent's verdict: {listed:?}"
        );
        // Its page is removed: httpd answers 404 from now on.
        let sandboxes = c.dir.path().join("agent0").join("sandboxes");
        let page = std::fs::read_dir(&sandboxes)?
            .flatten()
            .map(|fw| fw.path().join(&old).join("index.html"))
            .find(|p| p.exists())
            .context("the instance's page")?;
        std::fs::remove_file(&page)?;
        let s = svc
            .wait("web", "the instance replaced", LONG, |s| {
                healthy(s) == 1 && !task_ids(s).contains(&old)
            })
            .await?;
        let events = s["events"].to_string();
        ensure!(
            events.contains(&format!("instance {old} failed its health check")) && events.contains("404"),
            "{events}"
        );
        master_holds(&c, "only the replacement", &task_ids(&s)).await?;
        Ok(())
    }
    .await;
    with_logs(result, &c, Some(&svc))
}

/// The instance's agent, from its host name (127.0.I.1).
fn agent_of(instance: &Value) -> Result<usize> {
    let host = instance["host"].as_str().context("host")?;
    let i = host.split('.').nth(2).and_then(|i| i.parse().ok());
    i.with_context(|| format!("host {host}"))
}

/// The lines of a stateful instance's log in its volume on agent `i`.
fn volume_log(c: &Cluster, i: usize, volume: &str) -> Vec<String> {
    let path = c.dir.path().join(format!("agent{i}/volumes/{volume}/log"));
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The issue's stateful service: its instance writes to its volume, is
/// killed, and comes back on the same agent to the same data; its agent
/// is SIGKILLed and restarted, and the instance returns to the volume
/// there (not to the other agent, which has room but no data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_instance_returns_to_its_volume() -> Result<()> {
    let mut c = Cluster::start(spec(8, 2)).await?;
    let svc = Service::start_in(&c, "a", "svc").await?;
    let result = async {
        let cmd = format!("echo up >> data/log; {HTTPD}");
        // A top-level key: before the first table.
        let file = web("db", 1, &cmd, "").replace("[health]", "volume = { disk_mib = 16, path = \"data\" }\n[health]");
        svc.deploy(&c, "db.toml", &file).await?;
        let s = svc.wait("db", "1 healthy", LONG, |s| healthy(s) == 1).await?;
        let first = instances(&s).into_iter().next().context("an instance")?;
        let home = agent_of(&first)?;
        ensure!(
            volume_log(&c, home, "db-0") == ["up"],
            "the volume holds {:?}",
            volume_log(&c, home, "db-0")
        );
        let volumes = c.get(c.master_addr(), "/api/v1/volumes").await?;
        ensure!(
            volumes.as_array().is_some_and(|v| v.len() == 1)
                && volumes[0]["id"] == "db-0"
                && volumes[0]["role"] == "svc",
            "{volumes}"
        );

        // Killed: back on the same agent, to the same data.
        kill_instance(first["ports"]["http"].as_u64().context("port")?)?;
        let old = first["task_id"].as_str().unwrap_or_default().to_owned();
        let s = svc
            .wait("db", "the instance replaced", LONG, |s| {
                healthy(s) == 1 && !task_ids(s).contains(&old)
            })
            .await?;
        let second = instances(&s).into_iter().next().context("an instance")?;
        ensure!(agent_of(&second)? == home, "the replacement left its volume: {second}");
        ensure!(
            volume_log(&c, home, "db-0") == ["up", "up"],
            "{:?}",
            volume_log(&c, home, "db-0")
        );

        // Its agent is SIGKILLed and restarted: the instance comes back there.
        c.agents[home].kill().await;
        c.restart_agent(home).await?;
        let old = second["task_id"].as_str().unwrap_or_default().to_owned();
        let s = svc
            .wait("db", "the instance back after the agent restart", LONG, |s| {
                healthy(s) == 1 && !task_ids(s).contains(&old)
            })
            .await?;
        let third = instances(&s).into_iter().next().context("an instance")?;
        ensure!(agent_of(&third)? == home, "the instance moved off its volume: {third}");
        ensure!(
            volume_log(&c, home, "db-0").len() == 3,
            "{:?}",
            volume_log(&c, home, "db-0")
        );
        ensure!(
            volume_log(&c, 1 - home, "db-0").is_empty(),
            "a volume appeared on the other agent"
        );
        let volumes = c.get(c.master_addr(), "/api/v1/volumes").await?;
        ensure!(volumes.as_array().is_some_and(|v| v.len() == 1), "{volumes}");
        Ok(())
    }
    .await;
    with_logs(result, &c, Some(&svc))
}
