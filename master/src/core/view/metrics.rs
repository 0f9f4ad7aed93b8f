//! What `/metrics` reports of a leading master, read in one pass on the
//! owner task: counts, not lists, so a scrape stays cheap however many
//! tasks there are.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

use super::overview::{ResourceBuckets, buckets};
use super::{StateName, task_counts};
use crate::core::usage::Usage;
use crate::core::{Counters, Master};

/// The leader's figures at one moment. The histograms are handles to the
/// core's own (they only grow, and are read when encoded).
#[derive(Debug, Clone)]
pub struct MetricsView {
    pub uptime_secs: f64,
    /// Agents by status name (only statuses some agent has).
    pub agents_by_status: BTreeMap<&'static str, u64>,
    /// Frameworks by whether they are connected (only values some
    /// framework has).
    pub frameworks_by_connected: BTreeMap<bool, u64>,
    /// Active and retained tasks by state.
    pub tasks_by_state: BTreeMap<StateName, u64>,
    /// The same tasks by state and the reason of their latest update.
    pub tasks_by_reason: BTreeMap<(StateName, &'static str), u64>,
    /// Resources of active agents (`allocated` is what tasks use).
    pub resources: ResourceBuckets,
    /// Summed container usage of each agent that has reported, by agent id.
    pub agent_usage: BTreeMap<String, Usage>,
    pub offers_outstanding: usize,
    pub counters: Counters,
    pub agents_draining: usize,
    pub agents_gone: usize,
    /// The task history (see [`crate::history`]): finished tasks kept,
    /// removed frameworks kept, and about how many bytes they hold.
    pub history_tasks: usize,
    pub history_frameworks: usize,
    pub history_bytes: usize,
    /// Status updates forwarded and not yet acknowledged.
    pub status_update_queue: usize,
    pub ack_latency_seconds: Histogram,
    pub allocation_run_seconds: Histogram,
    pub events_dropped: u64,
}

pub fn metrics(m: &Master) -> MetricsView {
    let mut agents_by_status = BTreeMap::new();
    let mut agent_usage = BTreeMap::new();
    let now = Instant::now();
    for a in m.agents.values() {
        *agents_by_status.entry(a.status.name()).or_insert(0) += 1;
        let usage = a.usage.total(now);
        if usage.age_secs.is_some() {
            agent_usage.insert(a.id.to_string(), usage.total);
        }
    }
    let mut frameworks_by_connected = BTreeMap::new();
    for f in m.frameworks.values() {
        *frameworks_by_connected.entry(f.conn.is_some()).or_insert(0) += 1;
    }
    let mut tasks_by_reason = BTreeMap::new();
    for ((state, reason), n) in m.task_index.outcomes() {
        let reason = mezzo_proto::v1::StatusReason::try_from(reason).map_or("REASON_UNSPECIFIED", |r| r.as_str_name());
        *tasks_by_reason
            .entry((Cow::Borrowed(state.name()), reason))
            .or_insert(0) += n;
    }
    MetricsView {
        uptime_secs: m.started.elapsed().as_secs_f64(),
        agents_by_status,
        frameworks_by_connected,
        tasks_by_state: task_counts(m),
        tasks_by_reason,
        resources: buckets(m),
        agent_usage,
        offers_outstanding: m.offers.len(),
        counters: m.counters.clone(),
        agents_draining: m.registry.draining.len(),
        agents_gone: m.registry.gone.len(),
        history_tasks: m.registry.history.task_count(),
        history_frameworks: m.registry.history.removed.len(),
        history_bytes: m.registry.history.approx_bytes(),
        status_update_queue: m.observed.unacked(),
        ack_latency_seconds: m.observed.ack_latency_seconds.clone(),
        allocation_run_seconds: m.observed.allocation_seconds.clone(),
        events_dropped: m.observed.events_dropped,
    }
}
