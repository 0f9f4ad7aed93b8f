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
    /// Where the registry is kept.
    #[arg(long, env = "MEZZO_WORK_DIR", default_value = "/tmp/mezzo/master")]
    work_dir: PathBuf,
    /// Heartbeats to frameworks and agents.
    #[arg(long, env = "MEZZO_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = super::duration)]
    heartbeat_interval: Duration,
    /// An agent silent or disconnected this long is marked unreachable.
    #[arg(long, env = "MEZZO_AGENT_TIMEOUT", default_value = "10s", value_parser = super::duration)]
    agent_timeout: Duration,
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
    #[arg(long, env = "MEZZO_ELECTION_TICKS", default_value_t = 6)]
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
    /// Token operators must send (`Authorization: Bearer ...`) for actions
    /// such as drain and teardown; without one those are refused.
    #[arg(long, env = "MEZZO_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mut cfg = MasterConfig::new(a.listen, a.work_dir);
    cfg.http = a.http;
    cfg.peers = super::comma_list(&a.peers);
    cfg.join = super::comma_list(&a.join);
    cfg.raft_tick = a.raft_tick;
    cfg.election_ticks = a.election_ticks;
    cfg.heartbeat_ticks = a.heartbeat_ticks;
    cfg.snapshot_every = a.snapshot_every;
    cfg.core.heartbeat_interval = a.heartbeat_interval;
    cfg.core.agent_timeout = a.agent_timeout;
    cfg.core.offer_timeout = a.offer_timeout;
    cfg.operator = mezzo_master::http::OperatorAuth::new(a.operator_token);
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
        _ = super::shutdown_signal() => Ok(ExitCode::SUCCESS),
    }
}
