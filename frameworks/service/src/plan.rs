//! The deployment logic, with no I/O: given the desired state of one
//! service and what its instances are doing, which instances to start and
//! which to stop, when a rolling update is complete, and when it rolls
//! back. The service's reconcile (`owner/reconcile.rs`, called by the
//! SDK's controller) carries out its answer; tests call it with plain
//! values.
//!
//! One rule covers the steady state, scaling and rolling updates: every
//! instance not of the target version is "old"; old instances are stopped
//! only while the healthy instances left stay at or above
//! `desired - max_unavailable`, and new ones are started while the live
//! instances stay at or below `desired + max_surge`. An instance on an
//! agent an operator drains is "old" too, whatever its version: it is
//! replaced elsewhere first, within the same limits, so that a drain never
//! takes more instances than an update would.

use std::time::Duration;

use mezzo_sdk::Backoff;
use serde::{Deserialize, Serialize};

use crate::spec::RestartSpec;

/// Which version runs, and whether the service is moving between two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The version every instance should run.
    pub target: u64,
    /// While a rolling update runs: the version being replaced.
    pub from: Option<u64>,
    /// The version before `target` once an update is complete (what
    /// `rollback` goes back to).
    pub previous: Option<u64>,
    /// True while going back to `target` after a failed update.
    pub rolling_back: bool,
}

impl Deployment {
    /// A new service at version `v`.
    pub fn new(v: u64) -> Deployment {
        Deployment {
            target: v,
            from: None,
            previous: None,
            rolling_back: false,
        }
    }

    /// Starts a rolling update to version `v`. An update already running
    /// is replaced: its target becomes the version being replaced.
    pub fn update_to(&mut self, v: u64) {
        self.from = Some(self.target);
        self.target = v;
        self.rolling_back = false;
    }

    /// Goes back to the previous version (or to the one being replaced).
    /// `None` when there is nothing to go back to.
    pub fn roll_back(&mut self) -> Option<u64> {
        let back = self.from.or(self.previous)?;
        self.from = Some(self.target);
        self.target = back;
        self.rolling_back = true;
        Some(back)
    }

    /// Versions that instances may still run, to be kept in the record.
    pub fn versions_in_use(&self) -> Vec<u64> {
        let mut v = vec![self.target];
        v.extend(self.from);
        v.extend(self.previous);
        v
    }

    fn complete(&mut self) {
        if let Some(from) = self.from.take() {
            self.previous = Some(from);
        }
        self.rolling_back = false;
    }
}

/// What an instance is doing, as the planner needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Launched (or about to be): no update yet.
    Staging,
    /// The agent is starting it.
    Starting,
    /// Its command runs.
    Running,
    /// Known from the record after a restart; the master has not answered.
    Unknown,
    /// We asked for it to be killed; it no longer counts.
    Killing,
}

/// The framework's verdict on an instance's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Not yet checked (or within its grace period).
    Unknown,
    /// Serving.
    Healthy,
    /// Failed its checks too often: it is replaced.
    Unhealthy,
}

/// One instance, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inst {
    /// Task id.
    pub id: String,
    /// Version it runs.
    pub version: u64,
    /// Phase.
    pub phase: Phase,
    /// Health.
    pub health: Health,
    /// Launch order (higher is newer), to stop the newest first.
    pub seq: u64,
    /// Its agent is being drained: it is to be replaced elsewhere.
    pub moving: bool,
}

/// Rolling-update limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Extra instances allowed during an update.
    pub max_surge: u32,
    /// Healthy instances that may be missing during an update.
    pub max_unavailable: u32,
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Instances of the target version to start.
    pub launch: u32,
    /// Instances to stop.
    pub kill: Vec<String>,
    /// The update just finished (every instance runs the target, enough
    /// of them healthy).
    pub completed: bool,
}

/// The next step for one service. `may_launch` is false while the
/// restart backoff runs.
pub fn step(d: &mut Deployment, desired: u32, limits: Limits, instances: &[Inst], may_launch: bool) -> Step {
    let desired = desired as usize;
    let mut out = Step::default();
    let mut live: Vec<&Inst> = instances.iter().filter(|i| i.phase != Phase::Killing).collect();

    // Unhealthy instances go at once: stopping them costs no healthy one.
    for i in live.iter().filter(|i| i.health == Health::Unhealthy) {
        out.kill.push(i.id.clone());
    }
    live.retain(|i| i.health != Health::Unhealthy);

    let (mut new, mut old): (Vec<&Inst>, Vec<&Inst>) =
        live.into_iter().partition(|i| i.version == d.target && !i.moving);
    // Least useful first: not healthy before healthy, then newest first.
    let order = |a: &&Inst, b: &&Inst| {
        (a.health == Health::Healthy, std::cmp::Reverse(a.seq))
            .cmp(&(b.health == Health::Healthy, std::cmp::Reverse(b.seq)))
    };
    new.sort_by(order);
    old.sort_by(order);

    // Scaling down: extras of the target version go regardless of health.
    while new.len() > desired {
        out.kill.push(new.remove(0).id.clone());
    }

    // Old instances go while enough healthy ones are left. Adopted
    // instances whose state is not known yet are kept until it is.
    let mut healthy = new.iter().chain(&old).filter(|i| i.health == Health::Healthy).count();
    let floor = desired.saturating_sub(limits.max_unavailable as usize);
    let mut kept_old = Vec::new();
    for i in old {
        let after = healthy - usize::from(i.health == Health::Healthy);
        if i.phase != Phase::Unknown && after >= floor {
            healthy = after;
            out.kill.push(i.id.clone());
        } else {
            kept_old.push(i);
        }
    }

    let total = new.len() + kept_old.len();
    let room = (desired + limits.max_surge as usize).saturating_sub(total);
    let missing = desired.saturating_sub(new.len());
    if may_launch {
        out.launch = missing.min(room) as u32;
    }

    // Complete once no other version is left at all, stopping ones
    // included (so "stable" means every instance runs the target).
    let new_healthy = new.iter().filter(|i| i.health == Health::Healthy).count();
    let others = instances.iter().any(|i| i.version != d.target);
    if d.from.is_some() && !others && new_healthy >= desired {
        d.complete();
        out.completed = true;
    }
    out
}

/// What a failure of an instance of `version` did to the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changes; the instance is replaced.
    Replace,
    /// The update failed: going back from `from` to `to`.
    RolledBack {
        /// The failed version.
        from: u64,
        /// The version restored.
        to: u64,
    },
}

/// An instance of `version` failed (exited, or failed its health checks):
/// during an update to that version, with `auto_rollback`, the update is
/// abandoned for the version it replaces.
pub fn failed(d: &mut Deployment, version: u64, auto_rollback: bool) -> Verdict {
    if !auto_rollback || d.rolling_back || d.from.is_none() || version != d.target {
        return Verdict::Replace;
    }
    let from = d.target;
    match d.roll_back() {
        Some(to) => Verdict::RolledBack { from, to },
        None => Verdict::Replace,
    }
}

/// The hold on launches after failures: each failure holds them for the
/// next delay of the service's restart backoff; a healthy instance starts
/// the backoff over.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartHold {
    delay: Backoff,
    /// No launch before this instant (seconds on the owner's clock).
    until: Option<Duration>,
}

impl RestartHold {
    /// No hold pending.
    pub fn new(spec: &RestartSpec) -> RestartHold {
        RestartHold {
            delay: Self::delays(spec),
            until: None,
        }
    }

    fn delays(spec: &RestartSpec) -> Backoff {
        Backoff::new(spec.backoff, spec.max_backoff).factor(spec.factor)
    }

    /// A failure at `now`: launches wait for the current delay, which then
    /// grows.
    pub fn failure(&mut self, now: Duration) {
        self.until = Some(now + self.delay.next_delay());
    }

    /// An instance became healthy: the next failure waits the first delay
    /// of `spec` (the settings of the version now running).
    pub fn reset(&mut self, spec: &RestartSpec) {
        self.delay = Self::delays(spec);
    }

    /// How long launches are still held at `now`, if they are.
    pub fn wait(&self, now: Duration) -> Option<Duration> {
        self.until.filter(|u| *u > now).map(|u| u - now)
    }

    /// Whether launching is allowed at `now`.
    pub fn may_launch(&self, now: Duration) -> bool {
        self.until.is_none_or(|u| now >= u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, version: u64, phase: Phase, health: Health, seq: u64) -> Inst {
        Inst {
            id: id.into(),
            version,
            phase,
            health,
            seq,
            moving: false,
        }
    }

    fn healthy(n: usize, version: u64, from: u64) -> Vec<Inst> {
        (0..n)
            .map(|k| {
                inst(
                    &format!("v{version}-{k}"),
                    version,
                    Phase::Running,
                    Health::Healthy,
                    from + k as u64,
                )
            })
            .collect()
    }

    const SURGE1: Limits = Limits {
        max_surge: 1,
        max_unavailable: 0,
    };

    #[test]
    fn steady_state_fills_up_and_replaces_unhealthy() {
        let mut d = Deployment::new(1);
        let s = step(&mut d, 5, SURGE1, &[], true);
        assert_eq!(s.launch, 5);
        let mut is = healthy(4, 1, 0);
        is.push(inst("bad", 1, Phase::Running, Health::Unhealthy, 9));
        let s = step(&mut d, 5, SURGE1, &is, true);
        assert_eq!(s.kill, vec!["bad".to_owned()]);
        assert_eq!(s.launch, 1, "the unhealthy one is replaced at once");
        assert!(!s.completed);
        let s = step(&mut d, 5, SURGE1, &is, false);
        assert_eq!(s.launch, 0, "backoff holds launches");
    }

    #[test]
    fn scale_down_stops_the_least_useful_first() {
        let mut d = Deployment::new(1);
        let mut is = healthy(3, 1, 0);
        is.push(inst("starting", 1, Phase::Starting, Health::Unknown, 1));
        let s = step(&mut d, 2, SURGE1, &is, true);
        assert_eq!(s.kill, vec!["starting".to_owned(), "v1-2".to_owned()]);
        assert_eq!(s.launch, 0);
    }

    /// Simulates a whole rolling update, making each launched instance
    /// healthy at the next step, and checks the limits at every step.
    /// A drain of the agent holding every instance: each is replaced
    /// elsewhere before it is stopped, never dropping below the floor, and
    /// nothing else changes once none is left there.
    #[test]
    fn instances_on_a_draining_agent_are_replaced_first() {
        for limits in [
            SURGE1,
            Limits {
                max_surge: 0,
                max_unavailable: 1,
            },
            Limits {
                max_surge: 2,
                max_unavailable: 1,
            },
        ] {
            let desired = 4;
            let mut d = Deployment::new(1);
            let mut is = healthy(desired, 1, 0);
            for i in &mut is {
                i.moving = true;
            }
            let mut seq = 100;
            let mut done = false;
            for round in 0..100 {
                let s = step(&mut d, desired as u32, limits, &is, true);
                assert!(!s.completed, "no update runs");
                is.retain(|i| !s.kill.contains(&i.id));
                let healthy = is.iter().filter(|i| i.health == Health::Healthy).count();
                assert!(
                    healthy + limits.max_unavailable as usize >= desired,
                    "{limits:?} round {round}: {healthy} healthy"
                );
                assert!(
                    is.len() <= desired + limits.max_surge as usize,
                    "{limits:?} round {round}: {} live",
                    is.len()
                );
                if is.iter().all(|i| !i.moving) && is.len() == desired && s.launch == 0 {
                    done = true;
                    break;
                }
                for i in &mut is {
                    i.health = Health::Healthy;
                }
                for _ in 0..s.launch {
                    seq += 1;
                    is.push(inst(&format!("n{seq}"), 1, Phase::Staging, Health::Unknown, seq));
                }
            }
            assert!(done, "{limits:?}: the drained instances were never all replaced");
            assert_eq!(d, Deployment::new(1), "the deployment is untouched");
            // Once moved, nothing more happens.
            let s = step(&mut d, desired as u32, limits, &is, true);
            assert_eq!(s, Step::default());
        }
    }

    /// Where no replacement can be placed, a drain stops instances only
    /// down to the floor; the rest stay until the drain's deadline.
    #[test]
    fn a_drain_with_nowhere_to_go_keeps_the_floor() {
        let mut d = Deployment::new(1);
        let mut is = healthy(3, 1, 0);
        for i in &mut is {
            i.moving = true;
        }
        let limits = Limits {
            max_surge: 1,
            max_unavailable: 1,
        };
        let s = step(&mut d, 3, limits, &is, true);
        assert_eq!(s.kill.len(), 1, "{s:?}");
        is.retain(|i| !s.kill.contains(&i.id));
        // The replacements never start (no offers): nothing more is stopped.
        is.push(inst("n1", 1, Phase::Staging, Health::Unknown, 10));
        is.push(inst("n2", 1, Phase::Staging, Health::Unknown, 11));
        let s = step(&mut d, 3, limits, &is, true);
        assert!(s.kill.is_empty(), "{s:?}");
    }

    fn roll(limits: Limits, desired: usize) -> usize {
        let mut d = Deployment::new(1);
        let mut is = healthy(desired, 1, 0);
        d.update_to(2);
        let mut seq = 100;
        for round in 0..100 {
            let s = step(&mut d, desired as u32, limits, &is, true);
            is.retain(|i| !s.kill.contains(&i.id));
            if s.completed {
                assert!(is.iter().all(|i| i.version == 2), "round {round}: old ones left");
                return round;
            }
            let healthy = is.iter().filter(|i| i.health == Health::Healthy).count();
            assert!(
                healthy + limits.max_unavailable as usize >= desired,
                "round {round}: {healthy} healthy"
            );
            for i in &mut is {
                i.health = Health::Healthy;
            }
            for _ in 0..s.launch {
                seq += 1;
                is.push(inst(&format!("n{seq}"), 2, Phase::Staging, Health::Unknown, seq));
            }
            assert!(
                is.len() <= desired + limits.max_surge as usize,
                "round {round}: {} live",
                is.len()
            );
        }
        panic!("the update never completed")
    }

    #[test]
    fn rolling_updates_respect_surge_and_unavailability() {
        for (surge, unavailable) in [(1, 0), (0, 1), (2, 1), (5, 0), (0, 5)] {
            let limits = Limits {
                max_surge: surge,
                max_unavailable: unavailable,
            };
            roll(limits, 5);
        }
        // More room goes faster.
        let slow = roll(SURGE1, 5);
        let fast = roll(
            Limits {
                max_surge: 5,
                max_unavailable: 0,
            },
            5,
        );
        assert!(fast < slow, "{fast} rounds with surge 5, {slow} with 1");
    }

    #[test]
    fn a_failing_new_version_rolls_back_and_old_instances_stay() {
        let mut d = Deployment::new(1);
        let mut is = healthy(5, 1, 0);
        d.update_to(2);
        let s = step(&mut d, 5, SURGE1, &is, true);
        assert_eq!((s.launch, s.kill.len()), (1, 0), "surge one, keep every old one");
        is.push(inst("new", 2, Phase::Running, Health::Unhealthy, 50));
        assert_eq!(failed(&mut d, 2, true), Verdict::RolledBack { from: 2, to: 1 });
        assert_eq!((d.target, d.from, d.rolling_back), (1, Some(2), true));
        assert_eq!(failed(&mut d, 1, true), Verdict::Replace, "no ping-pong");
        let s = step(&mut d, 5, SURGE1, &is, true);
        assert_eq!(s.kill, vec!["new".to_owned()]);
        assert!(!s.completed, "not while the failed instance is stopping");
        is.pop();
        let s = step(&mut d, 5, SURGE1, &is, true);
        assert!(s.completed, "all old ones are healthy: back to stable");
        assert_eq!((d.target, d.from, d.previous), (1, None, Some(2)));
    }

    #[test]
    fn without_auto_rollback_failures_are_only_replaced() {
        let mut d = Deployment::new(1);
        d.update_to(2);
        assert_eq!(failed(&mut d, 2, false), Verdict::Replace);
        assert_eq!(failed(&mut d, 1, true), Verdict::Replace, "old versions do not decide");
        assert_eq!(d.target, 2);
    }

    #[test]
    fn manual_rollback_needs_a_previous_version() {
        let mut d = Deployment::new(1);
        assert_eq!(d.roll_back(), None);
        d.update_to(2);
        let _ = step(&mut d, 1, SURGE1, &healthy(1, 2, 0), true);
        assert_eq!(d.previous, Some(1));
        assert_eq!(d.roll_back(), Some(1));
        assert_eq!(d.from, Some(2));
    }

    #[test]
    fn adopted_instances_of_unknown_state_are_not_replaced_yet() {
        let mut d = Deployment::new(1);
        let is: Vec<Inst> = (0..3)
            .map(|k| inst(&format!("a{k}"), 1, Phase::Unknown, Health::Unknown, k))
            .collect();
        let s = step(&mut d, 3, SURGE1, &is, true);
        assert_eq!(s, Step::default(), "no duplicates while reconciling");
    }

    #[test]
    fn backoff_grows_caps_and_resets() {
        let spec = RestartSpec {
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3),
            factor: 2.0,
        };
        let mut b = RestartHold::new(&spec);
        let t = Duration::from_secs(100);
        assert!(b.may_launch(t));
        b.failure(t);
        assert!(!b.may_launch(t + Duration::from_millis(900)));
        assert_eq!(b.wait(t + Duration::from_millis(900)), Some(Duration::from_millis(100)));
        assert!(b.may_launch(t + Duration::from_secs(1)));
        b.failure(t);
        b.failure(t);
        assert!(!b.may_launch(t + Duration::from_millis(2900)), "capped at 3 s");
        assert!(b.may_launch(t + Duration::from_secs(3)));
        b.reset(&spec);
        b.failure(t);
        assert!(b.may_launch(t + Duration::from_secs(1)));
    }
}
