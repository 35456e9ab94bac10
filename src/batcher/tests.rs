//! Batcher behaviour under tokio's paused clock: windows, size limits, retries
//! and dead letters, with a scripted HSS and the in-memory store.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::*;
use crate::config::raw::RawBatch;
use crate::domain::{ImageRef, ImageType, Partition, ScanTarget};
use crate::store::{
    BatchImage, DeadLetterCause, DeliveryKey, EnqueueCounts, Enqueued, MemoryStore, StoreError,
    StoreStats,
};

const T0: Millis = 1_800_000_000_000;

/// An HSS stand-in: answers from a script (then `Accepted`), records each call
/// with the paused-clock time it arrived.
#[derive(Default)]
struct ScriptedHss {
    script: Mutex<VecDeque<ScanOutcome>>,
    calls: Mutex<Vec<(tokio::time::Instant, Partition, Vec<BatchImage>)>>,
}

impl ScriptedHss {
    fn answering(outcomes: Vec<ScanOutcome>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(outcomes.into()),
            calls: Mutex::default(),
        })
    }

    fn calls(&self) -> Vec<(tokio::time::Instant, Partition, Vec<BatchImage>)> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl ScanSender for ScriptedHss {
    async fn batch_scan(&self, partition: &Partition, images: &[BatchImage]) -> ScanOutcome {
        self.calls.lock().unwrap().push((
            tokio::time::Instant::now(),
            partition.clone(),
            images.to_vec(),
        ));
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(ScanOutcome::Accepted {
                status: 200,
                request_id: None,
            })
    }
}

/// Counts how often the batcher asks the store for its next deadline.
struct CountingStore {
    inner: MemoryStore,
    next_due_calls: AtomicUsize,
}

/// The digest queue is not what these tests count: straight through.
#[async_trait]
impl crate::store::DigestQueue for CountingStore {
    async fn enqueue_digests(
        &self,
        delivery: Option<&DeliveryKey>,
        digests: &[crate::store::UnresolvedDigest],
        now: Millis,
    ) -> Result<Enqueued, StoreError> {
        self.inner.enqueue_digests(delivery, digests, now).await
    }
    async fn claim_digest(
        &self,
        owner: &str,
        now: Millis,
        lease_ms: Millis,
    ) -> Result<Option<crate::store::ClaimedDigest>, StoreError> {
        self.inner.claim_digest(owner, now, lease_ms).await
    }
    async fn next_digest_due(&self) -> Result<Option<Millis>, StoreError> {
        self.inner.next_digest_due().await
    }
    async fn settle_digest(
        &self,
        claimed: &crate::store::ClaimedDigest,
        settlement: crate::store::DigestSettlement,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.inner.settle_digest(claimed, settlement, now).await
    }
    async fn waiting_digests(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::store::WaitingDigest>, StoreError> {
        self.inner.waiting_digests(limit).await
    }
    async fn digests_resolving(&self) -> Result<u64, StoreError> {
        self.inner.digests_resolving().await
    }
}

#[async_trait]
impl crate::store::PollStateStore for CountingStore {
    async fn take_poll_lease(
        &self,
        source: &str,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<bool, StoreError> {
        self.inner.take_poll_lease(source, owner, now, until).await
    }
    async fn release_poll_lease(&self, source: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release_poll_lease(source, owner).await
    }
    async fn poll_watermark(
        &self,
        source: &str,
        scope: &str,
    ) -> Result<Option<Millis>, StoreError> {
        self.inner.poll_watermark(source, scope).await
    }
    async fn raise_poll_watermark(
        &self,
        source: &str,
        scope: &str,
        watermark: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.inner
            .raise_poll_watermark(source, scope, watermark, now)
            .await
    }
    async fn seen_tags(
        &self,
        repository: &crate::store::poll_state::PolledRepository,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        self.inner.seen_tags(repository).await
    }
    async fn record_seen_tags(
        &self,
        repository: &crate::store::poll_state::PolledRepository,
        tags: &[crate::store::poll_state::SeenTag],
        now: Millis,
    ) -> Result<(), StoreError> {
        self.inner.record_seen_tags(repository, tags, now).await
    }
    async fn repository_read(
        &self,
        repository: &crate::store::poll_state::PolledRepository,
    ) -> Result<Option<crate::store::poll_state::RepositoryRead>, StoreError> {
        self.inner.repository_read(repository).await
    }
    async fn record_repository_read(
        &self,
        repository: &crate::store::poll_state::PolledRepository,
        read: &crate::store::poll_state::RepositoryRead,
    ) -> Result<(), StoreError> {
        self.inner.record_repository_read(repository, read).await
    }
}

#[async_trait]
impl Store for CountingStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.migrate().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn enqueue_arrival(
        &self,
        arrival: &crate::store::Arrival<'_>,
        now: Millis,
    ) -> Result<Enqueued, StoreError> {
        self.inner.enqueue_arrival(arrival, now).await
    }
    async fn claim_batch(
        &self,
        owner: &str,
        now: Millis,
        policy: &BatchPolicy,
    ) -> Result<Option<ClaimedBatch>, StoreError> {
        self.inner.claim_batch(owner, now, policy).await
    }
    async fn next_due(
        &self,
        now: Millis,
        policy: &BatchPolicy,
    ) -> Result<Option<Millis>, StoreError> {
        self.next_due_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.next_due(now, policy).await
    }
    async fn complete(
        &self,
        batch: &ClaimedBatch,
        receipt: &crate::store::ScanReceipt,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.inner.complete(batch, receipt, now).await
    }
    async fn release_for_retry(
        &self,
        batch: &ClaimedBatch,
        not_before: Millis,
        cause: &crate::store::RetryCause,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.inner
            .release_for_retry(batch, not_before, cause, now)
            .await
    }
    async fn dead_letter(
        &self,
        batch: &ClaimedBatch,
        cause: &DeadLetterCause,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.inner.dead_letter(batch, cause, now).await
    }
    async fn pending(&self, limit: usize) -> Result<Vec<crate::store::PendingImage>, StoreError> {
        self.inner.pending(limit).await
    }
    async fn dead_letters(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::store::DeadLetter>, StoreError> {
        self.inner.dead_letters(limit).await
    }
    async fn retry_dead_letter(
        &self,
        id: i64,
        now: Millis,
    ) -> Result<Option<EnqueueCounts>, StoreError> {
        self.inner.retry_dead_letter(id, now).await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.stats().await
    }
    async fn prune_deliveries(&self, cutoff: Millis) -> Result<u64, StoreError> {
        self.inner.prune_deliveries(cutoff).await
    }
    async fn history(
        &self,
        subject: &crate::store::HistorySubject,
        limit: usize,
    ) -> Result<Vec<crate::store::HistoryEvent>, StoreError> {
        self.inner.history(subject, limit).await
    }
    async fn prune_history(&self, cutoff: Millis) -> Result<u64, StoreError> {
        self.inner.prune_history(cutoff).await
    }
}

struct Harness {
    store: Arc<CountingStore>,
    hss: Arc<ScriptedHss>,
    clock: Clock,
    handle: BatcherHandle,
    stop: watch::Sender<bool>,
    started: tokio::time::Instant,
}

const POLICY: BatchPolicy = BatchPolicy {
    window_ms: 2_000,
    max_images: 100,
    lease_ms: 60_000,
};

/// `[batch]` as `POLICY` and a 1 s … 60 s backoff, with `max_images`.
fn batch_settings(max_images: usize) -> BatchSettings {
    BatchSettings::parse(&RawBatch {
        window_ms: POLICY.window_ms.unsigned_abs(),
        max_images,
        retry_base_ms: 1_000,
        retry_max_ms: 60_000,
        ..RawBatch::default()
    })
    .expect("valid [batch]")
}

fn lease() -> PositiveMillis {
    PositiveMillis::new(POLICY.lease_ms.unsigned_abs()).expect("positive lease")
}

fn start(hss: Arc<ScriptedHss>) -> Harness {
    let store = Arc::new(CountingStore {
        inner: MemoryStore::new(),
        next_due_calls: AtomicUsize::new(0),
    });
    let clock = Clock::starting_at(T0);
    let batcher = Arc::new(Batcher::new(
        store.clone(),
        hss.clone(),
        &batch_settings(POLICY.max_images),
        lease(),
        clock,
        "test-worker".into(),
        Metrics::new().unwrap(),
    ));
    let handle = batcher.handle();
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(batcher.run(stop_rx));
    Harness {
        store,
        hss,
        clock,
        handle,
        stop,
        started: tokio::time::Instant::now(),
    }
}

fn target(instance: &str, tag: &str) -> ScanTarget {
    ScanTarget {
        partition: Partition {
            image_type: ImageType::InstanceImage,
            instance_id: Some(instance.into()),
            enterprise_project_id: None,
        },
        image: ImageRef::new("team-a", "api", tag),
        instance_url: Some("ee.example.com".into()),
        digest: None,
    }
}

impl Harness {
    async fn push(&self, targets: &[ScanTarget]) {
        self.store
            .enqueue(None, targets, self.clock.now_ms())
            .await
            .unwrap();
        self.handle.wake();
    }

    /// Milliseconds after start at which each HSS call arrived.
    fn call_times(&self) -> Vec<u128> {
        self.hss
            .calls()
            .iter()
            .map(|(at, _, _)| (*at - self.started).as_millis())
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_window_of_pushes_leaves_as_one_request_when_the_oldest_has_waited() {
    let h = start(ScriptedHss::answering(vec![]));
    h.push(&[target("i1", "v1")]).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    h.push(&[target("i1", "v2"), target("i1", "v3")]).await;
    tokio::time::sleep(Duration::from_millis(499)).await;
    assert!(h.hss.calls().is_empty(), "sent before the window ended");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let calls = h.hss.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].2.len(), 3);
    assert_eq!(h.call_times(), vec![2_000]);
    assert_eq!(h.store.stats().await.unwrap().pending_images, 0);
    h.stop.send(true).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_full_partition_leaves_at_once_and_partitions_travel_apart() {
    let h = start(ScriptedHss::answering(vec![]));
    let full: Vec<ScanTarget> = (0..100).map(|i| target("i1", &format!("v{i}"))).collect();
    h.push(&full).await;
    h.push(&[target("i2", "v1")]).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(h.call_times(), vec![0], "the full partition did not wait");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let calls = h.hss.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].2.len(), 100);
    assert_eq!(calls[1].1.instance_id.as_deref(), Some("i2"));
    h.stop.send(true).unwrap();
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_back_off_and_then_deliver() {
    let unavailable = || ScanOutcome::Retryable {
        status: Some(503),
        reason: "HTTP 503".into(),
        retry_after: None,
        request_id: None,
    };
    let h = start(ScriptedHss::answering(vec![unavailable(), unavailable()]));
    h.push(&[target("i1", "v1")]).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let times = h.call_times();
    assert_eq!(times.len(), 3, "two failures then success: {times:?}");
    // Full jitter: first retry within 1 s, second within 2 s of the failure.
    assert!(times[1] - times[0] <= 1_000, "{times:?}");
    assert!(times[2] - times[1] <= 2_000, "{times:?}");
    let stats = h.store.stats().await.unwrap();
    assert_eq!(stats.pending_images, 0);
    assert_eq!(stats.dead_letters, 0);
    h.stop.send(true).unwrap();
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let h = start(ScriptedHss::answering(vec![ScanOutcome::Retryable {
        status: Some(429),
        reason: "HTTP 429 APIG.0308".into(),
        retry_after: Some(Duration::from_secs(30)),
        request_id: Some("r1".into()),
    }]));
    h.push(&[target("i1", "v1")]).await;
    tokio::time::sleep(Duration::from_millis(31_900)).await;
    assert_eq!(h.hss.calls().len(), 1, "retried before Retry-After");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // Retry-After, then up to one backoff ceiling (1 s) of jitter.
    let times = h.call_times();
    assert_eq!(times.len(), 2, "{times:?}");
    assert_eq!(times[0], 2_000);
    assert!((32_000..=33_000).contains(&times[1]), "{times:?}");
    h.stop.send(true).unwrap();
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_become_dead_letters_without_retry() {
    let h = start(ScriptedHss::answering(vec![ScanOutcome::Permanent {
        status: Some(400),
        error_code: Some("HSS.0004".into()),
        error_msg: "bad image_info_list".into(),
        request_id: Some("req-9".into()),
    }]));
    h.push(&[target("i1", "v1"), target("i1", "v2")]).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(h.hss.calls().len(), 1);
    let letters = h.store.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].images.len(), 2);
    assert_eq!(letters[0].cause.error_code.as_deref(), Some("HSS.0004"));
    assert_eq!(letters[0].cause.request_id.as_deref(), Some("req-9"));
    assert_eq!(letters[0].cause.http_status, Some(400));
    h.stop.send(true).unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_idle_batcher_sleeps_instead_of_polling() {
    let h = start(ScriptedHss::answering(vec![]));
    tokio::time::sleep(Duration::from_secs(60)).await;
    // Idle: one look per window at most (other replicas may have enqueued).
    let looks = h.store.next_due_calls.load(Ordering::SeqCst);
    assert!(looks <= 31, "{looks} store reads in 60 s idle");
    h.stop.send(true).unwrap();
}

#[tokio::test(start_paused = true)]
async fn drain_sends_what_is_due_and_leaves_the_rest() {
    let hss = ScriptedHss::answering(vec![]);
    let store = Arc::new(MemoryStore::new());
    let clock = Clock::starting_at(T0);
    let batcher = Batcher::new(
        store.clone(),
        hss.clone(),
        &batch_settings(POLICY.max_images),
        lease(),
        clock,
        "drainer".into(),
        Metrics::new().unwrap(),
    );
    store
        .enqueue(None, &[target("i1", "old")], T0)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    store
        .enqueue(None, &[target("i2", "new")], clock.now_ms())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    assert_eq!(batcher.drain(POLICY, deadline).await, 1);
    assert_eq!(store.stats().await.unwrap().pending_images, 1);
    // A flush sends everything regardless of windows.
    assert_eq!(batcher.drain(POLICY.flush_now(), deadline).await, 1);
    assert_eq!(store.stats().await.unwrap().pending_images, 0);
    assert_eq!(hss.calls().len(), 2);
}

/// Hangs on its first call (as a credential renewal plus a second attempt
/// can), answers at once afterwards; counts the calls that ran to the end.
#[derive(Default)]
struct HangsOnce {
    calls: Mutex<Vec<tokio::time::Instant>>,
    completed: AtomicUsize,
}

#[async_trait]
impl ScanSender for HangsOnce {
    async fn batch_scan(&self, _partition: &Partition, _images: &[BatchImage]) -> ScanOutcome {
        let first = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(tokio::time::Instant::now());
            calls.len() == 1
        };
        if first {
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        self.completed.fetch_add(1, Ordering::SeqCst);
        ScanOutcome::Accepted {
            status: 200,
            request_id: None,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_send_is_abandoned_before_its_lease_ends_so_it_never_runs_twice() {
    let hss = Arc::new(HangsOnce::default());
    let store = Arc::new(MemoryStore::new());
    let clock = Clock::starting_at(T0);
    let batcher = Arc::new(Batcher::new(
        store.clone(),
        hss.clone(),
        &batch_settings(POLICY.max_images),
        lease(),
        clock,
        "test-worker".into(),
        Metrics::new().unwrap(),
    ));
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(batcher.run(stop_rx));
    let started = tokio::time::Instant::now();
    store
        .enqueue(None, &[target("i1", "v1")], clock.now_ms())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(700)).await;

    let calls: Vec<u128> = hss
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|at| (*at - started).as_millis())
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0], 2_000);
    // Abandoned a second before the 60 s lease ends, retried within 1 s of jitter.
    assert!((61_000..=62_000).contains(&calls[1]), "{calls:?}");
    assert_eq!(hss.completed.load(Ordering::SeqCst), 1, "accepted twice");
    assert_eq!(store.stats().await.unwrap().pending_images, 0);
    stop.send(true).unwrap();
}

/// An HSS that takes a minute to answer anything.
struct HangingHss {
    calls: AtomicUsize,
}

#[async_trait]
impl ScanSender for HangingHss {
    async fn batch_scan(&self, _partition: &Partition, _images: &[BatchImage]) -> ScanOutcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        ScanOutcome::Accepted {
            status: 200,
            request_id: None,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_run_loop_stops_at_once_while_every_send_slot_waits_for_hss() {
    let hss = Arc::new(HangingHss {
        calls: AtomicUsize::new(0),
    });
    let store = Arc::new(MemoryStore::new());
    let policy = BatchPolicy {
        max_images: 1,
        ..POLICY
    };
    let batcher = Arc::new(Batcher::new(
        store.clone(),
        hss.clone(),
        &batch_settings(policy.max_images),
        lease(),
        Clock::starting_at(T0),
        "busy".into(),
        Metrics::new().unwrap(),
    ));
    let targets: Vec<ScanTarget> = (0..MAX_IN_FLIGHT + 2)
        .map(|i| target("i1", &format!("v{i}")))
        .collect();
    store.enqueue(None, &targets, T0).await.unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let run = tokio::spawn(Arc::clone(&batcher).run(stop_rx));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(hss.calls.load(Ordering::SeqCst), MAX_IN_FLIGHT);

    stop.send(true).unwrap();
    let stopped_at = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(1), run)
        .await
        .expect("the loop waited for an HSS call before stopping")
        .unwrap();
    assert!(stopped_at.elapsed() < Duration::from_millis(10));
    // The images it did not get to are still pending, unclaimed, for the drain.
    assert_eq!(
        store
            .pending(100)
            .await
            .unwrap()
            .iter()
            .filter(|p| p.batch_id.is_none())
            .count(),
        2
    );
}

/// An HSS that takes one second per call.
struct SlowHss {
    calls: AtomicUsize,
}

#[async_trait]
impl ScanSender for SlowHss {
    async fn batch_scan(&self, _partition: &Partition, _images: &[BatchImage]) -> ScanOutcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        ScanOutcome::Accepted {
            status: 200,
            request_id: None,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn drain_sends_side_by_side_up_to_the_in_flight_limit() {
    let hss = Arc::new(SlowHss {
        calls: AtomicUsize::new(0),
    });
    let store = Arc::new(MemoryStore::new());
    let policy = BatchPolicy {
        max_images: 1,
        ..POLICY
    };
    let batcher = Batcher::new(
        store.clone(),
        hss.clone(),
        &batch_settings(policy.max_images),
        lease(),
        Clock::starting_at(T0),
        "drainer".into(),
        Metrics::new().unwrap(),
    );
    let batches = 2 * MAX_IN_FLIGHT;
    let targets: Vec<ScanTarget> = (0..batches)
        .map(|i| target("i1", &format!("v{i}")))
        .collect();
    store.enqueue(None, &targets, T0).await.unwrap();
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(60);
    assert_eq!(batcher.drain(policy, deadline).await, batches);
    // Two rounds of one-second calls, not eight in a row.
    assert_eq!(started.elapsed().as_secs(), 2);
    assert_eq!(hss.calls.load(Ordering::SeqCst), batches);
    assert_eq!(store.stats().await.unwrap().pending_images, 0);
}
