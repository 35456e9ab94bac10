//! The SQLite side of [`DigestQueue`]: digest-only pushes waiting for SWR EE
//! to name their tags. Claims and settles are `BEGIN IMMEDIATE` transactions
//! like those of batches, so two resolvers never hold one digest at once.

use async_trait::async_trait;
use rusqlite::types::Type;
use rusqlite::{Connection, Row};

use super::SqliteStore;
use super::connection::immediate;
use super::enqueue::insert_unbatched;
use super::history::insert_record;
use super::rows::{all_rows, optional_row, partition_at, sql_count};
use crate::store::history::{
    ALREADY_PENDING, EventKind, KeyedRecord, REDELIVERY, digest_ending_records,
};
use crate::store::{
    ClaimedDigest, DeadLetterCause, DeliveryKey, DigestQueue, DigestSettlement, EnqueueCounts,
    Enqueued, Millis, StoreError, UnresolvedDigest, WaitingDigest,
};

/// The columns that make an [`UnresolvedDigest`], in [`digest_at`]'s order.
const DIGEST_COLUMNS: &str =
    "source, image_type, instance_id, enterprise_project_id, namespace, name, digest, instance_url";

/// Queues a digest unless the same one already waits; `true` when added.
pub(super) fn insert_digest(
    tx: &Connection,
    digest: &UnresolvedDigest,
    now: Millis,
) -> rusqlite::Result<bool> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO pending_digests (source, partition_key, image_type, instance_id,
                 enterprise_project_id, namespace, name, digest, instance_url, enqueued_at,
                 next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)
             ON CONFLICT (source, partition_key, namespace, name, digest) DO NOTHING",
        )?
        .execute((
            &digest.source,
            digest.partition.key(),
            digest.partition.image_type.as_str(),
            digest.partition.instance_id.as_deref(),
            digest.partition.enterprise_project_id.as_deref(),
            &digest.namespace,
            &digest.name,
            &digest.digest,
            digest.instance_url.as_deref(),
            now,
        ))?;
    Ok(inserted == 1)
}

/// A dead letter's `unresolved` column.
pub(super) fn unresolved_from_json(
    row: &Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<UnresolvedDigest>> {
    let Some(text) = row.get::<_, Option<String>>(idx)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|err| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, err.into()))
}

/// Reads [`DIGEST_COLUMNS`] starting at column `first`.
fn digest_at(row: &Row<'_>, first: usize) -> rusqlite::Result<UnresolvedDigest> {
    Ok(UnresolvedDigest {
        source: row.get(first)?,
        partition: partition_at(row, first + 1)?,
        namespace: row.get(first + 4)?,
        name: row.get(first + 5)?,
        digest: row.get(first + 6)?,
        instance_url: row.get(first + 7)?,
    })
}

fn enqueue_digests(
    conn: &mut Connection,
    delivery: Option<DeliveryKey>,
    digests: Vec<UnresolvedDigest>,
    now: Millis,
    record_history: bool,
) -> rusqlite::Result<Enqueued> {
    let tx = immediate(conn)?;
    let duplicate = |tx: &Connection, digest: &UnresolvedDigest, reason: &str| {
        if !record_history {
            return Ok(());
        }
        let record =
            KeyedRecord::on_digest(digest, EventKind::Duplicate, now, Some(reason.to_string()));
        insert_record(tx, &record, now)
    };
    if let Some(key) = &delivery {
        let seen = optional_row(
            &tx,
            "SELECT 1 FROM deliveries WHERE source = ?1 AND id = ?2",
            (&key.source, &key.id),
            |_| Ok(()),
        )?;
        if seen.is_some() {
            for digest in &digests {
                duplicate(&tx, digest, REDELIVERY)?;
            }
            tx.commit()?;
            return Ok(Enqueued::DuplicateDelivery);
        }
    }
    let mut counts = EnqueueCounts::default();
    for digest in &digests {
        let stored = insert_digest(&tx, digest, now)?;
        if !stored {
            duplicate(&tx, digest, ALREADY_PENDING)?;
        }
        counts.count(stored);
    }
    tx.commit()?;
    Ok(Enqueued::Stored(counts))
}

fn claim_digest(
    conn: &mut Connection,
    owner: String,
    now: Millis,
    lease_ms: Millis,
) -> rusqlite::Result<Option<ClaimedDigest>> {
    let tx = immediate(conn)?;
    let due: Option<i64> = optional_row(
        &tx,
        "SELECT id FROM pending_digests WHERE next_attempt_at <= ?1
         ORDER BY next_attempt_at, id LIMIT 1",
        [now],
        |row| row.get(0),
    )?;
    let Some(id) = due else {
        return Ok(None);
    };
    let lease_until = now.saturating_add(lease_ms);
    let claimed = tx
        .prepare_cached(&format!(
            "UPDATE pending_digests
             SET owner = ?2, claims = claims + 1, next_attempt_at = ?3
             WHERE id = ?1
             RETURNING {DIGEST_COLUMNS}, claims, untagged_answers, failures, enqueued_at"
        ))?
        .query_row((id, &owner, lease_until), |row| {
            Ok(ClaimedDigest {
                id,
                owner: owner.clone(),
                claim: row.get(8)?,
                lease_until,
                digest: digest_at(row, 0)?,
                untagged_answers: row.get(9)?,
                failures: row.get(10)?,
                enqueued_at: row.get(11)?,
            })
        })?;
    tx.commit()?;
    Ok(Some(claimed))
}

fn settle_digest(
    conn: &mut Connection,
    claimed: ClaimedDigest,
    settlement: DigestSettlement,
    now: Millis,
    record_history: bool,
) -> rusqlite::Result<bool> {
    let tx = immediate(conn)?;
    let lease = (claimed.id, &claimed.owner, claimed.claim);
    let held = optional_row(
        &tx,
        "SELECT 1 FROM pending_digests WHERE id = ?1 AND owner = ?2 AND claims = ?3",
        lease,
        |_| Ok(()),
    )?;
    if held.is_none() {
        return Ok(false);
    }
    if record_history {
        for record in digest_ending_records(&claimed, &settlement, now)
            .into_iter()
            .flatten()
        {
            insert_record(&tx, &record, now)?;
        }
    }
    let delete = |tx: &Connection| {
        tx.prepare_cached("DELETE FROM pending_digests WHERE id = ?1")?
            .execute([claimed.id])
    };
    match settlement {
        DigestSettlement::Resolved(targets) => {
            delete(&tx)?;
            for target in &targets {
                insert_unbatched(&tx, target, &claimed.digest.source, now, record_history)?;
            }
        }
        DigestSettlement::AskAgain(next) => {
            tx.prepare_cached(
                "UPDATE pending_digests
                 SET owner = NULL, next_attempt_at = ?2, untagged_answers = ?3, failures = ?4,
                     last_error = ?5
                 WHERE id = ?1",
            )?
            .execute((
                claimed.id,
                next.not_before,
                next.untagged_answers,
                next.failures,
                &next.last_error,
            ))?;
        }
        DigestSettlement::Drop { .. } => {
            delete(&tx)?;
        }
        DigestSettlement::DeadLetter(cause) => {
            insert_dead_letter(&tx, &claimed, &cause, now)?;
            delete(&tx)?;
        }
    }
    tx.commit()?;
    Ok(true)
}

fn insert_dead_letter(
    tx: &Connection,
    claimed: &ClaimedDigest,
    cause: &DeadLetterCause,
    now: Millis,
) -> rusqlite::Result<()> {
    let unresolved = serde_json::to_string(&claimed.digest)
        .map_err(|err| rusqlite::Error::ToSqlConversionFailure(err.into()))?;
    let partition = &claimed.digest.partition;
    tx.prepare_cached(
        "INSERT INTO dead_letters (partition_key, image_type, instance_id,
             enterprise_project_id, images, http_status, error_code, error_msg,
             request_id, attempts, failed_at, unresolved)
         VALUES (?1, ?2, ?3, ?4, '[]', ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute((
        partition.key(),
        partition.image_type.as_str(),
        partition.instance_id.as_deref(),
        partition.enterprise_project_id.as_deref(),
        cause.http_status,
        cause.error_code.as_deref(),
        &cause.error_msg,
        cause.request_id.as_deref(),
        claimed.claim,
        now,
        &unresolved,
    ))?;
    Ok(())
}

fn waiting_digests(conn: &mut Connection, limit: usize) -> rusqlite::Result<Vec<WaitingDigest>> {
    let sql = format!(
        "SELECT {DIGEST_COLUMNS}, enqueued_at, next_attempt_at, untagged_answers, failures,
                last_error
         FROM pending_digests ORDER BY enqueued_at, id LIMIT ?1"
    );
    all_rows(conn, &sql, [sql_count(limit)], |row| {
        Ok(WaitingDigest {
            digest: digest_at(row, 0)?,
            enqueued_at: row.get(8)?,
            next_attempt_at: row.get(9)?,
            untagged_answers: row.get(10)?,
            failures: row.get(11)?,
            last_error: row.get(12)?,
        })
    })
}

#[async_trait]
impl DigestQueue for SqliteStore {
    async fn enqueue_digests(
        &self,
        delivery: Option<&DeliveryKey>,
        digests: &[UnresolvedDigest],
        now: Millis,
    ) -> Result<Enqueued, StoreError> {
        let (delivery, digests) = (delivery.cloned(), digests.to_vec());
        let record_history = self.record_history;
        self.write("enqueue_digests", move |conn| {
            enqueue_digests(conn, delivery, digests, now, record_history)
        })
        .await
    }

    async fn claim_digest(
        &self,
        owner: &str,
        now: Millis,
        lease_ms: Millis,
    ) -> Result<Option<ClaimedDigest>, StoreError> {
        let owner = owner.to_string();
        self.write("claim_digest", move |conn| {
            claim_digest(conn, owner, now, lease_ms)
        })
        .await
    }

    async fn next_digest_due(&self) -> Result<Option<Millis>, StoreError> {
        self.run("next_digest_due", |conn| {
            conn.prepare_cached("SELECT MIN(next_attempt_at) FROM pending_digests")?
                .query_row([], |row| row.get(0))
        })
        .await
    }

    async fn settle_digest(
        &self,
        claimed: &ClaimedDigest,
        settlement: DigestSettlement,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let claimed = claimed.clone();
        let record_history = self.record_history;
        self.write("settle_digest", move |conn| {
            settle_digest(conn, claimed, settlement, now, record_history)
        })
        .await
    }

    async fn waiting_digests(&self, limit: usize) -> Result<Vec<WaitingDigest>, StoreError> {
        self.run("waiting_digests", move |conn| waiting_digests(conn, limit))
            .await
    }

    async fn digests_resolving(&self) -> Result<u64, StoreError> {
        let count: i64 = self
            .run("digests_resolving", |conn| {
                conn.prepare_cached("SELECT COUNT(*) FROM pending_digests")?
                    .query_row([], |row| row.get(0))
            })
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
