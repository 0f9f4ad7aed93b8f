//! Ids (framework, agent, offer, task) as text: see `mezzo_proto::fuzz::ids`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mezzo_proto::fuzz::ids(data));
