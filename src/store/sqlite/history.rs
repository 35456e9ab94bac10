//! The SQLite side of images' history (see [`crate::store::history`]):
//! rows written where a state ends, read back joined with the live queue.

use rusqlite::{Connection, Row};

use super::connection::immediate;
use super::rows::all_rows;
use crate::store::Millis;
use crate::store::history::{
    BatchEvent, EventKind, HistoryEvent, HistorySubject, ImageRecord, KeyedRecord, MERGE_AT,
    PRUNE_BATCH, assemble, batches_named,
};

/// Writes one rare event (duplicate, ignored, a digest's resolution).
pub(super) fn insert_record(
    tx: &Connection,
    record: &KeyedRecord,
    now: Millis,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO recent_history (image_key, event, at_ms, source, reason, digest, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute((
        &record.image_key,
        record.event.as_str(),
        record.at_ms,
        &record.source,
        record.reason.as_deref(),
        record.digest.as_deref(),
        now,
    ))?;
    Ok(())
}

pub(super) fn insert_batch_event(tx: &Connection, fact: &BatchEvent) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO batch_events (batch_id, event, at_ms, api, hss_status, hss_request_id, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute((
        fact.batch_id,
        fact.event.as_str(),
        fact.at_ms,
        fact.api.as_deref(),
        fact.hss_status,
        fact.hss_request_id.as_deref(),
        fact.reason.as_deref(),
    ))?;
    Ok(())
}

/// One set-based statement: every image of the batch leaves one history row
/// (its accepted facts and the batch), before the caller deletes it.
pub(super) fn keep_batch_images(
    tx: &Connection,
    batch_id: i64,
    now: Millis,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "INSERT INTO recent_history (image_key, event, at_ms, source, batch_id, digest, recorded_at)
         SELECT namespace || '/' || name || ':' || tag, 'accepted', enqueued_at, source,
                batch_id, digest, ?2
         FROM pending_images WHERE batch_id = ?1",
    )?
    .execute((batch_id, now))
}

/// Moves the rows of `recent_history` to the indexed table, sorted by image,
/// once [`MERGE_AT`] have gathered (or at once with `everything`); the
/// number moved.
pub(super) fn merge_recent(tx: &Connection, everything: bool) -> rusqlite::Result<usize> {
    let (oldest, newest): (Option<i64>, Option<i64>) = tx
        .prepare_cached("SELECT MIN(id), MAX(id) FROM recent_history")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let (Some(oldest), Some(newest)) = (oldest, newest) else {
        return Ok(0);
    };
    if !everything && newest - oldest + 1 < MERGE_AT {
        return Ok(0);
    }
    let moved = tx
        .prepare_cached(
            "INSERT INTO image_history (image_key, event, at_ms, source, batch_id, reason, digest,
                                        recorded_at)
             SELECT image_key, event, at_ms, source, batch_id, reason, digest, recorded_at
             FROM recent_history WHERE id <= ?1 ORDER BY image_key, id",
        )?
        .execute([newest])?;
    tx.prepare_cached("DELETE FROM recent_history WHERE id <= ?1")?
        .execute([newest])?;
    Ok(moved)
}

fn event_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<EventKind> {
    let text: String = row.get(idx)?;
    EventKind::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("unknown history event {text:?}").into(),
        )
    })
}

fn record_at(row: &Row<'_>) -> rusqlite::Result<ImageRecord> {
    Ok(ImageRecord {
        seq: row.get(0)?,
        at_ms: row.get(1)?,
        event: event_at(row, 2)?,
        source: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
        batch_id: row.get(4)?,
        reason: row.get(5)?,
        digest: row.get(6)?,
    })
}

/// The subject's history rows and its live queue rows. The live part scans
/// the queue (no index on image names: intake would pay for it on every
/// image); the queue holds what waits for the next window or two.
fn records(conn: &Connection, subject: &HistorySubject) -> rusqlite::Result<Vec<ImageRecord>> {
    let key = subject.to_string();
    let mut records: Vec<ImageRecord> = all_rows(
        conn,
        "SELECT id, at_ms, event, source, batch_id, reason, digest
             FROM image_history WHERE image_key = ?1
             UNION ALL
             SELECT id, at_ms, event, source, batch_id, reason, digest
             FROM recent_history WHERE image_key = ?1",
        [&key],
        record_at,
    )?;
    let live: Vec<ImageRecord> = match subject {
        HistorySubject::Tagged(image) => all_rows(
            conn,
            "SELECT id, enqueued_at, 'accepted', source, batch_id, NULL, digest
                 FROM pending_images WHERE namespace = ?1 AND name = ?2 AND tag = ?3",
            (&image.namespace, &image.name, &image.tag),
            record_at,
        )?,
        HistorySubject::Digest {
            namespace,
            name,
            digest,
        } => all_rows(
            conn,
            "SELECT id, enqueued_at, 'resolving', source, NULL, NULL, digest
                 FROM pending_digests WHERE namespace = ?1 AND name = ?2 AND digest = ?3",
            (namespace, name, digest),
            record_at,
        )?,
    };
    records.extend(live);
    Ok(records)
}

fn batch_events(conn: &Connection, batch_id: i64) -> rusqlite::Result<Vec<BatchEvent>> {
    all_rows(
        conn,
        "SELECT id, batch_id, at_ms, event, api, hss_status, hss_request_id, reason
         FROM batch_events WHERE batch_id = ?1 ORDER BY id",
        [batch_id],
        |row| {
            Ok(BatchEvent {
                seq: row.get(0)?,
                batch_id: row.get(1)?,
                at_ms: row.get(2)?,
                event: event_at(row, 3)?,
                api: row.get(4)?,
                hss_status: row.get(5)?,
                hss_request_id: row.get(6)?,
                reason: row.get(7)?,
            })
        },
    )
}

pub(super) fn history(
    conn: &mut Connection,
    subject: &HistorySubject,
    limit: usize,
) -> rusqlite::Result<Vec<HistoryEvent>> {
    // One read transaction: a batch settling meanwhile is seen before or after.
    let tx = conn.transaction()?;
    let records = records(&tx, subject)?;
    let mut facts = Vec::new();
    for batch_id in batches_named(&records) {
        facts.extend(batch_events(&tx, batch_id)?);
    }
    tx.finish()?;
    Ok(assemble(&records, &facts, limit))
}

/// Moves every recent row to the indexed table, then deletes the oldest rows
/// of history and batch events recorded before `cutoff`, at most
/// [`PRUNE_BATCH`] each: walks the row ids from the oldest and stops at the
/// first young row, so a pass costs what it deletes, not the table's size.
pub(super) fn prune(conn: &mut Connection, cutoff: Millis) -> rusqlite::Result<usize> {
    let tx = immediate(conn)?;
    merge_recent(&tx, true)?;
    let mut pruned = 0;
    for (table, time) in [("image_history", "recorded_at"), ("batch_events", "at_ms")] {
        pruned += tx
            .prepare_cached(&format!(
                "DELETE FROM {table}
                 WHERE id < COALESCE((SELECT id FROM {table} WHERE {time} >= ?1
                                      ORDER BY id LIMIT 1),
                                     (SELECT MAX(id) + 1 FROM {table}))
                   AND id < (SELECT MIN(id) FROM {table}) + ?2"
            ))?
            .execute((cutoff, PRUNE_BATCH))?;
    }
    tx.commit()?;
    Ok(pruned)
}
