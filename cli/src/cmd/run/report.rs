//! What a run of many tasks reports: counts, latency percentiles, the exit
//! code, and `--timeline`.

use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use mezzo_sdk::{TaskState, task_state};
use serde::Serialize;

use super::tracks::Tracks;

/// What `--json` prints; also what `scripts/bench` reads.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub tasks: usize,
    pub finished: usize,
    pub failed: usize,
    pub other: usize,
    /// Launches that were dropped before they started and run again
    /// (not in the counts above).
    pub relaunched: usize,
    pub seconds: f64,
    pub tasks_per_second: f64,
    pub accept_to_running_ms: Percentiles,
    pub accept_to_finished_ms: Percentiles,
    /// The part of Accept→RUNNING until STARTING arrived (master, agent,
    /// journal), and the rest (STARTING's acknowledgement round trip, the
    /// launch, RUNNING's way back).
    pub accept_to_starting_ms: Percentiles,
    pub starting_to_running_ms: Percentiles,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Percentiles {
        p50: ms(0.5),
        p90: ms(0.9),
        p99: ms(0.99),
        max: h.max() as f64 / 1000.0,
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("histogram")
}

/// The counts and latencies of the tasks that ended, and the exit code:
/// 0 if all finished, else the highest exit code of those that did not
/// (1 for one without).
pub fn summarize(tracks: &Tracks, instances: usize, seconds: f64) -> anyhow::Result<(Summary, u8)> {
    let (mut to_running, mut to_done) = (histogram()?, histogram()?);
    let (mut to_starting, mut starting_to_running) = (histogram()?, histogram()?);
    let (mut finished, mut failed, mut other) = (0, 0, 0);
    let mut exit = 0u8;
    let micros = |d: Duration| d.as_micros().max(1) as u64;
    for t in tracks.by_id.values() {
        let Some((at, status)) = t.outcome() else { continue };
        let state = task_state(status);
        match state {
            Some(TaskState::Finished) => finished += 1,
            Some(TaskState::Failed) => failed += 1,
            _ => other += 1,
        }
        if let Some(acc) = t.accepted {
            if let Some(r) = t.running {
                let _ = to_running.record(micros(r.duration_since(acc)));
            }
            if let Some(st) = t.starting {
                let _ = to_starting.record(micros(st.duration_since(acc)));
                if let Some(r) = t.running {
                    let _ = starting_to_running.record(micros(r.duration_since(st)));
                }
            }
            let _ = to_done.record(micros(at.duration_since(acc)));
        }
        if state != Some(TaskState::Finished) {
            let code = status.exit_code.filter(|c| *c > 0).map(|c| c.min(255) as u8);
            exit = code.unwrap_or(1).max(exit);
        }
    }
    let summary = Summary {
        tasks: instances,
        finished,
        failed,
        other,
        relaunched: tracks.by_id.values().filter(|t| t.superseded).count(),
        seconds,
        tasks_per_second: instances as f64 / seconds,
        accept_to_running_ms: percentiles(&to_running),
        accept_to_finished_ms: percentiles(&to_done),
        accept_to_starting_ms: percentiles(&to_starting),
        starting_to_running_ms: percentiles(&starting_to_running),
    };
    Ok((summary, exit))
}

/// The text form of a run of several tasks.
pub fn print_summary(summary: &Summary) {
    let relaunched = match summary.relaunched {
        0 => String::new(),
        n => format!(" ({n} dropped before they started and relaunched)"),
    };
    let (r, f) = (&summary.accept_to_running_ms, &summary.accept_to_finished_ms);
    println!(
        "{} tasks: {} finished, {} failed, {} other{relaunched} in {:.2}s ({:.0} tasks/s)\n\
         accept->running  p50 {:.1} ms  p99 {:.1} ms\naccept->finished p50 {:.1} ms  p99 {:.1} ms",
        summary.tasks,
        summary.finished,
        summary.failed,
        summary.other,
        summary.seconds,
        summary.tasks_per_second,
        r.p50,
        r.p99,
        f.p50,
        f.p99
    );
}

#[derive(Serialize)]
struct TimelineLine<'a> {
    task_id: &'a str,
    agent_id: &'a str,
    accepted: f64,
    updates: &'a [(&'static str, f64, f64)],
}

pub fn write_timeline(path: &std::path::Path, tracks: &Tracks) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut tracks: Vec<_> = tracks.by_id.iter().filter(|(_, t)| t.accepted.is_some()).collect();
    tracks.sort_by(|a, b| a.1.accepted_at.total_cmp(&b.1.accepted_at));
    for (id, t) in tracks {
        let line = TimelineLine {
            task_id: id,
            agent_id: &t.agent_id,
            accepted: t.accepted_at,
            updates: &t.updates,
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
