//! Stopping instances: the kills the planner asks for, their retries,
//! and forgetting an instance once it has ended.

use std::time::Duration;

use mezzo_sdk::SdkError;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Owner;
use crate::plan::Phase;

/// A kill without a terminal update is sent again after this long.
const KILL_RETRY: Duration = Duration::from_secs(10);

impl Owner {
    pub(super) async fn kill_all(&mut self, name: &str, ids: Vec<String>) {
        for id in ids {
            let grace = {
                let Some(s) = self.services.get_mut(name) else { return };
                let Some(l) = s.live.get_mut(&id) else { continue };
                l.phase = Phase::Killing;
                l.stop_checker();
                l.kill_sent = Some(Instant::now());
                s.rec
                    .instances
                    .get(&id)
                    .and_then(|r| s.rec.versions.get(&r.version))
                    .map(|v| v.kill_grace)
            };
            info!(service = %name, task = %id, "stopping instance");
            self.kill_task(name, &id, grace).await;
        }
    }

    async fn kill_task(&mut self, name: &str, id: &str, grace: Option<Duration>) {
        match self.sched.kill(id, grace).await {
            Ok(()) => {}
            // The master no longer has it (or it already ended): it is gone.
            Err(SdkError::Rejected {
                code: tonic_code::NOT_FOUND | tonic_code::FAILED_PRECONDITION,
                ..
            }) => self.forget(name, id),
            Err(e) => warn!(task = %id, "kill failed (will retry): {e}"),
        }
    }

    pub(super) async fn retry_kills(&mut self) {
        let mut due = Vec::new();
        for (name, s) in &mut self.services {
            for (id, l) in &mut s.live {
                if l.phase == Phase::Killing && l.kill_sent.is_some_and(|t| t.elapsed() > KILL_RETRY) {
                    l.kill_sent = Some(Instant::now());
                    due.push((name.clone(), id.clone()));
                }
            }
        }
        for (name, id) in due {
            self.kill_task(&name, &id, None).await;
        }
    }

    /// Drops an instance that has ended.
    pub(super) fn forget(&mut self, name: &str, id: &str) {
        if let Some(s) = self.services.get_mut(name) {
            if let Some(mut l) = s.live.remove(id) {
                l.stop_checker();
            }
            if s.rec.instances.remove(id).is_some() {
                s.dirty = true;
            }
        }
    }
}

/// gRPC codes, as the SDK reports them.
mod tonic_code {
    pub const NOT_FOUND: tonic::Code = tonic::Code::NotFound;
    pub const FAILED_PRECONDITION: tonic::Code = tonic::Code::FailedPrecondition;
}
