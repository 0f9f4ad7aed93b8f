use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use mezzo_agent::AgentConfig;
use mezzo_proto::reservation::ReservedResources;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML file of flag values (keys are the long flag names); flags and
    /// MEZZO_* variables override it.
    #[arg(long, env = "MEZZO_CONFIG")]
    config: Option<PathBuf>,
    /// Master addresses, comma-separated.
    #[arg(long, env = "MEZZO_MASTER", default_value = "127.0.0.1:5050")]
    master: String,
    /// HTTP address of the agent (`/state`, `/metrics`, `/health`).
    #[arg(long, env = "MEZZO_LISTEN", default_value = "127.0.0.1:5051")]
    listen: SocketAddr,
    /// Work dir for sandboxes and checkpoints (default /tmp/mezzo/agent-PORT).
    #[arg(long, env = "MEZZO_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Where task checkpoints are kept; they need only outlive the agent
    /// process, so a tmpfs is best (default: /run/mezzo/agent-<hash> or
    /// /dev/shm/mezzo/agent-<hash>, whichever is a tmpfs, else WORK_DIR/run).
    #[arg(long, env = "MEZZO_RUNTIME_DIR")]
    runtime_dir: Option<PathBuf>,
    /// Resources to offer instead of the detected ones, e.g. "cpus:4;mem:8192;disk:10000;ports:[31000-32000]".
    /// `name(role):value` reserves statically for a role, e.g. "cpus:4;mem:8192;cpus(eng):2;mem(eng):1024"
    /// (with only reserved ones, the detected resources are not offered).
    #[arg(long, env = "MEZZO_RESOURCES")]
    resources: Option<String>,
    /// Hostname to report (default: the machine's).
    #[arg(long, env = "MEZZO_HOSTNAME")]
    hostname: Option<String>,
    /// Attributes, e.g. "rack:r1,zone:a".
    #[arg(long, env = "MEZZO_ATTRIBUTES", default_value = "")]
    attributes: String,
    /// First resend delay for unacknowledged status updates. Every update
    /// waiting is sent again at once on a new connection, and a
    /// framework that re-subscribes is sent its unacknowledged updates by
    /// the master, so on a live stream a resend is only a safety net; at
    /// 1 s, 40,000 agents under load resent 14 times a task (Mesos: 10 s).
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    status_retry: Duration,
    /// How tasks are isolated: `linux` (cgroups + namespaces, needs root) or
    /// `none` (a plain process group, as the agent's user).
    #[arg(long, env = "MEZZO_ISOLATION", default_value = "linux", value_parser = ["linux", "none"])]
    isolation: String,
    /// User of tasks that name none (with linux isolation).
    #[arg(long, env = "MEZZO_TASK_USER", default_value = "nobody")]
    task_user: String,
    /// Other users tasks may ask for, comma-separated.
    #[arg(long, env = "MEZZO_ALLOWED_USERS", default_value = "")]
    allowed_users: String,
    /// Parent cgroup of this agent's containers (default: mezzo-agent-<hash of the work dir>).
    #[arg(long, env = "MEZZO_CGROUP_PARENT")]
    cgroup_parent: Option<String>,
    /// Cap each task's cpu at what it asked for (CFS quota), not only weight it.
    #[arg(long, env = "MEZZO_CPU_HARD_LIMIT")]
    cpu_hard_limit: bool,
    /// Run a task without the seccomp filter when it asks for it and the
    /// master's ACL allowed it (`relax_isolation` on `seccomp:unconfined`).
    #[arg(long, env = "MEZZO_ALLOW_UNCONFINED")]
    allow_unconfined: bool,
    /// What a task on the host's network may reach on loopback besides
    /// other tasks' listeners and the executor API: ports and ranges,
    /// comma-separated (the default 53 is for local DNS resolvers), `none`,
    /// or `all` for no filter (then every task reaches every service the
    /// host has on 127.0.0.1, the masters' and agent's among them).
    #[arg(long, env = "MEZZO_TASK_LOOPBACK", default_value = "53", value_parser = task_loopback)]
    task_loopback: TaskLoopback,
    /// Host directories every task sees at the same path, comma-separated;
    /// read-only unless suffixed `:rw` (e.g. `/data,/scratch:rw`).
    #[arg(long, env = "MEZZO_HOST_PATHS", default_value = "")]
    host_paths: String,
    /// Host directories tasks may mount by name (a mount's `host_volume`),
    /// comma-separated NAME=PATH; `:ro` makes one read-only for every task
    /// (e.g. `certs=/etc/ssl/certs:ro,scratch=/scratch`).
    #[arg(long, env = "MEZZO_HOST_VOLUMES", default_value = "")]
    host_volumes: String,
    /// How long the data of a persistent volume the master removed is
    /// kept (in WORK_DIR/volumes/+removed) before it is deleted: a master
    /// whose registry lost volumes cannot make their data go at once.
    #[arg(long, env = "MEZZO_VOLUME_RETENTION", default_value = "1h", value_parser = super::duration)]
    volume_retention: Duration,
    /// Run each isolated task in a user namespace of its own, so that root
    /// in a task is an unprivileged host user (ids from
    /// --user-namespace-ids); images' layers are id-mapped.
    #[arg(long, env = "MEZZO_USER_NAMESPACES")]
    user_namespaces: bool,
    /// With --user-namespaces: container uids and gids 0..COUNT are host
    /// ids BASE..BASE+COUNT, one range shared by every task of the agent.
    /// The default (0x70000000) is above the subordinate ids useradd hands
    /// out (/etc/subuid) and systemd-nspawn's container range.
    #[arg(long, env = "MEZZO_USER_NAMESPACE_IDS", default_value = "1879048192:65536", value_parser = userns_ids)]
    user_namespace_ids: mezzo_agent::containerizer::userns::IdRange,
    /// A directory of OCI image layouts, one per name: tasks may name
    /// `oci:NAME[:TAG]` or `oci:NAME@sha256:…` as their image.
    #[arg(long, env = "MEZZO_IMAGE_LAYOUTS")]
    image_layouts: Option<PathBuf>,
    /// Size the image store (`<work dir>/images`) is kept under, in MiB: the
    /// least recently used images no task uses are removed beyond it.
    #[arg(long, env = "MEZZO_IMAGE_STORE_MAX_MIB", default_value_t = 10240)]
    image_store_max_mib: u64,
    /// Registries (`host:port`, comma-separated) reached over plain HTTP
    /// for `HOST/PATH[:TAG]` images; every other registry is HTTPS.
    #[arg(long, env = "MEZZO_INSECURE_REGISTRIES", default_value = "")]
    insecure_registries: String,
    /// A PEM file of root certificates trusted for registries, besides
    /// the system's.
    #[arg(long, env = "MEZZO_REGISTRY_CA")]
    registry_ca: Option<PathBuf>,
    /// Where tasks' artifacts may come from, and the cache's size (boxed:
    /// the flags of `mezzo agent` are many).
    #[command(flatten)]
    artifacts: Box<ArtifactArgs>,
    /// Most processes one task may have.
    #[arg(long, env = "MEZZO_PIDS_LIMIT", default_value_t = 4096)]
    pids_limit: u64,
    /// How often each sandbox's disk use is measured.
    #[arg(long, default_value = "5s", value_parser = super::duration)]
    disk_check_interval: Duration,
    /// Size at which a task's stdout and stderr are rotated, in MiB.
    #[arg(long, default_value_t = 64)]
    log_max_mib: u64,
    /// Largest resend delay for unacknowledged status updates.
    #[arg(long, default_value = "10m", value_parser = super::duration)]
    status_retry_max: Duration,
    /// Where custom executors (Mesos' executor API, plain HTTP) reach the
    /// agent. With port 0 the port first chosen is kept in the work dir and
    /// taken again after a restart, so that running executors reconnect.
    #[arg(long, env = "MEZZO_EXECUTOR_LISTEN", default_value = "127.0.0.1:0")]
    executor_listen: SocketAddr,
    /// A custom executor that has not subscribed this long after its launch
    /// is killed, and its tasks fail.
    #[arg(long, default_value = "60s", value_parser = super::duration)]
    executor_registration_timeout: Duration,
    /// How often new sandboxes are written back to disk (`syncfs`), so that
    /// the kernel does not write many seconds of them at once while status
    /// updates wait for their fsync; 0 leaves it to the kernel.
    #[arg(long, env = "MEZZO_SANDBOX_WRITEBACK", default_value = "1s", value_parser = super::duration)]
    sandbox_writeback: Duration,
    /// How long the sandbox of a done task is kept on an empty disk; less
    /// as the disk fills (see --sandbox-gc-disk-headroom).
    #[arg(long, env = "MEZZO_SANDBOX_GC_DELAY", default_value = "1week", value_parser = super::duration)]
    sandbox_gc_delay: Duration,
    /// Fraction of the disk (blocks or inodes) to keep free: a sandbox is
    /// kept for DELAY × (1 − HEADROOM − usage), so none once usage reaches
    /// 1 − HEADROOM.
    #[arg(long, env = "MEZZO_SANDBOX_GC_DISK_HEADROOM", default_value_t = 0.1, value_parser = headroom)]
    sandbox_gc_disk_headroom: f64,
    /// How often the disk is measured and due sandboxes removed.
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    sandbox_gc_interval: Duration,
    /// Talk plain text to an `--insecure` cluster and serve HTTP to anyone.
    #[arg(long, env = "MEZZO_INSECURE_AGENT")]
    insecure: bool,
    /// A file holding the join token for the first start (`mezzo token
    /// create --kind agent`); or set MEZZO_JOIN_TOKEN. Without either, the
    /// agent join token of the local client configuration is used.
    #[arg(long, env = "MEZZO_JOIN_TOKEN_FILE")]
    join_token_file: Option<PathBuf>,
}

/// The flags of artifact fetching (docs/frameworks.md "Artifacts").
#[derive(Debug, clap::Args)]
struct ArtifactArgs {
    /// Directories (comma-separated) tasks may fetch local artifacts from
    /// (`CommandUri` values that are paths); none by default, so that no
    /// task can read the agent's own files.
    #[arg(long, env = "MEZZO_ARTIFACT_PATHS", default_value = "")]
    artifact_paths: String,
    /// Size the artifact cache (`<work dir>/artifacts`) is kept under, in
    /// MiB: the least recently used artifacts no task is fetching are
    /// removed beyond it.
    #[arg(long, env = "MEZZO_ARTIFACT_CACHE_MAX_MIB", default_value_t = 2048)]
    artifact_cache_max_mib: u64,
    /// Largest artifact a task may fetch (downloaded, and unpacked), in MiB.
    #[arg(long, env = "MEZZO_ARTIFACT_MAX_MIB", default_value_t = 4096)]
    artifact_max_mib: u64,
    /// Let tasks fetch artifacts from loopback addresses (127.0.0.0/8,
    /// ::1), which are refused by default: for tests and single-machine
    /// setups. Link-local addresses (cloud metadata) stay refused.
    #[arg(long, env = "MEZZO_ARTIFACT_ALLOW_LOOPBACK")]
    artifact_allow_loopback: bool,
}

/// `--host-paths`: absolute paths, each optionally `:ro` or `:rw`.
fn host_paths(list: &str) -> anyhow::Result<Vec<mezzo_agent::containerizer::rootfs::HostPath>> {
    super::comma_list(list)
        .into_iter()
        .map(|item| {
            let (path, writable) = match item.rsplit_once(':') {
                Some((path, "rw")) => (path.to_owned(), true),
                Some((path, "ro")) => (path.to_owned(), false),
                _ => (item.clone(), false),
            };
            anyhow::ensure!(
                path.starts_with('/'),
                "--host-paths: {item:?} is not an absolute path (PATH, PATH:ro or PATH:rw)"
            );
            Ok(mezzo_agent::containerizer::rootfs::HostPath {
                path: path.into(),
                writable,
            })
        })
        .collect()
}

fn userns_ids(s: &str) -> Result<mezzo_agent::containerizer::userns::IdRange, String> {
    mezzo_agent::containerizer::userns::IdRange::parse(s)
}

/// `--task-loopback`: `None` for `all`.
#[derive(Debug, Clone)]
struct TaskLoopback(Option<Vec<std::ops::RangeInclusive<u16>>>);

fn task_loopback(s: &str) -> Result<TaskLoopback, String> {
    mezzo_agent::cgroups::loopback::parse_ports(s).map(TaskLoopback)
}

fn headroom(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a fraction between 0 and 1")),
    }
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let work_dir = a
        .work_dir
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/mezzo/agent-{}", a.listen.port())));
    let mut cfg = AgentConfig::new(super::comma_list(&a.master), a.listen, work_dir);
    cfg.runtime_dir = a.runtime_dir;
    cfg.security.insecure = a.insecure;
    cfg.security.join_token = super::master::join_token(a.join_token_file.as_deref())?;
    if let Some(r) = a.resources {
        let r = ReservedResources::parse(&r).context("--resources")?;
        cfg.resources = Some(r.unreserved);
        cfg.reservations = r.reserved;
    }
    if let Some(h) = a.hostname {
        cfg.hostname = h;
    }
    for kv in a.attributes.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once(':')
            .with_context(|| format!("attribute {kv:?} is not name:value"))?;
        cfg.attributes.push((k.to_owned(), v.to_owned()));
    }
    if a.isolation == "linux" {
        let exe = std::env::current_exe().context("cannot find the mezzo binary to supervise containers")?;
        let mut iso = mezzo_agent::IsolationConfig::new(exe);
        iso.task_user = a.task_user;
        iso.cgroup_parent = a.cgroup_parent;
        iso.allowed_users = super::comma_list(&a.allowed_users);
        iso.cpu_hard_limit = a.cpu_hard_limit;
        iso.allow_unconfined = a.allow_unconfined;
        iso.task_loopback = a.task_loopback.0;
        iso.host_paths = host_paths(&a.host_paths)?;
        iso.userns = a.user_namespaces.then_some(a.user_namespace_ids);
        iso.image_layouts = a.image_layouts;
        iso.image_store_max_bytes = a.image_store_max_mib.saturating_mul(1 << 20);
        iso.registries = mezzo_agent::images::RegistryConfig {
            insecure: super::comma_list(&a.insecure_registries),
            extra_ca: a.registry_ca,
        };
        iso.pids_max = a.pids_limit;
        iso.disk_check_interval = a.disk_check_interval;
        iso.log_max_bytes = a.log_max_mib * 1024 * 1024;
        cfg.isolation = mezzo_agent::Isolation::Linux(Box::new(iso));
    }
    cfg.artifacts.allowed_paths = super::comma_list(&a.artifacts.artifact_paths)
        .into_iter()
        .map(PathBuf::from)
        .collect();
    cfg.artifacts.cache_max_bytes = a.artifacts.artifact_cache_max_mib.saturating_mul(1 << 20);
    cfg.artifacts.max_bytes = a.artifacts.artifact_max_mib.saturating_mul(1 << 20);
    cfg.artifacts.allow_loopback = a.artifacts.artifact_allow_loopback;
    cfg.volume_retention = a.volume_retention;
    cfg.host_volumes = super::comma_list(&a.host_volumes)
        .iter()
        .map(|item| mezzo_agent::volumes::HostVolume::parse(item))
        .collect::<Result<_, _>>()?;
    cfg.status_retry_initial = a.status_retry;
    cfg.status_retry_max = a.status_retry_max;
    cfg.executor_listen = a.executor_listen;
    cfg.executor_registration_timeout = a.executor_registration_timeout;
    cfg.sandbox_writeback = Some(a.sandbox_writeback).filter(|d| !d.is_zero());
    if a.sandbox_gc_interval.is_zero() {
        anyhow::bail!("--sandbox-gc-interval must be more than 0");
    }
    cfg.sandbox_gc = mezzo_agent::gc::GcConfig {
        delay: a.sandbox_gc_delay,
        disk_headroom: a.sandbox_gc_disk_headroom,
        interval: a.sandbox_gc_interval,
    };
    let mut agent = mezzo_agent::start(cfg).await.context("cannot start the agent")?;
    super::ready("agent", agent.http_addr);
    tokio::select! {
        r = agent.wait() => {
            r.context("agent stopped")?;
            Ok(ExitCode::SUCCESS)
        }
        _ = super::shutdown_signal() => {
            agent.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}
