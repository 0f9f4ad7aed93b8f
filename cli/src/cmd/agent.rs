use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use mezzo_agent::AgentConfig;
use mezzo_proto::resources::Resources;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Master addresses, comma-separated.
    #[arg(long, env = "MEZZO_MASTER", default_value = "127.0.0.1:5050")]
    master: String,
    /// HTTP address of the agent (`/state`, `/metrics`, `/health`).
    #[arg(long, env = "MEZZO_LISTEN", default_value = "127.0.0.1:5051")]
    listen: SocketAddr,
    /// Work dir for sandboxes and checkpoints (default /tmp/mezzo/agent-PORT).
    #[arg(long, env = "MEZZO_WORK_DIR")]
    work_dir: Option<PathBuf>,
    /// Resources to offer instead of the detected ones, e.g. "cpus:4;mem:8192;disk:10000;ports:[31000-32000]".
    #[arg(long, env = "MEZZO_RESOURCES")]
    resources: Option<String>,
    /// Hostname to report (default: the machine's).
    #[arg(long, env = "MEZZO_HOSTNAME")]
    hostname: Option<String>,
    /// Attributes, e.g. "rack:r1,zone:a".
    #[arg(long, env = "MEZZO_ATTRIBUTES", default_value = "")]
    attributes: String,
    /// First resend delay for unacknowledged status updates.
    #[arg(long, default_value = "1s", value_parser = super::duration)]
    status_retry: Duration,
    /// Largest resend delay for unacknowledged status updates.
    #[arg(long, default_value = "30s", value_parser = super::duration)]
    status_retry_max: Duration,
}

pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let work_dir = a
        .work_dir
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/mezzo/agent-{}", a.listen.port())));
    let mut cfg = AgentConfig::new(super::masters(&a.master), a.listen, work_dir);
    if let Some(r) = a.resources {
        cfg.resources = Some(Resources::parse(&r).context("--resources")?);
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
    cfg.status_retry_initial = a.status_retry;
    cfg.status_retry_max = a.status_retry_max;
    let agent = mezzo_agent::start(cfg).await.context("cannot start the agent")?;
    super::ready("agent", agent.http_addr);
    tokio::select! {
        r = agent.wait() => {
            r.context("agent stopped")?;
            Ok(ExitCode::SUCCESS)
        }
        _ = super::shutdown_signal() => Ok(ExitCode::SUCCESS),
    }
}
