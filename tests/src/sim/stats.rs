//! What the simulated agents did, counted as they go: shared by every
//! agent task, read by the test or the benchmark driver at any time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

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
    agents: RwLock<Agents>,
    /// Attach to `Registered`, in microseconds.
    latency: Mutex<hdrhistogram::Histogram<u64>>,
    /// Every Attach: when it was sent, to which master, and how long the
    /// master took to answer it (`None`: not within the wait).
    attaches: Mutex<Vec<Attach>>,
}

/// One Attach: when it was sent, to which master, and its answer's wait.
type Attach = (Instant, Arc<str>, Option<Duration>);

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
            agents: RwLock::new(Agents {
                each: vec![(String::new(), String::new()); agents],
                by_master: (agents > 0).then(|| (String::new(), agents)).into_iter().collect(),
            }),
            latency: Mutex::new(hdrhistogram::Histogram::new(3).expect("3 significant figures is valid")),
            attaches: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn registered(&self, index: usize, agent_id: &str, master_id: &str, took: Duration, again: bool) {
        if let Ok(mut a) = self.agents.write() {
            a.set(index, agent_id, master_id);
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
            .map(|a| a.each.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default()
    }

    /// How many agents last registered with each master (by master id;
    /// "" for agents not registered yet).
    pub fn masters(&self) -> BTreeMap<String, usize> {
        // Counted as agents register: polled while 40,000 agents
        // re-register, a count over all of them took 6 % of the
        // simulator's CPU (and held up their registrations' writes).
        self.agents.read().map(|a| a.by_master.clone()).unwrap_or_default()
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

    pub(super) fn attached(&self, sent: Instant, master: &Arc<str>, took: Option<Duration>) {
        if let Ok(mut a) = self.attaches.lock() {
            a.push((sent, master.clone(), took));
        }
    }

    /// The Attaches sent since `from`, by the second they were sent in
    /// and by master: how many, how many unanswered, the slowest answer.
    pub fn attaches_since(&self, from: Instant) -> String {
        let mut by: BTreeMap<(u64, Arc<str>), (usize, usize, Duration)> = BTreeMap::new();
        let attaches = self.attaches.lock().unwrap_or_else(|e| e.into_inner());
        for (sent, master, took) in attaches.iter() {
            let Some(after) = sent.checked_duration_since(from) else {
                continue;
            };
            let e = by.entry((after.as_secs(), master.clone())).or_default();
            e.0 += 1;
            match took {
                None => e.1 += 1,
                Some(t) => e.2 = e.2.max(*t),
            }
        }
        by.into_iter()
            .map(|((s, m), (n, lost, max))| format!("{s}s {m}: {n} ({lost} unanswered, max {max:.2?})"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn get(c: &AtomicUsize) -> usize {
        c.load(Ordering::Relaxed)
    }
}

/// Each agent's id and master, and how many agents each master has
/// ("" the agents not registered yet).
#[derive(Debug)]
struct Agents {
    each: Vec<(String, String)>,
    by_master: BTreeMap<String, usize>,
}

impl Agents {
    fn set(&mut self, index: usize, agent_id: &str, master_id: &str) {
        let Some(slot) = self.each.get_mut(index) else {
            return;
        };
        if slot.1 != master_id {
            if let Some(n) = self.by_master.get_mut(&slot.1) {
                *n -= 1;
                if *n == 0 {
                    self.by_master.remove(&slot.1);
                }
            }
            *self.by_master.entry(master_id.to_owned()).or_default() += 1;
            slot.1 = master_id.to_owned();
        }
        if slot.0 != agent_id {
            slot.0 = agent_id.to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attaches sent before `from` are left out; the rest are counted by
    /// the second they were sent in and by master, with the unanswered
    /// ones and the slowest answer.
    #[test]
    fn attaches_are_summed_by_second_and_master() {
        let stats = Stats::new(1);
        let (m1, m2): (Arc<str>, Arc<str>) = ("m1".into(), "m2".into());
        let from = Instant::now();
        let before = from.checked_sub(Duration::from_secs(1)).expect("a second of uptime");
        stats.attached(before, &m1, None);
        stats.attached(from, &m1, Some(Duration::from_millis(30)));
        stats.attached(from + Duration::from_millis(200), &m1, None);
        stats.attached(from + Duration::from_millis(900), &m1, Some(Duration::from_millis(70)));
        stats.attached(from + Duration::from_millis(1500), &m2, Some(Duration::from_millis(5)));
        assert_eq!(
            stats.attaches_since(from),
            "0s m1: 3 (1 unanswered, max 70.00ms); 1s m2: 1 (0 unanswered, max 5.00ms)"
        );
    }

    /// The counts follow each agent from "" (not registered) to the
    /// master it last registered with, and drop a master left by all.
    #[test]
    fn agents_are_counted_by_their_latest_master() {
        let stats = Stats::new(3);
        let counts = |v: &[(&str, usize)]| v.iter().map(|(m, n)| (m.to_string(), *n)).collect::<BTreeMap<_, _>>();
        assert_eq!(stats.masters(), counts(&[("", 3)]));
        stats.registered(0, "a0", "m1", Duration::ZERO, false);
        stats.registered(1, "a1", "m1", Duration::ZERO, false);
        assert_eq!(stats.masters(), counts(&[("", 1), ("m1", 2)]));
        stats.registered(2, "a2", "m1", Duration::ZERO, false);
        stats.registered(0, "a0", "m1", Duration::ZERO, true);
        assert_eq!(stats.masters(), counts(&[("m1", 3)]));
        stats.registered(0, "a0", "m2", Duration::ZERO, true);
        stats.registered(1, "a1", "m2", Duration::ZERO, true);
        stats.registered(2, "a2", "m2", Duration::ZERO, true);
        assert_eq!(stats.masters(), counts(&[("m2", 3)]));
        assert_eq!(stats.agent_ids(), ["a0", "a1", "a2"]);
    }
}
