//! The durable queue between intake and batcher — the only place with SQL.
//!
//! Everything the bridge has acknowledged lives here until HSS has accepted it,
//! so a crash anywhere loses nothing. Two backends implement [`Store`] with the
//! same semantics (checked by the shared `conformance` suite, compiled for
//! tests and the `test-support` feature only):
//! SQLite for one instance, PostgreSQL for replicas behind a load balancer.
//!
//! Semantics every backend keeps:
//! - A pending image is unique per `(partition, namespace, name, tag)` among
//!   images not yet in a batch; pushing it again is a duplicate, not a new row.
//!   Once its batch is in flight, a new push of it is a new row: one more scan.
//! - A batch is claimed with a lease (`owner`, `lease_until`). A batch whose
//!   lease ran out (its owner died) is claimed again by anyone: at least once.
//! - A delivery id is remembered with the images of its webhook, in the same
//!   transaction, so a redelivery is answered as a duplicate only if the first
//!   delivery really was stored.
//! - All times are milliseconds since the Unix epoch, given by the caller.

use async_trait::async_trait;
use serde::Serialize;

use crate::domain::{ImageRef, Partition, ScanTarget};
// Several layers speak of these; they live with the domain and are re-exported
// so that store code keeps naming them from here.
pub use crate::domain::{BatchImage, Millis, PositiveMillis};

pub mod configured;
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
pub mod digest_queue;
mod group_commit;
pub mod history;
pub mod memory;
pub mod migrations;
pub mod poll_state;
pub mod postgres;
pub mod retention;
pub mod sqlite;
mod stored_image;

pub use digest_queue::{
    ClaimedDigest, DigestQueue, DigestSettlement, NextAsk, UnresolvedDigest, WaitingDigest,
};
pub use history::{
    Arrival, EventKind, HistoryEvent, HistorySubject, IgnoredImage, RetryCause, ScanReceipt,
};
pub use memory::MemoryStore;
pub use poll_state::PollStateStore;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the connection: senders
    /// should retry later (503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A query failed for a reason that retrying will not fix.
    #[error("store query failed: {0}")]
    Query(String),
    /// Schema migration failed at start-up.
    #[error("store migration failed: {0}")]
    Migration(String),
}

/// A webhook's own id (`webhook-id`, CloudEvents `id`, …), scoped by source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub source: String,
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct EnqueueCounts {
    /// New pending rows.
    pub accepted: usize,
    /// Images already pending (not yet in flight): counted, not stored twice.
    pub duplicates: usize,
}

impl EnqueueCounts {
    /// Tallies one image (or digest): `stored` when it became a new pending
    /// row, else it was already pending.
    pub fn count(&mut self, stored: bool) {
        if stored {
            self.accepted += 1;
        } else {
            self.duplicates += 1;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Stored(EnqueueCounts),
    /// The delivery id was seen before: nothing was stored this time.
    DuplicateDelivery,
}

/// When a partition is due, and how long a claim lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    pub window_ms: Millis,
    pub max_images: usize,
    pub lease_ms: Millis,
}

impl BatchPolicy {
    /// The same policy, but every pending image is due now (`/admin/flush`, drain).
    pub fn flush_now(self) -> Self {
        Self {
            window_ms: 0,
            ..self
        }
    }
}

/// A batch this worker holds the lease on: send it, then settle it with
/// [`Store::complete`], [`Store::release_for_retry`] or [`Store::dead_letter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedBatch {
    pub id: i64,
    pub owner: String,
    pub partition: Partition,
    pub images: Vec<BatchImage>,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
    pub lease_until: Millis,
}

/// Why HSS refused a batch for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterCause {
    pub http_status: Option<u16>,
    pub error_code: Option<String>,
    pub error_msg: String,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingImage {
    pub partition: Partition,
    pub image: ImageRef,
    pub instance_url: Option<String>,
    pub digest: Option<String>,
    pub enqueued_at: Millis,
    /// The batch carrying it, when one was claimed.
    pub batch_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub partition: Partition,
    /// Empty for a digest SWR refused to resolve (see `unresolved`).
    pub images: Vec<BatchImage>,
    /// A digest-only push whose resolution SWR refused for good; retrying
    /// the dead letter queues the resolution again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<UnresolvedDigest>,
    pub cause: DeadLetterCause,
    pub attempts: u32,
    pub failed_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StoreStats {
    /// Images acknowledged and not yet accepted by HSS (in a batch or not).
    pub pending_images: u64,
    /// Enqueue time of the oldest of them.
    pub oldest_enqueued_at: Option<Millis>,
    pub batches_in_flight: u64,
    pub dead_letters: u64,
}

/// Every backend also keeps the poll sources' state ([`PollStateStore`]).
#[async_trait]
pub trait Store: DigestQueue + PollStateStore + Send + Sync + 'static {
    /// Creates or upgrades the schema; safe when several replicas start at once.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores the images of one webhook atomically, with its delivery id when
    /// it has one, and the history rows of what it ignored (and of its
    /// duplicates). Returns only once the rows are durable.
    async fn enqueue_arrival(
        &self,
        arrival: &Arrival<'_>,
        now: Millis,
    ) -> Result<Enqueued, StoreError>;

    /// [`Store::enqueue_arrival`] for images with nothing ignored, from the
    /// delivery's source (empty without a delivery id).
    async fn enqueue(
        &self,
        delivery: Option<&DeliveryKey>,
        targets: &[ScanTarget],
        now: Millis,
    ) -> Result<Enqueued, StoreError> {
        let arrival = Arrival {
            source: delivery.map_or("", |key| key.source.as_str()),
            delivery,
            targets,
            ignored: &[],
        };
        self.enqueue_arrival(&arrival, now).await
    }

    /// Takes the lease on the next batch that may be sent now, if any:
    /// first a batch whose retry time came or whose lease expired, else a new
    /// batch of up to `max_images` oldest images of a due partition (one whose
    /// oldest image waited `window_ms`, or which holds `max_images`).
    async fn claim_batch(
        &self,
        owner: &str,
        now: Millis,
        policy: &BatchPolicy,
    ) -> Result<Option<ClaimedBatch>, StoreError>;

    /// The earliest time at which [`Store::claim_batch`] could return a batch,
    /// or `None` when nothing is pending.
    async fn next_due(
        &self,
        now: Millis,
        policy: &BatchPolicy,
    ) -> Result<Option<Millis>, StoreError>;

    /// HSS accepted the batch: its images leave the queue, each leaving one
    /// history row, and the batch's `scanned` event names HSS's answer.
    async fn complete(
        &self,
        batch: &ClaimedBatch,
        receipt: &ScanReceipt,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// HSS failed in a way worth retrying: keep the batch, give up the lease,
    /// record `retried`, and make it claimable again at `not_before`. Does
    /// nothing if another worker took the batch over meanwhile.
    async fn release_for_retry(
        &self,
        batch: &ClaimedBatch,
        not_before: Millis,
        cause: &RetryCause,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// HSS refused the batch for good: move its images to dead letters (and
    /// their history rows, with the batch's `dead_letter` event).
    async fn dead_letter(
        &self,
        batch: &ClaimedBatch,
        cause: &DeadLetterCause,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Pending images, oldest first.
    async fn pending(&self, limit: usize) -> Result<Vec<PendingImage>, StoreError>;

    /// Dead letters, newest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;

    /// Puts a dead letter's images back in the queue (as if pushed at `now`),
    /// or its digest back among those waiting for resolution (counted in
    /// `accepted`), and removes the dead letter. `None` when no such dead
    /// letter exists.
    async fn retry_dead_letter(
        &self,
        id: i64,
        now: Millis,
    ) -> Result<Option<EnqueueCounts>, StoreError>;

    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Forgets delivery ids recorded before `cutoff`; returns how many.
    async fn prune_deliveries(&self, cutoff: Millis) -> Result<u64, StoreError>;

    /// The newest `limit` events of `subject`, oldest first; empty when unknown.
    async fn history(
        &self,
        subject: &HistorySubject,
        limit: usize,
    ) -> Result<Vec<HistoryEvent>, StoreError>;

    /// Forgets history recorded before `cutoff`, oldest first, at most
    /// [`history::PRUNE_BATCH`] rows of each kind; returns how many.
    async fn prune_history(&self, cutoff: Millis) -> Result<u64, StoreError>;
}
