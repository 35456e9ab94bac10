//! The walk over `pending_images_unbatched_age` that finds each partition with
//! unbatched images and its oldest one without grouping every unbatched row:
//! one index seek per partition for the next key and one for its oldest image.
//! A `GROUP BY` over a backlog of tens of thousands of images took 7-30 ms and
//! held the server's CPU while webhooks waited for their commits
//! (BENCHMARKS.md). Claims, the next-due time and the store's statistics read
//! it; the fragments are macros so that each statement is one `&'static str`,
//! prepared once per connection.

/// CTEs `partitions(key)` (keys, then a NULL) and `oldest_of(key, oldest)`:
/// each partition with unbatched images and its oldest image's enqueue time.
macro_rules! unbatched_partitions {
    () => {
        "
WITH RECURSIVE partitions(key) AS (
    (SELECT partition_key FROM pending_images
     WHERE batch_id IS NULL ORDER BY partition_key LIMIT 1)
    UNION ALL
    SELECT (SELECT p.partition_key FROM pending_images p
            WHERE p.batch_id IS NULL AND p.partition_key > partitions.key
            ORDER BY p.partition_key LIMIT 1)
    FROM partitions WHERE partitions.key IS NOT NULL
),
oldest_of AS (
    SELECT partitions.key, first.oldest
    FROM partitions
    CROSS JOIN LATERAL (
        SELECT enqueued_at AS oldest FROM pending_images
        WHERE batch_id IS NULL AND partition_key = partitions.key
        ORDER BY partition_key, enqueued_at, id LIMIT 1) AS first
    WHERE partitions.key IS NOT NULL
)"
    };
}

/// [`unbatched_partitions`] plus `waiting(key, oldest, is_full)`: whether the
/// partition holds `$1` images, a full batch, found by reading at most `$1`
/// index entries.
macro_rules! waiting_partitions {
    () => {
        concat!(
            $crate::store::postgres::partition_walk::unbatched_partitions!(),
            ",
waiting AS (
    SELECT key, oldest,
           EXISTS (SELECT 1 FROM pending_images
                   WHERE batch_id IS NULL AND partition_key = oldest_of.key
                   ORDER BY partition_key, enqueued_at, id
                   OFFSET $1::bigint - 1 LIMIT 1) AS is_full
    FROM oldest_of
)"
        )
    };
}

pub(super) use {unbatched_partitions, waiting_partitions};

/// The store's counts and its oldest pending image, in one statement (one
/// snapshot). The oldest is the oldest waiting image of each partition or the
/// oldest of the few in flight: no index on `enqueued_at` alone, which every
/// enqueued and every claimed image would pay to update (migration 0005).
pub(super) const STATS: &str = concat!(
    unbatched_partitions!(),
    "
SELECT (SELECT count(*) FROM pending_images) AS pending_images,
       LEAST((SELECT min(oldest) FROM oldest_of),
             (SELECT min(enqueued_at) FROM pending_images WHERE batch_id IS NOT NULL))
           AS oldest_enqueued_at,
       (SELECT count(*) FROM batches WHERE lease_until IS NOT NULL) AS batches_in_flight,
       (SELECT count(*) FROM dead_letters) AS dead_letters"
);
