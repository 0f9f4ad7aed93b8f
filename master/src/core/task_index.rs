//! Every task a registered framework has (active or in its completed
//! ring) in the two shapes operators read them in: newest launch first,
//! and counted by framework, state and reason. The tasks page reads its
//! rows, and `/metrics`, the overview and the frameworks page their counts,
//! from here instead of walking every task of the cluster (at 400,000
//! tasks a walk was a 15-25 ms wait on the owner task per read, up to
//! 140 ms at p99).
//!
//! Kept beside the framework tables by whoever changes them: a task is
//! added when it enters `Framework::tasks` or `Framework::completed`, taken
//! out when it leaves, and counted again when its state changes
//! (`set_task_state`); the core tests check the index against the tables
//! after every step.

use foldhash::HashMap;
use std::collections::{BTreeMap, BTreeSet};

use mezzo_proto::ids::{FrameworkId, TaskId};
use mezzo_proto::state::TaskState;

use super::{Framework, Task};

/// Which of its framework's tables holds a task: an id may be in both
/// (reused after its first task ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Table {
    Active,
    Completed,
}

/// A task's place in the list: its launch time (newest first), its id,
/// its framework's id: the tasks page's order.
type Key = (u64, TaskId, FrameworkId, Table);

/// A task's state and its last update's reason (a `v1::StatusReason`).
pub(super) type Outcome = (TaskState, i32);

#[derive(Debug, Default)]
pub(super) struct TaskIndex {
    keys: BTreeSet<Key>,
    counts: BTreeMap<FrameworkId, HashMap<Outcome, u64>>,
}

/// `launched_at` as a number that sorts the newest launch first, in the
/// order `f64::total_cmp` gives (reversed).
pub(super) fn newest_first(launched_at: f64) -> u64 {
    let bits = launched_at.to_bits();
    let ordered = if bits >> 63 == 1 { !bits } else { bits | 1 << 63 };
    !ordered
}

fn key(t: &Task, table: Table) -> Key {
    (newest_first(t.launched_at), t.id.clone(), t.framework_id.clone(), table)
}

fn outcome(t: &Task) -> Outcome {
    (t.state, t.last_status.as_ref().map_or(0, |s| s.reason))
}

impl TaskIndex {
    pub(super) fn add(&mut self, t: &Task, table: Table) {
        self.keys.insert(key(t, table));
        self.count(t);
    }

    pub(super) fn remove(&mut self, t: &Task, table: Table) {
        if self.keys.remove(&key(t, table)) {
            self.uncount(t);
        }
    }

    /// Counts a task in its outcome (after a change of state).
    pub(super) fn count(&mut self, t: &Task) {
        let fw = self.counts.entry(t.framework_id.clone()).or_default();
        *fw.entry(outcome(t)).or_insert(0) += 1;
    }

    /// Takes a task out of its outcome's count (before a change of state).
    pub(super) fn uncount(&mut self, t: &Task) {
        let Some(fw) = self.counts.get_mut(&t.framework_id) else {
            return;
        };
        let o = outcome(t);
        if let Some(n) = fw.get_mut(&o) {
            *n -= 1;
            if *n == 0 {
                fw.remove(&o);
            }
        }
        if fw.is_empty() {
            self.counts.remove(&t.framework_id);
        }
    }

    /// How many of a framework's tasks end in each outcome.
    pub(super) fn outcomes_of(&self, fid: &FrameworkId) -> impl Iterator<Item = (Outcome, u64)> + '_ {
        self.counts.get(fid).into_iter().flatten().map(|(o, n)| (*o, *n))
    }

    /// How many tasks of the cluster end in each outcome (framework by
    /// framework: a few thousand rows at most).
    pub(super) fn outcomes(&self) -> impl Iterator<Item = (Outcome, u64)> + '_ {
        self.counts.values().flatten().map(|(o, n)| (*o, *n))
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Each task's place (see [`newest_first`]), id, framework and table,
    /// newest launch first.
    pub(super) fn newest(&self) -> impl Iterator<Item = (u64, &TaskId, &FrameworkId, Table)> {
        self.keys.iter().map(|(at, tid, fid, table)| (*at, tid, fid, *table))
    }

    /// The task a key of [`Self::newest`] names.
    pub(super) fn find<'m>(
        frameworks: &'m BTreeMap<FrameworkId, Framework>,
        (at, tid, fid, table): (u64, &TaskId, &FrameworkId, Table),
    ) -> Option<&'m Task> {
        let fw = frameworks.get(fid)?;
        let t = match table {
            Table::Active => fw.tasks.get(tid),
            // A reused id is in the ring twice, and in the map once.
            Table::Completed => (fw
                .completed_by_id
                .get(tid)
                .filter(|t| newest_first(t.launched_at) == at))
            .or_else(|| {
                fw.completed
                    .iter()
                    .find(|t| &t.id == tid && newest_first(t.launched_at) == at)
            }),
        };
        t.map(|t| &**t)
    }

    /// Checks the index against the tables it indexes, for the core tests.
    #[cfg(test)]
    pub(super) fn check<'a>(&self, tables: impl Iterator<Item = (&'a Task, Table)>) {
        let mut keys = BTreeSet::new();
        let mut counts: BTreeMap<FrameworkId, HashMap<Outcome, u64>> = BTreeMap::new();
        for (t, table) in tables {
            keys.insert(key(t, table));
            *counts
                .entry(t.framework_id.clone())
                .or_default()
                .entry(outcome(t))
                .or_insert(0) += 1;
        }
        assert_eq!(keys, self.keys, "the launch index drifted");
        assert_eq!(counts, self.counts, "the outcome counts drifted");
    }
}

#[cfg(test)]
mod tests {
    use super::newest_first;

    #[test]
    fn newer_launches_sort_first_in_total_order() {
        let times = [1.7e9 + 0.5, 1.7e9, 1.0, 0.0, -0.0, -1.0, f64::NEG_INFINITY];
        for w in times.windows(2) {
            assert!(newest_first(w[0]) < newest_first(w[1]), "{} before {}", w[0], w[1]);
        }
    }
}
