//! Resources in the protobuf form: see `mezzo_proto::fuzz::resources_proto`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mezzo_proto::fuzz::resources_proto(data));
