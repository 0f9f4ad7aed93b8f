//! Wall-clock time as Unix seconds, the form every Mezzo timestamp takes
//! on the wire and in JSON (status updates, launch times, samples).

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, with sub-second precision.
pub fn unix_now() -> f64 {
    unix_secs(SystemTime::now())
}

/// `t` as seconds since the Unix epoch (0 for a time before it).
pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Seconds from `then` (Unix seconds) to now; never negative.
pub fn secs_since(then: f64) -> f64 {
    (unix_now() - then).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn before_the_epoch_is_zero_and_after_is_seconds() {
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(5)), 0.0);
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_millis(1500)), 1.5);
        assert!(unix_now() > 1.7e9);
        assert_eq!(secs_since(unix_now() + 100.0), 0.0);
    }
}
