//! Priority and preemption (issue 19), as Kubernetes' scheduler and
//! Slurm's `PreemptType=preempt/qos` do it, in Mesos' two-level way: a
//! framework reports a task it cannot place (`ReportPending`, with its
//! needs and priority). Once it has waited `--preemption-delay`, and its
//! role is below its quota guarantee or its fair share, the leader looks
//! for one agent where running tasks of a lower priority, of roles above
//! their fair share, would make room. Their frameworks are warned
//! (`Preemption` event, Mesos' inverse offers) and the tasks are killed
//! at the deadline (`TASK_KILLED`, `REASON_PREEMPTED`); meanwhile that
//! agent offers nothing to the warned frameworks, so the room goes to the
//! waiting role (which the allocator favours: it is below its share).
//!
//! ```text
//! pending (needs, priority P), waited ≥ delay, role below share
//!   └─▶ agent with free + victims ⊇ needs (victims: priority < P, roles above share,
//!       lowest priority first, newest first) ─▶ Preemption event ─▶ grace ─▶ kill
//! ```

use foldhash::{HashMap, HashMapExt};
use std::time::{Duration, Instant};

use mezzo_proto::clock::unix_now;
use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use mezzo_proto::reservation::{ReservedResources, Role};
use mezzo_proto::resources::Resources;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;

use super::{AgentStatus, Master};

/// How often one waiting task may cause a preemption.
const CLAIM_FOR: Duration = Duration::from_secs(30);
/// How often the leader looks for room to preempt (a look scans the
/// running tasks of every agent).
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// When preemption happens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreemptionConfig {
    /// Off: priorities only order a framework's own work.
    pub enabled: bool,
    /// A reported task waits this long before it may preempt.
    pub delay: Duration,
    /// Between the warning and the kill.
    pub grace: Duration,
}

impl Default for PreemptionConfig {
    fn default() -> Self {
        PreemptionConfig {
            enabled: true,
            delay: Duration::from_secs(10),
            grace: Duration::from_secs(10),
        }
    }
}

/// A task warned, to be killed at `deadline`.
#[derive(Debug, Clone)]
pub(super) struct Victim {
    deadline: Instant,
    message: String,
    /// The waiting task it makes room for.
    for_task: (FrameworkId, TaskId),
}

/// What preemption is doing, for the kills and for `mezzo why`.
#[derive(Debug, Default)]
pub(super) struct Preemptions {
    victims: HashMap<(FrameworkId, TaskId), Victim>,
    /// The last look for room.
    looked: Option<Instant>,
    /// When each reported task was first seen waiting (frameworks repeat
    /// their reports: a report's own time is its newest).
    first_seen: HashMap<(FrameworkId, TaskId), Instant>,
    /// Waiting tasks that caused a preemption, and when (and of what).
    claimed: HashMap<(FrameworkId, TaskId), (Instant, String)>,
}

/// One running task that may be preempted.
struct Candidate {
    fid: FrameworkId,
    tid: TaskId,
    priority: i32,
    launched_at: f64,
    resources: Resources,
}

impl Master {
    /// Kills warned tasks whose deadline passed, then looks for one
    /// preemption to start.
    pub(crate) fn preempt_tick(&mut self, now: Instant) {
        let due: Vec<((FrameworkId, TaskId), Victim)> = self
            .preemptions
            .victims
            .iter()
            .filter(|(_, v)| v.deadline <= now)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((fid, tid), v) in due {
            self.preemptions.victims.remove(&(fid.clone(), tid.clone()));
            let running = self
                .frameworks
                .get(&fid)
                .and_then(|f| f.tasks.get(&tid))
                .is_some_and(|t| !t.state.is_terminal());
            // The waiting task still waits (reported, not launched since).
            let (wfid, wtid) = &v.for_task;
            let still_waiting = self
                .observed
                .pending
                .get(wfid)
                .is_some_and(|r| r.tasks.iter().any(|t| t.task_id == wtid.as_str()))
                && !self.frameworks.get(wfid).is_some_and(|f| f.tasks.contains_key(wtid));
            if running && !still_waiting {
                tracing::info!(framework = %fid, task = %tid, "preemption called off: the task it made room for no longer waits");
            }
            if running && still_waiting {
                tracing::info!(framework = %fid, task = %tid, "{}", v.message);
                let why = Some((v1::StatusReason::ReasonPreempted, v.message.as_str()));
                if let Err(e) = self.kill_task_because(&fid, &tid, None, why) {
                    tracing::debug!(task = %tid, error = %e, "preemption kill skipped");
                }
            }
        }
        self.preemptions
            .claimed
            .retain(|_, (at, _)| now.duration_since(*at) < CLAIM_FOR);
        let due = self
            .preemptions
            .looked
            .is_none_or(|t| now.duration_since(t) >= LOOK_EVERY);
        if self.cfg.preemption.enabled && due && !self.observed.pending.is_empty() {
            self.preemptions.looked = Some(now);
            self.start_one_preemption(now);
        }
    }

    /// Why a task waits or was warned, for `mezzo why`.
    pub(crate) fn preemption_of(&self, fid: &FrameworkId, tid: &TaskId) -> Option<String> {
        let key = (fid.clone(), tid.clone());
        if let Some(v) = self.preemptions.victims.get(&key) {
            return Some(format!("to be {}", v.message));
        }
        self.preemptions.claimed.get(&key).map(|(_, what)| what.clone())
    }

    /// The first waiting task (highest priority first) that may preempt,
    /// and its victims warned.
    fn start_one_preemption(&mut self, now: Instant) {
        let delay = self.cfg.preemption.delay;
        let mut waiting: Vec<(i32, FrameworkId, TaskId, Resources)> = Vec::new();
        let mut seen = HashMap::new();
        for (fid, report) in &self.observed.pending {
            if !self.frameworks.contains_key(fid) {
                continue;
            }
            for t in &report.tasks {
                let (Ok(tid), Some(needs)) = (TaskId::parse(&t.task_id), t.resources.as_ref()) else {
                    continue;
                };
                if t.priority <= 0 || needs.is_empty() {
                    continue;
                }
                let key = (fid.clone(), tid.clone());
                let since = self.preemptions.first_seen.get(&key).copied().unwrap_or(now);
                seen.insert(key.clone(), since);
                if now.duration_since(since) >= delay && !self.preemptions.claimed.contains_key(&key) {
                    waiting.push((t.priority, fid.clone(), tid, needs.clone()));
                }
            }
        }
        // Tasks no longer reported are forgotten.
        self.preemptions.first_seen = seen;
        if waiting.is_empty() {
            return;
        }
        waiting.sort_by_key(|w| std::cmp::Reverse(w.0));
        let shares = self.role_shares();
        for (priority, fid, tid, needs) in waiting {
            let Some(role) = self
                .frameworks
                .get(&fid)
                .and_then(|f| f.info.roles.first())
                .and_then(|r| Role::parse(r).ok())
            else {
                continue;
            };
            if !shares.get(&role).is_some_and(|s| s.below) {
                continue;
            }
            if let Some((agent, victims)) = self.find_room(&needs, priority, &role, &shares) {
                self.warn_victims(now, (&fid, &tid, priority), &agent, victims);
                return;
            }
        }
    }

    /// Each role with frameworks: whether it is below or above its fair
    /// share (its weight over the weights of all such roles), or below its
    /// quota guarantee.
    fn role_shares(&self) -> HashMap<Role, Share> {
        let views: Vec<_> = self
            .alloc
            .roles_view()
            .into_iter()
            .filter(|r| !r.frameworks.is_empty())
            .collect();
        let weights: f64 = views.iter().map(|r| r.weight).sum::<f64>().max(f64::MIN_POSITIVE);
        // `dominant_share` is weighted (share / weight): fair is 1 / weights.
        let fair = 1.0 / weights;
        views
            .into_iter()
            .filter_map(|r| {
                let role = Role::parse(&r.role).ok()?;
                let below_guarantee = !r.guarantee.is_empty() && !r.allocated.contains(&r.guarantee);
                Some((
                    role,
                    Share {
                        below: below_guarantee || r.dominant_share < fair * 0.999,
                        above: !below_guarantee && r.dominant_share > fair * 1.001,
                    },
                ))
            })
            .collect()
    }

    /// An agent where free resources and the tasks of a priority below
    /// `priority`, of roles above their share (not `role`), cover `needs`;
    /// and the fewest such tasks, lowest priority and newest first.
    fn find_room(
        &self,
        needs: &Resources,
        priority: i32,
        role: &Role,
        shares: &HashMap<Role, Share>,
    ) -> Option<(AgentId, Vec<Candidate>)> {
        let mut best: Option<(AgentId, Vec<Candidate>)> = None;
        for (id, agent) in &self.agents {
            if agent.status != AgentStatus::Active || self.is_draining(id) {
                continue;
            }
            // One pass over its tasks: what they use of what the waiting
            // role may use (unreserved resources and its own
            // reservations), and which of them may be preempted.
            let mut used = Resources::default();
            let mut candidates = Vec::new();
            for (fid, tid) in &agent.tasks {
                let Some(t) = self.frameworks.get(fid).and_then(|f| f.tasks.get(tid)) else {
                    continue;
                };
                if t.state.is_terminal() {
                    continue;
                }
                let resources = usable(&t.resources, role);
                used.add(&resources);
                let eligible = t.state == TaskState::Running
                    && t.info.priority < priority
                    && &t.role != role
                    && shares.get(&t.role).is_some_and(|s| s.above)
                    && !self.preemptions.victims.contains_key(&(fid.clone(), tid.clone()));
                if eligible {
                    candidates.push(Candidate {
                        fid: fid.clone(),
                        tid: tid.clone(),
                        priority: t.info.priority,
                        launched_at: t.launched_at,
                        resources,
                    });
                }
            }
            let mut room = usable(&agent.total, role).saturating_sub(&used);
            if room.contains(needs) {
                // Room without preempting: the allocator's business.
                return None;
            }
            candidates.sort_by(|a, b| {
                a.priority
                    .cmp(&b.priority)
                    .then(b.launched_at.total_cmp(&a.launched_at))
            });
            let mut chosen = Vec::new();
            for c in candidates {
                if room.contains(needs) {
                    break;
                }
                room.add(&c.resources);
                chosen.push(c);
            }
            if room.contains(needs) && best.as_ref().is_none_or(|(_, b)| chosen.len() < b.len()) {
                best = Some((id.clone(), chosen));
            }
        }
        best
    }

    /// Warns the victims' frameworks and schedules the kills; keeps the
    /// agent's room from the victims' frameworks meanwhile.
    fn warn_victims(
        &mut self,
        now: Instant,
        (fid, tid, priority): (&FrameworkId, &TaskId, i32),
        agent: &AgentId,
        victims: Vec<Candidate>,
    ) {
        let grace = self.cfg.preemption.grace;
        let deadline = now + grace;
        let name = self
            .frameworks
            .get(fid)
            .map(|f| f.info.name.clone())
            .unwrap_or_default();
        let message = format!("preempted for task {tid} of framework {name} ({fid}), priority {priority}");
        let mut by_framework: HashMap<FrameworkId, Vec<String>> = HashMap::new();
        for v in &victims {
            by_framework.entry(v.fid.clone()).or_default().push(v.tid.to_string());
            self.preemptions.victims.insert(
                (v.fid.clone(), v.tid.clone()),
                Victim {
                    deadline,
                    message: message.clone(),
                    for_task: (fid.clone(), tid.clone()),
                },
            );
        }
        let names: Vec<String> = victims.iter().map(|v| v.tid.to_string()).collect();
        let what = format!(
            "waiting to preempt {} task(s) of a lower priority on agent {agent}: {}",
            victims.len(),
            names.join(", ")
        );
        tracing::info!(framework = %fid, task = %tid, priority, agent = %agent, victims = ?names, "preempting");
        self.preemptions.claimed.insert((fid.clone(), tid.clone()), (now, what));
        let unix_deadline = unix_now() + grace.as_secs_f64();
        for (victim_fw, task_ids) in by_framework {
            // The room is for the waiting role, not back to the victims.
            self.alloc
                .filter(&victim_fw, agent, deadline + grace + Duration::from_secs(5));
            let ev = v1::Preemption {
                task_ids,
                agent_id: agent.to_string(),
                for_framework_id: fid.to_string(),
                for_task_id: tid.to_string(),
                priority,
                deadline: unix_deadline,
            };
            self.send_framework(&victim_fw, v1::event::Event::Preemption(ev));
        }
        self.allocation_needed = true;
    }
}

/// What of `r` the role `role` may use: the unreserved part and its own
/// reservation.
fn usable(r: &ReservedResources, role: &Role) -> Resources {
    let mut out = r.part(&Role::star()).cloned().unwrap_or_default();
    if !role.is_star()
        && let Some(own) = r.part(role)
    {
        out.add(own);
    }
    out
}

/// A role against its fair share.
#[derive(Debug, Clone, Copy)]
struct Share {
    /// Below its fair share or its quota guarantee: may preempt.
    below: bool,
    /// Above its fair share (and its guarantee): may be preempted.
    above: bool,
}
