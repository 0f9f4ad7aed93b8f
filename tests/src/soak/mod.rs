//! The fault soak (issue 16, `scripts/soak`): a 3-master, 3-agent cluster
//! with batch job arrays submitted in waves and a web service running,
//! while a seeded schedule SIGKILLs and restarts masters (the leader most),
//! agents and both frameworks, and cuts the leader off the network.
//!
//! The verdict comes from records kept outside Mezzo: each batch task
//! appends its start time to a file of its own (every index must have
//! run exactly once, every job must succeed), and a prober counts the
//! service's instances that answer HTTP (never below `instances -
//! max_unavailable`). Then the registries must be identical on every
//! master, and nothing of the soak may be left: no container cgroup or
//! mount after an orderly stop, and no process, cgroup, mount or network
//! namespace after the harness's cleanup.
//!
//! ```no_run
//! # async fn soak() -> anyhow::Result<()> {
//! use std::time::Duration;
//! let spec = mezzo_tests::soak::SoakSpec::new(Duration::from_secs(600), 42);
//! let report = mezzo_tests::soak::run(&spec).await?;
//! println!("{report}");
//! anyhow::ensure!(report.failures().is_empty(), "replay with --seed 42");
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

pub mod leftovers;
pub mod records;
pub mod report;
pub mod schedule;
pub mod service;
mod world;

use leftovers::Scope;
pub use report::SoakReport;
use schedule::{Planned, Weights};
use world::World;

/// How a soak runs; equal specs with equal seeds replay the same schedule.
#[derive(Debug, Clone)]
pub struct SoakSpec {
    pub duration: Duration,
    pub seed: u64,
    pub weights: Weights,
    /// Time between the repair of one fault and the next fault.
    pub gap: (Duration, Duration),
    pub agents: usize,
    /// The masters' `--agent-timeout`.
    pub agent_timeout: Duration,
    /// A batch job array is submitted this often...
    pub wave_every: Duration,
    /// ...with this many tasks...
    pub wave_size: u32,
    /// ...at most this many running at once...
    pub wave_parallel: u32,
    /// ...each sleeping this many seconds (drawn per wave).
    pub task_secs: (u64, u64),
    pub service_instances: usize,
    pub service_max_unavailable: usize,
    /// How long jobs may take to end once the faults are over.
    pub settle: Duration,
    /// Where to copy the daemons' logs and the task records when a check
    /// fails (they are removed with the soak otherwise).
    pub keep_logs: Option<PathBuf>,
}

impl SoakSpec {
    /// The full soak of `duration` with every kind of fault.
    pub fn new(duration: Duration, seed: u64) -> SoakSpec {
        SoakSpec {
            duration,
            seed,
            weights: Weights::default(),
            gap: (Duration::from_secs(2), Duration::from_secs(6)),
            agents: 3,
            agent_timeout: Duration::from_secs(6),
            wave_every: Duration::from_secs(8),
            wave_size: 24,
            wave_parallel: 6,
            task_secs: (1, 3),
            service_instances: 3,
            service_max_unavailable: 1,
            settle: Duration::from_secs(180),
            keep_logs: None,
        }
    }

    /// The schedule this spec and seed give.
    pub fn schedule(&self) -> Vec<Planned> {
        schedule::draw(
            self.seed,
            self.duration,
            self.agents,
            self.agent_timeout,
            self.gap,
            &self.weights,
        )
    }
}

impl SoakSpec {
    /// The schedule as printed before a run: the seed, then one line per
    /// fault.
    pub fn plan_text(&self) -> String {
        let schedule = self.schedule();
        let mut out = format!(
            "soak: seed {} for {:?}, {} faults planned (replay: --seed {}):\n",
            self.seed,
            self.duration,
            schedule.len(),
            self.seed
        );
        for p in &schedule {
            out += &format!("  at {:>6.1} s: {}\n", p.at.as_secs_f64(), p.fault);
        }
        out
    }
}

/// Runs a soak and reports what it found. An `Err` means the soak could not
/// run (e.g. a daemon did not come back); a soak that ran but found a
/// fault returns a report whose [`SoakReport::failures`] is not empty.
/// Everything it started is cleaned up in both cases.
pub async fn run(spec: &SoakSpec) -> Result<SoakReport> {
    let schedule = spec.schedule();
    print!("{}", spec.plan_text());
    let mut world = World::start(spec).await?;
    let footprint = world.footprint();
    let mut report = observe(&mut world, spec, schedule).await.with_context(|| world.logs());
    if let Ok(r) = &mut report {
        world.stop_daemons().await;
        if !r.failures().is_empty()
            && let Some(keep) = &spec.keep_logs
        {
            let (cluster, records) = world.dirs();
            match keep_files(&[&cluster, &records], keep) {
                Ok(n) => println!("kept {n} logs and records in {}", keep.display()),
                Err(e) => println!("could not keep the logs in {}: {e:#}", keep.display()),
            }
        }
    }
    drop(world);
    let left = footprint.find(Duration::from_secs(10), Scope::All);
    let mut report = report?;
    report.left_after_cleanup = left;
    Ok(report)
}

/// The soak proper: faults and waves, then the checks that need the
/// cluster running, then the orderly stop of the service and its check.
async fn observe(world: &mut World, spec: &SoakSpec, schedule: Vec<Planned>) -> Result<SoakReport> {
    let samplers = records::start_samplers(world.service_ports(), world.cluster.http_client(), world.state_urls());
    let driven = world.drive(&schedule).await;
    let sampled = samplers.finish().await;
    driven?;
    let jobs = world.settle(spec.settle).await;
    let (registries_identical, registry_note) = world.registries_identical().await;
    let runs = records::read_runs(world.shared.path());
    let mut report = SoakReport {
        seed: spec.seed,
        duration_secs: spec.duration.as_secs_f64(),
        schedule,
        applied: std::mem::take(&mut world.applied),
        faults_by_kind: Default::default(),
        jobs,
        tasks_run: 0,
        ran_twice: Vec::new(),
        lost: Vec::new(),
        dropped_seen: sampled.dropped.len(),
        leader_kill_to_launch_ms: Vec::new(),
        service_instances: spec.service_instances,
        service_floor: spec.service_instances - spec.service_max_unavailable,
        service_lowest_healthy: None,
        service_below_floor: Vec::new(),
        registries_identical,
        registry_note,
        left_by_mezzo: Vec::new(),
        left_after_cleanup: Vec::new(),
    };
    report.tally(&world.jobs, &runs, &sampled.healthy);
    world.service.remove(Duration::from_secs(30)).await?;
    report.left_by_mezzo = world.footprint().find(Duration::from_secs(15), Scope::Containers);
    Ok(report)
}

/// Copies the files of `dirs` (not their subdirectories: logs, records,
/// job files; no keys or certificates) into `to`; how many.
fn keep_files(dirs: &[&Path], to: &Path) -> Result<usize> {
    std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    let mut n = 0;
    for dir in dirs {
        for e in std::fs::read_dir(dir)?.flatten() {
            let secret = ["key", "crt", "pem", "toml"]
                .iter()
                .any(|x| e.path().extension().is_some_and(|ext| ext == *x));
            if e.path().is_file() && !secret {
                std::fs::copy(e.path(), to.join(e.file_name()))?;
                n += 1;
            }
        }
    }
    Ok(n)
}
