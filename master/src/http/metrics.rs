//! `/metrics` in the OpenMetrics text format. Every master answers it
//! itself, so Prometheus can scrape all of them: a follower reports that
//! it is not elected and its Raft position; the leader adds the
//! cluster's figures.
//!
//! One [`Registry`] per master, built once, holds one [`Collector`]
//! (`Families`). A scrape reads one snapshot (this master's Raft status
//! and, when leading, the core's [`MetricsView`]), hands it to the
//! collector, and encodes the registry once. Metric names and labels are
//! those of earlier releases: `mezzo_master_*`, see each `describe` call.

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::HttpState;
use crate::core::view::{self, MetricsView};
use crate::raft::RaftStatus;

/// The content type of the body: it is OpenMetrics text (it ends in
/// `# EOF`), not Prometheus 0.0.4 text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one scrape reports.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// This master's Raft position (none if the node has stopped).
    pub raft: Option<RaftStatus>,
    /// The cluster's figures, when this master leads.
    pub leader: Option<MetricsView>,
    /// Commands waiting for the owner task as the scrape began.
    pub queued: usize,
    /// Events held for framework streams that fell behind.
    pub held: u64,
}

/// The master's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    families: Arc<Families>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Builds the registry; once per master.
    pub fn new() -> Metrics {
        let families = Arc::new(Families::default());
        let mut registry = Registry::with_prefix("mezzo_master");
        registry.register_collector(Box::new(families.clone()));
        Metrics { registry, families }
    }

    /// Encodes `snapshot`. Two scrapes at once may both encode the newer
    /// of their snapshots; either is a true answer.
    pub fn encode(&self, snapshot: Snapshot) -> String {
        *self.families.latest.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The collector: every family, described from the latest snapshot.
#[derive(Debug, Default)]
struct Families {
    latest: Mutex<Snapshot>,
}

impl Collector for Families {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        gauge(
            &mut enc,
            "elected",
            "1 when this master is the leader",
            i64::from(snapshot.leader.is_some()),
        )?;
        gauge(
            &mut enc,
            "event_queue_commands",
            "Calls, streams' messages and reads waiting for the master's owner task (Mesos' event_queue_messages): a queue that stays long means the master is behind",
            snapshot.queued as i64,
        )?;
        gauge(
            &mut enc,
            "framework_events_held",
            "Events held for framework streams whose queue is full, until they read (task updates, the newest of each task, and other events in order); a framework behind by 65,536 events other than updates is disconnected",
            snapshot.held as i64,
        )?;
        if let Some(r) = &snapshot.raft {
            raft(&mut enc, r)?;
        }
        if let Some(m) = &snapshot.leader {
            cluster(&mut enc, m)?;
            usage(&mut enc, m)?;
            offers_and_counters(&mut enc, m)?;
            operations(&mut enc, m)?;
        }
        Ok(())
    }
}

type Enc<'a> = DescriptorEncoder<'a>;

fn gauge<N>(enc: &mut Enc<'_>, name: &str, help: &str, v: N) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counter(enc: &mut Enc<'_>, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn histogram(enc: &mut Enc<'_>, name: &str, help: &str, h: &Histogram) -> Result<(), std::fmt::Error> {
    h.encode(enc.encode_descriptor(name, help, None, MetricType::Histogram)?)
}

/// A gauge with one sample per label set; left out when it has none (as
/// an empty family always was).
fn gauges<L, N>(
    enc: &mut Enc<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, N)>,
) -> Result<(), std::fmt::Error>
where
    L: EncodeLabelSet,
    ConstGauge<N>: EncodeMetric,
{
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn raft(enc: &mut Enc<'_>, r: &RaftStatus) -> Result<(), std::fmt::Error> {
    gauge(enc, "raft_term", "Current Raft term", r.term as i64)?;
    gauge(enc, "raft_commit_index", "Raft commit index", r.commit as i64)?;
    gauge(enc, "raft_applied_index", "Raft applied index", r.applied as i64)?;
    gauge(
        enc,
        "raft_apply_lag",
        "Committed entries not yet applied",
        r.commit.saturating_sub(r.applied) as i64,
    )?;
    gauge(enc, "raft_members", "Masters in the group", r.members.len() as i64)
}

/// Agents, frameworks, tasks and resources.
fn cluster(enc: &mut Enc<'_>, m: &MetricsView) -> Result<(), std::fmt::Error> {
    gauge(
        enc,
        "uptime_seconds",
        "Seconds since this master started leading",
        m.uptime_secs as i64,
    )?;
    gauges(
        enc,
        "agents",
        "Agents by status",
        m.agents_by_status.iter().map(|(s, n)| ([("status", *s)], *n as i64)),
    )?;
    gauges(
        enc,
        "frameworks",
        "Frameworks by connection",
        m.frameworks_by_connected
            .iter()
            .map(|(c, n)| ([("connected", if *c { "true" } else { "false" })], *n as i64)),
    )?;
    gauges(
        enc,
        "tasks",
        "Known tasks by state (active and recently completed)",
        m.tasks_by_state
            .iter()
            .map(|(s, n)| ([("state", s.as_ref())], *n as i64)),
    )?;
    gauge(
        enc,
        "history_tasks",
        "Finished tasks the replicated task history keeps",
        m.history_tasks as i64,
    )?;
    gauge(
        enc,
        "history_removed_frameworks",
        "Removed frameworks the task history keeps",
        m.history_frameworks as i64,
    )?;
    gauge(
        enc,
        "history_bytes",
        "About how many bytes the task history holds (in the registry, on every master)",
        m.history_bytes as i64,
    )?;
    let r = &m.resources;
    let buckets = [("total", &r.total), ("used", &r.allocated), ("offered", &r.offered)];
    let mut resources = Vec::new();
    for (kind, res) in buckets {
        resources.push(([("resource", "cpus"), ("kind", kind)], res.cpus.0 as f64 / 1000.0));
        resources.push(([("resource", "mem"), ("kind", kind)], res.mem.0 as f64));
        resources.push(([("resource", "disk"), ("kind", kind)], res.disk.0 as f64));
    }
    gauges(
        enc,
        "resources",
        "Cluster resources of active agents (cpus; mem and disk in MiB)",
        resources,
    )
}

/// Per-agent container usage from the agents' latest reports.
fn usage(enc: &mut Enc<'_>, m: &MetricsView) -> Result<(), std::fmt::Error> {
    let by_agent = |f: fn(&crate::core::usage::Usage) -> i64| {
        m.agent_usage
            .iter()
            .map(move |(a, u)| ([("agent_id", a.as_str())], f(u)))
    };
    gauges(
        enc,
        "agent_container_cpu_seconds",
        "CPU time of the agent's live containers, as last reported",
        m.agent_usage
            .iter()
            .map(|(a, u)| ([("agent_id", a.as_str())], u.cpu_time_secs)),
    )?;
    gauges(
        enc,
        "agent_container_memory_rss_bytes",
        "Anonymous memory of the agent's live containers",
        by_agent(|u| u.memory_rss_bytes as i64),
    )?;
    gauges(
        enc,
        "agent_container_memory_cache_bytes",
        "Page cache of the agent's live containers",
        by_agent(|u| u.memory_cache_bytes as i64),
    )?;
    gauges(
        enc,
        "agent_container_pids",
        "Processes and threads in the agent's live containers",
        by_agent(|u| u.pids as i64),
    )
}

fn offers_and_counters(enc: &mut Enc<'_>, m: &MetricsView) -> Result<(), std::fmt::Error> {
    gauge(
        enc,
        "offers_outstanding",
        "Offers not yet used",
        m.offers_outstanding as i64,
    )?;
    let c = &m.counters;
    let counters = [
        ("offers_sent", "Offers sent to frameworks", c.offers_sent),
        ("offers_declined", "Offers declined", c.offers_declined),
        ("offers_rescinded", "Offers rescinded", c.offers_rescinded),
        ("offers_accepted", "Offers accepted", c.offers_accepted),
        ("tasks_launched", "Tasks sent to agents", c.tasks_launched),
        (
            "status_updates",
            "Status updates received from agents",
            c.status_updates,
        ),
        (
            "status_update_resends_held",
            "Agents' resends answered without the framework (just forwarded on the same stream, or acknowledged)",
            c.resends_held,
        ),
        (
            "acknowledgements",
            "Acknowledgements received from frameworks",
            c.acknowledgements,
        ),
        ("invalid_calls", "Calls refused as invalid", c.invalid_calls),
        ("allocation_runs", "Allocator runs", c.allocation_runs),
        (
            "allocation_nanoseconds",
            "Time spent in the allocator",
            c.allocation_nanos,
        ),
    ];
    for (name, help, v) in counters {
        counter(enc, name, help, v)?;
    }
    Ok(())
}

/// What operators alert on: drained and gone agents, tasks by state and
/// reason, the status update queue and its acknowledgement latency, and
/// the allocator's run time as a histogram.
fn operations(enc: &mut Enc<'_>, m: &MetricsView) -> Result<(), std::fmt::Error> {
    gauge(
        enc,
        "agents_draining",
        "Agents an operator is draining (no new offers)",
        m.agents_draining as i64,
    )?;
    gauge(
        enc,
        "agents_gone",
        "Agents an operator marked gone",
        m.agents_gone as i64,
    )?;
    gauges(
        enc,
        "tasks_by_reason",
        "Known tasks by state and the reason of their latest update",
        m.tasks_by_reason
            .iter()
            .map(|((state, reason), n)| ([("state", state.as_ref()), ("reason", *reason)], *n as i64)),
    )?;
    gauge(
        enc,
        "status_update_queue",
        "Status updates forwarded to frameworks and not yet acknowledged",
        m.status_update_queue as i64,
    )?;
    histogram(
        enc,
        "ack_latency_seconds",
        "Time from forwarding a status update to its acknowledgement",
        &m.ack_latency_seconds,
    )?;
    histogram(
        enc,
        "allocation_run_seconds",
        "Run time of one allocator pass",
        &m.allocation_run_seconds,
    )?;
    counter(
        enc,
        "operator_events_dropped",
        "Operator events dropped because the runtime fell behind",
        m.events_dropped,
    )
}

/// Reads the snapshot (one read of the core, one of the Raft node) and
/// answers it.
pub(super) async fn scrape(State(s): State<HttpState>) -> Response {
    let (queued, held) = (s.handle.queued(), s.handle.held_events());
    let leader = s.handle.read(view::metrics).await.ok();
    let raft = s.raft.status().await;
    let text = s.metrics.encode(Snapshot {
        raft,
        leader,
        queued,
        held,
    });
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::core::usage::Usage;

    fn raft() -> RaftStatus {
        RaftStatus {
            id: 1,
            role: "leader".into(),
            term: 3,
            leader_id: 1,
            leader: None,
            leader_mesos: None,
            commit: 9,
            applied: 7,
            last_index: 9,
            snapshot_index: 0,
            members: [(1, "a".into())].into_iter().collect(),
            matched: Default::default(),
        }
    }

    fn leader() -> MetricsView {
        MetricsView {
            uptime_secs: 5.0,
            agents_by_status: [("active", 2)].into_iter().collect(),
            frameworks_by_connected: [(true, 1)].into_iter().collect(),
            tasks_by_state: [(Cow::Borrowed("TASK_RUNNING"), 4)].into_iter().collect(),
            tasks_by_reason: [((Cow::Borrowed("TASK_RUNNING"), "REASON_UNSPECIFIED"), 4)]
                .into_iter()
                .collect(),
            resources: Default::default(),
            agent_usage: [(
                "a1".to_owned(),
                Usage {
                    pids: 3,
                    ..Usage::default()
                },
            )]
            .into_iter()
            .collect(),
            offers_outstanding: 1,
            counters: Default::default(),
            agents_draining: 0,
            agents_gone: 0,
            history_tasks: 12,
            history_frameworks: 1,
            history_bytes: 3000,
            status_update_queue: 2,
            ack_latency_seconds: Histogram::new([0.1]),
            allocation_run_seconds: Histogram::new([0.1]),
            events_dropped: 0,
        }
    }

    /// DESIGN.md "Observability": a follower reports only its election
    /// and Raft position; the leader the cluster's figures, in one
    /// OpenMetrics text with one `# EOF`.
    #[test]
    fn a_follower_and_a_leader_report_their_own_families() {
        let metrics = Metrics::new();
        let follower = metrics.encode(Snapshot {
            raft: Some(raft()),
            leader: None,
            queued: 3,
            held: 7,
        });
        assert!(follower.contains("mezzo_master_elected 0\n"), "{follower}");
        assert!(follower.contains("mezzo_master_event_queue_commands 3\n"), "{follower}");
        assert!(
            follower.contains("mezzo_master_framework_events_held 7\n"),
            "{follower}"
        );
        assert!(follower.contains("mezzo_master_raft_apply_lag 2\n"), "{follower}");
        assert!(!follower.contains("mezzo_master_agents"), "{follower}");
        let text = metrics.encode(Snapshot {
            raft: Some(raft()),
            leader: Some(leader()),
            queued: 0,
            held: 0,
        });
        for line in [
            "mezzo_master_elected 1\n",
            "mezzo_master_agents{status=\"active\"} 2\n",
            "mezzo_master_frameworks{connected=\"true\"} 1\n",
            "mezzo_master_tasks{state=\"TASK_RUNNING\"} 4\n",
            "mezzo_master_tasks_by_reason{state=\"TASK_RUNNING\",reason=\"REASON_UNSPECIFIED\"} 4\n",
            "mezzo_master_resources{resource=\"cpus\",kind=\"total\"} 0.0\n",
            "mezzo_master_agent_container_pids{agent_id=\"a1\"} 3\n",
            "mezzo_master_offers_sent_total 0\n",
            "mezzo_master_status_update_queue 2\n",
            "mezzo_master_ack_latency_seconds_count 0\n",
            "mezzo_master_operator_events_dropped_total 0\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(text.matches("# EOF").count(), 1);
    }
}
