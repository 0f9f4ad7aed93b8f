//! Decline filters: "do not offer this agent to this framework until T".

use foldhash::HashMap;
use std::time::Instant;

use super::roles::FwIx;

/// Filters by (framework, agent), with the earliest expiry cached so that
/// a cycle with nothing due costs one comparison.
#[derive(Debug, Default)]
pub(crate) struct Filters {
    until: HashMap<(FwIx, u32), Instant>,
    /// How many filters each framework holds (most hold none).
    per_fw: HashMap<FwIx, usize>,
    next_expiry: Option<Instant>,
}

impl Filters {
    pub fn insert(&mut self, fw: FwIx, agent: u32, until: Instant) {
        if self.until.insert((fw, agent), until).is_none() {
            *self.per_fw.entry(fw).or_insert(0) += 1;
        }
        self.next_expiry = Some(self.next_expiry.map_or(until, |n| n.min(until)));
    }

    /// Filters the framework holds (some may have expired, not yet swept).
    pub fn count_of(&self, fw: FwIx) -> usize {
        self.per_fw.get(&fw).copied().unwrap_or(0)
    }

    /// True while a filter keeps `agent` from `fw` at `now`.
    pub fn blocks(&self, fw: FwIx, agent: u32, now: Instant) -> bool {
        self.per_fw.contains_key(&fw) && self.until.get(&(fw, agent)).is_some_and(|t| *t > now)
    }

    /// Drops the framework's filters; returns the agents they covered.
    pub fn clear_framework(&mut self, fw: FwIx) -> Vec<u32> {
        if self.per_fw.remove(&fw).is_none() {
            return Vec::new();
        }
        let mut agents = Vec::new();
        self.until.retain(|(f, a), _| {
            let keep = *f != fw;
            if !keep {
                agents.push(*a);
            }
            keep
        });
        agents
    }

    /// Drops the filters that expired by `now`; returns their agents.
    pub fn expire(&mut self, now: Instant) -> Vec<u32> {
        if self.next_expiry.is_none_or(|n| n > now) {
            return Vec::new();
        }
        let mut agents = Vec::new();
        let mut next: Option<Instant> = None;
        let per_fw = &mut self.per_fw;
        self.until.retain(|(f, a), t| {
            if *t <= now {
                agents.push(*a);
                if let Some(n) = per_fw.get_mut(f) {
                    *n -= 1;
                    if *n == 0 {
                        per_fw.remove(f);
                    }
                }
                false
            } else {
                next = Some(next.map_or(*t, |n| n.min(*t)));
                true
            }
        });
        self.next_expiry = next;
        agents
    }

    pub fn len(&self) -> usize {
        self.until.len()
    }
}
