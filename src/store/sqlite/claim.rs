//! Picking the next batch to send, and when one will be due.

use rusqlite::Connection;

use super::connection::immediate;
use super::history::insert_batch_event;
use super::rows::{all_rows, image_ref_at, optional_row, partition_at, sql_count};
use crate::store::history::BatchEvent;
use crate::store::{BatchImage, BatchPolicy, ClaimedBatch, Millis};

/// The `waiting` CTE: the key of every partition with waiting images, one
/// index seek per partition rather than a read of every image. A macro rather
/// than a const so that `concat!` can start statements with it.
macro_rules! waiting_partitions_cte {
    () => {
        "
    WITH RECURSIVE waiting (partition_key) AS (
        SELECT MIN(partition_key) FROM pending_images WHERE batch_id IS NULL
        UNION ALL
        SELECT (SELECT MIN(p.partition_key) FROM pending_images AS p
                WHERE p.batch_id IS NULL AND p.partition_key > waiting.partition_key)
        FROM waiting WHERE waiting.partition_key IS NOT NULL
    )"
    };
}
pub(super) use waiting_partitions_cte;

/// Each partition with waiting images: its key, its oldest image's enqueue
/// time, and the enqueue time of its `?1`-th oldest (NULL when it holds fewer,
/// i.e. it is not full). Walks the partitions through the index one seek at a
/// time, so the cost grows with the number of partitions, not of images.
pub(super) const WAITING_PARTITIONS_SQL: &str = concat!(
    waiting_partitions_cte!(),
    "
    SELECT w.partition_key,
           (SELECT MIN(p.enqueued_at) FROM pending_images AS p
            WHERE p.batch_id IS NULL AND p.partition_key = w.partition_key),
           (SELECT p.enqueued_at FROM pending_images AS p
            WHERE p.batch_id IS NULL AND p.partition_key = w.partition_key
            ORDER BY p.enqueued_at, p.id LIMIT 1 OFFSET ?1 - 1)
    FROM waiting AS w
    WHERE w.partition_key IS NOT NULL"
);

/// The batch that may be (re)claimed soonest: `next_attempt_at` is the lease
/// end while leased and the retry time once released.
pub(super) const RECLAIMABLE_BATCH_SQL: &str = "
    SELECT id FROM batches WHERE next_attempt_at <= ?1
    ORDER BY next_attempt_at, id LIMIT 1";

pub(super) const CREATE_BATCH_SQL: &str = "
    INSERT INTO batches (partition_key, image_type, instance_id, enterprise_project_id,
                         next_attempt_at, attempts, created_at)
    SELECT partition_key, image_type, instance_id, enterprise_project_id, ?2, 0, ?2
    FROM pending_images
    WHERE batch_id IS NULL AND partition_key = ?1
    ORDER BY enqueued_at, id LIMIT 1
    RETURNING id";

pub(super) const ATTACH_IMAGES_SQL: &str = "
    UPDATE pending_images SET batch_id = ?1
    WHERE id IN (SELECT id FROM pending_images
                 WHERE batch_id IS NULL AND partition_key = ?2
                 ORDER BY enqueued_at, id LIMIT ?3)";

pub(super) const LEASE_BATCH_SQL: &str = "
    UPDATE batches
    SET owner = ?2, lease_until = ?3, next_attempt_at = ?3, attempts = attempts + 1
    WHERE id = ?1
    RETURNING image_type, instance_id, enterprise_project_id, attempts";

pub(super) const BATCH_IMAGES_SQL: &str = "
    SELECT namespace, name, tag, instance_url, digest FROM pending_images
    WHERE batch_id = ?1 ORDER BY enqueued_at, id";

/// A partition with waiting images, as [`WAITING_PARTITIONS_SQL`] reports it.
struct WaitingPartition {
    key: String,
    oldest: Millis,
    full: bool,
}

impl WaitingPartition {
    /// When the partition may be sent: at once when full, else once its
    /// oldest image waited a window.
    fn due_at(&self, now: Millis, policy: &BatchPolicy) -> Millis {
        let window_end = self.oldest.saturating_add(policy.window_ms);
        if self.full {
            window_end.min(now)
        } else {
            window_end
        }
    }
}

fn effective_max_images(policy: &BatchPolicy) -> usize {
    // A batch must carry something, or a claim would create empty batches forever.
    policy.max_images.max(1)
}

fn waiting_partitions(
    conn: &Connection,
    policy: &BatchPolicy,
) -> rusqlite::Result<Vec<WaitingPartition>> {
    all_rows(
        conn,
        WAITING_PARTITIONS_SQL,
        [sql_count(effective_max_images(policy))],
        |row| {
            Ok(WaitingPartition {
                key: row.get(0)?,
                oldest: row.get(1)?,
                full: row.get::<_, Option<Millis>>(2)?.is_some(),
            })
        },
    )
}

pub(super) fn batch_images(conn: &Connection, batch_id: i64) -> rusqlite::Result<Vec<BatchImage>> {
    all_rows(conn, BATCH_IMAGES_SQL, [batch_id], |row| {
        Ok(BatchImage {
            image: image_ref_at(row, 0)?,
            instance_url: row.get(3)?,
            digest: row.get(4)?,
        })
    })
}

pub(super) fn claim(
    conn: &mut Connection,
    owner: String,
    now: Millis,
    policy: BatchPolicy,
    record_history: bool,
) -> rusqlite::Result<Option<ClaimedBatch>> {
    let tx = immediate(conn)?;
    let reclaimable: Option<i64> =
        optional_row(&tx, RECLAIMABLE_BATCH_SQL, [now], |row| row.get(0))?;
    let batch_id = match reclaimable {
        Some(batch_id) => batch_id,
        None => {
            // Among due partitions, the one whose oldest image waited longest.
            let due = waiting_partitions(&tx, &policy)?
                .into_iter()
                .filter(|partition| partition.due_at(now, &policy) <= now)
                .min_by(|a, b| (a.oldest, &a.key).cmp(&(b.oldest, &b.key)));
            let Some(due) = due else {
                return Ok(None);
            };
            let batch_id: i64 = tx
                .prepare_cached(CREATE_BATCH_SQL)?
                .query_row((&due.key, now), |row| row.get(0))?;
            tx.prepare_cached(ATTACH_IMAGES_SQL)?.execute((
                batch_id,
                &due.key,
                sql_count(effective_max_images(&policy)),
            ))?;
            batch_id
        }
    };
    let lease_until = now.saturating_add(policy.lease_ms);
    let (partition, attempt) = tx
        .prepare_cached(LEASE_BATCH_SQL)?
        .query_row((batch_id, &owner, lease_until), |row| {
            Ok((partition_at(row, 0)?, row.get::<_, u32>(3)?))
        })?;
    let images = batch_images(&tx, batch_id)?;
    if record_history {
        insert_batch_event(&tx, &BatchEvent::sent(batch_id, now))?;
    }
    tx.commit()?;
    Ok(Some(ClaimedBatch {
        id: batch_id,
        owner,
        partition,
        images,
        attempt,
        lease_until,
    }))
}

pub(super) fn next_due(
    conn: &mut Connection,
    now: Millis,
    policy: BatchPolicy,
) -> rusqlite::Result<Option<Millis>> {
    // One read transaction, so batches and images are seen at the same instant.
    let tx = conn.transaction()?;
    let batch_due: Option<Millis> = tx
        .prepare_cached("SELECT MIN(next_attempt_at) FROM batches")?
        .query_row([], |row| row.get(0))?;
    let partition_due = waiting_partitions(&tx, &policy)?
        .iter()
        .map(|partition| partition.due_at(now, &policy))
        .min();
    tx.finish()?;
    Ok(batch_due.into_iter().chain(partition_due).min())
}
