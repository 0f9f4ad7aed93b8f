//! The scale simulator's driver (`scripts/bench-scale`, issue 17): real
//! `mezzo master` processes (1 or 3, Raft with fsync, security on, the
//! daemons' default timings) and [`mezzo_tests::sim`]'s agents and
//! frameworks against them, in phases:
//!
//! 1. storm: every agent registers at once; timed until all are admitted
//!    and until a probe framework has been offered every one of them;
//! 2. load: frameworks launch the tasks, which keep running;
//! 3. reads: `/state` fetched from the leader, timed, with its size;
//! 4. failover (3 masters): the leader is SIGKILLed; timed until every
//!    agent has re-registered with the new one and a new probe has been
//!    offered every agent again, and no task was lost.
//!
//! Prints one line per phase, with the masters' memory and CPU time.
//!
//!     mezzo-sim --agents 10000 --per-conn 100 --frameworks 10 --tasks 100000 --masters 3

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use clap::Parser;
use mezzo_proto::resources::Resources;
use mezzo_sdk::{Event, Scheduler};
use mezzo_tests::sim::{Agents, AgentsSpec, Stats, frameworks, until};
use mezzo_tests::{Cluster, ClusterSpec};
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Mezzo's scale simulator: simulated agents and frameworks against real masters")]
struct Args {
    /// Masters (1, or 3 for the failover phase).
    #[arg(long, default_value_t = 1)]
    masters: usize,
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Agents per HTTP/2 connection (one joined credential each; at most 200).
    #[arg(long, default_value_t = 100)]
    per_conn: usize,
    /// Frameworks sharing the tasks.
    #[arg(long, default_value_t = 10)]
    frameworks: usize,
    /// Tasks launched in all (they run until the end).
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Each agent's resources.
    #[arg(long, default_value = "cpus:64;mem:262144;disk:65536")]
    agent_resources: String,
    /// Each task's resources.
    #[arg(long, default_value = "cpus:0.01;mem:1")]
    task_resources: String,
    /// `/state` reads timed.
    #[arg(long, default_value_t = 10)]
    state_reads: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.per_conn > 0 && args.per_conn <= 200, "--per-conn must be 1 to 200");
    ensure!(args.frameworks > 0, "--frameworks must be at least 1");
    let mut c = Cluster::start(ClusterSpec {
        masters: args.masters,
        agents: 0,
        // The daemons' own timings: 1 s heartbeats, 10 s agent timeout.
        master_args: Vec::new(),
        ..Default::default()
    })
    .await?;
    let result = run(&mut c, &args).await;
    if result.is_err() {
        eprintln!("{}", c.logs());
    }
    result
}

async fn run(c: &mut Cluster, args: &Args) -> Result<()> {
    println!(
        "mezzo-sim: {} master(s) (TLS, fsync), {} agents over {} connections, {} frameworks, {} tasks",
        args.masters,
        args.agents,
        args.agents.div_ceil(args.per_conn),
        args.frameworks,
        args.tasks
    );
    let started = Instant::now();
    let mut creds = Vec::new();
    for g in 0..args.agents.div_ceil(args.per_conn) {
        creds.push(c.join_as_agent(&format!("sim-{g}")).await?);
    }
    println!(
        "joins     {} agent credentials in {:.1?}",
        creds.len(),
        started.elapsed()
    );

    // 1. The storm, watched by a framework that is offered every agent.
    let probe = Probe::start(c, "sim-probe-1").await?;
    let mut spec = AgentsSpec {
        agents: args.agents,
        resources: Resources::parse(&args.agent_resources)?,
        ..AgentsSpec::default()
    };
    spec.behaviour.task_time = None;
    let storm = Instant::now();
    let agents = Agents::start(c.masters(), creds, &spec);
    let stats = agents.stats().clone();
    let admitted = until("every agent admitted", Duration::from_secs(600), || {
        Stats::get(&stats.registrations) == args.agents
    })
    .await?;
    let offered = probe.all_offered(args.agents, storm).await?;
    let (p50, p99, max, _) = stats.latency();
    println!(
        "storm     {} admitted in {admitted:.2?} (attach->registered p50 {p50:.0?} p99 {p99:.0?} max {max:.0?}; {} failed attaches, {} redirected); all offered in {offered:.2?}  {}",
        args.agents,
        Stats::get(&stats.failures),
        Stats::get(&stats.redirects),
        masters_usage(c)
    );

    // 2. The tasks.
    let need = Resources::parse(&args.task_resources)?;
    let fws: Vec<_> = (0..args.frameworks)
        .map(|f| {
            let config = c.sdk_config(&format!("sim-fw-{f}"));
            let (need, n) = (need.clone(), args.tasks / args.frameworks);
            tokio::spawn(async move { frameworks::run(config, n, &need, Duration::from_secs(86_400)).await })
        })
        .collect();
    let launched = until("every task launched", Duration::from_secs(1200), || {
        Stats::get(&stats.launched) >= args.tasks
    })
    .await?;
    println!(
        "load      {} tasks launched in {launched:.2?} ({:.0}/s)  {}",
        args.tasks,
        args.tasks as f64 / launched.as_secs_f64(),
        masters_usage(c)
    );

    // 3. Operator reads.
    read_state(c, args.state_reads).await?;

    // 4. A leader failover.
    if args.masters >= 3 {
        let before = stats.masters();
        let leader = c.wait_leader().await?;
        c.masters[leader].kill().await;
        let killed = Instant::now();
        let probe = Probe::start(c, "sim-probe-2").await?;
        let back = until("every agent re-registered", Duration::from_secs(600), || {
            let now = stats.masters();
            now.len() == 1 && now.keys().next() != before.keys().next() && Stats::get(&stats.connected) == args.agents
        })
        .await?;
        let offered = probe.all_offered(args.agents, killed).await?;
        println!(
            "failover  {} agents / {} tasks: all re-registered {back:.2?} after the kill, all offered {offered:.2?} after it  {}",
            args.agents,
            Stats::get(&stats.launched),
            masters_usage(c)
        );
        let st = c.master_state().await?;
        let troubled = st["tasks"]
            .as_array()
            .map(|t| t.iter().filter(|t| t["state"] != "TASK_RUNNING").count())
            .unwrap_or_default();
        println!("          tasks not running after the failover: {troubled}");
        read_state(c, args.state_reads).await?;
    }
    for f in fws {
        f.abort();
    }
    agents.stop();
    Ok(())
}

/// A framework that declines every offer for an hour and notes each
/// agent it was offered.
struct Probe {
    scheduler: Scheduler,
    seen: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    async fn start(c: &Cluster, name: &str) -> Result<Probe> {
        let (scheduler, mut events) = Scheduler::start(c.sdk_config(name));
        let (tx, seen) = tokio::sync::watch::channel(0);
        let s = scheduler.clone();
        let task = tokio::spawn(async move {
            let scheduler = s;
            let mut agents = HashSet::new();
            let born = Instant::now();
            while let Some(e) = events.next().await {
                if let Event::Subscribed { .. } = e {
                    println!("          (probe subscribed {:.2?} after it started)", born.elapsed());
                }
                if let Event::Offers(offers) = e {
                    let ids = offers.iter().map(|o| o.offer_id.clone()).collect();
                    agents.extend(offers.into_iter().map(|o| o.agent_id));
                    tx.send_replace(agents.len());
                    let _ = scheduler.decline(ids, Some(3600.0)).await;
                }
            }
        });
        Ok(Probe { scheduler, seen, task })
    }

    /// Waits until `n` agents were offered; answers how long since `from`.
    async fn all_offered(mut self, n: usize, from: Instant) -> Result<Duration> {
        let waited = tokio::time::timeout(Duration::from_secs(600), self.seen.wait_for(|s| *s >= n))
            .await
            .is_ok_and(|r| r.is_ok());
        // Gone for good: offers it would hold until they time out would
        // be missing from the frameworks measured next.
        self.task.abort();
        if let Err(e) = self.scheduler.teardown().await {
            eprintln!("the probe framework's teardown failed: {e}");
        }
        if !waited {
            bail!("the probe was offered {} of {n} agents", *self.seen.borrow());
        }
        Ok(from.elapsed())
    }
}

/// `/state` from the leader, `n` times: p50, max and the body's size.
async fn read_state(c: &Cluster, n: usize) -> Result<()> {
    let leader = c.wait_leader().await?;
    let addr = c.masters[leader].addr.clone();
    let http = mezzo_tests::http_client_waiting(
        &c.transport(),
        mezzo_proto::security::principal::MASTER_DNS_NAME,
        Duration::from_secs(120),
    )?;
    let url = c.url(&addr, "/state");
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..n.max(1) {
        let t = Instant::now();
        let body = http.get(&url).send().await?.error_for_status()?.bytes().await?;
        times.push(t.elapsed());
        size = body.len();
    }
    times.sort();
    println!(
        "state     /state x{}: p50 {:.0?} max {:.0?}, {:.1} MB  {}",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1],
        size as f64 / 1e6,
        masters_usage(c)
    );
    Ok(())
}

/// Each live master's resident memory and CPU time so far.
fn masters_usage(c: &Cluster) -> String {
    let mut out = Vec::new();
    for (i, m) in c.masters.iter().enumerate() {
        let Some(pid) = m.pid() else { continue };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<u64>().ok())
            .unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: u64 = fields
            .get(11..13)
            .map_or(0, |f| f.iter().filter_map(|x| x.parse::<u64>().ok()).sum());
        out.push(format!("m{i}: {} MiB, {:.1} s cpu", rss / 1024, ticks as f64 / 100.0));
    }
    format!("[{}]", out.join("; "))
}
