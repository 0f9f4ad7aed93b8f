//! The master's leader logic as a plain state machine with no I/O.
//!
//! Every input is a method call with the current time; every output is an
//! [`Effect`] pushed to an outbox that the runtime drains and executes
//! (send to a framework or agent, close a stream, propose a registry op).
//! Registry changes are two-step: a method proposes a [`RegistryOp`], and
//! only when the runtime reports it committed does [`Master::apply`] act
//! on it — the seam that a replicated log drives.

mod accept;
mod access;
mod agent;
mod executors;
mod framework;
mod history;
mod kv;
mod maintenance;
pub mod observe;
mod offer;
mod policy;
pub mod preempt;
mod registrations;
mod samples;
mod secrets;
mod task_index;
mod update;
pub mod usage;
pub mod view;
pub mod volumes;

// The core's maps are keyed by ids, hashed with foldhash seeded at random
// per process (as `/state`'s are), throughout `core` and the allocator:
// SipHash was 12 % of the leader's CPU admitting a failover's 40,000
// agents (`cargo bench -p mezzo-master --bench leader`). Ids come from
// authenticated callers, within the limits of `mezzo_proto::ids`.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mezzo_proto::ids::{AgentId, FrameworkId, OfferId, TaskId};
use mezzo_proto::reservation::{ReservedResources, Role};
use mezzo_proto::resources::Resources;
use mezzo_proto::state::TaskState;
use mezzo_proto::v1;

use crate::allocator::Allocator;
use crate::error::MasterError;
use crate::registry::{Registry, RegistryOp};

pub use accept::{LaunchRequest, OfferOperation};
pub use agent::AgentHello;
pub use maintenance::OperatorAction;
pub use policy::PolicyRequest;
/// Validated pieces of an agent's registration.
pub mod agent_types {
    pub use super::agent::{AgentDescription, ReportedTask};
    pub use super::executors::ReportedExecutor;
}

/// A task state's name (`TASK_RUNNING`) in a view: borrowed when the
/// master writes it, owned when a client reads it back.
pub type StateName = std::borrow::Cow<'static, str>;

/// Identifies one open stream (a framework's Subscribe or an agent's
/// Attach); assigned by the runtime, never reused.
pub type ConnId = u64;

/// Tunables of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub master_id: String,
    /// This master's Raft id and its `--mesos-listen` address, which the
    /// leader records in the registry (`RegistryOp::SetMesosEndpoint`).
    pub mesos_endpoint: (u64, Option<String>),
    /// Heartbeats to frameworks, and to agents while few enough (see
    /// `agent_heartbeats_per_second`).
    pub heartbeat_interval: Duration,
    /// Agent heartbeats the leader receives per second at most: a cluster
    /// of more than this many agents is told to heartbeat more rarely
    /// (whole seconds, growing only during a leadership), and the agent
    /// timeout stretches to three such intervals. Nomad scales heartbeat
    /// TTLs the same way. 0: no limit.
    pub agent_heartbeats_per_second: u32,
    /// An agent silent (or disconnected) this long is marked unreachable.
    pub agent_timeout: Duration,
    /// How long a new leader waits for the agents it recovered to
    /// re-register before it marks them unreachable (at least the silence
    /// limit): tens of thousands of agents take longer than one agent's
    /// silence to come back, and marking them unreachable meanwhile would
    /// flood frameworks and then re-admit them all. Mesos waits 10 minutes,
    /// Nomad 5.
    pub agent_reregister_timeout: Duration,
    /// An offer not used within this time is rescinded.
    pub offer_timeout: Duration,
    /// Filter applied by a decline that names no refuse time (Mesos: 5 s).
    pub default_refuse: Duration,
    /// Terminal tasks remembered per framework (for /state, the task
    /// history and duplicate task id checks).
    pub completed_tasks_per_framework: usize,
    /// Removed frameworks the task history remembers.
    pub completed_frameworks: usize,
    /// Between periodic allocation cycles over agents with free
    /// resources (events allocate at once).
    pub allocation_interval: Duration,
    /// Frameworks one principal may register (0: no limit).
    pub max_frameworks_per_principal: usize,
    /// Agents the cluster admits (0: no limit).
    pub max_agents: usize,
    /// The key that opens secrets (none on an `--insecure` cluster).
    pub data_key: DataKey,
    /// When waiting tasks of a higher priority preempt others.
    pub preemption: preempt::PreemptionConfig,
}

/// The cluster's data key, kept out of `Debug`.
#[derive(Clone, Default)]
pub struct DataKey(Option<std::sync::Arc<[u8; 32]>>);

impl DataKey {
    pub fn new(key: [u8; 32]) -> DataKey {
        DataKey(Some(std::sync::Arc::new(key)))
    }

    pub fn get(&self) -> Option<&[u8; 32]> {
        self.0.as_deref()
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "DataKey(<hidden>)"
        } else {
            "DataKey(none)"
        })
    }
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            master_id: uuid::Uuid::new_v4().to_string(),
            mesos_endpoint: (0, None),
            heartbeat_interval: Duration::from_secs(1),
            agent_heartbeats_per_second: 5000,
            agent_timeout: Duration::from_secs(10),
            agent_reregister_timeout: Duration::from_secs(120),
            offer_timeout: Duration::from_secs(30),
            default_refuse: Duration::from_secs(5),
            completed_tasks_per_framework: 1000,
            completed_frameworks: 50,
            allocation_interval: Duration::from_secs(1),
            max_frameworks_per_principal: 100,
            max_agents: 100_000,
            data_key: DataKey::default(),
            preemption: preempt::PreemptionConfig::default(),
        }
    }
}

/// What the core asks the runtime to do.
#[allow(clippy::large_enum_variant)] // effects are drained at once, never stored
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    ToFramework(ConnId, v1::Event),
    CloseFramework(ConnId),
    ToAgent(ConnId, v1::MasterMessage),
    CloseAgent(ConnId),
    Propose(RegistryOp),
    /// The policy change with this ticket is done (its registry op
    /// committed) or failed.
    PolicyDone(u64, Result<(), MasterError>),
    /// A key-value write proposed for call `request` was committed.
    KvDone(u64, Result<crate::kv::KvDone, MasterError>),
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub offers_sent: u64,
    pub offers_declined: u64,
    pub offers_rescinded: u64,
    pub offers_accepted: u64,
    pub tasks_launched: u64,
    pub status_updates: u64,
    /// Agents' resends of an update the framework was sent moments ago on
    /// the same stream, not forwarded again.
    #[serde(default)]
    pub resends_held: u64,
    pub acknowledgements: u64,
    pub invalid_calls: u64,
    pub allocation_runs: u64,
    pub allocation_nanos: u64,
}

#[derive(Debug, Clone)]
struct Task {
    pub id: TaskId,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    /// The role its resources are allocated to.
    pub role: Role,
    pub resources: ReservedResources,
    /// As launched, less what the fields above hold (see [`Task::keep`]).
    pub info: v1::TaskInfo,
    pub state: TaskState,
    /// Newest update seen, for reconciliation and /state.
    pub last_status: Option<v1::TaskStatus>,
    /// Forwarded to the framework and not yet acknowledged: resent when
    /// the framework re-subscribes. (Boxed: most tasks have none, and a
    /// leader holds a record per task.)
    pub unacked: Option<Box<v1::TaskStatus>>,
    /// The framework stream `unacked` was last forwarded on, and when.
    pub forwarded: Option<(ConnId, Instant)>,
    /// The uuid of the last update the framework acknowledged: the
    /// agent's resends of it are acknowledged by the master.
    pub acked: Option<u128>,
    pub launched_at: f64,
    /// Unix seconds when it was last seen terminal (completed tasks).
    pub ended_at: Option<f64>,
    /// The latest health verdict its agent reported; kept apart from
    /// `last_status`, which later updates without one replace.
    pub healthy: Option<bool>,
}

impl Task {
    /// Empties the parts of `info` a record holds in fields of its own
    /// (its id, agent, resources and role): a leader of 400,000 tasks held
    /// each twice, the resources as protobuf (issue 17).
    fn keep(info: &mut v1::TaskInfo) {
        info.task_id = String::new();
        info.agent_id = String::new();
        info.resources = Vec::new();
        info.allocation_role = String::new();
    }
}

#[derive(Debug)]
struct Framework {
    pub id: FrameworkId,
    pub info: v1::FrameworkInfo,
    pub conn: Option<ConnId>,
    pub disconnected_at: Option<Instant>,
    /// Roles it suppressed offers in (Mesos' `suppressed_roles`).
    pub suppressed_roles: std::collections::BTreeSet<Role>,
    /// Shared with `/state` snapshots being written off the owner task;
    /// changed copy-on-write (`Arc::make_mut`).
    pub tasks: HashMap<TaskId, Arc<Task>>,
    pub completed: VecDeque<Arc<Task>>,
    /// The tasks of `completed` by id (the later of two a rebuilt ring
    /// may hold for a reused id).
    pub completed_by_id: HashMap<TaskId, Arc<Task>>,
    pub offers: HashSet<OfferId>,
    pub allocated: Resources,
    pub offered: Resources,
    pub registered_at: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Active,
    Disconnected,
    /// Known from the registry after a master start; waiting to re-register.
    Recovering,
    Unreachable,
}

impl AgentStatus {
    /// The name it has in JSON and in metric labels.
    pub fn name(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Disconnected => "disconnected",
            AgentStatus::Recovering => "recovering",
            AgentStatus::Unreachable => "unreachable",
        }
    }
}

#[derive(Debug)]
struct Agent {
    pub id: AgentId,
    pub hostname: String,
    pub http_address: String,
    pub attributes: Vec<(String, String)>,
    /// What the agent reports, static reservations included.
    pub reported: ReservedResources,
    /// `reported` with the registry's dynamic reservations applied.
    pub total: ReservedResources,
    pub used: Resources,
    pub offered: Resources,
    pub conn: Option<ConnId>,
    pub status: AgentStatus,
    /// Last message from the agent, or when it entered its current status.
    pub last_seen: Instant,
    pub tasks: HashSet<(FrameworkId, TaskId)>,
    /// Latest container usage the agent reported (not in the registry).
    pub usage: usage::AgentUsageTable,
    /// Its last re-registration listed every task it was sent and has not
    /// forgotten: a task it does not have never reached it.
    pub tasks_complete: bool,
    /// Custom executors running on it, whose resources are held.
    pub executors: executors::Executors,
}

#[derive(Debug, Clone)]
struct Offer {
    pub id: OfferId,
    pub framework_id: FrameworkId,
    pub agent_id: AgentId,
    pub role: Role,
    pub resources: ReservedResources,
    /// Persistent volumes listed in it.
    pub volumes: Vec<mezzo_proto::ids::VolumeId>,
    pub expires: Instant,
}

/// The leader's in-memory state. Its tables are private to `core`: the
/// world outside reads them through [`view`] and changes them through
/// the methods that take inputs.
#[derive(Debug)]
pub struct Master {
    cfg: CoreConfig,
    registry: Registry,
    frameworks: BTreeMap<FrameworkId, Framework>,
    agents: BTreeMap<AgentId, Agent>,
    offers: HashMap<OfferId, Offer>,
    /// The outstanding offers of each agent: an agent's events (it
    /// re-registers, disconnects, is drained) find them without a scan of
    /// every offer, which made a re-registration storm quadratic.
    agent_offers: HashMap<AgentId, HashSet<OfferId>>,
    alloc: Allocator,
    /// Reservation changes proposed and not yet committed: the op, the
    /// resources held aside meanwhile, and the operator ticket to answer.
    pending_ops: Vec<(RegistryOp, AgentId, ReservedResources, Option<u64>)>,
    /// Weight and quota changes waiting for their commit.
    pending_tickets: Vec<(RegistryOp, u64)>,
    last_periodic: Instant,
    /// Subscriptions and registrations waiting for their registry op.
    /// New frameworks waiting for their registration to commit: their
    /// stream, info and the roles they subscribed suppressed in.
    pending_frameworks: HashMap<FrameworkId, (ConnId, v1::FrameworkInfo, Vec<Role>)>,
    pending_agents: HashMap<AgentId, (ConnId, AgentHello)>,
    /// Agents made by registrations that named an id, for their retries.
    registrations: registrations::Registrations,
    /// Agents whose `MarkAgentUnreachable` is proposed and not applied yet:
    /// one of them coming back must be admitted through the registry, after
    /// the mark, not before it.
    pending_unreachable: HashSet<AgentId>,
    /// The credential that opened each stream (see `access.rs`).
    conn_credentials: HashMap<ConnId, String>,
    framework_conns: HashMap<ConnId, FrameworkId>,
    /// Agents' host names that do not resolve from this master, with why
    /// (see `agent_host_checked`).
    host_problems: HashMap<String, String>,
    agent_conns: HashMap<ConnId, AgentId>,
    allocation_needed: bool,
    last_heartbeat: Instant,
    /// The agents' heartbeat interval now (see `agent_heartbeats_per_second`).
    agent_beat: Duration,
    last_agent_heartbeat: Instant,
    /// When [`Master::check_agents`] last looked at every agent.
    last_agent_check: Instant,
    /// When [`Master::expire_offers`] last looked at every offer.
    last_offer_check: Instant,
    last_failover_check: Instant,
    started: Instant,
    counters: Counters,
    observed: observe::Observations,
    /// Draining agents whose deadline passed and whose tasks were killed.
    drain_killed: HashSet<AgentId>,
    /// Tasks warned of their preemption, and waiting tasks that caused one.
    preemptions: preempt::Preemptions,
    /// Task ends not yet proposed to the history (see `history.rs`).
    unflushed_ends: Vec<crate::history::TaskRecord>,
    last_history_flush: Instant,
    /// Whether this leader has checked the registry's history bounds.
    history_bounds_proposed: bool,
    /// Whether this leadership has checked its Mesos endpoint in the registry.
    mesos_endpoint_recorded: bool,
    /// Utilisation samples not yet proposed (see `samples.rs`).
    unflushed_samples: Vec<crate::history::Sample>,
    last_sample: Option<Instant>,
    effects: Vec<Effect>,
    /// Every task of `frameworks`, newest launch first (see `task_index.rs`).
    task_index: task_index::TaskIndex,
}

impl Master {
    /// Builds the leader state from a recovered registry: known frameworks
    /// start disconnected (their failover clocks run from `now`), known
    /// agents start recovering (they have `agent_timeout` to re-register).
    pub fn recover(cfg: CoreConfig, registry: Registry, now: Instant) -> Master {
        let beat = cfg.heartbeat_interval;
        let mut m = Master {
            cfg,
            registry: Registry::default(),
            frameworks: BTreeMap::new(),
            agents: BTreeMap::new(),
            offers: HashMap::new(),
            agent_offers: HashMap::new(),
            alloc: Allocator::new(),
            pending_ops: Vec::new(),
            pending_tickets: Vec::new(),
            last_periodic: now,
            pending_frameworks: HashMap::new(),
            pending_agents: HashMap::new(),
            registrations: Default::default(),
            pending_unreachable: HashSet::new(),
            conn_credentials: HashMap::new(),
            framework_conns: HashMap::new(),
            host_problems: HashMap::new(),
            agent_conns: HashMap::new(),
            allocation_needed: false,
            last_heartbeat: now,
            agent_beat: beat,
            last_agent_heartbeat: now,
            last_agent_check: now,
            last_offer_check: now,
            last_failover_check: now,
            started: now,
            counters: Counters::default(),
            observed: observe::Observations::default(),
            drain_killed: HashSet::new(),
            preemptions: preempt::Preemptions::default(),
            unflushed_ends: Vec::new(),
            last_history_flush: now,
            history_bounds_proposed: false,
            mesos_endpoint_recorded: false,
            unflushed_samples: Vec::new(),
            last_sample: None,
            effects: Vec::new(),
            task_index: task_index::TaskIndex::default(),
        };
        for (role, w) in &registry.weights {
            m.alloc.set_weight(role, *w);
        }
        for (role, q) in &registry.quotas {
            m.alloc.set_quota(role, q.clone());
        }
        m.registry = registry;
        let frameworks: Vec<_> = m.registry.frameworks.values().cloned().collect();
        for rec in &frameworks {
            m.insert_framework(rec, None, Some(now));
        }
        m.rebuild_completed();
        let agents: Vec<_> = m.registry.agents.values().cloned().collect();
        for rec in &agents {
            if let Some(mut a) = agent::agent_from_record(rec, &m.registry, now) {
                if rec.unreachable_since.is_none() {
                    a.status = AgentStatus::Recovering;
                }
                m.alloc.add_agent(&a.id, a.total.clone(), false);
                m.agents.insert(a.id.clone(), a);
            }
        }
        m
    }

    /// Takes the effects produced so far.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Takes the effects produced so far into `out` (empty), and keeps
    /// `out`'s room for the next: a turn of 20,000 heartbeats or a batch
    /// of launches fills a list of megabytes, and a new one every turn
    /// had the kernel clear fresh pages for it (a sixth of a busy
    /// leader's CPU went to clearing pages).
    pub fn swap_effects(&mut self, out: &mut Vec<Effect>) {
        debug_assert!(out.is_empty());
        std::mem::swap(&mut self.effects, out);
    }

    #[cfg(test)]
    fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn emit(&mut self, e: Effect) {
        self.effects.push(e);
    }

    pub(crate) fn send_framework(&mut self, id: &FrameworkId, event: v1::event::Event) {
        if let Some(conn) = self.frameworks.get(id).and_then(|f| f.conn) {
            self.emit(Effect::ToFramework(conn, v1::Event { event: Some(event) }));
        }
    }

    pub(crate) fn send_agent(&mut self, id: &AgentId, msg: v1::master_message::Message) -> bool {
        match self.agents.get(id).and_then(|a| a.conn) {
            Some(conn) => {
                self.emit(Effect::ToAgent(conn, v1::MasterMessage { message: Some(msg) }));
                true
            }
            None => false,
        }
    }

    /// Records, once a leadership, where this master serves Mesos' API in
    /// plain HTTP, when the registry says otherwise: followers redirect
    /// Mesos clients there.
    fn record_mesos_endpoint(&mut self) {
        if self.mesos_endpoint_recorded {
            return;
        }
        self.mesos_endpoint_recorded = true;
        let (master, addr) = self.cfg.mesos_endpoint.clone();
        if master != 0 && self.registry.mesos_endpoints.get(&master) != addr.as_ref() {
            self.emit(Effect::Propose(RegistryOp::SetMesosEndpoint { master, addr }));
        }
    }

    /// Applies a committed registry op and acts on it.
    pub fn apply(&mut self, op: RegistryOp, now: Instant) {
        let outcome = self.registry.apply(&op);
        match op {
            RegistryOp::AdmitAgent(rec) => self.agent_admitted(&rec, now),
            RegistryOp::MarkAgentUnreachable { id, .. } => {
                self.pending_unreachable.remove(&id);
                self.agent_unreachable(&id, now);
            }
            RegistryOp::RegisterFramework(rec) => self.framework_registered(&rec, now),
            RegistryOp::RemoveFramework { id, .. } => self.framework_removed(&id, now),
            RegistryOp::RecordTaskEnds { .. } | RegistryOp::RecordSamples { .. } => {}
            RegistryOp::SetHistoryBounds { .. } | RegistryOp::SetMesosEndpoint { .. } => {}
            op @ (RegistryOp::SetWeights { .. }
            | RegistryOp::SetQuota { .. }
            | RegistryOp::Reserve { .. }
            | RegistryOp::Unreserve { .. }
            | RegistryOp::CreateVolume { .. }
            | RegistryOp::DestroyVolume { .. }
            | RegistryOp::Security { .. }) => self.policy_applied(op),
            RegistryOp::KvPut(w) | RegistryOp::KvDelete(w) => {
                if let Some(outcome) = outcome {
                    self.kv_applied(w.request, outcome.map_err(MasterError::from));
                }
            }
            RegistryOp::DrainAgent { id, .. } | RegistryOp::ReactivateAgent { id } => self.agent_drain_changed(&id),
            RegistryOp::MarkAgentGone { id, .. } => self.agent_gone(&id),
        }
    }

    /// Timers: heartbeats, agent timeouts, offer expiry, framework
    /// failover, and filter expiry (which may make new offers possible).
    pub fn tick(&mut self, now: Instant) {
        if now.duration_since(self.last_heartbeat) >= self.cfg.heartbeat_interval {
            self.last_heartbeat = now;
            let fw_conns: Vec<ConnId> = self.frameworks.values().filter_map(|f| f.conn).collect();
            for conn in fw_conns {
                let hb = v1::Event {
                    event: Some(v1::event::Event::Heartbeat(v1::Heartbeat {})),
                };
                self.emit(Effect::ToFramework(conn, hb));
            }
        }
        // A longer interval is announced at once, on the old schedule:
        // agents still count their silence by the one they know.
        let beat = self.agent_beat.max(self.spaced_agent_beat());
        let announce = beat != self.agent_beat;
        self.agent_beat = beat;
        if announce || now.duration_since(self.last_agent_heartbeat) >= self.agent_beat {
            self.last_agent_heartbeat = now;
            let agent_conns: Vec<ConnId> = self.agents.values().filter_map(|a| a.conn).collect();
            for conn in agent_conns {
                let hb = v1::master_message::Message::Heartbeat(v1::MasterHeartbeat {
                    interval_secs: self.agent_beat.as_secs_f64(),
                });
                self.emit(Effect::ToAgent(conn, v1::MasterMessage { message: Some(hb) }));
            }
        }
        // Scans of every agent and every offer: a twentieth of the time
        // allowed is soon enough (every tick was a million looks a second
        // at 50,000 agents).
        if now.duration_since(self.last_agent_check) >= self.agent_silence_limit() / 20 {
            self.last_agent_check = now;
            self.check_agents(now);
        }
        if now.duration_since(self.last_offer_check) >= self.cfg.offer_timeout / 20 {
            self.last_offer_check = now;
            self.expire_offers(now);
        }
        self.check_failovers(now);
        self.drain_tick();
        self.preempt_tick(now);
        self.flush_history(Some(now));
        self.record_mesos_endpoint();
        self.sample_utilisation(now);
        if now.duration_since(self.last_periodic) >= self.cfg.allocation_interval {
            // The periodic cycle: agents left with free resources (and
            // filters that expired) are looked at again.
            self.last_periodic = now;
            self.alloc.mark_idle_agents();
            self.allocation_needed = true;
        }
    }
}

#[cfg(test)]
mod tests;
