//! Accept: validate launches against the offers, then start them.
//!
//! Validation is complete before anything changes: an invalid Accept
//! launches nothing, leaves the offers outstanding and usable, and tells
//! the framework why.

use foldhash::{HashSet, HashSetExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezzo_proto::ids::{AgentId, ExecutorId, FrameworkId, OfferId, TaskId, VolumeId};
use mezzo_proto::reservation::{ReservedResources, Role};
use mezzo_proto::resources::Resources;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;

use super::executors::NewExecutor;
use super::task_index::Table;
use super::volumes::NewVolume;
use super::{Master, Task};
use crate::error::MasterError;
use crate::registry::RegistryOp;
use mezzo_proto::clock::unix_now;

/// A task to launch, already checked for syntax by the API layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    pub task_id: TaskId,
    /// As asked: unreserved resources may be taken from the offer's
    /// reservation when its unreserved part does not have them.
    pub resources: ReservedResources,
    pub info: v1::TaskInfo,
    /// The custom executor `info` names, with the resources it asks for
    /// (taken from the offer too when it is not running on the agent yet).
    pub executor: Option<(ExecutorId, ReservedResources)>,
}

impl LaunchRequest {
    /// The isolation the task gives up, as objects of the ACL action
    /// `relax_isolation`: `seccomp:unconfined`, and `host_volume:NAME` for
    /// each directory of the host it mounts.
    pub fn relaxed_isolation(&self) -> Vec<String> {
        let Some(c) = self.info.container.as_ref() else {
            return Vec::new();
        };
        let unconfined = (c.seccomp == "unconfined").then(|| "seccomp:unconfined".to_owned());
        let hosts = c
            .mounts
            .iter()
            .filter(|m| !m.host_volume.is_empty())
            .map(|m| format!("host_volume:{}", m.host_volume));
        unconfined.into_iter().chain(hosts).collect()
    }
}

/// One operation of an Accept, checked for syntax by the API layer.
#[allow(clippy::large_enum_variant)] // a handful per Accept, consumed at once
#[derive(Debug, Clone, PartialEq)]
pub enum OfferOperation {
    Launch(LaunchRequest),
    /// Reserve these resources of the offer for the offer's role.
    Reserve(ReservedResources),
    /// Give back these reserved resources of the offer.
    Unreserve(ReservedResources),
    /// Make persistent volumes of disk reserved for the offer's role.
    Create(Vec<NewVolume>),
    /// Remove persistent volumes listed in the offers.
    Destroy(Vec<VolumeId>),
}

/// An Accept that passed validation: what each operation takes.
struct Plan {
    agent: AgentId,
    role: Role,
    launches: Vec<(LaunchRequest, ReservedResources)>,
    reserve: Vec<Resources>,
    unreserve: Vec<Resources>,
    /// With whether the volume's disk is reserved by its create (it came
    /// from a reserve of this accept).
    create: Vec<(NewVolume, bool)>,
    destroy: Vec<VolumeId>,
    /// Custom executors the launches start.
    executors: Vec<NewExecutor>,
    /// Volumes of the offers not yet taken by a launch or a destroy.
    volumes: Vec<VolumeId>,
    left: ReservedResources,
}

impl Master {
    pub fn accept(
        &mut self,
        fid: &FrameworkId,
        offer_ids: &[OfferId],
        launches: Vec<LaunchRequest>,
        refuse: Option<Duration>,
        now: Instant,
    ) -> Result<(), MasterError> {
        let ops = launches.into_iter().map(OfferOperation::Launch).collect();
        self.accept_operations(fid, offer_ids, ops, refuse, now)
    }

    /// Accepts offers (all of one agent and one role) with launches and
    /// reservation changes. Nothing changes unless every operation fits.
    pub fn accept_operations(
        &mut self,
        fid: &FrameworkId,
        offer_ids: &[OfferId],
        ops: Vec<OfferOperation>,
        refuse: Option<Duration>,
        now: Instant,
    ) -> Result<(), MasterError> {
        let plan = match self.validate_accept(fid, offer_ids, ops) {
            Ok(v) => v,
            Err(e) => {
                self.counters.invalid_calls += 1;
                return Err(e);
            }
        };
        for id in offer_ids {
            self.take_offer(id);
            self.counters.offers_accepted += 1;
        }
        self.observed.accepted(fid, offer_ids.len());
        let framework_info = self.frameworks.get(fid).map(|f| f.info.clone());
        let Plan {
            agent,
            role,
            launches,
            reserve,
            unreserve,
            create,
            destroy,
            executors,
            left,
            ..
        } = plan;
        for new in executors {
            self.add_executor(fid, &agent, &role, new);
        }
        for (launch, taken) in launches {
            self.launch(fid, framework_info.as_ref(), &agent, &role, launch, taken);
        }
        let principal = framework_info.map(|i| i.principal).unwrap_or_default();
        for r in reserve {
            let held = ReservedResources::unreserved(r.clone());
            let op = RegistryOp::Reserve {
                agent: agent.clone(),
                role: role.clone(),
                resources: r.to_string(),
                principal: principal.clone(),
            };
            self.hold_for(fid, &role, &agent, held, op);
        }
        for r in unreserve {
            let held = ReservedResources::for_role(&role, r.clone());
            let op = RegistryOp::Unreserve {
                agent: agent.clone(),
                role: role.clone(),
                resources: r.to_string(),
            };
            self.hold_for(fid, &role, &agent, held, op);
        }
        for v in create {
            self.create_volume(fid, &role, &agent, v, &principal);
        }
        for id in destroy {
            self.destroy_volume(&agent, id);
        }
        self.alloc.recover_offered(fid, &role, &agent, &left);
        if let Some(refuse) = refuse.filter(|r| !r.is_zero())
            && !left.is_empty()
        {
            self.alloc.filter(fid, &agent, now + refuse);
        }
        self.allocation_needed = true;
        Ok(())
    }

    /// Records one validated task as STAGING on its agent, counts its
    /// resources as used, and sends it to the agent.
    fn launch(
        &mut self,
        fid: &FrameworkId,
        framework: Option<&v1::FrameworkInfo>,
        agent_id: &AgentId,
        role: &Role,
        launch: LaunchRequest,
        taken: ReservedResources,
    ) {
        let mut info = launch.info;
        // The agent reports back what its executor holds, as it was taken.
        if let Some(e) = info.executor.as_mut()
            && let Some(held) = ExecutorId::parse(&e.executor_id).ok().and_then(|eid| {
                self.agents
                    .get(agent_id)
                    .and_then(|a| a.executors.get(&(fid.clone(), eid)))
            })
        {
            e.resources = held.resources.to_proto();
            e.allocation_role = held.role.to_string();
        }
        self.alloc.offer_used(fid, role, agent_id, &taken);
        let flat = taken.total();
        let launched_at = unix_now();
        let mut kept = info.clone();
        Task::keep(&mut kept);
        info.agent_id = agent_id.to_string();
        info.resources = taken.to_proto();
        info.allocation_role = role.to_string();
        let task = Task {
            id: launch.task_id.clone(),
            framework_id: fid.clone(),
            agent_id: agent_id.clone(),
            role: role.clone(),
            resources: taken,
            info: kept,
            state: TaskState::Staging,
            last_status: None,
            unacked: None,
            forwarded: None,
            acked: None,
            launched_at,
            ended_at: None,
            healthy: None,
        };
        if let Some(fw) = self.frameworks.get_mut(fid) {
            fw.allocated.add(&flat);
            self.task_index.add(&task, Table::Active);
            if let Some(old) = fw.tasks.insert(launch.task_id.clone(), Arc::new(task)) {
                self.task_index.remove(&old, Table::Active); // refused before, by validation
            }
        }
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.used.add(&flat);
            agent.tasks.insert((fid.clone(), launch.task_id.clone()));
        }
        // Checked when the accept was validated; the agent's copy only.
        let info = match self.with_secrets(role, &info) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(task = %launch.task_id, error = %e, "secret unavailable at launch");
                info
            }
        };
        let run = v1::master_message::Message::RunTask(Box::new(v1::RunTask {
            framework_id: fid.to_string(),
            framework: framework.cloned(),
            task: Some(info),
            // Checkpointed with the task and reported back on
            // re-registration, so a new leader keeps it.
            launched_at,
        }));
        self.send_agent(agent_id, run);
        self.counters.tasks_launched += 1;
        self.note_task_added(fid, &launch.task_id, agent_id);
    }

    /// Moves offered resources to a hold until the reservation op commits.
    pub(super) fn hold_for(
        &mut self,
        fid: &FrameworkId,
        role: &Role,
        agent: &AgentId,
        held: ReservedResources,
        op: RegistryOp,
    ) {
        self.alloc.recover_offered(fid, role, agent, &held);
        self.propose_held(agent, vec![(op, held)], None);
    }

    /// Checks every operation against the offers before anything changes.
    fn validate_accept(
        &self,
        fid: &FrameworkId,
        offer_ids: &[OfferId],
        ops: Vec<OfferOperation>,
    ) -> Result<Plan, MasterError> {
        self.subscribed(fid)?;
        let mut plan = self.check_offers(fid, offer_ids)?;
        let fw = self
            .frameworks
            .get(fid)
            .ok_or_else(|| MasterError::NotSubscribed(fid.to_string()))?;
        let dynamic = self.unreservable(&plan.agent);
        let mut ids = HashSet::new();
        for op in ops {
            match op {
                OfferOperation::Reserve(r) => plan.reserve(&r)?,
                OfferOperation::Unreserve(r) => plan.unreserve(&r, &dynamic)?,
                OfferOperation::Create(volumes) => {
                    let max = super::volumes::MAX_VOLUMES_PER_AGENT;
                    if self.volume_count(&plan.agent) + plan.create.len() + volumes.len() > max {
                        return Err(MasterError::ResourceExhausted(format!(
                            "create: agent {} would keep more than {max} volumes",
                            plan.agent
                        )));
                    }
                    for v in volumes {
                        if self.volume_exists(&plan.agent, &v.id) || plan.create.iter().any(|(c, _)| c.id == v.id) {
                            return Err(MasterError::Invalid(format!(
                                "create: agent {} already has a volume {}",
                                plan.agent, v.id
                            )));
                        }
                        plan.create(v)?;
                    }
                }
                OfferOperation::Destroy(ids) => {
                    for id in ids {
                        if !plan.take_volume(&id) {
                            return Err(self.volume_unavailable(&plan.agent, &plan.role, id.as_str(), "destroy"));
                        }
                        plan.destroy.push(id);
                    }
                }
                OfferOperation::Launch(launch) => {
                    if !ids.insert(launch.task_id.clone())
                        || fw.tasks.contains_key(&launch.task_id)
                        || fw.completed_by_id.contains_key(&launch.task_id)
                    {
                        return Err(MasterError::DuplicateTask(launch.task_id.to_string()));
                    }
                    if super::secrets::names_secrets(&launch.info) {
                        self.with_secrets(&plan.role, &launch.info)?;
                    }
                    for id in mezzo_proto::volume::mounted_volumes(&launch.info) {
                        if plan.create.iter().any(|(c, _)| c.id.as_str() == id) {
                            return Err(MasterError::Invalid(format!(
                                "task {}: volume {id} is created by this accept; launch from a later offer that lists it",
                                launch.task_id
                            )));
                        }
                        let taken = VolumeId::parse(id).is_ok_and(|v| plan.take_volume(&v));
                        if !taken {
                            let what = format!("task {}", launch.task_id);
                            return Err(self.volume_unavailable(&plan.agent, &plan.role, id, &what));
                        }
                    }
                    self.plan_executor(
                        fid,
                        &plan.agent,
                        &plan.role,
                        &launch,
                        &mut plan.left,
                        &mut plan.executors,
                    )?;
                    plan.launch(launch)?;
                }
            }
        }
        Ok(plan)
    }

    /// The executor `launch` names must run on `agent` with the same info,
    /// or be started by this accept (`planned`), or fit in what is `left`
    /// of the offers: then it is added to `planned`.
    pub(super) fn plan_executor(
        &self,
        fid: &FrameworkId,
        agent: &AgentId,
        role: &Role,
        launch: &LaunchRequest,
        left: &mut ReservedResources,
        planned: &mut Vec<NewExecutor>,
    ) -> Result<(), MasterError> {
        let (Some((eid, asked)), Some(info)) = (&launch.executor, &launch.info.executor) else {
            return Ok(());
        };
        let same = |known: &v1::ExecutorInfo| {
            if super::executors::same_executor(known, info) {
                Ok(())
            } else {
                Err(MasterError::Invalid(format!(
                    "task {}: executor {eid} runs on agent {agent} with another ExecutorInfo; every task naming it there must carry the same",
                    launch.task_id
                )))
            }
        };
        let running = self
            .agents
            .get(agent)
            .and_then(|a| a.executors.get(&(fid.clone(), eid.clone())));
        if let Some(e) = running {
            return same(&e.info);
        }
        if let Some((_, known, _)) = planned.iter().find(|(id, ..)| id == eid) {
            return same(known);
        }
        let taken = left.take_for(role, asked).ok_or_else(|| MasterError::BeyondOffer {
            task: format!("{} (its executor {eid})", launch.task_id),
            asked: asked.to_string(),
            offered: left.to_string(),
        })?;
        *left = left.saturating_sub(&taken);
        planned.push((eid.clone(), (**info).clone(), taken));
        Ok(())
    }

    /// The offers must be the framework's, named once each, of one agent
    /// (connected) and one role: an empty plan over what they hold.
    fn check_offers(&self, fid: &FrameworkId, offer_ids: &[OfferId]) -> Result<Plan, MasterError> {
        if offer_ids.is_empty() {
            return Err(MasterError::Invalid("accept names no offers".into()));
        }
        let mut seen = HashSet::new();
        let mut first: Option<(&OfferId, &AgentId, &Role)> = None;
        let mut offered = ReservedResources::default();
        let mut volumes = Vec::new();
        for id in offer_ids {
            if !seen.insert(id) {
                return Err(MasterError::Invalid(format!("offer {id} is named twice")));
            }
            let offer = self.owned_offer(fid, id)?;
            match first {
                Some((f, a, _)) if a != &offer.agent_id => {
                    return Err(MasterError::MixedAgents(f.to_string(), id.to_string()));
                }
                Some((f, _, r)) if r != &offer.role => {
                    return Err(MasterError::Invalid(format!(
                        "offers {f} and {id} were made to different roles ({r} and {}); one accept may use offers of one role only",
                        offer.role
                    )));
                }
                _ => first = Some((id, &offer.agent_id, &offer.role)),
            }
            offered.add(&offer.resources);
            volumes.extend(offer.volumes.iter().cloned());
        }
        let (agent, role) = first
            .map(|(_, a, r)| (a.clone(), r.clone()))
            .ok_or_else(|| MasterError::Invalid("no offers".into()))?;
        if self.agents.get(&agent).is_none_or(|a| a.conn.is_none()) {
            return Err(MasterError::AgentDisconnected(agent.to_string()));
        }
        Ok(Plan {
            agent,
            role,
            launches: Vec::new(),
            reserve: Vec::new(),
            unreserve: Vec::new(),
            create: Vec::new(),
            destroy: Vec::new(),
            executors: Vec::new(),
            volumes,
            left: offered,
        })
    }
}

impl Plan {
    /// Reserves part of what is left unreserved for the offer's role.
    fn reserve(&mut self, r: &ReservedResources) -> Result<(), MasterError> {
        let role = &self.role;
        let amount = operation_part(r, role, "reserve")?;
        let left = self.left.reserve(role, &amount).ok_or_else(|| {
            MasterError::Invalid(format!(
                "reserve: {amount} is not among the unreserved resources left in the offer ({})",
                self.left.unreserved
            ))
        })?;
        // Reserved now, they are not the framework's to use in this accept.
        self.left = left.saturating_sub(&ReservedResources::for_role(role, amount.clone()));
        self.reserve.push(amount);
        Ok(())
    }

    /// Gives back part of the role's dynamic reservation left in the offer
    /// (`dynamic`: what the agent has that may be unreserved).
    fn unreserve(&mut self, r: &ReservedResources, dynamic: &ReservedResources) -> Result<(), MasterError> {
        let role = &self.role;
        let amount = operation_part(r, role, "unreserve")?;
        if !dynamic.part(role).is_some_and(|d| d.contains(&amount)) {
            return Err(MasterError::Invalid(format!(
                "unreserve: {amount} is not dynamically reserved for role {role} on agent {} (static reservations cannot be unreserved)",
                self.agent
            )));
        }
        self.left = self
            .left
            .checked_sub(&ReservedResources::for_role(role, amount.clone()))
            .ok_or_else(|| {
                MasterError::Invalid(format!(
                    "unreserve: {amount} is not among the resources reserved for {role} left in the offer"
                ))
            })?;
        self.unreserve.push(amount);
        Ok(())
    }

    /// Turns disk reserved for the offer's role into a volume: disk left
    /// in the offer, else disk an earlier reserve of this accept reserves
    /// (the create then reserves it itself, in one registry op).
    fn create(&mut self, v: NewVolume) -> Result<(), MasterError> {
        let role = &self.role;
        if role.is_star() {
            return Err(MasterError::Invalid(
                "create: the offer was made to role *, which cannot hold volumes; subscribe in a named role and reserve disk first".into(),
            ));
        }
        if let Some(meant) = v.role.as_ref().filter(|r| *r != role) {
            return Err(MasterError::Invalid(format!(
                "create: volume {} is meant for role {meant}, but the offer was made to role {role}",
                v.id
            )));
        }
        let disk = ReservedResources::for_role(role, v.disk.clone());
        if let Some(left) = self.left.checked_sub(&disk) {
            self.left = left;
            self.create.push((v, false));
            return Ok(());
        }
        if let Some(i) = self.reserve.iter().position(|r| r.contains(&v.disk)) {
            self.reserve[i] = self.reserve[i].saturating_sub(&v.disk);
            if self.reserve[i].is_empty() {
                self.reserve.remove(i);
            }
            self.create.push((v, true));
            return Ok(());
        }
        let reserved = self.left.part(role).map(|r| r.to_string()).unwrap_or_default();
        Err(MasterError::Invalid(format!(
            "create: volume {} needs {} of disk reserved for role {role}, in the offer or by a reserve before it in this accept; the offer has {} reserved for it left",
            v.id,
            v.disk,
            if reserved.is_empty() {
                "nothing".into()
            } else {
                reserved
            }
        )))
    }

    /// Takes a volume of the offers for a launch or a destroy.
    fn take_volume(&mut self, id: &VolumeId) -> bool {
        match self.volumes.iter().position(|v| v == id) {
            Some(i) => {
                self.volumes.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Takes a task's resources from what is left.
    fn launch(&mut self, launch: LaunchRequest) -> Result<(), MasterError> {
        let taken = self
            .left
            .take_for(&self.role, &launch.resources)
            .ok_or_else(|| MasterError::BeyondOffer {
                task: launch.task_id.to_string(),
                asked: launch.resources.to_string(),
                offered: self.left.to_string(),
            })?;
        self.left = self.left.saturating_sub(&taken);
        self.launches.push((launch, taken));
        Ok(())
    }
}

/// The resources of a Reserve or Unreserve: all for the offer's role.
fn operation_part(r: &ReservedResources, role: &Role, what: &str) -> Result<Resources, MasterError> {
    if role.is_star() {
        return Err(MasterError::Invalid(format!(
            "{what}: the offer was made to role *, which cannot hold reservations; subscribe in a named role"
        )));
    }
    if !r.unreserved.is_empty() || r.reserved.keys().any(|k| k != role) || r.is_empty() {
        return Err(MasterError::Invalid(format!(
            "{what}: every resource must name the offer's role {role} (e.g. cpus({role}):1), got {r}"
        )));
    }
    Ok(r.reserved.get(role).cloned().unwrap_or_default())
}
