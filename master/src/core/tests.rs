//! Core tests: inputs in, effects out, no I/O. Each names the DESIGN.md
//! contract it checks.

use std::time::{Duration, Instant};

use mezzo_proto::ids::{AgentId, FrameworkId, OfferId, TaskId};
use mezzo_proto::resources::Resources;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;

use super::agent::AgentDescription;
use super::*;
use super::{OfferOperation, PolicyRequest};
use crate::api::validate_task;
use crate::error::MasterError;
use crate::registry::Registry;

const FW_CONN: ConnId = 100;
const AGENT_CONN: ConnId = 200;

struct Sim {
    m: Master,
    now: Instant,
    /// Everything sent, in order.
    sent: Vec<Effect>,
}

impl Sim {
    fn new() -> Sim {
        let now = Instant::now();
        let cfg = CoreConfig {
            agent_timeout: Duration::from_secs(5),
            ..CoreConfig::default()
        };
        Sim {
            m: Master::recover(cfg, Registry::default(), now),
            now,
            sent: Vec::new(),
        }
    }

    /// Commits proposals at once, as the single-master runtime does.
    fn run(&mut self) {
        loop {
            self.m.allocate_if_needed(self.now);
            let effects = self.m.take_effects();
            // Every step of every core test keeps the per-agent offer index
            // equal to the offers.
            let mut by_agent: HashMap<AgentId, HashSet<OfferId>> = HashMap::new();
            for o in self.m.offers.values() {
                by_agent.entry(o.agent_id.clone()).or_default().insert(o.id.clone());
            }
            assert_eq!(by_agent, self.m.agent_offers, "the per-agent offer index drifted");
            // And the task index equal to the frameworks' tables.
            let tables = self.m.frameworks.values().flat_map(|f| {
                let active = f.tasks.values().map(|t| (&**t, task_index::Table::Active));
                active.chain(f.completed.iter().map(|t| (&**t, task_index::Table::Completed)))
            });
            self.m.task_index.check(tables);
            if effects.is_empty() {
                return;
            }
            for e in effects {
                match e {
                    Effect::Propose(op) => self.m.apply(op, self.now),
                    other => self.sent.push(other),
                }
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.m.tick(self.now);
        self.run();
    }

    fn framework(&mut self) -> FrameworkId {
        let info = v1::FrameworkInfo {
            name: "f".into(),
            failover_timeout_secs: 60.0,
            ..Default::default()
        };
        self.m
            .subscribe(FW_CONN, info, None, Vec::new(), self.now)
            .expect("subscribe");
        self.run();
        let id = self.events().iter().find_map(|e| match e {
            v1::event::Event::Subscribed(s) => Some(s.framework_id.clone()),
            _ => None,
        });
        FrameworkId::parse(&id.expect("subscribed")).expect("id")
    }

    fn agent(&mut self, conn: ConnId, res: &str) -> AgentId {
        let info = AgentDescription {
            hostname: "h".into(),
            http_address: String::new(),
            resources: mezzo_proto::reservation::ReservedResources::parse(res).expect("res"),
            attributes: vec![],
        };
        self.m
            .agent_attach(
                conn,
                AgentHello::Register {
                    info,
                    registration: None,
                },
                None,
                self.now,
            )
            .expect("attach");
        self.run();
        let id = self.agent_msgs().iter().rev().find_map(|m| match m {
            v1::master_message::Message::Registered(r) => Some(r.agent_id.clone()),
            _ => None,
        });
        AgentId::parse(&id.expect("registered")).expect("id")
    }

    /// A framework in `roles`, subscribed on [`FW_CONN`].
    fn framework_in(&mut self, roles: &[&str]) -> FrameworkId {
        let info = v1::FrameworkInfo {
            name: "f".into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            failover_timeout_secs: 60.0,
            ..Default::default()
        };
        self.m
            .subscribe(FW_CONN, info, None, Vec::new(), self.now)
            .expect("subscribe");
        self.run();
        self.m.frameworks.keys().next().expect("framework").clone()
    }

    /// A new framework "g", subscribed on `FW_CONN + 1`.
    fn second_framework(&mut self) -> FrameworkId {
        let info = v1::FrameworkInfo {
            name: "g".into(),
            ..Default::default()
        };
        self.m
            .subscribe(FW_CONN + 1, info, None, Vec::new(), self.now)
            .expect("subscribe");
        self.run();
        self.m.framework_conns[&(FW_CONN + 1)].clone()
    }

    /// Framework `f` subscribes again, on `conn` (a failover).
    fn resubscribe(&mut self, conn: ConnId, f: &FrameworkId) {
        let info = v1::FrameworkInfo {
            name: "f".into(),
            failover_timeout_secs: 60.0,
            ..Default::default()
        };
        self.m
            .subscribe(conn, info, Some(f.clone()), Vec::new(), self.now)
            .expect("resubscribe");
        self.run();
    }

    /// A framework, an agent, and task "t" launched on it.
    fn with_task() -> (Sim, FrameworkId) {
        let mut s = Sim::new();
        let f = s.framework();
        s.agent(AGENT_CONN, "cpus:1;mem:256");
        let o = oid(&s.offers()[0]);
        s.m.accept(&f, &[o], vec![launch("t", "cpus:0.5")], None, s.now)
            .expect("accept");
        (s, f)
    }

    fn events(&self) -> Vec<v1::event::Event> {
        self.sent
            .iter()
            .filter_map(|e| match e {
                Effect::ToFramework(_, ev) => ev.event.clone(),
                _ => None,
            })
            .collect()
    }

    /// Acknowledgements forwarded to agents so far.
    fn acks_forwarded(&self) -> usize {
        self.agent_msgs()
            .iter()
            .filter(|m| matches!(m, v1::master_message::Message::Acknowledge(_)))
            .count()
    }

    fn agent_msgs(&self) -> Vec<v1::master_message::Message> {
        self.sent
            .iter()
            .filter_map(|e| match e {
                Effect::ToAgent(_, m) => m.message.clone(),
                _ => None,
            })
            .collect()
    }

    fn offers(&self) -> Vec<v1::Offer> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                v1::event::Event::Offers(o) => Some(o.offers),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn updates(&self) -> Vec<v1::TaskStatus> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                v1::event::Event::Update(u) => u.status,
                _ => None,
            })
            .collect()
    }
}

fn launch(id: &str, res: &str) -> LaunchRequest {
    validate_task(v1::TaskInfo {
        task_id: id.into(),
        resources: Resources::parse(res).expect("res").to_proto(),
        command: Some(v1::CommandInfo {
            value: "true".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .expect("valid task")
}

fn oid(o: &v1::Offer) -> OfferId {
    OfferId::parse(&o.offer_id).expect("offer id")
}

fn status(task: &str, state: TaskState, uuid: u8) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task.into(),
        state: state.to_proto() as i32,
        uuid: vec![uuid; 16],
        ..Default::default()
    }
}

/// DESIGN.md "The flow of one task": offer, accept, run, update, ack.
#[test]
fn one_task_end_to_end() {
    let mut s = Sim::new();
    let f = s.framework();
    let a = s.agent(AGENT_CONN, "cpus:2;mem:1024");
    let offers = s.offers();
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].agent_id, a.as_str());
    s.m.accept(
        &f,
        &[oid(&offers[0])],
        vec![launch("t1", "cpus:0.5;mem:128")],
        None,
        s.now,
    )
    .expect("accept");
    s.run();
    assert!(s.agent_msgs().iter().any(|m| matches!(m, v1::master_message::Message::RunTask(r) if r.task.as_ref().is_some_and(|t| t.task_id == "t1" && t.agent_id == a.as_str()))));
    // The rest of the agent is offered again at once.
    let again = s.offers();
    assert_eq!(again.len(), 2);
    assert_eq!(Resources::from_proto(&again[1].resources).expect("res").cpus.0, 1500);

    let fid = f.clone();
    s.m.status_update(
        AGENT_CONN,
        fid.clone(),
        status("t1", TaskState::Running, 1),
        TaskState::Finished,
        s.now,
    )
    .expect("update");
    s.run();
    assert_eq!(s.updates().len(), 1);
    let t1 = TaskId::parse("t1").expect("id");
    s.m.acknowledge(&f, &a, &t1, &[1; 16]).expect("ack");
    s.m.status_update(
        AGENT_CONN,
        fid,
        status("t1", TaskState::Finished, 2),
        TaskState::Finished,
        s.now,
    )
    .expect("update");
    s.m.acknowledge(&f, &a, &t1, &[2; 16]).expect("ack");
    s.run();
    let view = s.m.view(true);
    assert!(view.tasks.is_empty());
    assert_eq!(view.completed_tasks.len(), 1);
    assert_eq!(view.completed_tasks[0].state, "TASK_FINISHED");
    assert_eq!(view.agents[0].used, Resources::default());
    assert_eq!(s.acks_forwarded(), 2);
}

/// `/state` is written from a snapshot off the owner task: it shows the
/// tasks as they were when it was taken, however the core changes them
/// after (copy-on-write), and its JSON reads back as the same view.
#[test]
fn a_state_snapshot_is_unchanged_by_later_updates_and_writes_the_view() {
    let mut s = Sim::new();
    let f = s.framework();
    s.agent(AGENT_CONN, "cpus:2;mem:1024");
    let offers = s.offers();
    let tasks = vec![launch("t2", "cpus:0.5;mem:128"), launch("t1", "cpus:0.5;mem:128")];
    s.m.accept(&f, &[oid(&offers[0])], tasks, None, s.now).expect("accept");
    let before = s.m.view(true);
    let snapshot = s.m.state_snapshot(true);
    s.m.status_update(
        AGENT_CONN,
        f.clone(),
        status("t1", TaskState::Running, 1),
        TaskState::Running,
        s.now,
    )
    .expect("update");
    s.run();
    let json = snapshot.to_json().expect("json");
    let written: view::StateView = serde_json::from_slice(&json).expect("reads back");
    let states: Vec<_> = written
        .tasks
        .iter()
        .map(|t| (t.id.as_str(), t.state.as_ref()))
        .collect();
    assert_eq!(
        states,
        [("t2", "TASK_STAGING"), ("t1", "TASK_STAGING")],
        "as taken, by launch"
    );
    assert_eq!(written.tasks, before.tasks);
    assert_eq!(written.tasks[0].framework_name, before.frameworks[0].name);
    assert_eq!(written.tasks[0].agent_hostname, before.agents[0].hostname);
    let now = s.m.view(true);
    let t1 = now.tasks.iter().find(|t| t.id == "t1").expect("t1");
    assert_eq!(t1.state, "TASK_RUNNING", "the core moved on");
}

/// `/state`'s JSON is written by hand for speed (`view::state_json`):
/// byte for byte what serde writes for the same view, with every optional
/// field set and unset, strings that need escaping, a completed task and
/// one on an agent the master no longer knows.
#[test]
fn state_json_is_what_serde_writes() {
    let mut s = Sim::new();
    let info = v1::FrameworkInfo {
        name: "f \"quoted\" \\ ünï\ncode\u{1}".into(),
        failover_timeout_secs: 60.0,
        ..Default::default()
    };
    s.m.subscribe(FW_CONN, info, None, Vec::new(), s.now)
        .expect("subscribe");
    s.run();
    let f = s.m.frameworks.keys().next().expect("framework").clone();
    s.agent(AGENT_CONN, "cpus:4;mem:4096;gpus:2;ports:[31000-31005]");
    let offers = s.offers();
    let tasks = vec![
        validate_task(v1::TaskInfo {
            task_id: "running".into(),
            name: "a \"name\" with\tescapes ✓".into(),
            resources: Resources::parse("cpus:0.5;mem:128;ports:[31000-31001]")
                .expect("res")
                .to_proto(),
            command: Some(v1::CommandInfo {
                value: "true".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .expect("valid task"),
        launch("done", "cpus:0.5;mem:128"),
        launch("healthy", "cpus:0.5;mem:128;gpus:1"),
    ];
    s.m.accept(&f, &[oid(&offers[0])], tasks, None, s.now).expect("accept");
    let mut running = status("running", TaskState::Running, 1);
    running.message = "tab\there, \"quote\", \u{7f} and 🚀".into();
    let mut done = status("done", TaskState::Finished, 2);
    done.exit_code = Some(3);
    done.reason = v1::StatusReason::ReasonCommandExited as i32;
    let mut healthy = status("healthy", TaskState::Running, 3);
    healthy.healthy = Some(false);
    for st in [running, done, healthy] {
        let state = TaskState::from_proto(st.state).expect("state");
        s.m.status_update(AGENT_CONN, f.clone(), st, state, s.now)
            .expect("update");
    }
    s.run();
    // The finished task is the framework's until acknowledged, not active.
    assert_eq!(s.m.frameworks[&f].tasks.len(), 3);
    assert_eq!(s.m.view(true).frameworks[0].active_tasks, 2);
    let agent = s.m.agents.keys().next().expect("agent").clone();
    let done = TaskId::parse("done").expect("id");
    s.m.acknowledge(&f, &agent, &done, &[2; 16]).expect("ack");
    s.run();
    s.m.agent_usage(
        AGENT_CONN,
        vec![super::usage::ContainerUsage {
            framework_id: f.clone(),
            task_id: TaskId::parse("healthy").expect("id"),
            usage: super::usage::Usage {
                cpu_time_secs: 0.125,
                memory_rss_bytes: 1 << 40,
                memory_cache_bytes: 7,
                pids: 2,
            },
        }],
        s.now,
    );
    // A task whose agent is gone from every table shows an empty hostname.
    let fw = s.m.frameworks.get_mut(&f).expect("framework");
    let running = TaskId::parse("running").expect("id");
    std::sync::Arc::make_mut(fw.tasks.get_mut(&running).expect("task")).agent_id =
        AgentId::parse("0b0e28ba-2fa1-11d2-883f-0016d3cca427-S9").expect("id");
    let snapshot = s.m.state_snapshot(true);
    let ours = snapshot.clone().to_json().expect("ours");
    // On two threads (a task each): the same bytes, the helper run.
    static HELPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let helper = |work: &mut dyn FnMut()| {
        HELPED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        work();
    };
    let split = view::Split {
        from: 0,
        helper: &helper,
    };
    let mut two = Vec::new();
    snapshot.clone().write_json_split(&mut two, &split).expect("split");
    assert_eq!(
        HELPED.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a second thread wrote"
    );
    assert_eq!(String::from_utf8_lossy(&two), String::from_utf8_lossy(&ours));
    let view = snapshot.into_view();
    assert_eq!(view.completed_tasks.len(), 1, "{view:?}");
    assert!(view.tasks.iter().any(|t| t.healthy == Some(false) && t.usage.is_some()));
    assert!(view.tasks.iter().any(|t| t.agent_hostname.is_empty()));
    let theirs = serde_json::to_vec(&view).expect("serde");
    assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
}

/// What writing `/state` costs at scale (issue 17), without the network:
/// `cargo test --release -p mezzo-master --lib state_json_at_scale --
/// --ignored --nocapture` (`MEZZO_STATE_AGENTS`, ten running tasks each;
/// default 40,000: 400,000 tasks). Also the tasks page's cost.
#[test]
#[ignore = "a measurement, run by hand in release"]
fn state_json_at_scale() {
    let agents: usize = std::env::var("MEZZO_STATE_AGENTS").map_or(40_000, |v| v.parse().expect("a number"));
    let mut s = Sim::new();
    let f = s.framework();
    for a in 0..agents {
        let info = AgentDescription {
            hostname: format!("host-{a}.rack-{}.example.com", a / 40),
            http_address: format!("10.0.{}.{}:5051", a / 250, a % 250),
            resources: mezzo_proto::reservation::ReservedResources::parse("cpus:16;mem:65536").expect("res"),
            attributes: vec![],
        };
        let hello = AgentHello::Register {
            info,
            registration: None,
        };
        s.m.agent_attach(AGENT_CONN + a as ConnId, hello, None, s.now)
            .expect("attach");
        s.m.take_effects().into_iter().for_each(|e| {
            if let Effect::Propose(op) = e {
                s.m.apply(op, s.now);
            }
        });
    }
    s.m.allocate_if_needed(s.now);
    let offers: Vec<(OfferId, String)> =
        s.m.take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::ToFramework(_, ev) => match ev.event {
                    Some(v1::event::Event::Offers(o)) => Some(o.offers),
                    _ => None,
                },
                _ => None,
            })
            .flatten()
            .map(|o| (oid(&o), o.agent_id))
            .collect();
    assert_eq!(offers.len(), agents);
    let started = Instant::now();
    for (n, (offer, _)) in offers.iter().enumerate() {
        let tasks = (0..10)
            .map(|i| launch(&format!("job-{n}.task-{i}"), "cpus:0.1;mem:32"))
            .collect();
        s.m.accept(&f, std::slice::from_ref(offer), tasks, None, s.now)
            .expect("accept");
    }
    for (n, (_, agent)) in offers.iter().enumerate() {
        // Each update from the connection of the agent the task is on.
        let agent = AgentId::parse(agent).expect("agent id");
        let conn = s.m.agents[&agent].conn.expect("connected");
        for i in 0..10 {
            let st = status(&format!("job-{n}.task-{i}"), TaskState::Running, 1);
            s.m.status_update(conn, f.clone(), st, TaskState::Running, s.now)
                .expect("update");
        }
    }
    let _ = s.m.take_effects();
    println!("{} tasks on {agents} agents in {:.2?}", agents * 10, started.elapsed());
    let view = s.m.view(true);
    assert_eq!(view.tasks.len(), agents * 10);
    assert!(
        view.tasks.iter().all(|t| t.state == "TASK_RUNNING"),
        "every task running, as measured"
    );
    drop(view);
    for offset in [0, 5000] {
        let q = view::TaskFilter {
            limit: Some(50),
            offset: Some(offset),
            ..Default::default()
        }
        .check()
        .expect("query");
        let mut times: Vec<Duration> = (0..20)
            .map(|_| {
                let t = Instant::now();
                let page = view::tasks(&s.m, &q);
                assert_eq!(page.items.len(), 50.min(page.total.saturating_sub(offset)));
                t.elapsed()
            })
            .collect();
        times.sort();
        println!("tasks page at {offset}: p50 {:.2?}, max {:.2?}", times[10], times[19]);
    }
    for _ in 0..3 {
        let t = Instant::now();
        let snapshot = s.m.state_snapshot(true);
        let taken = t.elapsed();
        // Buffers handed on and dropped, as the HTTP body sends them.
        struct Sent(usize);
        impl view::JsonSink for Sent {
            fn take(&mut self, buf: Vec<u8>) -> std::io::Result<()> {
                self.0 += buf.len();
                Ok(())
            }
        }
        let mut out = Sent(0);
        let split = view::Split {
            from: 0,
            helper: &|work: &mut dyn FnMut()| work(),
        };
        snapshot.clone().write_json(&mut out).expect("json");
        let one = t.elapsed() - taken;
        let t = Instant::now();
        snapshot.write_json_split(&mut Sent(0), &split).expect("json");
        println!(
            "snapshot {taken:.2?}, written {one:.2?}, on two threads {:.2?}: {:.1} MB",
            t.elapsed(),
            out.0 as f64 / 1e6
        );
    }
}

/// A cluster bigger than the agent heartbeat budget is told to heartbeat
/// more rarely (whole seconds, announced at once in the next heartbeat and
/// in `Registered`), and an agent may then be silent for three intervals
/// before it is marked unreachable.
#[test]
fn heartbeats_are_spaced_out_for_a_big_cluster() {
    let mut s = Sim::new();
    s.m.cfg.agent_heartbeats_per_second = 2;
    use v1::master_message::Message as M;
    // The intervals the agents were given in heartbeats, and in `Registered`.
    let intervals = |s: &Sim, registered: bool| -> Vec<f64> {
        (s.agent_msgs().into_iter())
            .filter_map(|m| match m {
                M::Heartbeat(h) if !registered => Some(h.interval_secs),
                M::Registered(r) if registered => Some(r.heartbeat_interval_secs),
                _ => None,
            })
            .collect()
    };
    let beats = |s: &Sim| intervals(s, false);
    let registered = |s: &Sim| intervals(s, true);
    for conn in 0..4 {
        s.agent(AGENT_CONN + conn, "cpus:1;mem:128");
    }
    assert_eq!(registered(&s), [1.0; 4], "before a tick: the configured 1 s");
    s.advance(Duration::from_millis(50));
    assert_eq!(beats(&s), [2.0; 4], "announced to each agent at once");
    s.agent(AGENT_CONN + 4, "cpus:1;mem:128");
    assert_eq!(registered(&s).last(), Some(&2.0));
    s.advance(Duration::from_millis(50));
    assert_eq!(beats(&s).last(), Some(&3.0), "five agents: three seconds");
    // Agent 0 stays silent: 9 s (three intervals) pass before it is
    // unreachable, not the 5 s agent timeout; the others heartbeat.
    for _ in 0..8 {
        for conn in 1..5 {
            s.m.agent_heartbeat(AGENT_CONN + conn, s.now);
        }
        s.advance(Duration::from_secs(1));
    }
    assert!(
        s.m.view(true).agents.iter().all(|a| a.status == AgentStatus::Active),
        "8 s: all active"
    );
    for _ in 0..2 {
        for conn in 1..5 {
            s.m.agent_heartbeat(AGENT_CONN + conn, s.now);
        }
        s.advance(Duration::from_secs(1));
    }
    let statuses: Vec<AgentStatus> = s.m.view(true).agents.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses.iter().filter(|st| **st == AgentStatus::Unreachable).count(),
        1,
        "{statuses:?}"
    );
}

/// A batch of acknowledgements with one bad entry is refused whole.
#[test]
fn a_refused_batch_of_acknowledgements_changes_nothing() {
    let mut s = Sim::new();
    let f = s.framework();
    let a = s.agent(AGENT_CONN, "cpus:2;mem:1024");
    let offers = s.offers();
    let tasks = vec![launch("t1", "cpus:0.5;mem:128"), launch("t2", "cpus:0.5;mem:128")];
    s.m.accept(&f, &[oid(&offers[0])], tasks, None, s.now).expect("accept");
    for (t, uuid) in [("t1", 1), ("t2", 2)] {
        s.m.status_update(
            AGENT_CONN,
            f.clone(),
            status(t, TaskState::Finished, uuid),
            TaskState::Finished,
            s.now,
        )
        .expect("update");
    }
    s.run();
    let (t1, t2) = (TaskId::parse("t1").expect("id"), TaskId::parse("t2").expect("id"));
    let ghost = AgentId::parse("ghost").expect("id");
    let bad = vec![(a.clone(), t1.clone(), vec![1; 16]), (ghost, t2.clone(), vec![2; 16])];
    assert!(matches!(
        s.m.acknowledge_all(&f, &bad),
        Err(MasterError::UnknownAgent(_))
    ));
    let short = vec![
        (a.clone(), t1.clone(), vec![1; 16]),
        (a.clone(), t2.clone(), vec![2; 3]),
    ];
    assert!(matches!(s.m.acknowledge_all(&f, &short), Err(MasterError::Invalid(_))));
    s.run();
    assert_eq!(s.acks_forwarded(), 0, "nothing forwarded");
    assert_eq!(
        s.m.view(true).tasks.len(),
        2,
        "both still wait for their acknowledgement"
    );

    let good = vec![(a.clone(), t1, vec![1; 16]), (a, t2, vec![2; 16])];
    s.m.acknowledge_all(&f, &good).expect("batch");
    s.run();
    assert_eq!(s.acks_forwarded(), 2);
    assert!(s.m.view(true).tasks.is_empty());
}

/// DESIGN.md "Offers" and "Tasks": invalid accepts launch nothing, leave
/// the offer usable, and say why.
#[test]
fn invalid_accepts_change_nothing() {
    let mut s = Sim::new();
    let f = s.framework();
    s.agent(AGENT_CONN, "cpus:1;mem:256");
    let o = oid(&s.offers()[0]);
    let cases: Vec<(Vec<OfferId>, Vec<LaunchRequest>, &str)> = vec![
        (
            vec![OfferId::parse("nope").expect("id")],
            vec![launch("a", "cpus:0.1")],
            "unknown offer",
        ),
        (vec![o.clone()], vec![launch("a", "cpus:2")], "asks for"),
        (
            vec![o.clone()],
            vec![launch("a", "cpus:0.6"), launch("b", "cpus:0.6")],
            "asks for",
        ),
        (
            vec![o.clone()],
            vec![launch("a", "cpus:0.1"), launch("a", "cpus:0.1")],
            "already exists",
        ),
        (vec![o.clone(), o.clone()], vec![launch("a", "cpus:0.1")], "named twice"),
        (vec![], vec![launch("a", "cpus:0.1")], "no offers"),
    ];
    for (offers, launches, want) in cases {
        let err = s.m.accept(&f, &offers, launches, None, s.now).expect_err(want);
        assert!(err.to_string().contains(want), "{err} lacks {want:?}");
    }
    s.run();
    assert!(
        !s.agent_msgs()
            .iter()
            .any(|m| matches!(m, v1::master_message::Message::RunTask(_)))
    );
    // The offer is still good, once.
    s.m.accept(&f, std::slice::from_ref(&o), vec![launch("a", "cpus:0.1")], None, s.now)
        .expect("valid accept");
    let err =
        s.m.accept(&f, &[o], vec![launch("b", "cpus:0.1")], None, s.now)
            .expect_err("used twice");
    assert!(matches!(err, MasterError::UnknownOffer(_)));
    // A task id is never reused.
    s.run();
    let o2 = oid(s.offers().last().expect("offer"));
    let err =
        s.m.accept(&f, &[o2], vec![launch("a", "cpus:0.1")], None, s.now)
            .expect_err("dup");
    assert!(matches!(err, MasterError::DuplicateTask(_)));
}

/// A call from a framework without an open subscription is refused.
#[test]
fn calls_before_subscribing_are_refused() {
    let mut s = Sim::new();
    let f = FrameworkId::parse("ghost").expect("id");
    assert!(matches!(s.m.revive(&f, &[]), Err(MasterError::NotSubscribed(_))));
    assert!(matches!(
        s.m.accept(&f, &[], vec![], None, s.now),
        Err(MasterError::NotSubscribed(_))
    ));
    let info = v1::FrameworkInfo {
        name: "x".into(),
        ..Default::default()
    };
    assert!(matches!(
        s.m.subscribe(1, info, Some(f), Vec::new(), s.now),
        Err(MasterError::UnknownFramework(_))
    ));
}

/// A decline naming offers that ran out (used, expired) declines the rest
/// (refusing it whole left them held until they expired); one naming
/// another framework's offer is refused and changes nothing.
#[test]
fn a_decline_skips_offers_no_longer_outstanding() {
    let mut s = Sim::new();
    let f = s.framework();
    s.agent(AGENT_CONN, "cpus:1;mem:256");
    s.agent(AGENT_CONN + 1, "cpus:1;mem:256");
    let offers: Vec<OfferId> = s.offers().iter().map(oid).collect();
    assert_eq!(offers.len(), 2);
    s.m.accept(&f, &offers[..1], vec![launch("t", "cpus:0.5")], None, s.now)
        .expect("accept");
    s.run();
    let stale = offers[0].clone();
    let good = oid(s.offers().last().expect("the rest offered again"));
    let gone = OfferId::parse("never-made").expect("id");
    s.m.decline(&f, &[stale, good.clone(), gone], Some(Duration::from_secs(60)), s.now)
        .expect("the outstanding ones declined");
    assert!(!s.m.offers.contains_key(&good));
    assert!(s.m.offers.contains_key(&offers[1]), "an offer not named stays");

    let g = s.second_framework();
    let err =
        s.m.decline(&g, std::slice::from_ref(&offers[1]), None, s.now)
            .expect_err("foreign");
    assert!(matches!(err, MasterError::ForeignOffer { .. }), "{err}");
    assert!(s.m.offers.contains_key(&offers[1]), "nothing declined");
}

/// DESIGN.md "Offers": decline filters keep the agent away for the refuse
/// time; revive clears them.
#[test]
fn decline_filter_then_revive() {
    let mut s = Sim::new();
    let f = s.framework();
    s.agent(AGENT_CONN, "cpus:1;mem:256");
    let o = oid(&s.offers()[0]);
    s.m.decline(&f, &[o], Some(Duration::from_secs(10)), s.now)
        .expect("decline");
    s.advance(Duration::from_secs(1));
    assert_eq!(s.offers().len(), 1);
    s.m.revive(&f, &[]).expect("revive");
    s.run();
    assert_eq!(s.offers().len(), 2);
}

/// Mesos' per-role suppress: a framework suppressed in one of its roles
/// keeps being offered resources in the others; the offer it holds in
/// the suppressed role is rescinded; a role it is not in is refused.
#[test]
fn suppress_in_one_role_keeps_offers_in_the_others() {
    let mut s = Sim::new();
    let f = s.framework_in(&["a", "b"]);
    s.agent(AGENT_CONN, "cpus:1;mem:256");
    let first = s.offers();
    assert_eq!(first.len(), 1);
    let held = first[0].allocation_role.clone();
    let other = if held == "a" { "b" } else { "a" };
    let role = |r: &str| mezzo_proto::reservation::Role::parse(r).expect("role");
    s.m.suppress(&f, &[role(&held)]).expect("suppress");
    s.run();
    // Rescinded, and offered again in the other role.
    assert!(s.events().iter().any(|e| matches!(e, v1::event::Event::Rescind(_))));
    let offers = s.offers();
    assert_eq!(offers.len(), 2);
    assert_eq!(offers[1].allocation_role, other);
    let fw = s.m.frameworks.get(&f).expect("framework");
    assert!(!fw.suppressed_everywhere());
    assert_eq!(fw.suppressed_role_names(), vec![held.clone()]);
    assert!(matches!(s.m.suppress(&f, &[role("c")]), Err(MasterError::Invalid(_))));
    s.m.revive(&f, &[]).expect("revive");
    assert!(s.m.frameworks.get(&f).expect("framework").suppressed_roles.is_empty());
}

/// Mesos' `Subscribe.suppressed_roles`: a framework that subscribes (new,
/// or again after a failover) suppressed in some roles is offered nothing
/// in them from the start, and is in its others; one naming a role it is
/// not in is refused and changes nothing.
#[test]
fn a_subscription_names_the_roles_it_is_suppressed_in() {
    let mut s = Sim::new();
    s.agent(AGENT_CONN, "cpus:1;mem:256");
    let role = |r: &str| mezzo_proto::reservation::Role::parse(r).expect("role");
    let info = |roles: &[&str]| v1::FrameworkInfo {
        name: "f".into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        failover_timeout_secs: 60.0,
        ..Default::default()
    };
    let refused = s.m.subscribe(FW_CONN, info(&["a"]), None, vec![role("b")], s.now);
    assert!(matches!(refused, Err(MasterError::Invalid(_))), "{refused:?}");
    s.run();
    assert!(s.m.frameworks.is_empty());

    s.m.subscribe(FW_CONN, info(&["a", "b"]), None, vec![role("a"), role("b")], s.now)
        .expect("subscribe");
    s.run();
    let f = s.m.frameworks.keys().next().expect("framework").clone();
    assert!(s.m.frameworks[&f].suppressed_everywhere());
    assert!(s.offers().is_empty(), "offered while suppressed");

    s.m.subscribe(FW_CONN + 1, info(&["a", "b"]), Some(f.clone()), vec![role("a")], s.now)
        .expect("resubscribe");
    s.run();
    let offers = s.offers();
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].allocation_role, "b");
    assert_eq!(s.m.frameworks[&f].suppressed_role_names(), vec!["a".to_owned()]);

    s.m.subscribe(FW_CONN + 2, info(&["a", "b"]), Some(f.clone()), Vec::new(), s.now)
        .expect("resubscribe");
    s.run();
    assert!(
        s.m.frameworks[&f].suppressed_roles.is_empty(),
        "a subscription revives the rest"
    );
}

/// DESIGN.md "Offers" and "Leadership": an agent that goes silent loses
/// its offers at once and its tasks become UNREACHABLE after the timeout.
#[test]
fn lost_agent_rescinds_offers_and_marks_tasks_unreachable() {
    let (mut s, _f) = Sim::with_task();
    s.run();
    s.m.agent_conn_closed(AGENT_CONN, s.now);
    s.run();
    assert!(s.events().iter().any(|e| matches!(e, v1::event::Event::Rescind(_))));
    s.advance(Duration::from_secs(3));
    assert!(s.updates().is_empty());
    s.advance(Duration::from_secs(3));
    let ups = s.updates();
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].state, v1::TaskState::TaskUnreachable as i32);
    assert!(ups[0].uuid.is_empty());
    assert!(s.events().iter().any(|e| matches!(e, v1::event::Event::Failure(_))));
    assert!(s.m.registry().agents.values().all(|a| a.unreachable_since.is_some()));
}

/// DESIGN.md "Status updates": a framework that comes back gets the updates
/// it never acknowledged.
#[test]
fn resubscribe_resends_unacknowledged_updates() {
    let (mut s, f) = Sim::with_task();
    s.m.framework_conn_closed(FW_CONN, s.now);
    s.m.status_update(
        AGENT_CONN,
        f.clone(),
        status("t", TaskState::Finished, 7),
        TaskState::Finished,
        s.now,
    )
    .expect("upd");
    s.run();
    assert!(s.updates().is_empty());
    s.resubscribe(FW_CONN + 1, &f);
    let ups = s.updates();
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0].uuid, vec![7; 16]);
}

/// An agent's resends of an update the framework has not acknowledged
/// yet reach the framework once per stream and [`FORWARD_AGAIN_AFTER`]
/// (under load, agents resend every 1, 2, 4 s …, and forwarding each one
/// kept a lagging framework further behind); a new stream or the time
/// passing sends it again; resends of an acknowledged update are
/// acknowledged by the master, of a running task or an ended one.
#[test]
fn agents_resends_reach_the_framework_once_per_stream_or_are_acknowledged() {
    use super::update::FORWARD_AGAIN_AFTER;
    let (mut s, f) = Sim::with_task();
    let a = s.m.agents.keys().next().expect("agent").clone();
    let send = |s: &mut Sim, state: TaskState, uuid: u8| {
        s.m.status_update(AGENT_CONN, f.clone(), status("t", state, uuid), state, s.now)
            .expect("update");
        s.run();
    };
    let wait = |s: &mut Sim, d: Duration| {
        for _ in 0..d.as_secs() {
            s.m.agent_heartbeat(AGENT_CONN, s.now);
            s.advance(Duration::from_secs(1));
        }
    };
    send(&mut s, TaskState::Running, 1);
    assert_eq!(s.updates().len(), 1);
    for _ in 0..3 {
        wait(&mut s, Duration::from_secs(2));
        send(&mut s, TaskState::Running, 1);
    }
    assert_eq!(s.updates().len(), 1, "resends within {FORWARD_AGAIN_AFTER:?} held");
    assert_eq!(s.m.counters.resends_held, 3);
    wait(&mut s, FORWARD_AGAIN_AFTER);
    send(&mut s, TaskState::Running, 1);
    assert_eq!(s.updates().len(), 2, "forwarded again after {FORWARD_AGAIN_AFTER:?}");
    // A new stream gets it at once (the re-subscription resends it), and
    // an agent's resend right after is held again.
    s.m.framework_conn_closed(FW_CONN, s.now);
    s.resubscribe(FW_CONN + 1, &f);
    assert_eq!(s.updates().len(), 3);
    send(&mut s, TaskState::Running, 1);
    assert_eq!(s.updates().len(), 3);
    // Once acknowledged, a resend (the agent had not got the
    // acknowledgement yet) is acknowledged by the master, running or ended.
    let t = TaskId::parse("t").expect("id");
    s.m.acknowledge(&f, &a, &t, &[1; 16]).expect("ack");
    s.run();
    assert_eq!(s.acks_forwarded(), 1);
    send(&mut s, TaskState::Running, 1);
    assert_eq!((s.updates().len(), s.acks_forwarded()), (3, 2));
    send(&mut s, TaskState::Finished, 2);
    assert_eq!(s.updates().len(), 4, "a newer update goes at once");
    s.m.acknowledge(&f, &a, &t, &[2; 16]).expect("ack");
    s.run();
    assert_eq!(s.m.view(true).completed_tasks.len(), 1);
    send(&mut s, TaskState::Finished, 2);
    assert_eq!((s.updates().len(), s.acks_forwarded()), (4, 4));
    // An update acknowledged by nobody still goes to the framework.
    let before = s.m.counters.resends_held;
    send(&mut s, TaskState::Finished, 3);
    assert_eq!((s.updates().len(), s.m.counters.resends_held), (5, before));
}

/// A framework whose failover timeout passes is removed and its tasks
/// are shut down on their agents.
#[test]
fn failover_timeout_removes_framework() {
    let (mut s, _f) = Sim::with_task();
    s.m.framework_conn_closed(FW_CONN, s.now);
    for _ in 0..61 {
        s.m.agent_heartbeat(AGENT_CONN, s.now);
        s.advance(Duration::from_secs(1));
    }
    assert!(s.m.registry().frameworks.is_empty());
    assert!(
        s.agent_msgs()
            .iter()
            .any(|m| matches!(m, v1::master_message::Message::ShutdownFramework(_)))
    );
}

fn reregister(s: &mut Sim, conn: ConnId, id: &AgentId, tasks: Vec<(FrameworkId, &str, TaskState)>) {
    reregister_with(s, conn, id, tasks, false);
}

/// Re-registers agent `id` on `conn` with `tasks`, saying whether that
/// list is `complete`.
fn reregister_with(
    s: &mut Sim,
    conn: ConnId,
    id: &AgentId,
    tasks: Vec<(FrameworkId, &str, TaskState)>,
    complete: bool,
) {
    let tasks = tasks
        .into_iter()
        .map(|(fid, t, state)| reported(fid, t, state))
        .collect();
    reregister_reported(s, conn, id, tasks, complete);
}

/// A task as an agent reports it (an end as acknowledged).
fn reported(fid: FrameworkId, t: &str, state: TaskState) -> agent::ReportedTask {
    agent::ReportedTask {
        framework_id: fid,
        task_id: TaskId::parse(t).expect("id"),
        resources: mezzo_proto::reservation::ReservedResources::parse("cpus:0.5").expect("res"),
        info: v1::TaskInfo {
            task_id: t.into(),
            ..Default::default()
        },
        state,
        end_unacknowledged: false,
        launched_at: None,
        statuses: Vec::new(),
    }
}

fn reregister_reported(s: &mut Sim, conn: ConnId, id: &AgentId, tasks: Vec<agent::ReportedTask>, complete: bool) {
    let info = AgentDescription {
        hostname: "h".into(),
        http_address: String::new(),
        resources: mezzo_proto::reservation::ReservedResources::parse("cpus:1;mem:256").expect("res"),
        attributes: vec![],
    };
    s.m.agent_attach(
        conn,
        AgentHello::Reregister {
            id: id.clone(),
            info,
            tasks,
            complete,
            executors: Vec::new(),
        },
        None,
        s.now,
    )
    .expect("attach");
    s.run();
}

fn agent_id(s: &Sim) -> AgentId {
    s.m.agents.keys().next().expect("agent").clone()
}

/// DESIGN.md "Agent recovery": an unreachable agent that comes back with
/// its task running brings the task back, and the framework is told.
#[test]
fn unreachable_agent_returns_with_its_task() {
    let (mut s, f) = Sim::with_task();
    let a = agent_id(&s);
    s.m.agent_conn_closed(AGENT_CONN, s.now);
    s.advance(Duration::from_secs(6));
    assert_eq!(s.m.view(true).agents[0].used, Resources::default());
    reregister(&mut s, AGENT_CONN + 1, &a, vec![(f.clone(), "t", TaskState::Running)]);
    let last = s.updates().pop().expect("update");
    assert_eq!(
        (last.task_id.as_str(), last.state),
        ("t", v1::TaskState::TaskRunning as i32)
    );
    let view = s.m.view(true);
    assert_eq!(view.agents[0].used.cpus.0, 500);
    assert_eq!(view.frameworks[0].allocated.cpus.0, 500);
}

/// An agent that comes back without a task it was running: the task is
/// LOST (also when the framework was told UNREACHABLE), and its id is done.
#[test]
fn returning_agent_without_the_task_loses_it() {
    let (mut s, f) = Sim::with_task();
    let a = agent_id(&s);
    s.m.agent_conn_closed(AGENT_CONN, s.now);
    s.advance(Duration::from_secs(6));
    reregister(&mut s, AGENT_CONN + 1, &a, vec![]);
    let last = s.updates().pop().expect("update");
    assert_eq!(last.state, v1::TaskState::TaskLost as i32);
    let view = s.m.view(true);
    assert!(view.tasks.is_empty());
    assert_eq!(view.completed_tasks.len(), 1);
    assert_eq!(view.agents[0].active_tasks, 0);
    let _ = f;
}

/// An agent that reports a task terminal when it re-registers frees the
/// task's resources (no leak).
#[test]
fn reregistration_with_a_finished_task_frees_resources() {
    let (mut s, f) = Sim::with_task();
    let a = agent_id(&s);
    reregister(&mut s, AGENT_CONN + 1, &a, vec![(f, "t", TaskState::Finished)]);
    let view = s.m.view(true);
    assert_eq!(view.agents[0].used, Resources::default());
    assert_eq!(view.frameworks[0].allocated, Resources::default());
}

/// An update from an agent the task is not on is refused: it changes no
/// accounting and never reaches the framework (DESIGN.md "Trust").
#[test]
fn update_from_the_wrong_agent_changes_nothing() {
    let (mut s, f) = Sim::with_task();
    s.agent(AGENT_CONN + 5, "cpus:1;mem:256");
    s.run();
    let err =
        s.m.status_update(
            AGENT_CONN + 5,
            f,
            status("t", TaskState::Finished, 3),
            TaskState::Finished,
            s.now,
        )
        .expect_err("refused");
    assert!(matches!(err, MasterError::Denied(_)), "{err}");
    let forwarded =
        s.m.take_effects()
            .into_iter()
            .any(|e| matches!(e, Effect::ToFramework(..)));
    assert!(!forwarded, "a refused update is not forwarded");
    s.run();
    let view = s.m.view(true);
    assert_eq!(view.tasks[0].state, "TASK_STAGING");
    assert_eq!(view.frameworks[0].allocated.cpus.0, 500);
}

/// A framework that fails over while its old stream is open gets fresh
/// offers on the new stream instead of losing them to the old one.
#[test]
fn failover_subscription_gets_the_offers() {
    let mut s = Sim::new();
    let f = s.framework();
    s.agent(AGENT_CONN, "cpus:1;mem:256");
    assert_eq!(s.offers().len(), 1);
    let info = v1::FrameworkInfo {
        name: "f".into(),
        failover_timeout_secs: 60.0,
        ..Default::default()
    };
    s.m.subscribe(FW_CONN + 1, info, Some(f), Vec::new(), s.now)
        .expect("resubscribe");
    s.run();
    let to_new = s.sent.iter().any(|e| matches!(e, Effect::ToFramework(c, ev) if *c == FW_CONN + 1 && matches!(ev.event, Some(v1::event::Event::Offers(_)))));
    assert!(to_new, "no offer on the new stream");
    assert_eq!(s.m.offers.len(), 1);
}

/// DESIGN.md "Status updates" (reconcile): a task the master never heard
/// of is DROPPED once its agent has registered (it never reached the
/// agent), and gets no answer while the agent may still bring it back.
#[test]
fn explicit_reconciliation_of_unknown_tasks() {
    let mut s = Sim::new();
    let f = s.framework();
    let a = s.agent(AGENT_CONN, "cpus:1;mem:256");
    let ghost = TaskId::parse("ghost").expect("id");
    s.m.reconcile(&f, &[(ghost.clone(), Some(a.clone()))])
        .expect("reconcile");
    s.run();
    assert_eq!(
        s.updates().pop().map(|u| u.state),
        Some(v1::TaskState::TaskDropped as i32)
    );
    s.m.agent_conn_closed(AGENT_CONN, s.now);
    let before = s.updates().len();
    s.m.reconcile(&f, &[(ghost.clone(), Some(a))]).expect("reconcile");
    s.run();
    assert_eq!(s.updates().len(), before, "no answer while the agent may come back");
    s.m.reconcile(&f, &[(ghost, None)]).expect("reconcile");
    s.run();
    assert_eq!(
        s.updates().pop().map(|u| u.state),
        Some(v1::TaskState::TaskUnknown as i32)
    );
}

/// After a failover, a task that ended before the new leader knew it is
/// reported by its agent as completed, and reconciliation answers with its
/// true end rather than LOST.
#[test]
fn completed_tasks_reported_on_reregistration_reconcile_truthfully() {
    let mut s = Sim::new();
    let f = s.framework();
    let a = s.agent(AGENT_CONN, "cpus:1;mem:256");
    reregister(
        &mut s,
        AGENT_CONN + 1,
        &a,
        vec![(f.clone(), "done", TaskState::Finished)],
    );
    let done = TaskId::parse("done").expect("id");
    s.m.reconcile(&f, &[(done, Some(a))]).expect("reconcile");
    s.run();
    assert_eq!(
        s.updates().pop().map(|u| u.state),
        Some(v1::TaskState::TaskFinished as i32)
    );
    assert!(s.m.view(true).tasks.is_empty());
}

/// A framework subscribed in `roles` on its own connection.
fn framework_in(s: &mut Sim, conn: ConnId, roles: &[&str]) -> FrameworkId {
    let info = v1::FrameworkInfo {
        name: "r".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        failover_timeout_secs: 60.0,
        ..Default::default()
    };
    s.m.subscribe(conn, info, None, Vec::new(), s.now).expect("subscribe");
    s.run();
    let id = s.sent.iter().rev().find_map(|e| match e {
        Effect::ToFramework(c, ev) if *c == conn => match &ev.event {
            Some(v1::event::Event::Subscribed(x)) => Some(x.framework_id.clone()),
            _ => None,
        },
        _ => None,
    });
    FrameworkId::parse(&id.expect("subscribed")).expect("id")
}

fn offers_to(s: &Sim, fid: &FrameworkId) -> Vec<v1::Offer> {
    s.offers()
        .into_iter()
        .filter(|o| o.framework_id == fid.as_str())
        .collect()
}

/// DESIGN.md "Allocator": an offer names its role; a RESERVE in Accept is
/// committed to the registry, and the reservation is offered to its role.
#[test]
fn reserve_through_accept_is_committed_and_offered_to_its_role() {
    use mezzo_proto::reservation::ReservedResources;
    let mut s = Sim::new();
    let agent = s.agent(AGENT_CONN, "cpus:4;mem:1024");
    let eng = framework_in(&mut s, 101, &["eng"]);
    let o = offers_to(&s, &eng).pop().expect("offer");
    assert_eq!(o.allocation_role, "eng");
    let reserve = OfferOperation::Reserve(ReservedResources::parse("cpus(eng):1;mem(eng):256").expect("r"));
    let launch_all = OfferOperation::Launch(launch("big", "cpus:4"));
    // The reserved part is not the framework's to launch on in the same accept.
    let err =
        s.m.accept_operations(&eng, &[oid(&o)], vec![reserve.clone(), launch_all], None, s.now)
            .expect_err("beyond");
    assert!(err.to_string().contains("asks for"), "{err}");
    let bad = OfferOperation::Reserve(ReservedResources::parse("cpus(ops):1").expect("r"));
    let err =
        s.m.accept_operations(&eng, &[oid(&o)], vec![bad], None, s.now)
            .expect_err("other role");
    assert!(err.to_string().contains("offer's role"), "{err}");
    let unreserve = OfferOperation::Unreserve(ReservedResources::parse("cpus(eng):1").expect("r"));
    let err =
        s.m.accept_operations(&eng, &[oid(&o)], vec![unreserve], None, s.now)
            .expect_err("not reserved");
    assert!(err.to_string().contains("not dynamically reserved"), "{err}");
    s.m.accept_operations(&eng, &[oid(&o)], vec![reserve], None, s.now)
        .expect("reserve");
    s.run();
    assert_eq!(
        s.m.registry().reservations.get(&agent).map(String::as_str),
        Some("cpus(eng):1;mem(eng):256")
    );
    // The rest came back at once, the reservation once committed.
    let again: Vec<v1::Offer> = offers_to(&s, &eng)
        .into_iter()
        .filter(|x| x.offer_id != o.offer_id)
        .collect();
    let mut r = ReservedResources::default();
    for x in &again {
        r.add(&ReservedResources::from_proto(&x.resources).expect("resources"));
    }
    assert_eq!(r.to_string(), "cpus:3;mem:768;cpus(eng):1;mem(eng):256");
    // A task asking for unreserved cpus gets the reserved ones when needed,
    // and is recorded with the split it took.
    let ids: Vec<OfferId> = again.iter().map(oid).collect();
    s.m.accept(&eng, &ids, vec![launch("t", "cpus:4;mem:300")], None, s.now)
        .expect("accept");
    s.run();
    let view = s.m.view(true);
    assert_eq!(view.tasks[0].role, "eng");
    let sent_task = s.agent_msgs().into_iter().rev().find_map(|m| match m {
        v1::master_message::Message::RunTask(r) => r.task,
        _ => None,
    });
    let task = sent_task.expect("run task");
    assert_eq!(task.allocation_role, "eng");
    let split = ReservedResources::from_proto(&task.resources).expect("split");
    assert_eq!(split.to_string(), "cpus:3;mem:300;cpus(eng):1");
}

/// Operator requests are answered after their op commits; bad ones at once.
#[test]
fn operator_requests_answer_after_commit_and_refuse_bad_input() {
    use crate::allocator::Quota;
    use mezzo_proto::reservation::{ReservedResources, Role};
    let mut s = Sim::new();
    let agent = s.agent(AGENT_CONN, "cpus:4;mem:1024");
    let eng = Role::parse("eng").expect("role");
    let q = |g: &str, l: &str| Quota {
        guarantee: Resources::parse(g).unwrap_or_default(),
        limit: Resources::parse(l).unwrap_or_default(),
    };
    let bad = [
        (
            PolicyRequest::SetWeights([(eng.clone(), f64::NAN)].into_iter().collect()),
            "finite",
        ),
        (
            PolicyRequest::SetWeights([(eng.clone(), -1.0)].into_iter().collect()),
            "from 1e-6",
        ),
        (
            // Found by fuzzing: DRF's share / weight became infinite.
            PolicyRequest::SetWeights([(eng.clone(), 7.5292145546338e-310)].into_iter().collect()),
            "from 1e-6",
        ),
        (
            PolicyRequest::SetQuota {
                role: eng.clone(),
                quota: q("cpus:4", "cpus:2"),
            },
            "above its limit",
        ),
        (
            PolicyRequest::SetQuota {
                role: eng.clone(),
                quota: q("gpus:1", ""),
            },
            "unknown resource",
        ),
        (
            PolicyRequest::SetQuota {
                role: eng.clone(),
                quota: Quota::default(),
            },
            "no quota to remove",
        ),
        (
            PolicyRequest::Reserve {
                agent: agent.clone(),
                resources: ReservedResources::parse("cpus(eng):5").expect("r"),
                principal: String::new(),
            },
            "cannot reserve",
        ),
        (
            PolicyRequest::Reserve {
                agent: AgentId::parse("nope").expect("id"),
                resources: ReservedResources::parse("cpus(eng):1").expect("r"),
                principal: String::new(),
            },
            "unknown agent",
        ),
        (
            PolicyRequest::Unreserve {
                agent: agent.clone(),
                resources: ReservedResources::parse("cpus(eng):1").expect("r"),
            },
            "not dynamically reserved",
        ),
    ];
    for (req, why) in bad {
        let err = s.m.policy(1, req).expect_err(why).to_string();
        assert!(err.contains(why), "{err} lacks {why}");
    }
    s.run();
    assert!(!s.sent.iter().any(|e| matches!(e, Effect::PolicyDone(..))));
    s.m.policy(
        7,
        PolicyRequest::Reserve {
            agent: agent.clone(),
            resources: ReservedResources::parse("cpus(eng):2").expect("r"),
            principal: "admin".into(),
        },
    )
    .expect("reserve");
    s.m.policy(
        8,
        PolicyRequest::SetQuota {
            role: eng,
            quota: q("cpus:1", ""),
        },
    )
    .expect("quota");
    s.run();
    assert!(s.sent.contains(&Effect::PolicyDone(7, Ok(()))));
    assert!(s.sent.contains(&Effect::PolicyDone(8, Ok(()))));
    let view = s.m.view(true);
    assert_eq!(
        view.agents[0].resources_by_role.to_string(),
        "cpus:2;mem:1024;cpus(eng):2"
    );
    assert_eq!(view.allocation.quotas.len(), 1);
}
mod executors;
mod failover;
mod groups;
mod history;
mod operator;
mod outcomes;
mod preemption;
mod volumes;

/// Issue 17: a re-registration the registry already holds word for word
/// (every agent after a leader failover) is admitted without a Raft write;
/// one that changes the record, or comes while the agent's unreachable mark
/// is still being committed, goes through the registry in log order.
#[test]
fn an_agent_back_as_the_registry_has_it_is_admitted_without_a_write() {
    let mut s = Sim::new();
    let id = s.agent(AGENT_CONN, "cpus:1;mem:256");
    let hello = |res: &str| AgentHello::Reregister {
        id: id.clone(),
        info: AgentDescription {
            hostname: "h".into(),
            http_address: String::new(),
            resources: mezzo_proto::reservation::ReservedResources::parse(res).expect("res"),
            attributes: vec![],
        },
        tasks: Vec::new(),
        complete: true,
        executors: Vec::new(),
    };
    let proposes = |effects: &[Effect]| effects.iter().any(|e| matches!(e, Effect::Propose(_)));
    let registered = |effects: &[Effect], conn: ConnId| {
        effects.iter().any(|e| {
            matches!(e, Effect::ToAgent(c, m) if *c == conn
                && matches!(m.message, Some(v1::master_message::Message::Registered(_))))
        })
    };
    // Unchanged: told at once, nothing proposed.
    s.m.agent_attach(AGENT_CONN + 1, hello("cpus:1;mem:256"), None, s.now)
        .expect("attach");
    let effects = s.m.take_effects();
    assert!(
        !proposes(&effects) && registered(&effects, AGENT_CONN + 1),
        "{effects:?}"
    );
    assert_eq!(s.m.agents[&id].status, AgentStatus::Active);
    // Changed resources: committed first.
    s.m.agent_attach(AGENT_CONN + 2, hello("cpus:2;mem:256"), None, s.now)
        .expect("attach");
    let effects = s.m.take_effects();
    assert!(
        proposes(&effects) && !registered(&effects, AGENT_CONN + 2),
        "{effects:?}"
    );
    for e in effects {
        if let Effect::Propose(op) = e {
            s.m.apply(op, s.now);
        }
    }
    s.run();
    // Silent past its timeout: the unreachable mark is proposed; the agent
    // coming back before it commits is admitted after it, in the log.
    s.now += Duration::from_secs(6);
    s.m.tick(s.now);
    let marks: Vec<Effect> = s.m.take_effects();
    assert!(proposes(&marks), "{marks:?}");
    s.m.agent_attach(AGENT_CONN + 3, hello("cpus:2;mem:256"), None, s.now)
        .expect("attach");
    let effects = s.m.take_effects();
    assert!(
        proposes(&effects) && !registered(&effects, AGENT_CONN + 3),
        "{effects:?}"
    );
    for e in marks.into_iter().chain(effects) {
        if let Effect::Propose(op) = e {
            s.m.apply(op, s.now);
        }
    }
    s.run();
    assert_eq!(s.m.agents[&id].status, AgentStatus::Active, "back after the mark");
}

/// The agent ids sent in `Registered` to one connection.
fn registered_on(s: &Sim, conn: ConnId) -> Vec<String> {
    s.sent
        .iter()
        .filter_map(|e| match e {
            Effect::ToAgent(c, m) if *c == conn => match &m.message {
                Some(v1::master_message::Message::Registered(r)) => Some(r.agent_id.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Issue 17: an agent that stopped waiting for `Registered` (thousands do
/// in a registration storm) retries with its first attempt's registration
/// id: before the commit the retry waits for that commit, after it the
/// retry gets the agent the first attempt made. One agent, not two.
#[test]
fn a_retried_registration_gets_the_agent_its_first_attempt_made() {
    let mut s = Sim::new();
    let register = || AgentHello::Register {
        info: AgentDescription {
            hostname: "h".into(),
            http_address: "127.0.0.1:5051".into(),
            resources: mezzo_proto::reservation::ReservedResources::parse("cpus:4;mem:1024").expect("res"),
            attributes: vec![],
        },
        registration: Some("reg-1".into()),
    };
    let agent = Some("agent-1".to_owned());
    s.m.agent_attach(1, register(), agent.clone(), s.now).expect("attach");
    let first = s.m.take_effects();
    assert!(first.iter().any(|e| matches!(e, Effect::Propose(_))));
    // It gives up before the commit, and retries.
    s.m.agent_conn_closed(1, s.now);
    s.m.agent_attach(2, register(), agent.clone(), s.now).expect("retry");
    let retry = s.m.take_effects();
    assert!(
        !retry.iter().any(|e| matches!(e, Effect::Propose(_))),
        "a retry before the commit proposed another agent: {retry:?}"
    );
    for e in first {
        if let Effect::Propose(op) = e {
            s.m.apply(op, s.now);
        }
    }
    s.run();
    let id = registered_on(&s, 2);
    assert_eq!(id.len(), 1, "the retry's stream was not answered");
    assert!(registered_on(&s, 1).is_empty());
    assert_eq!(s.m.agents.len(), 1);

    // Its answer is lost too: the next retry re-registers that agent.
    s.m.agent_conn_closed(2, s.now);
    s.m.agent_attach(3, register(), agent, s.now).expect("retry");
    s.run();
    assert_eq!(registered_on(&s, 3), id);
    assert_eq!(s.m.agents.len(), 1);
    assert_eq!(s.m.agents.values().next().and_then(|a| a.conn), Some(3));

    // Another principal naming the same registration id is another agent.
    s.m.agent_attach(4, register(), Some("agent-2".into()), s.now)
        .expect("attach");
    s.run();
    let other = registered_on(&s, 4);
    assert_eq!(other.len(), 1);
    assert_ne!(other, id);
    assert_eq!(s.m.agents.len(), 2);
}
