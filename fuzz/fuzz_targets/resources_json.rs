//! Resources in the JSON form of `/state`: see `mezzo_proto::fuzz::resources_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mezzo_proto::fuzz::resources_json(data));
