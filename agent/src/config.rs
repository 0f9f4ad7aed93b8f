//! What an agent is told at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mezzo_proto::resources::Resources;

/// Configuration of one agent. [`AgentConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// gRPC addresses (`host:port`) of the masters, tried in turn.
    pub masters: Vec<String>,
    /// HTTP listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Where the agent keeps its id, status updates and sandboxes.
    pub work_dir: PathBuf,
    /// Where task checkpoints are kept; `None` picks a tmpfs
    /// ([`crate::paths::default_runtime_dir`]).
    pub runtime_dir: Option<PathBuf>,
    /// Resources to offer; `None` detects them (see [`crate::detect_resources`]).
    pub resources: Option<Resources>,
    /// Static reservations, offered on top of `resources` and only to
    /// their role (`cpus(eng):2` in `--resources`).
    pub reservations: std::collections::BTreeMap<mezzo_proto::reservation::Role, Resources>,
    pub hostname: String,
    pub attributes: Vec<(String, String)>,
    /// First delay before an unacknowledged status update is resent.
    pub status_retry_initial: Duration,
    /// Longest delay between two resends of one status update.
    pub status_retry_max: Duration,
    /// Time between SIGTERM and SIGKILL when neither the kill nor the task
    /// names one.
    pub default_kill_grace: Duration,
    /// How tasks are isolated.
    pub isolation: Isolation,
    /// How often new sandboxes' metadata is written back (`syncfs`), so
    /// that the kernel's own writeback does not stall the status journal's
    /// fsync (see [`crate::writeback`]); `None` leaves it to the kernel.
    pub sandbox_writeback: Option<Duration>,
    /// When the sandboxes of done tasks are removed.
    pub sandbox_gc: crate::gc::GcConfig,
    /// TLS and joining (see [`crate::tls`]).
    pub security: crate::tls::AgentSecurity,
    /// Where tasks' artifacts may come from, and the cache's size.
    pub artifacts: crate::fetch::FetchConfig,
    /// Host directories tasks may mount by name (`--host-volumes`).
    /// How long the data of a removed volume is kept before it is deleted.
    pub volume_retention: Duration,
    pub host_volumes: Vec<crate::volumes::HostVolume>,
    /// Where custom executors reach the agent (plain HTTP, the Mesos
    /// executor API; `127.0.0.1:0` by default). With port 0 the port
    /// chosen on the first start is kept in the work dir and taken again
    /// after a restart, where running executors reconnect.
    pub executor_listen: SocketAddr,
    /// A custom executor that has not subscribed this long after its
    /// launch is killed and its tasks fail.
    pub executor_registration_timeout: Duration,
}

/// How the agent runs tasks.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// cgroups + namespaces, as an unprivileged user (needs root).
    Linux(Box<IsolationConfig>),
    /// A plain process group in the sandbox, as the agent's user.
    None,
}

/// Settings of [`Isolation::Linux`].
#[derive(Debug, Clone)]
pub struct IsolationConfig {
    /// The `mezzo` binary, which runs as each container's supervisor.
    pub exe: PathBuf,
    /// The cgroup filesystem.
    pub cgroup_root: PathBuf,
    /// Parent cgroup of this agent's containers; `None` derives a stable
    /// name from the work dir (`mezzo-agent-<hash>`).
    pub cgroup_parent: Option<String>,
    /// User of tasks that name none.
    pub task_user: String,
    /// Other users tasks may ask for.
    pub allowed_users: Vec<String>,
    /// Hard-cap each task at its cpus (CFS quota) instead of weighting only.
    pub cpu_hard_limit: bool,
    /// Most processes per task.
    pub pids_max: u64,
    /// How often sandbox disk use is measured (and logs rotated).
    pub disk_check_interval: Duration,
    /// stdout/stderr size at which they are rotated.
    pub log_max_bytes: u64,
    /// Run tasks without the seccomp filter when they ask and the master's
    /// ACL allowed it (`relax_isolation` on `seccomp:unconfined`).
    pub allow_unconfined: bool,
    /// Host directories every task sees at the same path, read-only
    /// unless writable (`--host-paths`).
    pub host_paths: Vec<crate::containerizer::rootfs::HostPath>,
    /// A directory of OCI image layouts, one per name: tasks may use
    /// `oci:NAME[:TAG]` images (`--image-layouts`).
    pub image_layouts: Option<PathBuf>,
    /// Size the image store is kept under (`--image-store-max-mib`).
    pub image_store_max_bytes: u64,
    /// How registries are reached (`--insecure-registries`,
    /// `--registry-ca`) for `HOST/PATH[:TAG]` images.
    pub registries: crate::images::RegistryConfig,
    /// Each task in a user namespace of its own, container ids
    /// `0..count` mapped to host ids `base..` (`--user-namespaces`,
    /// `--user-namespace-ids`); `None`: tasks share the host's.
    pub userns: Option<crate::containerizer::userns::IdRange>,
    /// Ports on loopback tasks on the host's network may reach besides
    /// each other's listeners and the executor API (`--task-loopback`);
    /// `None`: every port (no filter).
    pub task_loopback: Option<Vec<std::ops::RangeInclusive<u16>>>,
}

impl IsolationConfig {
    /// Defaults: tasks run as `nobody`, 4096 processes each, weighted (not
    /// capped) cpu, disk checked every 5 s, logs rotated at 64 MiB.
    pub fn new(exe: PathBuf) -> Self {
        IsolationConfig {
            exe,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: None,
            task_user: "nobody".into(),
            allowed_users: Vec::new(),
            cpu_hard_limit: false,
            pids_max: 4096,
            disk_check_interval: Duration::from_secs(5),
            log_max_bytes: 64 * 1024 * 1024,
            allow_unconfined: false,
            host_paths: Vec::new(),
            image_layouts: None,
            image_store_max_bytes: 10 << 30,
            registries: crate::images::RegistryConfig::default(),
            userns: None,
            task_loopback: Some(crate::cgroups::loopback::DEFAULT_PORTS.to_vec()),
        }
    }
}

impl AgentConfig {
    pub fn new(masters: Vec<String>, listen: SocketAddr, work_dir: PathBuf) -> Self {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        AgentConfig {
            masters,
            listen,
            work_dir,
            runtime_dir: None,
            resources: None,
            reservations: Default::default(),
            hostname,
            attributes: Vec::new(),
            status_retry_initial: Duration::from_secs(10),
            status_retry_max: Duration::from_secs(600),
            default_kill_grace: Duration::from_secs(3),
            isolation: Isolation::None,
            sandbox_writeback: Some(Duration::from_secs(1)),
            sandbox_gc: crate::gc::GcConfig::default(),
            security: Default::default(),
            artifacts: Default::default(),
            host_volumes: Vec::new(),
            volume_retention: Duration::from_secs(3600),
            executor_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            executor_registration_timeout: Duration::from_secs(60),
        }
    }
}
