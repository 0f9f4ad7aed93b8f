//! A files API request's path, in a work dir full of ways out of the
//! sandbox: see `mezzo_agent::fuzz::files_path`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

static WORK: OnceLock<PathBuf> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let work = WORK.get_or_init(|| {
        mezzo_agent::fuzz::temp_work_dir().unwrap_or_else(|e| panic!("cannot build the work dir: {e}"))
    });
    mezzo_agent::fuzz::files_path(work, data);
});
