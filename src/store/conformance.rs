//! The executable contract of [`Store`]: every backend runs this suite against
//! fresh, empty stores (`make` must give a new one each call). Public behind the
//! `test-support` feature so that the PostgreSQL integration tests run it too;
//! never part of a release build.

use std::future::Future;

use super::{
    BatchPolicy, DeadLetterCause, DeliveryKey, EnqueueCounts, Enqueued, RetryCause, ScanReceipt,
    Store,
};
use crate::domain::{ImageRef, ImageType, Partition, ScanTarget};

pub mod digests;
pub mod history;

const T0: i64 = 1_800_000_000_000;

pub const POLICY: BatchPolicy = BatchPolicy {
    window_ms: 2_000,
    max_images: 3,
    lease_ms: 30_000,
};

pub fn partition(instance: &str) -> Partition {
    Partition {
        image_type: ImageType::InstanceImage,
        instance_id: Some(instance.to_string()),
        enterprise_project_id: Some("0".to_string()),
    }
}

/// HSS's answer to a batch, as tests settle batches with it.
pub fn receipt() -> ScanReceipt {
    ScanReceipt {
        api: "batch-scan",
        hss_status: 200,
        hss_request_id: Some("hss-req-1".to_string()),
    }
}

pub fn target(instance: &str, name: &str, tag: &str) -> ScanTarget {
    ScanTarget {
        partition: partition(instance),
        image: ImageRef::new("team-a", name, tag),
        instance_url: Some("ee.example.com".to_string()),
        digest: None,
    }
}

fn stored(accepted: usize, duplicates: usize) -> Enqueued {
    Enqueued::Stored(EnqueueCounts {
        accepted,
        duplicates,
    })
}

/// Runs every check, each on its own fresh store.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    duplicates_are_counted_not_stored(make().await).await;
    delivery_ids_are_remembered(make().await).await;
    partition_waits_for_its_window(make().await).await;
    full_partition_is_due_at_once(make().await).await;
    partitions_travel_separately(make().await).await;
    repush_during_flight_scans_again(make().await).await;
    retry_keeps_the_batch_and_waits(make().await).await;
    expired_lease_is_taken_over(make().await).await;
    dead_letters_keep_the_cause_and_can_be_retried(make().await).await;
    stats_and_listings_reflect_the_queue(make().await).await;
    old_deliveries_are_pruned(make().await).await;
    history::run_all(&make).await;
    digests::digests_wait_once_and_are_leased(make().await).await;
    digests::a_resolved_digest_becomes_pending_images_with_its_digest(make().await).await;
    digests::an_untagged_digest_is_asked_again_later(make().await).await;
    digests::a_refused_digest_is_a_dead_letter_that_retries_its_resolution(make().await).await;
    digests::a_redelivery_stores_no_digest(make().await).await;
    digests::digests_survive_batches_and_dead_letters(make().await).await;
}

async fn enqueue<S: Store>(store: &S, targets: &[ScanTarget], now: i64) -> Enqueued {
    store.migrate().await.expect("migrate");
    store.enqueue(None, targets, now).await.expect("enqueue")
}

pub async fn duplicates_are_counted_not_stored<S: Store>(store: S) {
    let first = enqueue(
        &store,
        &[target("i1", "api", "v1"), target("i1", "api", "v2")],
        T0,
    )
    .await;
    assert_eq!(first, stored(2, 0));
    let again = enqueue(
        &store,
        &[target("i1", "api", "v1"), target("i1", "web", "v1")],
        T0 + 10,
    )
    .await;
    assert_eq!(again, stored(1, 1));
    // Same image in one webhook twice: the second is a duplicate.
    let twice = enqueue(
        &store,
        &[target("i1", "db", "1"), target("i1", "db", "1")],
        T0 + 20,
    )
    .await;
    assert_eq!(twice, stored(1, 1));
    assert_eq!(store.stats().await.expect("stats").pending_images, 4);
}

pub async fn delivery_ids_are_remembered<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    let key = DeliveryKey {
        source: "swr-ee".into(),
        id: "msg_1".into(),
    };
    let first = store
        .enqueue(Some(&key), &[target("i1", "api", "v1")], T0)
        .await;
    assert_eq!(first.expect("enqueue"), stored(1, 0));
    let replay = store
        .enqueue(Some(&key), &[target("i1", "api", "v9")], T0 + 1)
        .await;
    assert_eq!(replay.expect("enqueue"), Enqueued::DuplicateDelivery);
    // The replay stored nothing.
    assert_eq!(store.stats().await.expect("stats").pending_images, 1);
    // Ids are scoped by source.
    let other = DeliveryKey {
        source: "harbor".into(),
        id: "msg_1".into(),
    };
    let elsewhere = store.enqueue(Some(&other), &[], T0 + 2).await;
    assert_eq!(elsewhere.expect("enqueue"), stored(0, 0));
}

pub async fn partition_waits_for_its_window<S: Store>(store: S) {
    enqueue(&store, &[target("i1", "api", "v1")], T0).await;
    enqueue(&store, &[target("i1", "api", "v2")], T0 + 500).await;
    assert_eq!(
        store.next_due(T0 + 600, &POLICY).await.expect("next_due"),
        Some(T0 + 2_000)
    );
    let early = store
        .claim_batch("w1", T0 + 1_999, &POLICY)
        .await
        .expect("claim");
    assert_eq!(
        early, None,
        "nothing is due before the oldest image waited a window"
    );
    let batch = store
        .claim_batch("w1", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("a batch once the window passed");
    assert_eq!(batch.partition, partition("i1"));
    assert_eq!(batch.attempt, 1);
    assert_eq!(batch.owner, "w1");
    assert_eq!(batch.lease_until, T0 + 2_000 + POLICY.lease_ms);
    let tags: Vec<&str> = batch.images.iter().map(|i| i.image.tag.as_str()).collect();
    assert_eq!(tags, ["v1", "v2"]);
    assert_eq!(
        batch.images[0].instance_url.as_deref(),
        Some("ee.example.com")
    );
    // The in-flight batch is not due again before its lease ends.
    assert_eq!(
        store
            .claim_batch("w2", T0 + 2_001, &POLICY)
            .await
            .expect("claim"),
        None
    );
    assert_eq!(
        store.next_due(T0 + 2_001, &POLICY).await.expect("next_due"),
        Some(batch.lease_until)
    );
    store
        .complete(&batch, &receipt(), T0)
        .await
        .expect("complete");
    assert_eq!(
        store.next_due(T0 + 2_002, &POLICY).await.expect("next_due"),
        None
    );
    assert_eq!(store.stats().await.expect("stats").pending_images, 0);
}

pub async fn full_partition_is_due_at_once<S: Store>(store: S) {
    let targets: Vec<ScanTarget> = (0..7)
        .map(|i| target("i1", "api", &format!("v{i}")))
        .collect();
    enqueue(&store, &targets, T0).await;
    assert_eq!(
        store
            .next_due(T0, &POLICY)
            .await
            .expect("next_due")
            .map(|due| due <= T0),
        Some(true)
    );
    let first = store
        .claim_batch("w1", T0, &POLICY)
        .await
        .expect("claim")
        .expect("full batch");
    let second = store
        .claim_batch("w1", T0, &POLICY)
        .await
        .expect("claim")
        .expect("full batch");
    assert_eq!(first.images.len(), 3);
    assert_eq!(second.images.len(), 3);
    // One image left: it waits for its window.
    assert_eq!(
        store
            .claim_batch("w1", T0 + 1, &POLICY)
            .await
            .expect("claim"),
        None
    );
    let last = store
        .claim_batch("w1", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("rest");
    assert_eq!(last.images.len(), 1);
    let mut all: Vec<String> = [&first, &second, &last]
        .iter()
        .flat_map(|b| b.images.iter().map(|i| i.image.tag.clone()))
        .collect();
    all.sort();
    assert_eq!(
        all,
        ["v0", "v1", "v2", "v3", "v4", "v5", "v6"],
        "oldest first, none twice"
    );
    let ids = [first.id, second.id, last.id];
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
}

pub async fn partitions_travel_separately<S: Store>(store: S) {
    enqueue(
        &store,
        &[target("i1", "api", "v1"), target("i2", "api", "v1")],
        T0,
    )
    .await;
    let mut private = target("i1", "api", "v1");
    private.partition = Partition {
        image_type: ImageType::PrivateImage,
        instance_id: None,
        enterprise_project_id: None,
    };
    private.instance_url = None;
    assert_eq!(enqueue(&store, &[private.clone()], T0).await, stored(1, 0));
    let mut seen = Vec::new();
    while let Some(batch) = store
        .claim_batch("w1", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
    {
        assert_eq!(batch.images.len(), 1);
        seen.push(batch.partition.clone());
        store
            .complete(&batch, &receipt(), T0)
            .await
            .expect("complete");
    }
    seen.sort();
    let mut expected = vec![partition("i1"), partition("i2"), private.partition];
    expected.sort();
    assert_eq!(seen, expected);
}

pub async fn repush_during_flight_scans_again<S: Store>(store: S) {
    enqueue(&store, &[target("i1", "api", "v1")], T0).await;
    let flying = store
        .claim_batch("w1", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("batch");
    // Pushed again while its batch is in flight: a new row, not a duplicate.
    assert_eq!(
        enqueue(&store, &[target("i1", "api", "v1")], T0 + 2_100).await,
        stored(1, 0)
    );
    // A third push is a duplicate of the second, still unbatched.
    assert_eq!(
        enqueue(&store, &[target("i1", "api", "v1")], T0 + 2_200).await,
        stored(0, 1)
    );
    store
        .complete(&flying, &receipt(), T0)
        .await
        .expect("complete");
    let again = store
        .claim_batch("w1", T0 + 4_100, &POLICY)
        .await
        .expect("claim")
        .expect("rescan");
    assert_eq!(again.images.len(), 1);
    assert_eq!(again.images[0].image.tag, "v1");
    store
        .complete(&again, &receipt(), T0)
        .await
        .expect("complete");
    assert_eq!(store.stats().await.expect("stats").pending_images, 0);
}

pub async fn retry_keeps_the_batch_and_waits<S: Store>(store: S) {
    enqueue(
        &store,
        &[target("i1", "api", "v1"), target("i1", "api", "v2")],
        T0,
    )
    .await;
    let batch = store
        .claim_batch("w1", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("batch");
    // A stranger cannot release what it does not own.
    let mut stranger = batch.clone();
    stranger.owner = "w9".into();
    store
        .release_for_retry(&stranger, T0 + 2_500, &RetryCause::reason("nope"), T0)
        .await
        .expect("release");
    assert_eq!(
        store
            .claim_batch("w2", T0 + 3_000, &POLICY)
            .await
            .expect("claim"),
        None
    );

    store
        .release_for_retry(&batch, T0 + 5_000, &RetryCause::reason("HTTP 503"), T0)
        .await
        .expect("release");
    assert_eq!(
        store.next_due(T0 + 2_001, &POLICY).await.expect("next_due"),
        Some(T0 + 5_000)
    );
    assert_eq!(
        store
            .claim_batch("w1", T0 + 4_999, &POLICY)
            .await
            .expect("claim"),
        None
    );
    // New pushes meanwhile do not join the waiting batch.
    enqueue(&store, &[target("i1", "api", "v3")], T0 + 3_000).await;
    let retried = store
        .claim_batch("w2", T0 + 5_000, &POLICY)
        .await
        .expect("claim")
        .expect("retry");
    assert_eq!(retried.id, batch.id);
    assert_eq!(retried.attempt, 2);
    assert_eq!(retried.owner, "w2");
    assert_eq!(retried.images, batch.images);
    store
        .complete(&retried, &receipt(), T0)
        .await
        .expect("complete");
    let fresh = store
        .claim_batch("w1", T0 + 5_000, &POLICY)
        .await
        .expect("claim")
        .expect("v3");
    assert_eq!(fresh.images.len(), 1);
    assert_eq!(fresh.attempt, 1);
}

pub async fn expired_lease_is_taken_over<S: Store>(store: S) {
    enqueue(&store, &[target("i1", "api", "v1")], T0).await;
    let lost = store
        .claim_batch("dead-worker", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("batch");
    let before_expiry = lost.lease_until - 1;
    assert_eq!(
        store
            .claim_batch("w2", before_expiry, &POLICY)
            .await
            .expect("claim"),
        None
    );
    let taken = store
        .claim_batch("w2", lost.lease_until, &POLICY)
        .await
        .expect("claim")
        .expect("taken over after the lease");
    assert_eq!(taken.id, lost.id);
    assert_eq!(taken.owner, "w2");
    assert_eq!(taken.attempt, 2);
    assert_eq!(taken.images, lost.images);
    // The late original owner can no longer push it back into the queue.
    store
        .release_for_retry(
            &lost,
            lost.lease_until + 10,
            &RetryCause::reason("late"),
            T0,
        )
        .await
        .expect("release");
    assert_eq!(
        store
            .claim_batch("w3", lost.lease_until + 20, &POLICY)
            .await
            .expect("claim"),
        None
    );
    store
        .complete(&taken, &receipt(), T0)
        .await
        .expect("complete");
    assert_eq!(store.stats().await.expect("stats").pending_images, 0);
}

pub async fn dead_letters_keep_the_cause_and_can_be_retried<S: Store>(store: S) {
    enqueue(
        &store,
        &[target("i1", "api", "v1"), target("i1", "api", "v2")],
        T0,
    )
    .await;
    let batch = store
        .claim_batch("w1", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("batch");
    let cause = DeadLetterCause {
        http_status: Some(400),
        error_code: Some("HSS.1001".into()),
        error_msg: "invalid image_info_list".into(),
        request_id: Some("req-42".into()),
    };
    store
        .dead_letter(&batch, &cause, T0 + 2_100)
        .await
        .expect("dead letter");
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.pending_images, 0);
    assert_eq!(stats.dead_letters, 1);
    assert_eq!(
        store
            .claim_batch("w1", T0 + 10_000, &POLICY)
            .await
            .expect("claim"),
        None
    );

    let letters = store.dead_letters(10).await.expect("list");
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.cause, cause);
    assert_eq!(letter.partition, partition("i1"));
    assert_eq!(letter.images, batch.images);
    assert_eq!(letter.attempts, 1);
    assert_eq!(letter.failed_at, T0 + 2_100);

    assert_eq!(
        store
            .retry_dead_letter(letter.id + 1_000, T0)
            .await
            .expect("retry"),
        None
    );
    let counts = store
        .retry_dead_letter(letter.id, T0 + 3_000)
        .await
        .expect("retry");
    assert_eq!(
        counts,
        Some(EnqueueCounts {
            accepted: 2,
            duplicates: 0
        })
    );
    assert!(store.dead_letters(10).await.expect("list").is_empty());
    let requeued = store
        .claim_batch("w1", T0 + 5_000, &POLICY)
        .await
        .expect("claim")
        .expect("batch");
    assert_eq!(requeued.images.len(), 2);
    assert_eq!(requeued.attempt, 1);
}

pub async fn stats_and_listings_reflect_the_queue<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    // Migrations are idempotent.
    store.migrate().await.expect("second migrate");
    store.ping().await.expect("ping");
    assert_eq!(store.stats().await.expect("stats"), Default::default());
    enqueue(&store, &[target("i1", "api", "v1")], T0).await;
    enqueue(&store, &[target("i1", "api", "v2")], T0 + 100).await;
    let batch = store
        .claim_batch("w1", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("batch");
    enqueue(&store, &[target("i1", "api", "v3")], T0 + 2_500).await;
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.pending_images, 3);
    assert_eq!(stats.oldest_enqueued_at, Some(T0));
    assert_eq!(stats.batches_in_flight, 1);
    let pending = store.pending(10).await.expect("pending");
    let tags: Vec<&str> = pending.iter().map(|p| p.image.tag.as_str()).collect();
    assert_eq!(tags, ["v1", "v2", "v3"]);
    assert_eq!(pending[0].batch_id, Some(batch.id));
    assert_eq!(pending[2].batch_id, None);
    assert_eq!(pending[2].enqueued_at, T0 + 2_500);
    assert_eq!(store.pending(1).await.expect("pending").len(), 1);
}

pub async fn old_deliveries_are_pruned<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    let key = |id: &str| DeliveryKey {
        source: "s".into(),
        id: id.into(),
    };
    store
        .enqueue(Some(&key("old")), &[], T0)
        .await
        .expect("enqueue");
    store
        .enqueue(Some(&key("new")), &[], T0 + 1_000)
        .await
        .expect("enqueue");
    assert_eq!(store.prune_deliveries(T0 + 500).await.expect("prune"), 1);
    assert_eq!(
        store
            .enqueue(Some(&key("old")), &[], T0 + 2_000)
            .await
            .expect("enqueue"),
        stored(0, 0),
        "a pruned id is new again"
    );
    assert_eq!(
        store
            .enqueue(Some(&key("new")), &[], T0 + 2_000)
            .await
            .expect("enqueue"),
        Enqueued::DuplicateDelivery
    );
}
