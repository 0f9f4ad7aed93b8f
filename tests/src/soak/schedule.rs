//! The soak's fault schedule: drawn from a seed before the run, printed,
//! and replayed exactly by the same seed and duration.
//!
//! The generator is a SplitMix64 written out here rather than a `rand`
//! generator, so that a seed printed today replays the same schedule after
//! any dependency upgrade.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and fixed forever.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (for the small ranges used here the modulo bias
    /// is negligible).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A duration uniform in `lo..=hi`, in whole milliseconds.
    pub fn millis(&mut self, lo: Duration, hi: Duration) -> Duration {
        Duration::from_millis(self.range(lo.as_millis() as u64, hi.as_millis() as u64))
    }
}

/// One fault. Masters are named by their role when the fault fires (the
/// leader then), so a replay hits the same roles even if other masters
/// happen to lead.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL the leader; restart it after `down`.
    KillLeader { down: Duration },
    /// SIGKILL a follower; restart it after `down`.
    KillFollower { down: Duration },
    /// SIGKILL agent `agent`; restart it after `down` (sometimes longer
    /// than the masters' agent timeout).
    KillAgent { agent: usize, down: Duration },
    /// SIGKILL `mezzo batch serve`; restart it after `down`.
    KillBatch { down: Duration },
    /// SIGKILL `mezzo service serve`; restart it after `down`.
    KillService { down: Duration },
    /// Cut the leader's namespace off the bridge for `cut`, then heal.
    PartitionLeader { cut: Duration },
}

/// Every kind's name, as [`Fault::kind`] gives it.
pub const KINDS: [&str; 6] = [
    "kill_leader",
    "kill_follower",
    "kill_agent",
    "kill_batch",
    "kill_service",
    "partition_leader",
];

impl Fault {
    /// The kind's name, for the figures (`faults injected by kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::KillLeader { .. } => "kill_leader",
            Fault::KillFollower { .. } => "kill_follower",
            Fault::KillAgent { .. } => "kill_agent",
            Fault::KillBatch { .. } => "kill_batch",
            Fault::KillService { .. } => "kill_service",
            Fault::PartitionLeader { .. } => "partition_leader",
        }
    }

    /// How long the fault lasts before its target is restored.
    pub fn length(&self) -> Duration {
        match self {
            Fault::KillLeader { down }
            | Fault::KillFollower { down }
            | Fault::KillAgent { down, .. }
            | Fault::KillBatch { down }
            | Fault::KillService { down } => *down,
            Fault::PartitionLeader { cut } => *cut,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillAgent { agent, down } => write!(f, "kill agent{agent}, restart after {down:?}"),
            Fault::PartitionLeader { cut } => write!(f, "partition the leader for {cut:?}"),
            other => write!(f, "{}, restart after {:?}", other.kind(), other.length()),
        }
    }
}

/// How often each kind is drawn (relative weights; 0 never).
#[derive(Debug, Clone, Serialize)]
pub struct Weights {
    pub kill_leader: u64,
    pub kill_follower: u64,
    pub kill_agent: u64,
    pub kill_batch: u64,
    pub kill_service: u64,
    pub partition_leader: u64,
}

impl Default for Weights {
    /// The leader most often, as the issue asks.
    fn default() -> Self {
        Weights {
            kill_leader: 3,
            kill_follower: 1,
            kill_agent: 2,
            kill_batch: 1,
            kill_service: 1,
            partition_leader: 2,
        }
    }
}

/// A fault at an offset from the start of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub at: Duration,
    #[serde(flatten)]
    pub fault: Fault,
}

/// Draws faults for `duration`: each one starts a gap of `gap` (drawn)
/// after the previous one has been repaired, so faults never overlap and
/// the cluster always has a majority to come back to.
pub fn draw(
    seed: u64,
    duration: Duration,
    agents: usize,
    agent_timeout: Duration,
    gap: (Duration, Duration),
    w: &Weights,
) -> Vec<Planned> {
    let mut rng = Rng::new(seed);
    let kinds = [
        w.kill_leader,
        w.kill_follower,
        w.kill_agent,
        w.kill_batch,
        w.kill_service,
        w.partition_leader,
    ];
    let total: u64 = kinds.iter().sum();
    let mut out = Vec::new();
    let mut t = rng.millis(gap.0, gap.1);
    while total > 0 && t < duration {
        let mut pick = rng.range(0, total - 1);
        let kind = kinds
            .iter()
            .position(|k| {
                if pick < *k {
                    true
                } else {
                    pick -= k;
                    false
                }
            })
            .unwrap_or(0);
        let short = (Duration::ZERO, Duration::from_secs(3));
        let fault = match kind {
            0 => Fault::KillLeader {
                down: rng.millis(short.0, short.1),
            },
            1 => Fault::KillFollower {
                down: rng.millis(short.0, short.1),
            },
            2 => {
                let agent = rng.range(0, agents.saturating_sub(1) as u64) as usize;
                // One agent restart in four outlasts the agent timeout.
                let down = if rng.range(0, 3) == 0 {
                    rng.millis(agent_timeout + Duration::from_secs(1), agent_timeout * 2)
                } else {
                    rng.millis(Duration::ZERO, Duration::from_secs(5).min(agent_timeout))
                };
                Fault::KillAgent { agent, down }
            }
            3 => Fault::KillBatch {
                down: rng.millis(short.0, short.1),
            },
            4 => Fault::KillService {
                down: rng.millis(short.0, short.1),
            },
            _ => Fault::PartitionLeader {
                cut: rng.millis(Duration::from_secs(2), Duration::from_secs(8)),
            },
        };
        let length = fault.length();
        out.push(Planned { at: t, fault });
        t += length + rng.millis(gap.0, gap.1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(seed: u64) -> Vec<Planned> {
        let gap = (Duration::from_secs(2), Duration::from_secs(6));
        draw(
            seed,
            Duration::from_secs(600),
            3,
            Duration::from_secs(6),
            gap,
            &Weights::default(),
        )
    }

    #[test]
    fn a_seed_replays_the_same_schedule() {
        let a: Vec<String> = plan(7).iter().map(|p| format!("{:?} {}", p.at, p.fault)).collect();
        let b: Vec<String> = plan(7).iter().map(|p| format!("{:?} {}", p.at, p.fault)).collect();
        assert_eq!(a, b);
        assert_ne!(
            a,
            plan(8)
                .iter()
                .map(|p| format!("{:?} {}", p.at, p.fault))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn faults_do_not_overlap_and_every_kind_is_drawn() {
        let p = plan(1);
        for w in p.windows(2) {
            assert!(w[0].at + w[0].fault.length() < w[1].at, "{w:?}");
        }
        for kind in KINDS {
            assert!(p.iter().any(|f| f.fault.kind() == kind), "{kind} never drawn");
        }
        let leader = p.iter().filter(|f| f.fault.kind() == "kill_leader").count();
        let follower = p.iter().filter(|f| f.fault.kind() == "kill_follower").count();
        assert!(leader > follower, "the leader is killed most: {leader} vs {follower}");
    }

    #[test]
    fn a_zero_weight_is_never_drawn() {
        let w = Weights {
            kill_agent: 0,
            ..Default::default()
        };
        let gap = (Duration::from_secs(1), Duration::from_secs(2));
        let p = draw(3, Duration::from_secs(300), 3, Duration::from_secs(6), gap, &w);
        assert!(p.iter().all(|f| f.fault.kind() != "kill_agent"));
    }
}
