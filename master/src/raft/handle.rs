//! How the rest of the master talks to the Raft node: the [`RaftHandle`]
//! and the commands it sends, the events the node sends back, and the
//! node's status. A leaf of `raft`: the node and the transport both use
//! it, and it uses neither.

use std::collections::BTreeMap;
use std::sync::Arc;

use raft::eraftpb::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::auth_view::AuthView;
use super::members::{MemberChange, MembershipError};
use crate::registry::{Registry, RegistryOp};

/// What the node tells the master runtime.
#[derive(Debug)]
pub enum RaftEvent {
    /// This master leads and has applied everything committed before its
    /// term: serve from `registry`. Every later commit follows as
    /// [`RaftEvent::Committed`], in order.
    Leading { registry: Box<Registry> },
    /// Not (or no longer) leading; the leader's address when known.
    Following { leader: Option<String> },
    /// A registry op was committed and applied (only while leading).
    Committed(RegistryOp),
}

/// A snapshot of the node for `/raft` and `mezzo status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaftStatus {
    pub id: u64,
    pub role: String,
    pub term: u64,
    pub leader_id: u64,
    pub leader: Option<String>,
    /// Where the leader serves Mesos' API in plain HTTP, if it does.
    #[serde(default)]
    pub leader_mesos: Option<String>,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    pub members: BTreeMap<u64, String>,
    /// Replication progress of each peer, as the leader sees it.
    pub matched: BTreeMap<u64, u64>,
}

pub(crate) enum NodeCmd {
    Propose(RegistryOp),
    Messages(Vec<Message>),
    Unreachable(u64),
    /// A peer's stream of batches to this master ended (see
    /// [`RaftHandle::stream_ended`]).
    StreamEnded(u64),
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    Status(oneshot::Sender<RaftStatus>),
    Registry(oneshot::Sender<Registry>),
    ChangeMembers(MemberChange, oneshot::Sender<Result<u64, MembershipError>>),
}

/// A cloneable way to talk to the node.
#[derive(Clone)]
pub struct RaftHandle {
    tx: mpsc::Sender<NodeCmd>,
    members: watch::Receiver<BTreeMap<u64, String>>,
    auth: watch::Receiver<Arc<AuthView>>,
    id: u64,
    /// The node's own runtime (see [`super::node::start`]).
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for RaftHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftHandle").field("id", &self.id).finish()
    }
}

impl RaftHandle {
    pub(super) fn new(
        tx: mpsc::Sender<NodeCmd>,
        members: watch::Receiver<BTreeMap<u64, String>>,
        auth: watch::Receiver<Arc<AuthView>>,
        id: u64,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        RaftHandle {
            tx,
            members,
            auth,
            id,
            runtime,
        }
    }

    /// A handle on no node (its proposals go nowhere), for tests of the
    /// owner task's plumbing; inside a tokio runtime.
    #[cfg(test)]
    pub(crate) fn detached() -> RaftHandle {
        let (tx, _) = mpsc::channel(1);
        let (_, members) = watch::channel(BTreeMap::new());
        let (_, auth) = watch::channel(Arc::new(AuthView::default()));
        RaftHandle::new(tx, members, auth, 0, tokio::runtime::Handle::current())
    }

    /// The runtime the node and its traffic run on, on a thread of their own.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// The ACL, revocations and framework owners as this master has
    /// applied them (leader or not).
    pub fn auth(&self) -> Arc<AuthView> {
        self.auth.borrow().clone()
    }

    /// Proposes an op; its commit comes back as [`RaftEvent::Committed`].
    /// A proposal made while not leading is dropped by Raft, as is one made
    /// while the node is overloaded.
    pub fn propose(&self, op: RegistryOp) {
        if self.tx.try_send(NodeCmd::Propose(op)).is_err() {
            tracing::warn!("raft node is not keeping up; proposal dropped");
        }
    }

    pub async fn status(&self) -> Option<RaftStatus> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(NodeCmd::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Adds or removes a master; answers with the member's id once the
    /// change is committed and applied.
    pub async fn change_members(&self, change: MemberChange) -> Result<u64, MembershipError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(NodeCmd::ChangeMembers(change, tx))
            .await
            .map_err(|_| MembershipError::Raft("raft node stopped".into()))?;
        rx.await.map_err(|_| {
            MembershipError::Raft("the change was dropped (leadership changed?); check the members and retry".into())
        })?
    }

    /// The registry as this master has applied it (leader or not).
    pub async fn registry(&self) -> Option<Registry> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(NodeCmd::Registry(tx)).await.ok()?;
        rx.await.ok()
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The current members (id -> address).
    pub fn members(&self) -> BTreeMap<u64, String> {
        self.members.borrow().clone()
    }

    pub(crate) async fn deliver(&self, msgs: Vec<Message>) -> bool {
        self.tx.send(NodeCmd::Messages(msgs)).await.is_ok()
    }

    /// The stream on which member `from` sent its batches ended: if it
    /// was the leader's, the leader may be gone (its process exits, and
    /// the connection closes with it).
    pub(crate) fn stream_ended(&self, from: u64) {
        let _ = self.tx.try_send(NodeCmd::StreamEnded(from));
    }
}
