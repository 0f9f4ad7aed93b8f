//! Mesos' v1 scheduler API in protobuf (`application/x-protobuf`), without
//! a second set of types: a body is decoded as a dynamic message of our own
//! descriptors (`proto/mesos/v1/*.proto`, Mesos' field numbers, only the
//! fields [`types`] has), rendered in Mesos' JSON form and read into
//! [`types`] — and the other way for events. What the JSON path checks
//! (names, enums, required ids) is then checked the same way for both.

use std::sync::LazyLock;

use prost::Message as _;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, SerializeOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{MAX_JSON_NODES, types};

/// The descriptors `build.rs` compiled from `proto/mesos/v1/*.proto`.
static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(include_bytes!(concat!(env!("OUT_DIR"), "/mesos_v1.bin")).as_ref())
        .map_err(|e| format!("Mesos' descriptors: {e}"))
});

/// Nesting deeper than this is refused (prost's own recursion limit).
const MAX_DEPTH: usize = 100;

const CALL: &str = "mesos.v1.scheduler.Call";
const EVENT: &str = "mesos.v1.scheduler.Event";

fn descriptor(name: &str) -> Result<MessageDescriptor, String> {
    let pool = POOL.as_ref().map_err(Clone::clone)?;
    pool.get_message_by_name(name)
        .ok_or_else(|| format!("no message {name} in Mesos' descriptors"))
}

/// A serialized `mesos.v1.scheduler.Call`, as a call.
pub fn call_from_protobuf(bytes: &[u8]) -> Result<types::Call, String> {
    decode(CALL, bytes)
}

/// An event, as a serialized `mesos.v1.scheduler.Event`.
pub fn event_to_protobuf(e: &types::Event) -> Result<Vec<u8>, String> {
    encode(EVENT, e)
}

/// A serialized `mesos.v1.scheduler.Event`, as an event (for clients and
/// tests: the master only writes events).
pub fn event_from_protobuf(bytes: &[u8]) -> Result<types::Event, String> {
    decode(EVENT, bytes)
}

/// A call, as a serialized `mesos.v1.scheduler.Call` (for clients and
/// tests: the master only reads calls).
pub fn call_to_protobuf(c: &types::Call) -> Result<Vec<u8>, String> {
    encode(CALL, c)
}

fn decode<T: DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T, String> {
    let desc = descriptor(name)?;
    // Counted on the wire first, as JSON bodies are: a body of empty
    // messages (two bytes each) must not make millions of them.
    let mut nodes = 0;
    count_messages(&desc, bytes, 0, &mut nodes)?;
    let msg = DynamicMessage::decode(desc, bytes).map_err(|e| e.to_string())?;
    let opts = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(true);
    let json = msg
        .serialize_with_options(serde_json::value::Serializer, &opts)
        .map_err(|e| e.to_string())?;
    serde_json::from_value(json).map_err(|e| e.to_string())
}

fn encode<T: Serialize>(name: &str, value: &T) -> Result<Vec<u8>, String> {
    let desc = descriptor(name)?;
    let json = serde_json::to_value(value).map_err(|e| e.to_string())?;
    // Strict: a field of `types` missing from the .proto is a bug, told.
    let opts = DeserializeOptions::new().deny_unknown_fields(true);
    let msg = DynamicMessage::deserialize_with_options(desc, json, &opts).map_err(|e| e.to_string())?;
    Ok(msg.encode_to_vec())
}

/// Counts the messages in `buf` (one of `desc`, and those nested in it),
/// refusing more than [`MAX_JSON_NODES`] or nesting deeper than
/// [`MAX_DEPTH`]. Only walks the wire: nothing is allocated.
fn count_messages(desc: &MessageDescriptor, mut buf: &[u8], depth: usize, nodes: &mut usize) -> Result<(), String> {
    *nodes += 1;
    if *nodes > MAX_JSON_NODES {
        return Err(format!("more than {MAX_JSON_NODES} messages in one call"));
    }
    if depth > MAX_DEPTH {
        return Err(format!("messages nested more than {MAX_DEPTH} deep"));
    }
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).map_err(|e| e.to_string())?;
        if wire != WireType::LengthDelimited {
            skip_field(wire, tag, &mut buf, DecodeContext::default()).map_err(|e| e.to_string())?;
            continue;
        }
        let len = usize::try_from(decode_varint(&mut buf).map_err(|e| e.to_string())?).unwrap_or(usize::MAX);
        if len > buf.len() {
            return Err("a field runs past the end of the body".into());
        }
        let (field, rest) = buf.split_at(len);
        if let Some(Kind::Message(inner)) = desc.get_field(tag).map(|f| f.kind()) {
            count_messages(&inner, field, depth + 1, nodes)?;
        }
        buf = rest;
    }
    Ok(())
}

#[cfg(test)]
#[path = "protobuf_tests.rs"]
mod tests;
