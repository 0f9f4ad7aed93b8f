//! Benchmark driver for `scripts/bench --mesos-api` (issue 18): what the
//! Mesos v1 scheduler API costs the master next to Mezzo's own gRPC API.
//! One master (`--mesos-listen`) and two agents without isolation run
//! `--tasks` trivial command tasks (`true`) three ways, one after the
//! other, with the same client logic (pack each offer with as many tasks
//! as fit, acknowledge every update, stop when all finished):
//!
//! - `native`: the Rust SDK over gRPC (acknowledgements batched, as the
//!   SDK does);
//! - `native-acks`: the same, acknowledging each update in a call of its
//!   own, as a Mesos framework does (the protocol's cost apart from the
//!   API's), the calls in flight together;
//! - `native-seq`: the same, each acknowledgement awaited before the next
//!   event is handled, as `pymesos` does (one call at a time);
//! - `mesos-rust`: JSON over HTTP from Rust, one call per acknowledgement
//!   as Mesos frameworks make them;
//! - `mesos-pymesos`: the PyPI driver `pymesos`, unmodified, with this
//!   logic (`tests/clients/mesos/pymesos_tasks.py`): one connection for
//!   its calls, as Mesos' own drivers keep;
//! - `mesos-python`: the PyPI client `mesoshttp`, unmodified
//!   (`tests/clients/mesos/mesoshttp_50.py`), which opens a connection
//!   per call.
//!
//! The Python ways run when `--python` names the interpreter of
//! `scripts/mesos-clients`' virtualenv.
//!
//! For each it prints tasks per second and the master's CPU time per
//! task (user + system from `/proc`, over the run, less what the idle
//! master spends in as long: heartbeats and allocation cycles, measured
//! first), and the ratio to the first way.

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use mezzo_sdk::{Event, Resources, TaskBuilder, TaskState, task_state};
use mezzo_tests::mesos::MesosClient;
use mezzo_tests::{Cluster, ClusterSpec, cpu_seconds, fw};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Master CPU per task: Mesos' scheduler API against Mezzo's")]
struct Args {
    /// Tasks per way.
    #[arg(long, default_value_t = 2000)]
    tasks: usize,
    /// Tasks for the Python client (slower: it handles each event only
    /// when the next arrives).
    #[arg(long, default_value_t = 1000)]
    python_tasks: usize,
    /// The virtualenv's python (`scripts/mesos-clients` prints it);
    /// without it the Python way is skipped.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Ways to run (native, native-acks, native-seq, mesos-rust,
    /// mesos-pymesos, mesos-python); ratios are to the first.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "native,native-acks,native-seq,mesos-rust,mesos-pymesos,mesos-python"
    )]
    ways: Vec<String>,
    /// Seconds to wait before each way (to attach a profiler to the master).
    #[arg(long, default_value_t = 0)]
    pause: u64,
}

/// The Python clients' programs.
const PYMESOS: &str = "tests/clients/mesos/pymesos_tasks.py";
const MESOSHTTP: &str = "tests/clients/mesos/mesoshttp_50.py";

const CPUS: f64 = 0.01;
const MEM: f64 = 4.0;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let spec = ClusterSpec {
        agents: 2,
        agent_resources: "cpus:64;mem:65536;disk:65536".into(),
        agent_args: vec!["--isolation".into(), "none".into()],
        mesos_listen: true,
        ..Default::default()
    };
    let c = Cluster::start(spec).await?;
    let result = run(&c, &args).await;
    result.with_context(|| c.logs())
}

struct Figures {
    tasks: usize,
    wall: Duration,
    master_ms: f64,
}

/// The master's CPU milliseconds over `run`, and how long it took.
async fn master_cpu<F>(c: &Cluster, run: F) -> Result<(f64, Duration)>
where
    F: std::future::Future<Output = Result<()>>,
{
    let master = c.masters[0].pid().context("the master runs")?;
    let (t0, w0) = (cpu_seconds(master, false)?, Instant::now());
    run.await?;
    let (t1, wall) = (cpu_seconds(master, false)?, w0.elapsed());
    Ok(((t1 - t0) * 1000.0, wall))
}

/// A way's figures, less the idle master's `idle_ms_per_s` over its time.
async fn measure<F>(c: &Cluster, tasks: usize, idle_ms_per_s: f64, run: F) -> Result<Figures>
where
    F: std::future::Future<Output = Result<()>>,
{
    let (ms, wall) = master_cpu(c, run).await?;
    Ok(Figures {
        tasks,
        wall,
        master_ms: (ms - idle_ms_per_s * wall.as_secs_f64()).max(0.0),
    })
}

async fn run(c: &Cluster, args: &Args) -> Result<()> {
    println!(
        "machine: {} cores; {} trivial tasks per way ({} with Python), 2 agents without isolation",
        std::thread::available_parallelism()?,
        args.tasks,
        args.python_tasks
    );
    if let Some(pid) = c.masters[0].pid() {
        println!("master pid {pid}");
    }
    let idle = Duration::from_secs(10);
    let (idle_ms, _) = master_cpu(c, async {
        tokio::time::sleep(idle).await;
        Ok(())
    })
    .await?;
    let idle_ms_per_s = idle_ms / idle.as_secs_f64();
    println!("idle master: {idle_ms_per_s:.1} ms of CPU per second (taken off each way)");
    let mut rows = Vec::new();
    for way in &args.ways {
        tokio::time::sleep(Duration::from_secs(args.pause)).await;
        let f = match way.as_str() {
            "native" => (
                "native (gRPC, Rust SDK)",
                measure(c, args.tasks, idle_ms_per_s, native(c, args.tasks, Acks::Batched)).await?,
            ),
            "native-acks" => (
                "native, one call per ack",
                measure(c, args.tasks, idle_ms_per_s, native(c, args.tasks, Acks::Concurrent)).await?,
            ),
            "native-seq" => (
                "native, acks one at a time",
                measure(c, args.tasks, idle_ms_per_s, native(c, args.tasks, Acks::Sequential)).await?,
            ),
            "mesos-rust" => (
                "mesos-rust (HTTP JSON)",
                measure(c, args.tasks, idle_ms_per_s, mesos_rust(c, args.tasks)).await?,
            ),
            "mesos-pymesos" | "mesos-python" => {
                let Some(py) = &args.python else {
                    println!("{way}: skipped (no --python; scripts/mesos-clients prints it)");
                    continue;
                };
                let (name, script, master) = if way == "mesos-pymesos" {
                    ("mesos-pymesos (pymesos)", PYMESOS, c.mesos_addr(0)?.to_string())
                } else {
                    (
                        "mesos-python (mesoshttp)",
                        MESOSHTTP,
                        format!("http://{}", c.mesos_addr(0)?),
                    )
                };
                let run = mesos_python(c, py, script, &master, args.python_tasks);
                (name, measure(c, args.python_tasks, idle_ms_per_s, run).await?)
            }
            other => bail!("unknown way {other}"),
        };
        rows.push(f);
    }
    ensure!(!rows.is_empty(), "no way ran");
    let base = rows[0].1.master_ms / rows[0].1.tasks as f64;
    println!("way                          tasks   tasks/s   master_us/task   vs native");
    for (name, f) in &rows {
        let per = f.master_ms / f.tasks as f64;
        println!(
            "{name:<28} {:>5} {:>9.0} {:>16.0} {:>10.2}x",
            f.tasks,
            f.tasks as f64 / f.wall.as_secs_f64(),
            per * 1000.0,
            per / base
        );
    }
    Ok(())
}

/// How many tasks fit in an offer of `cpus` and `mem`.
fn room(cpus: f64, mem: f64) -> usize {
    ((cpus + 1e-9) / CPUS).min((mem + 1e-9) / MEM).max(0.0) as usize
}

/// How the native way acknowledges updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acks {
    /// The SDK's own way: batched, in the background.
    Batched,
    /// A call per update, in flight together.
    Concurrent,
    /// A call per update, each awaited before the next event.
    Sequential,
}

async fn native(c: &Cluster, n: usize, acks_by: Acks) -> Result<()> {
    let mut cfg = c.sdk_config("bench-native");
    cfg.auto_acknowledge = acks_by == Acks::Batched;
    let (s, events) = mezzo_sdk::Scheduler::start(cfg);
    let mut ev = fw::Inbox::new(events);
    let mut acks = tokio::task::JoinSet::new();
    let res = Resources::parse(&format!("cpus:{CPUS};mem:{MEM}"))?;
    let (mut next, mut done) = (0, HashSet::new());
    while done.len() < n {
        match ev.any(Duration::from_secs(60)).await? {
            Event::Offers(offers) => {
                for o in offers {
                    let sum =
                        |name: &str| -> f64 { o.resources.iter().filter(|r| r.name == name).map(|r| r.scalar).sum() };
                    let k = room(sum("cpus"), sum("mem")).min(n - next);
                    if k == 0 {
                        s.decline(vec![o.offer_id], Some(1.0)).await?;
                        continue;
                    }
                    let tasks = (next..next + k)
                        .map(|i| TaskBuilder::new(format!("n{i}")).resources(&res).shell("true").build())
                        .collect();
                    next += k;
                    s.accept(vec![o.offer_id], tasks, Some(1.0)).await?;
                }
            }
            Event::Update(st) => {
                match acks_by {
                    Acks::Batched => {}
                    Acks::Concurrent => {
                        let (s, st) = (s.clone(), st.clone());
                        acks.spawn(async move { s.acknowledge(&st).await });
                    }
                    Acks::Sequential => s.acknowledge(&st).await?,
                }
                match task_state(&st) {
                    Some(TaskState::Finished) => {
                        done.insert(st.task_id.clone());
                    }
                    Some(t) if t.is_terminal() => bail!("{} ended {t:?}: {}", st.task_id, st.message),
                    _ => {}
                }
            }
            _ => {}
        }
        while let Some(r) = acks.try_join_next() {
            r??;
        }
    }
    while let Some(r) = acks.join_next().await {
        r??;
    }
    s.teardown().await?;
    Ok(())
}

async fn mesos_rust(c: &Cluster, n: usize) -> Result<()> {
    let p = "user:bench-mesos";
    c.allow(p, &["register_framework"], "*").await?;
    c.allow(p, &["run_as"], "nobody").await?;
    let token = c.issue_token(p).await?;
    let m = Arc::new(MesosClient::new(
        &format!("http://{}", c.mesos_addr(0)?),
        None,
        Some(("bench-mesos", token.as_str())),
    )?);
    let body = json!({ "type": "SUBSCRIBE", "subscribe": { "framework_info": {
        "user": "nobody", "name": "bench-mesos", "failover_timeout": 60 } } });
    let mut s = match m.subscribe(&body).await? {
        Ok(s) => s,
        Err(a) => bail!("SUBSCRIBE refused: {a:?}"),
    };
    let fid = json!({ "value": s.framework_id });
    let stream = s.stream_id.clone();
    let (mut next, mut done) = (0, HashSet::new());
    let mut calls = tokio::task::JoinSet::new();
    while done.len() < n {
        let e = s.next(Duration::from_secs(60)).await?;
        match e["type"].as_str() {
            Some("OFFERS") => {
                for o in e["offers"]["offers"].as_array().context("offers")? {
                    let sum = |name: &str| -> f64 {
                        o["resources"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|r| r["name"] == name)
                            .filter_map(|r| r["scalar"]["value"].as_f64())
                            .sum()
                    };
                    let k = room(sum("cpus"), sum("mem")).min(n - next);
                    let call = if k == 0 {
                        json!({ "framework_id": fid, "type": "DECLINE", "decline": {
                            "offer_ids": [o["id"]], "filters": { "refuse_seconds": 1 } } })
                    } else {
                        let tasks: Vec<Value> = (next..next + k)
                            .map(|i| {
                                json!({ "name": "t", "task_id": { "value": format!("m{i}") }, "agent_id": o["agent_id"],
                                "resources": [{ "name": "cpus", "type": "SCALAR", "scalar": { "value": CPUS } },
                                              { "name": "mem", "type": "SCALAR", "scalar": { "value": MEM } }],
                                "command": { "value": "true" } })
                            })
                            .collect();
                        next += k;
                        json!({ "framework_id": fid, "type": "ACCEPT", "accept": { "offer_ids": [o["id"]],
                            "operations": [{ "type": "LAUNCH", "launch": { "task_infos": tasks } }],
                            "filters": { "refuse_seconds": 1 } } })
                    };
                    let (m, stream) = (m.clone(), stream.clone());
                    calls.spawn(async move { m.call_ok(&stream, &call).await });
                }
            }
            Some("UPDATE") => {
                let st = &e["update"]["status"];
                if let Some(uuid) = st["uuid"].as_str() {
                    let ack = json!({ "framework_id": fid, "type": "ACKNOWLEDGE", "acknowledge": {
                        "agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": uuid } });
                    let (m, stream) = (m.clone(), stream.clone());
                    calls.spawn(async move { m.call_ok(&stream, &ack).await });
                }
                let id = st["task_id"]["value"].as_str().unwrap_or("").to_owned();
                match st["state"].as_str() {
                    Some("TASK_FINISHED") => {
                        done.insert(id);
                    }
                    Some("TASK_STAGING" | "TASK_STARTING" | "TASK_RUNNING") => {}
                    other => bail!("{id} ended {other:?}: {st}"),
                }
            }
            _ => {}
        }
        while let Some(r) = calls.try_join_next() {
            r??;
        }
    }
    while let Some(r) = calls.join_next().await {
        r??;
    }
    m.call_ok(&stream, &json!({ "framework_id": fid, "type": "TEARDOWN" }))
        .await?;
    Ok(())
}

/// Runs a Python client `script` against `master` (in the form it takes).
async fn mesos_python(c: &Cluster, python: &PathBuf, script: &str, master: &str, n: usize) -> Result<()> {
    let p = "user:bench-py";
    c.allow(p, &["register_framework"], "*").await?;
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())?
        .context("who am I")?
        .name;
    c.allow(p, &["run_as"], &user).await?;
    let token = c.issue_token(p).await?;
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("MESOS_MASTER", master)
        .env("MESOS_PRINCIPAL", "bench-py")
        .env("MESOS_SECRET", &token)
        .env("TASKS", n.to_string())
        .env("TIMEOUT", "600")
        .kill_on_drop(true)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "the Python client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
