//! A batch job file (TOML): see `mezzo_batch::fuzz::job_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mezzo_batch::fuzz::job_file(data));
