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
    /// Resources to offer; `None` detects them (see [`crate::detect_resources`]).
    pub resources: Option<Resources>,
    pub hostname: String,
    pub attributes: Vec<(String, String)>,
    /// First delay before an unacknowledged status update is resent.
    pub status_retry_initial: Duration,
    /// Longest delay between two resends of one status update.
    pub status_retry_max: Duration,
    /// Time between SIGTERM and SIGKILL when neither the kill nor the task
    /// names one.
    pub default_kill_grace: Duration,
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
            resources: None,
            hostname,
            attributes: Vec::new(),
            status_retry_initial: Duration::from_secs(1),
            status_retry_max: Duration::from_secs(30),
            default_kill_grace: Duration::from_secs(3),
        }
    }
}
