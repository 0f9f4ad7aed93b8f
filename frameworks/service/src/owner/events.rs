//! What the SDK and the health checkers report: subscription, updates,
//! health results, and the failures they reveal.

use std::time::Duration;

use mezzo_sdk::{Event, TaskState, task_state, v1};
use tokio::time::Instant;
use tracing::{info, warn};

use super::Owner;
use super::state::service_of;
use crate::health;
use crate::plan::{self, Health, Phase, RestartHold, Verdict};

impl Owner {
    pub(super) async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Subscribed { framework_id, resumed } => {
                info!(%framework_id, resumed, "subscribed");
                if let Err(e) = crate::save_framework_id(&self.work_dir, &framework_id) {
                    warn!("cannot save the framework id: {e}");
                }
                // The master tells of every drain under way right after.
                self.draining.clear();
                if !self.loaded {
                    self.load().await;
                }
                self.reconcile_unknown(true).await;
            }
            Event::Offers(offers) => self.on_offers(offers).await,
            Event::Update(status) => self.on_update(status).await,
            Event::Disconnected { reason } => warn!(%reason, "disconnected from the master; reconnecting"),
            Event::AgentLost { agent_id } => info!(%agent_id, "agent lost"),
            Event::AgentDraining {
                agent_id,
                draining,
                deadline,
            } => self.on_drain(agent_id, draining, deadline),
            _ => {}
        }
    }

    /// An agent's drain started or ended: its instances are moved
    /// elsewhere by the planner, within the service's update limits,
    /// before the drain's deadline kills them.
    fn on_drain(&mut self, agent_id: String, draining: bool, deadline: Option<std::time::SystemTime>) {
        let known = self.draining.contains_key(&agent_id);
        if draining {
            self.draining.insert(agent_id.clone(), deadline);
        } else {
            self.draining.remove(&agent_id);
        }
        if known == draining {
            return; // told again after a subscription
        }
        info!(agent = %agent_id, draining, "agent drain");
        for (name, s) in &mut self.services {
            let here: Vec<&str> = s
                .rec
                .instances
                .values()
                .filter(|r| r.agent_id == agent_id)
                .map(|r| r.host.as_str())
                .collect();
            let Some(host) = here.first().map(|h| (*h).to_owned()) else {
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
            s.rec.event(what);
            s.dirty = true;
        }
    }

    /// Asks the master about instances whose state we do not know (all of
    /// them after a new subscription, with their agent ids).
    pub(super) async fn reconcile_unknown(&mut self, all: bool) {
        let mut ask = Vec::new();
        for s in self.services.values() {
            for (id, r) in &s.rec.instances {
                let unknown = s.live.get(id).is_some_and(|l| l.phase == Phase::Unknown);
                if all || unknown {
                    ask.push((id.clone(), r.agent_id.clone()));
                }
            }
        }
        self.last_reconcile = Some(Instant::now());
        if !ask.is_empty()
            && let Err(e) = self.sched.reconcile(ask).await
        {
            warn!("reconcile failed: {e}");
        }
    }

    async fn on_update(&mut self, status: v1::TaskStatus) {
        let id = status.task_id.clone();
        let name = service_of(&id).to_owned();
        let state = task_state(&status).unwrap_or(TaskState::Unknown);
        let known = self.services.get(&name).is_some_and(|s| s.live.contains_key(&id));
        if !known {
            // A task of ours that no record holds (one we replaced while its
            // agent was away): stop it, so that it cannot be a duplicate.
            if self.loaded && !state.is_terminal() && state != TaskState::Unknown {
                info!(task = %id, "stopping a task no service owns");
                let _ = self.sched.kill(&id, None).await;
            }
            return;
        }
        let now = Instant::now();
        let Some(s) = self.services.get_mut(&name) else { return };
        let Some(l) = s.live.get_mut(&id) else { return };
        match state {
            TaskState::Staging | TaskState::Starting if l.phase != Phase::Killing => l.phase = Phase::Starting,
            TaskState::Running if l.phase != Phase::Killing => {
                l.phase = Phase::Running;
                if l.running_since.is_none() {
                    l.running_since = Some(now);
                }
                let spec = s
                    .rec
                    .instances
                    .get(&id)
                    .and_then(|r| s.rec.versions.get(&r.version).map(|v| (r, v)));
                match spec.map(|(r, v)| (r, v, v.probe())) {
                    Some((r, v, Ok(Some(probe)))) if l.checker.is_none() => {
                        let (interval, timeout) = v
                            .health
                            .as_ref()
                            .map_or((Duration::from_secs(5), Duration::from_secs(2)), |h| {
                                (h.interval, h.timeout)
                            });
                        let target = health::Target {
                            task_id: id.clone(),
                            host: r.host.clone(),
                            ports: v.ports.iter().cloned().zip(r.ports.iter().copied()).collect(),
                            probe,
                            interval,
                            timeout,
                        };
                        l.checker = Some(health::spawn(target, self.http.clone(), self.reports_tx.clone()));
                    }
                    // No check: running is healthy.
                    Some((_, _, Ok(None))) => s.healthy_now(&id),
                    _ => {}
                }
            }
            TaskState::Killing | TaskState::Staging | TaskState::Starting | TaskState::Running => {}
            ended => {
                let was_killed_by_us = l.phase == Phase::Killing;
                let version = s.rec.instances.get(&id).map(|r| r.version).unwrap_or_default();
                self.forget(&name, &id);
                let why = if status.message.is_empty() {
                    format!("{:?}", status.reason)
                } else {
                    status.message.clone()
                };
                let end = classify_end(ended, was_killed_by_us);
                match end {
                    End::Killed => {}
                    End::NeverStarted | End::ByOperator => {
                        let what = if end == End::ByOperator {
                            format!("instance {id} was stopped by an operator or a drain ({why}); replacing it at once")
                        } else {
                            format!("instance {id} was dropped before it started ({why}); replacing it at once")
                        };
                        info!(service = %name, "{what}");
                        if let Some(s) = self.services.get_mut(&name) {
                            s.rec.event(what);
                            s.dirty = true;
                        }
                    }
                    End::Failure { fault } => {
                        self.failure(&name, version, &format!("instance {id} {}: {why}", ended.name()), fault)
                    }
                }
            }
        }
    }

    pub(super) fn on_health(&mut self, r: health::Report) {
        let name = service_of(&r.task_id).to_owned();
        let now = Instant::now();
        let Some(s) = self.services.get_mut(&name) else { return };
        let running = s.live.get(&r.task_id).is_some_and(|l| l.phase == Phase::Running);
        let Some(version) = s.rec.instances.get(&r.task_id).map(|i| i.version) else {
            return;
        };
        let Some(h) = s.rec.versions.get(&version).and_then(|v| v.health.clone()) else {
            return;
        };
        if !running {
            return;
        }
        if r.ok {
            s.healthy_now(&r.task_id);
            return;
        }
        let Some(l) = s.live.get_mut(&r.task_id) else { return };
        // Failures count only after the grace period, or once it has been
        // healthy.
        let in_grace = l.health != Health::Healthy && l.running_since.is_some_and(|t| now < t + h.grace_period);
        if in_grace || l.health == Health::Unhealthy {
            return;
        }
        l.failures += 1;
        if l.failures >= h.failures {
            l.health = Health::Unhealthy;
            l.stop_checker();
            let what = format!(
                "instance {} failed {} health checks: {}",
                r.task_id, l.failures, r.detail
            );
            self.failure(&name, version, &what, true);
        }
    }

    /// An instance failed: back off further launches, and (for the new
    /// version of an update) maybe roll back.
    fn failure(&mut self, name: &str, version: u64, what: &str, fault: bool) {
        let now = self.now();
        let Some(s) = self.services.get_mut(name) else { return };
        warn!(service = %name, "{what}");
        s.rec.event(what);
        let Some(spec) = s.rec.versions.get(&version).cloned() else {
            return;
        };
        s.backoff.failure(now);
        if fault
            && let Verdict::RolledBack { from, to } =
                plan::failed(&mut s.rec.deployment, version, spec.upgrade.auto_rollback)
        {
            let what = format!("version {from} failed; rolling back to version {to}");
            warn!(service = %name, "{what}");
            s.rec.event(what);
            // The old version is known to work: no need to wait.
            s.backoff = RestartHold::new(&spec.restart);
        }
        s.dirty = true;
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
