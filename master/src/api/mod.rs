//! The gRPC edge: decode, validate, convert to domain values, and hand the
//! result to the owner task. Nothing past this layer sees unchecked input.

pub mod agent;
mod artifacts;
mod checks;
#[cfg(test)]
mod fuzz_tests;
mod group;
pub(crate) mod kv;
pub(crate) mod pending;
pub mod scheduler;
pub(crate) mod usage;

use std::time::Duration;

use mezzo_proto::ids::{ExecutorId, TaskId};
use mezzo_proto::reservation::{ReservedResources, Role};
#[cfg(test)]
use mezzo_proto::resources::Resources;
use mezzo_proto::v1;

use crate::core::LaunchRequest;
use crate::error::MasterError;

/// Longest kill grace period a task may ask for.
pub const MAX_KILL_GRACE: Duration = Duration::from_secs(3600);
/// Longest failover timeout a framework may ask for (a year).
pub const MAX_FAILOVER_SECS: f64 = 365.0 * 24.0 * 3600.0;

fn invalid(msg: impl Into<String>) -> MasterError {
    MasterError::Invalid(msg.into())
}

fn no_nul(what: &str, s: &str) -> Result<(), MasterError> {
    if s.contains('\0') {
        Err(invalid(format!("{what} contains a NUL byte")))
    } else {
        Ok(())
    }
}

/// A secret a command names must have a valid name.
fn check_secret_ref(what: &str, name: &str) -> Result<(), MasterError> {
    if mezzo_proto::security::secret::valid_name(name) {
        Ok(())
    } else {
        Err(invalid(format!("{what}: {name:?} is not a secret name")))
    }
}

/// An image's reference and the secret its credentials come from; the
/// credentials' value only ever comes from the leader.
fn check_image(t: &TaskId, image: &v1::Image) -> Result<(), MasterError> {
    let r = mezzo_proto::image::ImageRef::parse(&image.reference).map_err(|e| invalid(format!("task {t}: {e}")))?;
    if !image.credentials.is_empty() {
        return Err(invalid(format!(
            "task {t}: image {} carries credentials; name the secret that holds them (credentials_secret) instead",
            image.reference
        )));
    }
    if !image.credentials_secret.is_empty() {
        check_secret_ref(&format!("task {t}"), &image.credentials_secret)?;
        if !r.is_registry() {
            return Err(invalid(format!(
                "task {t}: image {} is a local layout; registry credentials are for HOST/PATH images",
                image.reference
            )));
        }
    }
    Ok(())
}

/// The values of `ContainerInfo.seccomp` ("" is the default).
const SECCOMP_PROFILES: [&str; 3] = ["", "default", "unconfined"];

pub fn validate_task(info: v1::TaskInfo) -> Result<LaunchRequest, MasterError> {
    let task_id = TaskId::parse(&info.task_id)?;
    let t = &task_id;
    let resources = ReservedResources::from_proto(&info.resources).map_err(|e| invalid(format!("task {t}: {e}")))?;
    if resources.is_empty() {
        return Err(invalid(format!("task {t} asks for no resources")));
    }
    let flat = resources.total();
    if flat.cpus.0 == 0 && flat.mem.0 == 0 {
        return Err(invalid(format!("task {t} must ask for some cpus or mem")));
    }
    // With an image, no command means the image's entrypoint and command.
    let has_image = info.container.as_ref().is_some_and(|c| c.image.is_some());
    let executor = match (&info.executor, &info.command) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "task {t} names both a command and an executor; give one"
            )));
        }
        // Its executor runs it, in the executor's container: a container of
        // the task's own (an image, volumes) would be accepted and never
        // made, and a volume's data written beside it would be lost.
        (Some(_), None)
            if info
                .container
                .as_ref()
                .is_some_and(|c| c.image.is_some() || !c.mounts.is_empty()) =>
        {
            return Err(invalid(format!(
                "task {t} runs in its executor's container: it cannot have an image or volumes of its own \
                 (give them to a command task)"
            )));
        }
        (Some(e), None) => Some(validate_executor(t, e)?),
        (None, Some(cmd)) => {
            check_command(&format!("task {t}"), cmd, has_image)?;
            None
        }
        (None, None) if has_image => None,
        (None, None) => return Err(invalid(format!("task {t} has no command"))),
    };
    if info.data.len() > MAX_OPAQUE_BYTES {
        return Err(invalid(format!(
            "task {t}: data is larger than {MAX_OPAQUE_BYTES} bytes"
        )));
    }
    if info.name.len() > 1024 {
        return Err(invalid(format!("task {t}: name is longer than 1024 bytes")));
    }
    if info.group.is_some() {
        return Err(invalid(format!(
            "task {t}: TaskInfo.group is set by the master; launch a task group with Launch.group"
        )));
    }
    if let Some(c) = &info.container
        && !SECCOMP_PROFILES.contains(&c.seccomp.as_str())
    {
        return Err(invalid(format!(
            "task {t}: unknown seccomp profile {:?}; profiles: default, unconfined",
            c.seccomp
        )));
    }
    if let Some(image) = info.container.as_ref().and_then(|c| c.image.as_ref()) {
        check_image(t, image)?;
    }
    if let Some(c) = &info.container {
        mezzo_proto::volume::check(&c.mounts, has_image).map_err(|e| invalid(format!("task {t}: {e}")))?;
    }
    if let Some(c) = &info.health_check {
        checks::check(t, c)?;
    }
    if let Some(ms) = info.kill_grace_period_ms
        && Duration::from_millis(ms) > MAX_KILL_GRACE
    {
        return Err(invalid(format!(
            "task {t}: kill grace period {ms} ms exceeds {} s",
            MAX_KILL_GRACE.as_secs()
        )));
    }
    let mut info = info;
    if info.name.is_empty() {
        info.name = info.task_id.clone();
    }
    info.agent_id.clear();
    Ok(LaunchRequest {
        task_id,
        resources,
        info,
        executor,
    })
}

/// Most bytes of a task's or an executor's opaque `data`, and of one
/// framework message.
pub const MAX_OPAQUE_BYTES: usize = 1 << 20;

/// Checks a command (a task's or an executor's); `what` names its owner.
fn check_command(what: &str, cmd: &v1::CommandInfo, has_image: bool) -> Result<(), MasterError> {
    if cmd.value.trim().is_empty() && !has_image {
        return Err(invalid(format!("{what} has an empty command")));
    }
    no_nul(&format!("{what} command"), &cmd.value)?;
    for a in &cmd.arguments {
        no_nul(&format!("{what} argument"), a)?;
    }
    for e in &cmd.environment {
        if e.name.is_empty() || e.name.contains('=') {
            return Err(invalid(format!("{what}: bad environment variable name {:?}", e.name)));
        }
        no_nul(&format!("{what} environment"), &e.name)?;
        no_nul(&format!("{what} environment"), &e.value)?;
        if !e.secret.is_empty() {
            check_secret_ref(what, &e.secret)?;
            if !e.value.is_empty() {
                return Err(invalid(format!(
                    "{what}: environment variable {} names secret {:?} and a value; give one",
                    e.name, e.secret
                )));
            }
        }
    }
    if cmd.secret_files.len() > 64 {
        return Err(invalid(format!("{what}: at most 64 secret files")));
    }
    for f in &cmd.secret_files {
        check_secret_ref(what, &f.secret)?;
        mezzo_proto::security::secret::sandbox_path(&f.path).map_err(|e| invalid(format!("{what}: {e}")))?;
        if !f.value.is_empty() {
            return Err(invalid(format!(
                "{what}: secret file {} carries a value; name the secret only",
                f.path
            )));
        }
    }
    artifacts::check_uris(what, &cmd.uris)
}

/// Checks the custom executor a task names: its id, command and
/// resources (which may be empty: the executor then runs in its tasks'
/// resources alone, as Mesos allows).
fn validate_executor(t: &TaskId, e: &v1::ExecutorInfo) -> Result<(ExecutorId, ReservedResources), MasterError> {
    let id = ExecutorId::parse(&e.executor_id).map_err(|x| invalid(format!("task {t}: {x}")))?;
    let what = format!("task {t}'s executor {id}");
    let cmd = e
        .command
        .as_ref()
        .ok_or_else(|| invalid(format!("{what} has no command")))?;
    if e.container
        .as_ref()
        .is_some_and(|c| c.image.is_some() || !c.mounts.is_empty())
    {
        return Err(invalid(format!(
            "{what}: executors run on the host's root without mounts (images and volumes are for tasks)"
        )));
    }
    if e.labels
        .iter()
        .any(|l| l.name == "mezzo.network" && l.value == "isolated")
    {
        return Err(invalid(format!(
            "{what}: an executor cannot have an isolated network (it must reach its agent)"
        )));
    }
    check_command(&what, cmd, false)?;
    if cmd.environment.iter().any(|v| !v.secret.is_empty()) || !cmd.secret_files.is_empty() {
        return Err(invalid(format!(
            "{what}: executors cannot take secrets (give them to its tasks)"
        )));
    }
    if let Some(ms) = e.shutdown_grace_period_ms
        && Duration::from_millis(ms) > MAX_KILL_GRACE
    {
        return Err(invalid(format!(
            "{what}: shutdown grace period {ms} ms exceeds {} s",
            MAX_KILL_GRACE.as_secs()
        )));
    }
    if e.container
        .as_ref()
        .is_some_and(|c| !SECCOMP_PROFILES.contains(&c.seccomp.as_str()))
    {
        return Err(invalid(format!("{what}: unknown seccomp profile")));
    }
    if e.name.len() > 1024 || e.data.len() > MAX_OPAQUE_BYTES {
        return Err(invalid(format!("{what}: name or data too large")));
    }
    let resources = ReservedResources::from_proto(&e.resources).map_err(|x| invalid(format!("{what}: {x}")))?;
    Ok((id, resources))
}

/// Checks a framework's self-description.
/// Most roles one framework may be in.
pub const MAX_ROLES_PER_FRAMEWORK: usize = 64;
/// Most tasks one Accept may launch.
pub const MAX_TASKS_PER_ACCEPT: usize = 10_000;

pub fn validate_framework(info: Option<v1::FrameworkInfo>) -> Result<v1::FrameworkInfo, MasterError> {
    let mut info = info.ok_or_else(|| invalid("subscribe carries no framework info"))?;
    if info.name.trim().is_empty() || info.name.len() > 256 {
        return Err(invalid("framework name must be 1 to 256 bytes"));
    }
    let f = info.failover_timeout_secs;
    if !f.is_finite() || !(0.0..=MAX_FAILOVER_SECS).contains(&f) {
        return Err(invalid(format!(
            "failover timeout {f} must be between 0 and {MAX_FAILOVER_SECS} seconds"
        )));
    }
    if info.roles.is_empty() {
        info.roles.push("*".into());
    }
    if info.roles.len() > MAX_ROLES_PER_FRAMEWORK {
        return Err(invalid(format!(
            "a framework may be in at most {MAX_ROLES_PER_FRAMEWORK} roles, not {}",
            info.roles.len()
        )));
    }
    for r in &info.roles {
        Role::parse(r).map_err(|e| invalid(format!("framework roles: {e}")))?;
    }
    Ok(info)
}

/// Resources of a Reserve or Unreserve operation, checked.
pub fn operation_resources(what: &str, list: &[v1::Resource]) -> Result<ReservedResources, MasterError> {
    let r = ReservedResources::from_proto(list).map_err(|e| invalid(format!("{what}: {e}")))?;
    if r.is_empty() {
        return Err(invalid(format!("{what}: no resources given")));
    }
    Ok(r)
}

/// A refuse filter from the API, checked.
pub fn refuse(filters: Option<&v1::Filters>) -> Result<Option<Duration>, MasterError> {
    match filters.and_then(|f| f.refuse_seconds) {
        None => Ok(None),
        Some(s) if s.is_finite() && (0.0..=MAX_FAILOVER_SECS).contains(&s) => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(invalid(format!(
            "refuse_seconds {s} must be between 0 and {MAX_FAILOVER_SECS}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, res: &str, cmd: &str) -> v1::TaskInfo {
        v1::TaskInfo {
            task_id: id.into(),
            resources: Resources::parse(res).map(|r| r.to_proto()).unwrap_or_default(),
            command: Some(v1::CommandInfo {
                value: cmd.into(),
                shell: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn bad_tasks_are_refused_with_the_reason() {
        let neg = v1::TaskInfo {
            resources: vec![v1::Resource {
                name: "cpus".into(),
                scalar: -1.0,
                ..Default::default()
            }],
            ..task("t", "", "true")
        };
        let nan = v1::TaskInfo {
            resources: vec![v1::Resource {
                name: "cpus".into(),
                scalar: f64::NAN,
                ..Default::default()
            }],
            ..task("t", "", "true")
        };
        let cases = [
            (task("", "cpus:1", "true"), "empty"),
            (task("a/b", "cpus:1", "true"), "may hold only"),
            (task("t", "cpus:1", "  "), "empty command"),
            (task("t", "", "true"), "no resources"),
            (task("t", "disk:5", "true"), "some cpus or mem"),
            (neg, "negative"),
            (nan, "finite"),
            (
                v1::TaskInfo {
                    kill_grace_period_ms: Some(u64::MAX / 2),
                    ..task("t", "cpus:1", "true")
                },
                "exceeds",
            ),
            (
                v1::TaskInfo {
                    command: None,
                    ..task("t", "cpus:1", "true")
                },
                "no command",
            ),
        ];
        for (info, want) in cases {
            let err = validate_task(info).expect_err(want).to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
        let ok = validate_task(task("t", "cpus:0.1;mem:16", "true")).expect("valid");
        assert_eq!(ok.info.name, "t");
    }

    #[test]
    fn framework_info_is_checked() {
        assert!(validate_framework(None).is_err());
        let mut f = v1::FrameworkInfo {
            name: "x".into(),
            ..Default::default()
        };
        assert_eq!(
            validate_framework(Some(f.clone())).map(|f| f.roles),
            Ok(vec!["*".to_string()])
        );
        f.failover_timeout_secs = f64::NAN;
        assert!(validate_framework(Some(f.clone())).is_err());
        f.failover_timeout_secs = -1.0;
        assert!(validate_framework(Some(f)).is_err());
    }
}
