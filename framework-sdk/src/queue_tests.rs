//! The work queue's bookkeeping, without a master: launches are marked by
//! hand as `offers` marks them, and updates are fed as the driver would.

use std::collections::BTreeMap;

use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

use super::*;
use crate::Resources;

fn request() -> TaskRequest {
    TaskRequest::new(&Resources::parse("cpus:0.1").expect("res"))
}

fn status(task: &str, state: TaskState) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task.into(),
        state: state.to_proto() as i32,
        ..Default::default()
    }
}

/// Launches every due item as `offers` would; returns their task ids.
fn launch_due(q: &mut WorkQueue<&'static str>, now: Instant) -> Vec<String> {
    let due: Vec<ItemId> = q.due(now).map(|(id, _)| id).collect();
    due.into_iter()
        .map(|id| {
            let task = q.task_id(id, &q.items[&id]);
            q.launched(id, task.clone());
            task
        })
        .collect()
}

#[test]
fn an_item_is_retried_within_its_policy_and_ends_once() {
    let now = Instant::now();
    let policy = RetryPolicy {
        attempts: 2,
        backoff: Duration::from_secs(1),
        ..RetryPolicy::default()
    };
    let mut q = WorkQueue::new("q", policy);
    let id = q.submit("a", request());
    assert_eq!(launch_due(&mut q, now), ["q-0-1"]);
    assert_eq!(q.update(&status("q-0-1", TaskState::Running), now), None);
    // Out of touch: it may still run, so nothing is launched again.
    assert_eq!(q.update(&status("q-0-1", TaskState::Unreachable), now), None);
    assert!(launch_due(&mut q, now).is_empty());
    // It failed: the second attempt waits out the backoff.
    assert_eq!(q.update(&status("q-0-1", TaskState::Failed), now), None);
    assert!(launch_due(&mut q, now).is_empty(), "backoff");
    let later = now + Duration::from_secs(1);
    assert_eq!(launch_due(&mut q, later), ["q-0-2"]);
    // The first attempt's end again (reconciliation) changes nothing.
    assert_eq!(q.update(&status("q-0-1", TaskState::Failed), later), None);
    let out = q
        .update(&status("q-0-2", TaskState::Failed), later)
        .expect("an outcome");
    assert_eq!((out.id, out.payload, out.succeeded, out.attempts), (id, "a", false, 2));
    assert_eq!(out.last.task_id, "q-0-2");
    assert!(q.is_empty());
    assert_eq!(q.update(&status("q-0-2", TaskState::Failed), later), None, "once");
}

#[test]
fn launches_that_never_ran_cost_no_attempt() {
    let now = Instant::now();
    let mut q = WorkQueue::new("q", RetryPolicy::attempts(1));
    q.submit("a", request());
    launch_due(&mut q, now);
    assert_eq!(q.update(&status("q-0-1", TaskState::Dropped), now), None);
    assert_eq!(launch_due(&mut q, now), ["q-0-1.1"], "a new id, at once");
    let drained = v1::TaskStatus {
        reason: v1::StatusReason::ReasonAgentDraining as i32,
        ..status("q-0-1.1", TaskState::Killed)
    };
    assert_eq!(q.update(&drained, now), None);
    assert_eq!(launch_due(&mut q, now), ["q-0-1.2"]);
    let out = q.update(&status("q-0-1.2", TaskState::Finished), now).expect("outcome");
    assert!(out.succeeded);
    assert_eq!(out.attempts, 1);
    // Past max_relaunches a drop counts as a failed attempt.
    let policy = RetryPolicy {
        max_relaunches: 1,
        ..RetryPolicy::attempts(1)
    };
    let mut q = WorkQueue::new("q", policy);
    q.submit("b", request());
    launch_due(&mut q, now);
    assert_eq!(q.update(&status("q-0-1", TaskState::Dropped), now), None);
    launch_due(&mut q, now);
    let out = q.update(&status("q-0-1.1", TaskState::Dropped), now).expect("outcome");
    assert!(!out.succeeded);
}

#[test]
fn backoff_doubles_up_to_its_limit() {
    let p = RetryPolicy {
        attempts: 10,
        backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(5),
        max_relaunches: 0,
    };
    let pauses: Vec<u64> = (2..7).map(|n| p.pause_before(n).as_secs()).collect();
    assert_eq!(pauses, [1, 2, 4, 5, 5]);
}

proptest! {
    /// Random ends for many items: each gets exactly one outcome, never
    /// more attempts than the policy allows, and the attempts it reports
    /// are the ends that could have run (drops not counted).
    #[test]
    fn every_item_ends_exactly_once_within_its_policy(
        attempts in 1u32..4,
        ends in proptest::collection::vec(0u8..8, 1..400),
    ) {
        let policy = RetryPolicy { attempts, backoff: Duration::ZERO, max_backoff: Duration::ZERO, max_relaunches: 3 };
        let mut q = WorkQueue::new("q", policy);
        let n = 20;
        for i in 0..n {
            q.submit(i, request());
        }
        let now = Instant::now();
        let mut outcomes: BTreeMap<u64, Outcome<u64>> = BTreeMap::new();
        let mut ran: BTreeMap<u64, u32> = BTreeMap::new();
        let mut drops_in_attempt: BTreeMap<u64, u32> = BTreeMap::new();
        let mut previous: Vec<String> = Vec::new();
        for e in ends {
            let due: Vec<ItemId> = q.due(now).map(|(id, _)| id).collect();
            for id in due {
                let task = q.task_id(id, &q.items[&id]);
                q.launched(id, task);
            }
            let Some((task, id)) = q.by_task.iter().next().map(|(t, i)| (t.clone(), *i)) else { break };
            let state = match e {
                0 | 1 => TaskState::Finished,
                2 | 3 => TaskState::Failed,
                4 => TaskState::Dropped,
                5 => TaskState::Lost,
                6 => TaskState::Unreachable,
                _ => {
                    // A stale end of an earlier launch: ignored.
                    if let Some(old) = previous.last() {
                        prop_assert_eq!(q.update(&status(old, TaskState::Failed), now), None);
                    }
                    continue;
                }
            };
            let out = q.update(&status(&task, state), now);
            if state.is_terminal() && state != TaskState::Unreachable {
                previous.push(task.clone());
                let d = drops_in_attempt.entry(id).or_default();
                if state == TaskState::Dropped && *d < 3 {
                    *d += 1;
                } else {
                    *ran.entry(id).or_default() += 1;
                    *d = 0;
                }
            }
            if let Some(o) = out {
                prop_assert!(outcomes.insert(o.id, o.clone()).is_none(), "two outcomes for {}", o.id);
                prop_assert!(o.attempts <= attempts);
                prop_assert_eq!(o.attempts, ran[&o.id]);
                prop_assert_eq!(o.succeeded, state == TaskState::Finished);
            }
        }
        prop_assert_eq!(outcomes.len() + q.len(), n as usize);
    }
}

/// A launch stays unconfirmed until an update of it comes; then it is not
/// asked about any more.
#[test]
fn launches_are_unconfirmed_until_an_update() {
    let now = Instant::now();
    let mut q = WorkQueue::new("q", RetryPolicy::attempts(1));
    q.submit("a", request());
    q.submit("b", request());
    launch_due(&mut q, now);
    assert_eq!(q.unconfirmed.len(), 2);
    assert_eq!(q.update(&status("q-0-1", TaskState::Staging), now), None);
    assert_eq!(q.unconfirmed.keys().collect::<Vec<_>>(), ["q-1-1"]);
    // The master answers a reconciliation of a launch it never saw with
    // TASK_DROPPED: the item is launched again, for free.
    assert_eq!(q.update(&status("q-1-1", TaskState::Dropped), now), None);
    assert_eq!(launch_due(&mut q, now), ["q-1-1.1"]);
}
