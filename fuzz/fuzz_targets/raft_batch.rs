//! A Raft batch received from a peer master: see `mezzo_master::fuzz::raft_batch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mezzo_master::fuzz::raft_batch(data));
