//! The poll lease of one source: held by one replica at a time, renewed at
//! every poll and while a long poll runs, taken over once it runs out.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::store::{Millis, Store, StoreError};

/// A lease this replica holds.
pub struct Lease {
    store: Arc<dyn Store>,
    clock: Clock,
    source: String,
    owner: String,
    length_ms: Millis,
    renewed_at: Millis,
}

impl Lease {
    /// Takes or renews the lease; `None` when another replica holds it.
    pub async fn take(
        store: Arc<dyn Store>,
        clock: Clock,
        source: &str,
        owner: &str,
        length: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let length_ms = Millis::try_from(length.as_millis()).unwrap_or(Millis::MAX);
        let now = clock.now_ms();
        let held = store
            .take_poll_lease(source, owner, now, now.saturating_add(length_ms))
            .await?;
        Ok(held.then(|| Lease {
            store,
            clock,
            source: source.to_string(),
            owner: owner.to_string(),
            length_ms,
            renewed_at: now,
        }))
    }

    /// Renews the lease once a third of it has passed; false when it was lost
    /// (this replica stalled longer than the lease and another took over).
    pub async fn keep(&mut self) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        if now - self.renewed_at < self.length_ms / 3 {
            return Ok(true);
        }
        let held = self
            .store
            .take_poll_lease(
                &self.source,
                &self.owner,
                now,
                now.saturating_add(self.length_ms),
            )
            .await?;
        self.renewed_at = now;
        Ok(held)
    }
}
