//! Capped exponential backoff with random jitter: one schedule for the
//! engine's commit retries and for supervision's restarts and retries.

use std::time::Duration;

/// Waits that start at `min`, double after each failure up to `max`, and
/// are each stretched by a random share of themselves up to `random_factor`
/// (0.2: up to 20% longer), so that many clients failing together do not
/// retry in step. The n-th wait (n from 0) lies in
/// `[b, b * (1 + random_factor)]` where `b = min(max, min * 2^n)`: the
/// semantics of Akka's `RestartSettings`.
///
/// ```
/// use std::time::Duration;
/// use reactive_kafka::supervision::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10), 0.2);
/// let (low, high) = backoff.bounds(3);
/// assert_eq!((low, high), (Duration::from_millis(800), Duration::from_millis(960)));
/// let wait = backoff.delay(3);
/// assert!(low <= wait && wait <= high);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    random_factor: f64,
}

impl Backoff {
    /// From `min` to at most `max` (raised to `min` if below it), each wait
    /// up to `random_factor` longer (negative or NaN counts as 0).
    pub fn new(min: Duration, max: Duration, random_factor: f64) -> Self {
        Backoff {
            min,
            max: max.max(min),
            random_factor: if random_factor.is_finite() {
                random_factor.max(0.0)
            } else {
                0.0
            },
        }
    }

    /// For constants with settings known to be sane (`min <= max`,
    /// `random_factor >= 0`).
    pub(crate) const fn constant_parts(min: Duration, max: Duration, random_factor: f64) -> Self {
        Backoff {
            min,
            max,
            random_factor,
        }
    }

    /// The first wait, before jitter.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The longest wait, before jitter.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// How much longer, at most, a wait may be made (0.2: 20%).
    pub fn random_factor(&self) -> f64 {
        self.random_factor
    }

    /// The wait before retry `attempt` (0 for the first), with fresh jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, fastrand::f64())
    }

    /// The wait before retry `attempt` with `random` (0 to 1) as the jitter
    /// draw: 0 gives the lower bound, 1 the upper.
    pub fn delay_with(&self, attempt: u32, random: f64) -> Duration {
        let random = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.base(attempt)
            .mul_f64(1.0 + random * self.random_factor)
    }

    /// The lowest and highest wait before retry `attempt`.
    pub fn bounds(&self, attempt: u32) -> (Duration, Duration) {
        (self.delay_with(attempt, 0.0), self.delay_with(attempt, 1.0))
    }

    fn base(&self, attempt: u32) -> Duration {
        self.min
            .saturating_mul(1u32 << attempt.min(31))
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn waits_double_up_to_the_cap_and_jitter_only_lengthens() {
        let b = Backoff::new(ms(100), ms(1000), 0.5);
        let lows: Vec<Duration> = (0..6).map(|n| b.bounds(n).0).collect();
        assert_eq!(
            lows,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(b.bounds(2).1, ms(600));
        assert_eq!(b.bounds(u32::MAX), (ms(1000), ms(1500)));
        for n in 0..8 {
            let (low, high) = b.bounds(n);
            for _ in 0..200 {
                let wait = b.delay(n);
                assert!(low <= wait && wait <= high, "{n}: {wait:?}");
            }
        }
    }

    #[test]
    fn the_jitter_spreads_over_its_whole_range() {
        let b = Backoff::new(ms(1000), ms(1000), 1.0);
        let waits: Vec<Duration> = (0..1000).map(|_| b.delay(0)).collect();
        assert!(waits.iter().any(|w| *w < ms(1100)), "some near the bottom");
        assert!(waits.iter().any(|w| *w > ms(1900)), "some near the top");
    }

    #[test]
    fn odd_settings_are_made_safe() {
        let b = Backoff::new(ms(500), ms(100), f64::NAN);
        assert_eq!(b.max(), ms(500));
        assert_eq!(b.bounds(3), (ms(500), ms(500)));
        assert_eq!(Backoff::new(ms(1), ms(2), -1.0).random_factor(), 0.0);
    }
}
