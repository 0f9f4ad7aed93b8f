//! Mesos' messages to Mezzo's and back. Everything a Mesos framework sends
//! becomes the `mezzo.v1` message the gRPC API takes, so it meets the same
//! checks (the master's `api` module); everything the core sends a framework becomes
//! the Mesos event it expects. What Mezzo cannot honour is refused with a
//! message that says so, never dropped silently.

use crate::artifact::Archive;
use crate::v1;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::types as m;
use super::volumes;

/// How a framework wants its resources written (its capabilities).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Format {
    /// `RESERVATION_REFINEMENT`: reservations as a stack in `reservations`
    /// instead of `role` and `reservation`.
    pub refinement: bool,
    /// `MULTI_ROLE`: offers and their resources carry `allocation_info`.
    pub multi_role: bool,
    /// `PARTITION_AWARE`: told TASK_UNREACHABLE, TASK_DROPPED, TASK_GONE
    /// and TASK_UNKNOWN; others hear TASK_LOST for each.
    pub partition_aware: bool,
    /// `TASK_KILLING_STATE`: told TASK_KILLING; others hear TASK_RUNNING.
    pub task_killing: bool,
}

impl Format {
    pub fn of(info: &m::FrameworkInfo) -> Format {
        Format {
            refinement: info.has_capability("RESERVATION_REFINEMENT"),
            multi_role: info.has_capability("MULTI_ROLE"),
            partition_aware: info.has_capability("PARTITION_AWARE"),
            task_killing: info.has_capability("TASK_KILLING_STATE"),
        }
    }
}

/// A refusal of what a Mesos framework sent: answered 400 with the text.
pub type Refused = String;

// ---- frameworks ----

/// A Mesos `FrameworkInfo` as Mezzo's. Without `MULTI_ROLE` the framework
/// is in its one `role` (`*` by default), as on Mesos.
pub fn framework_in(f: &m::FrameworkInfo) -> Result<v1::FrameworkInfo, Refused> {
    let roles = if f.has_capability("MULTI_ROLE") {
        if f.role.is_some() {
            return Err("'FrameworkInfo.role' must not be set by a MULTI_ROLE framework: give 'roles'".into());
        }
        f.roles.clone()
    } else {
        if !f.roles.is_empty() {
            return Err("'FrameworkInfo.roles' needs the MULTI_ROLE capability: give 'role'".into());
        }
        f.role.iter().cloned().collect()
    };
    Ok(v1::FrameworkInfo {
        name: f.name.clone(),
        user: f.user.clone(),
        principal: f.principal.clone().unwrap_or_default(),
        roles,
        failover_timeout_secs: f.failover_timeout.unwrap_or(0.0),
        hostname: f.hostname.clone().unwrap_or_default(),
    })
}

// ---- resources ----

fn is_unreserved(role: &str) -> bool {
    role.is_empty() || role == "*"
}

/// One Mesos resource as Mezzo's: scalars and ranges, reserved (in either
/// reservation format) or not.
pub fn resource_in(r: &m::Resource) -> Result<v1::Resource, Refused> {
    let name = &r.name;
    if let Some(v) = volumes::persistent_disk(r)? {
        return Err(format!(
            "persistent volume {}: only CREATE, DESTROY and a task's resources take a persistent volume",
            v.id
        ));
    }
    let mut out = v1::Resource {
        name: name.clone(),
        ..Default::default()
    };
    match r.kind.as_str() {
        "SCALAR" => {
            let s = r
                .scalar
                .as_ref()
                .ok_or_else(|| format!("resource {name}: SCALAR without `scalar`"))?;
            out.scalar = s.value;
        }
        "RANGES" => {
            let rs = r
                .ranges
                .as_ref()
                .ok_or_else(|| format!("resource {name}: RANGES without `ranges`"))?;
            out.ranges = rs
                .range
                .iter()
                .map(|x| v1::Range {
                    begin: x.begin,
                    end: x.end,
                })
                .collect();
        }
        "SET" | "TEXT" => {
            return Err(format!(
                "resource {name}: {} resources are not supported by Mezzo (scalars and ranges are)",
                r.kind
            ));
        }
        other => return Err(format!("resource {name}: unknown type {other:?}")),
    }
    let (role, principal) = reservation_of(r);
    if !is_unreserved(&role) {
        out.role = role;
        out.reservation_principal = principal.unwrap_or_default();
    }
    Ok(out)
}

/// The role a resource is reserved for (empty or `*`: unreserved) and who
/// reserved it, in either reservation format.
fn reservation_of(r: &m::Resource) -> (String, Option<String>) {
    match r.reservations.last() {
        Some(last) => (last.role.clone().unwrap_or_default(), last.principal.clone()),
        None => (
            r.role.clone().unwrap_or_default(),
            r.reservation.as_ref().and_then(|x| x.principal.clone()),
        ),
    }
}

pub fn resources_in(list: &[m::Resource]) -> Result<Vec<v1::Resource>, Refused> {
    list.iter().map(resource_in).collect()
}

/// A task's resources as Mezzo's, and its persistent volumes as mounts
/// (a volume's disk is not the task's: Mezzo does not count it again).
fn task_resources_in(list: &[m::Resource]) -> Result<(Vec<v1::Resource>, Vec<v1::Mount>), Refused> {
    let (mut resources, mut mounts) = (Vec::new(), Vec::new());
    for r in list {
        match volumes::persistent_disk(r)? {
            Some(v) => mounts.push(v.mount()?),
            None => resources.push(resource_in(r)?),
        }
    }
    Ok((resources, mounts))
}

// ---- persistent volumes ----

/// `CREATE`'s volumes as Mezzo's `Create`: each a SCALAR `disk` reserved
/// for a role (which must be the offer's), with `disk.persistence.id`.
/// Mezzo makes it with the framework's principal; it keeps no mount path.
pub fn create_in(list: &[m::Resource]) -> Result<v1::Create, Refused> {
    let volume = |r: &m::Resource| -> Result<v1::Volume, Refused> {
        if r.name != "disk" {
            return Err(format!(
                "create: resource {}: only disk becomes a persistent volume",
                r.name
            ));
        }
        let v = volumes::persistent_disk(r)?.ok_or("create: a volume needs `disk.persistence.id`")?;
        let id = v.id;
        let disk_mib = match (r.kind.as_str(), &r.scalar) {
            ("SCALAR", Some(s)) => s.value,
            _ => return Err(format!("create: volume {id}: disk is a SCALAR with `scalar`")),
        };
        let role = reservation_of(r).0;
        if is_unreserved(&role) {
            return Err(format!(
                "create: volume {id}: its disk must be reserved for the offer's role (RESERVE it first, \
                 or in the same ACCEPT)"
            ));
        }
        // The master refuses it unless it is the offer's role.
        Ok(v1::Volume {
            id,
            disk_mib,
            role,
            ..Default::default()
        })
    };
    Ok(v1::Create {
        volumes: list.iter().map(volume).collect::<Result<_, _>>()?,
    })
}

/// `DESTROY`'s volumes as Mezzo's `Destroy`: the ids of their
/// `disk.persistence`.
pub fn destroy_in(list: &[m::Resource]) -> Result<v1::Destroy, Refused> {
    let id = |r: &m::Resource| -> Result<String, Refused> {
        Ok(volumes::persistent_disk(r)?
            .ok_or_else(|| format!("destroy: resource {}: a volume needs `disk.persistence.id`", r.name))?
            .id)
    };
    Ok(v1::Destroy {
        volume_ids: list.iter().map(id).collect::<Result<_, _>>()?,
    })
}

/// A free Mezzo volume in an offer to `role`: its disk, reserved for its
/// role as the offer's other reserved resources are written, with the
/// volume's details.
fn volume_out(v: &v1::Volume, fmt: Format, role: &str) -> m::Resource {
    let disk = v1::Resource {
        name: "disk".into(),
        scalar: v.disk_mib,
        role: v.role.clone(),
        ..Default::default()
    };
    m::Resource {
        disk: Some(volumes::disk_out(v)),
        ..resource_out(&disk, fmt, role)
    }
}

/// One Mezzo resource as Mesos writes it for a framework of `fmt`,
/// offered to (or used by) `role`.
pub fn resource_out(r: &v1::Resource, fmt: Format, role: &str) -> m::Resource {
    let ranged = !r.ranges.is_empty() || r.name == "ports";
    let mut out = m::Resource {
        name: r.name.clone(),
        kind: if ranged { "RANGES" } else { "SCALAR" }.into(),
        ..Default::default()
    };
    if ranged {
        out.ranges = Some(m::Ranges {
            range: r
                .ranges
                .iter()
                .map(|x| m::Range {
                    begin: x.begin,
                    end: x.end,
                })
                .collect(),
        });
    } else {
        out.scalar = Some(m::Scalar { value: r.scalar });
    }
    let dynamic = !r.reservation_principal.is_empty();
    let principal = dynamic.then(|| r.reservation_principal.clone());
    match (is_unreserved(&r.role), fmt.refinement) {
        (true, true) => {}
        (true, false) => out.role = Some("*".into()),
        (false, true) => {
            out.reservations = vec![m::ReservationInfo {
                kind: Some(if dynamic { "DYNAMIC" } else { "STATIC" }.into()),
                role: Some(r.role.clone()),
                principal,
                labels: None,
            }];
        }
        (false, false) => {
            out.role = Some(r.role.clone());
            out.reservation = dynamic.then(|| m::ReservationInfo {
                principal,
                ..Default::default()
            });
        }
    }
    if fmt.multi_role && !role.is_empty() {
        out.allocation_info = Some(m::AllocationInfo {
            role: Some(role.to_owned()),
        });
    }
    out
}

fn resources_out(list: &[v1::Resource], fmt: Format, role: &str) -> Vec<m::Resource> {
    list.iter().map(|r| resource_out(r, fmt, role)).collect()
}

// ---- offers ----

pub fn offer_out(o: &v1::Offer, fmt: Format) -> m::Offer {
    m::Offer {
        id: m::Id::new(&o.offer_id),
        framework_id: m::Id::new(&o.framework_id),
        agent_id: m::Id::new(&o.agent_id),
        hostname: o.hostname.clone(),
        resources: resources_out(&o.resources, fmt, &o.allocation_role)
            .into_iter()
            .chain(o.volumes.iter().map(|v| volume_out(v, fmt, &o.allocation_role)))
            .collect(),
        attributes: o
            .attributes
            .iter()
            .map(|a| m::Attribute {
                name: a.name.clone(),
                kind: "TEXT".into(),
                text: Some(m::Text { value: a.value.clone() }),
                scalar: None,
            })
            .collect(),
        executor_ids: Vec::new(),
        allocation_info: (fmt.multi_role && !o.allocation_role.is_empty()).then(|| m::AllocationInfo {
            role: Some(o.allocation_role.clone()),
        }),
    }
}

// ---- tasks ----

/// The file name a URI fetches to: its path's last segment.
fn uri_file_name(uri: &str) -> &str {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    path.rsplit('/').next().unwrap_or(path)
}

fn command_in(c: &m::CommandInfo) -> Result<v1::CommandInfo, Refused> {
    let shell = c.shell.unwrap_or(true);
    // Mesos' argv includes argv[0]; Mezzo's `arguments` start at argv[1].
    let arguments = if shell {
        Vec::new()
    } else {
        c.arguments.iter().skip(1).cloned().collect()
    };
    let mut environment = Vec::new();
    for v in c.environment.iter().flat_map(|e| &e.variables) {
        match v.kind.as_deref().unwrap_or("VALUE") {
            "VALUE" | "UNKNOWN" => environment.push(v1::EnvVar {
                name: v.name.clone(),
                value: v.value.clone().unwrap_or_default(),
                secret: String::new(),
            }),
            "SECRET" => {
                let reference = v
                    .secret
                    .as_ref()
                    .and_then(|s| s.reference.as_ref())
                    .filter(|r| r.key.is_none())
                    .ok_or_else(|| {
                        format!(
                            "environment variable {}: only secrets by reference (a name, no key) are supported: \
                             put the value with `mezzo secret put ROLE NAME`",
                            v.name
                        )
                    })?;
                environment.push(v1::EnvVar {
                    name: v.name.clone(),
                    value: String::new(),
                    secret: reference.name.clone(),
                });
            }
            other => return Err(format!("environment variable {}: unknown type {other:?}", v.name)),
        }
    }
    let uris = c
        .uris
        .iter()
        .map(|u| v1::CommandUri {
            value: u.value.clone(),
            executable: u.executable.unwrap_or(false),
            // Mesos extracts by default what it knows to be an archive.
            extract: u
                .extract
                .unwrap_or_else(|| Archive::of(uri_file_name(&u.value)).is_some())
                && !u.executable.unwrap_or(false),
            cache: u.cache.unwrap_or(false),
            output_file: u.output_file.clone().unwrap_or_default(),
            sha256: String::new(),
        })
        .collect();
    Ok(v1::CommandInfo {
        value: c.value.clone().unwrap_or_default(),
        arguments,
        environment,
        shell,
        user: c.user.clone().unwrap_or_default(),
        secret_files: Vec::new(),
        uris,
    })
}

fn container_in(c: &m::ContainerInfo) -> Result<v1::ContainerInfo, Refused> {
    if !c.volumes.is_empty() {
        return Err("container volumes are not supported by Mezzo's Mesos API".into());
    }
    let reference = match c.kind.as_str() {
        "MESOS" | "" => match c.mesos.as_ref().and_then(|x| x.image.as_ref()) {
            Some(i) if i.kind == "DOCKER" => i.docker.as_ref().map(|d| d.name.clone()),
            Some(i) => return Err(format!("image type {:?} is not supported (DOCKER is)", i.kind)),
            None => None,
        },
        "DOCKER" => c.docker.as_ref().map(|d| d.image.clone()),
        other => {
            return Err(format!(
                "container type {other:?} is not supported (MESOS and DOCKER are)"
            ));
        }
    };
    Ok(v1::ContainerInfo {
        image: reference.map(|reference| v1::Image {
            reference,
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn health_check_in(h: &m::HealthCheck) -> Result<v1::HealthCheck, Refused> {
    let mut out = v1::HealthCheck {
        delay_secs: h.delay_seconds,
        grace_period_secs: h.grace_period_seconds,
        interval_secs: h.interval_seconds,
        timeout_secs: h.timeout_seconds,
        consecutive_failures: h.consecutive_failures,
        ..Default::default()
    };
    match h.kind.as_str() {
        "COMMAND" => {
            let c = h.command.as_ref().ok_or("a COMMAND health check needs `command`")?;
            out.command = Some(command_in(c)?);
        }
        "HTTP" => {
            let x = h.http.as_ref().ok_or("an HTTP health check needs `http`")?;
            if x.scheme.as_deref().is_some_and(|s| s != "http") {
                return Err("HTTP health checks use plain http".into());
            }
            out.http = Some(v1::HttpCheck {
                port: x.port,
                path: x.path.clone().unwrap_or_default(),
            });
        }
        "TCP" => {
            let x = h.tcp.as_ref().ok_or("a TCP health check needs `tcp`")?;
            out.tcp = Some(v1::TcpCheck { port: x.port });
        }
        other => {
            return Err(format!(
                "health check type {other:?} is not supported (COMMAND, HTTP, TCP are)"
            ));
        }
    }
    Ok(out)
}

/// A Mesos `TaskInfo` as Mezzo's (then checked by `api::validate_task`).
pub fn task_in(t: &m::TaskInfo) -> Result<v1::TaskInfo, Refused> {
    let id = &t.task_id.value;
    let with = |e: Refused| format!("task {id}: {e}");
    let executor = t.executor.as_ref().map(executor_in).transpose().map_err(with)?;
    if executor.is_some() && t.command.is_some() {
        return Err(with("give one of `command` and `executor`, not both".into()));
    }
    let data = t
        .data
        .as_deref()
        .map(|d| bytes_in("data", d).map_err(with))
        .transpose()?
        .unwrap_or_default();
    let kill_grace_period_ms = t
        .kill_policy
        .as_ref()
        .and_then(|k| k.grace_period.as_ref())
        .map(|g| millis_in("a kill grace period", g))
        .transpose()
        .map_err(with)?;
    let allocation_role = t
        .resources
        .iter()
        .find_map(|r| r.allocation_info.as_ref().and_then(|a| a.role.clone()))
        .unwrap_or_default();
    let (resources, mounts) = task_resources_in(&t.resources).map_err(with)?;
    let mut container = t.container.as_ref().map(container_in).transpose().map_err(with)?;
    if !mounts.is_empty() {
        container.get_or_insert_with(Default::default).mounts.extend(mounts);
    }
    Ok(v1::TaskInfo {
        task_id: id.clone(),
        name: t.name.clone(),
        resources,
        command: t.command.as_ref().map(command_in).transpose().map_err(with)?,
        kill_grace_period_ms,
        agent_id: match (&t.agent_id.value, &t.slave_id) {
            (a, Some(s)) if a.is_empty() => s.value.clone(),
            (a, Some(s)) if *a != s.value => {
                return Err(with(format!("agent_id {a:?} and slave_id {:?} differ", s.value)));
            }
            (a, _) => a.clone(),
        },
        labels: labels_in(t.labels.as_ref()),
        container: container.map(Box::new),
        health_check: t
            .health_check
            .as_ref()
            .map(health_check_in)
            .transpose()
            .map_err(with)?
            .map(Box::new),
        priority: 0,
        allocation_role,
        executor: executor.map(Box::new),
        data,
        group: None,
    })
}

/// Mesos' labels as Mezzo's attributes.
fn labels_in(labels: Option<&m::Labels>) -> Vec<v1::Attribute> {
    labels
        .iter()
        .flat_map(|l| &l.labels)
        .map(|l| v1::Attribute {
            name: l.key.clone(),
            value: l.value.clone().unwrap_or_default(),
        })
        .collect()
}

/// A Mesos `ExecutorInfo` as Mezzo's. Only custom executors (type
/// `CUSTOM` or unset) with a command: Mezzo has no default executor.
pub fn executor_in(e: &m::ExecutorInfo) -> Result<v1::ExecutorInfo, Refused> {
    let id = &e.executor_id.value;
    let with = |x: Refused| format!("executor {id}: {x}");
    match e.kind.as_deref() {
        None | Some("CUSTOM") => {}
        Some(other) => {
            return Err(with(format!(
                "executor type {other:?} is not supported (CUSTOM is; give tasks a `command` to run them without one)"
            )));
        }
    }
    let command = e
        .command
        .as_ref()
        .ok_or_else(|| with("a custom executor needs a `command`".into()))?;
    let shutdown_grace_period_ms = e
        .shutdown_grace_period
        .as_ref()
        .map(|g| millis_in("a shutdown grace period", g))
        .transpose()
        .map_err(with)?;
    Ok(v1::ExecutorInfo {
        executor_id: id.clone(),
        name: e.name.clone().unwrap_or_default(),
        command: Some(command_in(command).map_err(with)?),
        resources: resources_in(&e.resources).map_err(with)?,
        container: e.container.as_ref().map(container_in).transpose().map_err(with)?,
        data: e
            .data
            .as_deref()
            .map(|d| bytes_in("data", d).map_err(with))
            .transpose()?
            .unwrap_or_default(),
        shutdown_grace_period_ms,
        labels: labels_in(e.labels.as_ref()),
        allocation_role: String::new(),
    })
}

/// Mezzo's reasons under their Mesos names; `None` where Mesos has none
/// (a command that exits 0 finishes with no reason on Mesos).
fn reason_out(r: v1::StatusReason, state: v1::TaskState) -> Option<&'static str> {
    use v1::StatusReason as R;
    Some(match r {
        R::ReasonUnspecified | R::ReasonTaskKilled | R::ReasonKilledByOperator => return None,
        R::ReasonCommandExited if state == v1::TaskState::TaskFinished => return None,
        R::ReasonCommandExited => "REASON_COMMAND_EXECUTOR_FAILED",
        R::ReasonAgentDisconnected => "REASON_AGENT_DISCONNECTED",
        R::ReasonAgentRemoved | R::ReasonAgentUnreachable => "REASON_AGENT_REMOVED",
        R::ReasonInvalidOffers => "REASON_INVALID_OFFERS",
        R::ReasonTaskInvalid => "REASON_TASK_INVALID",
        R::ReasonTaskUnknown => "REASON_TASK_UNKNOWN",
        R::ReasonReconciliation => "REASON_RECONCILIATION",
        R::ReasonContainerLaunchFailed | R::ReasonFetchFailed => "REASON_CONTAINER_LAUNCH_FAILED",
        R::ReasonContainerLimitationMemory => "REASON_CONTAINER_LIMITATION_MEMORY",
        R::ReasonContainerLimitationDisk => "REASON_CONTAINER_LIMITATION_DISK",
        R::ReasonFrameworkRemoved => "REASON_FRAMEWORK_REMOVED",
        R::ReasonAgentRestarted => "REASON_AGENT_RESTARTED",
        R::ReasonTaskKilledDuringLaunch => "REASON_TASK_KILLED_DURING_LAUNCH",
        R::ReasonAgentReregistered => "REASON_AGENT_REREGISTERED",
        R::ReasonAgentDraining => "REASON_AGENT_DRAINING",
        R::ReasonTaskHealthCheckStatusUpdated => "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
        R::ReasonPreempted => "REASON_CONTAINER_PREEMPTED",
        R::ReasonExecutorTerminated => "REASON_EXECUTOR_TERMINATED",
        R::ReasonExecutorRegistrationTimeout => "REASON_EXECUTOR_REGISTRATION_TIMEOUT",
        R::ReasonExecutorUnregistered => "REASON_EXECUTOR_UNREGISTERED",
        R::ReasonTaskGroupInvalid => "REASON_TASK_GROUP_INVALID",
    })
}

/// A Mezzo status as Mesos' for a framework of `fmt` (`uuid` only when
/// it must be acknowledged).
pub fn status_out(s: &v1::TaskStatus, fmt: Format) -> m::TaskStatus {
    use v1::TaskState as S;
    let ours = S::try_from(s.state).unwrap_or(S::TaskUnknown);
    let state = match ours {
        S::Unspecified => S::TaskUnknown,
        S::TaskUnreachable | S::TaskDropped | S::TaskGone | S::TaskUnknown if !fmt.partition_aware => S::TaskLost,
        S::TaskKilling if !fmt.task_killing => S::TaskRunning,
        other => other,
    }
    .as_str_name();
    let source = v1::StatusSource::try_from(s.source)
        .ok()
        .filter(|x| *x != v1::StatusSource::SourceUnspecified)
        .map(|x| x.as_str_name().to_owned());
    let reason = v1::StatusReason::try_from(s.reason)
        .ok()
        .and_then(|r| reason_out(r, ours))
        .map(str::to_owned);
    m::TaskStatus {
        task_id: m::Id::new(&s.task_id),
        state: state.to_owned(),
        message: (!s.message.is_empty()).then(|| s.message.clone()),
        source,
        reason,
        data: (!s.data.is_empty()).then(|| B64.encode(&s.data)),
        agent_id: (!s.agent_id.is_empty()).then(|| m::Id::new(&s.agent_id)),
        executor_id: (!s.executor_id.is_empty()).then(|| m::Id::new(&s.executor_id)),
        timestamp: (s.timestamp > 0.0).then_some(s.timestamp),
        uuid: (!s.uuid.is_empty()).then(|| B64.encode(&s.uuid)),
        healthy: s.healthy,
    }
}

/// A Mesos duration in whole milliseconds (`what` names it in the error).
pub fn millis_in(what: &str, d: &m::DurationInfo) -> Result<u64, Refused> {
    u64::try_from(d.nanoseconds)
        .map(|n| n / 1_000_000)
        .map_err(|_| format!("{what} cannot be negative"))
}

/// Base64 `bytes` (`what` names the field in the error).
pub fn bytes_in(what: &str, text: &str) -> Result<Vec<u8>, Refused> {
    B64.decode(text).map_err(|e| format!("{what} is not base64: {e}"))
}

/// The uuid of an acknowledgement.
pub fn uuid_in(text: &str) -> Result<Vec<u8>, Refused> {
    B64.decode(text)
        .map_err(|e| format!("acknowledge: uuid {text:?} is not base64: {e}"))
}

// ---- events ----

/// The Mesos event for one of the core's, for a framework of `fmt`;
/// `None` for Mezzo's own events that Mesos has no word for.
pub fn event_out(e: &v1::Event, fmt: Format, master: &m::MasterInfo) -> Option<m::Event> {
    use v1::event::Event as E;
    let ev = match e.event.as_ref()? {
        E::Subscribed(s) => m::Event {
            subscribed: Some(m::Subscribed {
                framework_id: m::Id::new(&s.framework_id),
                heartbeat_interval_seconds: Some(s.heartbeat_interval_secs),
                master_info: Some(master.clone()),
            }),
            ..m::Event::of("SUBSCRIBED")
        },
        E::Offers(o) => m::Event {
            offers: Some(m::Offers {
                offers: o.offers.iter().map(|o| offer_out(o, fmt)).collect(),
            }),
            ..m::Event::of("OFFERS")
        },
        E::Rescind(r) => m::Event {
            rescind: Some(m::Rescind {
                offer_id: m::Id::new(&r.offer_id),
            }),
            ..m::Event::of("RESCIND")
        },
        E::Update(u) => m::Event {
            update: Some(m::Update {
                status: status_out(u.status.as_ref()?, fmt),
            }),
            ..m::Event::of("UPDATE")
        },
        E::Failure(f) => m::Event {
            failure: Some(m::Failure {
                agent_id: Some(m::Id::new(&f.agent_id)),
                executor_id: (!f.executor_id.is_empty()).then(|| m::Id::new(&f.executor_id)),
                status: f.status,
            }),
            ..m::Event::of("FAILURE")
        },
        E::Error(x) => m::Event {
            error: Some(m::ErrorEvent {
                message: x.message.clone(),
            }),
            ..m::Event::of("ERROR")
        },
        E::Message(x) => m::Event {
            message: Some(m::Message {
                agent_id: m::Id::new(&x.agent_id),
                executor_id: m::Id::new(&x.executor_id),
                data: B64.encode(&x.data),
            }),
            ..m::Event::of("MESSAGE")
        },
        E::Heartbeat(_) => m::Event::of("HEARTBEAT"),
        E::Reconciled(_) | E::AgentDrain(_) | E::Preemption(_) => return None,
    };
    Some(ev)
}
