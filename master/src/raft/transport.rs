//! Raft messages between masters: a gRPC service receiving batches, and
//! one sender task per peer that batches what the node hands it.

use std::collections::BTreeMap;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::handle::{NodeCmd, RaftHandle};
use crate::auth::Caller;
use mezzo_proto::security::{Kind, Transport};
use mezzo_proto::v1;
use mezzo_proto::v1::raft_transport_client::RaftTransportClient;
use mezzo_proto::v1::raft_transport_server::RaftTransport;

/// Largest batch between masters (a registry snapshot travels in one).
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;
const BATCH_MESSAGES: usize = 512;
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Batches queued on one peer's stream before new ones are dropped (Raft
/// resends what is lost).
const STREAM_QUEUE: usize = 256;

/// The receiving side, served by every master.
#[derive(Debug, Clone)]
pub struct RaftService {
    node: RaftHandle,
}

impl RaftService {
    pub fn new(node: RaftHandle) -> Self {
        RaftService { node }
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn send(&self, req: Request<v1::RaftBatch>) -> Result<Response<v1::RaftAck>, Status> {
        let caller = Caller::of(&req);
        self.deliver(&caller, req.into_inner()).await?;
        Ok(Response::new(v1::RaftAck {}))
    }

    async fn stream(&self, req: Request<tonic::Streaming<v1::RaftBatch>>) -> Result<Response<v1::RaftAck>, Status> {
        let caller = Caller::of(&req);
        let mut inbound = req.into_inner();
        // The member whose batches were accepted on this stream.
        let mut from = None;
        let ended = loop {
            match inbound.message().await {
                Ok(Some(batch)) => {
                    let sender = batch.from;
                    self.deliver(&caller, batch).await?;
                    from = Some(sender);
                }
                Ok(None) => break Ok(Response::new(v1::RaftAck {})),
                Err(e) => break Err(e),
            }
        };
        if let Some(from) = from {
            self.node.stream_ended(from);
        }
        ended
    }
}

impl RaftService {
    /// Checks a batch (see [`decode_batch`]; and that the member it
    /// claims to come from sent it) and hands it to the node.
    async fn deliver(&self, caller: &Caller, batch: v1::RaftBatch) -> Result<(), Status> {
        let members = self.node.members();
        let msgs = decode_batch(&batch, self.node.id(), &members)?;
        check_sender(caller, batch.from, &members)?;
        if !self.node.deliver(msgs).await {
            return Err(Status::unavailable("raft node stopped"));
        }
        Ok(())
    }
}

/// Only the member named `from` may send as `from`: its certificate must
/// be a master's, named by that member's address.
fn check_sender(caller: &Caller, from: u64, members: &BTreeMap<u64, String>) -> Result<(), Status> {
    let Some(principal) = caller.expect_kind(Kind::Master).map_err(|e| e.status())? else {
        return Ok(()); // --insecure
    };
    let claimed = members.get(&from).map(String::as_str).unwrap_or_default();
    if principal.name() != claimed {
        return Err(Status::permission_denied(format!(
            "raft batch claims to come from member {from} ({claimed}), but was sent by {principal}"
        )));
    }
    Ok(())
}

/// Decodes a received batch into raft-rs messages, checking that it is
/// addressed to this master (`me`), comes from one of `members`, and that
/// every message decodes and matches the batch's ends.
pub fn decode_batch(batch: &v1::RaftBatch, me: u64, members: &BTreeMap<u64, String>) -> Result<Vec<Message>, Status> {
    if batch.to != me {
        return Err(Status::failed_precondition(format!(
            "raft batch for master {} reached master {me}",
            batch.to
        )));
    }
    if !members.contains_key(&batch.from) {
        // (A member this master has not yet learned of is refused too;
        // it catches up once the leader's log reaches it.)
        return Err(Status::permission_denied(format!(
            "raft batch from {}, which is not a member of this group",
            batch.from
        )));
    }
    let mut msgs = Vec::with_capacity(batch.messages.len());
    for bytes in &batch.messages {
        let m = Message::parse_from_bytes(bytes)
            .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
        if m.from != batch.from || m.to != me {
            return Err(Status::invalid_argument(format!(
                "raft message {}->{} in a batch {}->{me}",
                m.from, m.to, batch.from
            )));
        }
        msgs.push(m);
    }
    Ok(msgs)
}

/// Sends what the node queues for one peer, in batches, in order. A
/// failed send drops the batch (Raft resends) and reports the peer
/// unreachable so the leader probes it instead of streaming to it.
pub(crate) async fn peer_sender(
    me: u64,
    to: u64,
    addr: String,
    transport: Transport,
    mut rx: mpsc::Receiver<Message>,
    node: mpsc::Sender<NodeCmd>,
) {
    let endpoint = match mezzo_proto::security::grpc::endpoint(&addr, &transport) {
        Ok(e) => e.connect_timeout(Duration::from_millis(500)),
        Err(e) => {
            tracing::error!(to, %addr, error = %e, "bad raft peer address");
            return;
        }
    };
    let mut client = RaftTransportClient::new(endpoint.connect_lazy())
        .max_encoding_message_size(MAX_BATCH_BYTES)
        .max_decoding_message_size(MAX_BATCH_BYTES);
    let mut stream: Option<mpsc::Sender<v1::RaftBatch>> = None;
    // Apart, so that the two kinds of failure, alternating, do not each
    // count as new.
    let (logged, undelivered) = (LastFailure::default(), LastFailure::default());
    while let Some(first) = rx.recv().await {
        let mut bytes = protobuf::Message::compute_size(&first) as usize;
        let mut batch = vec![first];
        while batch.len() < BATCH_MESSAGES && bytes < MAX_BATCH_BYTES / 2 {
            match rx.try_recv() {
                Ok(m) => {
                    bytes += protobuf::Message::compute_size(&m) as usize;
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
        let snapshots: Vec<u64> = batch
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
            .map(|m| m.to)
            .collect();
        let messages = batch.iter().filter_map(|m| m.write_to_bytes().ok()).collect();
        let req = v1::RaftBatch { from: me, to, messages };
        // A snapshot may be large: give it longer than a heartbeat.
        let limit = if snapshots.is_empty() {
            SEND_TIMEOUT
        } else {
            SEND_TIMEOUT * 15
        };
        let ok = if snapshots.is_empty() {
            // The normal path: onto the open stream (opened on demand).
            if stream.as_ref().is_none_or(|tx| tx.is_closed()) {
                stream = Some(open_stream(&client, &logged));
            }
            stream.as_ref().is_some_and(|tx| tx.try_send(req).is_ok())
        } else {
            matches!(tokio::time::timeout(limit, client.send(req)).await, Ok(Ok(_)))
        };
        if !ok {
            stream = None;
            if undelivered.first("not delivered") {
                tracing::debug!(to, %addr, "raft batch not delivered");
            }
            let _ = node.try_send(NodeCmd::Unreachable(to));
        }
        for to in snapshots {
            let _ = node.try_send(NodeCmd::SnapshotSent { to, ok });
        }
    }
}

/// Opens a `Stream` call to the peer; batches go into the returned sender.
/// When the call ends (the peer or the connection went away), the sender
/// reports closed and the next batch opens a new call.
fn open_stream(
    client: &RaftTransportClient<tonic::transport::Channel>,
    logged: &LastFailure,
) -> mpsc::Sender<v1::RaftBatch> {
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let mut client = client.clone();
    let logged = logged.clone();
    tokio::spawn(async move {
        if let Err(e) = client.stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await
            && logged.first(&e.to_string())
        {
            tracing::debug!(error = %e, "raft stream ended (the same failure again is logged every {RELOG_AFTER:?} at most)");
        }
    });
    tx
}

/// The same failure to reach a peer is logged once every this long: a
/// peer that is down is retried every 50 ms, and a line for each retry
/// buried the rest of a log.
const RELOG_AFTER: Duration = Duration::from_secs(30);

/// The last failure logged for one peer, and when.
#[derive(Clone, Default)]
struct LastFailure(std::sync::Arc<std::sync::Mutex<Option<(String, std::time::Instant)>>>);

impl LastFailure {
    /// Whether `failure` is to be logged: it differs from the last one
    /// logged, or that was [`RELOG_AFTER`] ago.
    fn first(&self, failure: &str) -> bool {
        let mut last = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if last
            .as_ref()
            .is_some_and(|(f, at)| f == failure && now.duration_since(*at) < RELOG_AFTER)
        {
            return false;
        }
        *last = Some((failure.to_owned(), now));
        true
    }
}

#[cfg(test)]
#[path = "transport_fuzz_tests.rs"]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::LastFailure;

    #[test]
    fn the_same_failure_is_logged_once_and_another_at_once() {
        let logged = LastFailure::default();
        assert!(logged.first("connection refused"));
        assert!(!logged.first("connection refused"), "a retry's failure again");
        assert!(logged.first("timed out"));
        assert!(logged.first("connection refused"), "changed since");
    }
}
