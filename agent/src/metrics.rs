//! Prometheus metrics served on `/metrics`.
//!
//! The metric handles are atomics shared by the actors that update them;
//! they are observations, not state any decision depends on.

use std::sync::Arc;

use mezzo_proto::state::TaskState;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cgroups::Usage;
use crate::key::TaskKey;

type StateLabels = Vec<(&'static str, &'static str)>;
type TaskLabels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    tasks: Family<StateLabels, Gauge>,
    pub pending_updates: Gauge,
    pub connected: Gauge,
    pub updates_sent: Counter,
    pub tasks_launched: Counter,
    /// Sandboxes of done tasks waiting for garbage collection.
    pub sandboxes_done: Gauge,
    pub sandboxes_removed: Counter,
    /// Artifacts fetched into sandboxes (`crate::fetch`), and how the
    /// cache served those that asked for it.
    pub artifacts_fetched: Counter,
    pub artifact_cache_hits: Counter,
    pub artifact_cache_misses: Counter,
    pub artifact_cache_evictions: Counter,
    cpu_seconds: Family<TaskLabels, FloatGauge>,
    memory_rss: Family<TaskLabels, Gauge>,
    memory_cache: Family<TaskLabels, Gauge>,
    pids: Family<TaskLabels, Gauge>,
    health_checks: Family<StateLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let tasks = Family::<StateLabels, Gauge>::default();
        let pending_updates = Gauge::default();
        let connected = Gauge::default();
        let updates_sent = Counter::default();
        let tasks_launched = Counter::default();
        registry.register("mezzo_agent_tasks", "Tasks known to the agent, by state", tasks.clone());
        registry.register(
            "mezzo_agent_pending_status_updates",
            "Status updates not yet acknowledged",
            pending_updates.clone(),
        );
        registry.register(
            "mezzo_agent_connected",
            "1 while registered with a master",
            connected.clone(),
        );
        // The text encoder appends `_total` to counters.
        registry.register(
            "mezzo_agent_status_updates_sent",
            "Status updates sent to the master, resends included",
            updates_sent.clone(),
        );
        registry.register(
            "mezzo_agent_tasks_launched",
            "Tasks whose container was launched",
            tasks_launched.clone(),
        );
        let sandboxes_done = Gauge::default();
        let sandboxes_removed = Counter::default();
        registry.register(
            "mezzo_agent_sandboxes_done",
            "Sandboxes of done tasks kept until garbage collection removes them",
            sandboxes_done.clone(),
        );
        registry.register(
            "mezzo_agent_sandboxes_removed",
            "Sandboxes removed by garbage collection",
            sandboxes_removed.clone(),
        );
        let (artifacts_fetched, artifact_cache_hits) = (Counter::default(), Counter::default());
        let (artifact_cache_misses, artifact_cache_evictions) = (Counter::default(), Counter::default());
        for (name, help, counter) in [
            (
                "mezzo_agent_artifacts_fetched",
                "Artifacts fetched into sandboxes",
                &artifacts_fetched,
            ),
            (
                "mezzo_agent_artifact_cache_hits",
                "Artifact fetches served by the cache",
                &artifact_cache_hits,
            ),
            (
                "mezzo_agent_artifact_cache_misses",
                "Artifact fetches that asked for the cache and downloaded",
                &artifact_cache_misses,
            ),
            (
                "mezzo_agent_artifact_cache_evictions",
                "Artifacts removed from the cache to fit its size",
                &artifact_cache_evictions,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        let cpu_seconds = Family::<TaskLabels, FloatGauge>::default();
        let memory_rss = Family::<TaskLabels, Gauge>::default();
        let memory_cache = Family::<TaskLabels, Gauge>::default();
        let pids = Family::<TaskLabels, Gauge>::default();
        registry.register(
            "mezzo_agent_container_cpu_seconds",
            "Cpu time used by a task's container",
            cpu_seconds.clone(),
        );
        registry.register(
            "mezzo_agent_container_memory_rss_bytes",
            "Anonymous memory of a task's container",
            memory_rss.clone(),
        );
        registry.register(
            "mezzo_agent_container_memory_cache_bytes",
            "Page cache of a task's container",
            memory_cache.clone(),
        );
        registry.register(
            "mezzo_agent_container_pids",
            "Processes and threads in a task's container",
            pids.clone(),
        );
        let health_checks = Family::<StateLabels, Counter>::default();
        registry.register(
            "mezzo_agent_health_checks",
            "Health checks run for tasks, by result (passed or failed)",
            health_checks.clone(),
        );
        Metrics {
            health_checks,
            cpu_seconds,
            memory_rss,
            memory_cache,
            pids,
            registry: Arc::new(registry),
            tasks,
            pending_updates,
            connected,
            updates_sent,
            tasks_launched,
            sandboxes_done,
            sandboxes_removed,
            artifacts_fetched,
            artifact_cache_hits,
            artifact_cache_misses,
            artifact_cache_evictions,
        }
    }

    /// Counts one health check's result.
    pub fn health_check(&self, passed: bool) {
        let result = if passed { "passed" } else { "failed" };
        self.health_checks.get_or_create(&vec![("result", result)]).inc();
    }

    pub fn task_state(&self, state: TaskState) -> Gauge {
        self.tasks.get_or_create(&vec![("state", state.name())]).clone()
    }

    /// Replaces the per-container usage figures with these.
    pub fn set_usage<'a>(&self, usage: impl IntoIterator<Item = (&'a TaskKey, &'a Usage)>) {
        for f in [&self.memory_rss, &self.memory_cache, &self.pids] {
            f.clear();
        }
        self.cpu_seconds.clear();
        for (key, u) in usage {
            let labels = vec![
                ("framework_id", key.framework_id.to_string()),
                ("task_id", key.task_id.to_string()),
            ];
            self.cpu_seconds.get_or_create(&labels).set(u.cpu_time.as_secs_f64());
            self.memory_rss.get_or_create(&labels).set(u.memory_rss as i64);
            self.memory_cache.get_or_create(&labels).set(u.memory_cache as i64);
            self.pids.get_or_create(&labels).set(u.pids as i64);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
