//! Resources in the text form (`cpus:1;mem(eng):64`): see `mezzo_proto::fuzz::resources_text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mezzo_proto::fuzz::resources_text(data));
