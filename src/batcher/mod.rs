//! The batcher: claims due partitions from the store, sends each as ONE
//! batch-scan request, and settles the outcome.
//!
//! Who owns what: the batcher task owns the claim loop; every claimed batch
//! is sent by its own task (at most `max_in_flight` at once) so one slow HSS
//! call does not hold back other partitions. The intake wakes the loop through
//! [`BatcherHandle::wake`] after each commit; otherwise the loop sleeps until
//! the store's next deadline (bounded by one window, to notice work that other
//! replicas enqueued). It never busy-polls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::config::BatchSettings;
use crate::domain::PositiveMillis;
use crate::hss::{ScanOutcome, ScanSender};
use crate::ops::metrics::Metrics;
use crate::store::{
    BatchPolicy, ClaimedBatch, DeadLetterCause, Millis, RetryCause, ScanReceipt, Store,
};

pub mod backoff;
pub mod work_loop;

pub use backoff::Backoff;
use work_loop::{STORE_ERROR_PAUSE, WakeHandle, lease_budget, pause_until};

/// Lets the intake (and admin flush) wake the batcher.
pub type BatcherHandle = WakeHandle;

pub struct Batcher {
    store: Arc<dyn Store>,
    sender: Arc<dyn ScanSender>,
    policy: BatchPolicy,
    backoff: Backoff,
    /// The longest the loop sleeps with nothing due: one batch window.
    idle: Duration,
    clock: Clock,
    owner: String,
    handle: BatcherHandle,
    metrics: Metrics,
    in_flight: Arc<Semaphore>,
}

/// How one pass of [`Batcher::dispatch_due`] ended.
enum Dispatched {
    /// Nothing more is due now (every due batch is on its way).
    AllDue,
    StoreFailed,
    /// Shutdown began while waiting for a free send slot.
    Stopped,
}

/// How many batches one replica sends at once.
pub const MAX_IN_FLIGHT: usize = 4;

impl Batcher {
    /// `batch` and `lease` as configured: the policy claims follow, the retry
    /// backoff, and the longest the loop sleeps before looking again.
    pub fn new(
        store: Arc<dyn Store>,
        sender: Arc<dyn ScanSender>,
        batch: &BatchSettings,
        lease: PositiveMillis,
        clock: Clock,
        owner: String,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            sender,
            // The policy `[batch]` and `store.lease_ms` configure.
            policy: BatchPolicy {
                window_ms: batch.window.get(),
                max_images: batch.max_images.get(),
                lease_ms: lease.get(),
            },
            backoff: Backoff::from_settings(batch),
            idle: batch.window.as_duration(),
            clock,
            owner,
            handle: BatcherHandle::default(),
            metrics,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// The configured policy (what `/admin/flush` and the drain start from).
    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    pub fn handle(&self) -> BatcherHandle {
        self.handle.clone()
    }

    /// Runs until `stop` turns true (or its sender is gone), then returns
    /// promptly, without waiting for sends in flight (see [`Batcher::drain`]).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut sends = JoinSet::new();
        loop {
            if *stop.borrow() {
                break;
            }
            let pause = match self.dispatch_due(&mut sends, self.policy, &mut stop).await {
                Dispatched::AllDue => self.sleep_until_next_due().await,
                Dispatched::StoreFailed => STORE_ERROR_PAUSE,
                Dispatched::Stopped => break,
            };
            // Reap finished sends so the set does not grow.
            while sends.try_join_next().is_some() {}
            if !self.handle.pause(pause, &mut stop).await {
                break;
            }
        }
        // Sends already started keep their leases; hand them to the drain.
        sends.detach_all();
    }

    /// Sends everything due under `policy` and waits for those sends, until
    /// nothing is due or `deadline` passes. Used at shutdown and by `/admin/flush`.
    /// Sends run side by side, [`MAX_IN_FLIGHT`] at most (counting the run
    /// loop's), so a slow HSS costs one call's time per that many batches.
    /// Returns the number of batches sent (whatever HSS answered).
    pub async fn drain(&self, policy: BatchPolicy, deadline: tokio::time::Instant) -> usize {
        let mut sent = 0;
        let result = tokio::time::timeout_at(deadline, async {
            let mut sending = FuturesUnordered::new();
            let mut claiming = true;
            loop {
                tokio::select! {
                    Some(()) = sending.next(), if !sending.is_empty() => {
                        sent += 1;
                        // A retry may be due at once, or the partition may hold more.
                        claiming = true;
                    }
                    permit = self.in_flight.acquire(), if claiming => {
                        let Ok(permit) = permit else { break };
                        let now = self.clock.now_ms();
                        match self.store.claim_batch(&self.owner, now, &policy).await {
                            Ok(Some(batch)) => sending.push(async move {
                                self.send(batch).await;
                                drop(permit);
                            }),
                            Ok(None) => claiming = false,
                            Err(error) => {
                                self.store_error("claim_batch", &error);
                                claiming = false;
                            }
                        }
                    }
                    else => break,
                }
            }
            // Sends started by the run loop finish too: holding every permit
            // means none is in flight any more.
            let _ = self.in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
        })
        .await;
        if result.is_err() {
            tracing::warn!(sent, "drain deadline reached; the rest stays in the store");
        }
        sent
    }

    /// Claims every batch due now and spawns its send, until nothing is due,
    /// the store fails, or `stop` changes.
    async fn dispatch_due(
        self: &Arc<Self>,
        sends: &mut JoinSet<()>,
        policy: BatchPolicy,
        stop: &mut watch::Receiver<bool>,
    ) -> Dispatched {
        loop {
            // With every slot taken by a slow HSS call, a stop must not wait for
            // one to end: shutdown has its own deadline. Only the wait for a slot
            // is given up, never a claim, whose lease would otherwise go unsent.
            let permit = tokio::select! {
                permit = self.in_flight.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Dispatched::AllDue,
                },
                _ = stop.changed() => return Dispatched::Stopped,
            };
            let now = self.clock.now_ms();
            match self.store.claim_batch(&self.owner, now, &policy).await {
                Ok(Some(batch)) => {
                    let batcher = Arc::clone(self);
                    sends.spawn(async move {
                        batcher.send(batch).await;
                        drop(permit);
                    });
                }
                Ok(None) => return Dispatched::AllDue,
                Err(error) => {
                    self.store_error("claim_batch", &error);
                    return Dispatched::StoreFailed;
                }
            }
        }
    }

    /// How long to sleep before the next batch could be due.
    async fn sleep_until_next_due(&self) -> Duration {
        let now = self.clock.now_ms();
        match self.store.next_due(now, &self.policy).await {
            Ok(next_due) => pause_until(next_due, now, self.idle),
            Err(error) => {
                self.store_error("next_due", &error);
                STORE_ERROR_PAUSE
            }
        }
    }

    /// One HSS call for one claimed batch, then settle it in the store.
    ///
    /// The call must end while the lease holds: once it lapses, any worker
    /// (this one included) claims the batch again, and two sends of one batch
    /// could both succeed. The client bounds each HTTP attempt, but not a
    /// credential renewal plus a second attempt, so the lease bounds the whole.
    async fn send(&self, batch: ClaimedBatch) {
        tracing::debug!(
            batch_id = batch.id,
            partition = %batch.partition,
            images = batch.images.len(),
            attempt = batch.attempt,
            owner = %batch.owner,
            "claimed batch"
        );
        let started = Instant::now();
        let budget = self.send_budget(&batch);
        let outcome = match tokio::time::timeout(
            budget,
            self.sender.batch_scan(&batch.partition, &batch.images),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => ScanOutcome::Retryable {
                status: None,
                reason: format!(
                    "no answer within {} ms, before the batch's lease ends; abandoned so it is not sent twice at once",
                    budget.as_millis()
                ),
                retry_after: None,
                request_id: None,
            },
        };
        let elapsed = started.elapsed();
        let status = match &outcome {
            ScanOutcome::Accepted { status, .. } => Some(*status),
            ScanOutcome::Retryable { status, .. } | ScanOutcome::Permanent { status, .. } => {
                *status
            }
        };
        let api = self.sender.api().as_str();
        self.metrics.record_hss_request(api, status, elapsed);

        // The fields every outcome's log line carries, then the outcome's own.
        macro_rules! batch_event {
            ($level:ident, $request_id:expr, $($outcome_fields:tt)*) => {
                tracing::$level!(
                    batch_id = batch.id,
                    partition = %batch.partition,
                    images = batch.images.len(),
                    attempt = batch.attempt,
                    status,
                    hss_request_id = $request_id.as_deref().unwrap_or(""),
                    duration_ms = elapsed.as_millis() as u64,
                    $($outcome_fields)*
                )
            };
        }

        let settled = match &outcome {
            ScanOutcome::Accepted {
                status: hss_status,
                request_id,
            } => {
                batch_event!(info, request_id, "batch accepted by HSS");
                self.metrics.batches.with_label_values(&["accepted"]).inc();
                self.metrics
                    .batch_size
                    .with_label_values(&[batch.partition.image_type.as_str()])
                    .observe(batch.images.len() as f64);
                let receipt = ScanReceipt {
                    api,
                    hss_status: *hss_status,
                    hss_request_id: request_id.clone(),
                };
                self.store
                    .complete(&batch, &receipt, self.clock.now_ms())
                    .await
                    .map_err(|e| ("complete", e))
            }
            ScanOutcome::Retryable {
                reason,
                retry_after,
                request_id,
                ..
            } => {
                let delay = self.backoff.delay(batch.attempt, *retry_after);
                batch_event!(
                    warn,
                    request_id,
                    retry_in_ms = delay.as_millis() as u64,
                    reason = %reason,
                    "batch will be retried"
                );
                self.metrics.batches.with_label_values(&["retry"]).inc();
                self.metrics.retries.inc();
                let now = self.clock.now_ms();
                let not_before = now + delay.as_millis() as Millis;
                let cause = RetryCause {
                    hss_status: status,
                    hss_request_id: request_id.clone(),
                    reason: reason.clone(),
                };
                self.store
                    .release_for_retry(&batch, not_before, &cause, now)
                    .await
                    .map_err(|e| ("release_for_retry", e))
            }
            ScanOutcome::Permanent {
                error_code,
                error_msg,
                request_id,
                ..
            } => {
                batch_event!(
                    error,
                    request_id,
                    error_code = error_code.as_deref().unwrap_or(""),
                    error_msg = %error_msg,
                    "batch refused by HSS; moved to dead letters"
                );
                self.metrics
                    .batches
                    .with_label_values(&["dead_letter"])
                    .inc();
                self.metrics
                    .dead_lettered_images
                    .inc_by(batch.images.len() as u64);
                let cause = DeadLetterCause {
                    http_status: status,
                    error_code: error_code.clone(),
                    error_msg: error_msg.clone(),
                    request_id: request_id.clone(),
                };
                self.store
                    .dead_letter(&batch, &cause, self.clock.now_ms())
                    .await
                    .map_err(|e| ("dead_letter", e))
            }
        };
        if let Err((operation, error)) = settled {
            // The lease will lapse and the batch will be sent again: at least once.
            self.store_error(operation, &error);
        }
        // The queue changed (a retry time was set, a partition emptied): the
        // loop's current sleep may be too long now.
        self.handle.wake();
    }

    /// How long a send of `batch` may take: until its lease ends, less a
    /// margin to settle the outcome in the store while the lease still holds.
    fn send_budget(&self, batch: &ClaimedBatch) -> Duration {
        lease_budget(self.policy.lease_ms, batch.lease_until, self.clock.now_ms())
    }

    fn store_error(&self, operation: &str, error: &crate::store::StoreError) {
        self.metrics
            .store_errors
            .with_label_values(&[operation])
            .inc();
        tracing::error!(operation, error = %error, "store operation failed in the batcher");
    }
}

#[cfg(test)]
mod tests;
