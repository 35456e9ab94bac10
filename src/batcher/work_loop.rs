//! What the batcher's and the resolver's loops share: both claim leased work
//! from the store, are woken by the intake after a commit, and otherwise sleep
//! until the store's next deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::store::Millis;

/// How long to wait when due work is being claimed by another replica.
pub const CONTENDED_PAUSE: Duration = Duration::from_millis(25);

/// After a store failure a loop waits this long before asking again.
pub const STORE_ERROR_PAUSE: Duration = Duration::from_millis(500);

/// A call ends at most this long (or a tenth of the lease) before its lease
/// does, leaving time to settle the outcome while the lease still holds.
const LEASE_SETTLE_MARGIN_MS: Millis = 1_000;

/// Lets the intake (and the admin routes) wake a loop. Wakes are coalesced.
#[derive(Clone, Default)]
pub struct WakeHandle {
    wake: Arc<Notify>,
}

impl WakeHandle {
    /// New work was committed: the loop re-reads its next deadline.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sleeps for `pause`, or less when woken or when `stop` changes.
    /// False when `stop`'s sender is gone: the loop ends.
    pub async fn pause(&self, pause: Duration, stop: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = self.wake.notified() => true,
            _ = tokio::time::sleep(pause) => true,
            changed = stop.changed() => changed.is_ok(),
        }
    }
}

/// How long to sleep when the store's next deadline is `next_due`: at most
/// `idle` (to notice work other replicas stored).
pub fn pause_until(next_due: Option<Millis>, now: Millis, idle: Duration) -> Duration {
    match next_due {
        // Due already, yet the claim just came back empty: another replica is
        // taking that work right now. Look again shortly instead of spinning.
        Some(due) if due <= now => CONTENDED_PAUSE,
        Some(due) => Duration::from_millis((due - now) as u64).min(idle),
        None => idle,
    }
}

/// How long a call for work leased until `lease_until` may take: until its
/// lease (of `lease_ms`) ends, less a margin to settle the outcome in the
/// store while the lease still holds.
pub fn lease_budget(lease_ms: Millis, lease_until: Millis, now: Millis) -> Duration {
    let margin = (lease_ms / 10).clamp(0, LEASE_SETTLE_MARGIN_MS);
    let remaining = lease_until - now - margin;
    Duration::from_millis(remaining.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_until_follows_the_next_deadline_within_idle() {
        let idle = Duration::from_secs(5);
        assert_eq!(pause_until(None, 1_000, idle), idle);
        assert_eq!(pause_until(Some(1_000), 1_000, idle), CONTENDED_PAUSE);
        assert_eq!(
            pause_until(Some(1_300), 1_000, idle),
            Duration::from_millis(300)
        );
        assert_eq!(pause_until(Some(60_000), 1_000, idle), idle);
    }

    #[test]
    fn lease_budget_keeps_a_settle_margin_and_never_goes_negative() {
        // A tenth of a short lease…
        assert_eq!(
            lease_budget(5_000, 10_000, 5_000),
            Duration::from_millis(4_500)
        );
        // …at most one second of a long one.
        assert_eq!(
            lease_budget(60_000, 70_000, 10_000),
            Duration::from_millis(59_000)
        );
        assert_eq!(lease_budget(60_000, 10_000, 20_000), Duration::ZERO);
    }
}
