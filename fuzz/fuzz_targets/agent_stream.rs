//! An agent's stream: its Register/Reregister, then updates and usage: see `mezzo_master::fuzz::agent_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mezzo_master::fuzz::agent_stream(data));
