//! What the SDK reports: the subscription, drains, instances found
//! unhealthy or ended, and the failures they reveal.
//! The controller follows the tasks themselves; this is what they mean
//! to a service.

use std::time::Duration;

use mezzo_sdk::controller::Task;
use mezzo_sdk::{Event, TaskState};
use tracing::{info, warn};

use super::Owner;
use super::state::{Svc, is_instance, version_of};
use crate::plan::{self, Health, RestartHold, Verdict};
use crate::record::ServiceRecord;

impl Owner {
    /// What the service itself makes of an event, before the controller
    /// follows it: the framework id is saved, a drain is told in the
    /// events of the services it moves.
    pub(super) fn on_event(&mut self, ev: &Event) {
        match ev {
            Event::Subscribed { framework_id, resumed } => {
                info!(%framework_id, resumed, "subscribed");
                if let Err(e) = crate::save_framework_id(&self.work_dir, framework_id) {
                    warn!("cannot save the framework id: {e}");
                }
            }
            Event::Disconnected { reason } => warn!(%reason, "disconnected from the master; reconnecting"),
            Event::AgentLost { agent_id } => info!(%agent_id, "agent lost"),
            Event::AgentDraining {
                agent_id,
                draining,
                deadline,
            } => self.on_drain(agent_id, *draining, *deadline),
            _ => {}
        }
    }

    /// An agent's drain started or ended: its instances are moved
    /// elsewhere by the planner, within the service's update limits,
    /// before the drain's deadline kills them.
    fn on_drain(&mut self, agent_id: &str, draining: bool, deadline: Option<std::time::SystemTime>) {
        if self.ctl.is_draining(agent_id) == draining {
            return; // told again after a subscription
        }
        info!(agent = %agent_id, draining, "agent drain");
        let names: Vec<String> = self.ctl.desired().map(|(k, _)| k.to_owned()).collect();
        for name in names {
            let tasks = self.ctl.tasks(&name);
            let here: Vec<&Task> = tasks
                .iter()
                .filter(|t| is_instance(t) && t.location.agent_id == agent_id)
                .collect();
            let Some(host) = here.first().map(|t| t.location.hostname.clone()) else {
                continue;
            };
            let what = if draining {
                let by = deadline.map_or(String::new(), |t| {
                    format!(" before {}", humantime::format_rfc3339_seconds(t))
                });
                format!(
                    "agent {host} ({agent_id}) is drained: moving its {} instance(s) elsewhere{by}",
                    here.len()
                )
            } else {
                format!("the drain of agent {host} ({agent_id}) ended")
            };
            info!(service = %name, "{what}");
            self.ctl.modify(&name, |rec| rec.event(what));
        }
    }
}

/// An instance's agent found it unhealthy (its check failed as often in a
/// row as the spec allows): the plan replaces it, and it counts as a
/// failure of its version.
pub(super) fn unhealthy(svc: &mut Svc, rec: &mut ServiceRecord, name: &str, t: &Task, now: Duration) {
    let l = svc.live(&t.id);
    if l.health == Health::Unhealthy {
        return;
    }
    l.health = Health::Unhealthy;
    let why = t.status.as_ref().map_or("", |s| s.message.as_str());
    let what = format!("instance {} failed its health check: {why}", t.id);
    failure(svc, rec, name, version_of(t), &what, true, now);
}

/// An instance ended: say why in the service's events, and count it
/// against its version unless it never started or was stopped by someone
/// else.
pub(super) fn ended(svc: &mut Svc, rec: &mut ServiceRecord, name: &str, t: &Task, now: Duration) {
    svc.forget(&t.id);
    if t.adopted {
        return;
    }
    let id = &t.id;
    let why = match &t.status {
        Some(s) if !s.message.is_empty() => s.message.clone(),
        Some(s) => format!("{:?}", s.reason),
        None => String::new(),
    };
    let end = classify_end(t.state, t.killing);
    match end {
        End::Killed => {}
        End::NeverStarted | End::ByOperator => {
            let what = if end == End::ByOperator {
                format!("instance {id} was stopped by an operator or a drain ({why}); replacing it at once")
            } else {
                format!("instance {id} was dropped before it started ({why}); replacing it at once")
            };
            info!(service = %name, "{what}");
            rec.event(what);
        }
        End::Failure { fault } => {
            let what = format!("instance {id} {}: {why}", t.state.name());
            failure(svc, rec, name, version_of(t), &what, fault, now);
        }
    }
}

/// An instance failed: back off further launches, and (for the new
/// version of an update) maybe roll back.
fn failure(svc: &mut Svc, rec: &mut ServiceRecord, name: &str, version: u64, what: &str, fault: bool, now: Duration) {
    warn!(service = %name, "{what}");
    rec.event(what);
    let Some(spec) = rec.versions.get(&version).cloned() else {
        return;
    };
    svc.backoff.failure(now);
    if fault
        && let Verdict::RolledBack { from, to } = plan::failed(&mut rec.deployment, version, spec.upgrade.auto_rollback)
    {
        let what = format!("version {from} failed; rolling back to version {to}");
        warn!(service = %name, "{what}");
        rec.event(what);
        // The old version is known to work: no need to wait.
        svc.backoff = RestartHold::new(&spec.restart);
    }
}

/// What an instance's end means for its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// We killed it: the plan already replaces or removes it.
    Killed,
    /// It never started (DROPPED): nothing is wrong with its version, and
    /// a replacement launches at once, without backoff.
    NeverStarted,
    /// Killed by someone else (an operator's kill, a drain's deadline) or
    /// its agent marked gone by one: no fault of its own, so it is replaced
    /// at once and never grows the restart backoff.
    ByOperator,
    /// It ended by itself or was lost: replaced after the backoff; a
    /// `fault` (it ran and failed, or exited) also counts against its
    /// version in an update, while a loss with its agent does not.
    Failure { fault: bool },
}

fn classify_end(ended: TaskState, killed_by_us: bool) -> End {
    match ended {
        _ if killed_by_us => End::Killed,
        TaskState::Dropped => End::NeverStarted,
        TaskState::Killed | TaskState::Gone => End::ByOperator,
        TaskState::Failed | TaskState::Finished | TaskState::Error => End::Failure { fault: true },
        _ => End::Failure { fault: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_instance_is_replaced_at_once() {
        for (ended, killed_by_us, end) in [
            (TaskState::Dropped, false, End::NeverStarted),
            (TaskState::Dropped, true, End::Killed),
            (TaskState::Failed, false, End::Failure { fault: true }),
            (TaskState::Finished, false, End::Failure { fault: true }),
            (TaskState::Error, false, End::Failure { fault: true }),
            (TaskState::Lost, false, End::Failure { fault: false }),
            (TaskState::Gone, false, End::ByOperator),
            (TaskState::Killed, false, End::ByOperator),
            (TaskState::Unreachable, false, End::Failure { fault: false }),
            (TaskState::Killed, true, End::Killed),
        ] {
            assert_eq!(
                classify_end(ended, killed_by_us),
                end,
                "{ended:?} killed by us: {killed_by_us}"
            );
        }
    }
}
