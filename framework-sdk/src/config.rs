//! How a framework tells the SDK where the masters are and who it is.

use std::time::Duration;

use mezzo_proto::security::Transport;
use mezzo_proto::v1;

/// One week: how long the master keeps a disconnected framework's tasks by
/// default, so that a scheduler restart does not lose them.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Everything [`Scheduler::start`](crate::Scheduler::start) needs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Master addresses (`host:port`, or a full URI), tried in turn. Empty:
    /// those of the client configuration file.
    pub masters: Vec<String>,
    /// How to reach the masters and prove who the framework is: TLS with a
    /// certificate or a bearer token, or plain text to an `--insecure`
    /// cluster. `None` (the default) reads the client configuration file
    /// (`$MEZZO_CLIENT_CONFIG`, else `~/.mezzo/config.toml`, which a new
    /// cluster writes for its administrator) when the driver starts.
    pub transport: Option<Transport>,
    /// Who the framework is: name, roles, failover timeout, principal.
    pub framework: v1::FrameworkInfo,
    /// Resume this framework instead of registering a new one.
    pub framework_id: Option<String>,
    /// Acknowledge each status update that carries a uuid as soon as it has
    /// been handed to the [`Events`](crate::Events) channel (default true).
    pub auto_acknowledge: bool,
    /// Longest pause between reconnection attempts (default 5 s).
    pub reconnect_backoff_max: Duration,
    /// Deadline for each unary call and for the subscription handshake
    /// (default 10 s).
    pub call_timeout: Duration,
}

impl SchedulerConfig {
    /// A config for framework `name` in role `*`, with a one-week failover
    /// timeout, auto-acknowledgement and the default timeouts.
    pub fn new(masters: impl IntoIterator<Item = impl Into<String>>, name: impl Into<String>) -> Self {
        SchedulerConfig {
            masters: masters.into_iter().map(Into::into).collect(),
            framework: v1::FrameworkInfo {
                name: name.into(),
                roles: vec!["*".to_owned()],
                failover_timeout_secs: DEFAULT_FAILOVER_TIMEOUT.as_secs_f64(),
                ..Default::default()
            },
            framework_id: None,
            transport: None,
            auto_acknowledge: true,
            reconnect_backoff_max: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
        }
    }

    /// Talks to the masters this way instead of reading the client
    /// configuration file.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = Some(transport);
        self
    }

    /// The transport to use, and the masters (the file's when none are
    /// configured); an error says what is missing.
    pub fn resolve_transport(&self) -> Result<(Transport, Vec<String>), String> {
        if let Some(t) = &self.transport {
            return Ok((t.clone(), self.masters.clone()));
        }
        let (transport, configured) = Transport::discover().map_err(|e| e.to_string())?;
        let masters = if self.masters.is_empty() {
            configured
        } else {
            self.masters.clone()
        };
        Ok((transport, masters))
    }
}
