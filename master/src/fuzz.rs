//! Fuzz checks of the master's decoders of untrusted input (DESIGN.md
//! "Bad input"; see `docs/fuzzing.md`): Raft batches from peers, an
//! agent's stream (its first message and what follows), scheduler calls,
//! registry ops as they come out of the log, and registry snapshots.
//!
//! Each check takes arbitrary bytes in its decoder's wire format, decodes
//! them as the master does, and panics if anything panics or if a value
//! that was accepted breaks an invariant; every refusal must be the typed
//! error of its layer (`INVALID_ARGUMENT` at the API edge). What is
//! accepted is then run against a real core ([`Master`], no I/O), so a
//! value that passes the edge but upsets the core is found too. The
//! property tests (`api/fuzz_tests.rs`, `raft/transport_fuzz_tests.rs`,
//! `registry_fuzz_tests.rs`) and the coverage-guided targets in `fuzz/`
//! call these; [`seeds`] gives valid inputs to start from.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mezzo_proto::fuzz::{check_id, check_reserved, check_resources};
use mezzo_proto::ids::{AgentId, FrameworkId, OfferId, TaskId};
use mezzo_proto::v1;
use prost::Message as _;
use prost::bytes::Buf;
use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType, Message, MessageType};

use crate::api;
use crate::core::agent_types::AgentDescription;
use crate::core::{AgentHello, ConnId, CoreConfig, Effect, Master, OfferOperation};
use crate::error::{ErrorCode, MasterError};
use crate::kv::{KvCall, MAX_KEY_BYTES, MAX_NAMESPACE_BYTES, MAX_VALUE_BYTES, Namespace};
use crate::raft::transport::decode_batch;
use crate::registry::{Registry, RegistryOp};
use crate::runtime::{Call, Command};

/// This master's id in the Raft checks, and the group's members.
const ME: u64 = 2;
const FW_CONN: ConnId = 1;
const AGENT_CONN: ConnId = 2;
/// Calls or stream messages taken from one input at most.
const MAX_STEPS: usize = 16;
/// Resources of the agent every core check starts with.
const AGENT_RESOURCES: &str = "cpus:4;mem:4096;disk:1000;ports:[31000-31099];gpus:2;cpus(eng):1;mem(eng):128";

fn members() -> BTreeMap<u64, String> {
    (1..=3).map(|id| (id, format!("127.0.0.1:{}", 5049 + id))).collect()
}

fn assert_invalid_argument(e: &MasterError) {
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "refused with {e:?}");
}

/// A `RaftBatch` as a peer sends it: refused with the status the
/// transport documents, or decoded into messages from the batch's sender
/// to this master that encode back to themselves.
pub fn raft_batch(data: &[u8]) {
    let Ok(batch) = v1::RaftBatch::decode(data) else { return };
    match decode_batch(&batch, ME, &members()) {
        Ok(msgs) => {
            assert_eq!(batch.to, ME);
            assert!(members().contains_key(&batch.from));
            assert_eq!(msgs.len(), batch.messages.len());
            for m in &msgs {
                assert_eq!((m.from, m.to), (batch.from, ME));
                let again = m.write_to_bytes().ok().and_then(|b| Message::parse_from_bytes(&b).ok());
                assert_eq!(
                    again.map(known_fields),
                    Some(known_fields(m.clone())),
                    "a decoded raft message does not encode back"
                );
            }
        }
        Err(status) => assert!(
            matches!(
                status.code(),
                tonic::Code::FailedPrecondition | tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
            ),
            "{status:?}"
        ),
    }
}

/// `m` without its unknown fields, at every level: rust-protobuf keeps
/// them in a hash map, so neither `==` nor the encoding of a message that
/// has some is stable (found by cargo fuzz; see
/// `a_repeated_snapshot_field_encodes_back`).
fn known_fields(mut m: Message) -> Message {
    m.unknown_fields = Default::default();
    for e in m.entries.iter_mut() {
        e.unknown_fields = Default::default();
    }
    if let Some(s) = m.snapshot.as_mut() {
        s.unknown_fields = Default::default();
        if let Some(meta) = s.metadata.as_mut() {
            meta.unknown_fields = Default::default();
            if let Some(cs) = meta.conf_state.as_mut() {
                cs.unknown_fields = Default::default();
            }
        }
    }
    m
}

/// A leader core with one framework (role `eng`) subscribed and one agent
/// registered, driven as the single-master runtime drives it.
struct Core {
    m: Master,
    now: Instant,
    fid: FrameworkId,
    offers: Vec<OfferId>,
    agent: Option<AgentId>,
}

impl Core {
    fn new() -> Core {
        Core::recover(Registry::default())
    }

    fn recover(registry: Registry) -> Core {
        let now = Instant::now();
        let mut core = Core {
            m: Master::recover(CoreConfig::default(), registry, now),
            now,
            fid: FrameworkId::generate(),
            offers: Vec::new(),
            agent: None,
        };
        let info = v1::FrameworkInfo {
            name: "fuzz".into(),
            roles: vec!["eng".into()],
            failover_timeout_secs: 60.0,
            ..Default::default()
        };
        if core.m.subscribe(FW_CONN, info, None, Vec::new(), now).is_ok() {
            core.run();
        }
        core
    }

    fn with_agent() -> Core {
        let mut core = Core::new();
        let info = AgentDescription {
            hostname: "h".into(),
            http_address: "127.0.0.1:5051".into(),
            resources: mezzo_proto::reservation::ReservedResources::parse(AGENT_RESOURCES).unwrap_or_default(),
            attributes: vec![],
        };
        if core
            .m
            .agent_attach(
                AGENT_CONN,
                AgentHello::Register {
                    info,
                    registration: None,
                },
                None,
                core.now,
            )
            .is_ok()
        {
            core.run();
        }
        core
    }

    /// Commits proposals at once and keeps the framework's id and latest
    /// offers; then checks the read model.
    fn run(&mut self) {
        for _ in 0..64 {
            self.m.allocate_if_needed(self.now);
            let effects = self.m.take_effects();
            if effects.is_empty() {
                break;
            }
            for e in effects {
                match e {
                    Effect::Propose(op) => self.m.apply(op, self.now),
                    Effect::ToFramework(_, ev) => match ev.event {
                        Some(v1::event::Event::Subscribed(s)) => {
                            if let Ok(id) = FrameworkId::parse(&s.framework_id) {
                                self.fid = id;
                            }
                        }
                        Some(v1::event::Event::Offers(o)) => {
                            self.offers = o
                                .offers
                                .iter()
                                .filter_map(|o| OfferId::parse(&o.offer_id).ok())
                                .collect();
                        }
                        _ => {}
                    },
                    Effect::ToAgent(_, msg) => {
                        if let Some(v1::master_message::Message::Registered(r)) = msg.message {
                            self.agent = AgentId::parse(&r.agent_id).ok();
                        }
                    }
                    _ => {}
                }
            }
        }
        check_state(&self.m);
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.m.tick(self.now);
        self.run();
    }

    /// Offer ids `o0`, `o1`... in a call stand for the outstanding offers,
    /// and agent id `a1` for the registered agent, so that fuzzed calls
    /// reach real ones.
    fn real_ids(&self, call: &mut Call) {
        let agent = |id: &mut AgentId| {
            if let (Some(a), "a1") = (&self.agent, id.as_str()) {
                *id = a.clone();
            }
        };
        match call {
            Call::Accept { offers, .. } | Call::Decline { offers, .. } => {
                for id in offers {
                    let n = id.as_str().strip_prefix('o').and_then(|n| n.parse::<usize>().ok());
                    if let (Some(n), false) = (n, self.offers.is_empty()) {
                        *id = self.offers[n % self.offers.len()].clone();
                    }
                }
            }
            Call::Acknowledge(acks) => acks.iter_mut().for_each(|(a, _, _)| agent(a)),
            Call::Reconcile { tasks } => tasks.iter_mut().filter_map(|(_, a)| a.as_mut()).for_each(agent),
            _ => {}
        }
    }
}

/// The read model: no agent holds more than it has, and `/state` reads
/// back as its clients (the CLI) read it.
fn check_state(m: &Master) {
    let view = m.view(true);
    for a in &view.agents {
        let mut held = a.used.clone();
        held.add(&a.offered);
        assert!(a.total.contains(&held), "agent {} holds {held} of {}", a.id, a.total);
    }
    let json = serde_json::to_value(&view).unwrap_or_default();
    if let Err(e) = serde_json::from_value::<crate::core::view::state::StateView>(json) {
        panic!("/state does not read back: {e}");
    }
}

/// What an accepted agent description satisfies.
fn check_description(d: &AgentDescription) {
    assert!(!d.hostname.trim().is_empty() && d.hostname.len() <= 255);
    assert!(!d.resources.is_empty());
    check_reserved(&d.resources);
    if !d.http_address.is_empty() {
        // The files proxy puts the address in a URL: it must stay the
        // URL's authority, a host and a port, and nothing more.
        let url = format!("http://{}/files/f/t/read", d.http_address);
        let uri = axum::http::Uri::try_from(url.as_str());
        let ok = uri.as_ref().is_ok_and(|u| {
            u.authority()
                .is_some_and(|a| a.as_str() == d.http_address && a.port().is_some() && !a.as_str().contains('@'))
                && u.path() == "/files/f/t/read"
        });
        assert!(ok, "agent http address {:?} is more than host:port", d.http_address);
    }
}

/// An agent's stream: length-delimited `AgentMessage`s, the first being
/// its `Register`/`Reregister` (`api::agent::hello`), the rest what the
/// reader task forwards (status updates, heartbeats, usage). Accepted
/// messages go to a core that knows one framework.
pub fn agent_stream(data: &[u8]) {
    let mut buf = data;
    let Ok(first) = v1::AgentMessage::decode_length_delimited(&mut buf) else {
        return;
    };
    let hello = match api::agent::hello(first) {
        Ok(h) => h,
        Err(e) => return assert_invalid_argument(&e),
    };
    match &hello {
        AgentHello::Register { info, registration } => {
            check_description(info);
            let valid = |r: &String| api::agent::valid_registration(r);
            assert!(registration.as_ref().is_none_or(valid), "{registration:?}");
        }
        AgentHello::Reregister { id, info, tasks, .. } => {
            check_id(&TaskId::parse(id.as_str()).unwrap_or_else(|e| panic!("{e}")));
            check_description(info);
            for t in tasks {
                check_id(&t.task_id);
                assert_eq!(t.info.task_id, t.task_id.as_str());
                check_reserved(&t.resources);
                assert!(t.launched_at.is_none_or(|at| at.is_finite() && at > 0.0));
                assert!(t.statuses.len() <= crate::core::observe::HISTORY_PER_TASK);
                for (i, s) in t.statuses.iter().enumerate() {
                    // Our ids on the latest (the task's status); none on the
                    // earlier ones (its history, which keeps none).
                    let ids = if i + 1 == t.statuses.len() {
                        (t.task_id.as_str(), t.framework_id.as_str(), id.as_str())
                    } else {
                        ("", "", "")
                    };
                    assert_eq!((s.task_id.as_str(), s.framework_id.as_str(), s.agent_id.as_str()), ids);
                    assert!(mezzo_proto::state::TaskState::from_proto(s.state).is_some() && s.uuid.is_empty());
                    assert!(v1::StatusReason::try_from(s.reason).is_ok());
                    assert!(s.timestamp.is_finite() && s.timestamp >= 0.0);
                    assert!(s.message.len() <= crate::history::MAX_MESSAGE_BYTES);
                }
            }
        }
    }
    let mut core = Core::new();
    if core.m.agent_attach(AGENT_CONN, hello, None, core.now).is_err() {
        return;
    }
    core.run();
    for _ in 0..MAX_STEPS {
        let Ok(msg) = v1::AgentMessage::decode_length_delimited(&mut buf) else {
            break;
        };
        match msg.message {
            Some(v1::agent_message::Message::StatusUpdate(u)) => match api::agent::status_update(AGENT_CONN, u) {
                Ok(Command::StatusUpdate {
                    conn,
                    framework,
                    status,
                    latest,
                }) => {
                    let _ = core.m.status_update(conn, framework, status, latest, core.now);
                }
                Ok(other) => panic!("a status update became {other:?}"),
                Err(e) => assert_invalid_argument(&e),
            },
            Some(v1::agent_message::Message::Usage(u)) => match api::usage::report(u) {
                Ok(usage) => {
                    for c in &usage {
                        assert!(c.usage.cpu_time_secs.is_finite() && c.usage.cpu_time_secs >= 0.0);
                    }
                    core.m.agent_usage(AGENT_CONN, usage, core.now);
                }
                Err(e) => assert_invalid_argument(&e),
            },
            _ => core.m.agent_heartbeat(AGENT_CONN, core.now),
        }
        core.advance(Duration::from_secs(1));
    }
    core.m.agent_conn_closed(AGENT_CONN, core.now);
    core.advance(Duration::from_secs(3600));
}

/// Kinds of scheduler call in [`scheduler_calls`]' input, by their byte.
const CALLS: &[&str] = &[
    "accept",
    "decline",
    "kill",
    "acknowledge",
    "reconcile",
    "subscribe",
    "kv_get",
    "kv_put",
    "kv_delete",
    "kv_list",
    "report_pending",
    "revive",
    "suppress",
    "teardown",
    "agent_update",
];

/// One call of [`scheduler_calls`]' input: its kind's byte, then the
/// length-delimited request.
pub fn encode_call(kind: &str, request: &impl prost::Message) -> Vec<u8> {
    let mut out = vec![CALLS.iter().position(|c| *c == kind).unwrap_or(0) as u8];
    out.extend(request.encode_length_delimited_to_vec());
    out
}

/// A session of scheduler calls: each a kind byte (see [`CALLS`]) and a
/// length-delimited request. Each is checked and converted as the API
/// does; accepted calls run on a core with one agent, offer ids `o0`,
/// `o1`... standing for its outstanding offers.
pub fn scheduler_calls(data: &[u8]) {
    let mut buf = data;
    let mut core = Core::with_agent();
    for _ in 0..MAX_STEPS {
        if !buf.has_remaining() {
            break;
        }
        let kind = CALLS[buf.get_u8() as usize % CALLS.len()];
        let call = match decode_call(kind, &mut buf) {
            Some(Ok(call)) => call,
            Some(Err(e)) => {
                assert_invalid_argument(&e);
                continue;
            }
            None => break,
        };
        let fid = core.fid.clone();
        match call {
            Checked::Call(mut call) => {
                check_call(&call);
                core.real_ids(&mut call);
                let _ = call.run(&mut core.m, &fid, core.now);
            }
            Checked::Kv(call) => {
                check_kv(&call);
                let _ = core.m.kv(&fid, call, 1);
            }
            Checked::AgentUpdate(Command::StatusUpdate {
                conn,
                framework,
                status,
                latest,
            }) => {
                // `f1` stands for the subscribed framework.
                let framework = if framework.as_str() == "f1" { fid } else { framework };
                let _ = core.m.status_update(conn, framework, status, latest, core.now);
            }
            Checked::AgentUpdate(other) => panic!("a status update became {other:?}"),
            Checked::Subscribe(info, id) => {
                assert!(!info.name.trim().is_empty() && info.name.len() <= 256);
                assert!(!info.roles.is_empty());
                let _ = core.m.subscribe(FW_CONN + 10, info, id, Vec::new(), core.now);
            }
        }
        core.advance(Duration::from_secs(1));
    }
    core.advance(Duration::from_secs(3600));
}

enum Checked {
    Call(Call),
    Kv(KvCall),
    Subscribe(v1::FrameworkInfo, Option<FrameworkId>),
    /// A status update from the agent, as its reader task checks it.
    AgentUpdate(Command),
}

/// Decodes and checks one request; `None` when the input runs out.
fn decode_call(kind: &str, buf: &mut &[u8]) -> Option<Result<Checked, MasterError>> {
    fn req<T: prost::Message + Default>(buf: &mut &[u8]) -> Option<T> {
        T::decode_length_delimited(buf).ok()
    }
    use api::scheduler as s;
    Some(match kind {
        "accept" => s::accept(req(buf)?).map(Checked::Call),
        "decline" => s::decline(&req(buf)?).map(Checked::Call),
        "kill" => s::kill(&req(buf)?).map(Checked::Call),
        "acknowledge" => s::acknowledge(req(buf)?).map(Checked::Call),
        "reconcile" => s::reconcile(&req(buf)?).map(Checked::Call),
        "subscribe" => {
            let r: v1::SubscribeRequest = req(buf)?;
            api::validate_framework(r.framework).and_then(|info| {
                let id = match r.framework_id.as_str() {
                    "" => None,
                    s => Some(FrameworkId::parse(s)?),
                };
                Ok(Checked::Subscribe(info, id))
            })
        }
        "kv_get" => api::kv::get(&req(buf)?).map(Checked::Kv),
        "kv_put" => api::kv::put(req(buf)?).map(Checked::Kv),
        "kv_delete" => api::kv::delete(req(buf)?).map(Checked::Kv),
        "kv_list" => api::kv::list(&req(buf)?).map(Checked::Kv),
        "report_pending" => {
            let r: v1::ReportPendingRequest = req(buf)?;
            api::pending::pending_tasks(r.tasks).map(|t| Checked::Call(Call::ReportPending(t)))
        }
        "revive" => Ok(Checked::Call(Call::Revive(Vec::new()))),
        "suppress" => Ok(Checked::Call(Call::Suppress(Vec::new()))),
        "agent_update" => api::agent::status_update(AGENT_CONN, req(buf)?).map(Checked::AgentUpdate),
        _ => Ok(Checked::Call(Call::Teardown)),
    })
}

/// What an accepted scheduler call satisfies.
fn check_call(call: &Call) {
    let max_refuse = Duration::from_secs_f64(api::MAX_FAILOVER_SECS);
    match call {
        Call::Accept {
            offers,
            operations,
            refuse,
        } => {
            assert!(refuse.is_none_or(|r| r <= max_refuse));
            for o in offers {
                check_id(&TaskId::parse(o.as_str()).unwrap_or_else(|e| panic!("{e}")));
            }
            for op in operations {
                match op {
                    OfferOperation::Launch(l) => {
                        check_id(&l.task_id);
                        assert_eq!(l.info.task_id, l.task_id.as_str());
                        assert!(!l.resources.is_empty());
                        check_reserved(&l.resources);
                        let flat = l.resources.total();
                        assert!(flat.cpus.0 > 0 || flat.mem.0 > 0);
                        let cmd = l.info.command.as_ref().unwrap_or_else(|| panic!("no command"));
                        assert!(!cmd.value.trim().is_empty() && !cmd.value.contains('\0'));
                        assert!(cmd.arguments.iter().all(|a| !a.contains('\0')));
                        for e in &cmd.environment {
                            assert!(!e.name.is_empty() && !e.name.contains(['=', '\0']) && !e.value.contains('\0'));
                        }
                        assert!(!l.info.name.is_empty() && l.info.name.len() <= 1024);
                        assert!(l.info.agent_id.is_empty());
                        assert!(
                            l.info
                                .kill_grace_period_ms
                                .is_none_or(|ms| Duration::from_millis(ms) <= api::MAX_KILL_GRACE)
                        );
                    }
                    OfferOperation::Reserve(r) | OfferOperation::Unreserve(r) => {
                        assert!(!r.is_empty());
                        check_reserved(r);
                    }
                    OfferOperation::Create(volumes) => {
                        assert!(!volumes.is_empty());
                        for v in volumes {
                            assert!(v.disk.disk.0 >= 1 && v.disk.cpus.0 == 0 && v.disk.mem.0 == 0);
                        }
                    }
                    OfferOperation::Destroy(ids) => assert!(!ids.is_empty()),
                }
            }
        }
        Call::Decline { offers, refuse } => {
            assert!(!offers.is_empty() && refuse.is_none_or(|r| r <= max_refuse));
        }
        Call::Kill { task, grace } => {
            check_id(task);
            assert!(grace.is_none_or(|g| g <= api::MAX_KILL_GRACE));
        }
        Call::Acknowledge(acks) => {
            assert!(!acks.is_empty() && acks.len() <= api::scheduler::MAX_ACKS_PER_CALL);
            for (_, task, _) in acks {
                check_id(task);
            }
        }
        Call::Reconcile { tasks } => tasks.iter().for_each(|(t, _)| check_id(t)),
        Call::ReportPending(tasks) => {
            assert!(tasks.len() <= crate::core::observe::MAX_PENDING_TASKS);
            for t in tasks {
                check_id(&TaskId::parse(&t.task_id).unwrap_or_else(|e| panic!("{e}")));
                if let Some(r) = &t.resources {
                    check_resources(r);
                }
            }
        }
        Call::Message { data, .. } => assert!(data.len() <= api::MAX_OPAQUE_BYTES),
        Call::Revive(_)
        | Call::Suppress(_)
        | Call::Teardown
        | Call::UpdateFramework(..)
        | Call::ShutdownExecutor { .. } => {}
    }
}

fn check_kv(call: &KvCall) {
    let key_ok = |k: &str| !k.is_empty() && k.len() <= MAX_KEY_BYTES && !k.chars().any(char::is_control);
    match call {
        KvCall::Get { key } | KvCall::Delete { key, .. } => assert!(key_ok(key), "{key:?}"),
        KvCall::Put { key, value, .. } => assert!(key_ok(key) && value.len() <= MAX_VALUE_BYTES),
        KvCall::List { prefix } => assert!(prefix.len() <= MAX_KEY_BYTES),
    }
}

/// Registry ops as they come out of the log: one JSON op per line.
/// Applied to a registry they never panic; replay from their re-encoded
/// JSON gives the same registry (every replica agrees); the snapshot of
/// the result reads back; and a leader core fed the same ops, then
/// recovered from the result, never panics.
pub fn registry_ops(data: &[u8]) {
    let ops: Vec<RegistryOp> = data
        .split(|b| *b == b'\n')
        .take(MAX_STEPS * 4)
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect();
    let mut first = Registry::default();
    let mut replica = Registry::default();
    let mut core = Core::with_agent();
    for op in &ops {
        let outcome = first.apply(op);
        let again: Option<RegistryOp> = serde_json::to_vec(op)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let again = again.unwrap_or_else(|| panic!("op {op:?} does not read back from its JSON"));
        assert_eq!(replica.apply(&again), outcome, "replicas disagree on {op:?}");
        core.m.apply(again, core.now);
        core.run();
    }
    assert_eq!(first, replica, "replay from JSON differs");
    check_namespaces(&first.kv);
    check_snapshot(&first);
    core.advance(Duration::from_secs(3600));
}

/// A registry snapshot as a joining master or a restarted one decodes
/// it: what decodes reads back the same, takes further ops without
/// panicking, and a leader recovers from it.
pub fn registry_snapshot(data: &[u8]) {
    let Ok(registry) = serde_json::from_slice::<Registry>(data) else {
        return;
    };
    check_snapshot(&registry);
    let mut r = registry.clone();
    for fid in registry.kv.keys().chain(registry.frameworks.keys()) {
        let put = RegistryOp::KvPut(crate::kv::KvWrite {
            framework: fid.clone(),
            key: "fuzz".into(),
            value: Some(b"v".to_vec()),
            expected_version: None,
            request: 1,
        });
        r.apply(&put);
    }
    for (id, a) in &registry.agents {
        r.apply(&RegistryOp::Reserve {
            agent: id.clone(),
            role: mezzo_proto::reservation::Role::star(),
            resources: a.resources.clone(),
            principal: String::new(),
        });
    }
    let mut core = Core::recover(registry);
    core.advance(Duration::from_secs(1));
    core.advance(Duration::from_secs(3600));
}

fn check_snapshot(r: &Registry) {
    let json = serde_json::to_vec(r).unwrap_or_default();
    let back = serde_json::from_slice::<Registry>(&json);
    assert_eq!(back.as_ref().ok(), Some(r), "the snapshot does not read back");
}

/// A namespace's byte count is its keys and values, within the limit.
fn check_namespaces(kv: &BTreeMap<FrameworkId, Namespace>) {
    for (fid, ns) in kv {
        let sum: u64 = ns.entries.iter().map(|(k, e)| (k.len() + e.value.len()) as u64).sum();
        assert_eq!(ns.bytes, sum, "namespace of {fid}");
        assert!(ns.bytes <= MAX_NAMESPACE_BYTES);
        assert!(!ns.entries.is_empty());
    }
}

fn raft_msg(kind: MessageType, from: u64, to: u64, entries: Vec<Entry>) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = to;
    m.term = 3;
    m.log_term = 2;
    m.index = 7;
    m.commit = 6;
    m.entries = entries.into();
    m
}

fn entry(kind: EntryType, index: u64, data: &[u8]) -> Entry {
    let mut e = Entry::default();
    e.set_entry_type(kind);
    e.term = 3;
    e.index = index;
    e.data = data.to_vec().into();
    e
}

/// Valid ops of every kind, about one agent and one framework.
fn seed_ops() -> Vec<RegistryOp> {
    let text = format!(
        r#"{{"op":"admit_agent","id":"a1","hostname":"h","http_address":"127.0.0.1:5051","resources":"{AGENT_RESOURCES}","attributes":[["rack","r1"]],"unreachable_since":null}}
{{"op":"register_framework","id":"f1","name":"f","user":"","principal":"p","roles":["eng"],"failover_timeout_secs":60.0,"hostname":""}}
{{"op":"set_weights","weights":{{"eng":2.0,"ops":1.0}}}}
{{"op":"set_quota","role":"eng","quota":{{"guarantee":"cpus:1;mem:64","limit":"cpus:2"}}}}
{{"op":"reserve","agent":"a1","role":"eng","resources":"cpus:1;mem:128","principal":"p"}}
{{"op":"unreserve","agent":"a1","role":"eng","resources":"cpus:0.5"}}
{{"op":"kv_put","framework":"f1","key":"jobs/a","value":"aGVsbG8=","expected_version":null,"request":1}}
{{"op":"kv_delete","framework":"f1","key":"jobs/a","value":null,"expected_version":7,"request":2}}
{{"op":"drain_agent","id":"a1","deadline":100.5,"at":1.25}}
{{"op":"reactivate_agent","id":"a1"}}
{{"op":"mark_agent_unreachable","id":"a1","at":2.5}}
{{"op":"mark_agent_gone","id":"a1","at":3.0}}
{{"op":"remove_framework","id":"f1"}}"#
    );
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The seeds of one target, as a strategy for the property tests.
#[cfg(test)]
pub(crate) fn seed(target: &'static str) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    let inputs: Vec<Vec<u8>> = seeds()
        .into_iter()
        .filter(|(t, _)| *t == target)
        .map(|(_, s)| s)
        .collect();
    proptest::sample::select(inputs)
}

/// Valid inputs for each target of this crate: `(target, input)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    // Raft batches: the kinds of message masters exchange.
    let op = serde_json::to_vec(&seed_ops().first()).unwrap_or_default();
    let snapshot_data = serde_json::to_vec(&Registry::default()).unwrap_or_default();
    let mut snap = raft_msg(MessageType::MsgSnapshot, 1, ME, vec![]);
    snap.mut_snapshot().data = snapshot_data.into();
    snap.mut_snapshot().mut_metadata().index = 5;
    snap.mut_snapshot().mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    let batches = [
        vec![raft_msg(
            MessageType::MsgAppend,
            1,
            ME,
            vec![
                entry(EntryType::EntryNormal, 7, &op),
                entry(EntryType::EntryNormal, 8, b""),
            ],
        )],
        vec![
            raft_msg(MessageType::MsgHeartbeat, 1, ME, vec![]),
            raft_msg(MessageType::MsgRequestPreVote, 1, ME, vec![]),
        ],
        vec![raft_msg(MessageType::MsgAppendResponse, 3, ME, vec![])],
        vec![raft_msg(
            MessageType::MsgAppend,
            1,
            ME,
            vec![entry(EntryType::EntryConfChangeV2, 9, b"\x0a\x04\x08\x00\x10\x04")],
        )],
        vec![snap],
    ];
    for msgs in batches {
        let from = msgs.first().map_or(1, |m| m.from);
        let batch = v1::RaftBatch {
            from,
            to: ME,
            messages: msgs.iter().filter_map(|m| m.write_to_bytes().ok()).collect(),
        };
        out.push(("raft_batch", batch.encode_to_vec()));
    }
    // An agent's stream: register or reregister, then what follows.
    let agent = v1::AgentInfo {
        hostname: "h1".into(),
        resources: mezzo_proto::reservation::ReservedResources::parse(AGENT_RESOURCES)
            .map(|r| r.to_proto())
            .unwrap_or_default(),
        attributes: vec![v1::Attribute {
            name: "rack".into(),
            value: "r1".into(),
        }],
        http_address: "127.0.0.1:5051".into(),
    };
    let task = v1::TaskInfo {
        task_id: "t1".into(),
        name: "t1".into(),
        resources: mezzo_proto::resources::Resources::parse("cpus:0.5;mem:64")
            .map(|r| r.to_proto())
            .unwrap_or_default(),
        command: Some(v1::CommandInfo {
            value: "sleep 10".into(),
            shell: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let msg = |m: v1::agent_message::Message| v1::AgentMessage { message: Some(m) }.encode_length_delimited_to_vec();
    let update = msg(v1::agent_message::Message::StatusUpdate(v1::StatusUpdate {
        framework_id: "f1".into(),
        status: Some(v1::TaskStatus {
            task_id: "t1".into(),
            state: v1::TaskState::TaskRunning as i32,
            uuid: vec![7; 16],
            ..Default::default()
        }),
        latest_state: v1::TaskState::TaskRunning as i32,
    }));
    let usage = msg(v1::agent_message::Message::Usage(v1::UsageReport {
        containers: vec![v1::ContainerUsage {
            framework_id: "f1".into(),
            task_id: "t1".into(),
            cpu_time_secs: 1.5,
            memory_rss_bytes: 1 << 20,
            memory_cache_bytes: 0,
            pids: 3,
        }],
    }));
    let register = msg(v1::agent_message::Message::Register(v1::Register {
        agent: Some(agent.clone()),
        registration: String::new(),
    }));
    let reregister = msg(v1::agent_message::Message::Reregister(v1::Reregister {
        agent_id: "a1".into(),
        agent: Some(agent),
        tasks: vec![v1::RunningTask {
            task: Some(task.clone()),
            framework_id: "f1".into(),
            state: v1::TaskState::TaskRunning as i32,
            end_unacknowledged: false,
            launched_at: 1.0,
            statuses: vec![v1::TaskStatus {
                task_id: "t1".into(),
                state: v1::TaskState::TaskRunning as i32,
                message: "running".into(),
                ..Default::default()
            }],
        }],
        tasks_complete: true,
        executors: Vec::new(),
    }));
    out.push(("agent_stream", register.clone()));
    out.push(("agent_stream", [register, update.clone(), usage.clone()].concat()));
    out.push(("agent_stream", [reregister, update, usage].concat()));
    // Scheduler calls: a session that uses every kind.
    let launch = v1::AcceptRequest {
        framework_id: "f1".into(),
        offer_ids: vec!["o0".into()],
        operations: vec![
            v1::Operation {
                operation: Some(v1::operation::Operation::Reserve(v1::Reserve {
                    resources: mezzo_proto::reservation::ReservedResources::parse("cpus(eng):1")
                        .map(|r| r.to_proto())
                        .unwrap_or_default(),
                })),
            },
            v1::Operation {
                operation: Some(v1::operation::Operation::Launch(v1::Launch {
                    tasks: vec![task.clone()],
                    group: false,
                })),
            },
        ],
        filters: Some(v1::Filters {
            refuse_seconds: Some(5.0),
        }),
    };
    let update = |state: v1::TaskState, uuid: u8| {
        encode_call(
            "agent_update",
            &v1::StatusUpdate {
                framework_id: "f1".into(),
                status: Some(v1::TaskStatus {
                    task_id: "t1".into(),
                    state: state as i32,
                    uuid: vec![uuid; 16],
                    ..Default::default()
                }),
                latest_state: state as i32,
            },
        )
    };
    let ack = |uuid: u8| {
        encode_call(
            "acknowledge",
            &v1::AcknowledgeRequest {
                acks: vec![v1::Acknowledgement {
                    agent_id: "a1".into(),
                    task_id: "t1".into(),
                    uuid: vec![uuid; 16],
                }],
                ..Default::default()
            },
        )
    };
    let session = [
        encode_call("accept", &launch),
        update(v1::TaskState::TaskRunning, 7),
        ack(7),
        encode_call(
            "kill",
            &v1::KillRequest {
                task_id: "t1".into(),
                kill_grace_period_ms: Some(1000),
                ..Default::default()
            },
        ),
        update(v1::TaskState::TaskKilled, 8),
        ack(8),
        encode_call(
            "reconcile",
            &v1::ReconcileRequest {
                tasks: vec![v1::ReconcileTask {
                    task_id: "t1".into(),
                    agent_id: String::new(),
                }],
                ..Default::default()
            },
        ),
        encode_call(
            "decline",
            &v1::DeclineRequest {
                offer_ids: vec!["o0".into()],
                filters: None,
                ..Default::default()
            },
        ),
        encode_call(
            "kv_put",
            &v1::KvPutRequest {
                key: "jobs/a".into(),
                value: b"v".to_vec(),
                expected_version: Some(0),
                ..Default::default()
            },
        ),
        encode_call(
            "kv_list",
            &v1::KvListRequest {
                prefix: "jobs/".into(),
                ..Default::default()
            },
        ),
        encode_call(
            "report_pending",
            &v1::ReportPendingRequest {
                tasks: vec![v1::PendingTask {
                    task_id: "t2".into(),
                    reason: "needs 8 cpus".into(),
                    resources: mezzo_proto::resources::Resources::parse("cpus:8")
                        .map(|r| r.to_proto())
                        .unwrap_or_default(),
                    priority: 0,
                }],
                ..Default::default()
            },
        ),
        encode_call(
            "subscribe",
            &v1::SubscribeRequest {
                framework: Some(v1::FrameworkInfo {
                    name: "g".into(),
                    roles: vec!["eng/batch".into()],
                    failover_timeout_secs: 10.0,
                    ..Default::default()
                }),
                framework_id: String::new(),
                suppressed_roles: Vec::new(),
            },
        ),
        encode_call("revive", &v1::ReviveRequest::default()),
        encode_call("teardown", &v1::TeardownRequest::default()),
    ];
    out.push(("scheduler_calls", session[0].clone()));
    out.push(("scheduler_calls", session.concat()));
    // Registry ops and the snapshot they build.
    let ops = seed_ops();
    let lines: Vec<String> = ops.iter().filter_map(|op| serde_json::to_string(op).ok()).collect();
    out.push(("registry_ops", lines.join("\n").into_bytes()));
    let mut r = Registry::default();
    for op in ops.iter().take(8) {
        r.apply(op);
    }
    out.push(("registry_snapshot", serde_json::to_vec(&r).unwrap_or_default()));
    out
}
