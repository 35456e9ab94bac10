//! The history part of the store contract: every state change leaves its
//! events, in order, naming the source each image came through.

use super::digests::unresolved;
use super::{POLICY, T0, partition, receipt, target};
use crate::domain::{ImageRef, ScanTarget};
use crate::store::BatchPolicy;
use crate::store::history::{HISTORY_LIMIT, MERGE_AT};
use crate::store::{
    Arrival, DeadLetterCause, DeliveryKey, DigestSettlement, EventKind, HistoryEvent,
    HistorySubject, IgnoredImage, RetryCause, Store,
};

fn subject(text: &str) -> HistorySubject {
    text.parse().expect("a well-formed subject")
}

async fn arrive<S: Store>(
    store: &S,
    source: &str,
    delivery: Option<&DeliveryKey>,
    targets: &[ScanTarget],
    ignored: &[IgnoredImage],
    now: i64,
) {
    let arrival = Arrival {
        source,
        delivery,
        targets,
        ignored,
    };
    store
        .enqueue_arrival(&arrival, now)
        .await
        .expect("enqueue_arrival");
}

async fn events<S: Store>(store: &S, image: &str) -> Vec<HistoryEvent> {
    store
        .history(&subject(image), HISTORY_LIMIT)
        .await
        .expect("history")
}

fn kinds(events: &[HistoryEvent]) -> Vec<EventKind> {
    events.iter().map(|event| event.event).collect()
}

/// Runs every history check, each on its own fresh store.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    history_follows_an_image_to_its_scan(make().await).await;
    history_records_retries_dead_letters_and_requeues(make().await).await;
    history_records_ignored_images_and_redeliveries(make().await).await;
    batch_events_name_each_image_source(make().await).await;
    a_stale_release_records_nothing(make().await).await;
    history_answers_the_newest_events(make().await).await;
    history_is_pruned_by_age(make().await).await;
    history_reads_the_same_after_a_bulk_move(make().await).await;
    a_digest_history_leads_to_its_tags(make().await).await;
    dropped_and_refused_digests_say_why(make().await).await;
}

pub async fn history_follows_an_image_to_its_scan<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    assert_eq!(events(&store, "team-a/api:v1").await, vec![]);
    let api = target("i1", "api", "v1");
    arrive(&store, "swr-ee", None, std::slice::from_ref(&api), &[], T0).await;
    arrive(&store, "swr-ee", None, &[api], &[], T0 + 5).await;
    let batch = store
        .claim_batch("w1", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("batch");
    store
        .complete(&batch, &receipt(), T0 + 2_100)
        .await
        .expect("complete");

    let history = events(&store, "team-a/api:v1").await;
    assert_eq!(
        kinds(&history),
        [
            EventKind::Accepted,
            EventKind::Duplicate,
            EventKind::Sent,
            EventKind::Scanned
        ]
    );
    assert_eq!(
        history.iter().map(|event| event.at_ms).collect::<Vec<_>>(),
        [T0, T0 + 5, T0 + 2_000, T0 + 2_100]
    );
    assert!(history.iter().all(|event| event.source == "swr-ee"));
    assert_eq!(history[1].reason.as_deref(), Some("already_pending"));
    let (sent, done) = (&history[2], &history[3]);
    assert_eq!(sent.batch_id, Some(batch.id));
    assert_eq!(done.batch_id, Some(batch.id));
    assert_eq!(done.api.as_deref(), Some("batch-scan"));
    assert_eq!(done.hss_status, Some(200));
    assert_eq!(done.hss_request_id.as_deref(), Some("hss-req-1"));
    // Other images of the same name are other histories.
    assert_eq!(events(&store, "team-a/api:v2").await, vec![]);
}

pub async fn history_records_retries_dead_letters_and_requeues<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    arrive(
        &store,
        "harbor",
        None,
        &[target("i1", "api", "v1")],
        &[],
        T0,
    )
    .await;
    let first = store
        .claim_batch("w1", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("batch");
    let cause = RetryCause {
        hss_status: Some(503),
        hss_request_id: Some("req-503".into()),
        reason: "HTTP 503".into(),
    };
    store
        .release_for_retry(&first, T0 + 3_000, &cause, T0 + 2_010)
        .await
        .expect("release");
    let second = store
        .claim_batch("w1", T0 + 3_000, &POLICY)
        .await
        .expect("claim")
        .expect("the retry");
    let refusal = DeadLetterCause {
        http_status: Some(400),
        error_code: Some("HSS.1001".into()),
        error_msg: "invalid image_info_list".into(),
        request_id: Some("req-400".into()),
    };
    store
        .dead_letter(&second, &refusal, T0 + 3_010)
        .await
        .expect("dead letter");
    let letter = store.dead_letters(1).await.expect("list")[0].id;
    store
        .retry_dead_letter(letter, T0 + 4_000)
        .await
        .expect("retry")
        .expect("the letter");

    let history = events(&store, "team-a/api:v1").await;
    assert_eq!(
        kinds(&history),
        [
            EventKind::Accepted,
            EventKind::Sent,
            EventKind::Retried,
            EventKind::Sent,
            EventKind::DeadLetter,
            EventKind::Accepted,
        ]
    );
    let retried = &history[2];
    assert_eq!(
        (retried.at_ms, retried.batch_id, retried.hss_status),
        (T0 + 2_010, Some(first.id), Some(503))
    );
    assert_eq!(retried.reason.as_deref(), Some("HTTP 503"));
    assert_eq!(retried.hss_request_id.as_deref(), Some("req-503"));
    assert_eq!(history[3].batch_id, Some(first.id), "the same batch again");
    let dead = &history[4];
    assert_eq!(dead.hss_status, Some(400));
    assert_eq!(dead.hss_request_id.as_deref(), Some("req-400"));
    assert_eq!(
        dead.reason.as_deref(),
        Some("HSS.1001: invalid image_info_list")
    );
    assert!(history[..5].iter().all(|event| event.source == "harbor"));
    let requeued = &history[5];
    assert_eq!(
        (requeued.at_ms, requeued.source.as_str()),
        (T0 + 4_000, "admin")
    );
    // The requeued image's later events name the operator as its source.
    let third = store
        .claim_batch("w1", T0 + 6_000, &POLICY)
        .await
        .expect("claim")
        .expect("the requeued image");
    store
        .complete(&third, &receipt(), T0 + 6_100)
        .await
        .expect("complete");
    let history = events(&store, "team-a/api:v1").await;
    assert_eq!(history.len(), 8);
    assert_eq!(history[7].event, EventKind::Scanned);
    assert_eq!(history[7].source, "admin");
}

pub async fn history_records_ignored_images_and_redeliveries<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    let key = DeliveryKey {
        source: "swr-ee".into(),
        id: "msg_1".into(),
    };
    let ignored = [
        IgnoredImage {
            subject: subject("team-a/cache:latest"),
            reason: "filtered_out".into(),
        },
        IgnoredImage {
            subject: subject("team-a/api@sha256:0123abcd"),
            reason: "push_by_digest".into(),
        },
    ];
    let api = [target("i1", "api", "v1")];
    arrive(&store, "swr-ee", Some(&key), &api, &ignored, T0).await;
    // Redelivered: nothing stored, but the history says it came again.
    arrive(&store, "swr-ee", Some(&key), &api, &ignored, T0 + 1).await;
    assert_eq!(store.stats().await.expect("stats").pending_images, 1);

    let history = events(&store, "team-a/api:v1").await;
    assert_eq!(kinds(&history), [EventKind::Accepted, EventKind::Duplicate]);
    assert_eq!(history[1].reason.as_deref(), Some("redelivery"));
    let cache = events(&store, "team-a/cache:latest").await;
    assert_eq!(kinds(&cache), [EventKind::Ignored, EventKind::Ignored]);
    assert_eq!(cache[0].reason.as_deref(), Some("filtered_out"));
    assert_eq!(cache[0].source, "swr-ee");
    let by_digest = events(&store, "team-a/api@sha256:0123abcd").await;
    assert_eq!(by_digest.len(), 2);
    assert_eq!(by_digest[0].event, EventKind::Ignored);
    assert_eq!(by_digest[0].reason.as_deref(), Some("push_by_digest"));
    assert_eq!(by_digest[0].digest.as_deref(), Some("sha256:0123abcd"));
}

pub async fn batch_events_name_each_image_source<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    arrive(&store, "one", None, &[target("i1", "a", "1")], &[], T0).await;
    arrive(&store, "two", None, &[target("i1", "b", "1")], &[], T0 + 1).await;
    let batch = store
        .claim_batch("w1", T0 + 2_001, &POLICY)
        .await
        .expect("claim")
        .expect("batch");
    assert_eq!(batch.images.len(), 2, "one partition, one batch");
    for (image, source) in [("team-a/a:1", "one"), ("team-a/b:1", "two")] {
        let history = events(&store, image).await;
        assert_eq!(kinds(&history), [EventKind::Accepted, EventKind::Sent]);
        assert!(
            history.iter().all(|event| event.source == source),
            "{image}: {history:?}"
        );
    }
}

pub async fn a_stale_release_records_nothing<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    arrive(&store, "s", None, &[target("i1", "api", "v1")], &[], T0).await;
    let lost = store
        .claim_batch("w1", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("batch");
    let taken = store
        .claim_batch("w2", lost.lease_until, &POLICY)
        .await
        .expect("claim")
        .expect("taken over");
    store
        .release_for_retry(
            &lost,
            lost.lease_until + 10,
            &RetryCause::reason("late"),
            lost.lease_until + 5,
        )
        .await
        .expect("release");
    let history = events(&store, "team-a/api:v1").await;
    assert_eq!(
        kinds(&history),
        [EventKind::Accepted, EventKind::Sent, EventKind::Sent]
    );
    assert_eq!(history[2].batch_id, Some(taken.id));
}

pub async fn history_answers_the_newest_events<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    let api = target("i1", "api", "v1");
    for step in 0..5 {
        arrive(
            &store,
            "s",
            None,
            std::slice::from_ref(&api),
            &[],
            T0 + step,
        )
        .await;
    }
    let newest = store
        .history(&subject("team-a/api:v1"), 3)
        .await
        .expect("history");
    assert_eq!(
        newest.iter().map(|event| event.at_ms).collect::<Vec<_>>(),
        [T0 + 2, T0 + 3, T0 + 4],
        "the newest three, oldest first"
    );
    // A nested repository name is one key, not confused with its parent.
    let nested = ScanTarget {
        partition: partition("i1"),
        image: ImageRef::new("team-a", "payments/api", "v1"),
        instance_url: None,
        digest: None,
    };
    arrive(&store, "s", None, &[nested], &[], T0 + 9).await;
    assert_eq!(events(&store, "team-a/payments/api:v1").await.len(), 1);
    assert_eq!(events(&store, "team-a/api:v1").await.len(), 5);
}

pub async fn history_is_pruned_by_age<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    arrive(&store, "s", None, &[target("i1", "done", "1")], &[], T0).await;
    let batch = store
        .claim_batch("w1", T0 + 2_000, &POLICY)
        .await
        .expect("claim")
        .expect("batch");
    store
        .complete(&batch, &receipt(), T0 + 2_100)
        .await
        .expect("complete");
    let waiting = target("i1", "waiting", "1");
    arrive(
        &store,
        "s",
        None,
        std::slice::from_ref(&waiting),
        &[],
        T0 + 2_500,
    )
    .await;
    arrive(
        &store,
        "s",
        None,
        std::slice::from_ref(&waiting),
        &[],
        T0 + 2_600,
    )
    .await;
    arrive(
        &store,
        "s",
        None,
        std::slice::from_ref(&waiting),
        &[],
        T0 + 5_000,
    )
    .await;
    assert_eq!(events(&store, "team-a/done:1").await.len(), 3);

    // Before T0 + 3_000: the settled image's row, its batch's sent and
    // scanned, and the first duplicate row.
    assert_eq!(store.prune_history(T0 + 3_000).await.expect("prune"), 4);
    assert_eq!(events(&store, "team-a/done:1").await, vec![]);
    let waiting = events(&store, "team-a/waiting:1").await;
    // Pruning forgets history only: the waiting image stays, and so does
    // its accepted event, which is the queue row itself.
    assert_eq!(kinds(&waiting), [EventKind::Accepted, EventKind::Duplicate]);
    assert_eq!(waiting[1].at_ms, T0 + 5_000);
    assert_eq!(store.stats().await.expect("stats").pending_images, 1);
    assert_eq!(store.prune_history(T0 + 3_000).await.expect("prune"), 0);
}

/// Enough settled images to move the SQL stores' recent rows to the indexed
/// table (`MERGE_AT`), in one batch.
pub async fn history_reads_the_same_after_a_bulk_move<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    let count = usize::try_from(MERGE_AT).expect("small") + 10;
    let targets: Vec<ScanTarget> = (0..count)
        .map(|n| target("i1", "bulk", &format!("v{n}")))
        .collect();
    arrive(&store, "s", None, &targets, &[], T0).await;
    arrive(&store, "s", None, &targets[..1], &[], T0 + 1).await;
    let policy = BatchPolicy {
        max_images: count,
        ..POLICY
    };
    let batch = store
        .claim_batch("w1", T0 + 2_000, &policy)
        .await
        .expect("claim")
        .expect("batch");
    assert_eq!(batch.images.len(), count);
    store
        .complete(&batch, &receipt(), T0 + 2_100)
        .await
        .expect("complete");
    for n in [0, count / 2, count - 1] {
        let image = format!("team-a/bulk:v{n}");
        let history = events(&store, &image).await;
        let expected: &[EventKind] = if n == 0 {
            &[
                EventKind::Accepted,
                EventKind::Duplicate,
                EventKind::Sent,
                EventKind::Scanned,
            ]
        } else {
            &[EventKind::Accepted, EventKind::Sent, EventKind::Scanned]
        };
        assert_eq!(kinds(&history), expected, "{image}");
        assert!(
            history.iter().all(|event| event.source == "s"),
            "{history:?}"
        );
    }
}

const DIGEST: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

pub async fn a_digest_history_leads_to_its_tags<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    let digest_key = format!("team-a/api@{DIGEST}");
    let pushed = [unresolved("api", DIGEST)];
    store
        .enqueue_digests(None, &pushed, T0)
        .await
        .expect("enqueue digests");
    store
        .enqueue_digests(None, &pushed, T0 + 1)
        .await
        .expect("enqueue digests");
    let claimed = store
        .claim_digest("r1", T0 + 2, 30_000)
        .await
        .expect("claim")
        .expect("the digest");
    let tag = |tag: &str| {
        let mut target = target("i1", "api", tag);
        target.digest = Some(DIGEST.to_string());
        target
    };
    let settled = store
        .settle_digest(
            &claimed,
            DigestSettlement::Resolved(vec![tag("1.0"), tag("latest")]),
            T0 + 3,
        )
        .await
        .expect("settle");
    assert!(settled);

    let digest_events = events(&store, &digest_key).await;
    assert_eq!(
        kinds(&digest_events),
        [
            EventKind::Resolving,
            EventKind::Duplicate,
            EventKind::Resolved
        ]
    );
    assert!(digest_events.iter().all(|event| event.source == "swr-ee"));
    assert!(
        digest_events
            .iter()
            .all(|event| event.digest.as_deref() == Some(DIGEST))
    );
    assert_eq!(
        digest_events[2].reason.as_deref(),
        Some("tags: 1.0, latest")
    );

    let batch = store
        .claim_batch("w1", T0 + 3 + POLICY.window_ms, &POLICY)
        .await
        .expect("claim")
        .expect("the tags' batch");
    store
        .complete(&batch, &receipt(), T0 + 5_000)
        .await
        .expect("complete");
    for image in ["team-a/api:1.0", "team-a/api:latest"] {
        let history = events(&store, image).await;
        assert_eq!(
            kinds(&history),
            [EventKind::Accepted, EventKind::Sent, EventKind::Scanned],
            "{image}"
        );
        assert!(
            history
                .iter()
                .all(|event| event.digest.as_deref() == Some(DIGEST) && event.source == "swr-ee"),
            "once resolved, the tag's history names the digest: {history:?}"
        );
    }
}

pub async fn dropped_and_refused_digests_say_why<S: Store>(store: S) {
    store.migrate().await.expect("migrate");
    store
        .enqueue_digests(
            None,
            &[unresolved("gone", DIGEST), unresolved("denied", DIGEST)],
            T0,
        )
        .await
        .expect("enqueue digests");
    for at in [T0 + 1, T0 + 2] {
        let claimed = store
            .claim_digest("r1", at, 30_000)
            .await
            .expect("claim")
            .expect("a digest");
        let settlement = if claimed.digest.name == "gone" {
            DigestSettlement::Drop {
                reason: "not_found",
            }
        } else {
            DigestSettlement::DeadLetter(DeadLetterCause {
                http_status: Some(403),
                error_code: Some("SVCSTG.SWR.4030001".into()),
                error_msg: "no permission".into(),
                request_id: None,
            })
        };
        assert!(
            store
                .settle_digest(&claimed, settlement, at)
                .await
                .expect("settle")
        );
    }
    let gone = events(&store, &format!("team-a/gone@{DIGEST}")).await;
    assert_eq!(kinds(&gone), [EventKind::Resolving, EventKind::Dropped]);
    assert_eq!(gone[1].reason.as_deref(), Some("not_found"));
    let denied = events(&store, &format!("team-a/denied@{DIGEST}")).await;
    assert_eq!(
        kinds(&denied),
        [EventKind::Resolving, EventKind::DeadLetter]
    );
    assert_eq!(
        denied[1].reason.as_deref(),
        Some("SWR SVCSTG.SWR.4030001: no permission")
    );
    // Retried by an operator: back to resolving.
    let letter = store.dead_letters(1).await.expect("list")[0].id;
    store
        .retry_dead_letter(letter, T0 + 10)
        .await
        .expect("retry")
        .expect("the letter");
    let denied = events(&store, &format!("team-a/denied@{DIGEST}")).await;
    assert_eq!(denied.len(), 3);
    assert_eq!(
        (denied[2].event, denied[2].at_ms),
        (EventKind::Resolving, T0 + 10)
    );
}
