//! What a simulated agent puts on its Attach stream: a message, or its
//! re-registration encoded already ([`Outbound::Encoded`]). A real agent
//! encodes its task list on a machine of its own; here 40,000 agents
//! re-register on the cores the masters run on, and building each
//! `Reregister` from copies of every task was a quarter of the
//! simulator's CPU in a failover. Encoded in place, its tasks' fields are
//! moved into the message and back instead (`Agent::reregistration`).

use mezzo_proto::codec::LeanCodec;
use mezzo_proto::v1;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

/// The largest message either way, as the real agent.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// One message to the master.
#[derive(Debug)]
pub(super) enum Outbound {
    Message(v1::AgentMessage),
    /// An `AgentMessage` encoded already.
    Encoded(Bytes),
}

impl From<v1::AgentMessage> for Outbound {
    fn from(m: v1::AgentMessage) -> Self {
        Outbound::Message(m)
    }
}

impl prost::Message for Outbound {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            Outbound::Message(m) => m.encode_raw(buf),
            Outbound::Encoded(b) => buf.put_slice(b),
        }
    }

    /// Never decoded (only the master reads these): its fields are skipped.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match self {
            Outbound::Message(m) => m.encoded_len(),
            Outbound::Encoded(b) => b.len(),
        }
    }

    fn clear(&mut self) {
        *self = Outbound::Encoded(Bytes::new());
    }
}

/// `AgentApi.Attach` with `outbound` as the agent's side, as the generated
/// client would call it but for the message type.
pub(super) async fn attach(
    channel: Channel,
    outbound: mpsc::Receiver<Outbound>,
) -> Result<Streaming<v1::MasterMessage>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
    let path = PathAndQuery::from_static("/mezzo.v1.AgentApi/Attach");
    let codec = LeanCodec::<Outbound, v1::MasterMessage>::default();
    let answer = grpc
        .streaming(Request::new(ReceiverStream::new(outbound)), path, codec)
        .await?;
    Ok(answer.into_inner())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn an_encoded_message_goes_out_as_it_was_encoded() {
        let m = v1::AgentMessage {
            message: Some(v1::agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
        };
        let plain = Outbound::from(m.clone()).encode_to_vec();
        let encoded = Outbound::Encoded(Bytes::from(m.encode_to_vec()));
        assert_eq!(encoded.encoded_len(), plain.len());
        assert_eq!(encoded.encode_to_vec(), plain);
        assert_eq!(v1::AgentMessage::decode(&plain[..]).ok(), Some(m));
    }
}
