//! A registry snapshot from a peer or from disk: see `mezzo_master::fuzz::registry_snapshot`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mezzo_master::fuzz::registry_snapshot(data));
