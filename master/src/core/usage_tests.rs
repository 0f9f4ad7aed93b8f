//! The master keeps each agent's latest usage report, only for tasks it
//! places on that agent, and shows it per task and per agent.

use std::time::Instant;

use mezzo_proto::ids::{AgentId, FrameworkId, OfferId, TaskId};
use mezzo_proto::reservation::ReservedResources;
use mezzo_proto::resources::Resources;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;

use super::{ContainerUsage, Usage};
use crate::api::validate_task;
use crate::core::agent_types::AgentDescription;
use crate::core::{AgentHello, ConnId, CoreConfig, Effect, Master};
use crate::registry::Registry;

const FW: ConnId = 1;
const AGENT: ConnId = 2;

/// Runs effects, committing proposals at once; returns what was sent.
fn run(m: &mut Master, now: Instant) -> Vec<Effect> {
    let mut sent = Vec::new();
    loop {
        m.allocate_if_needed(now);
        let effects = m.take_effects();
        if effects.is_empty() {
            return sent;
        }
        for e in effects {
            match e {
                Effect::Propose(op) => m.apply(op, now),
                other => sent.push(other),
            }
        }
    }
}

/// A master with one agent running tasks "a" and "b" of one framework.
fn cluster() -> (Master, FrameworkId, AgentId, Instant) {
    let now = Instant::now();
    let mut m = Master::recover(CoreConfig::default(), Registry::default(), now);
    let info = v1::FrameworkInfo {
        name: "f".into(),
        failover_timeout_secs: 60.0,
        ..Default::default()
    };
    m.subscribe(FW, info, None, Vec::new(), now).expect("subscribe");
    let desc = AgentDescription {
        hostname: "h".into(),
        http_address: String::new(),
        resources: ReservedResources::unreserved(Resources::parse("cpus:2;mem:512").expect("resources")),
        attributes: vec![],
    };
    m.agent_attach(
        AGENT,
        AgentHello::Register {
            info: desc,
            registration: None,
        },
        None,
        now,
    )
    .expect("attach");
    let sent = run(&mut m, now);
    let mut fid = None;
    let mut offer = None;
    for e in &sent {
        if let Effect::ToFramework(_, ev) = e {
            match &ev.event {
                Some(v1::event::Event::Subscribed(s)) => fid = Some(s.framework_id.clone()),
                Some(v1::event::Event::Offers(o)) => offer = Some(o.offers[0].clone()),
                _ => {}
            }
        }
    }
    let fid = FrameworkId::parse(&fid.expect("subscribed")).expect("framework id");
    let offer = offer.expect("an offer");
    let aid = AgentId::parse(&offer.agent_id).expect("agent id");
    let launch = |id: &str| {
        validate_task(v1::TaskInfo {
            task_id: id.into(),
            resources: Resources::parse("cpus:0.5;mem:32").expect("resources").to_proto(),
            command: Some(v1::CommandInfo {
                value: "sleep 10".into(),
                shell: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .expect("valid task")
    };
    let oid = OfferId::parse(&offer.offer_id).expect("offer id");
    m.accept(&fid, &[oid], vec![launch("a"), launch("b")], None, now)
        .expect("accept");
    run(&mut m, now);
    (m, fid, aid, now)
}

fn usage(fid: &FrameworkId, task: &str, cpu: f64, rss: u64, pids: u64) -> ContainerUsage {
    ContainerUsage {
        framework_id: fid.clone(),
        task_id: TaskId::parse(task).expect("task id"),
        usage: Usage {
            cpu_time_secs: cpu,
            memory_rss_bytes: rss,
            memory_cache_bytes: 10,
            pids,
        },
    }
}

#[test]
fn latest_report_is_shown_per_task_and_summed_per_agent() {
    let (mut m, fid, aid, now) = cluster();
    assert_eq!(m.view(true).agents[0].usage.age_secs, None, "no report yet");

    m.agent_usage(
        AGENT,
        vec![usage(&fid, "a", 1.0, 100, 1), usage(&fid, "b", 2.0, 200, 2)],
        now,
    );
    m.agent_usage(
        AGENT,
        vec![usage(&fid, "a", 1.5, 150, 3), usage(&fid, "b", 2.5, 250, 4)],
        now,
    );
    let view = m.view(true);
    let a = view.tasks.iter().find(|t| t.id == "a").expect("task a");
    assert_eq!(
        a.usage.map(|u| (u.cpu_time_secs, u.memory_rss_bytes, u.pids)),
        Some((1.5, 150, 3))
    );
    let agent = &view.agents[0];
    assert_eq!(agent.id, aid.to_string());
    assert_eq!(agent.usage.containers, 2);
    assert_eq!(agent.usage.total.cpu_time_secs, 4.0);
    assert_eq!(agent.usage.total.memory_rss_bytes, 400);
    assert_eq!(agent.usage.total.memory_cache_bytes, 20);
    assert_eq!(agent.usage.total.pids, 7);
    assert!(agent.usage.age_secs.is_some());
}

#[test]
fn a_report_replaces_the_previous_one_and_ignores_unknown_or_ended_tasks() {
    let (mut m, fid, _aid, now) = cluster();
    m.agent_usage(
        AGENT,
        vec![usage(&fid, "a", 1.0, 100, 1), usage(&fid, "b", 2.0, 200, 2)],
        now,
    );
    // "b" ended: the agent no longer reports it; "ghost" is not on this agent.
    let mut end = v1::TaskStatus {
        task_id: "b".into(),
        state: TaskState::Finished.to_proto() as i32,
        uuid: vec![7; 16],
        ..Default::default()
    };
    end.agent_id = m.view(true).agents[0].id.clone();
    m.status_update(AGENT, fid.clone(), end, TaskState::Finished, now)
        .expect("update");
    let other_fw = FrameworkId::parse("other").expect("id");
    m.agent_usage(
        AGENT,
        vec![
            usage(&fid, "a", 3.0, 300, 1),
            usage(&fid, "b", 9.0, 900, 9),
            usage(&fid, "ghost", 1.0, 1, 1),
            usage(&other_fw, "a", 1.0, 1, 1),
        ],
        now,
    );
    let view = m.view(true);
    assert_eq!(view.agents[0].usage.containers, 1, "{:?}", view.agents[0].usage);
    assert_eq!(view.agents[0].usage.total.memory_rss_bytes, 300);
    let b = view.tasks.iter().find(|t| t.id == "b").expect("task b");
    assert_eq!(b.usage, None);

    m.agent_usage(AGENT, vec![], now);
    assert_eq!(m.view(true).agents[0].usage.containers, 0);
}

#[test]
fn a_report_on_an_unknown_stream_changes_nothing() {
    let (mut m, fid, _aid, now) = cluster();
    m.agent_usage(99, vec![usage(&fid, "a", 1.0, 100, 1)], now);
    assert_eq!(m.view(true).agents[0].usage.age_secs, None);
}
