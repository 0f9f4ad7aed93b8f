//! Benchmark driver for `scripts/bench --health`: what health checks cost
//! the agent (issue 19). A real cluster (one master, one agent with Linux
//! isolation) runs `--tasks` tasks, each a busybox httpd in a network
//! namespace of its own (all on port 8080), first unchecked, then with an
//! HTTP, a TCP and a command check every `--interval`. With every task
//! running (and healthy), the agent's CPU time (its own, and that of the
//! processes it waited for: the command checks) is read from `/proc` over
//! `--seconds`, and the checks it ran from its `/metrics`.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use mezzo_sdk::{Event, HealthCheck, Resources, TaskBuilder, TaskState, task_state};
use mezzo_tests::{Cluster, ClusterSpec, cpu_seconds, fw};

#[derive(Debug, Parser)]
#[command(about = "The agent's CPU for health-checked tasks")]
struct Args {
    /// Tasks per kind of check.
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// Seconds measured per kind.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Between two checks of a task.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Kinds to run: none, http, tcp, command.
    #[arg(long, value_delimiter = ',', default_value = "none,http,tcp,command")]
    kinds: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let spec = ClusterSpec {
        agents: 1,
        agent_resources: "cpus:1000;mem:1000000;disk:1000000".into(),
        ..Default::default()
    };
    let c = Cluster::start(spec).await?;
    let result = run(&c, &args).await;
    result.with_context(|| c.logs())
}

/// Health checks the agent has run, from its `/metrics`.
async fn checks_run(c: &Cluster) -> Result<u64> {
    let url = c.url(&c.agents[0].addr, "/metrics");
    let text = c.agent_http(0)?.get(&url).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("mezzo_agent_health_checks_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

async fn run(c: &Cluster, args: &Args) -> Result<()> {
    let agent = c.agents[0].pid().context("the agent runs")?;
    let (s, mut ev, _fid) = fw::subscribe(c, "health-bench", None).await?;
    println!(
        "machine: {} cores; {} tasks per kind, checks every {} s, measured over {} s",
        std::thread::available_parallelism()?,
        args.tasks,
        args.interval,
        args.seconds
    );
    println!("kind     agent_cpu_%  checks/s  agent_us_per_check");
    let mut baseline = None;
    for (round, kind) in args.kinds.iter().enumerate() {
        let res = Resources::parse("cpus:0.01;mem:16")?;
        let tasks: Vec<_> = (0..args.tasks)
            .map(|i| {
                let mut b = TaskBuilder::new(format!("{kind}-{round}-{i}"))
                    .resources(&res)
                    .shell("echo ok > index.html; exec busybox httpd -f -p 8080 -h .")
                    .label("mezzo.network", "isolated");
                let check = match kind.as_str() {
                    "none" => None,
                    "http" => Some(HealthCheck::http(8080, "/index.html")),
                    "tcp" => Some(HealthCheck::tcp(8080)),
                    "command" => Some(HealthCheck::shell("test -f index.html")),
                    k => return Err(anyhow::anyhow!("unknown kind {k}")),
                };
                if let Some(check) = check {
                    b = b.health_check(
                        check
                            .interval(Duration::from_secs_f64(args.interval))
                            .timeout(Duration::from_secs(5)),
                    );
                }
                Ok(b.build())
            })
            .collect::<Result<_>>()?;
        let ids: std::collections::BTreeSet<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
        // An offer with room for them all (one made before the last
        // round's tasks ended has not).
        let o = loop {
            let o = ev.offer().await?;
            let cpus: f64 = o.resources.iter().filter(|r| r.name == "cpus").map(|r| r.scalar).sum();
            if cpus >= 0.01 * args.tasks as f64 + 1.0 {
                break o;
            }
            s.decline(vec![o.offer_id], Some(0.0)).await?;
        };
        let started = Instant::now();
        s.accept(vec![o.offer_id], tasks, None).await?;
        // Every task running (and, with a check, healthy).
        let mut waiting = ids.clone();
        while !waiting.is_empty() {
            let e = ev.any(Duration::from_secs(120)).await?;
            if let Event::Update(st) = e {
                let ready = match kind.as_str() {
                    "none" => task_state(&st) == Some(TaskState::Running),
                    _ => st.healthy == Some(true),
                };
                if task_state(&st).is_some_and(TaskState::is_terminal) {
                    bail!("{} ended: {st:?}", st.task_id);
                }
                if ready {
                    waiting.remove(&st.task_id);
                }
            }
        }
        let ready_in = started.elapsed();
        let (t0, n0, w0) = (cpu_seconds(agent, true)?, checks_run(c).await?, Instant::now());
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        let (t1, n1, secs) = (
            cpu_seconds(agent, true)?,
            checks_run(c).await?,
            w0.elapsed().as_secs_f64(),
        );
        let cpu = (t1 - t0) / secs;
        let rate = (n1 - n0) as f64 / secs;
        let per_check = match (rate > 0.0, baseline) {
            (true, Some(base)) => format!("{:.0}", (cpu - base) / rate * 1e6),
            _ => "-".into(),
        };
        if kind == "none" {
            baseline = Some(cpu);
        }
        println!(
            "{kind:<8} {:>11.1}  {rate:>8.0}  {per_check:>18}   (all ready in {:.1} s)",
            cpu * 100.0,
            ready_in.as_secs_f64()
        );
        for id in &ids {
            s.kill(id, Some(Duration::from_millis(100))).await?;
        }
        // The next kind needs the room; after the last, the cluster goes.
        let mut left = ids;
        while !left.is_empty() && round + 1 < args.kinds.len() {
            match ev.any(Duration::from_secs(120)).await {
                Ok(Event::Update(st)) if task_state(&st).is_some_and(TaskState::is_terminal) => {
                    left.remove(&st.task_id);
                }
                Ok(_) => {}
                Err(e) => bail!("{} of the {kind} tasks not ended after their kill: {e}", left.len()),
            }
        }
    }
    Ok(())
}
