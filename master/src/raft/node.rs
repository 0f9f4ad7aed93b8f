//! The Raft node: one tokio task owns the `RawNode`, its storage and the
//! applied registry. Others talk to it through a [`RaftHandle`].
//!
//! Each loop turn takes a batch of inputs (proposals, messages from peers,
//! ticks), then handles one `Ready` in the order raft-rs documents:
//! send messages, apply a snapshot, apply committed entries, persist new
//! entries and the hard state (one fsync), send the messages that had to
//! wait for that, advance, and handle the light ready.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{ConfChangeV2, Entry, EntryType, Message, MessageType};
use raft::{Config, RawNode, SnapshotStatus, StateRole, Storage};
use raft_proto::ConfChangeI as _;
use tokio::sync::{mpsc, oneshot, watch};

use super::handle::{NodeCmd, RaftEvent, RaftHandle, RaftStatus};
use super::members::{self, MemberChange, MembershipError};
use super::storage::{RaftStorage, RaftStorageError};
use super::transport;
use mezzo_proto::security::Transport;

use super::auth_view::{AuthView, Owners};
use crate::registry::{Registry, RegistryOp};

/// Ticks between two followers' campaigns after the leader's stream ended
/// (see `Node::leader_stream_ended`): more than a vote's round trip, an
/// fsync included, so the first has won or lost before the next starts.
const CAMPAIGN_STAGGER: usize = 4;

/// How one master takes part in the group.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This master's id (its position in `--peers`, from 1).
    pub id: u64,
    /// Every master's id and address when the group is first created.
    pub peers: BTreeMap<u64, String>,
    /// Where the log lives.
    pub dir: PathBuf,
    /// One Raft tick.
    pub tick: Duration,
    /// Ticks without a leader's heartbeat before a follower campaigns
    /// (randomised up to twice this).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Applied entries between registry snapshots (log compaction).
    pub snapshot_every: u64,
    /// Joining a running group: never create a group of our own; wait for
    /// the leader to send the log (or a snapshot).
    pub join: bool,
    /// How to reach the other masters (TLS with this master's certificate).
    pub transport: Transport,
}

/// Forwards raft-rs's slog records to `tracing`.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, r: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match r.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{}", r.msg()),
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", r.msg()),
            slog::Level::Info => tracing::debug!(target: "raft", "{}", r.msg()),
            _ => tracing::trace!(target: "raft", "{}", r.msg()),
        }
        Ok(())
    }
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Storage(#[from] RaftStorageError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("registry snapshot in {dir} does not decode: {why}")]
    Snapshot { dir: PathBuf, why: String },
    #[error("cannot start the raft thread: {0}")]
    Thread(std::io::Error),
}

struct Node {
    raw: RawNode<RaftStorage>,
    registry: Registry,
    applied: u64,
    last_snapshot: u64,
    snapshot_every: u64,
    /// The last snapshot's size in bytes (see [`snapshot_due`]).
    last_snapshot_bytes: usize,
    /// The leader has applied an entry of its own term.
    leader_ready: bool,
    serving: bool,
    last_leader: u64,
    /// A leader whose stream ended (its process died, most likely): named
    /// to no one until it is heard from again or another leads, so that
    /// clients are not sent to a dead master while the election runs.
    leader_gone: Option<u64>,
    /// Unbounded: a node waiting for a busy core to take its commits
    /// would stop ticking and heartbeating, and lose the leadership. What
    /// it holds is bounded by what the core proposed.
    events: mpsc::UnboundedSender<RaftEvent>,
    peers: HashMap<u64, mpsc::Sender<Message>>,
    /// Take a snapshot at the next opportunity (after a conf change).
    snapshot_now: bool,
    /// A membership change proposed here, answered when applied.
    pending_change: Option<(u64, oneshot::Sender<Result<u64, MembershipError>>)>,
    self_tx: mpsc::Sender<NodeCmd>,
    members_tx: watch::Sender<BTreeMap<u64, String>>,
    /// The security facts the edge reads (see [`AuthView`]).
    auth_tx: watch::Sender<Arc<AuthView>>,
    /// Each framework's owner, shared with every published [`AuthView`].
    owners: Owners,
    transport: Transport,
}

/// Opens the log (creating the group on first start) and starts the node
/// on a thread of its own with its own runtime, where its peer streams
/// (and, see `server`, its peers' connections) are served too: the
/// master's other work, however heavy, then never delays a heartbeat,
/// an fsync or a vote past the election timeout.
pub fn start(cfg: RaftConfig) -> Result<(RaftHandle, mpsc::UnboundedReceiver<RaftEvent>), NodeError> {
    let mut storage = RaftStorage::open(&cfg.dir)?;
    // A joiner counts as fresh until the leader's snapshot arrives, even if
    // it already stored a hard state from the leader's first message.
    let fresh_joiner = cfg.join && storage.snapshot_data().1.is_empty();
    if !storage.is_initialized() && !cfg.join {
        let voters: Vec<u64> = cfg.peers.keys().copied().collect();
        let registry = Registry {
            masters: cfg.peers.clone(),
            ..Registry::default()
        };
        let data = serde_json::to_vec(&registry).map_err(|e| NodeError::Snapshot {
            dir: cfg.dir.clone(),
            why: e.to_string(),
        })?;
        storage.bootstrap(&voters, data)?;
    }
    let (meta, data) = storage.snapshot_data();
    let registry: Registry = if fresh_joiner {
        // Nothing stored yet: know the members' addresses so that this
        // master can answer the leader until its snapshot arrives.
        Registry {
            masters: cfg.peers.clone(),
            ..Registry::default()
        }
    } else {
        serde_json::from_slice(&data).map_err(|e| NodeError::Snapshot {
            dir: cfg.dir.clone(),
            why: e.to_string(),
        })?
    };
    let raft_cfg = Config {
        id: cfg.id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        applied: meta.index,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    raft_cfg.validate()?;
    let logger = slog::Logger::root(TracingDrain, slog::o!("raft_id" => cfg.id));
    let raw = RawNode::new(&raft_cfg, storage, &logger)?;
    let (tx, rx) = mpsc::channel(16384);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (members_tx, members_rx) = watch::channel(registry.masters.clone());
    let owners = Owners::default();
    owners.reset(&registry);
    let (auth_tx, auth_rx) = watch::channel(AuthView::of(&registry, &owners));
    let node = Node {
        raw,
        applied: meta.index,
        last_snapshot: meta.index,
        snapshot_every: cfg.snapshot_every.max(1),
        last_snapshot_bytes: data.len(),
        registry,
        leader_ready: false,
        serving: false,
        last_leader: 0,
        leader_gone: None,
        events: events_tx,
        peers: HashMap::new(),
        pending_change: None,
        snapshot_now: false,
        self_tx: tx.clone(),
        members_tx,
        auth_tx,
        owners,
        transport: cfg.transport.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NodeError::Thread)?;
    let on = runtime.handle().clone();
    let tick = cfg.tick;
    std::thread::Builder::new()
        .name("mezzo-raft".into())
        .spawn(move || runtime.block_on(node.run(rx, tick)))
        .map_err(NodeError::Thread)?;
    Ok((RaftHandle::new(tx, members_rx, auth_rx, cfg.id, on), events_rx))
}

impl Node {
    async fn run(mut self, mut rx: mpsc::Receiver<NodeCmd>, tick: Duration) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A group of one needs no election timeout to pass.
        if self.registry.masters.len() == 1 && self.raw.raft.prs().conf().voters().contains(self.raw.raft.id) {
            let _ = self.raw.campaign();
        }
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { return };
                    self.handle(cmd);
                    for _ in 0..4096 {
                        match rx.try_recv() {
                            Ok(cmd) => self.handle(cmd),
                            Err(_) => break,
                        }
                    }
                }
                _ = ticker.tick() => {
                    self.raw.tick();
                    if let Err(e) = self.raw.mut_store().mark_if_stale() {
                        tracing::warn!(error = %e, "cannot write the raft log's mark");
                    }
                }
            }
            // Applying can produce more to do (e.g. after a conf change).
            while self.raw.has_ready() {
                if let Err(e) = self.on_ready() {
                    // The log cannot be written: this master must stop.
                    tracing::error!(error = %e, "raft storage failed; stopping the master");
                    std::process::exit(70);
                }
            }
            self.check_role();
        }
    }

    fn handle(&mut self, cmd: NodeCmd) {
        match cmd {
            // Only the serving leader proposes: raft-rs would forward a
            // follower's proposal to the new leader, committing an op that a
            // stale core decided.
            NodeCmd::Propose(_) if !(self.serving && self.raw.raft.state == StateRole::Leader) => {
                tracing::debug!("proposal from a core that no longer leads dropped");
            }
            NodeCmd::Propose(op) => match serde_json::to_vec(&op) {
                Ok(data) => {
                    if let Err(e) = self.raw.propose(vec![], data) {
                        tracing::debug!(error = %e, "proposal dropped");
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a registry op"),
            },
            NodeCmd::Messages(msgs) => {
                for m in msgs {
                    if self.leader_gone == Some(m.from) {
                        self.leader_gone = None; // it lives after all
                    }
                    if let Err(e) = self.raw.step(m) {
                        tracing::debug!(error = %e, "raft message refused");
                    }
                }
            }
            NodeCmd::Unreachable(id) => self.raw.report_unreachable(id),
            NodeCmd::StreamEnded(from) => self.leader_stream_ended(from),
            NodeCmd::SnapshotSent { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            NodeCmd::Status(reply) => {
                let _ = reply.send(self.status());
            }
            NodeCmd::Registry(reply) => {
                let _ = reply.send(self.registry.clone());
            }
            NodeCmd::ChangeMembers(change, reply) => self.change_members(change, reply),
        }
    }

    /// The leader's stream to this follower ended. A leader whose process
    /// died is heard from no more, and waiting out its whole lease and then
    /// the randomised election timeout (1-2 s by default) was most of a
    /// failover's wait for a leader; a live leader opens a new stream with
    /// its next heartbeat, which starts the wait over. So the lease ends at
    /// once, and the followers campaign in the order of their ids,
    /// [`CAMPAIGN_STAGGER`] ticks apart: with the randomised rest halved,
    /// as before, two followers of three campaigned within a tick of each
    /// other in a failover of six, split the vote, and waited a whole new
    /// timeout (a leader 1.7 s after the kill instead of 0.1-0.2 s).
    fn leader_stream_ended(&mut self, from: u64) {
        let r = &mut self.raw.raft;
        if r.state != StateRole::Follower || r.leader_id != from {
            return;
        }
        let lease = r.election_timeout();
        if r.election_elapsed >= lease {
            return; // told already, or silent for a whole lease anyway
        }
        let mut others: Vec<u64> = r.prs().conf().voters().ids().iter().filter(|id| *id != from).collect();
        others.sort_unstable();
        let rank = others.iter().position(|id| *id == r.id).unwrap_or(others.len());
        tracing::info!(
            leader = from,
            rank,
            "the leader's stream ended: its lease is over, an election follows unless it is heard from"
        );
        // Out of its lease, this follower grants votes; it campaigns
        // itself at its next tick, or `rank` staggers later (raft-rs
        // allows timeouts below twice the lease).
        r.election_elapsed = lease;
        r.set_randomized_election_timeout((lease + 1 + rank * CAMPAIGN_STAGGER).min(2 * lease - 1));
        self.leader_gone = Some(from);
    }

    fn change_members(&mut self, change: MemberChange, reply: oneshot::Sender<Result<u64, MembershipError>>) {
        if self.raw.raft.state != StateRole::Leader {
            let leader = self.registry.masters.get(&self.raw.raft.leader_id).cloned();
            let _ = reply.send(Err(MembershipError::NotLeader(leader)));
            return;
        }
        if self.pending_change.is_some() || self.raw.raft.has_pending_conf() {
            let _ = reply.send(Err(MembershipError::Busy));
            return;
        }
        if let MemberChange::Remove { id } = change
            && id == self.raw.raft.id
            && self.registry.masters.len() > 1
        {
            // raft-rs keeps a removed leader leading; hand over first.
            if let Some(next) = self.registry.masters.keys().copied().find(|m| *m != id) {
                self.raw.transfer_leader(next);
            }
            let _ = reply.send(Err(MembershipError::IsLeader(id)));
            return;
        }
        match members::plan(&change, &self.registry.masters, self.registry.highest_master_id) {
            Ok((id, cc, ctx)) => match self.raw.propose_conf_change(ctx, cc) {
                Ok(()) => self.pending_change = Some((id, reply)),
                Err(e) => {
                    let _ = reply.send(Err(MembershipError::Raft(e.to_string())));
                }
            },
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn status(&self) -> RaftStatus {
        let r = &self.raw.raft;
        let store = self.raw.store();
        let matched = if r.state == StateRole::Leader {
            r.prs().iter().map(|(id, p)| (*id, p.matched)).collect()
        } else {
            BTreeMap::new()
        };
        RaftStatus {
            id: r.id,
            role: format!("{:?}", r.state).to_lowercase(),
            term: r.term,
            leader_id: r.leader_id,
            leader: self.registry.masters.get(&r.leader_id).cloned(),
            leader_mesos: self.registry.mesos_endpoints.get(&r.leader_id).cloned(),
            commit: r.raft_log.committed,
            applied: self.applied,
            last_index: store.last_index().unwrap_or(0),
            snapshot_index: store.snapshot_data().0.index,
            members: self.registry.masters.clone(),
            matched,
        }
    }

    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            if !self.peers.contains_key(&to) {
                let Some(addr) = self.registry.masters.get(&to).cloned() else {
                    tracing::warn!(to, "no address for raft peer");
                    continue;
                };
                let (tx, rx) = mpsc::channel(4096);
                tokio::spawn(transport::peer_sender(
                    self.raw.raft.id,
                    to,
                    addr,
                    self.transport.clone(),
                    rx,
                    self.self_tx.clone(),
                ));
                self.peers.insert(to, tx);
            }
            let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            if let Some(tx) = self.peers.get(&to)
                && tx.try_send(m).is_err()
            {
                // Raft resends what is lost; tell it the peer is behind.
                self.raw.report_unreachable(to);
                if is_snapshot {
                    self.raw.report_snapshot(to, SnapshotStatus::Failure);
                }
            }
        }
    }

    fn on_ready(&mut self) -> Result<(), NodeError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        if !rd.messages().is_empty() {
            let msgs = rd.take_messages();
            self.send(msgs);
        }
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            let registry: Registry = serde_json::from_slice(&snap.data).map_err(|e| NodeError::Snapshot {
                dir: PathBuf::from("(received)"),
                why: e.to_string(),
            })?;
            self.raw.mut_store().apply_snapshot(snap.clone())?;
            self.registry = registry;
            self.applied = snap.get_metadata().index;
            self.last_snapshot = self.applied;
            self.last_snapshot_bytes = snap.data.len();
            self.members_tx.send_replace(self.registry.masters.clone());
            self.owners.reset(&self.registry);
            self.auth_tx.send_replace(AuthView::of(&self.registry, &self.owners));
        }
        let committed = rd.take_committed_entries();
        self.apply(committed)?;
        if !rd.entries().is_empty() || rd.hs().is_some() {
            let entries = rd.take_entries();
            let hs = rd.hs().cloned();
            // Only new entries or a new term/vote need an fsync; a hard
            // state whose only change is the commit index does not.
            let sync = rd.must_sync();
            self.raw.mut_store().append(&entries, hs.as_ref(), sync)?;
        }
        if !rd.persisted_messages().is_empty() {
            let msgs = rd.take_persisted_messages();
            self.send(msgs);
        }
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        let msgs = light.take_messages();
        self.send(msgs);
        let committed = light.take_committed_entries();
        self.apply(committed)?;
        self.raw.advance_apply();
        self.maybe_compact()?;
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        for e in entries {
            self.applied = e.index;
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => {
                    // The empty entry a new leader appends: once it is
                    // applied, everything before this term is applied too.
                    if self.raw.raft.state == StateRole::Leader && e.term == self.raw.raft.term {
                        self.leader_ready = true;
                    }
                }
                EntryType::EntryNormal => match serde_json::from_slice::<RegistryOp>(&e.data) {
                    Ok(op) => {
                        self.registry.apply(&op);
                        self.owners.apply(&op);
                        if AuthView::changed_by(&op) {
                            self.auth_tx.send_replace(AuthView::of(&self.registry, &self.owners));
                        }
                        if self.serving {
                            let _ = self.events.send(RaftEvent::Committed(op));
                        }
                    }
                    Err(err) => {
                        tracing::error!(index = e.index, error = %err, "skipping an undecodable registry entry")
                    }
                },
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let mut cc = ConfChangeV2::default();
                    if e.get_entry_type() == EntryType::EntryConfChange {
                        let mut v1 = raft::eraftpb::ConfChange::default();
                        if let Err(err) = v1.merge_from_bytes(&e.data) {
                            tracing::error!(index = e.index, error = %err, "skipping an undecodable conf change");
                            continue;
                        }
                        cc = v1.into_v2();
                    } else if let Err(err) = cc.merge_from_bytes(&e.data) {
                        tracing::error!(index = e.index, error = %err, "skipping an undecodable conf change");
                        continue;
                    }
                    let cs = self.raw.apply_conf_change(&cc)?;
                    self.raw.mut_store().set_conf_state(cs)?;
                    let highest = members::apply(&cc, &e.context, &mut self.registry.masters);
                    self.registry.highest_master_id = self.registry.highest_master_id.max(highest);
                    // Snapshots sent to a new member must name it in their
                    // conf state, so take one at this index.
                    self.snapshot_now = true;
                    self.members_tx.send_replace(self.registry.masters.clone());
                    tracing::info!(members = ?self.registry.masters, "raft membership changed");
                    for id in cc.get_changes().iter().map(|c| c.node_id) {
                        if !self.registry.masters.contains_key(&id) {
                            self.peers.remove(&id);
                        }
                        if let Some((want, _)) = &self.pending_change
                            && *want == id
                            && let Some((_, reply)) = self.pending_change.take()
                        {
                            let _ = reply.send(Ok(id));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn maybe_compact(&mut self) -> Result<(), NodeError> {
        let due = snapshot_due(
            self.applied - self.last_snapshot.min(self.applied),
            self.snapshot_every,
            self.last_snapshot_bytes,
        );
        if !(due || (self.snapshot_now && self.applied > self.last_snapshot)) {
            return Ok(());
        }
        self.snapshot_now = false;
        let data = serde_json::to_vec(&self.registry).map_err(|e| NodeError::Snapshot {
            dir: PathBuf::new(),
            why: e.to_string(),
        })?;
        let cs = self.raw.raft.prs().conf().to_conf_state();
        let bytes = data.len();
        self.raw.mut_store().compact(self.applied, cs, data)?;
        self.last_snapshot = self.applied;
        self.last_snapshot_bytes = bytes;
        tracing::debug!(index = self.applied, "registry snapshot taken; log compacted");
        Ok(())
    }

    /// Tells the runtime when leading starts or stops, or the leader changes.
    fn check_role(&mut self) {
        let leader = self.raw.raft.state == StateRole::Leader;
        if !leader {
            self.leader_ready = false;
            // A change proposed while leading may never commit now; its
            // caller is told (the dropped reply) and can check and retry.
            self.pending_change = None;
        }
        if leader && self.leader_ready && !self.serving {
            self.serving = true;
            tracing::info!(id = self.raw.raft.id, term = self.raw.raft.term, "leading");
            let _ = self.events.send(RaftEvent::Leading {
                registry: Box::new(self.registry.clone()),
            });
        }
        if self.leader_gone.is_some_and(|gone| gone != self.raw.raft.leader_id) {
            self.leader_gone = None; // another leads, or an election runs
        }
        let named = match self.leader_gone {
            Some(_) => raft::INVALID_ID,
            None => self.raw.raft.leader_id,
        };
        if !leader && (self.serving || named != self.last_leader) {
            if self.serving {
                tracing::warn!(id = self.raw.raft.id, "no longer leading");
            }
            self.serving = false;
            let addr = self.registry.masters.get(&named).cloned();
            let _ = self.events.send(RaftEvent::Following { leader: addr });
        }
        self.last_leader = named;
    }
}

/// Whether a snapshot is due after `since` applied changes: every
/// `every`, or once a change for every 256 bytes of the last snapshot,
/// whichever is rarer. A snapshot writes the whole registry on the Raft
/// task, so a big one taken every 10,000 changes (40,000 agents joining
/// made one every few seconds, each of tens of MB) held the task past
/// the election timeout; this way writing snapshots costs at most about
/// 256 bytes per change, and the log holds at most a few snapshots' worth.
fn snapshot_due(since: u64, every: u64, last_bytes: usize) -> bool {
    since >= every.max(last_bytes as u64 / 256)
}

#[cfg(test)]
mod tests {
    use super::snapshot_due;

    #[test]
    fn a_big_registry_is_snapshotted_more_rarely() {
        assert!(!snapshot_due(9_999, 10_000, 1_000_000));
        assert!(snapshot_due(10_000, 10_000, 1_000_000), "small: every 10,000");
        let big = 30 * 1024 * 1024;
        assert!(!snapshot_due(100_000, 10_000, big), "30 MB: not every 10,000");
        assert!(snapshot_due(big as u64 / 256, 10_000, big));
    }
}
