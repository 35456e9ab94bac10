//! Ending a lease: HSS accepted the batch, refused it for good, or failed in
//! a way worth retrying.

use rusqlite::Connection;

use super::claim::batch_images;
use super::connection::immediate;
use super::history::{insert_batch_event, keep_batch_images};
use super::rows::{images_to_json, optional_row, partition_at};
use crate::store::history::BatchEvent;
use crate::store::{DeadLetterCause, Millis, RetryCause, ScanReceipt};

pub(super) fn complete(
    conn: &mut Connection,
    batch_id: i64,
    receipt: ScanReceipt,
    now: Millis,
    record_history: bool,
) -> rusqlite::Result<usize> {
    let tx = immediate(conn)?;
    if record_history {
        keep_batch_images(&tx, batch_id, now)?;
        insert_batch_event(&tx, &BatchEvent::scanned(batch_id, now, &receipt))?;
    }
    let images = tx
        .prepare_cached("DELETE FROM pending_images WHERE batch_id = ?1")?
        .execute([batch_id])?;
    tx.prepare_cached("DELETE FROM batches WHERE id = ?1")?
        .execute([batch_id])?;
    tx.commit()?;
    Ok(images)
}

pub(super) fn dead_letter(
    conn: &mut Connection,
    batch_id: i64,
    cause: DeadLetterCause,
    now: Millis,
    record_history: bool,
) -> rusqlite::Result<Option<i64>> {
    let tx = immediate(conn)?;
    let batch = optional_row(
        &tx,
        "SELECT partition_key, image_type, instance_id, enterprise_project_id, attempts
         FROM batches WHERE id = ?1",
        [batch_id],
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                partition_at(row, 1)?,
                row.get::<_, u32>(4)?,
            ))
        },
    )?;
    let Some((partition_key, partition, attempts)) = batch else {
        // Settled meanwhile by whoever took the batch over.
        return Ok(None);
    };
    let images = images_to_json(&batch_images(&tx, batch_id)?)?;
    let letter_id: i64 = tx
        .prepare_cached(
            "INSERT INTO dead_letters (partition_key, image_type, instance_id,
                 enterprise_project_id, images, http_status, error_code, error_msg,
                 request_id, attempts, failed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             RETURNING id",
        )?
        .query_row(
            (
                &partition_key,
                partition.image_type.as_str(),
                partition.instance_id.as_deref(),
                partition.enterprise_project_id.as_deref(),
                &images,
                cause.http_status,
                cause.error_code.as_deref(),
                &cause.error_msg,
                cause.request_id.as_deref(),
                attempts,
                now,
            ),
            |row| row.get(0),
        )?;
    if record_history {
        keep_batch_images(&tx, batch_id, now)?;
        insert_batch_event(&tx, &BatchEvent::dead_letter(batch_id, now, &cause))?;
    }
    tx.prepare_cached("DELETE FROM pending_images WHERE batch_id = ?1")?
        .execute([batch_id])?;
    tx.prepare_cached("DELETE FROM batches WHERE id = ?1")?
        .execute([batch_id])?;
    tx.commit()?;
    Ok(Some(letter_id))
}

/// Gives up the lease so the batch is claimed again at `not_before`; the
/// number of batches released (0 when the lease was no longer this one).
/// The lease a release gives up: owner and attempt together name one lease,
/// so a stale handle, even one from the same owner after its lease ran out,
/// changes nothing.
pub(super) struct Lease {
    pub batch_id: i64,
    pub owner: String,
    pub attempt: u32,
}

pub(super) fn release(
    conn: &mut Connection,
    lease: Lease,
    not_before: Millis,
    cause: RetryCause,
    now: Millis,
    record_history: bool,
) -> rusqlite::Result<usize> {
    let tx = immediate(conn)?;
    let released = tx
        .prepare_cached(
            "UPDATE batches
             SET owner = NULL, lease_until = NULL, next_attempt_at = ?4, last_error = ?5
             WHERE id = ?1 AND owner = ?2 AND attempts = ?3",
        )?
        .execute((
            lease.batch_id,
            &lease.owner,
            lease.attempt,
            not_before,
            &cause.reason,
        ))?;
    // Its images stay pending: their history is still the queue's, and only
    // the batch's fact is new.
    if released > 0 && record_history {
        insert_batch_event(&tx, &BatchEvent::retried(lease.batch_id, now, &cause))?;
    }
    tx.commit()?;
    Ok(released)
}
