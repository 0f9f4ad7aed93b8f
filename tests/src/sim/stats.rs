//! What the simulated agents did, counted as they go: shared by every
//! agent task, read by the test or the benchmark driver at any time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// Counters and per-agent facts. Cheap to update from 50,000 tasks.
#[derive(Debug)]
pub struct Stats {
    /// Sessions registered now (a master answered `Registered` and the
    /// stream has not ended).
    pub connected: AtomicUsize,
    /// `Registered` answers to a `Register` (a new agent).
    pub registrations: AtomicUsize,
    /// `Registered` answers to a `Reregister`.
    pub reregistrations: AtomicUsize,
    /// Sessions that failed before or after registering (redirects to
    /// the leader not counted).
    pub failures: AtomicUsize,
    /// Of the failures, registrations that waited for `Registered` in vain.
    pub timeouts: AtomicUsize,
    /// Of those, the ones the master had not even answered `Attach`.
    pub unanswered: AtomicUsize,
    /// Attaches a follower answered by naming the leader.
    pub redirects: AtomicUsize,
    /// Tasks the masters launched here.
    pub launched: AtomicUsize,
    /// Task ends acknowledged (the task is forgotten).
    pub ended: AtomicUsize,
    /// Status updates sent, resends included.
    pub updates_sent: AtomicUsize,
    /// Status updates resent (no acknowledgement in time).
    pub resends: AtomicUsize,
    /// Each agent's id and the master id it last registered with.
    agents: RwLock<Vec<(String, String)>>,
    /// Attach to `Registered`, in microseconds.
    latency: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Stats {
    pub(super) fn new(agents: usize) -> Stats {
        Stats {
            connected: AtomicUsize::new(0),
            registrations: AtomicUsize::new(0),
            reregistrations: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            timeouts: AtomicUsize::new(0),
            unanswered: AtomicUsize::new(0),
            redirects: AtomicUsize::new(0),
            launched: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            updates_sent: AtomicUsize::new(0),
            resends: AtomicUsize::new(0),
            agents: RwLock::new(vec![(String::new(), String::new()); agents]),
            latency: Mutex::new(hdrhistogram::Histogram::new(3).expect("3 significant figures is valid")),
        }
    }

    pub(super) fn registered(&self, index: usize, agent_id: &str, master_id: &str, took: Duration, again: bool) {
        if let Ok(mut a) = self.agents.write()
            && let Some(slot) = a.get_mut(index)
        {
            *slot = (agent_id.to_owned(), master_id.to_owned());
        }
        if let Ok(mut h) = self.latency.lock() {
            let _ = h.record(took.as_micros().min(u128::from(u64::MAX)) as u64);
        }
        let counter = if again {
            &self.reregistrations
        } else {
            &self.registrations
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    /// The agents' ids (empty for one not registered yet), by index.
    pub fn agent_ids(&self) -> Vec<String> {
        self.agents
            .read()
            .map(|a| a.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default()
    }

    /// How many agents last registered with each master (by master id;
    /// "" for agents not registered yet).
    pub fn masters(&self) -> BTreeMap<String, usize> {
        // Counted under the lock without a copy of each agent's master id:
        // polled while 40,000 agents re-register, a copy each took a quarter
        // of the simulator's CPU and held up their registrations' writes.
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        let Ok(a) = self.agents.read() else {
            return BTreeMap::new();
        };
        for (_, m) in a.iter() {
            *counts.entry(m.as_str()).or_default() += 1;
        }
        counts.into_iter().map(|(m, n)| (m.to_owned(), n)).collect()
    }

    /// Attach-to-`Registered` latency: p50, p99 and max, and how many.
    pub fn latency(&self) -> (Duration, Duration, Duration, u64) {
        let h = self
            .latency
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        let us = |v: u64| Duration::from_micros(v);
        (
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.99)),
            us(h.max()),
            h.len(),
        )
    }

    pub fn get(c: &AtomicUsize) -> usize {
        c.load(Ordering::Relaxed)
    }
}
