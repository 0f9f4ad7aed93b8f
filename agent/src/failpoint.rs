//! Failpoints for fault tests: `MEZZO_FAILPOINT=name:sleep_ms[,name:sleep_ms]`
//! makes the named point pause, so that a test's SIGKILL lands in a chosen
//! window of a launch every time. Honoured only in debug builds: a release
//! agent never reads the variable. The launcher and every container init
//! inherit it from the agent.
//!
//! Points: `before_checkpoint` (the supervisor, after STARTING and before
//! the task's checkpoint), `before_launch` (after the checkpoint, before the
//! container launch), `before_claim` (the container init, before it
//! claims the task's start) and `before_reregister` (the master
//! connection, before each re-registration).

use std::time::Duration;

/// The environment variable read.
pub const ENV: &str = "MEZZO_FAILPOINT";

/// How long `name` pauses, if the environment asks for it.
pub fn pause_of(name: &str) -> Option<Duration> {
    if !cfg!(debug_assertions) {
        return None;
    }
    parse(&std::env::var(ENV).ok()?, name)
}

fn parse(spec: &str, name: &str) -> Option<Duration> {
    spec.split(',').find_map(|p| {
        let (n, ms) = p.trim().split_once(':')?;
        (n == name).then(|| ms.parse().ok().map(Duration::from_millis))?
    })
}

/// Pauses the calling thread at `name` (for the single-threaded init).
pub fn hit_blocking(name: &str) {
    if let Some(d) = pause_of(name) {
        std::thread::sleep(d);
    }
}

/// Pauses the calling task at `name`.
pub async fn hit(name: &str) {
    if let Some(d) = pause_of(name) {
        tracing::warn!(failpoint = name, ?d, "failpoint: pausing");
        tokio::time::sleep(d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let spec = "before_launch:300, before_claim:5";
        assert_eq!(parse(spec, "before_launch"), Some(Duration::from_millis(300)));
        assert_eq!(parse(spec, "before_claim"), Some(Duration::from_millis(5)));
        assert_eq!(parse(spec, "other"), None);
        assert_eq!(parse("before_launch:x", "before_launch"), None);
    }
}
