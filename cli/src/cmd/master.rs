use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use mezzo_master::MasterConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML file of flag values (keys are the long flag names); flags and
    /// MEZZO_* variables override it.
    #[arg(long, env = "MEZZO_CONFIG")]
    config: Option<PathBuf>,
    /// Address for gRPC and HTTP (`/state`, `/metrics`, `/health`).
    #[arg(long, env = "MEZZO_LISTEN", default_value = "127.0.0.1:5050")]
    listen: SocketAddr,
    /// An extra HTTP-only address.
    #[arg(long, env = "MEZZO_HTTP")]
    http: Option<SocketAddr>,
    /// Also serve Mesos' API (scheduler, operator reads) in plain HTTP
    /// here, for Mesos clients that cannot speak TLS; callers still
    /// authenticate (HTTP Basic: principal and token). Off by default:
    /// Mesos' API is always on --listen (TLS).
    #[arg(long, env = "MEZZO_MESOS_LISTEN")]
    mesos_listen: Option<SocketAddr>,
    /// Where the registry is kept.
    #[arg(long, env = "MEZZO_WORK_DIR", default_value = "/tmp/mezzo/master")]
    work_dir: PathBuf,
    /// Heartbeats to frameworks and agents.
    #[arg(long, env = "MEZZO_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = super::duration)]
    heartbeat_interval: Duration,
    /// An agent silent or disconnected this long is marked unreachable
    /// (at least three agent heartbeat intervals).
    #[arg(long, env = "MEZZO_AGENT_TIMEOUT", default_value = "10s", value_parser = super::duration)]
    agent_timeout: Duration,
    /// After a new leader takes over, an agent not re-registered this long
    /// is marked unreachable (at least `--agent-timeout`).
    #[arg(long, env = "MEZZO_AGENT_REREGISTER_TIMEOUT", default_value = "2m", value_parser = super::duration)]
    agent_reregister_timeout: Duration,
    /// Agent heartbeats the leader receives per second at most: beyond this
    /// many agents, they are told to heartbeat more rarely (0: no limit).
    #[arg(long, env = "MEZZO_AGENT_HEARTBEATS_PER_SECOND", default_value_t = 5000)]
    agent_heartbeats_per_second: u32,
    /// Every master's address, this one's included, comma-separated, in the
    /// same order on every master. Omit for a single master.
    #[arg(long, env = "MEZZO_PEERS", default_value = "")]
    peers: String,
    /// Join a running group instead (its masters' addresses, comma-separated),
    /// after `mezzo masters add THIS-ADDRESS`.
    #[arg(long, env = "MEZZO_JOIN", default_value = "", conflicts_with = "peers")]
    join: String,
    /// One Raft tick.
    #[arg(long, env = "MEZZO_RAFT_TICK", default_value = "50ms", value_parser = super::duration)]
    raft_tick: std::time::Duration,
    /// Raft ticks without a leader before an election (randomised up to twice this).
    #[arg(long, env = "MEZZO_ELECTION_TICKS", default_value_t = 20)]
    election_ticks: usize,
    /// Raft ticks between a leader's heartbeats.
    #[arg(long, env = "MEZZO_HEARTBEAT_TICKS", default_value_t = 1)]
    heartbeat_ticks: usize,
    /// Applied registry changes between snapshots (log compaction).
    #[arg(long, env = "MEZZO_SNAPSHOT_EVERY", default_value_t = 10_000)]
    snapshot_every: u64,
    /// Unused offers are rescinded after this long.
    #[arg(long, env = "MEZZO_OFFER_TIMEOUT", default_value = "30s", value_parser = super::duration)]
    offer_timeout: Duration,
    /// Serve plain text and authenticate nobody (development only; every
    /// start logs a warning). Clients then need MEZZO_INSECURE=1.
    #[arg(long, env = "MEZZO_INSECURE_MASTER")]
    insecure: bool,
    /// Where the cluster CA lives, shared by the masters of one machine
    /// (created on a new cluster's first start).
    #[arg(long, env = "MEZZO_PKI_DIR")]
    pki_dir: Option<PathBuf>,
    /// Where a master that creates a new CA writes the administrator's
    /// client configuration (default: $MEZZO_HOME/config.toml, i.e.
    /// ~/.mezzo/config.toml). "none" writes none.
    #[arg(long, env = "MEZZO_ADMIN_CONFIG")]
    admin_config: Option<String>,
    /// A file holding a master join token (`mezzo token create --kind
    /// master`), for a master joining from another machine; or set
    /// MEZZO_JOIN_TOKEN.
    #[arg(long, env = "MEZZO_JOIN_TOKEN_FILE")]
    join_token_file: Option<PathBuf>,
    /// Let clients without a credential read (never act).
    #[arg(long, env = "MEZZO_ANONYMOUS_READ")]
    anonymous_read: bool,
    /// Calls per second one principal may make (burst twice that); 0: no limit.
    #[arg(long, env = "MEZZO_MAX_CALLS_PER_SECOND", default_value_t = 5_000)]
    max_calls_per_second: u32,
    /// Connections a master holds open at once.
    #[arg(long, env = "MEZZO_MAX_CONNECTIONS", default_value_t = 16_384)]
    max_connections: usize,
    /// Frameworks one principal may register; 0: no limit.
    #[arg(long, env = "MEZZO_MAX_FRAMEWORKS_PER_PRINCIPAL", default_value_t = 100)]
    max_frameworks_per_principal: usize,
    /// Agents the cluster admits; 0: no limit.
    #[arg(long, env = "MEZZO_MAX_AGENTS", default_value_t = 100_000)]
    max_agents: usize,
    /// Finished tasks the task history keeps per framework (newest kept).
    #[arg(long, env = "MEZZO_MAX_COMPLETED_TASKS_PER_FRAMEWORK", default_value_t = 1000)]
    max_completed_tasks_per_framework: usize,
    /// Removed frameworks the task history keeps, with their finished tasks.
    #[arg(long, env = "MEZZO_MAX_COMPLETED_FRAMEWORKS", default_value_t = 50)]
    max_completed_frameworks: usize,
    /// Never preempt tasks for waiting tasks of a higher priority.
    #[arg(long, env = "MEZZO_NO_PREEMPTION")]
    no_preemption: bool,
    /// How long a reported task of a higher priority waits before it may preempt.
    #[arg(long, env = "MEZZO_PREEMPTION_DELAY", value_parser = super::duration, default_value = "10s")]
    preemption_delay: Duration,
    /// Between a preemption's warning and its kill.
    #[arg(long, env = "MEZZO_PREEMPTION_GRACE", value_parser = super::duration, default_value = "10s")]
    preemption_grace: Duration,
    /// Heap made resident at start, in MiB, and freed memory kept resident
    /// from then on: a standby master pays the kernel's zeroing of the
    /// pages a failover fills before it leads (about the leader's resident
    /// size; 0 = none). See docs/operators.md, "Failover at scale".
    #[arg(long, env = "MEZZO_STANDBY_HEAP_MIB", default_value_t = 0)]
    standby_heap_mib: usize,
}

impl Args {
    /// The heap to make resident at start (`--standby-heap-mib`), in bytes.
    pub fn standby_heap(&self) -> usize {
        self.standby_heap_mib.saturating_mul(1 << 20)
    }
}

/// A join token from `file`, else from MEZZO_JOIN_TOKEN (never a flag's
/// value: command lines are visible to every user of the machine).
pub fn join_token(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f).with_context(|| format!("cannot read the join token in {}", f.display()))?;
        return Ok(Some(t.trim().to_owned()));
    }
    Ok(std::env::var("MEZZO_JOIN_TOKEN").ok().filter(|t| !t.trim().is_empty()))
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mut cfg = MasterConfig::new(a.listen, a.work_dir);
    cfg.http = a.http;
    cfg.mesos_listen = a.mesos_listen;
    cfg.peers = super::comma_list(&a.peers);
    cfg.join = super::comma_list(&a.join);
    cfg.raft_tick = a.raft_tick;
    cfg.election_ticks = a.election_ticks;
    cfg.heartbeat_ticks = a.heartbeat_ticks;
    cfg.snapshot_every = a.snapshot_every;
    cfg.core.heartbeat_interval = a.heartbeat_interval;
    cfg.core.agent_timeout = a.agent_timeout;
    cfg.core.agent_reregister_timeout = a.agent_reregister_timeout;
    cfg.core.agent_heartbeats_per_second = a.agent_heartbeats_per_second;
    cfg.core.offer_timeout = a.offer_timeout;
    cfg.core.max_frameworks_per_principal = a.max_frameworks_per_principal;
    cfg.core.max_agents = a.max_agents;
    cfg.core.completed_tasks_per_framework = a.max_completed_tasks_per_framework;
    cfg.core.completed_frameworks = a.max_completed_frameworks;
    cfg.core.preemption = mezzo_master::core::preempt::PreemptionConfig {
        enabled: !a.no_preemption,
        delay: a.preemption_delay,
        grace: a.preemption_grace,
    };
    let sec = &mut cfg.security;
    sec.insecure = a.insecure;
    if let Some(dir) = a.pki_dir {
        sec.pki_dir = dir;
    }
    sec.client_config = match a.admin_config.as_deref() {
        Some("none") => None,
        Some(path) => Some(PathBuf::from(path)),
        None => Some(mezzo_proto::security::client_config::mezzo_home().join("config.toml")),
    };
    sec.join_token = join_token(a.join_token_file.as_deref())?;
    sec.anonymous_read = a.anonymous_read;
    sec.max_calls_per_second = a.max_calls_per_second;
    sec.max_connections = a.max_connections;
    let master = mezzo_master::start(cfg).await.context("cannot start the master")?;
    super::ready("master", master.addr);
    if let Some(http) = master.http_addr {
        super::ready("master http", http);
    }
    tokio::select! {
        r = master.wait() => {
            r.context("master stopped")?;
            Ok(ExitCode::SUCCESS)
        }
        _ = super::shutdown_signal() => {
            // Said, so that a stop nobody asked for shows in the log.
            tracing::info!("stopping on SIGINT or SIGTERM");
            Ok(ExitCode::SUCCESS)
        }
    }
}
