//! The observed view: the controller's tasks by id, with what their
//! launch knew (location, ports, labels) and what the master last said.
//! Pure: it takes updates and launches and answers which key changed.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use mezzo_proto::v1;
use serde::{Deserialize, Serialize};

use crate::offers::Location;
use crate::{TaskState, task_state};

/// One task of the controller, as last observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Its id, `<key>.<name>`.
    pub id: String,
    /// The key (desired object) it belongs to.
    pub key: String,
    /// Its state: `Staging` once launched, `Unknown` while nobody has said
    /// (after a restart, until the master answers).
    pub state: TaskState,
    /// The last update, if any came since this process started.
    pub status: Option<v1::TaskStatus>,
    /// Where it runs. Only `agent_id` is known for an adopted task.
    pub location: Location,
    /// Its ports, in the order the launch asked for them.
    pub ports: Vec<u64>,
    /// The labels its launch gave it.
    pub labels: BTreeMap<String, String>,
    /// When it was launched (`None` for an adopted task).
    pub launched: Option<SystemTime>,
    /// The controller asked for it to be killed.
    pub killing: bool,
    /// Reported by the master but never launched through the store: it
    /// has no location, ports or labels (a task no record holds).
    pub adopted: bool,
}

impl Task {
    /// True once the task has ended (or the master knows nothing of it);
    /// the reconcile after its end sees it once, then it is dropped.
    pub fn ended(&self) -> bool {
        self.state.is_terminal() || (self.state == TaskState::Unknown && self.status.is_some())
    }
}

/// What the store keeps of a task: enough to follow it after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    agent_id: String,
    host: String,
    #[serde(default)]
    attributes: Vec<(String, String)>,
    #[serde(default)]
    ports: Vec<u64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Unix seconds.
    launched: f64,
}

/// The tasks of every key, by task id.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    tasks: BTreeMap<String, Task>,
}

/// The key a task id belongs to: what stands before its first `.`.
pub(crate) fn key_of(task_id: &str) -> Option<&str> {
    task_id.split_once('.').map(|(k, _)| k).filter(|k| !k.is_empty())
}

impl Observed {
    pub(crate) fn get(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Task> {
        self.tasks.get_mut(id)
    }

    /// The tasks of `key`, oldest launch first (adopted ones last).
    pub(crate) fn of_key(&self, key: &str) -> Vec<Task> {
        let mut v: Vec<Task> = self.tasks.values().filter(|t| t.key == key).cloned().collect();
        v.sort_by(|a, b| (a.launched.is_none(), a.launched, &a.id).cmp(&(b.launched.is_none(), b.launched, &b.id)));
        v
    }

    /// Keys that have tasks.
    pub(crate) fn keys(&self) -> std::collections::BTreeSet<String> {
        self.tasks.values().map(|t| t.key.clone()).collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// A task the controller is about to launch.
    pub(crate) fn launching(&mut self, task: Task) {
        self.tasks.insert(task.id.clone(), task);
    }

    /// Forgets a task (its launch was refused, or its end was seen).
    pub(crate) fn remove(&mut self, id: &str) -> Option<Task> {
        self.tasks.remove(id)
    }

    /// Follows an update. Answers the key whose view changed: a known
    /// task's new state, or an unknown live task adopted (its id names
    /// the key; also one reported live again after its end). A repeated
    /// end, or the end of a task not held, changes nothing.
    pub(crate) fn update(&mut self, status: &v1::TaskStatus) -> Option<String> {
        let state = task_state(status).unwrap_or(TaskState::Unknown);
        if let Some(t) = self.tasks.get_mut(&status.task_id) {
            if t.ended() {
                if state.is_terminal() || state == TaskState::Unknown {
                    return None;
                }
                // Back from the dead (its agent returned after
                // TASK_UNREACHABLE) before its end was shown: a task no
                // record holds any more, as if adopted.
                t.adopted = true;
                t.killing = false;
            }
            // A new health verdict is news even in the same state.
            let health_news = status.healthy.is_some() && status.healthy != t.status.as_ref().and_then(|s| s.healthy);
            if t.state == state && t.status.is_some() && !health_news {
                return None; // said again (a reconciliation answer)
            }
            t.state = state;
            if t.location.agent_id.is_empty() {
                t.location.agent_id = status.agent_id.clone();
            }
            t.status = Some(status.clone());
            return Some(t.key.clone());
        }
        if state.is_terminal() || state == TaskState::Unknown {
            return None;
        }
        let key = key_of(&status.task_id)?.to_owned();
        self.tasks.insert(
            status.task_id.clone(),
            Task {
                id: status.task_id.clone(),
                key: key.clone(),
                state,
                status: Some(status.clone()),
                location: Location {
                    agent_id: status.agent_id.clone(),
                    ..Location::default()
                },
                ports: Vec::new(),
                labels: BTreeMap::new(),
                launched: None,
                killing: false,
                adopted: true,
            },
        );
        Some(key)
    }

    /// The live tasks to ask the master about, with their agents.
    pub(crate) fn to_reconcile(&self, only_silent: bool) -> Vec<(String, String)> {
        self.tasks
            .values()
            .filter(|t| !t.ended() && (!only_silent || t.status.is_none()))
            .map(|t| (t.id.clone(), t.location.agent_id.clone()))
            .collect()
    }

    /// The store's records of `key`'s tasks (those launched through it
    /// that have not ended).
    pub(crate) fn records(&self, key: &str) -> BTreeMap<String, TaskRecord> {
        self.tasks
            .values()
            .filter(|t| t.key == key && !t.adopted && !t.ended())
            .map(|t| (t.id.clone(), record_of(t)))
            .collect()
    }

    /// Tasks read back from the store: their state is unknown until the
    /// master answers. A task the master reported before (adopted) takes
    /// its record's place, ports, labels and launch time, and keeps its
    /// state. True when such a task was merged.
    pub(crate) fn restore(&mut self, key: &str, records: BTreeMap<String, TaskRecord>) -> bool {
        let mut merged = false;
        for (id, r) in records {
            let launched = SystemTime::UNIX_EPOCH + Duration::try_from_secs_f64(r.launched).unwrap_or_default();
            let location = Location {
                agent_id: r.agent_id,
                hostname: r.host,
                attributes: r.attributes,
            };
            if let Some(t) = self.tasks.get_mut(&id) {
                // Reported already (before the store could be read).
                if t.adopted && t.key == key {
                    if location.agent_id.is_empty() {
                        t.location = Location {
                            agent_id: std::mem::take(&mut t.location.agent_id),
                            ..location
                        };
                    } else {
                        t.location = location;
                    }
                    t.ports = r.ports;
                    t.labels = r.labels;
                    t.launched = Some(launched);
                    t.adopted = false;
                    merged = true;
                }
                continue;
            }
            let task = Task {
                id: id.clone(),
                key: key.to_owned(),
                state: TaskState::Unknown,
                status: None,
                location,
                ports: r.ports,
                labels: r.labels,
                launched: Some(launched),
                killing: false,
                adopted: false,
            };
            self.tasks.insert(id, task);
        }
        merged
    }
}

fn record_of(t: &Task) -> TaskRecord {
    TaskRecord {
        agent_id: t.location.agent_id.clone(),
        host: t.location.hostname.clone(),
        attributes: t.location.attributes.clone(),
        ports: t.ports.clone(),
        labels: t.labels.clone(),
        launched: t
            .launched
            .and_then(|l| l.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64()),
    }
}
