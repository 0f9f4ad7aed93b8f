//! Utilisation over the last hour for the dashboard's charts: the master
//! samples the cluster's resources every [`INTERVAL`] into a ring of
//! [`KEEP`] samples, published through a watch channel (readers copy an
//! `Arc`, never lock).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::core::view;
use crate::error::MasterError;
use crate::runtime::Handle;
use mezzo_proto::clock::unix_now;

pub const INTERVAL: Duration = Duration::from_secs(10);
/// One hour of samples.
pub const KEEP: usize = 360;

/// One point of the charts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub at: f64,
    pub cpus_total: f64,
    pub cpus_allocated: f64,
    pub cpus_offered: f64,
    pub mem_total: u64,
    pub mem_allocated: u64,
    pub mem_offered: u64,
    pub disk_total: u64,
    pub disk_allocated: u64,
    pub active_tasks: usize,
}

/// The published history, oldest first.
pub type Samples = watch::Receiver<Arc<Vec<Sample>>>;

/// Spawns the sampler. It samples only while this master leads (a new
/// leader starts its own history).
pub fn spawn(handle: Handle, every: Duration) -> Samples {
    let (tx, rx) = watch::channel(Arc::new(Vec::new()));
    tokio::spawn(async move {
        let mut ring: VecDeque<Sample> = VecDeque::with_capacity(KEEP);
        loop {
            let (u, active_tasks) = match handle.read(view::utilisation).await {
                Ok(v) => v,
                Err(MasterError::NotLeader { .. }) => {
                    // Not leading: look again soon, so a new leader's
                    // charts start at once.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(_) => return, // the owner task is gone
            };
            if ring.len() == KEEP {
                ring.pop_front();
            }
            ring.push_back(Sample {
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
            });
            if tx.send(Arc::new(ring.iter().cloned().collect())).is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    rx
}
