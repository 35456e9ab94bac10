//! An in-process [`Store`]: the reference semantics in plain Rust, used by unit
//! tests (it runs under tokio's paused clock) and by benchmarks, which hand it
//! to `Application::build_with_parts`: no configuration can name it.
//! It is not durable: a restart forgets everything, so never use it in production.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::history::{
    ADMIN_SOURCE, ALREADY_PENDING, BatchEvent, EventKind, ImageRecord, KeyedRecord, REDELIVERY,
    arrival_records, digest_ending_records,
};
use super::{
    Arrival, BatchImage, BatchPolicy, ClaimedBatch, ClaimedDigest, DeadLetter, DeadLetterCause,
    DeliveryKey, DigestQueue, DigestSettlement, EnqueueCounts, Enqueued, HistoryEvent,
    HistorySubject, Millis, PendingImage, RetryCause, ScanReceipt, Store, StoreError, StoreStats,
    UnresolvedDigest, WaitingDigest,
};
use crate::domain::{ImageRef, Partition, ScanTarget};

mod history;
mod poll_state;

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    poll: poll_state::PollTables,
}

#[derive(Debug, Default)]
struct State {
    next_id: i64,
    /// Row id → row; ids grow, so iteration order is enqueue order.
    images: BTreeMap<i64, Row>,
    batches: BTreeMap<i64, Batch>,
    dead_letters: BTreeMap<i64, DeadLetter>,
    deliveries: HashMap<DeliveryKey, Millis>,
    /// Digest-only pushes waiting for resolution, by id.
    digests: BTreeMap<i64, DigestRow>,
    history: history::HistoryTables,
}

#[derive(Debug, Clone)]
struct DigestRow {
    digest: UnresolvedDigest,
    enqueued_at: Millis,
    /// The lease end while leased, else when it may be asked.
    next_attempt_at: Millis,
    owner: Option<String>,
    claims: u32,
    untagged_answers: u32,
    failures: u32,
    last_error: Option<String>,
}

#[derive(Debug, Clone)]
struct Row {
    partition: Partition,
    image: ImageRef,
    instance_url: Option<String>,
    digest: Option<String>,
    enqueued_at: Millis,
    batch_id: Option<i64>,
    source: String,
}

impl Row {
    /// The row's `accepted` facts, as a history record.
    fn record(&self, seq: i64) -> ImageRecord {
        ImageRecord {
            seq,
            at_ms: self.enqueued_at,
            event: EventKind::Accepted,
            source: self.source.clone(),
            batch_id: self.batch_id,
            reason: None,
            digest: self.digest.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct Batch {
    partition: Partition,
    owner: Option<String>,
    lease_until: Option<Millis>,
    next_attempt_at: Millis,
    attempts: u32,
}

impl State {
    fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    fn insert_unbatched(&mut self, target: &ScanTarget, source: &str, now: Millis) -> bool {
        let already_pending = self.images.values().any(|row| {
            row.batch_id.is_none() && row.partition == target.partition && row.image == target.image
        });
        if already_pending {
            let duplicate = KeyedRecord::duplicate(target, source, ALREADY_PENDING, now);
            self.history.record(duplicate, now);
            return false;
        }
        let id = self.next_id();
        self.images.insert(
            id,
            Row {
                partition: target.partition.clone(),
                image: target.image.clone(),
                instance_url: target.instance_url.clone(),
                digest: target.digest.clone(),
                enqueued_at: now,
                batch_id: None,
                source: source.to_string(),
            },
        );
        true
    }

    /// A settling batch's images leave the queue, each leaving its history row.
    fn remove_batch_images(&mut self, batch_id: i64, now: Millis) {
        let members: Vec<i64> = self
            .images
            .iter()
            .filter(|(_, row)| row.batch_id == Some(batch_id))
            .map(|(id, _)| *id)
            .collect();
        for id in members {
            if let Some(row) = self.images.remove(&id) {
                self.history
                    .keep(row.image.to_string(), row.record(id), now);
            }
        }
    }

    fn batch_images(&self, batch_id: i64) -> Vec<BatchImage> {
        self.images
            .values()
            .filter(|row| row.batch_id == Some(batch_id))
            .map(|row| BatchImage {
                image: row.image.clone(),
                instance_url: row.instance_url.clone(),
                digest: row.digest.clone(),
            })
            .collect()
    }

    fn lease(
        &mut self,
        batch_id: i64,
        owner: &str,
        now: Millis,
        policy: &BatchPolicy,
    ) -> Option<ClaimedBatch> {
        let images = self.batch_images(batch_id);
        let batch = self.batches.get_mut(&batch_id)?;
        batch.owner = Some(owner.to_string());
        batch.lease_until = Some(now + policy.lease_ms);
        batch.attempts += 1;
        let attempt = batch.attempts;
        self.history.batch_event(BatchEvent::sent(batch_id, now));
        Some(ClaimedBatch {
            id: batch_id,
            owner: owner.to_string(),
            partition: self.batches.get(&batch_id)?.partition.clone(),
            images,
            attempt,
            lease_until: now + policy.lease_ms,
        })
    }

    /// Queues a digest unless the same one already waits; `true` when added.
    fn insert_digest(&mut self, digest: &UnresolvedDigest, now: Millis) -> bool {
        if self.digests.values().any(|row| row.digest == *digest) {
            return false;
        }
        let id = self.next_id();
        self.digests.insert(
            id,
            DigestRow {
                digest: digest.clone(),
                enqueued_at: now,
                next_attempt_at: now,
                owner: None,
                claims: 0,
                untagged_answers: 0,
                failures: 0,
                last_error: None,
            },
        );
        true
    }

    /// Unbatched images per partition: (count, oldest enqueue time).
    fn unbatched_partitions(&self) -> BTreeMap<Partition, (usize, Millis)> {
        let mut partitions: BTreeMap<Partition, (usize, Millis)> = BTreeMap::new();
        for row in self.images.values().filter(|row| row.batch_id.is_none()) {
            let entry = partitions
                .entry(row.partition.clone())
                .or_insert((0, row.enqueued_at));
            entry.0 += 1;
            entry.1 = entry.1.min(row.enqueued_at);
        }
        partitions
    }
}

fn partition_due_at(count: usize, oldest: Millis, policy: &BatchPolicy) -> Millis {
    if count >= policy.max_images {
        Millis::MIN
    } else {
        oldest + policy.window_ms
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn enqueue_arrival(
        &self,
        arrival: &Arrival<'_>,
        now: Millis,
    ) -> Result<Enqueued, StoreError> {
        let mut state = self.state.lock().await;
        let redelivery = arrival
            .delivery
            .is_some_and(|key| state.deliveries.contains_key(key));
        for record in arrival_records(arrival, redelivery, now) {
            state.history.record(record, now);
        }
        if redelivery {
            return Ok(Enqueued::DuplicateDelivery);
        }
        if let Some(key) = arrival.delivery {
            state.deliveries.insert(key.clone(), now);
        }
        let mut counts = EnqueueCounts::default();
        for target in arrival.targets {
            counts.count(state.insert_unbatched(target, arrival.source, now));
        }
        Ok(Enqueued::Stored(counts))
    }

    async fn claim_batch(
        &self,
        owner: &str,
        now: Millis,
        policy: &BatchPolicy,
    ) -> Result<Option<ClaimedBatch>, StoreError> {
        let mut state = self.state.lock().await;
        let reclaimable = state
            .batches
            .iter()
            .filter(|(_, batch)| match batch.lease_until {
                Some(lease_until) => lease_until <= now,
                None => batch.next_attempt_at <= now,
            })
            .min_by_key(|(id, batch)| (batch.lease_until.unwrap_or(batch.next_attempt_at), **id))
            .map(|(id, _)| *id);
        if let Some(batch_id) = reclaimable {
            return Ok(state.lease(batch_id, owner, now, policy));
        }

        let due = state
            .unbatched_partitions()
            .into_iter()
            .filter(|(_, (count, oldest))| partition_due_at(*count, *oldest, policy) <= now)
            .min_by_key(|(_, (_, oldest))| *oldest)
            .map(|(partition, _)| partition);
        let Some(partition) = due else {
            return Ok(None);
        };
        let batch_id = state.next_id();
        let members: Vec<i64> = state
            .images
            .iter()
            .filter(|(_, row)| row.batch_id.is_none() && row.partition == partition)
            .take(policy.max_images)
            .map(|(id, _)| *id)
            .collect();
        for id in members {
            if let Some(row) = state.images.get_mut(&id) {
                row.batch_id = Some(batch_id);
            }
        }
        state.batches.insert(
            batch_id,
            Batch {
                partition,
                owner: None,
                lease_until: None,
                next_attempt_at: now,
                attempts: 0,
            },
        );
        Ok(state.lease(batch_id, owner, now, policy))
    }

    async fn next_due(
        &self,
        _now: Millis,
        policy: &BatchPolicy,
    ) -> Result<Option<Millis>, StoreError> {
        let state = self.state.lock().await;
        let batches = state
            .batches
            .values()
            .map(|batch| batch.lease_until.unwrap_or(batch.next_attempt_at));
        let partitions = state
            .unbatched_partitions()
            .into_values()
            .map(|(count, oldest)| partition_due_at(count, oldest, policy));
        Ok(batches.chain(partitions).min())
    }

    async fn complete(
        &self,
        batch: &ClaimedBatch,
        receipt: &ScanReceipt,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        state.remove_batch_images(batch.id, now);
        state
            .history
            .batch_event(BatchEvent::scanned(batch.id, now, receipt));
        state.batches.remove(&batch.id);
        Ok(())
    }

    async fn release_for_retry(
        &self,
        batch: &ClaimedBatch,
        not_before: Millis,
        cause: &RetryCause,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        if let Some(stored) = state.batches.get_mut(&batch.id)
            && stored.owner.as_deref() == Some(batch.owner.as_str())
            && stored.attempts == batch.attempt
        {
            stored.owner = None;
            stored.lease_until = None;
            stored.next_attempt_at = not_before;
            state
                .history
                .batch_event(BatchEvent::retried(batch.id, now, cause));
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        batch: &ClaimedBatch,
        cause: &DeadLetterCause,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        let Some(stored) = state.batches.remove(&batch.id) else {
            return Ok(());
        };
        let images = state.batch_images(batch.id);
        state.remove_batch_images(batch.id, now);
        state
            .history
            .batch_event(BatchEvent::dead_letter(batch.id, now, cause));
        let id = state.next_id();
        state.dead_letters.insert(
            id,
            DeadLetter {
                id,
                partition: stored.partition,
                images,
                unresolved: None,
                cause: cause.clone(),
                attempts: stored.attempts,
                failed_at: now,
            },
        );
        Ok(())
    }

    async fn pending(&self, limit: usize) -> Result<Vec<PendingImage>, StoreError> {
        let state = self.state.lock().await;
        let mut rows: Vec<PendingImage> = state
            .images
            .values()
            .map(|row| PendingImage {
                partition: row.partition.clone(),
                image: row.image.clone(),
                instance_url: row.instance_url.clone(),
                digest: row.digest.clone(),
                enqueued_at: row.enqueued_at,
                batch_id: row.batch_id,
            })
            .collect();
        rows.sort_by_key(|row| row.enqueued_at);
        rows.truncate(limit);
        Ok(rows)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let state = self.state.lock().await;
        Ok(state
            .dead_letters
            .values()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn retry_dead_letter(
        &self,
        id: i64,
        now: Millis,
    ) -> Result<Option<EnqueueCounts>, StoreError> {
        let mut state = self.state.lock().await;
        let Some(letter) = state.dead_letters.remove(&id) else {
            return Ok(None);
        };
        let mut counts = EnqueueCounts::default();
        if let Some(digest) = &letter.unresolved {
            counts.count(state.insert_digest(digest, now));
        }
        for image in &letter.images {
            let target = ScanTarget {
                partition: letter.partition.clone(),
                image: image.image.clone(),
                instance_url: image.instance_url.clone(),
                digest: image.digest.clone(),
            };
            counts.count(state.insert_unbatched(&target, ADMIN_SOURCE, now));
        }
        Ok(Some(counts))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let state = self.state.lock().await;
        Ok(StoreStats {
            pending_images: state.images.len() as u64,
            oldest_enqueued_at: state.images.values().map(|row| row.enqueued_at).min(),
            batches_in_flight: state
                .batches
                .values()
                .filter(|batch| batch.lease_until.is_some())
                .count() as u64,
            dead_letters: state.dead_letters.len() as u64,
        })
    }

    async fn prune_deliveries(&self, cutoff: Millis) -> Result<u64, StoreError> {
        let mut state = self.state.lock().await;
        let before = state.deliveries.len();
        state.deliveries.retain(|_, seen_at| *seen_at >= cutoff);
        Ok((before - state.deliveries.len()) as u64)
    }

    async fn history(
        &self,
        subject: &HistorySubject,
        limit: usize,
    ) -> Result<Vec<HistoryEvent>, StoreError> {
        let state = self.state.lock().await;
        let live: Vec<ImageRecord> = match subject {
            HistorySubject::Tagged(image) => state
                .images
                .iter()
                .filter(|(_, row)| row.image == *image)
                .map(|(id, row)| row.record(*id))
                .collect(),
            HistorySubject::Digest {
                namespace,
                name,
                digest,
            } => state
                .digests
                .iter()
                .filter(|(_, row)| {
                    row.digest.namespace == *namespace
                        && row.digest.name == *name
                        && row.digest.digest == *digest
                })
                .map(|(id, row)| ImageRecord {
                    seq: *id,
                    at_ms: row.enqueued_at,
                    event: EventKind::Resolving,
                    source: row.digest.source.clone(),
                    batch_id: None,
                    reason: None,
                    digest: Some(row.digest.digest.clone()),
                })
                .collect(),
        };
        Ok(state.history.read(&subject.to_string(), live, limit))
    }

    async fn prune_history(&self, cutoff: Millis) -> Result<u64, StoreError> {
        Ok(self.state.lock().await.history.prune(cutoff))
    }
}

#[async_trait]
impl DigestQueue for MemoryStore {
    async fn enqueue_digests(
        &self,
        delivery: Option<&DeliveryKey>,
        digests: &[UnresolvedDigest],
        now: Millis,
    ) -> Result<Enqueued, StoreError> {
        let mut state = self.state.lock().await;
        let duplicate = |digest: &UnresolvedDigest, reason: &str| {
            KeyedRecord::on_digest(digest, EventKind::Duplicate, now, Some(reason.to_string()))
        };
        if delivery.is_some_and(|key| state.deliveries.contains_key(key)) {
            for digest in digests {
                state.history.record(duplicate(digest, REDELIVERY), now);
            }
            return Ok(Enqueued::DuplicateDelivery);
        }
        let mut counts = EnqueueCounts::default();
        for digest in digests {
            let stored = state.insert_digest(digest, now);
            if !stored {
                state
                    .history
                    .record(duplicate(digest, ALREADY_PENDING), now);
            }
            counts.count(stored);
        }
        Ok(Enqueued::Stored(counts))
    }

    async fn claim_digest(
        &self,
        owner: &str,
        now: Millis,
        lease_ms: Millis,
    ) -> Result<Option<ClaimedDigest>, StoreError> {
        let mut state = self.state.lock().await;
        let due = state
            .digests
            .iter()
            .filter(|(_, row)| row.next_attempt_at <= now)
            .min_by_key(|(id, row)| (row.next_attempt_at, **id))
            .map(|(id, _)| *id);
        let Some(id) = due else {
            return Ok(None);
        };
        let Some(row) = state.digests.get_mut(&id) else {
            return Ok(None);
        };
        row.owner = Some(owner.to_string());
        row.claims += 1;
        row.next_attempt_at = now + lease_ms;
        Ok(Some(ClaimedDigest {
            id,
            owner: owner.to_string(),
            claim: row.claims,
            lease_until: row.next_attempt_at,
            digest: row.digest.clone(),
            untagged_answers: row.untagged_answers,
            failures: row.failures,
            enqueued_at: row.enqueued_at,
        }))
    }

    async fn next_digest_due(&self) -> Result<Option<Millis>, StoreError> {
        let state = self.state.lock().await;
        Ok(state.digests.values().map(|row| row.next_attempt_at).min())
    }

    async fn settle_digest(
        &self,
        claimed: &ClaimedDigest,
        settlement: DigestSettlement,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut state = self.state.lock().await;
        let holds_lease = state.digests.get(&claimed.id).is_some_and(|row| {
            row.owner.as_deref() == Some(claimed.owner.as_str()) && row.claims == claimed.claim
        });
        if !holds_lease {
            return Ok(false);
        }
        for record in digest_ending_records(claimed, &settlement, now)
            .into_iter()
            .flatten()
        {
            state.history.record(record, now);
        }
        match settlement {
            DigestSettlement::Resolved(targets) => {
                state.digests.remove(&claimed.id);
                for target in &targets {
                    state.insert_unbatched(target, &claimed.digest.source, now);
                }
            }
            DigestSettlement::AskAgain(next) => {
                if let Some(row) = state.digests.get_mut(&claimed.id) {
                    row.owner = None;
                    row.next_attempt_at = next.not_before;
                    row.untagged_answers = next.untagged_answers;
                    row.failures = next.failures;
                    row.last_error = Some(next.last_error);
                }
            }
            DigestSettlement::Drop { .. } => {
                state.digests.remove(&claimed.id);
            }
            DigestSettlement::DeadLetter(cause) => {
                let Some(row) = state.digests.remove(&claimed.id) else {
                    return Ok(false);
                };
                let id = state.next_id();
                state.dead_letters.insert(
                    id,
                    DeadLetter {
                        id,
                        partition: row.digest.partition.clone(),
                        images: Vec::new(),
                        unresolved: Some(row.digest),
                        cause,
                        attempts: row.claims,
                        failed_at: now,
                    },
                );
            }
        }
        Ok(true)
    }

    async fn waiting_digests(&self, limit: usize) -> Result<Vec<WaitingDigest>, StoreError> {
        let state = self.state.lock().await;
        Ok(state
            .digests
            .values()
            .take(limit)
            .map(|row| WaitingDigest {
                digest: row.digest.clone(),
                enqueued_at: row.enqueued_at,
                next_attempt_at: row.next_attempt_at,
                untagged_answers: row.untagged_answers,
                failures: row.failures,
                last_error: row.last_error.clone(),
            })
            .collect())
    }

    async fn digests_resolving(&self) -> Result<u64, StoreError> {
        Ok(self.state.lock().await.digests.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_meets_the_store_contract() {
        super::super::conformance::run_all(|| async { MemoryStore::new() }).await;
    }
}
