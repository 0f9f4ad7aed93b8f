//! The work queue's bookkeeping, without a master: launches are marked by
//! hand as `offers` marks them, and updates are fed as the driver would.
//! How each end moves an item follows DESIGN.md "Tasks": DROPPED never
//! ran, LOST/GONE may have run, UNREACHABLE may come back.

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

fn with_message(task: &str, state: TaskState, message: &str) -> v1::TaskStatus {
    v1::TaskStatus {
        message: message.into(),
        ..status(task, state)
    }
}

/// Launches every waiting item as `offers` would (after ending due
/// backoffs); returns their task ids.
fn launch_due<T>(q: &mut WorkQueue<T>, now: Instant) -> Vec<String> {
    q.due(now);
    let ready: Vec<ItemId> = q.ready.iter().copied().collect();
    ready
        .into_iter()
        .map(|id| {
            let task = q.task_id(id, &q.items[&id]);
            q.start(id, task.clone(), now);
            task
        })
        .collect()
}

fn ended<T>(c: Option<Change<T>>) -> Outcome<T> {
    c.and_then(Change::ended).expect("an outcome")
}

fn failure<T: std::fmt::Debug>(c: Option<Change<T>>) -> Failure {
    match c {
        Some(Change::Retrying { failure, .. }) => failure,
        Some(Change::Ended(Outcome {
            ended: Ended::Failed(f),
            ..
        })) => f,
        other => panic!("no failure: {other:?}"),
    }
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
    let f = failure(q.update(&with_message("q-0-1", TaskState::Failed, "exit 3"), now));
    assert_eq!(
        (f.attempt, f.state, f.reason.as_str()),
        (1, TaskState::Failed, "exit 3")
    );
    assert!(matches!(q.state(id), Some((ItemState::Backoff(_), 2))));
    assert!(
        launch_due(&mut q, now + Duration::from_millis(999)).is_empty(),
        "backoff"
    );
    let later = now + Duration::from_secs(1);
    assert_eq!(launch_due(&mut q, later), ["q-0-2"]);
    // The first attempt's end again (reconciliation) changes nothing.
    assert_eq!(q.update(&status("q-0-1", TaskState::Failed), later), None);
    let out = ended(q.update(&status("q-0-2", TaskState::Failed), later));
    assert_eq!(
        (out.id, out.payload, out.succeeded(), out.attempts),
        (id, "a", false, 2)
    );
    assert_eq!(out.last.map(|s| s.task_id).as_deref(), Some("q-0-2"));
    assert!(q.is_empty());
    assert_eq!(q.update(&status("q-0-2", TaskState::Failed), later), None, "once");
}

#[test]
fn launches_that_never_ran_cost_no_attempt() {
    let now = Instant::now();
    let mut q = WorkQueue::new("q", RetryPolicy::attempts(1));
    q.submit("a", request());
    launch_due(&mut q, now);
    let relaunch = q.update(&status("q-0-1", TaskState::Dropped), now);
    assert_eq!(
        relaunch,
        Some(Change::Relaunching {
            id: 0,
            why: Relaunch::Dropped
        })
    );
    assert_eq!(launch_due(&mut q, now), ["q-0-1.1"], "a new id, at once");
    // A resent DROPPED of the replaced launch is not counted again.
    assert_eq!(q.update(&status("q-0-1", TaskState::Dropped), now), None);
    let drained = v1::TaskStatus {
        reason: v1::StatusReason::ReasonAgentDraining as i32,
        ..status("q-0-1.1", TaskState::Killed)
    };
    assert!(matches!(
        q.update(&drained, now),
        Some(Change::Relaunching {
            why: Relaunch::Drained,
            ..
        })
    ));
    assert_eq!(launch_due(&mut q, now), ["q-0-1.2"]);
    // Preempted, again and again: never an attempt, never a requeue.
    for n in 2..8 {
        let preempted = v1::TaskStatus {
            reason: v1::StatusReason::ReasonPreempted as i32,
            ..status(&format!("q-0-1.{n}"), TaskState::Killed)
        };
        assert!(matches!(
            q.update(&preempted, now),
            Some(Change::Relaunching {
                why: Relaunch::Preempted,
                ..
            })
        ));
        assert_eq!(launch_due(&mut q, now), [format!("q-0-1.{}", n + 1)]);
    }
    let out = ended(q.update(&status("q-0-1.8", TaskState::Finished), now));
    assert!(out.succeeded());
    assert_eq!(out.attempts, 1);
}

#[test]
fn drops_in_a_row_are_capped_and_a_run_starts_the_count_again() {
    let now = Instant::now();
    let policy = RetryPolicy {
        max_drops: 2,
        ..RetryPolicy::attempts(1)
    };
    let mut q = WorkQueue::new("q", policy.clone());
    q.submit("b", request());
    for _ in 0..2 {
        let t = launch_due(&mut q, now).remove(0);
        assert!(q.update(&status(&t, TaskState::Dropped), now).is_some());
    }
    let t = launch_due(&mut q, now).remove(0);
    let out = ended(q.update(&with_message(&t, TaskState::Dropped, "cgroup failed"), now));
    match out.ended {
        Ended::Failed(f) => assert_eq!(f.reason, "dropped 3 times in a row: cgroup failed"),
        other => panic!("{other:?}"),
    }
    let mut q = WorkQueue::new("q", policy);
    q.submit("c", request());
    for _ in 0..10 {
        let t = launch_due(&mut q, now).remove(0);
        q.update(&status(&t, TaskState::Running), now);
        assert!(matches!(
            q.update(&status(&t, TaskState::Dropped), now),
            Some(Change::Relaunching { .. })
        ));
    }
}

#[test]
fn lost_tasks_requeue_within_a_limit_or_fail_as_the_policy_says() {
    let now = Instant::now();
    let policy = RetryPolicy {
        max_requeues: 2,
        ..RetryPolicy::attempts(2)
    };
    let mut q = WorkQueue::new("q", policy.clone());
    q.submit("a", request());
    for n in 0..2 {
        let t = launch_due(&mut q, now).remove(0);
        let state = if n == 0 { TaskState::Lost } else { TaskState::Gone };
        assert!(matches!(
            q.update(&status(&t, state), now),
            Some(Change::Relaunching {
                why: Relaunch::Lost,
                ..
            })
        ));
    }
    // The third loss is a failed attempt; the limit holds over attempts.
    let t = launch_due(&mut q, now).remove(0);
    let f = failure(q.update(&with_message(&t, TaskState::Lost, "agent gone"), now));
    assert_eq!((f.attempt, f.reason.as_str()), (1, "lost 3 times: agent gone"));
    let t = launch_due(&mut q, now + Duration::from_secs(5)).remove(0);
    assert_eq!(t, "q-0-2", "a new attempt starts its relaunches again");
    assert!(!ended(q.update(&status(&t, TaskState::Lost), now)).succeeded());
    // Without requeue_lost a loss is a failed attempt at once.
    let mut q = WorkQueue::new(
        "q",
        RetryPolicy {
            requeue_lost: false,
            ..policy
        },
    );
    q.submit("b", request());
    let t = launch_due(&mut q, now).remove(0);
    assert_eq!(
        failure(q.update(&status(&t, TaskState::Lost), now)).state,
        TaskState::Lost
    );
}

#[test]
fn timeouts_kill_once_and_count_as_failures() {
    let now = Instant::now();
    let policy = RetryPolicy {
        timeout: Some(Duration::from_secs(5)),
        ..RetryPolicy::attempts(1)
    };
    let mut q = WorkQueue::new("q", policy);
    let id = q.submit("a", request());
    let t = launch_due(&mut q, now).remove(0);
    assert!(q.due(now + Duration::from_secs(4)).is_empty());
    assert_eq!(q.due(now + Duration::from_secs(5)), std::slice::from_ref(&t));
    assert!(q.due(now + Duration::from_secs(6)).is_empty(), "killed once");
    assert!(matches!(
        q.state(id),
        Some((ItemState::Running { killing: true, .. }, 1))
    ));
    let f = failure(q.update(&status(&t, TaskState::Killed), now));
    assert_eq!(f.reason, "timed out after 5s");
}

#[test]
fn cancelled_items_end_at_once_or_with_their_kill() {
    let now = Instant::now();
    let mut q = WorkQueue::new("q", RetryPolicy::attempts(3));
    let a = q.submit("a", request());
    let ta = launch_due(&mut q, now).remove(0);
    let b = q.submit("b", request());
    assert_eq!(q.cancel_item(a), Cancelling::Kill(ta.clone()));
    match q.cancel_item(b) {
        Cancelling::Ended(Change::Ended(o)) => assert_eq!((o.ended, o.attempts, o.last), (Ended::Cancelled, 0, None)),
        other => panic!("{other:?}"),
    }
    assert_eq!(q.cancel_item(b), Cancelling::Unknown, "ended before");
    // The killed task's end is its outcome, whatever state it ends in.
    let out = ended(q.update(&status(&ta, TaskState::Failed), now));
    assert_eq!((out.ended, out.attempts), (Ended::Cancelled, 1));
    assert!(q.is_empty());
    // Unless it finished before the kill landed: then it succeeded.
    let c = q.submit("c", request());
    let tc = launch_due(&mut q, now).remove(0);
    assert_eq!(q.cancel_item(c), Cancelling::Kill(tc.clone()));
    assert!(ended(q.update(&status(&tc, TaskState::Finished), now)).succeeded());
}

#[test]
fn adopted_tasks_count_as_the_items_run() {
    let now = Instant::now();
    let mut q = WorkQueue::new("q", RetryPolicy::attempts(3));
    let policy = Arc::new(RetryPolicy::attempts(3));
    let resume = Resume {
        attempt: 2,
        requeues: 0,
    };
    let id = q.submit_with("a", request(), policy, resume);
    assert!(!q.adopt(id, "old-1", 1, now), "an attempt already spent");
    assert!(q.adopt(id, "old-2", 2, now));
    assert!(!q.adopt(id, "old-3", 3, now), "it runs a task already");
    assert!(launch_due(&mut q, now).is_empty());
    assert_eq!(q.item_of("old-2"), Some(id));
    let f = failure(q.update(&status("old-2", TaskState::Failed), now));
    assert_eq!(f.attempt, 2);
    assert_eq!(launch_due(&mut q, now + Duration::from_secs(60)), ["q-0-3"]);
    assert!(!ended(q.update(&status("q-0-3", TaskState::Failed), now)).succeeded());
}

/// An agent resends an end until it is acknowledged; a framework that
/// restarted adopts what reconciliation reports. A resent end of a task
/// the item has already moved past is neither.
#[test]
fn a_resent_end_of_a_relaunched_task_is_not_adopted_again() {
    let now = Instant::now();
    let mut q = WorkQueue::new("q", RetryPolicy::attempts(2));
    let id = q.submit("a", request());
    let t = launch_due(&mut q, now).remove(0);
    assert!(matches!(
        q.update(&status(&t, TaskState::Lost), now),
        Some(Change::Relaunching { .. })
    ));
    assert!(!q.adopt(id, &t, 1, now), "its end was seen");
    assert_eq!(q.update(&status(&t, TaskState::Lost), now), None);
    let t2 = launch_due(&mut q, now).remove(0);
    failure(q.update(&status(&t2, TaskState::Failed), now));
    assert!(!q.adopt(id, &t2, 2, now), "nor a failed attempt's");
}

#[test]
fn tasks_are_named_by_the_callers_function() {
    let now = Instant::now();
    let mut q = WorkQueue::new("q", RetryPolicy::attempts(1))
        .naming(|n: &Naming<'_, &str>| format!("{}.{}.e7.{}", n.payload, n.attempt, n.relaunch));
    q.submit("job", request());
    let t = launch_due(&mut q, now).remove(0);
    assert_eq!(t, "job.1.e7.0");
    q.update(&status(&t, TaskState::Dropped), now);
    assert_eq!(launch_due(&mut q, now), ["job.1.e7.1"]);
}

#[test]
fn backoff_doubles_up_to_its_limit() {
    let p = RetryPolicy {
        attempts: 10,
        backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(5),
        ..RetryPolicy::default()
    };
    let pauses: Vec<u64> = (2..7).map(|n| p.pause_before(n).as_secs()).collect();
    assert_eq!(pauses, [1, 2, 4, 5, 5]);
}

proptest! {
    /// Random ends for many items: each gets exactly one outcome, never
    /// more attempts than the policy allows, and the attempts it reports
    /// are the ends that could have run (drops and requeues not counted).
    #[test]
    fn every_item_ends_exactly_once_within_its_policy(
        attempts in 1u32..4,
        requeue_lost in proptest::bool::ANY,
        ends in proptest::collection::vec(0u8..9, 1..400),
    ) {
        let policy = RetryPolicy {
            attempts,
            backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            max_drops: 3,
            requeue_lost,
            max_requeues: 2,
            timeout: None,
        };
        let mut q = WorkQueue::new("q", policy);
        let n = 20;
        for i in 0..n {
            q.submit(i, request());
        }
        let now = Instant::now();
        let mut outcomes: BTreeMap<u64, Outcome<u64>> = BTreeMap::new();
        let mut ran: BTreeMap<u64, u32> = BTreeMap::new();
        let mut drops: BTreeMap<u64, u32> = BTreeMap::new();
        let mut requeues: BTreeMap<u64, u32> = BTreeMap::new();
        let mut previous: Vec<String> = Vec::new();
        for e in ends {
            launch_due(&mut q, now);
            let Some((task, id)) = q.by_task.iter().next().map(|(t, i)| (t.clone(), *i)) else { break };
            let state = match e {
                0 | 1 => TaskState::Finished,
                2 | 3 => TaskState::Failed,
                4 => TaskState::Dropped,
                5 => TaskState::Lost,
                6 => TaskState::Unreachable,
                7 => TaskState::Running,
                _ => {
                    // A stale end of an earlier launch: ignored.
                    if let Some(old) = previous.last() {
                        prop_assert_eq!(q.update(&status(old, TaskState::Failed), now), None);
                    }
                    continue;
                }
            };
            let out = q.update(&status(&task, state), now);
            if state == TaskState::Running {
                drops.remove(&id);
            }
            if state.is_terminal() && state != TaskState::Unreachable {
                previous.push(task.clone());
                let d = drops.entry(id).or_default();
                let r = requeues.entry(id).or_default();
                if state == TaskState::Dropped && *d < 3 {
                    *d += 1;
                } else if state == TaskState::Lost && requeue_lost && *r < 2 {
                    *r += 1;
                } else {
                    *ran.entry(id).or_default() += 1;
                    *d = 0;
                }
            }
            if let Some(Change::Ended(o)) = out {
                prop_assert!(outcomes.insert(o.id, o.clone()).is_none(), "two outcomes for {}", o.id);
                prop_assert!(o.attempts <= attempts);
                prop_assert_eq!(o.attempts, ran[&o.id]);
                prop_assert_eq!(o.succeeded(), state == TaskState::Finished);
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
    assert!(q.update(&status("q-1-1", TaskState::Dropped), now).is_some());
    assert_eq!(launch_due(&mut q, now), ["q-1-1.1"]);
}
