//! The controller's core, driven with plain values and a clock.

use std::collections::BTreeMap;
use std::time::Duration;

use mezzo_proto::resources::Resources;
use mezzo_proto::v1;
use tokio::time::Instant;

use super::core::{Core, Desired};
use super::observed::key_of;
use super::*;
use crate::TaskState;
use crate::offers::TaskRequest;

/// Keeps `copies` tasks per key; records what it was shown.
#[derive(Default)]
struct Keep {
    calls: Vec<(String, Vec<(String, TaskState)>)>,
    next: u64,
    fail: bool,
    requeue: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
struct Want {
    copies: usize,
}

impl Reconciler<Want> for Keep {
    type Error = String;
    fn reconcile(
        &mut self,
        key: &str,
        want: &mut Want,
        tasks: &[Task],
        ctx: &mut Context<'_>,
    ) -> Result<Requeue, String> {
        self.calls
            .push((key.to_owned(), tasks.iter().map(|t| (t.id.clone(), t.state)).collect()));
        if self.fail {
            return Err("no".into());
        }
        let live: Vec<&Task> = tasks.iter().filter(|t| !t.ended() && !t.killing).collect();
        for t in live.iter().skip(want.copies) {
            ctx.kill(&t.id, None);
        }
        for t in &live {
            if t.adopted || ctx.draining(&t.location.agent_id).is_some() {
                ctx.kill(&t.id, None);
            }
        }
        for _ in live.len()..want.copies {
            self.next += 1;
            ctx.launch(
                Launch::new(self.next.to_string(), need())
                    .label("v", "1")
                    .describe(format!("{key} v1")),
            );
        }
        Ok(self.requeue.map_or(Requeue::No, Requeue::After))
    }
    fn build(&mut self, _key: &str, _want: &Want, _task: &Task, b: TaskBuilder) -> TaskBuilder {
        b.shell("true")
    }
}

fn need() -> TaskRequest {
    TaskRequest::new(&Resources::parse("cpus:1;mem:32").expect("res"))
}

fn offer(id: &str, agent: &str, res: &str) -> v1::Offer {
    v1::Offer {
        offer_id: id.into(),
        agent_id: agent.into(),
        hostname: format!("host-{agent}"),
        resources: Resources::parse(res).expect("res").to_proto(),
        ..Default::default()
    }
}

fn status(id: &str, state: TaskState) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: id.into(),
        state: state.to_proto() as i32,
        agent_id: "a1".into(),
        ..Default::default()
    }
}

fn core(keys: &[(&str, usize)]) -> Core<Want> {
    let mut c = Core::default();
    for (k, n) in keys {
        desire(&mut c, k, *n);
    }
    c.mark_loaded();
    c.ready = true;
    c
}

/// `key` desires `copies` tasks, as read from the store.
fn desire(c: &mut Core<Want>, key: &str, copies: usize) {
    c.desired.insert(
        key.to_owned(),
        Desired {
            value: Want { copies },
            dirty: false,
        },
    );
    c.trigger(key, Instant::now());
}

/// The records the store would hold of these tasks of `key`.
fn records_of(key: &str, tasks: Vec<Task>) -> BTreeMap<String, super::observed::TaskRecord> {
    let mut o = super::observed::Observed::default();
    for t in tasks {
        o.launching(t);
    }
    let json = serde_json::to_vec(&o.records(key)).expect("json");
    serde_json::from_slice(&json).expect("back")
}

/// Places a round on the offers and follows its tasks as launched.
fn place(c: &mut Core<Want>, offers: &[v1::Offer]) -> Vec<String> {
    let round = c.place(offers);
    let named = c.launching(round.placed, std::time::SystemTime::now());
    named.into_iter().map(|a| a.payload.1).collect()
}

/// A task of `web` on agent a1, host h, port 31000, state unknown.
fn on_h(id: &str) -> Task {
    Task {
        id: id.into(),
        key: "web".into(),
        state: TaskState::Unknown,
        status: None,
        location: crate::offers::Location {
            agent_id: "a1".into(),
            hostname: "h".into(),
            attributes: vec![],
        },
        ports: vec![31000],
        labels: BTreeMap::new(),
        launched: None,
        killing: false,
        adopted: false,
    }
}

#[test]
fn task_ids_name_their_key() {
    assert_eq!(key_of("web.3.abc"), Some("web"));
    assert_eq!(key_of("web"), None);
    assert_eq!(key_of(".x"), None);
}

#[test]
fn launches_wait_for_offers_and_spread_within_room() {
    let mut c = core(&[("web", 3)]);
    let mut r = Keep::default();
    let now = Instant::now();
    assert!(c.run_due(&mut r, now).is_empty());
    assert!(c.wants_offers(), "three launches wait");
    // Room for two: one per agent of 1 cpu.
    let offers = [offer("o1", "a1", "cpus:1;mem:64"), offer("o2", "a2", "cpus:1.5;mem:64")];
    let round = c.place(&offers);
    assert_eq!(round.placed.len(), 2);
    assert!(round.unused.is_empty());
    assert_eq!(round.pending.len(), 1, "{:?}", round.pending);
    assert!(
        round.pending[0].reason.contains("web v1: 1 task(s) find no room"),
        "{:?}",
        round.pending
    );
    let mut agents: Vec<&str> = round.placed.iter().map(|a| a.location.agent_id.as_str()).collect();
    agents.sort();
    assert_eq!(agents, ["a1", "a2"], "spread over both");
    assert_eq!(c.waiting["web"].len(), 1, "the third still waits");
    let again = round.placed.clone();
    let named = c.launching(round.placed, std::time::SystemTime::now());
    let ids: Vec<&str> = named.iter().map(|a| a.payload.1.as_str()).collect();
    assert_eq!(ids, ["web.1", "web.2"]);
    let t = c.observed.get("web.1").expect("followed");
    assert_eq!((t.state, t.labels["v"].as_str()), (TaskState::Staging, "1"));
    assert!(
        c.launching(again, std::time::SystemTime::now()).is_empty(),
        "an id is never launched twice"
    );
}

#[test]
fn one_pending_reconcile_per_key_and_requeue() {
    let mut c = core(&[("web", 0)]);
    let mut r = Keep {
        requeue: Some(Duration::from_secs(3)),
        ..Keep::default()
    };
    let now = Instant::now();
    c.trigger("web", now);
    c.trigger("web", now);
    c.run_due(&mut r, now);
    assert_eq!(r.calls.len(), 1, "triggers merge");
    c.run_due(&mut r, now + Duration::from_secs(2));
    assert_eq!(r.calls.len(), 1, "not yet requeued");
    c.run_due(&mut r, now + Duration::from_secs(3));
    assert_eq!(r.calls.len(), 2);
}

#[test]
fn a_failed_reconcile_is_retried_with_growing_backoff() {
    let mut c = core(&[("web", 1)]);
    let mut r = Keep {
        fail: true,
        ..Keep::default()
    };
    let t0 = Instant::now();
    c.run_due(&mut r, t0);
    c.run_due(&mut r, t0 + Duration::from_millis(499));
    assert_eq!(r.calls.len(), 1);
    c.run_due(&mut r, t0 + Duration::from_millis(500));
    assert_eq!(r.calls.len(), 2);
    c.run_due(&mut r, t0 + Duration::from_millis(1400));
    assert_eq!(r.calls.len(), 2, "the second pause is longer");
    r.fail = false;
    c.run_due(&mut r, t0 + Duration::from_millis(1500));
    assert_eq!(r.calls.len(), 3);
}

#[test]
fn nothing_runs_before_ready() {
    let mut c = core(&[("web", 1)]);
    c.ready = false;
    let mut r = Keep::default();
    let now = Instant::now();
    c.run_due(&mut r, now);
    assert!(r.calls.is_empty());
    c.ready = true;
    c.run_due(&mut r, now);
    assert_eq!(r.calls.len(), 1, "the trigger was kept");
}

#[test]
fn an_end_is_shown_once_then_dropped_and_repeats_change_nothing() {
    let mut c = core(&[("web", 1)]);
    let mut r = Keep::default();
    let now = Instant::now();
    c.run_due(&mut r, now);
    let ids = place(&mut c, &[offer("o1", "a1", "cpus:4;mem:256")]);
    assert_eq!(ids, ["web.1"]);
    c.update(&status("web.1", TaskState::Running), now);
    c.run_due(&mut r, now);
    assert_eq!(
        r.calls.last().map(|c| c.1.clone()),
        Some(vec![("web.1".into(), TaskState::Running)])
    );
    c.update(&status("web.1", TaskState::Failed), now);
    c.run_due(&mut r, now);
    assert_eq!(
        r.calls.last().map(|c| c.1.clone()),
        Some(vec![("web.1".into(), TaskState::Failed)])
    );
    assert!(c.observed.get("web.1").is_none(), "dropped once seen");
    assert!(c.dirty_tasks.contains("web"), "its record goes");
    assert!(c.wants_offers(), "a replacement waits");
    let calls = r.calls.len();
    c.update(&status("web.1", TaskState::Failed), now);
    c.run_due(&mut r, now);
    assert_eq!(r.calls.len(), calls, "a repeated end triggers nothing");
    // The replacement: unreachable, then back before the reconcile saw
    // its end: followed as adopted, not lost.
    assert_eq!(place(&mut c, &[offer("o2", "a1", "cpus:4;mem:256")]), ["web.2"]);
    c.update(&status("web.2", TaskState::Running), now);
    c.update(&status("web.2", TaskState::Unreachable), now);
    c.update(&status("web.2", TaskState::Running), now);
    assert!(c.observed.get("web.2").is_some_and(|t| t.adopted && !t.ended()));
}

#[test]
fn unknown_live_tasks_are_adopted_and_orphans_stopped() {
    let mut c = core(&[("web", 1)]);
    let mut r = Keep::default();
    let now = Instant::now();
    // `gone` has task records but no desired object.
    let gone = Task {
        key: "gone".into(),
        ..on_h("gone.1")
    };
    c.restore("gone", records_of("gone", vec![gone]), now);
    c.update(&status("web.7", TaskState::Running), now);
    c.update(&status("gone.1", TaskState::Running), now);
    c.update(&status("web.8", TaskState::Finished), now);
    assert!(
        c.observed.get("web.8").is_none(),
        "an end of a task not held is ignored"
    );
    assert!(c.observed.get("web.7").is_some_and(|t| t.adopted));
    assert_eq!(c.orphan_keys(), ["gone"]);
    // The reconciler stops the adopted one; the orphan's is stopped for it.
    let kills = c.run_due(&mut r, now);
    assert_eq!(
        kills.iter().map(|k| k.task_id.as_str()).collect::<Vec<_>>(),
        ["gone.1", "web.7"]
    );
    assert_eq!(r.calls.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["web"]);
    assert!(c.run_waiting(&mut r, now).is_empty(), "a kill is sent once...");
    assert!(c.kills_due(now + Duration::from_secs(9)).is_empty());
    assert_eq!(c.kills_due(now + Duration::from_secs(10)).len(), 2, "...then retried");
    c.gone("gone.1", now);
    assert!(c.observed.get("gone.1").is_some_and(Task::ended));
}

#[test]
fn a_drain_reconciles_the_keys_with_tasks_there() {
    let mut c = core(&[("web", 1), ("db", 1)]);
    let mut r = Keep::default();
    let now = Instant::now();
    c.run_due(&mut r, now);
    let ids = place(
        &mut c,
        &[offer("o1", "a1", "cpus:1;mem:64"), offer("o2", "a2", "cpus:1;mem:64")],
    );
    assert_eq!(ids.len(), 2);
    let on_a1 = c
        .observed
        .iter()
        .find(|t| t.location.agent_id == "a1")
        .map(|t| t.key.clone());
    r.calls.clear();
    assert!(c.drain("a1", true, None, now));
    assert!(!c.drain("a1", true, None, now), "told again");
    let kills = c.run_due(&mut r, now);
    assert_eq!(r.calls.iter().map(|c| Some(c.0.clone())).collect::<Vec<_>>(), [on_a1]);
    assert_eq!(kills.len(), 1);
}

#[test]
fn restored_tasks_are_unknown_until_the_master_answers() {
    let mut c: Core<Want> = core(&[("web", 1)]);
    let mut o = super::observed::Observed::default();
    o.launching(Task {
        state: TaskState::Staging,
        labels: BTreeMap::from([("v".into(), "1".into())]),
        launched: Some(std::time::SystemTime::now()),
        ..on_h("web.1")
    });
    let records = o.records("web");
    let json = serde_json::to_vec(&records).expect("json");
    c.observed.restore("web", serde_json::from_slice(&json).expect("back"));
    let t = c.observed.get("web.1").expect("restored");
    assert_eq!(
        (t.state, t.ports.clone(), t.location.hostname.as_str()),
        (TaskState::Unknown, vec![31000], "h")
    );
    assert!(!t.ended());
    assert_eq!(c.observed.to_reconcile(true), [("web.1".to_owned(), "a1".to_owned())]);
    c.update(&status("web.1", TaskState::Unknown), Instant::now());
    assert!(
        c.observed.get("web.1").is_some_and(Task::ended),
        "the master knows nothing of it"
    );
}

#[test]
fn a_task_held_keeps_its_state_and_is_recorded() {
    let mut c = core(&[("web", 1)]);
    let now = Instant::now();
    c.update(&status("web.old", TaskState::Running), now);
    c.hold(on_h("web.old"));
    c.hold(on_h("web.other"));
    let t = c.observed.get("web.old").expect("held");
    assert_eq!(
        (t.state, t.adopted, t.location.hostname.as_str()),
        (TaskState::Running, false, "h")
    );
    assert_eq!(c.observed.records("web").len(), 2);
    assert!(c.dirty_tasks.contains("web"));
    assert_eq!(
        c.observed.to_reconcile(true),
        [("web.other".to_owned(), "a1".to_owned())]
    );
}

/// Finding 1: the master reports running tasks before the store can be
/// read; the load then gives them their records: none is killed, none
/// launched again, and they keep their place, ports and labels.
#[test]
fn tasks_reported_before_the_load_take_their_records() {
    let mut c: Core<Want> = Core::default();
    let mut r = Keep::default();
    let now = Instant::now();
    c.update(&status("web.1", TaskState::Running), now);
    c.update(&status("web.2", TaskState::Running), now);
    assert!(
        c.observed.get("web.1").is_some_and(|t| t.adopted),
        "adopted until loaded"
    );
    // The load.
    desire(&mut c, "web", 2);
    let launched = Some(std::time::SystemTime::now());
    let labelled = |id: &str| Task {
        labels: BTreeMap::from([("v".into(), "1".into())]),
        launched,
        ..on_h(id)
    };
    c.restore(
        "web",
        records_of("web", vec![labelled("web.1"), labelled("web.2")]),
        now,
    );
    c.mark_loaded();
    c.ready = true;
    assert!(c.dirty_tasks.contains("web"));
    let kills = c.run_due(&mut r, now);
    assert!(kills.is_empty(), "{kills:?}");
    assert!(!c.wants_offers(), "nothing launched again");
    for id in ["web.1", "web.2"] {
        let t = c.observed.get(id).expect("held");
        assert!(!t.adopted && t.launched.is_some(), "{t:?}");
        assert_eq!(
            (
                t.state,
                t.location.hostname.as_str(),
                t.ports.clone(),
                t.labels["v"].as_str()
            ),
            (TaskState::Running, "h", vec![31000], "1")
        );
    }
    assert_eq!(c.observed.records("web").len(), 2, "their records are kept");
}

/// Finding 3: without the implicit reconciliation's end, reconciles go
/// ahead after the limit.
#[test]
fn reconciles_go_ahead_when_the_masters_reconciliation_never_ends() {
    let mut c: Core<Want> = Core::default();
    let t0 = Instant::now();
    c.awaiting = Some(t0);
    assert!(!c.reconciled_overdue(t0 + Duration::from_secs(119)));
    assert!(c.reconciled_overdue(t0 + super::core::RECONCILED_LIMIT));
    assert!(c.awaiting.is_none());
    assert!(!c.reconciled_overdue(t0 + Duration::from_secs(500)), "once");
}

/// Finding 5: a live task whose id names a key the controller does not
/// know (another part of the framework's, say a work queue's relaunch
/// `q-0-1.1`) is neither adopted nor killed, before or after the load.
#[test]
fn tasks_of_keys_it_does_not_know_are_left_alone() {
    let mut c: Core<Want> = Core::default();
    let mut r = Keep::default();
    let now = Instant::now();
    c.update(&status("q-0-1.1", TaskState::Running), now);
    desire(&mut c, "web", 0);
    c.mark_loaded();
    c.ready = true;
    assert!(c.observed.get("q-0-1.1").is_none(), "let go once loaded");
    c.update(&status("q-0-2.1", TaskState::Running), now);
    c.update(&status("q-0-2.1", TaskState::Running), now);
    assert!(c.observed.get("q-0-2.1").is_none());
    assert_eq!(c.strangers.len(), 2, "each logged once");
    c.update(&status("q-0-2.1", TaskState::Finished), now);
    assert_eq!(c.strangers.len(), 1, "forgotten at its end");
    assert!(c.orphan_keys().is_empty());
    assert!(c.run_due(&mut r, now).is_empty());
    assert!(c.kills_due(now + Duration::from_secs(60)).is_empty());
    // A task of a key it knows is still adopted.
    c.update(&status("web.9", TaskState::Running), now);
    assert!(c.observed.get("web.9").is_some_and(|t| t.adopted));
    // So is one of a key it deleted (its agent came back): then stopped.
    desire(&mut c, "old", 0);
    c.forgetting.insert("old".into());
    c.forgot("old");
    c.update(&status("old.1", TaskState::Running), now);
    assert!(c.observed.get("old.1").is_some_and(|t| t.adopted));
    assert_eq!(c.orphan_keys(), ["old"]);
    let kills = c.run_due(&mut r, now);
    assert!(kills.iter().any(|k| k.task_id == "old.1"), "{kills:?}");
}

/// Finding 7: a reconcile that fails has still seen the ends it was
/// shown; the retry does not count them again.
#[test]
fn ends_seen_by_a_failed_reconcile_are_not_shown_again() {
    let mut c = core(&[("web", 1)]);
    let mut r = Keep::default();
    let now = Instant::now();
    c.run_due(&mut r, now);
    assert_eq!(place(&mut c, &[offer("o1", "a1", "cpus:4;mem:256")]), ["web.1"]);
    c.update(&status("web.1", TaskState::Failed), now);
    r.fail = true;
    c.run_due(&mut r, now);
    assert_eq!(
        r.calls.last().map(|c| c.1.clone()),
        Some(vec![("web.1".into(), TaskState::Failed)])
    );
    r.fail = false;
    c.run_due(&mut r, now + Duration::from_secs(1));
    assert_eq!(r.calls.len(), 3, "retried");
    assert_eq!(
        r.calls.last().map(|c| c.1.clone()),
        Some(vec![]),
        "the end is not shown again"
    );
    assert!(c.dirty_tasks.contains("web"), "its record goes");
}

/// Finding 9: the tasks of a key whose stored desired object cannot be
/// read are followed, not stopped as orphans.
#[test]
fn tasks_of_an_unreadable_desired_object_are_not_stopped() {
    let mut c = core(&[("web", 1)]);
    let mut r = Keep::default();
    let now = Instant::now();
    c.unreadable.insert("old".into());
    let old = Task {
        key: "old".into(),
        ..on_h("old.1")
    };
    c.restore("old", records_of("old", vec![old]), now);
    c.update(&status("old.1", TaskState::Running), now);
    assert!(c.orphan_keys().is_empty());
    let kills = c.run_due(&mut r, now);
    assert!(kills.is_empty(), "{kills:?}");
    assert!(
        c.observed
            .get("old.1")
            .is_some_and(|t| t.state == TaskState::Running && !t.killing)
    );
    // Its end is followed (its record goes).
    c.update(&status("old.1", TaskState::Failed), now);
    c.run_due(&mut r, now);
    assert!(c.observed.get("old.1").is_none());
    assert!(c.dirty_tasks.contains("old"));
}

/// Finding 10: a key put again while it is being forgotten is kept.
#[test]
fn a_key_put_while_forgotten_is_kept() {
    let mut c = core(&[("web", 1)]);
    c.forgetting.insert("web".into());
    c.set("web", Want { copies: 2 }, Instant::now());
    assert!(c.forgetting.is_empty());
    assert_eq!(c.desired["web"].value, Want { copies: 2 });
}

/// A launch that mounts a volume is placed only on the offer listing it,
/// whatever else has room, and takes it from the round; it waits
/// otherwise. Reserved resources of the offer's role are room.
#[test]
fn a_volume_launch_goes_only_where_its_volume_is_offered() {
    let mut c = core(&[("db", 0)]);
    let vol = |id: &str| v1::Volume {
        id: id.into(),
        disk_mib: 64.0,
        ..Default::default()
    };
    c.waiting.insert(
        "db".into(),
        vec![
            Launch::new("0", need()).volume("db-0", "data"),
            Launch::new("1", need()).volume("db-0", "data"),
        ],
    );
    let big = offer("o1", "a1", "cpus:8;mem:1024");
    let round = c.place(std::slice::from_ref(&big));
    assert!(round.placed.is_empty(), "no offer lists db-0");
    assert_eq!(c.waiting["db"].len(), 2);

    let mut with = v1::Offer {
        allocation_role: "svc".into(),
        resources: mezzo_proto::reservation::ReservedResources::parse("cpus(svc):1;mem(svc):32")
            .expect("res")
            .to_proto(),
        ..offer("o2", "a2", "cpus:1")
    };
    with.volumes = vec![vol("db-0")];
    let round = c.place(&[big, with]);
    assert_eq!(round.placed.len(), 1, "the volume is used once per round");
    assert_eq!(round.placed[0].offer_id, "o2");
    assert_eq!(round.unused, ["o1"]);
    assert_eq!(c.waiting["db"].len(), 1);
    let named = c.launching(round.placed, std::time::SystemTime::now());
    let (_, id, mount) = &named[0].payload;
    assert_eq!(id, "db.0");
    assert_eq!(
        mount.as_ref().map(|m| (m.id.as_str(), m.container_path.as_str())),
        Some(("db-0", "data"))
    );
}

/// A launch bound to its volume's agent ignores another agent's volume
/// of the same id.
#[test]
fn a_volume_launch_bound_to_an_agent_ignores_another_agents_volume() {
    let mut c = core(&[("db", 0)]);
    let launch = Launch::new("0", need()).volume("db-0", "data").volume_agent("a1");
    c.waiting.insert("db".into(), vec![launch]);
    let listing = |id: &str, agent: &str| {
        let mut o = offer(id, agent, "cpus:8;mem:1024");
        o.volumes = vec![v1::Volume {
            id: "db-0".into(),
            disk_mib: 64.0,
            ..Default::default()
        }];
        o
    };
    let round = c.place(&[listing("o2", "a2")]);
    assert!(round.placed.is_empty(), "another agent's db-0");
    let round = c.place(&[listing("o2", "a2"), listing("o1", "a1")]);
    assert_eq!(round.placed.len(), 1);
    assert_eq!(round.placed[0].offer_id, "o1");
}

/// Launches that mount a volume are placed before the others of any key,
/// so that another key's launch does not take the room of the volume's
/// offer first.
#[test]
fn volume_launches_are_placed_first() {
    let mut c = core(&[("api", 0), ("db", 0)]);
    c.waiting.insert("api".into(), vec![Launch::new("1", need())]);
    c.waiting
        .insert("db".into(), vec![Launch::new("0", need()).volume("db-0", "data")]);
    let mut o = offer("o1", "a1", "cpus:1;mem:32");
    o.volumes = vec![v1::Volume {
        id: "db-0".into(),
        ..Default::default()
    }];
    let ids = place(&mut c, &[o]);
    assert_eq!(ids, ["db.0"]);
    assert_eq!(c.waiting.keys().collect::<Vec<_>>(), ["api"]);
}
