//! How long to wait before asking the provider again.

use std::time::Duration;

/// Exponential backoff with "equal jitter": after the n-th failed attempt the wait is half of
/// `base · 2ⁿ⁻¹` (capped at `max`) plus a random share of the other half. The fixed half keeps a
/// struggling provider from being hammered; the random half keeps replicas from retrying in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The longest wait after `attempt` failed attempts (1-based).
    #[must_use]
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.base
            .checked_mul(1_u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The wait after `attempt` failed attempts; `jitter` in `[0, 1]` picks where in the upper
    /// half it falls (the caller draws it, so this stays deterministic).
    #[must_use]
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }

    #[test]
    fn the_ceiling_doubles_per_attempt_up_to_the_cap() {
        let b = backoff();
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(800));
        assert_eq!(b.ceiling(6), Duration::from_secs(2));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_within_the_upper_half_of_the_ceiling() {
        let b = backoff();
        for attempt in 1..10 {
            let ceiling = b.ceiling(attempt);
            assert_eq!(b.delay(attempt, 0.0), ceiling / 2);
            assert_eq!(b.delay(attempt, 1.0), ceiling);
            let mid = b.delay(attempt, 0.5);
            assert!(mid >= ceiling / 2 && mid <= ceiling);
        }
    }

    #[test]
    fn out_of_range_jitter_is_clamped() {
        let b = backoff();
        assert_eq!(b.delay(1, -3.0), Duration::from_millis(50));
        assert_eq!(b.delay(1, 7.0), Duration::from_millis(100));
    }
}
