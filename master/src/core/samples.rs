//! The utilisation charts' samples (`/api/v1/overview` `samples`): the
//! leader takes one every [`SAMPLE_EVERY`] on its tick and proposes them
//! to the registry six at a time (one small entry a minute), where the
//! last hour is kept (see [`crate::history`]). A new leader's charts so go
//! on from the registry; at most the last minute is lost with a killed
//! leader, and no sample is taken while agents known before a failover
//! may still re-register (their resources would read as gone).

use std::time::{Duration, Instant};

use mezzo_proto::clock::unix_now;

use super::{AgentStatus, Effect, Master};
use crate::history::Sample;
use crate::registry::RegistryOp;

/// Between two samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples proposed in one registry op.
const SAMPLES_PER_OP: usize = 6;

impl Master {
    /// Takes a sample if it is time, and proposes a full batch.
    pub(super) fn sample_utilisation(&mut self, now: Instant) {
        if self.last_sample.is_some_and(|at| now.duration_since(at) < SAMPLE_EVERY) {
            return;
        }
        if self.agents.values().any(|a| a.status == AgentStatus::Recovering) {
            return;
        }
        self.last_sample = Some(now);
        let sample = self.sample();
        self.unflushed_samples.push(sample);
        if self.unflushed_samples.len() >= SAMPLES_PER_OP {
            let samples = std::mem::take(&mut self.unflushed_samples);
            self.emit(Effect::Propose(RegistryOp::RecordSamples { samples }));
        }
    }

    /// The cluster's utilisation now.
    fn sample(&self) -> Sample {
        let (u, active_tasks) = super::view::utilisation(self);
        Sample {
            at: unix_now(),
            cpus_total: u.total.cpus.0 as f64 / 1000.0,
            cpus_allocated: u.allocated.cpus.0 as f64 / 1000.0,
            cpus_offered: u.offered.cpus.0 as f64 / 1000.0,
            mem_total: u.total.mem.0,
            mem_allocated: u.allocated.mem.0,
            mem_offered: u.offered.mem.0,
            disk_total: u.total.disk.0,
            disk_allocated: u.allocated.disk.0,
            active_tasks,
        }
    }

    /// The samples of the last hour, oldest first: the registry's and
    /// those not proposed yet.
    pub(super) fn samples(&self) -> Vec<Sample> {
        let kept = &self.registry.history.samples;
        let skip = (kept.len() + self.unflushed_samples.len()).saturating_sub(crate::history::SAMPLES_KEPT);
        kept.iter()
            .chain(self.unflushed_samples.iter())
            .skip(skip)
            .cloned()
            .collect()
    }
}
