//! A service file (TOML): see `mezzo_service::fuzz::service_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mezzo_service::fuzz::service_file(data));
