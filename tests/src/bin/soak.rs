//! The fault soak driver (`scripts/soak DURATION`): runs
//! [`mezzo_tests::soak`] for DURATION, prints the schedule, the seed and
//! the figures, and exits 1 if any check failed. Needs root (cgroups,
//! network namespaces) and iproute2.
//!
//!     soak 10m [--seed N] [--json] [--no-agent-kills] [--plan] [--keep-logs DIR]

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use mezzo_tests::soak::{SoakSpec, run};

#[derive(Debug, Parser)]
#[command(about = "Mezzo's fault soak: faults against batch waves and a service, checked from outside")]
struct Args {
    /// How long faults are injected: `90s`, `10m`, `1h`.
    #[arg(value_parser = duration)]
    duration: Duration,
    /// The schedule's seed (printed; the same seed replays the same schedule).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the report as JSON (after the progress lines) instead of text.
    #[arg(long)]
    json: bool,
    /// When a check fails, copy the daemons' logs and the task records here.
    #[arg(long)]
    keep_logs: Option<std::path::PathBuf>,
    /// Print the schedule of this seed and duration, and run nothing.
    #[arg(long)]
    plan: bool,
    /// Never kill agents (the faults that need issue 16 part A to pass).
    #[arg(long)]
    no_agent_kills: bool,
}

/// `90s`, `10m`, `1h` or plain seconds.
fn duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .with_context(|| format!("{s:?} is not a duration like 90s or 10m"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("{s:?}: the unit is s, m or h"),
    };
    Ok(Duration::from_secs(secs))
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<ExitCode> {
    let args = Args::parse();
    if args.plan {
        let mut spec = SoakSpec::new(args.duration, args.seed.unwrap_or_else(seed_from_clock));
        if args.no_agent_kills {
            spec.weights.kill_agent = 0;
        }
        print!("{}", spec.plan_text());
        return Ok(ExitCode::SUCCESS);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("soak: skipped: needs root (cgroups for --isolation linux, network namespaces)");
        return Ok(ExitCode::from(77));
    }
    let mut spec = SoakSpec::new(args.duration, args.seed.unwrap_or_else(seed_from_clock));
    if args.no_agent_kills {
        spec.weights.kill_agent = 0;
    }
    spec.keep_logs = args.keep_logs;
    // On Ctrl-C or SIGTERM the soak's future is dropped, and with it the
    // cluster, whose Drop guards kill and remove everything it started.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let report = tokio::select! {
        r = run(&spec) => r?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("soak: interrupted (seed {}); what it started is removed", spec.seed);
            return Ok(ExitCode::from(130));
        }
        _ = term.recv() => {
            eprintln!("soak: terminated (seed {}); what it started is removed", spec.seed);
            return Ok(ExitCode::from(143));
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(if report.failures().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
