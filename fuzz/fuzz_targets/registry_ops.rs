//! Registry ops as they come out of the Raft log: see `mezzo_master::fuzz::registry_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mezzo_master::fuzz::registry_ops(data));
