use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use mezzo_master::MasterConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
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
    /// Unused offers are rescinded after this long.
    #[arg(long, env = "MEZZO_OFFER_TIMEOUT", default_value = "30s", value_parser = super::duration)]
    offer_timeout: Duration,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mut cfg = MasterConfig::new(a.listen, a.work_dir);
    cfg.http = a.http;
    cfg.core.heartbeat_interval = a.heartbeat_interval;
    cfg.core.agent_timeout = a.agent_timeout;
    cfg.core.offer_timeout = a.offer_timeout;
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
