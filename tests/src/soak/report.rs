//! The soak's verdict and figures, computed from the outside records.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::records::{Runs, Sample};
use super::schedule::Planned;

/// A fault as it was applied: when (ns since the epoch) and to what.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub at_ns: u64,
    pub kind: &'static str,
    /// e.g. `master2`, `agent0`, `batch`.
    pub target: String,
}

/// How one batch job ended, as the batch framework reports it.
#[derive(Debug, Clone, Serialize)]
pub struct JobEnd {
    pub name: String,
    pub count: u32,
    /// `succeeded`, `failed`, ... or `unfinished` if it never ended.
    pub state: String,
    /// The reasons the framework gives for failed tasks (at most 5).
    pub failures: Vec<String>,
    /// Launches dropped before they started and made again.
    pub dropped_relaunched: u64,
    /// Tasks lost after they may have started, and launched again.
    pub requeued: u64,
}

/// Everything a soak found.
#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub seed: u64,
    pub duration_secs: f64,
    pub schedule: Vec<Planned>,
    pub applied: Vec<Applied>,
    pub faults_by_kind: BTreeMap<&'static str, usize>,
    pub jobs: Vec<JobEnd>,
    pub tasks_run: usize,
    /// Indexes with more than one recorded run.
    pub ran_twice: Vec<String>,
    /// Indexes of submitted jobs with no recorded run.
    pub lost: Vec<String>,
    /// Tasks some master listed as `TASK_DROPPED` (sampled every second,
    /// so a lower bound).
    pub dropped_seen: usize,
    /// Each leader kill to the next task start in the records (ms).
    pub leader_kill_to_launch_ms: Vec<u64>,
    pub service_instances: usize,
    pub service_floor: usize,
    pub service_lowest_healthy: Option<usize>,
    /// Samples below the floor: (ns since the epoch, healthy).
    pub service_below_floor: Vec<(u64, usize)>,
    pub registries_identical: bool,
    pub registry_note: String,
    /// Left after an orderly stop (Mezzo's own leftovers).
    pub left_by_mezzo: Vec<String>,
    /// Left after the harness's forced cleanup.
    pub left_after_cleanup: Vec<String>,
}

impl SoakReport {
    /// Fills the figures that follow from the records.
    pub fn tally(&mut self, jobs: &[(String, u32)], runs: &Runs, service: &[Sample]) {
        self.tasks_run = runs.values().map(Vec::len).sum();
        for (job, count) in jobs {
            for i in 0..*count {
                match runs.get(&(job.clone(), i)).map_or(0, Vec::len) {
                    0 => self.lost.push(format!("{job}[{i}]")),
                    1 => {}
                    n => {
                        let starts = &runs[&(job.clone(), i)];
                        let span = starts.iter().max().unwrap_or(&0) - starts.iter().min().unwrap_or(&0);
                        self.ran_twice.push(format!(
                            "{job}[{i}] ran {n} times, starts {:.1} s apart",
                            span as f64 / 1e9
                        ))
                    }
                }
            }
        }
        let mut starts: Vec<u64> = runs.values().flatten().copied().collect();
        starts.sort_unstable();
        self.leader_kill_to_launch_ms = self
            .applied
            .iter()
            .filter(|a| a.kind == "kill_leader")
            .filter_map(|a| {
                let i = starts.partition_point(|s| *s <= a.at_ns);
                starts.get(i).map(|s| (s - a.at_ns) / 1_000_000)
            })
            .collect();
        for a in &self.applied {
            *self.faults_by_kind.entry(a.kind).or_insert(0) += 1;
        }
        self.service_lowest_healthy = service.iter().map(|s| s.healthy).min();
        self.service_below_floor = service
            .iter()
            .filter(|s| s.healthy < self.service_floor)
            .map(|s| (s.at_ns, s.healthy))
            .collect();
    }

    /// What failed, one line each; empty when the soak passed.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        for j in self.jobs.iter().filter(|j| j.state != "succeeded") {
            f.push(format!(
                "job {} ({} tasks) {}: {:?}",
                j.name, j.count, j.state, j.failures
            ));
        }
        if !self.ran_twice.is_empty() {
            f.push(format!("tasks ran twice: {:?}", self.ran_twice));
        }
        if !self.lost.is_empty() {
            f.push(format!("tasks never ran: {:?}", first(&self.lost, 20)));
        }
        if !self.service_below_floor.is_empty() {
            f.push(format!(
                "service below its floor of {} healthy in {} samples: {:?}",
                self.service_floor,
                self.service_below_floor.len(),
                first(&self.service_below_floor, 10)
            ));
        }
        if !self.registries_identical {
            f.push(format!("registries differ: {}", self.registry_note));
        }
        if !self.left_by_mezzo.is_empty() {
            f.push(format!("left after an orderly stop: {:?}", self.left_by_mezzo));
        }
        if !self.left_after_cleanup.is_empty() {
            f.push(format!("left after cleanup: {:?}", self.left_after_cleanup));
        }
        f
    }
}

fn first<T: Clone>(v: &[T], n: usize) -> Vec<T> {
    v.iter().take(n).cloned().collect()
}

/// The `q` quantile (0..=1) of `v`, nearest rank.
pub fn quantile(v: &[u64], q: f64) -> Option<u64> {
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len().max(1));
    s.get(rank - 1).copied()
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |q| quantile(&self.leader_kill_to_launch_ms, q).map_or("-".to_owned(), |v| format!("{v} ms"));
        writeln!(f, "soak: seed {} over {:.0} s", self.seed, self.duration_secs)?;
        writeln!(f, "  tasks run:                {}", self.tasks_run)?;
        writeln!(f, "  jobs:                     {}", self.jobs.len())?;
        let kinds: Vec<String> = self.faults_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(f, "  faults injected:          {}", kinds.join(", "))?;
        let relaunched: u64 = self.jobs.iter().map(|j| j.dropped_relaunched).sum();
        let requeued: u64 = self.jobs.iter().map(|j| j.requeued).sum();
        writeln!(
            f,
            "  tasks dropped:            {relaunched} relaunched by the batch framework, {} seen TASK_DROPPED at the masters",
            self.dropped_seen
        )?;
        writeln!(f, "  tasks lost and requeued:  {requeued}")?;
        writeln!(
            f,
            "  leader kill -> next task: p50 {}, p99 {} (n = {})",
            ms(0.5),
            ms(0.99),
            self.leader_kill_to_launch_ms.len()
        )?;
        writeln!(f, "  tasks run twice:          {}", self.ran_twice.len())?;
        writeln!(f, "  tasks lost:               {}", self.lost.len())?;
        let lowest = self.service_lowest_healthy.map_or("-".to_owned(), |n| n.to_string());
        writeln!(
            f,
            "  service healthy:          lowest {lowest} of {} (floor {})",
            self.service_instances, self.service_floor
        )?;
        writeln!(f, "  registries identical:     {}", self.registries_identical)?;
        let failures = self.failures();
        if failures.is_empty() {
            write!(f, "  verdict:                  PASS")
        } else {
            writeln!(f, "  verdict:                  FAIL (replay with --seed {})", self.seed)?;
            for l in failures {
                writeln!(f, "    - {l}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> SoakReport {
        SoakReport {
            seed: 1,
            duration_secs: 60.0,
            schedule: Vec::new(),
            applied: vec![Applied {
                at_ns: 1_000_000_000,
                kind: "kill_leader",
                target: "master0".into(),
            }],
            faults_by_kind: BTreeMap::new(),
            jobs: vec![JobEnd {
                name: "wave-0".into(),
                count: 3,
                state: "succeeded".into(),
                failures: Vec::new(),
                dropped_relaunched: 0,
                requeued: 0,
            }],
            tasks_run: 0,
            ran_twice: Vec::new(),
            lost: Vec::new(),
            dropped_seen: 0,
            leader_kill_to_launch_ms: Vec::new(),
            service_instances: 3,
            service_floor: 2,
            service_lowest_healthy: None,
            service_below_floor: Vec::new(),
            registries_identical: true,
            registry_note: String::new(),
            left_by_mezzo: Vec::new(),
            left_after_cleanup: Vec::new(),
        }
    }

    fn runs(per_index: &[&[u64]]) -> Runs {
        per_index
            .iter()
            .enumerate()
            .map(|(i, starts)| (("wave-0".to_owned(), i as u32), starts.to_vec()))
            .collect()
    }

    fn healthy(n: &[usize]) -> Vec<Sample> {
        n.iter()
            .enumerate()
            .map(|(i, h)| Sample {
                at_ns: i as u64,
                healthy: *h,
            })
            .collect()
    }

    #[test]
    fn every_index_once_and_the_floor_kept_pass() {
        let mut r = report();
        let jobs = [("wave-0".to_owned(), 3)];
        r.tally(
            &jobs,
            &runs(&[&[500], &[1_250_000_000], &[2_000_000_000]]),
            &healthy(&[3, 2, 3]),
        );
        assert_eq!(r.failures(), Vec::<String>::new());
        assert_eq!(r.tasks_run, 3);
        assert_eq!(r.leader_kill_to_launch_ms, vec![250]);
        assert_eq!(r.faults_by_kind.get("kill_leader"), Some(&1));
        assert_eq!(r.service_lowest_healthy, Some(2));
    }

    /// The checks can fail: a task run twice, one never run, a failed job,
    /// the service below its floor, a leftover.
    #[test]
    fn each_broken_promise_is_a_failure() {
        let mut r = report();
        r.jobs[0].state = "failed".into();
        r.left_by_mezzo = vec!["cgroup x".into()];
        let jobs = [("wave-0".to_owned(), 3)];
        r.tally(&jobs, &runs(&[&[1, 2], &[3]]), &healthy(&[3, 1]));
        assert_eq!(
            r.ran_twice,
            vec!["wave-0[0] ran 2 times, starts 0.0 s apart".to_owned()]
        );
        assert_eq!(r.lost, vec!["wave-0[2]".to_owned()]);
        let f = r.failures();
        assert_eq!(f.len(), 5, "{f:?}");
        assert!(r.to_string().contains("FAIL (replay with --seed 1)"));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
