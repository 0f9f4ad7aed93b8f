//! Accept: validate launches against the offers, then start them.
//!
//! Validation is complete before anything changes: an invalid Accept
//! launches nothing, leaves the offers outstanding and usable, and tells
//! the framework why.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mezzo_proto::ids::{AgentId, FrameworkId, OfferId, TaskId};
use mezzo_proto::resources::Resources;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;

use super::{Master, Task, unix_now};
use crate::error::MasterError;

/// A task to launch, already checked for syntax by the API layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    pub task_id: TaskId,
    pub resources: Resources,
    pub info: v1::TaskInfo,
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
        let result = self.validate_accept(fid, offer_ids, &launches);
        let (agent_id, mut left) = match result {
            Ok(v) => v,
            Err(e) => {
                self.counters.invalid_calls += 1;
                return Err(e);
            }
        };
        for id in offer_ids {
            self.rescind_offer(id, false);
            self.counters.offers_accepted += 1;
        }
        self.ops.accepted(fid, offer_ids.len());
        let framework_info = self.frameworks.get(fid).map(|f| f.info.clone());
        for launch in launches {
            left = left.checked_sub(&launch.resources).unwrap_or_default();
            let mut info = launch.info;
            info.agent_id = agent_id.to_string();
            let task = Task {
                id: launch.task_id.clone(),
                framework_id: fid.clone(),
                agent_id: agent_id.clone(),
                resources: launch.resources.clone(),
                info: info.clone(),
                state: TaskState::Staging,
                last_status: None,
                unacked: None,
                launched_at: unix_now(),
            };
            if let Some(fw) = self.frameworks.get_mut(fid) {
                fw.allocated.add(&launch.resources);
                fw.tasks.insert(launch.task_id.clone(), task);
            }
            if let Some(agent) = self.agents.get_mut(&agent_id) {
                agent.used.add(&launch.resources);
                agent.tasks.insert((fid.clone(), launch.task_id.clone()));
            }
            let run = v1::master_message::Message::RunTask(v1::RunTask {
                framework_id: fid.to_string(),
                framework: framework_info.clone(),
                task: Some(info),
            });
            self.send_agent(&agent_id, run);
            self.counters.tasks_launched += 1;
            self.note_task_added(fid, &launch.task_id, &agent_id);
        }
        if let Some(refuse) = refuse.filter(|r| !r.is_zero())
            && !left.is_empty()
        {
            self.filters.insert((fid.clone(), agent_id), now + refuse);
        }
        self.allocation_needed = true;
        Ok(())
    }

    /// Returns the agent of the offers and their summed resources.
    fn validate_accept(
        &self,
        fid: &FrameworkId,
        offer_ids: &[OfferId],
        launches: &[LaunchRequest],
    ) -> Result<(AgentId, Resources), MasterError> {
        self.subscribed(fid)?;
        if offer_ids.is_empty() {
            return Err(MasterError::Invalid("accept names no offers".into()));
        }
        let mut seen = HashSet::new();
        let mut agent: Option<(&OfferId, &AgentId)> = None;
        let mut offered = Resources::default();
        for id in offer_ids {
            if !seen.insert(id) {
                return Err(MasterError::Invalid(format!("offer {id} is named twice")));
            }
            let offer = self.owned_offer(fid, id)?;
            match agent {
                Some((first, a)) if a != &offer.agent_id => {
                    return Err(MasterError::MixedAgents(first.to_string(), id.to_string()));
                }
                _ => agent = Some((id, &offer.agent_id)),
            }
            offered.add(&offer.resources);
        }
        let agent_id = agent
            .map(|(_, a)| a.clone())
            .ok_or_else(|| MasterError::Invalid("no offers".into()))?;
        if self.agents.get(&agent_id).is_none_or(|a| a.conn.is_none()) {
            return Err(MasterError::AgentDisconnected(agent_id.to_string()));
        }
        let fw = self
            .frameworks
            .get(fid)
            .ok_or_else(|| MasterError::NotSubscribed(fid.to_string()))?;
        let mut left = offered.clone();
        let mut ids = HashSet::new();
        for launch in launches {
            if !ids.insert(&launch.task_id)
                || fw.tasks.contains_key(&launch.task_id)
                || fw.completed_ids.contains(&launch.task_id)
            {
                return Err(MasterError::DuplicateTask(launch.task_id.to_string()));
            }
            left = left
                .checked_sub(&launch.resources)
                .ok_or_else(|| MasterError::BeyondOffer {
                    task: launch.task_id.to_string(),
                    asked: launch.resources.to_string(),
                    offered: left.to_string(),
                })?;
        }
        Ok((agent_id, offered))
    }
}
