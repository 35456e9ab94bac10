//! The PostgreSQL [`Store`]: one database shared by every replica behind a
//! load balancer, so that one window across the cluster yields one HSS request
//! per partition and a dead replica's batch is taken over after its lease.
//!
//! - Enqueue relies on a partial unique index over images not yet in a batch:
//!   concurrent pushes of one image through two replicas store one row.
//!   Enqueues are group-committed ([`enqueue`]).
//! - Claims keep replicas from sharing or splitting a batch ([`claim`]).
//! - Connections speak TLS as the URL's `sslmode` says ([`connect_config`],
//!   [`tls`]).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql};

use super::group_commit::GroupCommit;
use super::history::{ADMIN_SOURCE, BatchEvent};
use super::stored_image::StoredImage;
use super::{
    Arrival, BatchImage, BatchPolicy, ClaimedBatch, DeadLetter, DeadLetterCause, EnqueueCounts,
    Enqueued, HistoryEvent, HistorySubject, Millis, PendingImage, RetryCause, ScanReceipt, Store,
    StoreError, StoreStats,
};

mod claim;
pub mod connect_config;
mod digests;
mod enqueue;
mod errors;
mod history;
mod migrate;
mod partition_walk;
mod poll_state;
mod pool;
mod rows;
mod tls;

use connect_config::ConnectConfig;
use enqueue::{GroupPlan, ImageRow, JobInput};
use errors::{from_pool, from_postgres};
use rows::{as_bigint, attempts_of, batch_image_of, count_of, get, partition_of};

/// The longest any one store operation may take before it is reported as
/// `Unavailable`: a database that stopped answering without closing the
/// connection must not hold webhooks (and `/readyz`) for minutes.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);

pub struct PostgresStore {
    pool: Pool,
    /// The database's hosts, for messages (see [`ConnectConfig::server`]).
    server: Arc<str>,
    schema: Option<String>,
    group: GroupCommit,
    /// `store.history_retention_s = 0` turns history off: nothing is recorded.
    record_history: bool,
    /// Whether this store's last claim formed a new batch (see
    /// [`claim::LookFirst`]); only a hint, so any ordering will do.
    last_claim_formed: AtomicBool,
}

impl fmt::Debug for PostgresStore {
    // The pool's own Debug shows the connection settings; keep them out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("server", &self.server)
            .field("schema", &self.schema)
            .field("connections", &status.size)
            .field("max_connections", &status.max_size)
            .finish()
    }
}

impl PostgresStore {
    /// A store on the database at `url` (`postgres://user:pass@host:5432/db`,
    /// any libpq-style parameter such as `?options=-csearch_path%3Dxyz`, and
    /// libpq's `sslmode` and `sslrootcert`: see [`connect_config`]).
    /// With `schema`, every connection works in that schema ([`Store::migrate`]
    /// creates it). Does not connect yet: an unreachable database shows up as
    /// [`StoreError::Unavailable`] on first use, within a few seconds.
    pub async fn connect(
        url: &str,
        pool_size: usize,
        schema: Option<&str>,
    ) -> Result<PostgresStore, StoreError> {
        let config =
            connect_config::parse(url).map_err(|error| StoreError::Query(error.to_string()))?;
        PostgresStore::connect_with(&config, pool_size, schema).await
    }

    /// Like [`PostgresStore::connect`], with `store.url` parsed already.
    pub async fn connect_with(
        config: &ConnectConfig,
        pool_size: usize,
        schema: Option<&str>,
    ) -> Result<PostgresStore, StoreError> {
        if let Some(schema) = schema {
            pool::validate_schema(schema)?;
        }
        let pool = pool::build(config, pool_size, schema)?;
        Ok(PostgresStore {
            pool,
            server: Arc::from(config.server()),
            schema: schema.map(str::to_string),
            group: GroupCommit::with_committers(committers(pool_size)),
            record_history: true,
            last_claim_formed: AtomicBool::new(false),
        })
    }

    /// Whether images' history is recorded (the default) or not at all.
    pub fn recording_history(mut self, record_history: bool) -> Self {
        self.record_history = record_history;
        self
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|error| from_pool(error, &self.server))
    }

    /// Runs `sql` (prepared once per connection) on a pooled connection
    /// within the operation timeout; the rows it returns, each read by `read`.
    async fn query_rows<T>(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        read: impl Fn(&Row) -> Result<T, StoreError> + Send,
    ) -> Result<Vec<T>, StoreError> {
        bounded(operation, async {
            let client = self.client().await?;
            let statement = client.prepare_cached(sql).await.map_err(from_postgres)?;
            let rows = client
                .query(&statement, params)
                .await
                .map_err(from_postgres)?;
            rows.iter().map(read).collect()
        })
        .await
    }

    /// [`PostgresStore::query_rows`] for a statement that returns one row at
    /// most (a lookup by primary key, a claim of one row): that row, if any.
    async fn query_row<T>(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        read: impl Fn(&Row) -> Result<T, StoreError> + Send,
    ) -> Result<Option<T>, StoreError> {
        let mut rows = self.query_rows(operation, sql, params, read).await?;
        Ok(rows.pop())
    }

    /// Runs `sql` (prepared once per connection) on a pooled connection
    /// within the operation timeout; how many rows it changed.
    async fn execute(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        bounded(operation, async {
            let client = self.client().await?;
            let statement = client.prepare_cached(sql).await.map_err(from_postgres)?;
            client
                .execute(&statement, params)
                .await
                .map_err(from_postgres)
        })
        .await
    }
}

/// Groups committing at once: while one waits for the server's WAL flush,
/// the next writes its rows (the server flushes concurrent commits
/// together), so a webhook rarely waits a whole commit for its turn. Two
/// connections stay free for claims and settles.
fn committers(pool_size: usize) -> usize {
    pool_size.saturating_sub(2).clamp(1, MAX_COMMITTERS)
}

/// More groups in flight than this only make each group smaller (measured:
/// 4 and 6 within the noise of each other, both ahead of 1; BENCHMARKS.md).
const MAX_COMMITTERS: usize = 6;

/// A finished batch (scanned, or moved to dead letters) and its images, in one
/// statement: the images have no foreign key to cascade from the batch
/// (migration 0005: its check cost every claimed image a trigger).
const DELETE_BATCH: &str = "
WITH images AS (DELETE FROM pending_images WHERE batch_id = $1)
DELETE FROM batches WHERE id = $1";

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
        let answer = self.group.queue(arrival, now, self.record_history);
        bounded(
            "enqueue",
            self.group.settle(answer, |jobs| {
                let pool = self.pool.clone();
                let server = Arc::clone(&self.server);
                async move {
                    // A panicked commit dropped its jobs, whose callers are
                    // then answered Unavailable by the group.
                    let _ = tokio::spawn(enqueue::commit_group(pool, server, jobs)).await;
                }
            }),
        )
        .await
    }

    async fn claim_batch(
        &self,
        owner: &str,
        now: Millis,
        policy: &BatchPolicy,
    ) -> Result<Option<ClaimedBatch>, StoreError> {
        bounded("claim_batch", async {
            let mut client = self.client().await?;
            let record = self.record_history;
            if let Some(batch) = claim::reclaim_batch(&client, owner, now, policy, record).await? {
                return Ok(Some(batch));
            }
            let look_first = if self.last_claim_formed.load(Ordering::Relaxed) {
                claim::LookFirst::No
            } else {
                claim::LookFirst::Yes
            };
            let formed =
                claim::form_batch(&mut client, owner, now, policy, record, look_first).await?;
            self.last_claim_formed
                .store(formed.is_some(), Ordering::Relaxed);
            Ok(formed)
        })
        .await
    }

    async fn next_due(
        &self,
        now: Millis,
        policy: &BatchPolicy,
    ) -> Result<Option<Millis>, StoreError> {
        bounded("next_due", async {
            let client = self.client().await?;
            claim::next_due(&client, now, policy).await
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
            let client = self.client().await?;
            // Its images go with it, in one statement, which also copies them
            // (as its snapshot sees them, before the delete) to history.
            let delete = client
                .prepare_cached(
                    "WITH kept AS (
                         INSERT INTO image_history (image_key, event, at_ms, source, batch_id,
                                                    digest, recorded_at)
                         SELECT namespace || '/' || name || ':' || tag, 'accepted', enqueued_at,
                                source, batch_id, digest, $2
                         FROM pending_images WHERE batch_id = $1 AND $6::boolean
                     ), images AS (
                         DELETE FROM pending_images WHERE batch_id = $1
                     ), scanned AS (
                         INSERT INTO batch_events (batch_id, event, at_ms, api, hss_status,
                                                   hss_request_id)
                         SELECT $1, 'scanned', $2, $3, $4, $5 WHERE $6::boolean
                     )
                     DELETE FROM batches WHERE id = $1",
                )
                .await
                .map_err(from_postgres)?;
            client
                .execute(
                    &delete,
                    &[
                        &batch.id,
                        &now,
                        &receipt.api,
                        &i32::from(receipt.hss_status),
                        &receipt.hss_request_id,
                        &self.record_history,
                    ],
                )
                .await
                .map_err(from_postgres)?;
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
            let client = self.client().await?;
            // The batch's images stay pending; only its `retried` is new.
            let release = client
                .prepare_cached(
                    "WITH released AS (
                         UPDATE batches
                         SET owner = NULL, lease_until = NULL, next_attempt_at = $3,
                             last_error = $4
                         WHERE id = $1 AND owner = $2
                         RETURNING id
                     ), retried AS (
                         INSERT INTO batch_events (batch_id, event, at_ms, hss_status,
                                                   hss_request_id, reason)
                         SELECT id, 'retried', $5, $6, $7, $4 FROM released WHERE $8::boolean
                     )
                     SELECT count(*) AS released FROM released",
                )
                .await
                .map_err(from_postgres)?;
            let released: i64 = get(
                &client
                    .query_one(
                        &release,
                        &[
                            &batch.id,
                            &batch.owner,
                            &not_before,
                            &cause.reason,
                            &now,
                            &cause.hss_status.map(i32::from),
                            &cause.hss_request_id,
                            &self.record_history,
                        ],
                    )
                    .await
                    .map_err(from_postgres)?,
                "released",
            )?;
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
            if self.record_history {
                history::keep_batch_images(&tx, batch.id, now).await?;
                history::insert_batch_event(&tx, &BatchEvent::dead_letter(batch.id, now, cause))
                    .await?;
            }
            tx.execute(DELETE_BATCH, &[&batch.id])
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
        self.query_rows(
            "pending",
            "SELECT image_type, instance_id, enterprise_project_id, namespace, name,
                    tag, instance_url, digest, enqueued_at, batch_id
             FROM pending_images ORDER BY enqueued_at, id LIMIT $1",
            &[&as_bigint(limit)],
            |row| {
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
            },
        )
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.query_rows(
            "dead_letters",
            "SELECT id, image_type, instance_id, enterprise_project_id, images,
                    http_status, error_code, error_msg, request_id, attempts, failed_at,
                    unresolved
             FROM dead_letters ORDER BY id DESC LIMIT $1",
            &[&as_bigint(limit)],
            |row| {
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
            },
        )
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
            let rows = images.iter().map(|image| ImageRow {
                partition: &partition,
                image: &image.image,
                instance_url: image.instance_url.as_deref(),
                digest: image.digest.as_deref(),
            });
            let requeue = JobInput {
                source: ADMIN_SOURCE,
                delivery: None,
                images: rows,
                ignored: &[],
                now,
            };
            let Some(Enqueued::Stored(mut counts)) = GroupPlan::new([requeue], self.record_history)
                .write(&tx)
                .await?
                .pop()
            else {
                return Err(StoreError::Query(format!(
                    "requeueing dead letter {id} did not store its images"
                )));
            };
            if let Some(digest) = digests::unresolved_of(&letter)? {
                counts.count(digests::insert_digest(&tx, &digest, now).await?);
            }
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
                .query_one(partition_walk::STATS, &[])
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
            let mut client = self.client().await?;
            // One snapshot: a batch settling meanwhile is seen before or after.
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(from_postgres)?;
            let events = history::read(&tx, subject, limit).await?;
            tx.commit().await.map_err(from_postgres)?;
            Ok(events)
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
