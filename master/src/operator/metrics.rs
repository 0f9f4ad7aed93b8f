//! Figures operators alert on that `/metrics` adds to the core counters:
//! drained and gone agents, tasks by state and reason, the status update
//! queue and its acknowledgement latency, and the allocator's run time
//! as a histogram.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::core::Master;
use crate::runtime::Handle;

type Labels = Vec<(String, String)>;

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    reg.register(name, help, g);
}

/// The extra metrics of a leading master, in Prometheus text.
pub fn render(m: &Master) -> String {
    let mut reg = Registry::with_prefix("mezzo_master");
    gauge(
        &mut reg,
        "agents_draining",
        "Agents an operator is draining (no new offers)",
        m.registry.draining.len() as i64,
    );
    gauge(
        &mut reg,
        "agents_gone",
        "Agents an operator marked gone",
        m.registry.gone.len() as i64,
    );
    let by_reason = Family::<Labels, Gauge>::default();
    for f in m.frameworks.values() {
        for t in f.tasks.values().chain(f.completed.iter()) {
            let reason = t
                .last_status
                .as_ref()
                .and_then(|s| mezzo_proto::v1::StatusReason::try_from(s.reason).ok())
                .map(|r| r.as_str_name())
                .unwrap_or("REASON_UNSPECIFIED");
            by_reason
                .get_or_create(&vec![
                    ("state".into(), t.state.name().into()),
                    ("reason".into(), reason.into()),
                ])
                .inc();
        }
    }
    reg.register(
        "tasks_by_reason",
        "Known tasks by state and the reason of their latest update",
        by_reason,
    );
    gauge(
        &mut reg,
        "status_update_queue",
        "Status updates forwarded to frameworks and not yet acknowledged",
        m.observed.unacked() as i64,
    );
    reg.register(
        "ack_latency_seconds",
        "Time from forwarding a status update to its acknowledgement",
        m.observed.ack_latency_seconds.clone(),
    );
    reg.register(
        "allocation_run_seconds",
        "Run time of one allocator pass",
        m.observed.allocation_seconds.clone(),
    );
    let dropped = Counter::<u64>::default();
    dropped.inc_by(m.observed.events_dropped);
    reg.register(
        "operator_events_dropped",
        "Operator events dropped because the runtime fell behind",
        dropped,
    );
    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

/// Appends the extra metrics (when leading) to `text` rendered by
/// `http::render`, keeping one `# EOF` at the end.
pub async fn append(text: String, handle: &Handle) -> String {
    let extra = handle.with_core(|c| c.ok().map(|m| render(m))).await.ok().flatten();
    let Some(extra) = extra else { return text };
    let mut out = text.trim_end().strip_suffix("# EOF").unwrap_or(&text).to_owned();
    out.push_str(&extra);
    out
}
