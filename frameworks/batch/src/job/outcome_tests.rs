//! How each task end moves a slot (docs/batch.md "Outcome"; DESIGN.md
//! "Tasks": DROPPED never ran, LOST/GONE may have run, UNREACHABLE may
//! come back).

use std::time::Instant;

use super::*;

fn job(count: u32, retries: u32, on_lost: &str) -> Job {
    let text = format!(
        "[[job]]\nname = \"j\"\ncommand = \"x\"\ncount = {count}\nretries = {retries}\nbackoff = \"1s\"\non_lost = \"{on_lost}\"\n"
    );
    let spec = crate::spec::parse(&text, &Default::default()).expect("spec").remove(0);
    Job::new(spec, Progress::default())
}

/// Launches `index` under the id the job picks; returns that id.
fn launch(j: &mut Job, index: u32, now: Instant) -> String {
    let id = j.next_task_id(index, 1);
    j.launched(index, id.clone(), now);
    id
}

#[test]
fn a_dropped_task_is_relaunched_without_spending_an_attempt() {
    let now = Instant::now();
    let mut j = job(1, 0, "requeue");
    let first = launch(&mut j, 0, now);
    assert_eq!(first, "j.0.1.1");
    let out = j.update(0, &first, TaskState::Dropped, None, "never ran", now);
    assert_eq!(out, Outcome::Recorded, "saved before the ack");
    assert_eq!(j.slots[0], Slot::Pending, "launchable at once, no backoff");
    assert_eq!(j.next_attempt(0), 1, "no attempt spent");
    let second = launch(&mut j, 0, now);
    assert_eq!(second, "j.0.1.1.1", "a new id: the master refuses a reused one");
    j.update(0, &second, TaskState::Finished, Some(0), "", now);
    assert_eq!(j.state(true), JobState::Succeeded);
    let c = j.counts();
    assert_eq!((c.retried, c.dropped_relaunched), (0, 1));
    assert!(j.progress.failures.is_empty());
}

#[test]
fn a_resent_dropped_update_changes_nothing() {
    let now = Instant::now();
    let mut j = job(1, 0, "requeue");
    let first = launch(&mut j, 0, now);
    j.update(0, &first, TaskState::Dropped, None, "", now);
    // Resent before the relaunch, and again after it.
    assert_eq!(j.update(0, &first, TaskState::Dropped, None, "", now), Outcome::Nothing);
    let second = launch(&mut j, 0, now);
    assert_eq!(j.update(0, &first, TaskState::Dropped, None, "", now), Outcome::Nothing);
    assert_eq!(
        j.slots[0],
        Slot::Running {
            task_id: second,
            started: now,
            killing: None
        }
    );
    // A DROPPED of an id the framework never tracked (after a restart) is not counted either.
    let mut fresh = job(1, 0, "requeue");
    assert_eq!(
        fresh.update(0, "j.0.1.0", TaskState::Dropped, None, "", now),
        Outcome::Nothing
    );
    assert_eq!(fresh.counts().dropped_relaunched, 0);
}

#[test]
fn drops_are_capped() {
    let now = Instant::now();
    let mut j = job(1, 0, "requeue");
    for _ in 0..MAX_DROPS - 1 {
        let id = launch(&mut j, 0, now);
        j.update(0, &id, TaskState::Dropped, None, "cgroup failed", now);
        assert_eq!(j.slots[0], Slot::Pending);
    }
    let id = launch(&mut j, 0, now);
    j.update(0, &id, TaskState::Dropped, None, "cgroup failed", now);
    assert_eq!(j.slots[0], Slot::Failed);
    assert!(
        j.progress.failures[&0].reason.starts_with("dropped 10 times"),
        "{:?}",
        j.progress.failures
    );
    // A run between drops resets the count.
    let mut j = job(1, 0, "requeue");
    for _ in 0..MAX_DROPS * 2 {
        let id = launch(&mut j, 0, now);
        j.update(0, &id, TaskState::Running, None, "", now);
        j.update(0, &id, TaskState::Dropped, None, "", now);
    }
    assert_eq!(j.slots[0], Slot::Pending);
}

#[test]
fn unreachable_holds_the_index_until_its_fate_is_known() {
    let now = Instant::now();
    let mut j = job(2, 0, "requeue");
    let a = launch(&mut j, 0, now);
    let b = launch(&mut j, 1, now);
    for (index, id) in [(0, &a), (1, &b)] {
        assert_eq!(
            j.update(index, id, TaskState::Unreachable, None, "", now),
            Outcome::Nothing
        );
    }
    assert!(j.launchable(10).is_empty(), "never launched while it may still run");
    assert_eq!(j.counts().running, 2);
    // Its agent comes back with it, and it finishes.
    j.update(0, &a, TaskState::Running, None, "", now);
    j.update(0, &a, TaskState::Finished, Some(0), "", now);
    assert_eq!(j.slots[0], Slot::Succeeded);
    // After a framework restart, an UNREACHABLE answer adopts the task too.
    let mut again = job(2, 0, "requeue");
    again.update(1, &b, TaskState::Unreachable, None, "", now);
    assert_eq!(again.launchable(10), vec![0]);
}

#[test]
fn lost_after_start_follows_on_lost() {
    let now = Instant::now();
    for (on_lost, state, relaunched) in [
        ("requeue", TaskState::Lost, true),
        ("requeue", TaskState::Gone, true),
        ("fail", TaskState::Lost, false),
        ("fail", TaskState::Gone, false),
    ] {
        let mut j = job(1, 0, on_lost);
        let id = launch(&mut j, 0, now);
        assert_eq!(j.update(0, &id, state, None, "agent gone", now), Outcome::Recorded);
        // A resent copy changes nothing more.
        assert_eq!(j.update(0, &id, state, None, "agent gone", now), Outcome::Nothing);
        let case = format!("{on_lost} {state:?}");
        if relaunched {
            assert_eq!(j.slots[0], Slot::Pending, "{case}");
            assert_eq!(j.counts().requeued, 1, "{case}");
            assert_eq!(j.next_attempt(0), 1, "{case}");
            assert_eq!(j.next_task_id(0, 1), "j.0.1.1.1", "{case}");
        } else {
            assert_eq!(j.slots[0], Slot::Failed, "{case}");
            assert_eq!(j.state(true), JobState::Failed, "{case}");
        }
    }
    // Requeues are capped; then the loss is a failed attempt.
    let mut j = job(1, 0, "requeue");
    for _ in 0..MAX_REQUEUES {
        let id = launch(&mut j, 0, now);
        j.update(0, &id, TaskState::Lost, None, "lost", now);
    }
    let id = launch(&mut j, 0, now);
    j.update(0, &id, TaskState::Lost, None, "lost", now);
    assert_eq!(j.slots[0], Slot::Failed);
    assert!(j.progress.failures[&0].reason.starts_with("lost 4 times"));
}

/// A task killed by a drain's deadline starts again elsewhere within its
/// attempt, whatever `on_lost` says, up to the requeue limit.
#[test]
fn a_drained_task_starts_again_without_spending_an_attempt() {
    let now = Instant::now();
    let mut j = job(1, 0, "fail");
    let id = launch(&mut j, 0, now);
    assert_eq!(j.drained(0, &id, "drain deadline", now), Outcome::Recorded);
    assert_eq!(j.drained(0, &id, "drain deadline", now), Outcome::Nothing, "resent");
    assert_eq!(j.slots[0], Slot::Pending);
    assert_eq!(j.next_attempt(0), 1, "no attempt spent");
    for _ in 1..MAX_REQUEUES {
        let id = launch(&mut j, 0, now);
        j.drained(0, &id, "drain deadline", now);
    }
    let id = launch(&mut j, 0, now);
    j.drained(0, &id, "drain deadline", now);
    assert_eq!(j.slots[0], Slot::Failed);
    assert!(j.progress.failures[&0].reason.starts_with("drained 4 times"));
}

#[test]
fn ids_with_a_relaunch_suffix_parse() {
    assert_eq!(parse_task_id("j.3.1.7.2"), Some(("j", 3)));
    assert_eq!(parse_full("j.3.2.7.2"), Some(("j", 3, 2)));
    assert_eq!(parse_task_id("j.3.1.7.x"), None);
    assert_eq!(parse_task_id("j.3.1.7.2.1"), None);
}

#[test]
fn relaunch_counters_survive_in_progress() {
    let now = Instant::now();
    let mut j = job(1, 0, "requeue");
    let id = launch(&mut j, 0, now);
    j.update(0, &id, TaskState::Lost, None, "", now);
    let saved = serde_json::to_string(&j.snapshot()).expect("ser");
    let again: Progress = serde_json::from_str(&saved).expect("de");
    assert_eq!(again.requeued.get(&0), Some(&1));
    let old: Progress = serde_json::from_str("{}").expect("old progress loads");
    assert_eq!(old.dropped_relaunched, 0);
}
