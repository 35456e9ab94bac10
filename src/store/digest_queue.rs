//! Digest-only pushes waiting to be resolved to their tags through SWR EE:
//! the second queue of the store, beside the pending images.
//!
//! Semantics every backend keeps (checked by the shared conformance suite):
//! - A digest waits once per `(source, namespace, name, digest)`; pushing it
//!   again while it waits is a duplicate.
//! - It is claimed with a lease like a batch (`owner`, a claim counter, and
//!   `next_attempt_at` = the lease end while leased): one resolver at a time,
//!   and a resolver that died leaves it to the next claim.
//! - Settling it is one transaction: its tags enter the pending images and the
//!   digest leaves the queue together, so a crash between them loses nothing
//!   and doubles nothing.
//! - A settle by a stale lease (another resolver took the digest over) changes
//!   nothing.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{DeadLetterCause, DeliveryKey, Enqueued, Millis, StoreError};
use crate::domain::{Partition, ScanTarget};

/// A manifest pushed by digest alone, as stored until SWR names its tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UnresolvedDigest {
    /// The webhook source it came through: its filter applies to the tags.
    pub source: String,
    pub partition: Partition,
    pub namespace: String,
    /// The repository below the namespace; may contain `/`.
    pub name: String,
    pub digest: String,
    pub instance_url: Option<String>,
}

impl UnresolvedDigest {
    /// `namespace/name@digest`.
    pub fn subject(&self) -> String {
        format!("{}/{}@{}", self.namespace, self.name, self.digest)
    }
}

/// A digest this resolver holds the lease on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDigest {
    pub id: i64,
    pub owner: String,
    /// Counts claims; with `owner` it names this one lease.
    pub claim: u32,
    pub lease_until: Millis,
    pub digest: UnresolvedDigest,
    /// Answers so far that named no tag.
    pub untagged_answers: u32,
    /// Failed asks so far (SWR unreachable, 429, 5xx): drives the backoff.
    pub failures: u32,
    pub enqueued_at: Millis,
}

/// How a resolution ended, as the store records it. The resolver decides it
/// over the tag names SWR gave (`DigestSettlement<Vec<String>>`) before the
/// source turns them into images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestSettlement<Resolved = Vec<ScanTarget>> {
    /// SWR named tags: these images (already filtered) enter the pending set
    /// and the digest leaves the queue.
    Resolved(Resolved),
    /// Ask again later (untagged yet, or SWR failed for now).
    AskAgain(NextAsk),
    /// Nothing to scan (untagged for good, or unknown to SWR): forget it.
    /// `reason` (`untagged`, `not_found`) goes to the digest's history.
    Drop { reason: &'static str },
    /// SWR refused for good: keep it as a dead letter for an operator.
    DeadLetter(DeadLetterCause),
}

/// When to ask SWR about a digest again, and what the asks so far came to:
/// the row a store keeps for a digest that stays in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextAsk {
    pub not_before: Millis,
    pub untagged_answers: u32,
    pub failures: u32,
    pub last_error: String,
}

impl<T> DigestSettlement<T> {
    /// The same settlement, its `Resolved` payload turned by `resolve`.
    pub fn map_resolved<U>(self, resolve: impl FnOnce(T) -> U) -> DigestSettlement<U> {
        match self {
            DigestSettlement::Resolved(resolved) => DigestSettlement::Resolved(resolve(resolved)),
            DigestSettlement::AskAgain(next) => DigestSettlement::AskAgain(next),
            DigestSettlement::Drop { reason } => DigestSettlement::Drop { reason },
            DigestSettlement::DeadLetter(cause) => DigestSettlement::DeadLetter(cause),
        }
    }
}

/// A digest waiting for resolution, as `/admin/pending` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingDigest {
    #[serde(flatten)]
    pub digest: UnresolvedDigest,
    pub enqueued_at: Millis,
    pub next_attempt_at: Millis,
    pub untagged_answers: u32,
    pub failures: u32,
    pub last_error: Option<String>,
}

#[async_trait]
pub trait DigestQueue: Send + Sync {
    /// Stores the digest-only pushes of one webhook atomically; returns once
    /// they are durable. A delivery id already recorded (by
    /// [`super::Store::enqueue`], which the intake calls right after this)
    /// makes it store nothing and answer [`Enqueued::DuplicateDelivery`].
    async fn enqueue_digests(
        &self,
        delivery: Option<&DeliveryKey>,
        digests: &[UnresolvedDigest],
        now: Millis,
    ) -> Result<Enqueued, StoreError>;

    /// Takes the lease on the digest that may be asked soonest, if one may be
    /// asked now.
    async fn claim_digest(
        &self,
        owner: &str,
        now: Millis,
        lease_ms: Millis,
    ) -> Result<Option<ClaimedDigest>, StoreError>;

    /// When [`DigestQueue::claim_digest`] could next return a digest; `None`
    /// when none waits.
    async fn next_digest_due(&self) -> Result<Option<Millis>, StoreError>;

    /// Records how the resolution of `claimed` ended. `false` when its lease
    /// was lost meanwhile (nothing changed).
    async fn settle_digest(
        &self,
        claimed: &ClaimedDigest,
        settlement: DigestSettlement,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// Waiting digests, oldest first.
    async fn waiting_digests(&self, limit: usize) -> Result<Vec<WaitingDigest>, StoreError>;

    /// How many digests wait for resolution.
    async fn digests_resolving(&self) -> Result<u64, StoreError>;
}
