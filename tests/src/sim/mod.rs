//! `mezzo-sim`'s engine: simulated agents that speak the real agent
//! protocol to unmodified masters (TLS, joined credentials, real Raft),
//! many of them multiplexed over a few HTTP/2 connections, and frameworks
//! on the public SDK that keep them busy. Nothing in the master knows it
//! is simulated. Issue 17: the short version runs in the test suite
//! (`tests/tests/scale.rs`), the big ones from `scripts/bench-scale`.
//!
//! ```text
//!  group (one joined agent credential, one HTTP/2 connection, follows the leader)
//!   ├── agent 0: Attach stream ── Register/Reregister, heartbeats, updates ──▶ master
//!   ├── agent 1 …                ◀── Registered, RunTask, KillTask, acks ──
//!   └── agent ~100
//! ```

mod agent;
pub mod frameworks;
mod group;
mod stats;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use mezzo_proto::resources::Resources;
use mezzo_proto::security::Transport;
use mezzo_proto::v1;

pub use agent::Behaviour;
pub use stats::Stats;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct AgentsSpec {
    /// Agents in all, spread evenly over the credentials given.
    pub agents: usize,
    /// Each agent's resources.
    pub resources: Resources,
    /// Attributes of agent `i`: `rack=r{i%racks}`.
    pub racks: usize,
    pub behaviour: Behaviour,
}

impl Default for AgentsSpec {
    fn default() -> Self {
        AgentsSpec {
            agents: 100,
            resources: Resources::parse("cpus:8;mem:16384;disk:65536").unwrap_or_default(),
            racks: 40,
            behaviour: Behaviour {
                task_time: Some(Duration::from_secs(5)),
                // The real agent's defaults.
                resend: Duration::from_secs(10),
                resend_max: Duration::from_secs(600),
            },
        }
    }
}

/// The running agents. Dropping it leaves them running; [`Agents::stop`]
/// ends them.
#[derive(Debug)]
pub struct Agents {
    stats: Arc<Stats>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    cut: tokio::sync::watch::Sender<usize>,
}

impl Agents {
    /// Starts `spec.agents` agents against `masters`, one connection
    /// group per credential in `credentials` (joined agent principals:
    /// the master binds each agent id to the principal that registered it).
    pub fn start(masters: Vec<String>, credentials: Vec<Transport>, spec: &AgentsSpec) -> Agents {
        let stats = Arc::new(Stats::new(spec.agents));
        let behaviour = Arc::new(spec.behaviour.clone());
        let groups: Vec<group::Group> = credentials
            .into_iter()
            .map(|t| group::Group::start(masters.clone(), t))
            .collect();
        let mut tasks = Vec::with_capacity(spec.agents);
        let cut = tokio::sync::watch::Sender::new(0);
        for i in 0..spec.agents {
            let info = v1::AgentInfo {
                hostname: hostname(i),
                resources: spec.resources.to_proto(),
                attributes: vec![v1::Attribute {
                    name: "rack".into(),
                    value: format!("r{}", i % spec.racks.max(1)),
                }],
                http_address: String::new(),
            };
            let group = groups[i % groups.len()].clone();
            let agent = agent::Agent::new(i, info, group, stats.clone(), behaviour.clone(), cut.subscribe());
            tasks.push(tokio::spawn(agent.run()));
        }
        Agents { stats, tasks, cut }
    }

    /// Cuts every `n`-th agent (index 0, n, 2n, …) off from the masters,
    /// as a partitioned rack: their streams close and they stay away,
    /// keeping their tasks, until [`Agents::heal`]; then they re-register
    /// with them. At most one partition at a time.
    pub fn partition(&self, n: usize) {
        self.cut.send_replace(n);
    }

    /// Ends the partition.
    pub fn heal(&self) {
        self.cut.send_replace(0);
    }

    /// What the agents did so far.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Ends every agent's session (their streams close).
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Waits until `done` holds, looking every 20 ms; answers how long it
/// took, or fails naming `what` after `limit`.
pub async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let start = tokio::time::Instant::now();
    while !done() {
        anyhow::ensure!(start.elapsed() < limit, "{what}: not within {limit:?}");
        // Often enough for the seconds it measures, rarely enough that
        // looking at 40,000 agents costs the simulator next to nothing.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(start.elapsed())
}

/// Polls `/api/v1/overview` on the leader at `addr` every 100 ms until
/// `done` holds for its count of unreachable agents; answers that
/// overview and how long it took, or fails naming `what` after `limit`.
pub async fn until_unreachable(
    c: &crate::Cluster,
    addr: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(u64) -> bool,
) -> anyhow::Result<(serde_json::Value, Duration)> {
    let start = tokio::time::Instant::now();
    loop {
        let o = c.get(addr, "/api/v1/overview").await?;
        if done(o["agents_by_status"]["unreachable"].as_u64().unwrap_or(0)) {
            return Ok((o, start.elapsed()));
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}: {}",
            o["agents_by_status"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Agent `i`'s host name: an address on loopback, which resolves
/// without DNS (the master looks every agent's host name up).
pub fn hostname(i: usize) -> String {
    let n = i + 1;
    format!("127.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}
