//! The one capped exponential backoff every Mezzo part uses: the agent's
//! master connection and its status update resends, the SDK's
//! reconnection, and the service framework's restart delay.
//!
//! Each delay is the current step, optionally shortened by a random
//! fraction (jitter spreads out many clients that failed together), after
//! which the step grows by `factor` up to `max`.

use std::time::Duration;

/// Capped exponential backoff; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    step: Duration,
}

impl Backoff {
    /// Doubles from `initial` up to `max`, without jitter.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            factor: 2.0,
            jitter: 0.0,
            step: initial,
        }
    }

    /// Grows by `factor` (at least 1) instead of doubling.
    pub fn factor(mut self, factor: f64) -> Backoff {
        self.factor = if factor.is_finite() { factor.max(1.0) } else { 2.0 };
        self
    }

    /// Draws each delay uniformly from `[step × (1 − fraction), step]`
    /// (`fraction` is clamped to 0..=1).
    pub fn jitter(mut self, fraction: f64) -> Backoff {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The next delay; the step then grows.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        // A step too large for a Duration (mul_f64 would panic) is the cap.
        self.step = Duration::try_from_secs_f64(step.as_secs_f64() * self.factor)
            .unwrap_or(self.max)
            .min(self.max);
        if self.jitter == 0.0 {
            return step;
        }
        let cut = rand::random_range(0.0..=self.jitter);
        step.mul_f64(1.0 - cut)
    }

    /// The delay the next call would return without jitter.
    pub fn peek(&self) -> Duration {
        self.step
    }

    /// Back to the initial step (after a success).
    pub fn reset(&mut self) {
        self.step = self.initial;
    }

    /// Starts over from a new initial step (a changed configuration).
    pub fn reset_to(&mut self, initial: Duration) {
        self.initial = initial;
        self.max = self.max.max(initial);
        self.step = initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(MS(100), MS(1000));
        let got: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert_eq!(got, [MS(100), MS(200), MS(400), MS(800), MS(1000), MS(1000)]);
        b.reset();
        assert_eq!(b.next_delay(), MS(100));
    }

    #[test]
    fn jitter_stays_within_its_fraction_below_the_step() {
        let mut b = Backoff::new(MS(100), MS(5000)).jitter(0.5);
        for step in [100, 200, 400, 800, 1600, 3200, 5000, 5000] {
            let d = b.next_delay();
            assert!(
                d >= MS(step / 2) && d <= MS(step),
                "{d:?} outside [{}, {step}] ms",
                step / 2
            );
        }
    }

    #[test]
    fn a_factor_other_than_two() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10)).factor(3.0);
        let got: Vec<_> = (0..4).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, [1, 3, 9, 10]);
        b.reset_to(Duration::from_secs(2));
        assert_eq!(b.peek(), Duration::from_secs(2));
    }

    #[test]
    fn nonsense_settings_are_tamed() {
        let mut b = Backoff::new(MS(100), MS(10)).factor(f64::NAN).jitter(7.0);
        assert!(b.next_delay() <= MS(100));
        let mut b = Backoff::new(MS(10), MS(100)).factor(0.1);
        assert_eq!((b.next_delay(), b.next_delay()), (MS(10), MS(10)));
    }

    /// Found while fuzzing the service file (docs/fuzzing.md): a step near
    /// `Duration::MAX` times the factor made `mul_f64` panic; the step now
    /// stays at the cap.
    #[test]
    fn huge_steps_stay_at_the_cap() {
        let huge = Duration::from_secs(u64::MAX / 2);
        let mut b = Backoff::new(huge, Duration::MAX).factor(100.0);
        assert_eq!(b.next_delay(), huge);
        assert_eq!(b.next_delay(), Duration::MAX);
        assert_eq!(b.next_delay(), Duration::MAX);
    }
}
