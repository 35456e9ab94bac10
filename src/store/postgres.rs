//! The PostgreSQL [`Store`]: one database shared by every replica behind a
//! load balancer, so that one window across the cluster yields one HSS request
//! per partition and a dead replica's batch is taken over after its lease.
//!
//! How replicas stay out of each other's way:
//! - Enqueue relies on a partial unique index over images not yet in a batch:
//!   concurrent pushes of one image through two replicas store one row.
//! - A batch due again (retry time reached, lease expired) is taken with
//!   `FOR UPDATE SKIP LOCKED`, so exactly one replica gets it.
//! - A new batch is formed only while holding the partition's transaction-scoped
//!   advisory lock (a replica finding it taken moves on to another partition
//!   instead of waiting), and its images are read, locked and checked for
//!   due-ness again under that lock, so two replicas never split one
//!   partition's window into two requests.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;
use tokio_postgres::types::Json;

use super::history::{
    ADMIN_SOURCE, EventKind, HistoryEvent, KeyedEvent, TargetOutcome, arrival_events,
    digest_requeued_event,
};
use super::stored_image::StoredImage;
use super::{
    Arrival, BatchImage, BatchPolicy, ClaimedBatch, DeadLetter, DeadLetterCause, EnqueueCounts,
    Enqueued, HistorySubject, Millis, PendingImage, RetryCause, ScanReceipt, Store, StoreError,
    StoreStats,
};
use crate::domain::{ImageRef, ImageType, Partition};

mod digests;
mod errors;
mod history;
mod migrate;
mod poll_state;
mod pool;

use errors::{from_pool, from_postgres};

/// The longest any one store operation may take before it is reported as
/// `Unavailable`: a database that stopped answering without closing the
/// connection must not hold webhooks (and `/readyz`) for minutes.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Due partitions looked at per claim; the others wait for the next claim.
const CLAIM_CANDIDATES: i64 = 32;

pub struct PostgresStore {
    pool: Pool,
    schema: Option<String>,
}

impl fmt::Debug for PostgresStore {
    // The pool's own Debug shows the connection settings; keep them out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("connections", &status.size)
            .field("max_connections", &status.max_size)
            .finish()
    }
}

impl PostgresStore {
    /// A store on the database at `url` (`postgres://user:pass@host:5432/db`,
    /// any libpq-style parameter such as `?options=-csearch_path%3Dxyz`).
    /// With `schema`, every connection works in that schema ([`Store::migrate`]
    /// creates it). Does not connect yet: an unreachable database shows up as
    /// [`StoreError::Unavailable`] on first use, within a few seconds.
    pub async fn connect(
        url: &str,
        pool_size: usize,
        schema: Option<&str>,
    ) -> Result<PostgresStore, StoreError> {
        if let Some(schema) = schema {
            pool::validate_schema(schema)?;
        }
        let pool = pool::build(url, pool_size, schema)?;
        Ok(PostgresStore {
            pool,
            schema: schema.map(str::to_string),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(from_pool)
    }
}

/// Runs one store operation under [`OPERATION_TIMEOUT`].
async fn bounded<T>(
    operation: &'static str,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!(
            "PostgreSQL did not answer {operation} within {}s",
            OPERATION_TIMEOUT.as_secs()
        ))),
    }
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    column: &str,
) -> Result<T, StoreError> {
    row.try_get(column).map_err(from_postgres)
}

/// Rebuilds a partition from the `image_type`, `instance_id` and
/// `enterprise_project_id` columns that every table carries.
fn partition_of(row: &Row) -> Result<Partition, StoreError> {
    let image_type: String = get(row, "image_type")?;
    let image_type = ImageType::parse(&image_type).ok_or_else(|| {
        StoreError::Query(format!("unknown image_type {image_type:?} in the store"))
    })?;
    Ok(Partition {
        image_type,
        instance_id: get(row, "instance_id")?,
        enterprise_project_id: get(row, "enterprise_project_id")?,
    })
}

/// Reads the `namespace`, `name`, `tag`, `instance_url`, `digest` columns.
fn batch_image_of(row: &Row) -> Result<BatchImage, StoreError> {
    Ok(BatchImage {
        image: ImageRef::new(
            get::<String>(row, "namespace")?,
            get::<String>(row, "name")?,
            get::<String>(row, "tag")?,
        ),
        instance_url: get(row, "instance_url")?,
        digest: get(row, "digest")?,
    })
}

fn attempts_of(row: &Row) -> Result<u32, StoreError> {
    let attempts: i32 = get(row, "attempts")?;
    u32::try_from(attempts)
        .map_err(|_| StoreError::Query(format!("negative attempts {attempts} in the store")))
}

fn count_of(row: &Row, column: &str) -> Result<u64, StoreError> {
    let count: i64 = get(row, column)?;
    u64::try_from(count).map_err(|_| StoreError::Query(format!("negative {column} {count}")))
}

/// A `usize` limit as the BIGINT PostgreSQL wants.
fn as_bigint(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Inserts images that are not pending yet (outside a batch); the rest are
/// duplicates. Inserted one by one so that two equal images in one call
/// count as one accepted and one duplicate.
async fn insert_unbatched(
    client: &impl GenericClient,
    source: &str,
    partition: &Partition,
    images: &[(&ImageRef, Option<&str>, Option<&str>)],
    now: Millis,
) -> Result<Vec<TargetOutcome>, StoreError> {
    let insert = client
        .prepare_cached(
            "INSERT INTO pending_images (partition_key, image_type, instance_id,
                 enterprise_project_id, namespace, name, tag, instance_url, enqueued_at, digest,
                 source)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (partition_key, namespace, name, tag) WHERE batch_id IS NULL
             DO NOTHING",
        )
        .await
        .map_err(from_postgres)?;
    let partition_key = partition.key();
    let mut outcomes = Vec::with_capacity(images.len());
    for (image, instance_url, digest) in images {
        let inserted = client
            .execute(
                &insert,
                &[
                    &partition_key,
                    &partition.image_type.as_str(),
                    &partition.instance_id,
                    &partition.enterprise_project_id,
                    &image.namespace,
                    &image.name,
                    &image.tag,
                    &instance_url,
                    &now,
                    &digest,
                    &source,
                ],
            )
            .await
            .map_err(from_postgres)?;
        outcomes.push(if inserted == 1 {
            TargetOutcome::Accepted
        } else {
            TargetOutcome::Duplicate
        });
    }
    Ok(outcomes)
}

fn counts_of(outcomes: &[TargetOutcome]) -> EnqueueCounts {
    let accepted = outcomes
        .iter()
        .filter(|outcome| **outcome == TargetOutcome::Accepted)
        .count();
    EnqueueCounts {
        accepted,
        duplicates: outcomes.len() - accepted,
    }
}

/// The images of a batch, oldest first.
async fn images_of_batch(
    client: &impl GenericClient,
    batch_id: i64,
) -> Result<Vec<BatchImage>, StoreError> {
    let select = client
        .prepare_cached(
            "SELECT namespace, name, tag, instance_url, digest FROM pending_images
             WHERE batch_id = $1 ORDER BY enqueued_at, id",
        )
        .await
        .map_err(from_postgres)?;
    client
        .query(&select, &[&batch_id])
        .await
        .map_err(from_postgres)?
        .iter()
        .map(batch_image_of)
        .collect()
}

/// Takes over a batch whose retry time came or whose lease ran out.
async fn reclaim_batch(
    client: &mut deadpool_postgres::Client,
    owner: &str,
    now: Millis,
    policy: &BatchPolicy,
) -> Result<Option<ClaimedBatch>, StoreError> {
    let tx = client.transaction().await.map_err(from_postgres)?;
    // SKIP LOCKED: a batch another replica is taking right now is not ours;
    // the row lock also re-checks the condition against its latest version.
    let take = tx
        .prepare_cached(
            "UPDATE batches SET owner = $1, lease_until = $2, attempts = attempts + 1
             WHERE id = (
                 SELECT id FROM batches
                 WHERE COALESCE(lease_until, next_attempt_at) <= $3
                 ORDER BY COALESCE(lease_until, next_attempt_at), id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, image_type, instance_id, enterprise_project_id, attempts",
        )
        .await
        .map_err(from_postgres)?;
    let lease_until = now + policy.lease_ms;
    let Some(row) = tx
        .query_opt(&take, &[&owner, &lease_until, &now])
        .await
        .map_err(from_postgres)?
    else {
        tx.rollback().await.map_err(from_postgres)?;
        return Ok(None);
    };
    let id: i64 = get(&row, "id")?;
    history::record_batch(&tx, id, &HistoryEvent::sent(now, id, policy.api)).await?;
    let batch = ClaimedBatch {
        id,
        owner: owner.to_string(),
        partition: partition_of(&row)?,
        images: images_of_batch(&tx, id).await?,
        attempt: attempts_of(&row)?,
        lease_until,
    };
    tx.commit().await.map_err(from_postgres)?;
    Ok(Some(batch))
}

/// Forms a new batch of the oldest images of a due partition.
async fn form_batch(
    client: &mut deadpool_postgres::Client,
    owner: &str,
    now: Millis,
    policy: &BatchPolicy,
) -> Result<Option<ClaimedBatch>, StoreError> {
    let max_images = as_bigint(policy.max_images.max(1));
    let tx = client.transaction().await.map_err(from_postgres)?;
    let due_partitions = tx
        .prepare_cached(
            "SELECT partition_key FROM pending_images
             WHERE batch_id IS NULL
             GROUP BY partition_key
             HAVING count(*) >= $1 OR min(enqueued_at) + $2 <= $3
             ORDER BY min(enqueued_at), partition_key
             LIMIT $4",
        )
        .await
        .map_err(from_postgres)?;
    let candidates: Vec<String> = tx
        .query(
            &due_partitions,
            &[&max_images, &policy.window_ms, &now, &CLAIM_CANDIDATES],
        )
        .await
        .map_err(from_postgres)?
        .iter()
        .map(|row| get(row, "partition_key"))
        .collect::<Result<_, _>>()?;
    // Scoped by schema so that stores in other schemas (tests, other
    // deployments in one database) never block each other.
    let lock_partition = tx
        .prepare_cached(
            "SELECT pg_try_advisory_xact_lock(
                 hashtext(COALESCE(current_schema(), '')), hashtext($1)) AS locked",
        )
        .await
        .map_err(from_postgres)?;
    let oldest_unbatched = tx
        .prepare_cached(
            "SELECT id, image_type, instance_id, enterprise_project_id,
                    namespace, name, tag, instance_url, digest, enqueued_at
             FROM pending_images
             WHERE batch_id IS NULL AND partition_key = $1
             ORDER BY enqueued_at, id
             LIMIT $2
             FOR UPDATE",
        )
        .await
        .map_err(from_postgres)?;

    for partition_key in &candidates {
        let locked: bool = get(
            &tx.query_one(&lock_partition, &[partition_key])
                .await
                .map_err(from_postgres)?,
            "locked",
        )?;
        if !locked {
            // Another replica is forming this partition's batch right now.
            continue;
        }
        // Looked at again under the lock: a replica that formed a batch just
        // before may have left too few images, or images too young, to be due.
        let rows = tx
            .query(&oldest_unbatched, &[partition_key, &max_images])
            .await
            .map_err(from_postgres)?;
        let Some(oldest) = rows.first() else {
            continue;
        };
        let oldest_enqueued_at: Millis = get(oldest, "enqueued_at")?;
        let full = rows.len() as i64 >= max_images;
        if !full && oldest_enqueued_at + policy.window_ms > now {
            continue;
        }
        let partition = partition_of(oldest)?;
        let member_ids: Vec<i64> = rows
            .iter()
            .map(|row| get(row, "id"))
            .collect::<Result<_, _>>()?;
        let images: Vec<BatchImage> = rows.iter().map(batch_image_of).collect::<Result<_, _>>()?;
        let lease_until = now + policy.lease_ms;
        let batch_row = tx
            .query_one(
                "INSERT INTO batches (partition_key, image_type, instance_id,
                     enterprise_project_id, owner, lease_until, next_attempt_at,
                     attempts, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $7)
                 RETURNING id",
                &[
                    partition_key,
                    &partition.image_type.as_str(),
                    &partition.instance_id,
                    &partition.enterprise_project_id,
                    &owner,
                    &lease_until,
                    &now,
                ],
            )
            .await
            .map_err(from_postgres)?;
        let id: i64 = get(&batch_row, "id")?;
        tx.execute(
            "UPDATE pending_images SET batch_id = $1 WHERE id = ANY($2)",
            &[&id, &member_ids],
        )
        .await
        .map_err(from_postgres)?;
        history::record_batch(&tx, id, &HistoryEvent::sent(now, id, policy.api)).await?;
        tx.commit().await.map_err(from_postgres)?;
        return Ok(Some(ClaimedBatch {
            id,
            owner: owner.to_string(),
            partition,
            images,
            attempt: 1,
            lease_until,
        }));
    }
    tx.commit().await.map_err(from_postgres)?;
    Ok(None)
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        // No operation timeout: a replica may rightly wait for another
        // replica's migration to finish.
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(from_postgres)?;
        migrate::run(&tx, self.schema.as_deref()).await?;
        tx.commit().await.map_err(errors::from_migration)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        bounded("ping", async {
            let client = self.client().await?;
            client.simple_query("").await.map_err(from_postgres)?;
            Ok(())
        })
        .await
    }

    async fn enqueue_arrival(
        &self,
        arrival: &Arrival<'_>,
        now: Millis,
    ) -> Result<Enqueued, StoreError> {
        bounded("enqueue", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(from_postgres)?;
            if let Some(key) = arrival.delivery {
                // A concurrent first delivery makes this wait for its commit:
                // a duplicate only if the first one really was stored.
                let remembered = tx
                    .execute(
                        "INSERT INTO deliveries (source, id, seen_at) VALUES ($1, $2, $3)
                         ON CONFLICT (source, id) DO NOTHING",
                        &[&key.source, &key.id, &now],
                    )
                    .await
                    .map_err(from_postgres)?;
                if remembered == 0 {
                    let outcomes = vec![TargetOutcome::Redelivery; arrival.targets.len()];
                    history::record(&tx, &arrival_events(arrival, &outcomes, now)).await?;
                    tx.commit().await.map_err(from_postgres)?;
                    return Ok(Enqueued::DuplicateDelivery);
                }
            }
            let mut outcomes = Vec::with_capacity(arrival.targets.len());
            for target in arrival.targets {
                let one = insert_unbatched(
                    &tx,
                    arrival.source,
                    &target.partition,
                    &[(
                        &target.image,
                        target.instance_url.as_deref(),
                        target.digest.as_deref(),
                    )],
                    now,
                )
                .await?;
                outcomes.extend(one);
            }
            history::record(&tx, &arrival_events(arrival, &outcomes, now)).await?;
            tx.commit().await.map_err(from_postgres)?;
            Ok(Enqueued::Stored(counts_of(&outcomes)))
        })
        .await
    }

    async fn claim_batch(
        &self,
        owner: &str,
        now: Millis,
        policy: &BatchPolicy,
    ) -> Result<Option<ClaimedBatch>, StoreError> {
        let claimed = bounded("claim_batch", async {
            let mut client = self.client().await?;
            if let Some(batch) = reclaim_batch(&mut client, owner, now, policy).await? {
                return Ok(Some(batch));
            }
            form_batch(&mut client, owner, now, policy).await
        })
        .await?;
        if let Some(batch) = &claimed {
            tracing::debug!(
                batch_id = batch.id,
                partition = %batch.partition,
                images = batch.images.len(),
                attempt = batch.attempt,
                owner,
                "claimed batch"
            );
        }
        Ok(claimed)
    }

    async fn next_due(
        &self,
        now: Millis,
        policy: &BatchPolicy,
    ) -> Result<Option<Millis>, StoreError> {
        bounded("next_due", async {
            let client = self.client().await?;
            // A full partition is due at once: `now` stands for "already".
            let row = client
                .query_one(
                    "SELECT min(due) AS due FROM (
                         SELECT COALESCE(lease_until, next_attempt_at) AS due FROM batches
                         UNION ALL
                         SELECT CASE WHEN count(*) >= $1 THEN $3
                                     ELSE min(enqueued_at) + $2 END
                         FROM pending_images WHERE batch_id IS NULL
                         GROUP BY partition_key
                     ) AS due_times",
                    &[
                        &as_bigint(policy.max_images.max(1)),
                        &policy.window_ms,
                        &now,
                    ],
                )
                .await
                .map_err(from_postgres)?;
            get(&row, "due")
        })
        .await
    }

    async fn complete(
        &self,
        batch: &ClaimedBatch,
        receipt: &ScanReceipt,
        now: Millis,
    ) -> Result<(), StoreError> {
        bounded("complete", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(from_postgres)?;
            let scanned = HistoryEvent::scanned(now, batch.id, receipt);
            history::record_batch(&tx, batch.id, &scanned).await?;
            // Its images go with it (ON DELETE CASCADE), in one statement.
            tx.execute("DELETE FROM batches WHERE id = $1", &[&batch.id])
                .await
                .map_err(from_postgres)?;
            tx.commit().await.map_err(from_postgres)?;
            Ok(())
        })
        .await
    }

    async fn release_for_retry(
        &self,
        batch: &ClaimedBatch,
        not_before: Millis,
        cause: &RetryCause,
        now: Millis,
    ) -> Result<(), StoreError> {
        bounded("release_for_retry", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(from_postgres)?;
            let released = tx
                .execute(
                    "UPDATE batches
                     SET owner = NULL, lease_until = NULL, next_attempt_at = $3, last_error = $4
                     WHERE id = $1 AND owner = $2",
                    &[&batch.id, &batch.owner, &not_before, &cause.reason],
                )
                .await
                .map_err(from_postgres)?;
            if released > 0 {
                let retried = HistoryEvent::retried(now, batch.id, cause);
                history::record_batch(&tx, batch.id, &retried).await?;
            }
            tx.commit().await.map_err(from_postgres)?;
            if released == 0 {
                tracing::debug!(
                    batch_id = batch.id,
                    owner = %batch.owner,
                    "batch was taken over before its release; left to its new owner"
                );
            }
            Ok(())
        })
        .await
    }

    async fn dead_letter(
        &self,
        batch: &ClaimedBatch,
        cause: &DeadLetterCause,
        now: Millis,
    ) -> Result<(), StoreError> {
        bounded("dead_letter", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(from_postgres)?;
            // Locked first so that a concurrent completion cannot delete the
            // images between reading and moving them.
            let Some(stored) = tx
                .query_opt(
                    "SELECT partition_key, image_type, instance_id, enterprise_project_id, attempts
                     FROM batches WHERE id = $1 FOR UPDATE",
                    &[&batch.id],
                )
                .await
                .map_err(from_postgres)?
            else {
                tx.rollback().await.map_err(from_postgres)?;
                return Ok(());
            };
            let images = images_of_batch(&tx, batch.id).await?;
            let event = HistoryEvent::dead_letter(now, batch.id, cause);
            history::record_batch(&tx, batch.id, &event).await?;
            let images: Vec<StoredImage> = images.iter().map(StoredImage::from).collect();
            let partition_key: String = get(&stored, "partition_key")?;
            let partition = partition_of(&stored)?;
            let attempts: i32 = get(&stored, "attempts")?;
            tx.execute(
                "INSERT INTO dead_letters (partition_key, image_type, instance_id,
                     enterprise_project_id, images, http_status, error_code, error_msg,
                     request_id, attempts, failed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    &partition_key,
                    &partition.image_type.as_str(),
                    &partition.instance_id,
                    &partition.enterprise_project_id,
                    &Json(&images),
                    &cause.http_status.map(i32::from),
                    &cause.error_code,
                    &cause.error_msg,
                    &cause.request_id,
                    &attempts,
                    &now,
                ],
            )
            .await
            .map_err(from_postgres)?;
            tx.execute("DELETE FROM batches WHERE id = $1", &[&batch.id])
                .await
                .map_err(from_postgres)?;
            tx.commit().await.map_err(from_postgres)?;
            tracing::info!(
                batch_id = batch.id,
                partition = %partition,
                images = images.len(),
                attempts,
                "moved batch to dead letters"
            );
            Ok(())
        })
        .await
    }

    async fn pending(&self, limit: usize) -> Result<Vec<PendingImage>, StoreError> {
        bounded("pending", async {
            let client = self.client().await?;
            client
                .query(
                    "SELECT image_type, instance_id, enterprise_project_id, namespace, name,
                            tag, instance_url, digest, enqueued_at, batch_id
                     FROM pending_images ORDER BY enqueued_at, id LIMIT $1",
                    &[&as_bigint(limit)],
                )
                .await
                .map_err(from_postgres)?
                .iter()
                .map(|row| {
                    let BatchImage {
                        image,
                        instance_url,
                        digest,
                    } = batch_image_of(row)?;
                    Ok(PendingImage {
                        partition: partition_of(row)?,
                        image,
                        instance_url,
                        digest,
                        enqueued_at: get(row, "enqueued_at")?,
                        batch_id: get(row, "batch_id")?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        bounded("dead_letters", async {
            let client = self.client().await?;
            client
                .query(
                    "SELECT id, image_type, instance_id, enterprise_project_id, images,
                            http_status, error_code, error_msg, request_id, attempts, failed_at,
                            unresolved
                     FROM dead_letters ORDER BY id DESC LIMIT $1",
                    &[&as_bigint(limit)],
                )
                .await
                .map_err(from_postgres)?
                .iter()
                .map(|row| {
                    let Json(images) = get::<Json<Vec<StoredImage>>>(row, "images")?;
                    let http_status: Option<i32> = get(row, "http_status")?;
                    let http_status = http_status
                        .map(|status| {
                            u16::try_from(status).map_err(|_| {
                                StoreError::Query(format!("HTTP status {status} in the store"))
                            })
                        })
                        .transpose()?;
                    Ok(DeadLetter {
                        id: get(row, "id")?,
                        partition: partition_of(row)?,
                        images: images.into_iter().map(BatchImage::from).collect(),
                        unresolved: digests::unresolved_of(row)?,
                        cause: DeadLetterCause {
                            http_status,
                            error_code: get(row, "error_code")?,
                            error_msg: get(row, "error_msg")?,
                            request_id: get(row, "request_id")?,
                        },
                        attempts: attempts_of(row)?,
                        failed_at: get(row, "failed_at")?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn retry_dead_letter(
        &self,
        id: i64,
        now: Millis,
    ) -> Result<Option<EnqueueCounts>, StoreError> {
        bounded("retry_dead_letter", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(from_postgres)?;
            let Some(letter) = tx
                .query_opt(
                    "DELETE FROM dead_letters WHERE id = $1
                     RETURNING image_type, instance_id, enterprise_project_id, images, unresolved",
                    &[&id],
                )
                .await
                .map_err(from_postgres)?
            else {
                tx.rollback().await.map_err(from_postgres)?;
                return Ok(None);
            };
            let partition = partition_of(&letter)?;
            let Json(images) = get::<Json<Vec<StoredImage>>>(&letter, "images")?;
            let images: Vec<BatchImage> = images.into_iter().map(BatchImage::from).collect();
            let images: Vec<(&ImageRef, Option<&str>, Option<&str>)> = images
                .iter()
                .map(|image| {
                    (
                        &image.image,
                        image.instance_url.as_deref(),
                        image.digest.as_deref(),
                    )
                })
                .collect();
            let outcomes = insert_unbatched(&tx, ADMIN_SOURCE, &partition, &images, now).await?;
            let mut requeued: Vec<KeyedEvent> = images
                .iter()
                .zip(&outcomes)
                .map(|((image, _, _), outcome)| KeyedEvent {
                    image_key: image.to_string(),
                    event: HistoryEvent::requeued(
                        now,
                        match outcome {
                            TargetOutcome::Accepted => EventKind::Accepted,
                            _ => EventKind::Duplicate,
                        },
                    ),
                })
                .collect();
            let mut counts = counts_of(&outcomes);
            if let Some(digest) = digests::unresolved_of(&letter)? {
                if digests::insert_digest(&tx, &digest, now).await? {
                    counts.accepted += 1;
                    requeued.push(digest_requeued_event(&digest, now));
                } else {
                    counts.duplicates += 1;
                }
            }
            history::record(&tx, &requeued).await?;
            tx.commit().await.map_err(from_postgres)?;
            tracing::info!(
                dead_letter_id = id,
                accepted = counts.accepted,
                "requeued dead letter"
            );
            Ok(Some(counts))
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        bounded("stats", async {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "SELECT
                         (SELECT count(*) FROM pending_images) AS pending_images,
                         (SELECT min(enqueued_at) FROM pending_images) AS oldest_enqueued_at,
                         (SELECT count(*) FROM batches WHERE lease_until IS NOT NULL)
                             AS batches_in_flight,
                         (SELECT count(*) FROM dead_letters) AS dead_letters",
                    &[],
                )
                .await
                .map_err(from_postgres)?;
            Ok(StoreStats {
                pending_images: count_of(&row, "pending_images")?,
                oldest_enqueued_at: get(&row, "oldest_enqueued_at")?,
                batches_in_flight: count_of(&row, "batches_in_flight")?,
                dead_letters: count_of(&row, "dead_letters")?,
            })
        })
        .await
    }

    async fn prune_deliveries(&self, cutoff: Millis) -> Result<u64, StoreError> {
        bounded("prune_deliveries", async {
            let client = self.client().await?;
            client
                .execute("DELETE FROM deliveries WHERE seen_at < $1", &[&cutoff])
                .await
                .map_err(from_postgres)
        })
        .await
    }

    async fn history(
        &self,
        subject: &HistorySubject,
        limit: usize,
    ) -> Result<Vec<HistoryEvent>, StoreError> {
        bounded("history", async {
            let client = self.client().await?;
            history::history(&client, subject, as_bigint(limit)).await
        })
        .await
    }

    async fn prune_history(&self, cutoff: Millis) -> Result<u64, StoreError> {
        bounded("prune_history", async {
            let client = self.client().await?;
            history::prune(&client, cutoff).await
        })
        .await
    }
}
