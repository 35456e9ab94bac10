//! Retry delays: exponential with full jitter, bounded, and never sooner than
//! the server's `Retry-After`.
//!
//! Full jitter (a uniform delay between zero and the exponential ceiling)
//! spreads the retries of many batches over time, so an HSS outage does not
//! end in a synchronized burst when it recovers. The jitter applies above a
//! `Retry-After` too: batches told "in 5 s" at the same moment would otherwise
//! all come back at that one instant.

use std::time::Duration;

use rand::RngExt;

use crate::config::BatchSettings;

/// A `Retry-After` longer than this is treated as this: a misbehaving proxy
/// must not park a batch for days.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
        }
    }

    pub fn from_settings(settings: &BatchSettings) -> Self {
        Self::new(settings.retry_base, settings.retry_max)
    }

    /// The jitter ceiling after the `attempt`-th failure (1-based):
    /// `min(max, base · 2^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        self.base
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The delay before the next attempt, with `unit` a uniform sample of
    /// [0, 1] (injected so tests are exact): the jitter, after the server's
    /// `Retry-After` when it gave one.
    pub fn delay_with(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let jittered = self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0));
        match retry_after {
            Some(server_says) => server_says.min(RETRY_AFTER_CAP) + jittered,
            None => jittered,
        }
    }

    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let unit = rand::rng().random_range(0.0..=1.0);
        self.delay_with(attempt, retry_after, unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    #[test]
    fn ceiling_doubles_up_to_the_bound() {
        let b = backoff();
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(3), Duration::from_millis(400));
        assert_eq!(b.ceiling(7), Duration::from_millis(5000));
        assert_eq!(b.ceiling(1_000), Duration::from_millis(5000));
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let b = backoff();
        assert_eq!(b.delay_with(3, None, 0.0), Duration::ZERO);
        assert_eq!(b.delay_with(3, None, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay_with(3, None, 1.0), Duration::from_millis(400));
        for _ in 0..1_000 {
            assert!(b.delay(4, None) <= Duration::from_millis(800));
        }
    }

    #[test]
    fn retry_after_is_a_floor_with_jitter_above_it() {
        let b = backoff();
        let server = Some(Duration::from_secs(2));
        assert_eq!(b.delay_with(1, server, 0.0), Duration::from_secs(2));
        assert_eq!(b.delay_with(1, server, 0.3), Duration::from_millis(2_030));
        assert_eq!(
            b.delay_with(8, Some(Duration::from_millis(10)), 1.0),
            Duration::from_millis(5_010)
        );
        assert_eq!(
            b.delay_with(1, Some(Duration::from_secs(86_400)), 0.0),
            RETRY_AFTER_CAP
        );
    }

    #[test]
    fn batches_told_the_same_retry_after_do_not_return_together() {
        let b = backoff();
        let server = Some(Duration::from_secs(5));
        let mut delays: Vec<Duration> = (0..200).map(|_| b.delay(4, server)).collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_secs(5)));
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(5_800)));
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 100, "only {} distinct delays", delays.len());
    }

    #[test]
    fn random_delays_are_spread_not_synchronized() {
        let b = backoff();
        let mut delays: Vec<Duration> = (0..200).map(|_| b.delay(6, None)).collect();
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 100, "only {} distinct delays", delays.len());
    }
}
