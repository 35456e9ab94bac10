//! The PostgreSQL side of images' history (see [`crate::store::history`]).
//!
//! Unlike SQLite, PostgreSQL writes each history row straight into the
//! indexed `image_history`: its index pages are changed in shared buffers and
//! logged as one small WAL record per row, not rewritten whole per
//! transaction, so a random index insert costs a b-tree descent, not a page
//! write. Staging rows in an unindexed table and moving them in sorted bulk,
//! as SQLite must, cost more here than it saved: a heap insert, a delete and
//! a second insert per row, 36 % of the server's statement time under load
//! (BENCHMARKS.md, issue 14).
//!
//! `recent_history` stays, read and emptied by pruning: during a rolling
//! upgrade, replicas of the earlier version still stage their rows there.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::errors::from_postgres;
use super::rows::get;
use crate::store::history::{
    BatchEvent, EventKind, HistoryEvent, HistorySubject, ImageRecord, KeyedRecord, PRUNE_BATCH,
    assemble, batches_named,
};
use crate::store::{Millis, StoreError};

/// Writes rare events (a digest's duplicates and resolution), in one statement.
pub(super) async fn insert_records(
    client: &impl GenericClient,
    records: &[KeyedRecord],
    now: Millis,
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = records.iter().map(|r| r.image_key.as_str()).collect();
    let events: Vec<&str> = records.iter().map(|r| r.event.as_str()).collect();
    let at_ms: Vec<Millis> = records.iter().map(|r| r.at_ms).collect();
    let sources: Vec<&str> = records.iter().map(|r| r.source.as_str()).collect();
    let reasons: Vec<Option<&str>> = records.iter().map(|r| r.reason.as_deref()).collect();
    let digests: Vec<Option<&str>> = records.iter().map(|r| r.digest.as_deref()).collect();
    let insert = client
        .prepare_cached(
            "INSERT INTO image_history (image_key, event, at_ms, source, reason, digest,
                                        recorded_at)
             SELECT r.*, $7::bigint
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                         $6::text[]) AS r",
        )
        .await
        .map_err(from_postgres)?;
    client
        .execute(
            &insert,
            &[&keys, &events, &at_ms, &sources, &reasons, &digests, &now],
        )
        .await
        .map_err(from_postgres)?;
    Ok(())
}

pub(super) async fn insert_batch_event(
    client: &impl GenericClient,
    fact: &BatchEvent,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO batch_events (batch_id, event, at_ms, api, hss_status, hss_request_id,
                                       reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &fact.batch_id,
                &fact.event.as_str(),
                &fact.at_ms,
                &fact.api,
                &fact.hss_status.map(i32::from),
                &fact.hss_request_id,
                &fact.reason,
            ],
        )
        .await
        .map_err(from_postgres)?;
    Ok(())
}

/// One set-based statement: every image of the batch leaves one history row
/// (its accepted facts and the batch), before the caller deletes it.
pub(super) async fn keep_batch_images(
    client: &impl GenericClient,
    batch_id: i64,
    now: Millis,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO image_history (image_key, event, at_ms, source, batch_id, digest,
                                        recorded_at)
             SELECT namespace || '/' || name || ':' || tag, 'accepted', enqueued_at, source,
                    batch_id, digest, $2
             FROM pending_images WHERE batch_id = $1",
            &[&batch_id, &now],
        )
        .await
        .map_err(from_postgres)?;
    Ok(())
}

fn event_of(row: &Row) -> Result<EventKind, StoreError> {
    let text: String = get(row, "event")?;
    EventKind::parse(&text)
        .ok_or_else(|| StoreError::Query(format!("unknown history event {text:?} in the store")))
}

fn record_of(row: &Row) -> Result<ImageRecord, StoreError> {
    Ok(ImageRecord {
        seq: get(row, "id")?,
        at_ms: get(row, "at_ms")?,
        event: event_of(row)?,
        source: get::<Option<String>>(row, "source")?.unwrap_or_default(),
        batch_id: get(row, "batch_id")?,
        reason: get(row, "reason")?,
        digest: get(row, "digest")?,
    })
}

fn batch_event_of(row: &Row) -> Result<BatchEvent, StoreError> {
    let hss_status: Option<i32> = get(row, "hss_status")?;
    Ok(BatchEvent {
        seq: get(row, "id")?,
        batch_id: get(row, "batch_id")?,
        at_ms: get(row, "at_ms")?,
        event: event_of(row)?,
        api: get(row, "api")?,
        hss_status: hss_status.and_then(|status| u16::try_from(status).ok()),
        hss_request_id: get(row, "hss_request_id")?,
        reason: get(row, "reason")?,
    })
}

/// The subject's history rows, its live queue rows (a scan of the queue: an
/// index on image names would cost intake on every image), and the events of
/// the batches they name, read in one snapshot by the caller's transaction.
pub(super) async fn read(
    client: &impl GenericClient,
    subject: &HistorySubject,
    limit: usize,
) -> Result<Vec<HistoryEvent>, StoreError> {
    let key = subject.to_string();
    let mut rows = client
        .query(
            "SELECT id, at_ms, event, source, batch_id, reason, digest
             FROM image_history WHERE image_key = $1
             UNION ALL
             SELECT id, at_ms, event, source, batch_id, reason, digest
             FROM recent_history WHERE image_key = $1",
            &[&key],
        )
        .await
        .map_err(from_postgres)?;
    let live = match subject {
        HistorySubject::Tagged(image) => {
            client
                .query(
                    "SELECT id, enqueued_at AS at_ms, 'accepted' AS event, source, batch_id,
                            NULL::text AS reason, digest
                     FROM pending_images WHERE namespace = $1 AND name = $2 AND tag = $3",
                    &[&image.namespace, &image.name, &image.tag],
                )
                .await
        }
        HistorySubject::Digest {
            namespace,
            name,
            digest,
        } => {
            client
                .query(
                    "SELECT id, enqueued_at AS at_ms, 'resolving' AS event, source,
                            NULL::bigint AS batch_id, NULL::text AS reason, digest
                     FROM pending_digests
                     WHERE namespace = $1 AND name = $2 AND digest = $3",
                    &[namespace, name, digest],
                )
                .await
        }
    };
    rows.extend(live.map_err(from_postgres)?);
    let records: Vec<ImageRecord> = rows.iter().map(record_of).collect::<Result<_, _>>()?;
    let batch_ids = batches_named(&records);
    let facts: Vec<BatchEvent> = client
        .query(
            "SELECT id, batch_id, at_ms, event, api, hss_status, hss_request_id, reason
             FROM batch_events WHERE batch_id = ANY($1) ORDER BY id",
            &[&batch_ids],
        )
        .await
        .map_err(from_postgres)?
        .iter()
        .map(batch_event_of)
        .collect::<Result<_, _>>()?;
    Ok(assemble(&records, &facts, limit))
}

/// Moves what replicas of the earlier version staged in `recent_history` to
/// the indexed table, then deletes the oldest rows of history and batch
/// events written before `cutoff`, at most
/// [`PRUNE_BATCH`] each: walks the ids from the oldest and stops at the first
/// young row, so a pass costs what it deletes.
pub(super) async fn prune(client: &impl GenericClient, cutoff: Millis) -> Result<u64, StoreError> {
    client
        .execute(
            "WITH moved AS (DELETE FROM recent_history
                            RETURNING image_key, event, at_ms, source, batch_id, reason, digest,
                                      recorded_at)
             INSERT INTO image_history (image_key, event, at_ms, source, batch_id, reason, digest,
                                        recorded_at)
             SELECT * FROM moved",
            &[],
        )
        .await
        .map_err(from_postgres)?;
    let mut pruned = 0;
    for (table, time) in [("image_history", "recorded_at"), ("batch_events", "at_ms")] {
        pruned += client
            .execute(
                &format!(
                    "DELETE FROM {table}
                     WHERE id < COALESCE((SELECT id FROM {table} WHERE {time} >= $1
                                          ORDER BY id LIMIT 1),
                                         (SELECT MAX(id) + 1 FROM {table}))
                       AND id < (SELECT MIN(id) FROM {table}) + $2"
                ),
                &[&cutoff, &PRUNE_BATCH],
            )
            .await
            .map_err(from_postgres)?;
    }
    Ok(pruned)
}
