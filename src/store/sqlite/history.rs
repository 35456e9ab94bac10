//! The SQLite side of images' history (see [`crate::store::history`]):
//! rows written to the queue file where a state ends, read back joined with
//! the live queue and the history file ([`super::history_file`]).

use rusqlite::{Connection, Row};

use super::history_file::HistoryFile;
use super::rows::all_rows;
use crate::store::Millis;
use crate::store::history::{
    BatchEvent, EventKind, HistoryEvent, HistorySubject, ImageRecord, KeyedRecord, PRUNE_BATCH,
    assemble, batches_named,
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

pub(super) fn record_at(row: &Row<'_>) -> rusqlite::Result<ImageRecord> {
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

/// The subject's rows in the queue file: its recent history rows and its
/// live queue rows, and the highest recent id ever given (the queue's
/// snapshot reaches that far). The live part scans the queue (no index on
/// image names: intake would pay for it on every image); the queue holds
/// what waits for the next window or two.
pub(super) fn queue_records(
    conn: &Connection,
    subject: &HistorySubject,
) -> rusqlite::Result<QueueRecords> {
    let recent: Vec<ImageRecord> = all_rows(
        conn,
        "SELECT id, at_ms, event, source, batch_id, reason, digest
             FROM recent_history WHERE image_key = ?1",
        [subject.to_string()],
        record_at,
    )?;
    let newest_id: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'recent_history'",
        )?
        .query_row([], |row| row.get(0))?;
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
    Ok(QueueRecords {
        key: subject.to_string(),
        recent,
        live,
        newest_id,
    })
}

/// What the queue file's snapshot holds of one subject.
pub(super) struct QueueRecords {
    key: String,
    recent: Vec<ImageRecord>,
    live: Vec<ImageRecord>,
    newest_id: i64,
}

impl QueueRecords {
    /// These records with the subject's rows in the history file, which must
    /// be read AFTER the queue's: a move between the two reads then neither
    /// hides nor doubles a row. A recent row the queue's snapshot saw is
    /// either still above the cursor read later (not moved: kept from here)
    /// or at or below it (moved, and in the same history snapshot as that
    /// cursor: kept from there). Read the other way round, a move and its
    /// delete in between would hide the rows it moved. History rows above
    /// `newest_id` were recorded after the queue's snapshot and are left
    /// out, so the answer is that snapshot's, batch events included.
    pub(super) fn with_moved(
        self,
        history_file: &HistoryFile,
    ) -> rusqlite::Result<Vec<ImageRecord>> {
        let (mut records, cursor) = history_file.rows(&self.key, self.newest_id)?;
        records.extend(self.recent.into_iter().filter(|record| record.seq > cursor));
        records.extend(self.live);
        Ok(records)
    }
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
    history_file: &HistoryFile,
    subject: &HistorySubject,
    limit: usize,
) -> rusqlite::Result<Vec<HistoryEvent>> {
    // One read transaction on the queue file: a batch settling meanwhile is
    // seen before or after, never half.
    let tx = conn.transaction()?;
    let records = queue_records(&tx, subject)?.with_moved(history_file)?;
    let mut facts = Vec::new();
    for batch_id in batches_named(&records) {
        facts.extend(batch_events(&tx, batch_id)?);
    }
    tx.finish()?;
    Ok(assemble(&records, &facts, limit))
}

/// Deletes the oldest batch events recorded before `cutoff`, at most
/// [`PRUNE_BATCH`]: walks the row ids from the oldest and stops at the first
/// young row, so a pass costs what it deletes, not the table's size. (The
/// history file prunes its rows the same way: [`HistoryFile::prune`].)
pub(super) fn prune_batch_events(conn: &mut Connection, cutoff: Millis) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM batch_events
         WHERE id < COALESCE((SELECT id FROM batch_events WHERE at_ms >= ?1 ORDER BY id LIMIT 1),
                             (SELECT MAX(id) + 1 FROM batch_events))
           AND id < (SELECT MIN(id) FROM batch_events) + ?2",
    )?
    .execute((cutoff, PRUNE_BATCH))
}
