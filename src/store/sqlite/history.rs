//! Images' histories: every state change writes its events through here,
//! inside its own transaction.

use rusqlite::types::Type;
use rusqlite::{Connection, Row};

use super::rows::sql_count;
use crate::store::history::{EventKind, HistoryEvent, KeyedEvent};
use crate::store::{HistorySubject, Millis};

const INSERT_SQL: &str = "
    INSERT INTO image_history (image_key, at_ms, event, source, batch_id, api,
                               hss_status, hss_request_id, reason, digest)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// One event per image of a batch, each naming the source its row came from
/// (and its digest, when known);
/// the key is built as `ImageRef`'s `Display` builds it.
const INSERT_FOR_BATCH_SQL: &str = "
    INSERT INTO image_history (image_key, at_ms, event, source, batch_id, api,
                               hss_status, hss_request_id, reason, digest)
    SELECT namespace || '/' || name || ':' || tag, ?2, ?3, source, ?1, ?4, ?5, ?6, ?7,
           COALESCE(?8, digest)
    FROM pending_images WHERE batch_id = ?1 ORDER BY enqueued_at, id";

/// The newest `?2` events of one image, oldest first.
const HISTORY_SQL: &str = "
    SELECT at_ms, event, source, batch_id, api, hss_status, hss_request_id, reason, digest
    FROM (SELECT * FROM image_history WHERE image_key = ?1
          ORDER BY at_ms DESC, id DESC LIMIT ?2)
    ORDER BY at_ms, id";

/// Writes `events` inside the caller's transaction.
pub(super) fn record(tx: &Connection, events: &[KeyedEvent]) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(INSERT_SQL)?;
    for KeyedEvent { image_key, event } in events {
        insert.execute((
            image_key,
            event.at_ms,
            event.event.as_str(),
            &event.source,
            event.batch_id,
            event.api.as_deref(),
            event.hss_status,
            event.hss_request_id.as_deref(),
            event.reason.as_deref(),
            event.digest.as_deref(),
        ))?;
    }
    Ok(())
}

/// Writes `event` for every image of batch `batch_id`, inside the caller's
/// transaction and before the images leave it.
pub(super) fn record_batch(
    tx: &Connection,
    batch_id: i64,
    event: &HistoryEvent,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(INSERT_FOR_BATCH_SQL)?.execute((
        batch_id,
        event.at_ms,
        event.event.as_str(),
        event.api.as_deref(),
        event.hss_status,
        event.hss_request_id.as_deref(),
        event.reason.as_deref(),
        event.digest.as_deref(),
    ))
}

pub(super) fn history(
    conn: &mut Connection,
    subject: &HistorySubject,
    limit: usize,
) -> rusqlite::Result<Vec<HistoryEvent>> {
    conn.prepare_cached(HISTORY_SQL)?
        .query_map((subject.to_string(), sql_count(limit)), event_at)?
        .collect()
}

pub(super) fn prune(conn: &mut Connection, cutoff: Millis) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM image_history WHERE at_ms < ?1")?
        .execute([cutoff])
}

fn event_at(row: &Row<'_>) -> rusqlite::Result<HistoryEvent> {
    let kind: String = row.get(1)?;
    let event = EventKind::parse(&kind).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            Type::Text,
            format!("unknown history event {kind:?}").into(),
        )
    })?;
    Ok(HistoryEvent {
        at_ms: row.get(0)?,
        event,
        source: row.get(2)?,
        batch_id: row.get(3)?,
        api: row.get(4)?,
        hss_status: row.get(5)?,
        hss_request_id: row.get(6)?,
        reason: row.get(7)?,
        digest: row.get(8)?,
    })
}
