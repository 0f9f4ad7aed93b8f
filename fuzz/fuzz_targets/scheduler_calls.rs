//! A session of scheduler calls, run on a core: see `mezzo_master::fuzz::scheduler_calls`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mezzo_master::fuzz::scheduler_calls(data));
