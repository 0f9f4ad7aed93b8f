//! The agent's identity: the persisted agent id and the first message of
//! every connection (`Register` or `Reregister`).

use std::path::Path;

use mezzo_proto::ids::AgentId;
use mezzo_proto::reservation::ReservedResources;
use mezzo_proto::v1;

use crate::task::table::TaskView;
use crate::{AgentError, paths};

/// The agent id stored by an earlier run, if any.
pub fn load_agent_id(work_dir: &Path) -> Result<Option<AgentId>, AgentError> {
    let path = paths::agent_id_file(work_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => AgentId::parse(text.trim())
            .map(Some)
            .map_err(|source| AgentError::BadAgentId { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::io("read", path)(e)),
    }
}

pub fn store_agent_id(work_dir: &Path, id: &AgentId) -> Result<(), AgentError> {
    paths::write_atomic(&paths::agent_id_file(work_dir), id.as_str().as_bytes())
}

/// What the agent tells a master about itself.
#[derive(Debug, Clone)]
pub struct Identity {
    pub hostname: String,
    /// Static reservations included.
    pub resources: ReservedResources,
    pub attributes: Vec<(String, String)>,
    pub http_address: String,
}

impl Identity {
    fn info(&self) -> v1::AgentInfo {
        v1::AgentInfo {
            hostname: self.hostname.clone(),
            resources: self.resources.to_proto(),
            attributes: self
                .attributes
                .iter()
                .map(|(name, value)| v1::Attribute {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            http_address: self.http_address.clone(),
        }
    }

    /// `Register` for a new agent, else `Reregister` with every task it
    /// knows, saying whether that list is complete.
    pub fn first_message(&self, agent_id: Option<&AgentId>, tasks: Vec<TaskView>, complete: bool) -> v1::AgentMessage {
        use v1::agent_message::Message;
        let message = match agent_id {
            None => Message::Register(v1::Register {
                agent: Some(self.info()),
            }),
            Some(id) => Message::Reregister(v1::Reregister {
                agent_id: id.to_string(),
                agent: Some(self.info()),
                tasks: tasks
                    .into_iter()
                    .map(|t| v1::RunningTask {
                        task: Some(t.info),
                        framework_id: t.key.framework_id.to_string(),
                        state: t.state.to_proto() as i32,
                        end_unacknowledged: t.end_unacknowledged,
                    })
                    .collect(),
                tasks_complete: complete,
            }),
        };
        v1::AgentMessage { message: Some(message) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_id_survives_a_restart() -> Result<(), AgentError> {
        let dir = tempfile::tempdir().map_err(AgentError::io("create", "tempdir"))?;
        assert_eq!(load_agent_id(dir.path())?, None);
        let id = AgentId::generate();
        store_agent_id(dir.path(), &id)?;
        assert_eq!(load_agent_id(dir.path())?, Some(id));
        std::fs::write(paths::agent_id_file(dir.path()), "../bad").map_err(AgentError::io("write", "agent_id"))?;
        assert!(matches!(load_agent_id(dir.path()), Err(AgentError::BadAgentId { .. })));
        Ok(())
    }
}
