//! Agents: registration, re-registration, heartbeats, loss.

use foldhash::{HashSet, HashSetExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezzo_proto::ids::{AgentId, FrameworkId, TaskId};
use mezzo_proto::reservation::{ReservedResources, Role};
use mezzo_proto::resources::Resources;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;

use super::task_index::Table;
use super::{Agent, AgentStatus, ConnId, Effect, Master, Task};
use crate::error::MasterError;
use crate::registry::{AgentRecord, Registry, RegistryOp};
use mezzo_proto::clock::unix_now;

/// A task an agent reports when it re-registers, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedTask {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    pub resources: ReservedResources,
    pub info: v1::TaskInfo,
    pub state: TaskState,
    /// Ended, and the framework has not acknowledged the end yet.
    pub end_unacknowledged: bool,
    /// When the master launched it, if the agent knows (it checkpoints
    /// the time with the task).
    pub launched_at: Option<f64>,
    /// Its status updates as the agent saw them, oldest first; the last is
    /// its latest (bounded and checked at the edge).
    pub statuses: Vec<v1::TaskStatus>,
}

/// The first message on an agent's stream, validated by the API layer.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentHello {
    Register {
        info: AgentDescription,
        /// The agent's id for this registration and its retries, if it
        /// sent one (see [`Master::agent_attach`]).
        registration: Option<String>,
    },
    Reregister {
        id: AgentId,
        info: AgentDescription,
        tasks: Vec<ReportedTask>,
        /// `tasks` holds every task the agent was sent and has not
        /// forgotten after an acknowledgement: one missing never ran.
        complete: bool,
        /// The custom executors it runs.
        executors: Vec<super::executors::ReportedExecutor>,
    },
}

impl AgentHello {
    /// The id a re-registration claims.
    pub fn id(&self) -> Option<&AgentId> {
        match self {
            AgentHello::Register { .. } => None,
            AgentHello::Reregister { id, .. } => Some(id),
        }
    }
}

/// What an agent says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentDescription {
    pub hostname: String,
    pub http_address: String,
    /// Static reservations included.
    pub resources: ReservedResources,
    pub attributes: Vec<(String, String)>,
}

impl Task {
    /// A task as its agent reported it when re-registering: its launch
    /// time and latest status are the agent's (a new leader knows neither
    /// otherwise; an agent that does not know its launch time makes it
    /// now), and an ended one ended when its latest status says.
    fn reported(agent_id: &AgentId, mut rt: ReportedTask, role: Role) -> Task {
        // The agent's latest verdict, whatever came after it.
        let healthy = rt.statuses.iter().rev().find_map(|s| s.healthy);
        let last_status = rt.statuses.pop();
        let ended_at = last_status
            .as_ref()
            .filter(|s| rt.state.is_terminal() && s.state == rt.state.to_proto() as i32 && s.timestamp > 0.0)
            .map(|s| s.timestamp);
        Task::keep(&mut rt.info);
        Task {
            id: rt.task_id,
            framework_id: rt.framework_id,
            agent_id: agent_id.clone(),
            role,
            resources: rt.resources,
            info: rt.info,
            state: rt.state,
            last_status,
            unacked: None,
            forwarded: None,
            acked: None,
            launched_at: rt.launched_at.unwrap_or_else(unix_now),
            ended_at,
            healthy,
        }
    }
}

/// An agent's resources with the registry's dynamic reservations applied
/// (a reservation the agent no longer has room for is skipped).
pub(crate) fn effective_total(
    id: &AgentId,
    reported: &ReservedResources,
    dynamic: &ReservedResources,
) -> ReservedResources {
    let mut total = reported.clone();
    for (role, r) in &dynamic.reserved {
        match total.reserve(role, r) {
            Some(t) => total = t,
            None => {
                tracing::warn!(agent = %id, role = %role, resources = %r, "the agent no longer has the unreserved resources of a dynamic reservation; ignoring it")
            }
        }
    }
    total
}

/// What an agent offers: [`effective_total`] less its volumes' disk.
pub(crate) fn offerable_total(id: &AgentId, reported: &ReservedResources, registry: &Registry) -> ReservedResources {
    let total = effective_total(id, reported, &registry.dynamic_reservations(id));
    super::volumes::less_volumes(id, total, super::volumes::of_agent(registry, id))
}

/// The role a reported task's resources are allocated to: the one the
/// master recorded in it, else its reservation's, else the framework's first.
fn task_role(rt: &ReportedTask, framework_roles: &[String]) -> Role {
    if let Ok(r) = Role::parse(&rt.info.allocation_role) {
        return r;
    }
    if let Some(r) = rt.resources.reserved.keys().next() {
        return r.clone();
    }
    framework_roles
        .first()
        .and_then(|r| Role::parse(r).ok())
        .unwrap_or_else(Role::star)
}

/// A registration not committed this long after it was proposed never
/// will be: a retry of it is a new registration.
const REGISTRATION_COMMITS_WITHIN: Duration = Duration::from_secs(60);

/// Host names with a lookup problem kept at most (one per agent in
/// practice; the cap only bounds a storm of bogus registrations).
const MAX_HOST_PROBLEMS: usize = 10_000;

pub(crate) fn agent_from_record(rec: &AgentRecord, registry: &Registry, now: Instant) -> Option<Agent> {
    let reported = match ReservedResources::parse(&rec.resources) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(agent = %rec.id, error = %e, "registry holds unparsable resources; skipping agent");
            return None;
        }
    };
    let total = offerable_total(&rec.id, &reported, registry);
    Some(Agent {
        id: rec.id.clone(),
        hostname: rec.hostname.clone(),
        http_address: rec.http_address.clone(),
        attributes: rec.attributes.clone(),
        reported,
        total,
        used: Resources::default(),
        offered: Resources::default(),
        conn: None,
        status: if rec.unreachable_since.is_some() {
            AgentStatus::Unreachable
        } else {
            AgentStatus::Active
        },
        last_seen: now,
        tasks: HashSet::new(),
        usage: Default::default(),
        tasks_complete: false,
        executors: Default::default(),
    })
}

/// How a task the master placed on an agent that re-registered without it
/// ends, by whether the agent's task list is complete.
fn missing_task_outcome(complete: bool) -> (TaskState, v1::StatusReason, &'static str) {
    if complete {
        (
            TaskState::Dropped,
            v1::StatusReason::ReasonAgentReregistered,
            "the agent came back without this task, so it never started there; it is safe to launch again",
        )
    } else {
        (
            TaskState::Lost,
            v1::StatusReason::ReasonAgentRestarted,
            "the agent came back without this task after losing its checkpoints; it may have run",
        )
    }
}

/// The tasks a re-registering agent reports that are new to this leader,
/// gathered to be added to the agent and the allocator once per agent.
#[derive(Default)]
struct Adopted {
    used: Resources,
    tasks: Vec<(FrameworkId, TaskId)>,
    /// What the active ones hold, by framework and role (a few per agent).
    held: Vec<(FrameworkId, Role, ReservedResources)>,
}

impl Adopted {
    fn hold(&mut self, fid: &FrameworkId, role: Role, r: &ReservedResources) {
        match self.held.iter_mut().find(|(f, o, _)| f == fid && *o == role) {
            Some((_, _, sum)) => sum.add(r),
            None => self.held.push((fid.clone(), role, r.clone())),
        }
    }
}

fn record_of(id: &AgentId, d: &AgentDescription) -> AgentRecord {
    AgentRecord {
        id: id.clone(),
        hostname: d.hostname.clone(),
        http_address: d.http_address.clone(),
        resources: d.resources.to_string(),
        attributes: d.attributes.clone(),
        unreachable_since: None,
        principal: None,
    }
}

impl Master {
    /// An agent opened its stream. A registration, and a re-registration
    /// that changes the agent's record, are committed to the registry
    /// before the agent is told; an agent coming back as the registry
    /// already has it (every agent after a leader failover) is admitted at
    /// once: a write would change nothing, and 40,000 of them would hold a
    /// failover back.
    ///
    /// A registration the agent retries (it gave up waiting, or its answer
    /// was lost) names the registration id of its first attempt: while that
    /// attempt commits, the retry waits for the same commit; once it has
    /// committed, the retry re-registers the agent it made, with no tasks
    /// (it was never told its id, so it cannot have run one). Only a
    /// retry by the principal of the first attempt; mapped on this leader
    /// only (a registration that spans a failover makes a second agent).
    pub fn agent_attach(
        &mut self,
        conn: ConnId,
        mut hello: AgentHello,
        principal: Option<String>,
        now: Instant,
    ) -> Result<(), MasterError> {
        if let AgentHello::Register { info, registration } = &hello
            && let Some((earlier, at)) = self
                .registrations
                .earlier(registration.as_deref(), principal.as_deref(), now)
        {
            let admitted = self.agents.contains_key(&earlier);
            let committed = admitted || self.registry.agents.contains_key(&earlier);
            // (A proposal that never committed in that time was lost.)
            if !committed && now.duration_since(at) < REGISTRATION_COMMITS_WITHIN {
                tracing::debug!(agent = %earlier, "a registration retried while it commits");
                self.pending_agents.insert(earlier, (conn, hello));
                return Ok(());
            }
            if admitted && !self.registry.gone.contains_key(&earlier) {
                tracing::info!(agent = %earlier, "a registration retried after it committed: the agent it made re-registers");
                hello = AgentHello::Reregister {
                    id: earlier,
                    info: info.clone(),
                    tasks: Vec::new(),
                    complete: true,
                    executors: Vec::new(),
                };
            }
        }
        let (id, desc) = match &hello {
            AgentHello::Register { info, registration } => {
                let id = AgentId::generate();
                self.registrations
                    .note(registration.as_deref(), &id, principal.as_deref(), now);
                (id, info)
            }
            AgentHello::Reregister { id, info, .. } => (id.clone(), info),
        };
        if self.registry.gone.contains_key(&id) {
            return Err(MasterError::AgentGone(id.to_string()));
        }
        let mut rec = record_of(&id, desc);
        // A principal, once bound, stays (an insecure restart binds none).
        rec.principal = principal.or_else(|| self.registry.agents.get(&id).and_then(|r| r.principal.clone()));
        let unchanged = matches!(hello, AgentHello::Reregister { .. })
            && self.registry.agents.get(&id) == Some(&rec)
            && !self.pending_unreachable.contains(&id);
        self.pending_agents.insert(id, (conn, hello));
        if unchanged {
            self.agent_admitted(&rec, now);
        } else {
            self.emit(Effect::Propose(RegistryOp::AdmitAgent(rec)));
        }
        Ok(())
    }

    pub(crate) fn agent_admitted(&mut self, rec: &AgentRecord, now: Instant) {
        let Some((conn, hello)) = self.pending_agents.remove(&rec.id) else {
            // Replayed or admitted elsewhere: refresh what we know.
            if !self.agents.contains_key(&rec.id)
                && let Some(a) = agent_from_record(rec, &self.registry, now)
            {
                self.alloc.add_agent(&a.id, a.total.clone(), false);
                self.agents.insert(rec.id.clone(), a);
            }
            return;
        };
        let (reported, complete, executors) = match hello {
            // A new agent has been sent nothing yet.
            AgentHello::Register { .. } => (Vec::new(), true, Vec::new()),
            AgentHello::Reregister {
                tasks,
                complete,
                executors,
                ..
            } => (tasks, complete, executors),
        };
        let Some(mut fresh) = agent_from_record(rec, &self.registry, now) else {
            return;
        };
        fresh.conn = Some(conn);
        fresh.status = AgentStatus::Active;
        fresh.tasks_complete = complete;
        if let Some(old) = self.agents.remove(&rec.id) {
            if let Some(old_conn) = old.conn.filter(|c| *c != conn) {
                self.agent_conns.remove(&old_conn);
                self.emit(Effect::CloseAgent(old_conn));
            }
            fresh.used = old.used;
            fresh.tasks = old.tasks;
            fresh.executors = old.executors;
            for offer in self.offers_of(&rec.id) {
                self.rescind_offer(&offer, true);
            }
        }
        self.agent_conns.insert(conn, rec.id.clone());
        let offerable = !self.is_draining(&rec.id);
        self.alloc.add_agent(&rec.id, fresh.total.clone(), offerable);
        self.agents.insert(rec.id.clone(), fresh);
        self.reconcile_agent_tasks(&rec.id, reported, complete);
        self.reconcile_agent_executors(&rec.id, executors);
        let msg = v1::master_message::Message::Registered(v1::Registered {
            agent_id: rec.id.to_string(),
            master_id: self.cfg.master_id.clone(),
            heartbeat_interval_secs: self.agent_beat.as_secs_f64(),
        });
        self.send_agent(&rec.id, msg);
        // After its tasks: the agent keeps a volume a live task mounts.
        self.send_volumes(&rec.id);
        self.allocation_needed = true;
        self.note_agent_added(&rec.id, &rec.hostname);
        tracing::info!(agent = %rec.id, hostname = %rec.hostname, resources = %rec.resources, "agent admitted");
    }

    /// The agent is the source of truth for its tasks: adopt what it
    /// reports; what the master thought it ran but it does not is DROPPED
    /// when the agent's list is `complete` (it never received the task),
    /// else LOST (it may have run before the agent lost its checkpoints).
    fn reconcile_agent_tasks(&mut self, agent_id: &AgentId, reported: Vec<ReportedTask>, complete: bool) {
        tracing::debug!(agent = %agent_id, reported = reported.len(), complete, "agent's tasks");
        // A leader that knows none of the agent's tasks (after a failover)
        // can miss none of them: it notes none as seen (a set of 400,000 ids
        // built for nothing during a failover).
        let track = self.agents.get(agent_id).is_some_and(|a| !a.tasks.is_empty());
        let mut seen = HashSet::new();
        let mut see = |key: (FrameworkId, TaskId)| {
            if track {
                seen.insert(key);
            }
        };
        let mut unknown_frameworks = HashSet::new();
        let mut adopted = Adopted::default();
        for mut rt in reported {
            let Some((known, fw)) = self.frameworks.get_key_value(&rt.framework_id) else {
                unknown_frameworks.insert(rt.framework_id);
                continue;
            };
            // The framework's own id, shared: the one parsed from the
            // report was a string of its own for each task.
            let (fid, tid) = (known.clone(), rt.task_id.clone());
            rt.framework_id = fid.clone();
            if !fw.tasks.contains_key(&tid) {
                // New to this leader (e.g. after a failover): its status
                // history is what the agent saw.
                self.adopt_reported_history(&fid, &tid, rt.launched_at, &rt.statuses);
            }
            let Some(fw) = self.frameworks.get_mut(&fid) else {
                continue;
            };
            match fw.tasks.get(&tid) {
                Some(t) if &t.agent_id != agent_id => {
                    tracing::warn!(agent = %agent_id, task = %tid, on = %t.agent_id, "agent reports a task the master places on another agent; ignoring it");
                }
                Some(t) => {
                    see((fid.clone(), tid.clone()));
                    if t.state == TaskState::Unreachable && rt.state != TaskState::Unreachable {
                        // Tell the framework, which was told UNREACHABLE.
                        let reason = v1::StatusReason::ReasonReconciliation;
                        self.master_update(&fid, &tid, rt.state, reason, "the task's agent re-registered");
                    } else {
                        self.set_task_state(&fid, &tid, rt.state, None);
                    }
                }
                None if rt.state.is_terminal() && fw.completed_by_id.contains_key(&tid) => {
                    // Its end is in the history already: an earlier leader
                    // recorded it when the framework acknowledged it (the
                    // acknowledgement may not have reached the agent, which
                    // then resends the update: see `status_update`).
                    see((fid, tid));
                }
                None if rt.state.is_terminal() && rt.state != TaskState::Unreachable && !rt.end_unacknowledged => {
                    // Ended and acknowledged before this leader knew it (the
                    // agent remembers recent ends): remember it as completed,
                    // so that reconciliation answers with its true end.
                    let role = task_role(&rt, &fw.info.roles);
                    let task = Task::reported(agent_id, rt, role);
                    self.remember_completed(&fid, Arc::new(task));
                    see((fid, tid));
                }
                None => {
                    // Running, or ended without the framework knowing yet:
                    // an active task until its end is acknowledged, so the
                    // implicit reconciliation reports it (a restarted
                    // framework would otherwise launch it again).
                    let role = task_role(&rt, &fw.info.roles);
                    if !rt.state.is_terminal() {
                        let total = rt.resources.total();
                        fw.allocated.add(&total);
                        adopted.used.add(&total);
                        adopted.hold(&fid, role.clone(), &rt.resources);
                    }
                    let task = Task::reported(agent_id, rt, role);
                    self.task_index.add(&task, Table::Active);
                    fw.tasks.insert(tid.clone(), Arc::new(task));
                    adopted.tasks.push((fid.clone(), tid.clone()));
                    see((fid, tid));
                }
            }
        }
        // Once for the agent, not once a task (a failover's 400,000).
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.used.add(&adopted.used);
            agent.tasks.extend(adopted.tasks);
        }
        for (fid, role, r) in adopted.held {
            self.alloc.track_used(&fid, &role, agent_id, &r);
        }
        // What the master placed here but the agent does not have is gone,
        // including tasks the framework was told are UNREACHABLE.
        let missing: Vec<(FrameworkId, TaskId)> = self
            .agents
            .get(agent_id)
            .filter(|_| track)
            .map(|a| a.tasks.iter().filter(|k| !seen.contains(*k)).cloned().collect())
            .unwrap_or_default();
        let (state, reason, message) = missing_task_outcome(complete);
        for (fid, tid) in missing {
            self.master_update_if(
                &fid,
                &tid,
                |s| !s.is_terminal() || s == TaskState::Unreachable,
                state,
                reason,
                message,
            );
        }
        for fid in unknown_frameworks {
            let msg = v1::master_message::Message::ShutdownFramework(v1::ShutdownFramework {
                framework_id: fid.to_string(),
            });
            self.send_agent(agent_id, msg);
        }
    }

    /// Any message from the agent proves it alive.
    pub(crate) fn agent_seen(&mut self, conn: ConnId, now: Instant) -> Option<AgentId> {
        let id = self.agent_conns.get(&conn)?.clone();
        if let Some(a) = self.agents.get_mut(&id) {
            a.last_seen = now;
        }
        Some(id)
    }

    /// The result of resolving an attaching agent's host name from this
    /// master (`problem`: why it does not resolve). Kept by name, not on
    /// the agent: the check may end before the agent's admission commits.
    pub fn agent_host_checked(&mut self, hostname: String, problem: Option<String>) {
        match problem {
            Some(p) => {
                tracing::warn!(%hostname, "an agent's host name does not resolve from this master ({p}): frameworks and health checks that reach its tasks by name will fail; give the agent --hostname with a name the cluster resolves");
                if self.host_problems.len() < MAX_HOST_PROBLEMS {
                    self.host_problems.insert(hostname, p);
                }
            }
            None => {
                self.host_problems.remove(&hostname);
            }
        }
    }

    pub fn agent_heartbeat(&mut self, conn: ConnId, now: Instant) {
        self.agent_seen(conn, now);
    }

    /// The agent's stream closed: stop offering it at once; its tasks get
    /// `agent_timeout` to come back before they are marked unreachable.
    pub fn agent_conn_closed(&mut self, conn: ConnId, now: Instant) {
        self.pending_agents.retain(|_, (c, _)| *c != conn);
        let Some(id) = self.agent_conns.remove(&conn) else {
            return;
        };
        let Some(agent) = self.agents.get_mut(&id) else { return };
        if agent.conn != Some(conn) {
            return;
        }
        agent.conn = None;
        agent.status = AgentStatus::Disconnected;
        agent.last_seen = now;
        self.alloc.set_agent_active(&id, false);
        tracing::warn!(agent = %id, "agent disconnected");
        for offer in self.offers_of(&id) {
            self.rescind_offer(&offer, true);
        }
    }

    /// The agents' heartbeat interval the cluster's size calls for: the
    /// configured one, or whole seconds enough to keep the heartbeats
    /// received under `agent_heartbeats_per_second`.
    pub(super) fn spaced_agent_beat(&self) -> Duration {
        let rate = self.cfg.agent_heartbeats_per_second;
        if rate == 0 {
            return self.cfg.heartbeat_interval;
        }
        let secs = (self.agents.len() as u64).div_ceil(u64::from(rate));
        self.cfg.heartbeat_interval.max(Duration::from_secs(secs))
    }

    /// How long an agent may be silent: `agent_timeout`, or three
    /// heartbeat intervals once they are spaced out further.
    pub(crate) fn agent_silence_limit(&self) -> Duration {
        self.cfg.agent_timeout.max(self.agent_beat * 3)
    }

    /// Marks agents unreachable once they have been silent or disconnected
    /// for longer than the silence limit, or not re-registered with this
    /// leader for longer than `agent_reregister_timeout`. While agents it
    /// recovered are still coming back, one that came back and lost its
    /// stream again has as long: it queues behind them to come back (at
    /// 40,000 agents, 1,181 were marked so and came back moments later,
    /// their tasks UNREACHABLE and then RUNNING again).
    pub(crate) fn check_agents(&mut self, now: Instant) {
        let timeout = self.agent_silence_limit();
        let recovery = timeout.max(self.cfg.agent_reregister_timeout);
        let taking_over = self.agents.values().any(|a| a.status == AgentStatus::Recovering);
        let late: Vec<AgentId> = self
            .agents
            .values()
            .filter(|a| {
                let limit = match a.status {
                    AgentStatus::Recovering => recovery,
                    AgentStatus::Disconnected if taking_over => recovery,
                    _ => timeout,
                };
                a.status != AgentStatus::Unreachable && now.duration_since(a.last_seen) > limit
            })
            .map(|a| a.id.clone())
            .collect();
        for id in late {
            if let Some(a) = self.agents.get_mut(&id) {
                a.last_seen = now; // propose once per timeout
                if let Some(conn) = a.conn.take() {
                    self.agent_conns.remove(&conn);
                    self.emit(Effect::CloseAgent(conn));
                }
            }
            tracing::warn!(agent = %id, "agent timed out; marking it unreachable");
            self.pending_unreachable.insert(id.clone());
            self.emit(Effect::Propose(RegistryOp::MarkAgentUnreachable { id, at: unix_now() }));
        }
    }

    pub(crate) fn agent_unreachable(&mut self, id: &AgentId, now: Instant) {
        let Some(agent) = self.agents.get_mut(id) else { return };
        agent.status = AgentStatus::Unreachable;
        self.alloc.set_agent_active(id, false);
        agent.last_seen = now;
        agent.usage = Default::default();
        self.note_agent_removed(id, "unreachable");
        let active = |s: TaskState| !s.is_terminal();
        let why = (
            TaskState::Unreachable,
            v1::StatusReason::ReasonAgentUnreachable,
            "agent is unreachable",
        );
        self.lose_agent(id, active, why);
    }

    /// Closes a lost agent's stream, rescinds its offers, moves its tasks
    /// that pass `when` to `why` (state, reason, message), and tells their
    /// frameworks the agent failed.
    pub(crate) fn lose_agent(
        &mut self,
        id: &AgentId,
        when: impl Fn(TaskState) -> bool,
        why: (TaskState, v1::StatusReason, &str),
    ) {
        let Some(agent) = self.agents.get_mut(id) else { return };
        let tasks: Vec<(FrameworkId, TaskId)> = agent.tasks.iter().cloned().collect();
        if let Some(conn) = agent.conn.take() {
            self.agent_conns.remove(&conn);
            self.emit(Effect::CloseAgent(conn));
        }
        self.rescind_agent_offers(id);
        // A framework with only an executor there is told too.
        let mut frameworks: HashSet<FrameworkId> = self.release_agent_executors(id).into_iter().collect();
        for (fid, tid) in tasks {
            if self.master_update_if(&fid, &tid, &when, why.0, why.1, why.2) {
                frameworks.insert(fid);
            }
        }
        for fid in frameworks {
            self.send_framework(
                &fid,
                v1::event::Event::Failure(v1::Failure {
                    agent_id: id.to_string(),
                    ..Default::default()
                }),
            );
        }
    }

    /// Rescinds every outstanding offer of an agent.
    pub(crate) fn rescind_agent_offers(&mut self, id: &AgentId) {
        for offer in self.offers_of(id) {
            self.rescind_offer(&offer, true);
        }
    }
}
