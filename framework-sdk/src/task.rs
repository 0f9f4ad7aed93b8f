//! Helpers to describe tasks and read their states.

use std::time::Duration;

use mezzo_proto::resources::Resources;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;

/// Checks an image and the secret its credentials come from, as the
/// master does: the image must be from a registry (`HOST/PATH…`) and the
/// secret a valid name. For frameworks that read images from job files.
pub fn check_image_credentials(image: Option<&str>, secret: &str) -> Result<(), String> {
    let Some(image) = image else {
        return Err("registry credentials need an image".to_owned());
    };
    let r = mezzo_proto::image::ImageRef::parse(image).map_err(|e| e.to_string())?;
    if !r.is_registry() {
        return Err(format!(
            "image {image} is a local layout; registry credentials are for HOST/PATH images"
        ));
    }
    if !mezzo_proto::security::secret::valid_name(secret) {
        return Err(format!("{secret:?} is not a secret name"));
    }
    Ok(())
}

/// Builds a [`v1::TaskInfo`] for [`Scheduler::accept`](crate::Scheduler::accept).
///
/// ```
/// use mezzo_sdk::{Resources, TaskBuilder};
/// let task = TaskBuilder::new("hello-1")
///     .resources(&Resources::parse("cpus:0.1;mem:32").unwrap())
///     .shell("echo hello")
///     .env("GREETING", "hi")
///     .build();
/// assert_eq!(task.task_id, "hello-1");
/// ```
#[derive(Debug, Clone)]
pub struct TaskBuilder {
    info: v1::TaskInfo,
    command: v1::CommandInfo,
}

impl TaskBuilder {
    /// A task with this id (unique within the framework); its name defaults
    /// to the id.
    pub fn new(task_id: impl Into<String>) -> Self {
        let task_id = task_id.into();
        TaskBuilder {
            info: v1::TaskInfo {
                name: task_id.clone(),
                task_id,
                ..Default::default()
            },
            command: v1::CommandInfo::default(),
        }
    }

    /// A human-readable name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.info.name = name.into();
        self
    }

    /// The resources the task needs; they must fit in the accepted offers.
    pub fn resources(mut self, resources: &Resources) -> Self {
        self.info.resources = resources.to_proto();
        self
    }

    /// Runs `script` with `/bin/sh -c`.
    pub fn shell(mut self, script: impl Into<String>) -> Self {
        self.command.value = script.into();
        self.command.arguments.clear();
        self.command.shell = true;
        self
    }

    /// Runs `program` directly with `args` as its `argv[1..]`.
    pub fn command(mut self, program: impl Into<String>, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.command.value = program.into();
        self.command.arguments = args.into_iter().map(Into::into).collect();
        self.command.shell = false;
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.command.environment.push(v1::EnvVar {
            name: name.into(),
            value: value.into(),
            ..Default::default()
        });
        self
    }

    /// Adds an environment variable whose value is the secret `secret` of
    /// the task's role (`mezzo secret put ROLE NAME`); the value reaches
    /// only the task's agent.
    pub fn secret_env(mut self, name: impl Into<String>, secret: impl Into<String>) -> Self {
        self.command.environment.push(v1::EnvVar {
            name: name.into(),
            secret: secret.into(),
            ..Default::default()
        });
        self
    }

    /// Writes the secret `secret` of the task's role to `path` in the
    /// sandbox (mode 0400) before the task starts.
    pub fn secret_file(mut self, path: impl Into<String>, secret: impl Into<String>) -> Self {
        self.command.secret_files.push(v1::SecretFile {
            path: path.into(),
            secret: secret.into(),
            ..Default::default()
        });
        self
    }

    /// Fetches an artifact into the task's sandbox before it starts: an
    /// http(s) URL or a path under the agent's `--artifact-paths`, checked
    /// against `sha256`, unpacked with `extract`, kept in the agent's cache
    /// with `cache` (docs/frameworks.md "Artifacts"). A failed fetch ends
    /// the task `TASK_FAILED` with `REASON_FETCH_FAILED`.
    pub fn uri(mut self, uri: v1::CommandUri) -> Self {
        self.command.uris.push(uri);
        self
    }

    /// Runs the task as this user (the agent must allow it).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.command.user = user.into();
        self
    }

    /// Time between SIGTERM and SIGKILL when the task is killed.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.info.kill_grace_period_ms = Some(millis(grace));
        self
    }

    /// Runs the task in an OCI image: `HOST[:PORT]/PATH[:TAG][@sha256:…]`
    /// from a registry, or `oci:NAME[:TAG]` / `oci:NAME@sha256:…`, a
    /// layout in the agent's `--image-layouts` (docs/images.md). Without a
    /// command the image's entrypoint and `Cmd` run.
    pub fn image(mut self, reference: impl Into<String>) -> Self {
        self.image_mut().reference = reference.into();
        self
    }

    fn image_mut(&mut self) -> &mut v1::Image {
        self.info
            .container
            .get_or_insert_with(Default::default)
            .image
            .get_or_insert_with(Default::default)
    }

    /// Pulls the task's image (see [`Self::image`]) with the credentials
    /// in the secret `secret` of the task's role, `USER:PASSWORD` as
    /// `docker login` takes them (`mezzo secret put ROLE NAME`): the value
    /// reaches only the task's agent, which uses it for the pull alone.
    pub fn image_credentials(mut self, secret: impl Into<String>) -> Self {
        self.image_mut().credentials_secret = secret.into();
        self
    }

    /// Mounts the persistent volume `id` at `container_path` (relative:
    /// beneath the sandbox; absolute: in the task's image), read-write.
    /// The volume must be listed in an offer the task is launched from
    /// ([`offers::volume`](crate::offers::volume)); the task's resources
    /// need not include its disk (docs/frameworks.md, "Volumes").
    pub fn volume(mut self, id: impl Into<String>, container_path: impl Into<String>) -> Self {
        self.mounts_mut().push(v1::Mount {
            container_path: container_path.into(),
            volume_id: id.into(),
            ..Default::default()
        });
        self
    }

    /// Mounts the directory the agent's operator shares as `name`
    /// (`mezzo agent --host-volumes NAME=PATH[:ro]`) at `container_path`.
    /// Needs the ACL action `relax_isolation` on `host_volume:NAME`; a
    /// share the operator made read-only stays so whatever is asked.
    pub fn host_volume(mut self, name: impl Into<String>, container_path: impl Into<String>, read_only: bool) -> Self {
        self.mounts_mut().push(v1::Mount {
            container_path: container_path.into(),
            read_only,
            host_volume: name.into(),
            ..Default::default()
        });
        self
    }

    fn mounts_mut(&mut self) -> &mut Vec<v1::Mount> {
        &mut self.info.container.get_or_insert_with(Default::default).mounts
    }

    /// Runs the task without the agent's seccomp filter (it keeps its
    /// other confinement). The master refuses it unless an ACL rule grants
    /// the caller `relax_isolation` on `seccomp:unconfined`; the agent,
    /// unless it was started with `--allow-unconfined`.
    pub fn seccomp_unconfined(mut self) -> Self {
        self.info.container.get_or_insert_with(Default::default).seccomp = "unconfined".into();
        self
    }

    /// Its priority (default 0): a waiting task of a higher priority may
    /// have the master preempt it (docs/frameworks.md, "Priority and
    /// preemption"); report it in the task's [`pending_task`] too.
    pub fn priority(mut self, priority: i32) -> Self {
        self.info.priority = priority;
        self
    }

    /// A health check the agent runs while the task runs; its result comes
    /// back as `TaskStatus.healthy` on a RUNNING update each time it changes.
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.info.health_check = Some(Box::new(check.0));
        self
    }

    /// Adds a free-form label.
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.info.labels.push(v1::Attribute {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// The finished task description.
    pub fn build(self) -> v1::TaskInfo {
        v1::TaskInfo {
            command: Some(self.command),
            ..self.info
        }
    }
}

/// A task's health check ([`TaskBuilder::health_check`]), run by its agent
/// from inside the task's container and network namespace. Unset times
/// are Mesos' defaults: no delay, a 10 s grace period, every 10 s, a 20 s
/// timeout, 3 failures in a row make it unhealthy, 1 pass healthy again.
///
/// ```
/// use std::time::Duration;
/// use mezzo_sdk::HealthCheck;
/// let check = HealthCheck::http(8080, "/healthz").interval(Duration::from_secs(2)).failures(2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct HealthCheck(v1::HealthCheck);

impl HealthCheck {
    /// Passes when `GET http://127.0.0.1:PORT/PATH` answers 200 to 399.
    pub fn http(port: u16, path: impl Into<String>) -> Self {
        HealthCheck(v1::HealthCheck {
            http: Some(v1::HttpCheck {
                port: port.into(),
                path: path.into(),
            }),
            ..Default::default()
        })
    }

    /// Passes when 127.0.0.1:PORT accepts a TCP connection.
    pub fn tcp(port: u16) -> Self {
        HealthCheck(v1::HealthCheck {
            tcp: Some(v1::TcpCheck { port: port.into() }),
            ..Default::default()
        })
    }

    /// Passes when `/bin/sh -c SCRIPT`, run in the task's container as the
    /// task, exits 0.
    pub fn shell(script: impl Into<String>) -> Self {
        HealthCheck(v1::HealthCheck {
            command: Some(v1::CommandInfo {
                value: script.into(),
                shell: true,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Time before the first check.
    pub fn delay(mut self, d: Duration) -> Self {
        self.0.delay_secs = Some(d.as_secs_f64());
        self
    }

    /// Failures this soon after the start do not count, until a first pass.
    pub fn grace_period(mut self, d: Duration) -> Self {
        self.0.grace_period_secs = Some(d.as_secs_f64());
        self
    }

    /// Time between checks (at least 100 ms).
    pub fn interval(mut self, d: Duration) -> Self {
        self.0.interval_secs = Some(d.as_secs_f64());
        self
    }

    /// A check not done within this fails.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.0.timeout_secs = Some(d.as_secs_f64());
        self
    }

    /// Failures in a row that make the task unhealthy.
    pub fn failures(mut self, n: u32) -> Self {
        self.0.consecutive_failures = Some(n);
        self
    }

    /// Passes in a row that make an unhealthy task healthy again.
    pub fn successes(mut self, n: u32) -> Self {
        self.0.consecutive_successes = Some(n);
        self
    }

    /// The message, for a `TaskInfo` built by hand.
    pub fn build(self) -> v1::HealthCheck {
        self.0
    }
}

/// Whole milliseconds, saturating (a grace period of 584 million years is
/// as good as forever).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One entry of [`Scheduler::report_pending`](crate::Scheduler::report_pending):
/// a task not launched yet, why it waits, and optionally what it needs.
pub fn pending_task(
    task_id: impl Into<String>,
    reason: impl Into<String>,
    needs: Option<&Resources>,
) -> v1::PendingTask {
    v1::PendingTask {
        task_id: task_id.into(),
        reason: reason.into(),
        resources: needs.map(Resources::to_proto).unwrap_or_default(),
        priority: 0,
    }
}

/// The state a status reports, or `None` for an unknown or unset value.
pub fn task_state(status: &v1::TaskStatus) -> Option<TaskState> {
    TaskState::from_proto(status.state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_task_carries_everything_set() {
        let res = Resources::parse("cpus:0.5;mem:64;ports:[31000-31001]").expect("valid resources");
        let task = TaskBuilder::new("t-1")
            .name("greeter")
            .resources(&res)
            .env("A", "1")
            .shell("echo hi")
            .env("B", "2")
            .kill_grace(Duration::from_millis(1500))
            .label("team", "infra")
            .build();
        assert_eq!(task.task_id, "t-1");
        assert_eq!(task.name, "greeter");
        assert_eq!(Resources::from_proto(&task.resources).expect("round trip"), res);
        assert_eq!(task.kill_grace_period_ms, Some(1500));
        assert_eq!(task.agent_id, "");
        assert_eq!(
            task.labels,
            vec![v1::Attribute {
                name: "team".into(),
                value: "infra".into()
            }]
        );
        let cmd = task.command.expect("command set");
        assert!(cmd.shell);
        assert_eq!(cmd.value, "echo hi");
        assert!(cmd.arguments.is_empty());
        let env: Vec<_> = cmd
            .environment
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(env, [("A", "1"), ("B", "2")]);
    }

    #[test]
    fn command_task_has_argv_and_defaults() {
        let task = TaskBuilder::new("t-2")
            .command("/bin/sleep", ["10"])
            .user("nobody")
            .build();
        assert_eq!(task.name, "t-2", "name defaults to the id");
        assert!(task.resources.is_empty());
        assert_eq!(task.kill_grace_period_ms, None);
        let cmd = task.command.expect("command set");
        assert!(!cmd.shell);
        assert_eq!(cmd.value, "/bin/sleep");
        assert_eq!(cmd.arguments, ["10"]);
        assert_eq!(cmd.user, "nobody");
    }

    #[test]
    fn last_command_wins() {
        let task = TaskBuilder::new("t").command("ls", ["-l"]).shell("true").build();
        let cmd = task.command.expect("command set");
        assert!(cmd.shell && cmd.arguments.is_empty() && cmd.value == "true");
    }

    #[test]
    fn task_state_reads_the_proto_enum() {
        let mut status = v1::TaskStatus {
            state: v1::TaskState::TaskFinished as i32,
            ..Default::default()
        };
        assert_eq!(task_state(&status), Some(TaskState::Finished));
        status.state = 0;
        assert_eq!(task_state(&status), None);
        status.state = 999;
        assert_eq!(task_state(&status), None);
    }

    #[test]
    fn mounts_are_kept_in_order_and_pass_the_masters_check() {
        let task = TaskBuilder::new("db.0")
            .image("oci:postgres")
            .volume("db-0", "data")
            .host_volume("certs", "/etc/certs", true)
            .build();
        let c = task.container.expect("container");
        assert_eq!(c.image.map(|i| i.reference).as_deref(), Some("oci:postgres"));
        assert_eq!(c.mounts.len(), 2);
        assert_eq!((c.mounts[0].volume_id.as_str(), c.mounts[0].read_only), ("db-0", false));
        assert_eq!(
            (c.mounts[1].host_volume.as_str(), c.mounts[1].read_only),
            ("certs", true)
        );
        let checked = mezzo_proto::volume::check(&c.mounts, true).expect("valid mounts");
        assert_eq!(checked[1].container_path, std::path::Path::new("/etc/certs"));
    }

    #[test]
    fn huge_grace_saturates() {
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
