//! When each key is reconciled next: at most one pending reconcile per
//! key (the earliest asked for wins), and a backoff per key for
//! reconciles that failed. Pure: it is told the time.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::Backoff;

/// First and longest pause after a failed reconcile.
const ERROR_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(60));

#[derive(Debug, Default)]
pub(crate) struct Schedule {
    due: BTreeMap<String, Instant>,
    backoff: BTreeMap<String, Backoff>,
}

impl Schedule {
    /// Reconcile `key` at `when`, unless it is already due sooner.
    pub(crate) fn at(&mut self, key: &str, when: Instant) {
        let due = self.due.entry(key.to_owned()).or_insert(when);
        *due = (*due).min(when);
    }

    /// The keys due at `now`, each once, taken off the schedule.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<String> {
        let keys: Vec<String> = self
            .due
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            self.due.remove(k);
        }
        keys
    }

    /// A reconcile of `key` failed: try again after its next backoff.
    pub(crate) fn failed(&mut self, key: &str, now: Instant) -> Duration {
        let delay = self
            .backoff
            .entry(key.to_owned())
            .or_insert_with(|| Backoff::new(ERROR_BACKOFF.0, ERROR_BACKOFF.1))
            .next_delay();
        self.at(key, now + delay);
        delay
    }

    /// A reconcile of `key` succeeded: its backoff starts over.
    pub(crate) fn succeeded(&mut self, key: &str) {
        self.backoff.remove(key);
    }

    pub(crate) fn forget(&mut self, key: &str) {
        self.due.remove(key);
        self.backoff.remove(key);
    }
}
