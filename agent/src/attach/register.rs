//! The agent's identity: the persisted agent id and the first message of
//! every connection (`Register` or `Reregister`).

use std::path::Path;

use mezzo_proto::ids::AgentId;
use mezzo_proto::reservation::ReservedResources;
use mezzo_proto::v1;

use crate::task::table::{ExecutorView, TaskView};
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
    /// Named in every `Register` of this process, so that a retry whose
    /// first attempt the master admitted gets that attempt's id.
    pub registration: String,
}

impl Identity {
    pub fn info(&self) -> v1::AgentInfo {
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
    /// `executors` are the custom executors running here (their
    /// resources are held besides their tasks').
    pub fn first_message(
        &self,
        agent_id: Option<&AgentId>,
        tasks: Vec<TaskView>,
        executors: Vec<ExecutorView>,
        complete: bool,
    ) -> v1::AgentMessage {
        use v1::agent_message::Message;
        let message = match agent_id {
            None => Message::Register(v1::Register {
                agent: Some(self.info()),
                registration: self.registration.clone(),
            }),
            Some(id) => Message::Reregister(v1::Reregister {
                agent_id: id.to_string(),
                agent: Some(self.info()),
                tasks: reported_tasks(tasks),
                tasks_complete: complete,
                executors: executors
                    .into_iter()
                    .map(|e| v1::RunningExecutor {
                        framework_id: e.framework_id,
                        executor: Some(e.info),
                    })
                    .collect(),
            }),
        };
        v1::AgentMessage { message: Some(message) }
    }
}

/// Bytes of status history one re-registration carries beyond each
/// task's latest status, well inside the 4 MiB message limit.
const HISTORY_BUDGET: usize = 1 << 20;

/// The tasks as a re-registration reports them: each with its launch time
/// and its latest status; and, newest tasks first (live ones, then the
/// recently completed, which a master's history mostly holds already),
/// its earlier statuses while they fit in [`HISTORY_BUDGET`].
fn reported_tasks(tasks: Vec<TaskView>) -> Vec<v1::RunningTask> {
    let mut budget = HISTORY_BUDGET;
    let mut out: Vec<v1::RunningTask> = tasks
        .into_iter()
        .rev()
        .map(|t| {
            let mut statuses: Vec<v1::TaskStatus> = t.statuses.into_iter().map(without_ids).collect();
            let earlier: usize = statuses
                .iter()
                .rev()
                .skip(1)
                .map(|s| prost::Message::encoded_len(s) + 4)
                .sum();
            if earlier <= budget {
                budget -= earlier;
            } else {
                statuses.drain(..statuses.len().saturating_sub(1));
            }
            v1::RunningTask {
                task: Some(t.info),
                framework_id: t.key.framework_id.to_string(),
                state: t.state.to_proto() as i32,
                end_unacknowledged: t.end_unacknowledged,
                launched_at: t.launched_at,
                statuses,
            }
        })
        .collect();
    out.reverse();
    out
}

/// A status as a re-registration carries it: without the ids and uuid,
/// which the master takes from the task instead (it trusts none of the
/// agent's): 110 bytes fewer a status on the wire, and four strings
/// fewer for a new leader to decode and drop, for each of the 800,000
/// statuses of a failover at 400,000 tasks. (Public for the simulator,
/// which re-registers as the agent does.)
pub fn without_ids(mut s: v1::TaskStatus) -> v1::TaskStatus {
    s.task_id = String::new();
    s.framework_id = String::new();
    s.agent_id = String::new();
    s.uuid = Vec::new();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, statuses: usize, message_bytes: usize) -> TaskView {
        TaskView {
            key: crate::key::TaskKey::parse("fw", id).expect("key"),
            info: v1::TaskInfo {
                task_id: id.into(),
                ..Default::default()
            },
            state: mezzo_proto::state::TaskState::Running,
            sandbox: Default::default(),
            usage: None,
            end_unacknowledged: false,
            launched_at: 7.0,
            statuses: (0..statuses)
                .map(|i| v1::TaskStatus {
                    task_id: id.into(),
                    framework_id: "fw".into(),
                    agent_id: "agent".into(),
                    uuid: vec![7; 16],
                    message: "m".repeat(message_bytes),
                    timestamp: i as f64,
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// Issue 21: every task keeps its launch time and latest status; the
    /// earlier statuses fit a budget, the newest tasks' first.
    #[test]
    fn a_reregistration_keeps_latest_statuses_and_bounds_the_rest() {
        // 400 tasks with 16 statuses of ~256 bytes: about 1.6 MB of history.
        let tasks: Vec<TaskView> = (0..400).map(|i| view(&format!("t{i}"), 16, 256)).collect();
        let out = reported_tasks(tasks);
        assert_eq!(out.len(), 400);
        assert!(
            out.iter()
                .enumerate()
                .all(|(i, t)| t.task.as_ref().is_some_and(|x| x.task_id == format!("t{i}")))
        );
        assert!(out.iter().all(|t| t.launched_at == 7.0));
        assert!(
            out.iter()
                .all(|t| t.statuses.last().is_some_and(|s| s.timestamp == 15.0))
        );
        // The master takes a status's ids from its task, and trusts none.
        assert!(
            out.iter().flat_map(|t| &t.statuses).all(|s| s.task_id.is_empty()
                && s.framework_id.is_empty()
                && s.agent_id.is_empty()
                && s.uuid.is_empty())
        );
        assert_eq!(
            out.last().map(|t| t.statuses.len()),
            Some(16),
            "the newest keep their history"
        );
        assert_eq!(
            out.first().map(|t| t.statuses.len()),
            Some(1),
            "the oldest keep their latest"
        );
        let history: usize = out
            .iter()
            .map(|t| t.statuses.iter().map(prost::Message::encoded_len).sum::<usize>())
            .sum();
        assert!(history < HISTORY_BUDGET + 400 * 300, "{history}");
    }

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
