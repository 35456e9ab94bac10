//! Claiming batches, in as few round trips as replicas' safety allows. The
//! batcher asks after every wake-up, and usually finds nothing: that case
//! costs two single-statement round trips and no transaction.
//!
//! How replicas stay out of each other's way:
//! - A batch due again (retry time reached, lease expired) is taken with
//!   `FOR UPDATE SKIP LOCKED`, so exactly one replica gets it.
//! - A new batch is formed only while holding the partition's transaction-scoped
//!   advisory lock (a replica finding it taken moves on to another partition
//!   instead of waiting), and its images are read, locked and checked for
//!   due-ness again under that lock, so two replicas never split one
//!   partition's window into two requests.

use deadpool_postgres::GenericClient;

use super::errors::from_postgres;
use super::partition_walk::waiting_partitions;
use super::rows::{as_bigint, attempts_of, batch_image_of, get, partition_of};
use crate::store::{BatchImage, BatchPolicy, ClaimedBatch, Millis, StoreError};

/// Due partitions looked at per claim; the others wait for the next claim.
const CLAIM_CANDIDATES: i64 = 32;

/// Takes over the batch due longest (retry time came or lease ran out) and
/// reads its images, in one statement: one row per image, oldest first.
/// SKIP LOCKED: a batch another replica is taking right now is not ours; the
/// row lock also re-checks the condition against its latest version.
const RECLAIM: &str = "
WITH taken AS (
    UPDATE batches SET owner = $1, lease_until = $2, attempts = attempts + 1
    WHERE id = (
        SELECT id FROM batches
        WHERE COALESCE(lease_until, next_attempt_at) <= $3
        ORDER BY COALESCE(lease_until, next_attempt_at), id
        LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING id, image_type, instance_id, enterprise_project_id, attempts
), sent AS (
    INSERT INTO batch_events (batch_id, event, at_ms)
    SELECT id, 'sent', $3 FROM taken WHERE $4::boolean
)
SELECT t.id, t.image_type, t.instance_id, t.enterprise_project_id, t.attempts,
       p.namespace, p.name, p.tag, p.instance_url, p.digest
FROM taken t LEFT JOIN pending_images p ON p.batch_id = t.id
ORDER BY p.enqueued_at, p.id";

/// Partitions due now (full, or their oldest image waited a window), oldest
/// first.
const DUE_PARTITIONS: &str = concat!(
    waiting_partitions!(),
    "
SELECT key AS partition_key FROM waiting
WHERE is_full OR oldest + $2::bigint <= $3::bigint
ORDER BY oldest, key
LIMIT $4::bigint"
);

/// Scoped by schema so that stores in other schemas (tests, other
/// deployments in one database) never block each other.
const LOCK_PARTITION: &str = "
SELECT pg_try_advisory_xact_lock(
    hashtext(COALESCE(current_schema(), '')), hashtext($1)) AS locked";

/// `row_ctid`: where the locked row is, for the update that moves it into the
/// batch (stable while the row is locked; the table has no index on `id`).
const OLDEST_UNBATCHED: &str = "
SELECT ctid::text AS row_ctid, image_type, instance_id, enterprise_project_id,
       namespace, name, tag, instance_url, digest, enqueued_at
FROM pending_images
WHERE batch_id IS NULL AND partition_key = $1
ORDER BY enqueued_at, id
LIMIT $2
FOR UPDATE";

/// Creates the batch and moves its images into it.
const CREATE_BATCH: &str = "
WITH batch AS (
    INSERT INTO batches (partition_key, image_type, instance_id,
        enterprise_project_id, owner, lease_until, next_attempt_at,
        attempts, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $7)
    RETURNING id
), members AS (
    UPDATE pending_images SET batch_id = (SELECT id FROM batch)
    WHERE ctid = ANY($8::text[]::tid[])
), sent AS (
    INSERT INTO batch_events (batch_id, event, at_ms)
    SELECT id, 'sent', $7 FROM batch WHERE $9::boolean
)
SELECT id FROM batch";

/// When the next claim may find something: the soonest batch retry or lease
/// end, and each waiting partition's window end (`now`, `$3`, for a full one).
const NEXT_DUE: &str = concat!(
    waiting_partitions!(),
    "
SELECT min(due) AS due FROM (
    SELECT COALESCE(lease_until, next_attempt_at) AS due FROM batches
    UNION ALL
    SELECT CASE WHEN is_full THEN $3::bigint ELSE oldest + $2::bigint END FROM waiting
) AS due_times"
);

/// Takes over a batch whose retry time came or whose lease ran out.
pub(super) async fn reclaim_batch(
    client: &impl GenericClient,
    owner: &str,
    now: Millis,
    policy: &BatchPolicy,
    record_history: bool,
) -> Result<Option<ClaimedBatch>, StoreError> {
    let reclaim = client
        .prepare_cached(RECLAIM)
        .await
        .map_err(from_postgres)?;
    let lease_until = now + policy.lease_ms;
    let rows = client
        .query(&reclaim, &[&owner, &lease_until, &now, &record_history])
        .await
        .map_err(from_postgres)?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut images = Vec::with_capacity(rows.len());
    for row in &rows {
        // The LEFT JOIN yields one row without an image for an empty batch.
        if get::<Option<&str>>(row, "namespace")?.is_some() {
            images.push(batch_image_of(row)?);
        }
    }
    Ok(Some(ClaimedBatch {
        id: get(first, "id")?,
        owner: owner.to_string(),
        partition: partition_of(first)?,
        images,
        attempt: attempts_of(first)?,
        lease_until,
    }))
}

/// Whether [`form_batch`] first asks, outside a transaction, if anything is
/// due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LookFirst {
    /// Usually nothing is due (the batcher asks after every wake-up), and
    /// that answer then needs no BEGIN and COMMIT.
    Yes,
    /// The last claim formed a batch, so more are likely due: the look
    /// would only walk the partitions once more (its index walk was 15 % of
    /// the server's statement time under load, BENCHMARKS.md).
    No,
}

/// Forms a new batch of the oldest images of a due partition.
pub(super) async fn form_batch(
    client: &mut deadpool_postgres::Client,
    owner: &str,
    now: Millis,
    policy: &BatchPolicy,
    record_history: bool,
    look_first: LookFirst,
) -> Result<Option<ClaimedBatch>, StoreError> {
    let max_images = as_bigint(policy.max_images.max(1));
    let due_partitions = client
        .prepare_cached(DUE_PARTITIONS)
        .await
        .map_err(from_postgres)?;
    let due_arguments: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&max_images, &policy.window_ms, &now, &CLAIM_CANDIDATES];
    if look_first == LookFirst::Yes
        && client
            .query(&due_partitions, &due_arguments)
            .await
            .map_err(from_postgres)?
            .is_empty()
    {
        return Ok(None);
    }
    let tx = client.transaction().await.map_err(from_postgres)?;
    let candidates: Vec<String> = tx
        .query(&due_partitions, &due_arguments)
        .await
        .map_err(from_postgres)?
        .iter()
        .map(|row| get(row, "partition_key"))
        .collect::<Result<_, _>>()?;
    let lock_partition = tx
        .prepare_cached(LOCK_PARTITION)
        .await
        .map_err(from_postgres)?;
    let oldest_unbatched = tx
        .prepare_cached(OLDEST_UNBATCHED)
        .await
        .map_err(from_postgres)?;
    let create_batch = tx
        .prepare_cached(CREATE_BATCH)
        .await
        .map_err(from_postgres)?;

    for partition_key in &candidates {
        let locked: bool = get(
            &tx.query_one(&lock_partition, &[partition_key])
                .await
                .map_err(from_postgres)?,
            "locked",
        )?;
        if !locked {
            // Another replica is forming this partition's batch right now.
            continue;
        }
        // Looked at again under the lock: a replica that formed a batch just
        // before may have left too few images, or images too young, to be due.
        let rows = tx
            .query(&oldest_unbatched, &[partition_key, &max_images])
            .await
            .map_err(from_postgres)?;
        let Some(oldest) = rows.first() else {
            continue;
        };
        let oldest_enqueued_at: Millis = get(oldest, "enqueued_at")?;
        let full = rows.len() as i64 >= max_images;
        if !full && oldest_enqueued_at + policy.window_ms > now {
            continue;
        }
        let partition = partition_of(oldest)?;
        let members: Vec<String> = rows
            .iter()
            .map(|row| get(row, "row_ctid"))
            .collect::<Result<_, _>>()?;
        let images: Vec<BatchImage> = rows.iter().map(batch_image_of).collect::<Result<_, _>>()?;
        let lease_until = now + policy.lease_ms;
        let batch_row = tx
            .query_one(
                &create_batch,
                &[
                    partition_key,
                    &partition.image_type.as_str(),
                    &partition.instance_id,
                    &partition.enterprise_project_id,
                    &owner,
                    &lease_until,
                    &now,
                    &members,
                    &record_history,
                ],
            )
            .await
            .map_err(from_postgres)?;
        let id: i64 = get(&batch_row, "id")?;
        tx.commit().await.map_err(from_postgres)?;
        return Ok(Some(ClaimedBatch {
            id,
            owner: owner.to_string(),
            partition,
            images,
            attempt: 1,
            lease_until,
        }));
    }
    tx.commit().await.map_err(from_postgres)?;
    Ok(None)
}

/// The earliest time a claim could return a batch, `None` when nothing waits.
pub(super) async fn next_due(
    client: &impl GenericClient,
    now: Millis,
    policy: &BatchPolicy,
) -> Result<Option<Millis>, StoreError> {
    let next_due = client
        .prepare_cached(NEXT_DUE)
        .await
        .map_err(from_postgres)?;
    let row = client
        .query_one(
            &next_due,
            &[
                &as_bigint(policy.max_images.max(1)),
                &policy.window_ms,
                &now,
            ],
        )
        .await
        .map_err(from_postgres)?;
    get(&row, "due")
}
