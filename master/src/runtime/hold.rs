//! Launches wait while the owner task is behind on what it was sent.
//!
//! A leader's work for a task does not end with its launch: two status
//! updates come back from the agent, two acknowledgements from the
//! framework. On a saturated leader (a simulated load of 400,000 tasks on
//! two cores) the launches outran that work: the queue stayed full, the
//! updates waited upstream for more than the agents' 10 s retry, every one
//! of them was sent again, and the leader spent tens of seconds after the
//! load on the resends. So while the queue is long, accepts are held back
//! (and offers, see `Runtime::run`) and the updates and acknowledgements
//! behind them go first; and so are the accepts of a framework whose
//! acknowledgements lag (lately over [`ACK_LAG`] on average: it is behind
//! on its updates, or the leader on its acknowledgements), which would
//! only add to them. The accepts follow once the queue is short and the
//! framework keeps up again, or after [`MAX_HOLD`] at the latest. A
//! framework's calls keep their order: once one of its accepts waits, its
//! later calls wait behind it, except acknowledgements and declines, which
//! only concern what it already has.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use mezzo_proto::ids::FrameworkId;

use super::{Call, Command};

/// Commands waiting for the owner from which it counts as behind.
pub(super) const BEHIND_AT: usize = 2048;
/// ...and from which down it has caught up again.
pub(super) const CAUGHT_UP_AT: usize = 256;
/// The longest an accept waits: well within the agents' first retry of
/// an update (10 s) and an offer's lifetime (30 s).
pub(super) const MAX_HOLD: Duration = Duration::from_secs(2);
/// A framework whose acknowledgements took longer than this lately
/// (while some are awaited) lags.
pub(super) const ACK_LAG: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub(super) struct Held {
    calls: VecDeque<(Instant, Command)>,
    /// Calls waiting, by framework.
    waiting: HashMap<FrameworkId, usize>,
    behind: bool,
}

impl Held {
    /// Notes how many commands wait for the owner: behind from
    /// [`BEHIND_AT`] until down to [`CAUGHT_UP_AT`].
    pub(super) fn queued(&mut self, n: usize) {
        self.behind = if self.behind { n > CAUGHT_UP_AT } else { n >= BEHIND_AT };
    }

    pub(super) fn behind(&self) -> bool {
        self.behind
    }

    /// Takes `cmd` if it has to wait; gives it back to be served now if
    /// not. `lagging`: whether a framework's acknowledgements lag.
    pub(super) fn hold(
        &mut self,
        cmd: Command,
        now: Instant,
        lagging: impl Fn(&FrameworkId) -> bool,
    ) -> Option<Command> {
        let Command::Call { framework, call, .. } = &cmd else {
            return Some(cmd);
        };
        let queued = self.waiting.contains_key(framework);
        let wait = match call {
            Call::Acknowledge(_) | Call::Decline { .. } => false,
            Call::Accept { .. } => self.behind || queued || lagging(framework),
            _ => queued,
        };
        if !wait {
            return Some(cmd);
        }
        *self.waiting.entry(framework.clone()).or_insert(0) += 1;
        self.calls.push_back((now, cmd));
        None
    }

    /// The calls to serve now, each framework's in order: those that
    /// waited [`MAX_HOLD`], and once the owner has caught up those of the
    /// frameworks whose acknowledgements do not lag.
    pub(super) fn release(&mut self, now: Instant, lagging: impl Fn(&FrameworkId) -> bool) -> Vec<Command> {
        if self.calls.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut kept = VecDeque::new();
        let mut stays: HashMap<FrameworkId, ()> = HashMap::new();
        for (since, cmd) in self.calls.drain(..) {
            let Command::Call { framework, .. } = &cmd else {
                out.push(cmd);
                continue;
            };
            let due = now.duration_since(since) >= MAX_HOLD;
            let free = !self.behind && !lagging(framework);
            if stays.contains_key(framework) || !(due || free) {
                stays.insert(framework.clone(), ());
                kept.push_back((since, cmd));
                continue;
            }
            if let Some(n) = self.waiting.get_mut(framework) {
                *n -= 1;
                if *n == 0 {
                    self.waiting.remove(framework);
                }
            }
            out.push(cmd);
        }
        self.calls = kept;
        out
    }

    /// Every call still waiting (a leadership ends: they are refused).
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Command> + '_ {
        self.waiting.clear();
        self.calls.drain(..).map(|(_, cmd)| cmd)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.calls.len()
    }
}

#[cfg(test)]
mod tests {
    use mezzo_proto::ids::{AgentId, TaskId};
    use tokio::sync::oneshot;

    use super::*;
    use crate::auth::Caller;

    fn call(framework: &str, call: Call) -> Command {
        Command::Call {
            framework: FrameworkId::parse(framework).expect("id"),
            call,
            caller: Caller::Insecure,
            reply: oneshot::channel().0,
        }
    }

    fn accept(framework: &str) -> Command {
        call(
            framework,
            Call::Accept {
                offers: Vec::new(),
                operations: Vec::new(),
                refuse: None,
            },
        )
    }

    fn kill(framework: &str) -> Command {
        let task = TaskId::parse("t").expect("id");
        call(framework, Call::Kill { task, grace: None })
    }

    fn ack(framework: &str) -> Command {
        let agent = AgentId::parse("a").expect("id");
        let task = TaskId::parse("t").expect("id");
        call(framework, Call::Acknowledge(vec![(agent, task, vec![0; 16])]))
    }

    /// No framework's acknowledgements lag.
    fn no(_: &FrameworkId) -> bool {
        false
    }

    /// What a command is, for comparing lists.
    fn kind(cmd: &Command) -> String {
        match cmd {
            Command::Call { framework, call, .. } => {
                let what = match call {
                    Call::Accept { .. } => "accept",
                    Call::Kill { .. } => "kill",
                    Call::Acknowledge(_) => "ack",
                    _ => "other",
                };
                format!("{framework}:{what}")
            }
            Command::AgentHeartbeat(_) => "heartbeat".into(),
            _ => "other".into(),
        }
    }

    #[test]
    fn accepts_wait_while_behind_with_their_framework_s_later_calls() {
        let mut held = Held::default();
        let t0 = Instant::now();
        held.queued(BEHIND_AT - 1);
        assert!(!held.behind());
        assert!(held.hold(accept("f"), t0, no).is_some(), "not behind: served");
        held.queued(BEHIND_AT);
        assert!(held.behind());
        assert!(held.hold(accept("f"), t0, no).is_none(), "behind: held");
        assert!(held.hold(kill("f"), t0, no).is_none(), "after its framework's accept");
        let passed = [ack("f"), kill("g"), Command::AgentHeartbeat(1)];
        for cmd in passed {
            assert!(
                held.hold(cmd, t0, no).is_some(),
                "acknowledgements, other frameworks, agents pass"
            );
        }
        assert!(held.hold(accept("g"), t0, no).is_none());
        assert_eq!(held.len(), 3);
        assert!(held.release(t0 + MAX_HOLD / 2, no).is_empty(), "still behind");
        // Down to CAUGHT_UP_AT is still behind; below it, caught up.
        held.queued(CAUGHT_UP_AT + 1);
        assert!(held.release(t0 + MAX_HOLD / 2, no).is_empty());
        held.queued(CAUGHT_UP_AT);
        let out: Vec<_> = held.release(t0 + MAX_HOLD / 2, no).iter().map(kind).collect();
        assert_eq!(out, ["f:accept", "f:kill", "g:accept"], "in order");
        assert!(held.hold(kill("f"), t0, no).is_some(), "nothing of f waits any more");
    }

    #[test]
    fn a_lagging_framework_s_accepts_wait_until_it_keeps_up() {
        let mut held = Held::default();
        let t0 = Instant::now();
        let f_lags = |f: &FrameworkId| f.as_str() == "f";
        assert!(held.hold(accept("f"), t0, f_lags).is_none(), "f lags: held");
        assert!(held.hold(accept("g"), t0, f_lags).is_some(), "g does not");
        assert!(held.release(t0, f_lags).is_empty(), "f still lags");
        let out: Vec<_> = held.release(t0, no).iter().map(kind).collect();
        assert_eq!(out, ["f:accept"], "f keeps up again");
        assert!(held.hold(accept("f"), t0, f_lags).is_none());
        assert_eq!(held.release(t0 + MAX_HOLD, f_lags).len(), 1, "or waited long enough");
    }

    #[test]
    fn an_accept_waits_at_most_max_hold() {
        let mut held = Held::default();
        let t0 = Instant::now();
        held.queued(BEHIND_AT * 2);
        assert!(held.hold(accept("f"), t0, no).is_none());
        assert!(held.hold(accept("g"), t0 + Duration::from_secs(1), no).is_none());
        assert!(held.release(t0 + MAX_HOLD - Duration::from_millis(1), no).is_empty());
        let out: Vec<_> = held.release(t0 + MAX_HOLD, no).iter().map(kind).collect();
        assert_eq!(out, ["f:accept"], "the one that waited long enough");
        assert!(held.hold(accept("f"), t0 + MAX_HOLD, no).is_none(), "still behind");
        assert_eq!(held.drain().count(), 2, "the rest, for a lost leadership");
        assert!(held.hold(kill("g"), t0, no).is_some(), "nothing waits after a drain");
    }
}
