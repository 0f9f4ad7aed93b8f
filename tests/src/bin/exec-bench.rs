//! Benchmark driver for `scripts/bench --exec`: `mezzo exec`'s round trip
//! (issue 19), against `crun exec` into a running crun container, in one
//! run.
//!
//! Mezzo: a real cluster (one master, one agent with Linux isolation, TLS)
//! runs one task; each round trip runs `true` in its container, timed
//! from the WebSocket's connect to the leader until the command's end
//! arrives (API), and as the CLI's whole process (`mezzo exec box --
//! true`: its start, TLS, the leader, the agent, the container's enter).
//! crun: `crun exec ID /bin/true` into a `crun run -d` container of a
//! busybox rootfs, the whole process.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use mezzo_proto::exec::{self as wire, ExecEnd, ExecRequest};
use mezzo_proto::security::ws;
use mezzo_sdk::{Resources, TaskBuilder, TaskState};
use mezzo_tests::{Cluster, ClusterSpec, fw};

#[derive(Debug, Parser)]
#[command(about = "mezzo exec round trips, against crun exec")]
struct Args {
    /// Measured round trips per way.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// A crun bundle whose process runs for long (crun is skipped without it).
    #[arg(long)]
    crun_bundle: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let c = Cluster::start(ClusterSpec {
        agents: 1,
        ..Default::default()
    })
    .await?;
    let result = run(&c, &args).await;
    result.with_context(|| c.logs())
}

fn report(what: &str, h: &Histogram<u64>) {
    println!(
        "{what:<40} p50 {:>7.2} ms  p99 {:>7.2} ms  ({} runs)",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.len()
    );
}

async fn run(c: &Cluster, args: &Args) -> Result<()> {
    let (s, mut ev, fid) = fw::subscribe(c, "exec-bench", None).await?;
    let o = ev.offer().await?;
    let task = TaskBuilder::new("box")
        .resources(&Resources::parse("cpus:0.1;mem:64")?)
        .shell("exec sleep 100000")
        .build();
    s.accept(vec![o.offer_id], vec![task], None).await?;
    ev.update("box", Duration::from_secs(10), |s| s == TaskState::Running)
        .await?;
    println!(
        "machine: {} cores; load {}",
        std::thread::available_parallelism()?,
        std::fs::read_to_string("/proc/loadavg")?.trim()
    );

    let leader = c.wait_leader().await?;
    let addr = c.masters[leader].addr.clone();
    let path = format!(
        "/api/v1/tasks/{fid}/box/exec?{}",
        ExecRequest::new(&["true".to_owned()], false, 0, 0).query()
    );
    let mut api = Histogram::<u64>::new(3)?;
    for i in 0..args.runs + 10 {
        let t0 = Instant::now();
        let socket = ws::connect(
            &c.transport(),
            &addr,
            "master.mezzo",
            &path,
            Duration::from_secs(10),
            wire::MAX_MESSAGE,
        )
        .await?;
        let (_tx, mut rx) = socket.split();
        let mut output = Vec::new();
        let end = loop {
            match rx.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) if b.first() == Some(&wire::END) => {
                    break serde_json::from_slice::<ExecEnd>(&b[1..])?;
                }
                Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) => output.extend_from_slice(&b[1..]),
                Some(Ok(_)) => {}
                other => bail!("the session ended without its end: {other:?}"),
            }
        };
        ensure!(
            end.exit_code == Some(0),
            "{end:?}: {}",
            String::from_utf8_lossy(&output)
        );
        if i >= 10 {
            api.record(t0.elapsed().as_micros() as u64)?;
        }
    }
    report("mezzo exec (API: connect to end)", &api);

    let mut cli = Histogram::<u64>::new(3)?;
    for i in 0..args.runs + 5 {
        let t0 = Instant::now();
        let st = c.command().args(["exec", "box", "--", "true"]).status().await?;
        ensure!(st.success(), "mezzo exec: {st:?}");
        if i >= 5 {
            cli.record(t0.elapsed().as_micros() as u64)?;
        }
    }
    report("mezzo exec (CLI process)", &cli);

    if let Some(bundle) = &args.crun_bundle {
        let id = format!("mezzo-execbench-{}", std::process::id());
        let crun = |a: &[&str]| {
            let mut cmd = std::process::Command::new("crun");
            cmd.args(a);
            cmd
        };
        let bundle = bundle.display().to_string();
        ensure!(
            crun(&["run", "-d", "--bundle", &bundle, &id]).status()?.success(),
            "crun run -d"
        );
        let mut h = Histogram::<u64>::new(3)?;
        let measured = (|| -> Result<()> {
            for i in 0..args.runs + 5 {
                let t0 = Instant::now();
                ensure!(crun(&["exec", &id, "/bin/true"]).status()?.success(), "crun exec");
                if i >= 5 {
                    h.record(t0.elapsed().as_micros() as u64)?;
                }
            }
            Ok(())
        })();
        let _ = crun(&["kill", &id, "KILL"]).status();
        std::thread::sleep(Duration::from_millis(200));
        let _ = crun(&["delete", "-f", &id]).status();
        measured?;
        report("crun exec (process)", &h);
        println!(
            "summary: mezzo exec through the CLI, leader and agent p50 {:.2} ms vs crun exec p50 {:.2} ms ({:.2}x); API p50 {:.2} ms",
            cli.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.5) as f64 / 1000.0,
            cli.value_at_quantile(0.5) as f64 / h.value_at_quantile(0.5) as f64,
            api.value_at_quantile(0.5) as f64 / 1000.0
        );
    }
    s.kill("box", Some(Duration::from_millis(100))).await?;
    Ok(())
}
