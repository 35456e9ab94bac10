//! Images' histories: every state change writes its events through here,
//! inside its own transaction.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::errors::from_postgres;
use crate::store::history::{EventKind, HistoryEvent, KeyedEvent};
use crate::store::{HistorySubject, Millis, StoreError};

/// One event per image of a batch, each naming the source its row came from
/// (and its digest, when known);
/// the key is built as `ImageRef`'s `Display` builds it.
const INSERT_FOR_BATCH_SQL: &str = "
    INSERT INTO image_history (image_key, at_ms, event, source, batch_id, api,
                               hss_status, hss_request_id, reason, digest)
    SELECT namespace || '/' || name || ':' || tag, $2, $3, source, $1, $4, $5, $6, $7,
           COALESCE($8, digest)
    FROM pending_images WHERE batch_id = $1 ORDER BY enqueued_at, id";

/// Writes `events` inside the caller's transaction, in one statement.
pub(super) async fn record(
    client: &impl GenericClient,
    events: &[KeyedEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::with_capacity(events.len());
    let mut at = Vec::with_capacity(events.len());
    let mut kinds = Vec::with_capacity(events.len());
    let mut sources = Vec::with_capacity(events.len());
    let mut batch_ids = Vec::with_capacity(events.len());
    let mut apis = Vec::with_capacity(events.len());
    let mut statuses = Vec::with_capacity(events.len());
    let mut request_ids = Vec::with_capacity(events.len());
    let mut reasons = Vec::with_capacity(events.len());
    let mut digests = Vec::with_capacity(events.len());
    for KeyedEvent { image_key, event } in events {
        keys.push(image_key.as_str());
        at.push(event.at_ms);
        kinds.push(event.event.as_str());
        sources.push(event.source.as_str());
        batch_ids.push(event.batch_id);
        apis.push(event.api.as_deref());
        statuses.push(event.hss_status.map(i32::from));
        request_ids.push(event.hss_request_id.as_deref());
        reasons.push(event.reason.as_deref());
        digests.push(event.digest.as_deref());
    }
    let insert = client
        .prepare_cached(
            "INSERT INTO image_history (image_key, at_ms, event, source, batch_id, api,
                                        hss_status, hss_request_id, reason, digest)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[],
                                  $5::bigint[], $6::text[], $7::int[], $8::text[],
                                  $9::text[], $10::text[])",
        )
        .await
        .map_err(from_postgres)?;
    client
        .execute(
            &insert,
            &[
                &keys,
                &at,
                &kinds,
                &sources,
                &batch_ids,
                &apis,
                &statuses,
                &request_ids,
                &reasons,
                &digests,
            ],
        )
        .await
        .map_err(from_postgres)?;
    Ok(())
}

/// Writes `event` for every image of batch `batch_id`, inside the caller's
/// transaction and before the images leave it.
pub(super) async fn record_batch(
    client: &impl GenericClient,
    batch_id: i64,
    event: &HistoryEvent,
) -> Result<u64, StoreError> {
    let insert = client
        .prepare_cached(INSERT_FOR_BATCH_SQL)
        .await
        .map_err(from_postgres)?;
    client
        .execute(
            &insert,
            &[
                &batch_id,
                &event.at_ms,
                &event.event.as_str(),
                &event.api,
                &event.hss_status.map(i32::from),
                &event.hss_request_id,
                &event.reason,
                &event.digest,
            ],
        )
        .await
        .map_err(from_postgres)
}

/// The newest `limit` events of `subject`, oldest first.
pub(super) async fn history(
    client: &impl GenericClient,
    subject: &HistorySubject,
    limit: i64,
) -> Result<Vec<HistoryEvent>, StoreError> {
    let select = client
        .prepare_cached(
            "SELECT at_ms, event, source, batch_id, api, hss_status, hss_request_id,
                    reason, digest
             FROM (SELECT * FROM image_history WHERE image_key = $1
                   ORDER BY at_ms DESC, id DESC LIMIT $2) AS newest
             ORDER BY at_ms, id",
        )
        .await
        .map_err(from_postgres)?;
    client
        .query(&select, &[&subject.to_string(), &limit])
        .await
        .map_err(from_postgres)?
        .iter()
        .map(event_of)
        .collect()
}

pub(super) async fn prune(client: &impl GenericClient, cutoff: Millis) -> Result<u64, StoreError> {
    client
        .execute("DELETE FROM image_history WHERE at_ms < $1", &[&cutoff])
        .await
        .map_err(from_postgres)
}

fn event_of(row: &Row) -> Result<HistoryEvent, StoreError> {
    let get_failed = |error| from_postgres(error);
    let kind: String = row.try_get("event").map_err(get_failed)?;
    let event = EventKind::parse(&kind)
        .ok_or_else(|| StoreError::Query(format!("unknown history event {kind:?} in the store")))?;
    let hss_status: Option<i32> = row.try_get("hss_status").map_err(get_failed)?;
    let hss_status = hss_status
        .map(|status| {
            u16::try_from(status)
                .map_err(|_| StoreError::Query(format!("HTTP status {status} in the store")))
        })
        .transpose()?;
    Ok(HistoryEvent {
        at_ms: row.try_get("at_ms").map_err(get_failed)?,
        event,
        source: row.try_get("source").map_err(get_failed)?,
        batch_id: row.try_get("batch_id").map_err(get_failed)?,
        api: row.try_get("api").map_err(get_failed)?,
        hss_status,
        hss_request_id: row.try_get("hss_request_id").map_err(get_failed)?,
        reason: row.try_get("reason").map_err(get_failed)?,
        digest: row.try_get("digest").map_err(get_failed)?,
    })
}
