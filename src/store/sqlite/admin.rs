//! What operators see and do (`/admin/*`, `/readyz`, metrics): listings,
//! stats, dead-letter retry, pruning of old delivery ids.

use rusqlite::Connection;

use super::claim::waiting_partitions_cte;
use super::connection::immediate;
use super::digests;
use super::enqueue::insert_unbatched;
use super::rows::{
    all_rows, count_at, image_ref_at, images_from_json, optional_row, partition_at, sql_count,
};
use crate::domain::ScanTarget;
use crate::store::history::ADMIN_SOURCE;
use crate::store::{DeadLetter, DeadLetterCause, EnqueueCounts, Millis, PendingImage, StoreStats};

pub(super) fn retry_dead_letter(
    conn: &mut Connection,
    letter_id: i64,
    now: Millis,
    record_history: bool,
) -> rusqlite::Result<Option<EnqueueCounts>> {
    let tx = immediate(conn)?;
    let letter = optional_row(
        &tx,
        "SELECT image_type, instance_id, enterprise_project_id, images, unresolved
         FROM dead_letters WHERE id = ?1",
        [letter_id],
        |row| {
            Ok((
                partition_at(row, 0)?,
                images_from_json(row, 3)?,
                digests::unresolved_from_json(row, 4)?,
            ))
        },
    )?;
    let Some((partition, images, unresolved)) = letter else {
        return Ok(None);
    };
    let mut counts = EnqueueCounts::default();
    if let Some(digest) = &unresolved {
        counts.count(digests::insert_digest(&tx, digest, now)?);
    }
    for image in images {
        let target = ScanTarget {
            partition: partition.clone(),
            image: image.image,
            instance_url: image.instance_url,
            digest: image.digest,
        };
        let stored = insert_unbatched(&tx, &target, ADMIN_SOURCE, now, record_history)?;
        counts.count(stored);
    }
    tx.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
        .execute([letter_id])?;
    tx.commit()?;
    Ok(Some(counts))
}

pub(super) fn pending(conn: &mut Connection, limit: usize) -> rusqlite::Result<Vec<PendingImage>> {
    all_rows(
        conn,
        "SELECT image_type, instance_id, enterprise_project_id, namespace, name, tag,
                        instance_url, enqueued_at, batch_id, digest
                 FROM pending_images ORDER BY enqueued_at, id LIMIT ?1",
        [sql_count(limit)],
        |row| {
            Ok(PendingImage {
                partition: partition_at(row, 0)?,
                image: image_ref_at(row, 3)?,
                instance_url: row.get(6)?,
                digest: row.get(9)?,
                enqueued_at: row.get(7)?,
                batch_id: row.get(8)?,
            })
        },
    )
}

pub(super) fn dead_letters(
    conn: &mut Connection,
    limit: usize,
) -> rusqlite::Result<Vec<DeadLetter>> {
    all_rows(
        conn,
        "SELECT id, image_type, instance_id, enterprise_project_id, images, http_status,
                        error_code, error_msg, request_id, attempts, failed_at, unresolved
                 FROM dead_letters ORDER BY id DESC LIMIT ?1",
        [sql_count(limit)],
        |row| {
            Ok(DeadLetter {
                id: row.get(0)?,
                partition: partition_at(row, 1)?,
                images: images_from_json(row, 4)?,
                unresolved: digests::unresolved_from_json(row, 11)?,
                cause: DeadLetterCause {
                    http_status: row.get(5)?,
                    error_code: row.get(6)?,
                    error_msg: row.get(7)?,
                    request_id: row.get(8)?,
                },
                attempts: row.get(9)?,
                failed_at: row.get(10)?,
            })
        },
    )
}

/// The oldest pending image's enqueue time, through the indexes the claims
/// use (there is no index on `enqueued_at` alone: every image would pay for
/// its update): the oldest waiting image of each partition, one seek per
/// partition, and the oldest of the few images in flight.
pub(super) const OLDEST_PENDING_SQL: &str = concat!(
    waiting_partitions_cte!(),
    "
    SELECT MIN(oldest) FROM (
        SELECT (SELECT MIN(p.enqueued_at) FROM pending_images AS p
                WHERE p.batch_id IS NULL AND p.partition_key = w.partition_key) AS oldest
        FROM waiting AS w WHERE w.partition_key IS NOT NULL
        UNION ALL
        SELECT MIN(enqueued_at) FROM pending_images WHERE batch_id IS NOT NULL
    )"
);

pub(super) fn stats(conn: &mut Connection) -> rusqlite::Result<StoreStats> {
    // One read transaction: both statements see the same snapshot.
    let tx = conn.transaction()?;
    let oldest_enqueued_at = tx
        .prepare_cached(OLDEST_PENDING_SQL)?
        .query_row([], |row| row.get(0))?;
    let stats = tx
        .prepare_cached(
            "SELECT (SELECT COUNT(*) FROM pending_images),
                        (SELECT COUNT(*) FROM batches WHERE lease_until IS NOT NULL),
                        (SELECT COUNT(*) FROM dead_letters)",
        )?
        .query_row([], |row| {
            Ok(StoreStats {
                pending_images: count_at(row, 0)?,
                oldest_enqueued_at,
                batches_in_flight: count_at(row, 1)?,
                dead_letters: count_at(row, 2)?,
            })
        })?;
    tx.commit()?;
    Ok(stats)
}

pub(super) fn prune_deliveries(conn: &mut Connection, cutoff: Millis) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM deliveries WHERE seen_at < ?1")?
        .execute([cutoff])
}
