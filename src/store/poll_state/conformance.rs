//! The executable contract of [`PollStateStore`], run by every backend on
//! fresh, empty stores. Public so that the PostgreSQL tests can run it too.

use std::collections::HashMap;
use std::future::Future;

use super::{EVERY_NAMESPACE, PollStateStore, PolledRepository, RepositoryRead, SeenTag};

const T0: i64 = 1_800_000_000_000;

fn repository(source: &str, namespace: &str, name: &str) -> PolledRepository {
    PolledRepository::new(source, namespace, name)
}

fn seen(tag: &str, digest: &str) -> SeenTag {
    SeenTag {
        tag: tag.to_string(),
        digest: digest.to_string(),
    }
}

/// Runs every check, each on its own fresh store.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: PollStateStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    one_owner_holds_a_lease_until_it_expires(make().await).await;
    a_released_lease_is_free_at_once(make().await).await;
    watermarks_start_absent_and_only_rise(make().await).await;
    seen_tags_are_kept_per_source_and_repository(make().await).await;
    the_last_read_of_a_repository_is_kept(make().await).await;
}

async fn one_owner_holds_a_lease_until_it_expires(store: impl PollStateStore) {
    let take = |owner: &'static str, now: i64| {
        let store = &store;
        async move {
            store
                .take_poll_lease("basic", owner, now, now + 1_000)
                .await
                .expect("take lease")
        }
    };
    assert!(take("a", T0).await, "a free lease is taken");
    assert!(!take("b", T0 + 500).await, "a held lease is not taken");
    assert!(take("a", T0 + 900).await, "its holder renews it");
    assert!(
        !take("b", T0 + 1_500).await,
        "the renewal moved its end to T0 + 1900"
    );
    assert!(
        store
            .take_poll_lease("other", "b", T0 + 1_500, T0 + 2_500)
            .await
            .expect("other source"),
        "each source has its own lease"
    );
    assert!(
        take("b", T0 + 1_900).await,
        "an expired lease is taken over"
    );
    assert!(!take("a", T0 + 2_000).await, "the old holder lost it");
}

async fn a_released_lease_is_free_at_once(store: impl PollStateStore) {
    let lease = |owner: &'static str| store.take_poll_lease("basic", owner, T0, T0 + 60_000);
    assert!(lease("a").await.expect("take"));
    store
        .release_poll_lease("basic", "b")
        .await
        .expect("release by a non-holder");
    assert!(
        !lease("b").await.expect("take"),
        "only the holder can release"
    );
    store
        .release_poll_lease("basic", "a")
        .await
        .expect("release");
    assert!(lease("b").await.expect("take"), "released: free for anyone");
}

async fn watermarks_start_absent_and_only_rise(store: impl PollStateStore) {
    let watermark = |scope: &'static str| store.poll_watermark("basic", scope);
    assert_eq!(watermark(EVERY_NAMESPACE).await.expect("read"), None);
    store
        .raise_poll_watermark("basic", EVERY_NAMESPACE, 0, T0)
        .await
        .expect("record an empty baseline");
    assert_eq!(watermark(EVERY_NAMESPACE).await.expect("read"), Some(0));
    store
        .raise_poll_watermark("basic", EVERY_NAMESPACE, T0, T0)
        .await
        .expect("raise");
    store
        .raise_poll_watermark("basic", EVERY_NAMESPACE, T0 - 5, T0)
        .await
        .expect("a lower one");
    assert_eq!(
        watermark(EVERY_NAMESPACE).await.expect("read"),
        Some(T0),
        "never goes back"
    );
    assert_eq!(
        watermark("team-a").await.expect("read"),
        None,
        "scopes are separate"
    );
    assert_eq!(
        store
            .poll_watermark("other", EVERY_NAMESPACE)
            .await
            .expect("read"),
        None,
        "sources are separate"
    );
}

async fn seen_tags_are_kept_per_source_and_repository(store: impl PollStateStore) {
    assert!(
        store
            .seen_tags(&repository("basic", "team-a", "api"))
            .await
            .expect("read")
            .is_empty()
    );
    store
        .record_seen_tags(
            &repository("basic", "team-a", "api"),
            &[seen("1.0", "sha256:a"), seen("latest", "sha256:a")],
            T0,
        )
        .await
        .expect("record");
    store
        .record_seen_tags(
            &repository("basic", "team-a", "api"),
            &[seen("latest", "sha256:b")],
            T0,
        )
        .await
        .expect("a re-push");
    store
        .record_seen_tags(
            &repository("basic", "team-a", "tools/cli"),
            &[seen("1.0", "")],
            T0,
        )
        .await
        .expect("another repository, no digest");
    store
        .record_seen_tags(
            &repository("mirror", "team-a", "api"),
            &[seen("1.0", "sha256:z")],
            T0,
        )
        .await
        .expect("another source");
    let expected: HashMap<String, String> = [
        ("1.0".to_string(), "sha256:a".to_string()),
        ("latest".to_string(), "sha256:b".to_string()),
    ]
    .into();
    assert_eq!(
        store
            .seen_tags(&repository("basic", "team-a", "api"))
            .await
            .expect("read"),
        expected
    );
    assert_eq!(
        store
            .seen_tags(&repository("basic", "team-a", "tools/cli"))
            .await
            .expect("read"),
        [("1.0".to_string(), String::new())].into()
    );
}

async fn the_last_read_of_a_repository_is_kept(store: impl PollStateStore) {
    let read = |updated_at: &str, read_at: i64| RepositoryRead {
        updated_at: updated_at.to_string(),
        read_at,
    };
    assert_eq!(
        store
            .repository_read(&repository("basic", "team-a", "api"))
            .await
            .expect("read"),
        None
    );
    for (updated_at, read_at) in [
        ("2026-01-01T00:00:00Z", T0),
        ("2026-01-02T00:00:00Z", T0 + 9),
    ] {
        store
            .record_repository_read(
                &repository("basic", "team-a", "api"),
                &read(updated_at, read_at),
            )
            .await
            .expect("record");
    }
    assert_eq!(
        store
            .repository_read(&repository("basic", "team-a", "api"))
            .await
            .expect("read"),
        Some(read("2026-01-02T00:00:00Z", T0 + 9)),
        "the last read replaces the one before"
    );
    assert_eq!(
        store
            .repository_read(&repository("basic", "team-a", "tools/cli"))
            .await
            .expect("read"),
        None
    );
    assert_eq!(
        store
            .repository_read(&repository("mirror", "team-a", "api"))
            .await
            .expect("read"),
        None
    );
}
