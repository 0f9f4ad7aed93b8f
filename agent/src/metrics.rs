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

type StateLabels = Vec<(&'static str, &'static str)>;

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    tasks: Family<StateLabels, Gauge>,
    pub pending_updates: Gauge,
    pub connected: Gauge,
    pub updates_sent: Counter,
    pub tasks_launched: Counter,
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
        Metrics {
            registry: Arc::new(registry),
            tasks,
            pending_updates,
            connected,
            updates_sent,
            tasks_launched,
        }
    }

    pub fn task_state(&self, state: TaskState) -> Gauge {
        self.tasks.get_or_create(&vec![("state", state.name())]).clone()
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
