//! Persistent volumes (docs/frameworks.md, "Volumes"): disk reserved for a
//! role, made into a named directory on its agent by an Accept's `create`
//! and removed by its `destroy`. The registry keeps them; the agent is told
//! its whole list after it registers and after each change. A volume's disk
//! leaves the agent's offerable resources for as long as it exists; the
//! volume itself travels in offers to its role while no task uses it.

use foldhash::{HashMap, HashMapExt};
use std::collections::BTreeMap;

use mezzo_proto::ids::{AgentId, FrameworkId, TaskId, VolumeId};
use mezzo_proto::reservation::{ReservedResources, Role};
use mezzo_proto::resources::{Mib, Resources};
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;

use super::Master;
use crate::error::MasterError;
use crate::registry::{Registry, RegistryOp, VolumeRecord};

/// Largest volume, in MiB (1 PiB): beyond any disk, and exact in an f64.
const MAX_VOLUME_MIB: f64 = (1u64 << 30) as f64;
/// Most volumes one agent keeps: its whole list goes in one message.
pub const MAX_VOLUMES_PER_AGENT: usize = 1000;

/// A volume an Accept creates, checked for syntax by the API layer.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVolume {
    pub id: VolumeId,
    pub disk: Resources,
    /// The role the framework means it for (Mesos' CREATE names it in the
    /// volume's reservation); refused unless it is the offer's.
    pub role: Option<Role>,
}

/// Checks one volume of a `create`.
pub fn new_volume(v: &v1::Volume) -> Result<NewVolume, MasterError> {
    let id = VolumeId::parse(&v.id)?;
    let mib = v.disk_mib;
    if !mib.is_finite() || mib < 1.0 || mib.fract() != 0.0 || mib > MAX_VOLUME_MIB {
        return Err(MasterError::Invalid(format!(
            "create: volume {id} needs disk_mib, a whole number of MiB from 1 to {MAX_VOLUME_MIB}, not {mib}"
        )));
    }
    if !v.agent_id.is_empty() || !v.principal.is_empty() || v.created_at != 0.0 {
        return Err(MasterError::Invalid(format!(
            "create: volume {id}: give id, disk_mib and at most role; the master sets agent, principal and time"
        )));
    }
    let role = match v.role.as_str() {
        "" => None,
        r => Some(Role::parse(r).map_err(|e| MasterError::Invalid(format!("create: volume {id}: {e}")))?),
    };
    let disk = Resources {
        disk: Mib(mib as u64),
        ..Default::default()
    };
    Ok(NewVolume { id, disk, role })
}

/// An agent's resources less the disk its volumes hold (a volume whose
/// disk the agent no longer has reserved is skipped, with a warning).
pub(crate) fn less_volumes(
    id: &AgentId,
    mut total: ReservedResources,
    volumes: Option<&BTreeMap<VolumeId, VolumeRecord>>,
) -> ReservedResources {
    for (vid, v) in volumes.into_iter().flatten() {
        match total.checked_sub(&ReservedResources::for_role(&v.role, v.disk.clone())) {
            Some(t) => total = t,
            None => {
                tracing::warn!(agent = %id, volume = %vid, role = %v.role, "the agent no longer has the reserved disk of a volume; offering its disk anyway")
            }
        }
    }
    total
}

pub(crate) fn volume_proto(agent: &AgentId, id: &VolumeId, v: &VolumeRecord) -> v1::Volume {
    v1::Volume {
        id: id.to_string(),
        disk_mib: v.disk.disk.0 as f64,
        role: v.role.to_string(),
        agent_id: agent.to_string(),
        principal: v.principal.clone(),
        created_at: v.created_at,
    }
}

/// The volumes of `agent` in the registry.
pub(crate) fn of_agent<'a>(registry: &'a Registry, agent: &AgentId) -> Option<&'a BTreeMap<VolumeId, VolumeRecord>> {
    registry.volumes.get(agent)
}

impl Master {
    /// Tells the agent every volume it keeps.
    pub(crate) fn send_volumes(&mut self, agent: &AgentId) {
        let volumes = of_agent(&self.registry, agent)
            .into_iter()
            .flatten()
            .map(|(id, v)| volume_proto(agent, id, v))
            .collect();
        self.send_agent(agent, v1::master_message::Message::Volumes(v1::Volumes { volumes }));
    }

    /// The task that mounts each volume of `agent`: an active one, or one
    /// on an unreachable agent (it may well still be running).
    pub(crate) fn volume_users(&self, agent: &AgentId) -> HashMap<String, (FrameworkId, TaskId)> {
        let mut users = HashMap::new();
        if of_agent(&self.registry, agent).is_none_or(BTreeMap::is_empty) {
            return users;
        }
        let Some(a) = self.agents.get(agent) else { return users };
        for (fid, tid) in &a.tasks {
            let Some(t) = self.frameworks.get(fid).and_then(|f| f.tasks.get(tid)) else {
                continue;
            };
            if t.state.is_terminal() && t.state != TaskState::Unreachable {
                continue;
            }
            for id in mezzo_proto::volume::mounted_volumes(&t.info) {
                users.insert(id.to_owned(), (fid.clone(), tid.clone()));
            }
        }
        users
    }

    /// A volume with a `create` or `destroy` proposed and not committed.
    fn volume_pending(&self, agent: &AgentId, id: &VolumeId) -> bool {
        self.pending_ops.iter().any(|(op, ..)| match op {
            RegistryOp::CreateVolume { agent: a, id: i, .. } | RegistryOp::DestroyVolume { agent: a, id: i } => {
                a == agent && i == id
            }
            _ => false,
        })
    }

    /// The volumes a new offer to `role` on `agent` lists: the role's, used
    /// by no task, in no other outstanding offer, not being destroyed.
    pub(super) fn offerable_volumes(&self, agent: &AgentId, role: &Role) -> Vec<VolumeId> {
        let Some(volumes) = of_agent(&self.registry, agent).filter(|v| v.values().any(|v| &v.role == role)) else {
            return Vec::new();
        };
        let users = self.volume_users(agent);
        let offered: Vec<&VolumeId> = self
            .agent_offers
            .get(agent)
            .into_iter()
            .flatten()
            .filter_map(|o| self.offers.get(o))
            .flat_map(|o| &o.volumes)
            .collect();
        volumes
            .iter()
            .filter(|(id, v)| {
                &v.role == role
                    && !users.contains_key(id.as_str())
                    && !offered.contains(id)
                    && !self.volume_pending(agent, id)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Why a launch or `destroy` may not have volume `id`, which is not in
    /// what is left of the accept's offers. Another role's volume is not
    /// named: a framework learns nothing of other roles' volumes and tasks.
    pub(super) fn volume_unavailable(&self, agent: &AgentId, role: &Role, id: &str, what: &str) -> MasterError {
        let known = of_agent(&self.registry, agent)
            .and_then(|v| v.iter().find(|(k, _)| k.as_str() == id))
            .filter(|(_, v)| &v.role == role);
        let why = match (known, self.volume_users(agent).get(id)) {
            (None, _) => format!("agent {agent} has no volume {id} of role {role}"),
            (Some(_), Some((fid, tid))) => format!("volume {id} is in use by task {tid} of framework {fid}"),
            (Some(_), None) => format!(
                "volume {id} is not among the volumes of these offers (it is in another offer, being destroyed, or taken by an earlier operation of this accept)"
            ),
        };
        MasterError::Invalid(format!("{what}: {why}"))
    }

    /// The volumes `agent` has and is about to have.
    pub(super) fn volume_count(&self, agent: &AgentId) -> usize {
        let pending = self
            .pending_ops
            .iter()
            .filter(|(op, a, ..)| a == agent && matches!(op, RegistryOp::CreateVolume { .. }))
            .count();
        of_agent(&self.registry, agent).map_or(0, BTreeMap::len) + pending
    }

    /// Whether `agent` has, or is about to have, a volume `id`.
    pub(super) fn volume_exists(&self, agent: &AgentId, id: &VolumeId) -> bool {
        of_agent(&self.registry, agent).is_some_and(|v| v.contains_key(id)) || self.volume_pending(agent, id)
    }

    /// The proposal of a `create` of the Accept's framework; `reserve`:
    /// its disk is reserved by this op (it is unreserved in the offer).
    pub(super) fn create_volume(
        &mut self,
        fid: &FrameworkId,
        role: &Role,
        agent: &AgentId,
        (v, reserve): (NewVolume, bool),
        principal: &str,
    ) {
        let held = match reserve {
            true => ReservedResources::unreserved(v.disk.clone()),
            false => ReservedResources::for_role(role, v.disk.clone()),
        };
        let op = RegistryOp::CreateVolume {
            reserve,
            agent: agent.clone(),
            id: v.id,
            volume: VolumeRecord {
                role: role.clone(),
                disk: v.disk,
                principal: principal.to_owned(),
                created_at: mezzo_proto::clock::unix_now(),
            },
        };
        self.hold_for(fid, role, agent, held, op);
    }

    /// A volume of `role` was created or destroyed on `agent`: the agent is
    /// told, and its outstanding offers to the role (made meanwhile,
    /// without the new volume or the disk given back) are rescinded so that
    /// whole ones are made at once; alone, a volume or some disk would wait
    /// for the next. Other roles' offers are not the volume's business.
    pub(super) fn volumes_changed(&mut self, agent: &AgentId, role: Option<&Role>) {
        self.send_volumes(agent);
        let stale: Vec<_> = self
            .offers_of(agent)
            .into_iter()
            .filter(|o| self.offers.get(o).is_some_and(|o| role.is_none_or(|r| &o.role == r)))
            .collect();
        for id in stale {
            self.rescind_offer(&id, true);
        }
    }

    /// The proposal of a `destroy`: nothing to hold, the volume's disk is
    /// not offerable until the op commits.
    pub(super) fn destroy_volume(&mut self, agent: &AgentId, id: VolumeId) {
        self.propose_destroy(agent, id, None);
    }

    fn propose_destroy(&mut self, agent: &AgentId, id: VolumeId, ticket: Option<u64>) {
        let op = RegistryOp::DestroyVolume {
            agent: agent.clone(),
            id,
        };
        self.propose_held(agent, vec![(op, ReservedResources::default())], ticket);
    }

    /// An operator's destroy (`mezzo volumes destroy`): refused while a
    /// task uses the volume; an offer listing it is rescinded.
    pub(super) fn destroy_for_operator(
        &mut self,
        ticket: u64,
        agent: AgentId,
        id: VolumeId,
    ) -> Result<(), MasterError> {
        if !of_agent(&self.registry, &agent).is_some_and(|v| v.contains_key(&id)) {
            return Err(MasterError::UnknownVolume {
                agent: agent.to_string(),
                volume: id.to_string(),
            });
        }
        // Only a connected agent has told this leader what it runs.
        if self.agents.get(&agent).is_none_or(|a| a.conn.is_none()) {
            return Err(MasterError::AgentDisconnected(agent.to_string()));
        }
        if let Some((fid, tid)) = self.volume_users(&agent).get(id.as_str()) {
            return Err(MasterError::Invalid(format!(
                "volume {id} is in use by task {tid} of framework {fid}; kill the task first"
            )));
        }
        if self.volume_pending(&agent, &id) {
            return Err(MasterError::Invalid(format!("volume {id} is being destroyed already")));
        }
        let listing: Vec<_> = self
            .offers_of(&agent)
            .into_iter()
            .filter(|o| self.offers.get(o).is_some_and(|o| o.volumes.contains(&id)))
            .collect();
        for o in listing {
            self.rescind_offer(&o, true);
        }
        self.propose_destroy(&agent, id, Some(ticket));
        Ok(())
    }

    /// The role of a volume, for the operator API's ACL check.
    pub fn volume_role(&self, agent: &AgentId, id: &VolumeId) -> Option<Role> {
        of_agent(&self.registry, agent)?.get(id).map(|v| v.role.clone())
    }

    /// The volumes `/state` shows, with the task using each.
    pub(crate) fn volume_views(&self) -> Vec<VolumeView> {
        let mut out = Vec::new();
        for (agent, volumes) in &self.registry.volumes {
            let users = self.volume_users(agent);
            let hostname = self.agents.get(agent).map(|a| a.hostname.clone()).unwrap_or_default();
            for (id, v) in volumes {
                let used_by = users.get(id.as_str()).map(|(f, t)| VolumeUser {
                    framework_id: f.to_string(),
                    task_id: t.to_string(),
                });
                out.push(VolumeView {
                    volume: volume_proto(agent, id, v).into(),
                    hostname: hostname.clone(),
                    used_by,
                });
            }
        }
        out
    }
}

/// A volume in `/state` (`mezzo volumes`, the dashboard).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VolumeView {
    #[serde(flatten)]
    pub volume: VolumeFields,
    pub hostname: String,
    /// The active task that mounts it; `None` while it is free.
    pub used_by: Option<VolumeUser>,
}

/// [`v1::Volume`] as JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VolumeFields {
    pub id: String,
    pub agent_id: String,
    pub role: String,
    pub disk_mib: f64,
    pub principal: String,
    pub created_at: f64,
}

impl From<v1::Volume> for VolumeFields {
    fn from(v: v1::Volume) -> VolumeFields {
        VolumeFields {
            id: v.id,
            agent_id: v.agent_id,
            role: v.role,
            disk_mib: v.disk_mib,
            principal: v.principal,
            created_at: v.created_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VolumeUser {
    pub framework_id: String,
    pub task_id: String,
}
