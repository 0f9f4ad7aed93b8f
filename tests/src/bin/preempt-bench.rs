//! Benchmark driver for `scripts/bench --preemption`: the time from a
//! high-priority task's report on a full cluster to its running (issue
//! 19). A real cluster (one master, one agent, TLS) is filled by a
//! framework of role `low` (priority 0, `--tasks` tasks of one cpu); a
//! framework of role `high` then reports a task of priority 10 needing a
//! cpu, and launches it on the first offer with room. Each round is timed
//! from the report to the task's TASK_RUNNING; the preempted task is
//! launched again before the next round. The master's preemption delay
//! and grace are given (`--delay`, `--grace`): the figure is theirs plus
//! what the mechanism adds.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use mezzo_sdk::{Event, Resources, Scheduler, TaskBuilder, TaskState, pending_task, task_state};
use mezzo_tests::{Cluster, ClusterSpec, fw};

#[derive(Debug, Parser)]
#[command(about = "Time from a high-priority report on a full cluster to its task running")]
struct Args {
    /// Measured rounds.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Low-priority tasks filling the agent (one cpu each).
    #[arg(long, default_value_t = 8)]
    tasks: usize,
    /// The master's --preemption-delay.
    #[arg(long, default_value = "0s")]
    delay: String,
    /// The master's --preemption-grace.
    #[arg(long, default_value = "0s")]
    grace: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut spec = ClusterSpec {
        agents: 1,
        agent_resources: format!("cpus:{};mem:65536;disk:65536", args.tasks),
        ..Default::default()
    };
    spec.master_args.extend([
        "--preemption-delay".into(),
        args.delay.clone(),
        "--preemption-grace".into(),
        args.grace.clone(),
    ]);
    let c = Cluster::start(spec).await?;
    let result = run(&c, &args).await;
    result.with_context(|| c.logs())
}

/// Offers of `ev` until one has a cpu, declining the others.
async fn offer_with_a_cpu(s: &Scheduler, ev: &mut fw::Inbox) -> Result<mezzo_sdk::v1::Offer> {
    loop {
        let o = ev.offer().await?;
        let cpus: f64 = o.resources.iter().filter(|r| r.name == "cpus").map(|r| r.scalar).sum();
        if cpus >= 1.0 {
            return Ok(o);
        }
        s.decline(vec![o.offer_id], Some(0.2)).await?;
    }
}

async fn run(c: &Cluster, args: &Args) -> Result<()> {
    let start = |name: &str, role: &str| {
        let mut cfg = c.sdk_config(name);
        cfg.framework.roles = vec![role.into()];
        let (s, events) = Scheduler::start(cfg);
        (s, fw::Inbox::new(events))
    };
    let (low, mut low_ev) = start("low", "low");
    let cpu = Resources::parse("cpus:1;mem:32")?;
    let sleeper = |id: String| TaskBuilder::new(id).resources(&cpu).shell("exec sleep 100000").build();
    // Fill the agent.
    let mut running = 0;
    let mut n = 0;
    while running < args.tasks {
        let o = offer_with_a_cpu(&low, &mut low_ev).await?;
        let cpus: f64 = o.resources.iter().filter(|r| r.name == "cpus").map(|r| r.scalar).sum();
        let k = (cpus as usize).min(args.tasks - running);
        let tasks = (0..k).map(|i| sleeper(format!("low-{}", n + i))).collect();
        n += k;
        low.accept(vec![o.offer_id], tasks, None).await?;
        running += k;
    }
    // Only now: offers would have gone to it first.
    let (high, mut high_ev) = start("high", "high");
    high_ev
        .next(Duration::from_secs(10), |e| {
            matches!(e, Event::Subscribed { .. }).then_some(())
        })
        .await?;
    high.suppress().await?;
    println!(
        "machine: {} cores; {} low-priority tasks fill the agent; preemption delay {}, grace {}",
        std::thread::available_parallelism()?,
        args.tasks,
        args.delay,
        args.grace
    );
    let mut h = Histogram::<u64>::new(3)?;
    for round in 0..args.rounds {
        let id = format!("urgent-{round}");
        let mut waiting = pending_task(id.clone(), "the cluster is full", Some(&cpu));
        waiting.priority = 10;
        let t0 = Instant::now();
        high.revive().await?;
        high.report_pending(vec![waiting]).await?;
        let o = offer_with_a_cpu(&high, &mut high_ev)
            .await
            .context("the high framework gets no cpu")?;
        let task = TaskBuilder::new(id.clone())
            .resources(&cpu)
            .shell("exec sleep 100000")
            .priority(10)
            .build();
        high.accept(vec![o.offer_id], vec![task], None).await?;
        // Nothing more to place: no offers that the low framework waits for.
        high.suppress().await?;
        high.report_pending(Vec::new()).await?;
        high_ev
            .update(&id, Duration::from_secs(60), |s| s == TaskState::Running)
            .await?;
        h.record(t0.elapsed().as_micros() as u64)?;
        // Back to full: the urgent task ends, the low framework relaunches
        // what was preempted.
        high.kill(&id, Some(Duration::ZERO)).await?;
        let preempted = low_ev
            .next(Duration::from_secs(30), |e| match e {
                Event::Update(s) if task_state(s) == Some(TaskState::Killed) => Some(s.task_id.clone()),
                _ => None,
            })
            .await
            .context("no low task was killed")?;
        let o = offer_with_a_cpu(&low, &mut low_ev)
            .await
            .context("the low framework gets no cpu back")?;
        n += 1;
        low.accept(vec![o.offer_id], vec![sleeper(format!("low-{n}"))], None)
            .await?;
        if preempted.is_empty() {
            bail!("no task was preempted");
        }
    }
    println!(
        "report to running: p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  ({} rounds)",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    );
    Ok(())
}
