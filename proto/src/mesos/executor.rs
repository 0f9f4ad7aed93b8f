//! Mesos' v1 executor API (`POST /api/v1/executor` on the agent) in its
//! JSON form: the calls a custom executor sends, the events it receives,
//! and their conversion to and from `mezzo.v1`. Field names and enum
//! names as in Mesos' `executor.proto` (research notes §4); the shared
//! messages (`TaskInfo`, `TaskStatus`, ...) are [`super::types`]'.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::convert::{Format, Refused, bytes_in, resource_out};
use super::types::{
    Attribute, CommandInfo, ContainerInfo, DockerImage, Environment, ExecutorInfo, FrameworkInfo, Id, Image,
    KillPolicy, Label, Labels, MesosContainer, Resource, Secret, SecretReference, TaskGroupInfo, TaskInfo, TaskStatus,
    Text, Uri, Variable,
};
use crate::v1;

// ---- calls ----

/// `executor::Call`. Both ids are required, as in Mesos: a call without
/// them does not parse.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub executor_id: Id,
    pub framework_id: Id,
    /// `SUBSCRIBE`, `UPDATE`, `MESSAGE` or `HEARTBEAT`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
}

/// `Call.Subscribe`: what a (re)subscribing executor still holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unacknowledged_tasks: Vec<TaskInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unacknowledged_updates: Vec<Update>,
}

/// `Call.Update`: a status, as in the scheduler API's `UPDATE` event.
pub use super::types::Update;

/// `Call.Message` and `Event.Message`: base64 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub data: String,
}

// ---- events ----

/// `executor::Event`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `SUBSCRIBED`, `LAUNCH`, `LAUNCH_GROUP`, `KILL`, `ACKNOWLEDGED`,
    /// `MESSAGE`, `ERROR`, `SHUTDOWN` or `HEARTBEAT`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribed: Option<Subscribed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Acknowledged>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_group: Option<LaunchGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill: Option<Kill>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
}

impl Event {
    /// An event of `kind` with no body.
    pub fn of(kind: &str) -> Event {
        Event {
            kind: kind.to_owned(),
            ..Default::default()
        }
    }
}

/// `Event.Subscribed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Subscribed {
    pub executor_info: ExecutorInfo,
    pub framework_info: FrameworkInfo,
    pub agent_info: AgentInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<ContainerId>,
}

/// `AgentInfo`, as an executor is told it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub hostname: String,
    /// Mesos always writes it (it has a default, 5051).
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Resource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<Attribute>,
}

/// `ContainerID`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerId {
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    pub task: TaskInfo,
}

/// `Event.LaunchGroup`: a task group, handed over whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LaunchGroup {
    pub task_group: TaskGroupInfo,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Kill {
    pub task_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_policy: Option<KillPolicy>,
}

/// `Event.Acknowledged`: the framework acknowledged this update (uuid in
/// base64).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledged {
    pub task_id: Id,
    pub uuid: String,
}

/// `Event.Error`.
pub use super::types::ErrorEvent as Error;

// ---- mezzo -> Mesos ----

fn labels_out(list: &[v1::Attribute]) -> Option<Labels> {
    (!list.is_empty()).then(|| Labels {
        labels: list
            .iter()
            .map(|a| Label {
                key: a.name.clone(),
                value: Some(a.value.clone()),
            })
            .collect(),
    })
}

/// A command as Mesos writes it: `arguments` with argv\[0\] first (Mezzo's
/// start at argv\[1\]); secret variables by reference only (their values
/// are never sent to an executor this way).
pub fn command_out(c: &v1::CommandInfo) -> CommandInfo {
    let arguments = if c.shell {
        Vec::new()
    } else {
        std::iter::once(c.value.clone())
            .chain(c.arguments.iter().cloned())
            .collect()
    };
    let variables: Vec<Variable> = c
        .environment
        .iter()
        .map(|e| match e.secret.is_empty() {
            true => Variable {
                name: e.name.clone(),
                kind: Some("VALUE".into()),
                value: Some(e.value.clone()),
                secret: None,
            },
            false => Variable {
                name: e.name.clone(),
                kind: Some("SECRET".into()),
                value: None,
                secret: Some(Secret {
                    kind: "REFERENCE".into(),
                    reference: Some(SecretReference {
                        name: e.secret.clone(),
                        key: None,
                    }),
                    value: None,
                }),
            },
        })
        .collect();
    CommandInfo {
        uris: c
            .uris
            .iter()
            .map(|u| Uri {
                value: u.value.clone(),
                executable: Some(u.executable),
                extract: Some(u.extract),
                cache: Some(u.cache),
                output_file: (!u.output_file.is_empty()).then(|| u.output_file.clone()),
            })
            .collect(),
        environment: (!variables.is_empty()).then_some(Environment { variables }),
        shell: Some(c.shell),
        value: Some(c.value.clone()),
        arguments,
        user: (!c.user.is_empty()).then(|| c.user.clone()),
    }
}

/// A container as Mesos writes it: a `MESOS` container, with its image
/// as a Docker image if it has one.
pub fn container_out(c: &v1::ContainerInfo) -> ContainerInfo {
    ContainerInfo {
        kind: "MESOS".into(),
        mesos: c.image.as_ref().map(|i| MesosContainer {
            image: Some(Image {
                kind: "DOCKER".into(),
                docker: Some(DockerImage {
                    name: i.reference.clone(),
                }),
            }),
        }),
        docker: None,
        volumes: Vec::new(),
    }
}

fn grace_out(ms: Option<u64>) -> Option<super::types::DurationInfo> {
    ms.map(|ms| super::types::DurationInfo {
        nanoseconds: i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
    })
}

/// The executor as it is told about itself on SUBSCRIBED.
pub fn executor_out(e: &v1::ExecutorInfo, framework_id: &str) -> ExecutorInfo {
    ExecutorInfo {
        kind: Some("CUSTOM".into()),
        executor_id: Id::new(&e.executor_id),
        framework_id: Some(Id::new(framework_id)),
        command: e.command.as_ref().map(command_out),
        container: e.container.as_ref().map(container_out),
        resources: e
            .resources
            .iter()
            .map(|r| resource_out(r, Format::default(), ""))
            .collect(),
        name: (!e.name.is_empty()).then(|| e.name.clone()),
        data: (!e.data.is_empty()).then(|| B64.encode(&e.data)),
        shutdown_grace_period: grace_out(e.shutdown_grace_period_ms),
        labels: labels_out(&e.labels),
    }
}

/// A task as its executor receives it in LAUNCH.
pub fn task_out(t: &v1::TaskInfo, framework_id: &str, agent_id: &str) -> TaskInfo {
    TaskInfo {
        name: t.name.clone(),
        task_id: Id::new(&t.task_id),
        agent_id: Id::new(agent_id),
        slave_id: None,
        resources: t
            .resources
            .iter()
            .map(|r| resource_out(r, Format::default(), &t.allocation_role))
            .collect(),
        executor: t.executor.as_ref().map(|e| executor_out(e, framework_id)),
        command: t.command.as_ref().map(command_out),
        container: t.container.as_deref().map(container_out),
        health_check: None,
        kill_policy: grace_out(t.kill_grace_period_ms).map(|g| KillPolicy { grace_period: Some(g) }),
        data: (!t.data.is_empty()).then(|| B64.encode(&t.data)),
        labels: labels_out(&t.labels),
    }
}

/// LAUNCH of one task.
pub fn launch(t: &v1::TaskInfo, framework_id: &str, agent_id: &str) -> Event {
    Event {
        launch: Some(Launch {
            task: task_out(t, framework_id, agent_id),
        }),
        ..Event::of("LAUNCH")
    }
}

/// LAUNCH_GROUP of a task group, its tasks in the group's order.
pub fn launch_group<'a>(
    tasks: impl IntoIterator<Item = &'a v1::TaskInfo>,
    framework_id: &str,
    agent_id: &str,
) -> Event {
    Event {
        launch_group: Some(LaunchGroup {
            task_group: TaskGroupInfo {
                tasks: tasks.into_iter().map(|t| task_out(t, framework_id, agent_id)).collect(),
            },
        }),
        ..Event::of("LAUNCH_GROUP")
    }
}

/// The framework as its executor is told about it.
pub fn framework_out(f: &v1::FrameworkInfo, framework_id: &str) -> FrameworkInfo {
    FrameworkInfo {
        user: f.user.clone(),
        name: f.name.clone(),
        id: Some(Id::new(framework_id)),
        failover_timeout: Some(f.failover_timeout_secs),
        checkpoint: Some(true),
        role: None,
        roles: f.roles.clone(),
        hostname: (!f.hostname.is_empty()).then(|| f.hostname.clone()),
        principal: (!f.principal.is_empty()).then(|| f.principal.clone()),
        capabilities: vec![super::types::Capability {
            kind: "MULTI_ROLE".into(),
        }],
        ..Default::default()
    }
}

/// The agent as an executor is told about it; `port` is the executor
/// API's.
pub fn agent_info_out(a: &v1::AgentInfo, agent_id: &str, port: u16) -> AgentInfo {
    AgentInfo {
        hostname: a.hostname.clone(),
        port: port.into(),
        id: (!agent_id.is_empty()).then(|| Id::new(agent_id)),
        resources: a
            .resources
            .iter()
            .map(|r| resource_out(r, Format::default(), ""))
            .collect(),
        attributes: a
            .attributes
            .iter()
            .map(|x| Attribute {
                name: x.name.clone(),
                kind: "TEXT".into(),
                text: Some(Text { value: x.value.clone() }),
                scalar: None,
            })
            .collect(),
    }
}

/// ACKNOWLEDGED for an update of `task_id` with `uuid`.
pub fn acknowledged(task_id: &str, uuid: &[u8]) -> Event {
    Event {
        acknowledged: Some(Acknowledged {
            task_id: Id::new(task_id),
            uuid: B64.encode(uuid),
        }),
        ..Event::of("ACKNOWLEDGED")
    }
}

/// MESSAGE with `data`.
pub fn message(data: &[u8]) -> Event {
    Event {
        message: Some(Message { data: B64.encode(data) }),
        ..Event::of("MESSAGE")
    }
}

/// KILL of `task_id`, with the grace period to use if one is known.
pub fn kill(task_id: &str, grace_ms: Option<u64>) -> Event {
    Event {
        kill: Some(Kill {
            task_id: Id::new(task_id),
            kill_policy: grace_out(grace_ms).map(|g| KillPolicy { grace_period: Some(g) }),
        }),
        ..Event::of("KILL")
    }
}

// ---- Mesos -> mezzo ----

/// The bytes of a `Call.Message`.
pub fn data_in(m: &Message) -> Result<Vec<u8>, Refused> {
    bytes_in("message data", &m.data)
}

/// A status an executor sends in UPDATE, checked as Mesos checks it: a
/// uuid of 16 bytes, `SOURCE_EXECUTOR`, not `TASK_STAGING`, and if it
/// names an executor, the caller. The agent fills in the ids it knows.
pub fn status_in(s: &TaskStatus, executor_id: &str) -> Result<v1::TaskStatus, Refused> {
    let uuid = s
        .uuid
        .as_deref()
        .ok_or("'status.uuid' is required")
        .map(|u| bytes_in("'status.uuid'", u))??;
    if uuid.len() != 16 {
        return Err(format!("'status.uuid' must be 16 bytes, not {}", uuid.len()));
    }
    if s.source.as_deref() != Some("SOURCE_EXECUTOR") {
        return Err("'status.source' must be SOURCE_EXECUTOR".into());
    }
    let state = v1::TaskState::from_str_name(&s.state)
        .filter(|x| *x != v1::TaskState::Unspecified)
        .ok_or_else(|| format!("'status.state' {:?} is not a task state", s.state))?;
    if state == v1::TaskState::TaskStaging {
        return Err("'status.state' must not be TASK_STAGING".into());
    }
    if let Some(e) = &s.executor_id
        && e.value != executor_id
    {
        return Err(format!(
            "'status.executor_id' {:?} is not the calling executor {executor_id:?}",
            e.value
        ));
    }
    let data = s
        .data
        .as_deref()
        .map(|d| bytes_in("'status.data'", d))
        .transpose()?
        .unwrap_or_default();
    let reason = s
        .reason
        .as_deref()
        .and_then(v1::StatusReason::from_str_name)
        .unwrap_or(v1::StatusReason::ReasonUnspecified);
    Ok(v1::TaskStatus {
        task_id: s.task_id.value.clone(),
        state: state as i32,
        message: s.message.clone().unwrap_or_default(),
        source: v1::StatusSource::SourceExecutor as i32,
        reason: reason as i32,
        timestamp: s.timestamp.filter(|t| t.is_finite() && *t > 0.0).unwrap_or_default(),
        uuid,
        healthy: s.healthy,
        executor_id: executor_id.to_owned(),
        data,
        ..Default::default()
    })
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod tests;
