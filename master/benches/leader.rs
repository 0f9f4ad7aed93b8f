//! The leader's core at scale (issue 17), with no I/O: the heap it holds
//! per agent and per running task, and the CPU a failover's re-registrations
//! cost a new leader before any byte of TLS or HTTP/2.
//!
//! `cargo bench -p mezzo-master --bench leader` runs the failover's shape
//! (40,000 agents, 400,000 tasks, 40 frameworks); `-- AGENTS TASKS
//! FRAMEWORKS` another (the memory shape: `-- 50000 1000000 5000`).
//!
//! One leader launches every task through the same calls the runtime
//! makes (subscribe, register, accept, RUNNING update, acknowledgement);
//! a follower's registry applies its proposals. A new leader is then built
//! from that registry and given each agent's re-registration, encoded as
//! the agent sends it: decoding, validation and admission are timed.

use std::time::{Duration, Instant};

use mezzo_master::api::{agent::hello, validate_task};
use mezzo_master::core::{AgentHello, ConnId, CoreConfig, Effect, Master};
use mezzo_master::registry::Registry;
use mezzo_proto::ids::{AgentId, FrameworkId, OfferId};
use mezzo_proto::reservation::ReservedResources;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;
use prost::Message;

#[path = "common/counting.rs"]
mod counting;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// Room for ten tasks of [`TASK`] and more.
const AGENT: &str = "cpus:32;mem:131072;disk:100000;ports:[31000-32000]";
const TASK: &str = "cpus:0.1;mem:32";
/// Framework streams are numbered from 1, agent streams from here.
const AGENT_CONNS: ConnId = 1 << 32;

struct Shape {
    agents: usize,
    tasks: usize,
    frameworks: usize,
}

fn shape() -> Shape {
    let nums: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let get = |i: usize, default: usize| nums.get(i).copied().unwrap_or(default);
    Shape {
        agents: get(0, 40_000),
        tasks: get(1, 400_000),
        frameworks: get(2, 40),
    }
}

/// A leader and a follower's registry, fed the leader's proposals.
struct Cluster {
    leader: Master,
    follower: Registry,
    now: Instant,
}

impl Cluster {
    /// Commits every proposal (as a single master does) and returns what
    /// was sent.
    fn drain(&mut self) -> Vec<Effect> {
        let mut sent = Vec::new();
        loop {
            let effects = self.leader.take_effects();
            if effects.is_empty() {
                return sent;
            }
            for e in effects {
                match e {
                    Effect::Propose(op) => {
                        self.follower.apply(&op);
                        self.leader.apply(op, self.now);
                    }
                    other => sent.push(other),
                }
            }
        }
    }
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn framework_info(i: usize) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        name: format!("sim-{i}"),
        failover_timeout_secs: 3600.0,
        ..Default::default()
    }
}

fn agent_info(i: usize) -> v1::AgentInfo {
    v1::AgentInfo {
        hostname: format!("sim-agent-{i}.example"),
        resources: ReservedResources::parse(AGENT).expect("agent").to_proto(),
        ..Default::default()
    }
}

/// One running task, as the bench remembers it: a few numbers, in a
/// list sized before the leader's memory is counted, so that only the
/// leader's own memory is. The task's info and status are made again from
/// them when its agent re-registers.
#[derive(Clone, Copy)]
struct Running {
    agent: u32,
    framework: u32,
    task: u32,
    launched_at: f64,
}

fn task_id(n: u32) -> String {
    format!("sim-task-{n}")
}

/// [`TASK`] as protobuf, parsed once: the framework's work, not the
/// leader's, and inside the launches' timing.
fn task_resources() -> &'static Vec<v1::Resource> {
    static PARSED: std::sync::OnceLock<Vec<v1::Resource>> = std::sync::OnceLock::new();
    PARSED.get_or_init(|| ReservedResources::parse(TASK).expect("task").to_proto())
}

/// The task a framework launches (as the simulator's frameworks do).
fn task_info(n: u32, agent: &AgentId) -> v1::TaskInfo {
    v1::TaskInfo {
        name: format!("sim {n}"),
        task_id: task_id(n),
        agent_id: agent.to_string(),
        resources: task_resources().clone(),
        command: Some(v1::CommandInfo {
            value: "true".into(),
            shell: false,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Its RUNNING update, as its agent sends it.
fn running_status(t: &Running, agent: &AgentId, framework: &FrameworkId) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: task_id(t.task),
        state: v1::TaskState::TaskRunning as i32,
        source: v1::StatusSource::SourceAgent as i32,
        agent_id: agent.to_string(),
        uuid: u128::from(t.task).to_be_bytes().to_vec(),
        timestamp: t.launched_at + 1.0,
        framework_id: framework.to_string(),
        ..Default::default()
    }
}

/// Prints the allocation sizes that grew most (from [`counting::grown`]),
/// per one of `n` things (`what`).
fn print_sizes(grown: Vec<(usize, isize)>, n: usize, what: &str) {
    for (size, count) in grown {
        let label = if size == 4096 {
            "4096+".to_owned()
        } else {
            size.to_string()
        };
        println!(
            "  {:.2} allocations of {label} bytes {what} ({:.0} bytes)",
            count as f64 / n as f64,
            (size as isize * count) as f64 / n as f64
        );
    }
}

/// The sizes that grew most since `before`, per task.
fn breakdown(before: &[isize], tasks: usize) {
    print_sizes(counting::grown(before, &counting::by_size(), 8), tasks, "a task");
}

fn main() {
    let s = shape();
    let per_agent = s.tasks.div_ceil(s.agents);
    println!(
        "shape: {} agents, {} tasks ({per_agent} an agent), {} frameworks",
        s.agents, s.tasks, s.frameworks
    );
    let cfg = || CoreConfig {
        agent_timeout: Duration::from_secs(3600),
        ..CoreConfig::default()
    };
    let now = Instant::now();
    let mut running: Vec<Running> = Vec::with_capacity(s.tasks);
    let mut agents: Vec<AgentId> = Vec::with_capacity(s.agents);
    let mut frameworks: Vec<FrameworkId> = Vec::with_capacity(s.frameworks);
    let base = counting::live();
    let mut c = Cluster {
        leader: Master::recover(cfg(), Registry::default(), now),
        follower: Registry::default(),
        now,
    };
    for i in 0..s.frameworks {
        c.leader
            .subscribe(1 + i as ConnId, framework_info(i), None, Vec::new(), now)
            .expect("subscribe");
    }
    for e in c.drain() {
        if let Effect::ToFramework(_, ev) = e
            && let Some(v1::event::Event::Subscribed(sub)) = ev.event
        {
            frameworks.push(FrameworkId::parse(&sub.framework_id).expect("id"));
        }
    }
    assert_eq!(frameworks.len(), s.frameworks, "every framework subscribed");
    let after_frameworks = counting::live();
    let sizes = counting::by_size();
    for i in 0..s.agents {
        let hello = hello(v1::AgentMessage {
            message: Some(v1::agent_message::Message::Register(v1::Register {
                agent: Some(agent_info(i)),
                registration: String::new(),
            })),
        })
        .expect("register");
        c.leader
            .agent_attach(AGENT_CONNS + i as ConnId, hello, None, now)
            .expect("attach");
    }
    for e in c.drain() {
        if let Effect::ToAgent(_, m) = e
            && let Some(v1::master_message::Message::Registered(r)) = m.message
        {
            agents.push(AgentId::parse(&r.agent_id).expect("id"));
        }
    }
    assert_eq!(agents.len(), s.agents, "every agent registered");
    let after_agents = counting::live();
    let agent_sizes = counting::grown(&sizes, &counting::by_size(), 8);
    let sizes = counting::by_size();

    // Launch: every offer accepted with its agent's share of the tasks.
    let started = Instant::now();
    c.leader.allocate(now);
    let offers: Vec<(usize, OfferId, AgentId)> = c
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            Effect::ToFramework(conn, ev) => match ev.event {
                Some(v1::event::Event::Offers(o)) => Some((conn, o)),
                _ => None,
            },
            _ => None,
        })
        .flat_map(|(conn, o)| {
            o.offers.into_iter().map(move |o| {
                (
                    (conn - 1) as usize,
                    OfferId::parse(&o.offer_id).expect("offer"),
                    AgentId::parse(&o.agent_id).expect("agent"),
                )
            })
        })
        .collect();
    assert_eq!(offers.len(), s.agents, "one offer per agent");
    let index: std::collections::HashMap<AgentId, u32> =
        agents.iter().enumerate().map(|(i, a)| (a.clone(), i as u32)).collect();
    for (fw, offer, agent) in offers {
        let first = running.len() as u32;
        let count = per_agent.min(s.tasks - running.len()) as u32;
        let launches = (first..first + count)
            .map(|n| validate_task(task_info(n, &agent)).expect("valid task"))
            .collect();
        c.leader
            .accept(&frameworks[fw], &[offer], launches, None, now)
            .expect("accept");
        let launched_at = c
            .drain()
            .into_iter()
            .find_map(|e| match e {
                Effect::ToAgent(_, m) => match m.message {
                    Some(v1::master_message::Message::RunTask(run)) => Some(run.launched_at),
                    _ => None,
                },
                _ => None,
            })
            .expect("launched");
        running.extend((first..first + count).map(|task| Running {
            agent: index[&agent],
            framework: fw as u32,
            task,
            launched_at,
        }));
    }
    drop(index);
    assert_eq!(running.len(), s.tasks, "every task launched");
    let launched_in = started.elapsed();
    let after_launch = counting::live();

    // Each task RUNNING, as its agent reports it, and acknowledged.
    let started = Instant::now();
    for t in &running {
        let (agent, fw) = (&agents[t.agent as usize], &frameworks[t.framework as usize]);
        c.leader
            .status_update(
                AGENT_CONNS + ConnId::from(t.agent),
                fw.clone(),
                running_status(t, agent, fw),
                TaskState::Running,
                now,
            )
            .expect("update");
        c.drain();
    }
    let updated_in = started.elapsed();
    let after_running = counting::live();
    let started = Instant::now();
    for t in &running {
        let (agent, fw) = (&agents[t.agent as usize], &frameworks[t.framework as usize]);
        let tid = mezzo_proto::ids::TaskId::parse(&task_id(t.task)).expect("id");
        c.leader
            .acknowledge(fw, agent, &tid, &u128::from(t.task).to_be_bytes())
            .expect("ack");
        c.drain();
    }
    let acked_in = started.elapsed();
    let after_acks = counting::live();
    let per = |a: isize, b: isize, n: usize| (b - a) as f64 / n as f64;
    println!(
        "memory: leader {:.1} MiB: {:.0} bytes a framework, {:.0} bytes an agent, {:.0} bytes a running task \
         ({:.0} launched, {:+.0} with its RUNNING update unacknowledged, {:+.0} once acknowledged); by size:",
        mib(after_acks - base),
        per(base, after_frameworks, s.frameworks),
        per(after_frameworks, after_agents, s.agents),
        per(after_agents, after_acks, s.tasks),
        per(after_agents, after_launch, s.tasks),
        per(after_launch, after_running, s.tasks),
        per(after_running, after_acks, s.tasks),
    );
    breakdown(&sizes, s.tasks);
    println!("an agent, by size:");
    print_sizes(agent_sizes, s.agents, "an agent");
    println!(
        "cpu: launch {:.2} us a task, RUNNING update {:.2} us, acknowledgement {:.2} us",
        launched_in.as_secs_f64() * 1e6 / s.tasks as f64,
        updated_in.as_secs_f64() * 1e6 / s.tasks as f64,
        acked_in.as_secs_f64() * 1e6 / s.tasks as f64,
    );
    let before = counting::live();
    let registry = c.follower.clone();
    println!(
        "memory: a follower's registry {:.1} MiB",
        mib(counting::live() - before)
    );

    // The failover: the old leader gone, a new one from the registry, and
    // each agent's re-registration as it sends it.
    drop(c);
    let mut reports: Vec<Vec<v1::RunningTask>> = (0..s.agents).map(|_| Vec::new()).collect();
    for t in &running {
        let (agent, fw) = (&agents[t.agent as usize], &frameworks[t.framework as usize]);
        let mut info = task_info(t.task, agent);
        info.allocation_role = "*".into();
        reports[t.agent as usize].push(v1::RunningTask {
            task: Some(info),
            framework_id: fw.to_string(),
            state: v1::TaskState::TaskRunning as i32,
            end_unacknowledged: false,
            launched_at: t.launched_at,
            statuses: vec![running_status(t, agent, fw)],
        });
    }
    let messages: Vec<Vec<u8>> = reports
        .into_iter()
        .enumerate()
        .map(|(i, tasks)| {
            v1::AgentMessage {
                message: Some(v1::agent_message::Message::Reregister(v1::Reregister {
                    agent_id: agents[i].to_string(),
                    agent: Some(agent_info(i)),
                    tasks,
                    tasks_complete: true,
                    executors: Vec::new(),
                })),
            }
            .encode_to_vec()
        })
        .collect();
    let wire: usize = messages.iter().map(Vec::len).sum();
    let started = Instant::now();
    let before = counting::live();
    let mut c = Cluster {
        leader: Master::recover(cfg(), registry, now),
        follower: Registry::default(),
        now,
    };
    let recovered_in = started.elapsed();
    let recovered = counting::live();
    let sizes = counting::by_size();
    let started = Instant::now();
    let mut decoding = Duration::ZERO;
    for (i, bytes) in messages.iter().enumerate() {
        let t = Instant::now();
        let msg = v1::AgentMessage::decode(bytes.as_slice()).expect("decode");
        let h = hello(msg).expect("valid re-registration");
        decoding += t.elapsed();
        assert!(matches!(h, AgentHello::Reregister { .. }));
        c.leader
            .agent_attach(AGENT_CONNS + i as ConnId, h, None, now)
            .expect("re-register");
        c.drain();
    }
    let reregistered_in = started.elapsed();
    let after_rereg = counting::live();
    let started = Instant::now();
    for (i, fid) in frameworks.iter().enumerate() {
        c.leader
            .subscribe(1 + i as ConnId, framework_info(i), Some(fid.clone()), Vec::new(), now)
            .expect("resubscribe");
    }
    c.drain();
    c.leader.allocate(now);
    let offered = c
        .drain()
        .iter()
        .filter(|e| matches!(e, Effect::ToFramework(_, ev) if matches!(ev.event, Some(v1::event::Event::Offers(_)))))
        .count();
    let offered_in = started.elapsed();
    println!(
        "failover: the registry recovered in {:.3} s; {} re-registrations ({:.1} MiB on the wire) admitted in {:.2} s \
         ({:.1} us an agent, {:.2} us a task; decoding and validation {:.2} s of it); \
         frameworks back and offered ({offered} offer events) {:.3} s later",
        recovered_in.as_secs_f64(),
        s.agents,
        mib(wire as isize),
        reregistered_in.as_secs_f64(),
        reregistered_in.as_secs_f64() * 1e6 / s.agents as f64,
        reregistered_in.as_secs_f64() * 1e6 / s.tasks as f64,
        decoding.as_secs_f64(),
        offered_in.as_secs_f64(),
    );
    println!(
        "memory: new leader {:.1} MiB once every agent is back: {:.0} bytes a re-registered task; by size:",
        mib(after_rereg - before),
        per(recovered, after_rereg, s.tasks),
    );
    breakdown(&sizes, s.tasks);
}
