//! The PostgreSQL side of [`DigestQueue`]: digest-only pushes waiting for SWR
//! EE to name their tags, shared by every replica. A digest is claimed with
//! `FOR UPDATE SKIP LOCKED` and a lease, as batches are, so exactly one
//! replica asks SWR about it at a time.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::Json;

use super::PostgresStore;
use super::bounded;
use super::enqueue::{GroupPlan, ImageRow, JobInput};
use super::errors::from_postgres;
use super::history;
use super::rows::{as_bigint, count_of, get, partition_of};
use crate::store::history::{
    ALREADY_PENDING, EventKind, KeyedRecord, REDELIVERY, digest_ending_records,
};
use crate::store::{
    ClaimedDigest, DeadLetterCause, DeliveryKey, DigestQueue, DigestSettlement, EnqueueCounts,
    Enqueued, Millis, StoreError, UnresolvedDigest, WaitingDigest,
};

/// Queues a digest unless the same one already waits; `true` when added.
pub(super) async fn insert_digest(
    client: &impl GenericClient,
    digest: &UnresolvedDigest,
    now: Millis,
) -> Result<bool, StoreError> {
    let insert = client
        .prepare_cached(
            "INSERT INTO pending_digests (source, partition_key, image_type, instance_id,
                 enterprise_project_id, namespace, name, digest, instance_url, enqueued_at,
                 next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
             ON CONFLICT (source, partition_key, namespace, name, digest) DO NOTHING",
        )
        .await
        .map_err(from_postgres)?;
    let partition = &digest.partition;
    let inserted = client
        .execute(
            &insert,
            &[
                &digest.source,
                &partition.key(),
                &partition.image_type.as_str(),
                &partition.instance_id,
                &partition.enterprise_project_id,
                &digest.namespace,
                &digest.name,
                &digest.digest,
                &digest.instance_url,
                &now,
            ],
        )
        .await
        .map_err(from_postgres)?;
    Ok(inserted == 1)
}

/// A dead letter's `unresolved` column.
pub(super) fn unresolved_of(row: &Row) -> Result<Option<UnresolvedDigest>, StoreError> {
    let unresolved: Option<Json<UnresolvedDigest>> = get(row, "unresolved")?;
    Ok(unresolved.map(|Json(digest)| digest))
}

/// Reads the columns of an [`UnresolvedDigest`].
fn digest_of(row: &Row) -> Result<UnresolvedDigest, StoreError> {
    Ok(UnresolvedDigest {
        source: get(row, "source")?,
        partition: partition_of(row)?,
        namespace: get(row, "namespace")?,
        name: get(row, "name")?,
        digest: get(row, "digest")?,
        instance_url: get(row, "instance_url")?,
    })
}

fn counter_of(row: &Row, column: &str) -> Result<u32, StoreError> {
    let value: i32 = get(row, column)?;
    u32::try_from(value).map_err(|_| StoreError::Query(format!("negative {column} {value}")))
}

fn as_integer(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[async_trait]
impl DigestQueue for PostgresStore {
    async fn enqueue_digests(
        &self,
        delivery: Option<&DeliveryKey>,
        digests: &[UnresolvedDigest],
        now: Millis,
    ) -> Result<Enqueued, StoreError> {
        let duplicate = |digest: &UnresolvedDigest, reason: &str| {
            KeyedRecord::on_digest(digest, EventKind::Duplicate, now, Some(reason.to_string()))
        };
        bounded("enqueue_digests", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(from_postgres)?;
            if let Some(key) = delivery {
                let seen = tx
                    .query_opt(
                        "SELECT 1 FROM deliveries WHERE source = $1 AND id = $2",
                        &[&key.source, &key.id],
                    )
                    .await
                    .map_err(from_postgres)?;
                if seen.is_some() {
                    if self.record_history {
                        let records: Vec<KeyedRecord> =
                            digests.iter().map(|d| duplicate(d, REDELIVERY)).collect();
                        history::insert_records(&tx, &records, now).await?;
                    }
                    tx.commit().await.map_err(from_postgres)?;
                    return Ok(Enqueued::DuplicateDelivery);
                }
            }
            let mut counts = EnqueueCounts::default();
            let mut records = Vec::new();
            for digest in digests {
                let stored = insert_digest(&tx, digest, now).await?;
                if !stored {
                    records.push(duplicate(digest, ALREADY_PENDING));
                }
                counts.count(stored);
            }
            if self.record_history {
                history::insert_records(&tx, &records, now).await?;
            }
            tx.commit().await.map_err(from_postgres)?;
            Ok(Enqueued::Stored(counts))
        })
        .await
    }

    async fn claim_digest(
        &self,
        owner: &str,
        now: Millis,
        lease_ms: Millis,
    ) -> Result<Option<ClaimedDigest>, StoreError> {
        let lease_until = now.saturating_add(lease_ms);
        // SKIP LOCKED: a digest another replica is taking right now is not
        // ours; the row lock re-checks due-ness against its latest version.
        self.query_row(
            "claim_digest",
            "UPDATE pending_digests
                     SET owner = $1, claims = claims + 1, next_attempt_at = $2
                     WHERE id = (
                         SELECT id FROM pending_digests
                         WHERE next_attempt_at <= $3
                         ORDER BY next_attempt_at, id
                         LIMIT 1
                         FOR UPDATE SKIP LOCKED)
                     RETURNING id, source, image_type, instance_id, enterprise_project_id,
                               namespace, name, digest, instance_url, claims,
                               untagged_answers, failures, enqueued_at",
            &[&owner, &lease_until, &now],
            |row| {
                Ok(ClaimedDigest {
                    id: get(row, "id")?,
                    owner: owner.to_string(),
                    claim: counter_of(row, "claims")?,
                    lease_until,
                    digest: digest_of(row)?,
                    untagged_answers: counter_of(row, "untagged_answers")?,
                    failures: counter_of(row, "failures")?,
                    enqueued_at: get(row, "enqueued_at")?,
                })
            },
        )
        .await
    }

    async fn next_digest_due(&self) -> Result<Option<Millis>, StoreError> {
        bounded("next_digest_due", async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT min(next_attempt_at) AS due FROM pending_digests",
                    &[],
                )
                .await
                .map_err(from_postgres)?;
            get(&row, "due")
        })
        .await
    }

    async fn settle_digest(
        &self,
        claimed: &ClaimedDigest,
        settlement: DigestSettlement,
        now: Millis,
    ) -> Result<bool, StoreError> {
        bounded("settle_digest", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(from_postgres)?;
            let claim = as_integer(claimed.claim);
            let held = tx
                .query_opt(
                    "SELECT 1 FROM pending_digests
                     WHERE id = $1 AND owner = $2 AND claims = $3
                     FOR UPDATE",
                    &[&claimed.id, &claimed.owner, &claim],
                )
                .await
                .map_err(from_postgres)?;
            if held.is_none() {
                tx.rollback().await.map_err(from_postgres)?;
                return Ok(false);
            }
            if self.record_history
                && let Some(records) = digest_ending_records(claimed, &settlement, now)
            {
                history::insert_records(&tx, &records, now).await?;
            }
            let delete = "DELETE FROM pending_digests WHERE id = $1";
            match settlement {
                DigestSettlement::Resolved(targets) => {
                    tx.execute(delete, &[&claimed.id])
                        .await
                        .map_err(from_postgres)?;
                    let resolved = JobInput {
                        source: &claimed.digest.source,
                        delivery: None,
                        images: targets.iter().map(ImageRow::from),
                        ignored: &[],
                        now,
                    };
                    GroupPlan::new([resolved], self.record_history)
                        .write(&tx)
                        .await?;
                }
                DigestSettlement::AskAgain(next) => {
                    tx.execute(
                        "UPDATE pending_digests
                         SET owner = NULL, next_attempt_at = $2, untagged_answers = $3,
                             failures = $4, last_error = $5
                         WHERE id = $1",
                        &[
                            &claimed.id,
                            &next.not_before,
                            &as_integer(next.untagged_answers),
                            &as_integer(next.failures),
                            &next.last_error,
                        ],
                    )
                    .await
                    .map_err(from_postgres)?;
                }
                DigestSettlement::Drop { .. } => {
                    tx.execute(delete, &[&claimed.id])
                        .await
                        .map_err(from_postgres)?;
                }
                DigestSettlement::DeadLetter(cause) => {
                    insert_dead_letter(&tx, claimed, &cause, now).await?;
                    tx.execute(delete, &[&claimed.id])
                        .await
                        .map_err(from_postgres)?;
                }
            }
            tx.commit().await.map_err(from_postgres)?;
            Ok(true)
        })
        .await
    }

    async fn waiting_digests(&self, limit: usize) -> Result<Vec<WaitingDigest>, StoreError> {
        self.query_rows(
            "waiting_digests",
            "SELECT source, image_type, instance_id, enterprise_project_id, namespace,
                    name, digest, instance_url, enqueued_at, next_attempt_at,
                    untagged_answers, failures, last_error
             FROM pending_digests ORDER BY enqueued_at, id LIMIT $1",
            &[&as_bigint(limit)],
            |row| {
                Ok(WaitingDigest {
                    digest: digest_of(row)?,
                    enqueued_at: get(row, "enqueued_at")?,
                    next_attempt_at: get(row, "next_attempt_at")?,
                    untagged_answers: counter_of(row, "untagged_answers")?,
                    failures: counter_of(row, "failures")?,
                    last_error: get(row, "last_error")?,
                })
            },
        )
        .await
    }

    async fn digests_resolving(&self) -> Result<u64, StoreError> {
        bounded("digests_resolving", async {
            let client = self.client().await?;
            let row = client
                .query_one("SELECT count(*) AS waiting FROM pending_digests", &[])
                .await
                .map_err(from_postgres)?;
            count_of(&row, "waiting")
        })
        .await
    }
}

async fn insert_dead_letter(
    client: &impl GenericClient,
    claimed: &ClaimedDigest,
    cause: &DeadLetterCause,
    now: Millis,
) -> Result<(), StoreError> {
    let partition = &claimed.digest.partition;
    let no_images: Json<Vec<()>> = Json(Vec::new());
    client
        .execute(
            "INSERT INTO dead_letters (partition_key, image_type, instance_id,
                 enterprise_project_id, images, http_status, error_code, error_msg,
                 request_id, attempts, failed_at, unresolved)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &partition.key(),
                &partition.image_type.as_str(),
                &partition.instance_id,
                &partition.enterprise_project_id,
                &no_images,
                &cause.http_status.map(i32::from),
                &cause.error_code,
                &cause.error_msg,
                &cause.request_id,
                &as_integer(claimed.claim),
                &now,
                &Json(&claimed.digest),
            ],
        )
        .await
        .map_err(from_postgres)?;
    Ok(())
}
