//! The agent's status update journal, replayed at start: see `mezzo_agent::fuzz::status_journal`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mezzo_agent::fuzz::status_journal(data));
