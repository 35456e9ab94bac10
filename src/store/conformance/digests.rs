//! The executable contract of [`DigestQueue`] and of digests carried through
//! the image queue, run by every backend with the rest of the suite.

use super::{POLICY, T0, partition, stored, target};
use crate::domain::{ImageRef, ScanTarget};
use crate::store::{
    DeadLetterCause, DeliveryKey, DigestSettlement, EnqueueCounts, Enqueued, NextAsk, Store,
    UnresolvedDigest,
};

const LEASE_MS: i64 = 30_000;
const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

pub fn unresolved(name: &str, digest: &str) -> UnresolvedDigest {
    UnresolvedDigest {
        source: "swr-ee".into(),
        partition: partition("i1"),
        namespace: "team-a".into(),
        name: name.into(),
        digest: digest.into(),
        instance_url: Some("ee.example.com".into()),
    }
}

fn with_digest(mut target: ScanTarget, digest: &str) -> ScanTarget {
    target.digest = Some(digest.to_string());
    target
}

pub async fn digests_wait_once_and_are_leased<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    let first = store
        .enqueue_digests(
            None,
            &[unresolved("api", DIGEST_A), unresolved("api", DIGEST_A)],
            T0,
        )
        .await
        .expect("enqueue digests");
    assert_eq!(first, stored(1, 1));
    assert_eq!(store.digests_resolving().await.expect("count"), 1);
    assert_eq!(store.next_digest_due().await.expect("due"), Some(T0));
    // Nothing else in the queue changed.
    assert_eq!(store.stats().await.expect("stats").pending_images, 0);

    let claimed = store
        .claim_digest("r1", T0, LEASE_MS)
        .await
        .expect("claim")
        .expect("a digest");
    assert_eq!(claimed.digest, unresolved("api", DIGEST_A));
    assert_eq!(claimed.owner, "r1");
    assert_eq!(claimed.lease_until, T0 + LEASE_MS);
    assert_eq!((claimed.untagged_answers, claimed.failures), (0, 0));
    assert_eq!(claimed.enqueued_at, T0);
    // Leased: nobody else gets it until the lease ends.
    assert_eq!(
        store
            .claim_digest("r2", T0 + 1, LEASE_MS)
            .await
            .expect("claim"),
        None
    );
    assert_eq!(
        store.next_digest_due().await.expect("due"),
        Some(T0 + LEASE_MS)
    );
    let taken_over = store
        .claim_digest("r2", T0 + LEASE_MS, LEASE_MS)
        .await
        .expect("claim")
        .expect("the expired lease");
    assert_eq!(taken_over.id, claimed.id);
    assert_ne!(taken_over.claim, claimed.claim);
    // The first resolver's lease is gone: its settle changes nothing.
    let stale = store
        .settle_digest(
            &claimed,
            DigestSettlement::Drop { reason: "untagged" },
            T0 + LEASE_MS + 1,
        )
        .await
        .expect("settle");
    assert!(!stale);
    assert_eq!(store.digests_resolving().await.expect("count"), 1);
    assert!(
        store
            .settle_digest(
                &taken_over,
                DigestSettlement::Drop { reason: "untagged" },
                T0 + LEASE_MS + 2
            )
            .await
            .expect("settle")
    );
    assert_eq!(store.digests_resolving().await.expect("count"), 0);
    assert_eq!(store.next_digest_due().await.expect("due"), None);
}

pub async fn a_resolved_digest_becomes_pending_images_with_its_digest<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    store
        .enqueue_digests(None, &[unresolved("api", DIGEST_A)], T0)
        .await
        .expect("enqueue digests");
    // A tag already pending stays one image.
    store
        .enqueue(None, &[target("i1", "api", "v1")], T0)
        .await
        .expect("enqueue");
    let claimed = store
        .claim_digest("r1", T0 + 1, LEASE_MS)
        .await
        .expect("claim")
        .expect("a digest");
    let tags = vec![
        with_digest(target("i1", "api", "v1"), DIGEST_A),
        with_digest(target("i1", "api", "latest"), DIGEST_A),
    ];
    assert!(
        store
            .settle_digest(&claimed, DigestSettlement::Resolved(tags), T0 + 2)
            .await
            .expect("settle")
    );
    assert_eq!(store.digests_resolving().await.expect("count"), 0);
    let pending = store.pending(10).await.expect("pending");
    let images: Vec<(String, Option<String>)> = pending
        .iter()
        .map(|p| (p.image.tag.clone(), p.digest.clone()))
        .collect();
    assert_eq!(
        images,
        [
            ("v1".to_string(), None),
            ("latest".to_string(), Some(DIGEST_A.to_string()))
        ]
    );
    let batch = store
        .claim_batch("w1", T0 + 10_000, &POLICY)
        .await
        .expect("claim")
        .expect("batch");
    assert_eq!(batch.images.len(), 2);
    assert_eq!(
        batch.images[1].image,
        ImageRef::new("team-a", "api", "latest")
    );
    assert_eq!(batch.images[1].digest.as_deref(), Some(DIGEST_A));
}

pub async fn an_untagged_digest_is_asked_again_later<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    store
        .enqueue_digests(None, &[unresolved("api", DIGEST_A)], T0)
        .await
        .expect("enqueue digests");
    let claimed = store
        .claim_digest("r1", T0, LEASE_MS)
        .await
        .expect("claim")
        .expect("a digest");
    let again = DigestSettlement::AskAgain(NextAsk {
        not_before: T0 + 5_000,
        untagged_answers: 1,
        failures: 2,
        last_error: "no tag yet".into(),
    });
    assert!(
        store
            .settle_digest(&claimed, again, T0 + 1)
            .await
            .expect("settle")
    );
    assert_eq!(
        store.next_digest_due().await.expect("due"),
        Some(T0 + 5_000)
    );
    assert_eq!(
        store
            .claim_digest("r1", T0 + 4_999, LEASE_MS)
            .await
            .expect("claim"),
        None
    );
    let waiting = store.waiting_digests(10).await.expect("waiting");
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].digest, unresolved("api", DIGEST_A));
    assert_eq!(waiting[0].last_error.as_deref(), Some("no tag yet"));
    assert_eq!((waiting[0].untagged_answers, waiting[0].failures), (1, 2));
    let later = store
        .claim_digest("r2", T0 + 5_000, LEASE_MS)
        .await
        .expect("claim")
        .expect("a digest");
    assert_eq!((later.untagged_answers, later.failures), (1, 2));
}

pub async fn a_refused_digest_is_a_dead_letter_that_retries_its_resolution<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    store
        .enqueue_digests(None, &[unresolved("web", DIGEST_B)], T0)
        .await
        .expect("enqueue digests");
    let claimed = store
        .claim_digest("r1", T0, LEASE_MS)
        .await
        .expect("claim")
        .expect("a digest");
    let cause = DeadLetterCause {
        http_status: Some(403),
        error_code: Some("SWR.0403".into()),
        error_msg: "forbidden".into(),
        request_id: Some("req-9".into()),
    };
    assert!(
        store
            .settle_digest(
                &claimed,
                DigestSettlement::DeadLetter(cause.clone()),
                T0 + 7
            )
            .await
            .expect("settle")
    );
    assert_eq!(store.digests_resolving().await.expect("count"), 0);
    let letters = store.dead_letters(10).await.expect("letters");
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.cause, cause);
    assert!(letter.images.is_empty());
    assert_eq!(letter.unresolved, Some(unresolved("web", DIGEST_B)));
    assert_eq!(letter.partition, partition("i1"));
    assert_eq!(letter.failed_at, T0 + 7);
    assert_eq!(store.stats().await.expect("stats").dead_letters, 1);

    let counts = store
        .retry_dead_letter(letter.id, T0 + 100)
        .await
        .expect("retry");
    assert_eq!(
        counts,
        Some(EnqueueCounts {
            accepted: 1,
            duplicates: 0
        })
    );
    assert!(store.dead_letters(10).await.expect("letters").is_empty());
    let again = store
        .claim_digest("r1", T0 + 100, LEASE_MS)
        .await
        .expect("claim")
        .expect("the digest again");
    assert_eq!(again.digest, unresolved("web", DIGEST_B));
}

pub async fn a_redelivery_stores_no_digest<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    let key = DeliveryKey {
        source: "swr-ee".into(),
        id: "evt-1".into(),
    };
    let digests = [unresolved("api", DIGEST_A)];
    assert_eq!(
        store
            .enqueue_digests(Some(&key), &digests, T0)
            .await
            .expect("digests"),
        stored(1, 0)
    );
    // The intake records the delivery with the images, right after.
    store.enqueue(Some(&key), &[], T0).await.expect("enqueue");
    let claimed = store
        .claim_digest("r1", T0, LEASE_MS)
        .await
        .expect("claim")
        .expect("a digest");
    store
        .settle_digest(
            &claimed,
            DigestSettlement::Drop { reason: "untagged" },
            T0 + 1,
        )
        .await
        .expect("settle");
    assert_eq!(
        store
            .enqueue_digests(Some(&key), &digests, T0 + 2)
            .await
            .expect("digests"),
        Enqueued::DuplicateDelivery
    );
    assert_eq!(store.digests_resolving().await.expect("count"), 0);
}

pub async fn digests_survive_batches_and_dead_letters<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    store
        .enqueue(
            None,
            &[
                with_digest(target("i1", "api", "v1"), DIGEST_A),
                target("i1", "api", "v2"),
            ],
            T0,
        )
        .await
        .expect("enqueue");
    let batch = store
        .claim_batch("w1", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("batch");
    let digests: Vec<Option<&str>> = batch.images.iter().map(|i| i.digest.as_deref()).collect();
    assert_eq!(digests, [Some(DIGEST_A), None]);
    let cause = DeadLetterCause {
        http_status: Some(400),
        error_code: None,
        error_msg: "bad".into(),
        request_id: None,
    };
    store
        .dead_letter(&batch, &cause, T0 + 2_100)
        .await
        .expect("dead letter");
    let letters = store.dead_letters(10).await.expect("letters");
    assert_eq!(letters[0].images, batch.images);
    assert_eq!(letters[0].unresolved, None);
    store
        .retry_dead_letter(letters[0].id, T0 + 3_000)
        .await
        .expect("retry");
    let pending = store.pending(10).await.expect("pending");
    let digests: Vec<Option<&str>> = pending.iter().map(|p| p.digest.as_deref()).collect();
    assert_eq!(digests, [Some(DIGEST_A), None]);
}
