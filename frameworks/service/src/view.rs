//! What the HTTP API answers (JSON), shared with `mezzo service`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::ServiceSpec;

/// The answer to a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployReply {
    /// Service name.
    pub name: String,
    /// The version now targeted.
    pub version: u64,
    /// `created`, `updated` (a rolling update started) or `unchanged`.
    pub outcome: String,
}

/// One line of `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Service name.
    pub name: String,
    /// Target version.
    pub version: u64,
    /// Instances wanted.
    pub desired: u32,
    /// Instances whose task runs.
    pub running: u32,
    /// Instances that pass their health checks (running ones, without checks).
    pub healthy: u32,
    /// `stable`, `updating 1 -> 2`, `rolling back 2 -> 1` or `removing`.
    pub state: String,
}

/// One instance in a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// Its task id.
    pub task_id: String,
    /// Version it runs.
    pub version: u64,
    /// Agent host.
    pub host: String,
    /// Agent id.
    pub agent_id: String,
    /// Port name -> port.
    pub ports: BTreeMap<String, u64>,
    /// `Staging`, `Starting`, `Running`, `Unknown` (being reconciled) or `Killing`.
    pub phase: String,
    /// `Unknown`, `Healthy` or `Unhealthy`.
    pub health: String,
}

/// Everything about one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The counts and state.
    #[serde(flatten)]
    pub summary: Summary,
    /// Every live instance.
    pub instances: Vec<InstanceStatus>,
    /// Recent events, oldest first.
    pub events: Vec<String>,
    /// The target version's file, as stored.
    pub spec: ServiceSpec,
}

/// A healthy instance's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Its task id.
    pub task_id: String,
    /// Version it runs.
    pub version: u64,
    /// Agent host.
    pub host: String,
    /// Port name -> port.
    pub ports: BTreeMap<String, u64>,
    /// `host:port` of the first port (just `host` without ports).
    pub address: String,
}

/// Body of a failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong; names the field or line for a bad file.
    pub error: String,
}

/// Body of `POST /v1/services/{name}/scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleBody {
    /// Instances wanted.
    pub instances: u32,
}
