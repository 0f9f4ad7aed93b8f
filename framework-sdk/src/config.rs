//! How a framework tells the SDK where the masters are and who it is.

use std::time::Duration;

use mezzo_proto::v1;

/// One week: how long the master keeps a disconnected framework's tasks by
/// default, so that a scheduler restart does not lose them.
pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Everything [`Scheduler::start`](crate::Scheduler::start) needs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Master addresses (`host:port`, or a full `http://` URI), tried in turn.
    pub masters: Vec<String>,
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
            auto_acknowledge: true,
            reconnect_backoff_max: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
        }
    }
}
