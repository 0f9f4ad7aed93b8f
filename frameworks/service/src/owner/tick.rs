//! The periodic step: progress deadlines, the planner, kill retries,
//! revive and reconciliation, then the records that changed.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::Owner;
use crate::plan::{self, Verdict};

/// Instances the master has not answered about are asked for again this often.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);

impl Owner {
    pub(super) async fn on_tick(&mut self) {
        if !self.loaded {
            if self.sched.is_connected() {
                self.load().await;
            }
            return;
        }
        let now = self.now();
        let mut wanting = false;
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in &names {
            self.check_progress(name);
            let step = self.plan(name, now);
            wanting |= step.launch > 0;
            self.kill_all(name, step.kill).await;
        }
        self.retry_kills().await;
        if wanting && self.last_revive.is_none_or(|t| t.elapsed() > Duration::from_secs(2)) {
            self.last_revive = Some(Instant::now());
            if let Err(e) = self.sched.revive().await {
                warn!("revive failed: {e}");
            }
        }
        if self.last_reconcile.is_none_or(|t| t.elapsed() > RECONCILE_EVERY) {
            self.reconcile_unknown(false).await;
        }
        self.flush().await;
    }

    /// Rolls back an update that has not completed within its
    /// `progress_deadline` (say, new instances that never get offers or
    /// never start).
    fn check_progress(&mut self, name: &str) {
        let Some(s) = self.services.get_mut(name) else { return };
        if s.rec.deployment.from.is_none() {
            s.update_seen = None;
            return;
        }
        let seen = *s.update_seen.get_or_insert_with(Instant::now);
        let Some(spec) = s.rec.target_spec() else { return };
        let (deadline, auto) = (spec.upgrade.progress_deadline, spec.upgrade.auto_rollback);
        if s.rec.deployment.rolling_back || seen.elapsed() < deadline {
            return;
        }
        let version = s.rec.deployment.target;
        if let Verdict::RolledBack { from, to } = plan::failed(&mut s.rec.deployment, version, auto) {
            let what = format!(
                "version {from} not deployed within {}; rolling back to version {to}",
                humantime::format_duration(deadline)
            );
            warn!(service = %name, "{what}");
            s.rec.event(what);
            s.update_seen = Some(Instant::now());
            s.dirty = true;
        }
    }

    /// Runs the planner for one service, recording a completed update.
    pub(super) fn plan(&mut self, name: &str, now: Duration) -> plan::Step {
        let Some(s) = self.services.get_mut(name) else {
            return plan::Step::default();
        };
        let insts = s.insts(&self.draining);
        let (desired, limits) = (s.desired(), s.limits());
        let may = s.backoff.may_launch(now) && !s.rec.removing;
        let step = plan::step(&mut s.rec.deployment, desired, limits, &insts, may);
        if step.completed {
            let what = format!("version {} is deployed", s.rec.deployment.target);
            info!(service = %name, "{what}");
            s.rec.event(what);
            s.rec.prune_versions();
            s.dirty = true;
        }
        step
    }
}
