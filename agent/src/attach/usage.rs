//! Container usage forwarded to the master on the agent's stream.
//!
//! Each report is complete (it replaces the previous one on the master), so
//! an empty report is sent once after the last measured container is gone,
//! and then nothing until there is usage again.

use mezzo_proto::v1;

use crate::AgentError;
use crate::task::table::TableHandle;

/// Builds the periodic reports of one master session.
#[derive(Debug, Default)]
pub(super) struct UsageReporter {
    /// The previous report named at least one container.
    last_nonempty: bool,
}

impl UsageReporter {
    /// The report to send now, if any.
    pub(super) async fn next(&mut self, table: &TableHandle) -> Result<Option<v1::AgentMessage>, AgentError> {
        let usage = table.usage().await?;
        if usage.is_empty() && !self.last_nonempty {
            return Ok(None);
        }
        self.last_nonempty = !usage.is_empty();
        let containers = usage
            .into_iter()
            .map(|(key, u)| v1::ContainerUsage {
                framework_id: key.framework_id.to_string(),
                task_id: key.task_id.to_string(),
                cpu_time_secs: u.cpu_time.as_secs_f64(),
                memory_rss_bytes: u.memory_rss,
                memory_cache_bytes: u.memory_cache,
                pids: u.pids,
            })
            .collect();
        Ok(Some(v1::AgentMessage {
            message: Some(v1::agent_message::Message::Usage(v1::UsageReport { containers })),
        }))
    }
}
