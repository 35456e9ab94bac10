//! The embedded [`Store`]: one SQLite file behind a deadpool-sqlite pool, for a
//! single bridge instance.
//!
//! # Why WAL and `synchronous=FULL`
//!
//! A 202 promises the sender that its images survive a crash, so a commit must
//! be on disk before `enqueue` returns. In WAL mode every commit appends to the
//! write-ahead log, and `synchronous=FULL` makes SQLite fsync that log at each
//! commit: a power cut after the 202 cannot lose the rows. (`NORMAL`, the usual
//! WAL companion, only syncs at checkpoints and may lose the last commits.)
//! WAL also lets readers (`/admin/pending`, stats, `/readyz`) run alongside the
//! one writer instead of blocking it.
//!
//! # Why claims stay exclusive
//!
//! SQLite has a single writer per database file, across threads and processes.
//! Every transaction that writes starts with `BEGIN IMMEDIATE`, which takes that
//! write lock before it reads anything, so the read that picks a batch and the
//! update that leases it form one step no other connection can interleave with;
//! two workers (or two processes on the same file) therefore never lease the same
//! batch while its lease holds. A deferred transaction would instead read first
//! and fail with `SQLITE_BUSY` on upgrade. `busy_timeout` makes a writer wait
//! for the lock rather than fail at once.
//!
//! All blocking SQLite work runs on the pool's `interact` (tokio's blocking
//! threads), never on the async runtime threads.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use deadpool_sqlite::{Config, Hook, HookError, InteractError, Pool, PoolError, Runtime};
use rusqlite::types::Type;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::{
    BatchImage, BatchPolicy, ClaimedBatch, DeadLetter, DeadLetterCause, DeliveryKey, EnqueueCounts,
    Enqueued, Millis, PendingImage, Store, StoreError, StoreStats,
};
use crate::domain::{ImageRef, ImageType, Partition, ScanTarget};

/// A schema step, applied once, in version order.
#[derive(Debug, Clone, Copy)]
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first. File names are `NNNN_name.sql`; a test checks
/// that this list and the directory agree.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: include_str!("migrations/sqlite/0001_initial.sql"),
}];

const SCHEMA_MIGRATIONS_DDL: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT   NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// Enough for every statement below, so cached statements are never evicted.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// How long the store waits before it calls the database unavailable.
#[derive(Debug, Clone, Copy)]
struct Patience {
    /// For the file's write lock, held by another connection or process.
    busy: Duration,
    /// For a free connection in the pool (and for opening a new one).
    pool: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Self {
            busy: Duration::from_secs(5),
            pool: Duration::from_secs(5),
        }
    }
}

/// The SQLite [`Store`]. Cheap to share behind an `Arc`; drop it inside the
/// tokio runtime (its connections close on blocking threads).
#[derive(Debug)]
pub struct SqliteStore {
    pool: Pool,
    path: Arc<PathBuf>,
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `path` and its parent
    /// directories, with up to `pool_size` connections. Opens one connection
    /// right away, so a path that cannot be used fails here, not at the first
    /// webhook. Does not touch the schema: call [`Store::migrate`].
    pub async fn open(path: &Path, pool_size: usize) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, pool_size, Patience::default()).await
    }

    async fn open_with(
        path: &Path,
        pool_size: usize,
        patience: Patience,
    ) -> Result<SqliteStore, StoreError> {
        let unavailable = |cause: String| {
            StoreError::Unavailable(format!("sqlite database {}: {cause}", path.display()))
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|err| {
                unavailable(format!(
                    "cannot create directory {}: {err}",
                    parent.display()
                ))
            })?;
        }
        let Ok(builder) = Config::new(path).builder(Runtime::Tokio1);
        let busy_timeout = patience.busy;
        let pool = builder
            .max_size(pool_size.max(1))
            .wait_timeout(Some(patience.pool))
            .create_timeout(Some(patience.pool))
            .recycle_timeout(Some(patience.pool))
            .post_create(Hook::async_fn(move |conn, _| {
                Box::pin(async move {
                    match conn
                        .interact(move |conn| configure_connection(conn, busy_timeout))
                        .await
                    {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(ConfigureError::Sql(err))) => Err(HookError::Backend(err)),
                        Ok(Err(ConfigureError::NotWal(mode))) => Err(HookError::message(format!(
                            "journal_mode stayed {mode:?} instead of WAL"
                        ))),
                        Err(err) => Err(HookError::message(format!(
                            "configuring the connection failed: {err}"
                        ))),
                    }
                })
            }))
            .build()
            .map_err(|err| unavailable(format!("cannot build the connection pool: {err}")))?;
        let store = SqliteStore {
            pool,
            path: Arc::new(path.to_path_buf()),
        };
        store.ping().await?;
        tracing::debug!(db = %path.display(), pool_size, "sqlite store opened");
        Ok(store)
    }

    /// Runs `work` on a pooled connection on a blocking thread. The outer error
    /// is about reaching the database; the inner one is what `work` returned.
    async fn run_raw<T, E, F>(
        &self,
        operation: &'static str,
        work: F,
    ) -> Result<Result<T, E>, StoreError>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let conn = self
            .pool
            .get()
            .await
            .map_err(|err| self.pool_failure(err))?;
        match conn.interact(work).await {
            Ok(result) => Ok(result),
            Err(InteractError::Panic(_)) => {
                tracing::error!(db = %self.path.display(), operation, "sqlite task panicked");
                Err(StoreError::Query(format!(
                    "{operation}: the database task panicked"
                )))
            }
            Err(InteractError::Cancelled) => Err(StoreError::Unavailable(format!(
                "sqlite database {}: {operation} was cancelled",
                self.path.display()
            ))),
        }
    }

    /// [`Self::run_raw`] for work whose failures are plain SQLite errors.
    async fn run<T, F>(&self, operation: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.run_raw(operation, work)
            .await?
            .map_err(|err| self.sql_failure(operation, err))
    }

    fn pool_failure(&self, err: PoolError) -> StoreError {
        let cause = match err {
            PoolError::Timeout(kind) => format!("timed out waiting for a connection ({kind:?})"),
            PoolError::Backend(err) => format!("cannot open: {err}"),
            PoolError::Closed => "the connection pool is closed".to_string(),
            PoolError::NoRuntimeSpecified => "the connection pool has no runtime".to_string(),
            PoolError::PostCreateHook(err) => format!("cannot configure a connection: {err}"),
        };
        StoreError::Unavailable(format!("sqlite database {}: {cause}", self.path.display()))
    }

    fn sql_failure(&self, operation: &'static str, err: rusqlite::Error) -> StoreError {
        if is_unavailable(&err) {
            StoreError::Unavailable(format!(
                "sqlite database {}: {operation}: {err}",
                self.path.display()
            ))
        } else {
            StoreError::Query(format!("{operation}: {err}"))
        }
    }
}

/// Errors that mean "this file cannot be used right now" (locked too long, not
/// openable, disk trouble) rather than "this statement is wrong".
fn is_unavailable(err: &rusqlite::Error) -> bool {
    match err {
        rusqlite::Error::SqliteFailure(failure, _) => matches!(
            failure.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::NotADatabase
        ),
        _ => false,
    }
}

#[derive(Debug)]
enum ConfigureError {
    Sql(rusqlite::Error),
    NotWal(String),
}

impl From<rusqlite::Error> for ConfigureError {
    fn from(err: rusqlite::Error) -> Self {
        ConfigureError::Sql(err)
    }
}

/// Per-connection settings; see the module docs for why.
fn configure_connection(conn: &mut Connection, busy: Duration) -> Result<(), ConfigureError> {
    // First, so that switching to WAL waits for a concurrent opener too.
    conn.busy_timeout(busy)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(ConfigureError::NotWal(mode));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(())
}

fn immediate(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// Why the schema could not be brought up to date.
#[derive(Debug)]
enum MigrationFailure {
    Sql(rusqlite::Error),
    Step {
        migration: Migration,
        err: rusqlite::Error,
    },
    Unknown {
        version: i64,
        name: String,
    },
    Renamed {
        migration: Migration,
        recorded: String,
    },
}

impl From<rusqlite::Error> for MigrationFailure {
    fn from(err: rusqlite::Error) -> Self {
        MigrationFailure::Sql(err)
    }
}

impl fmt::Display for MigrationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationFailure::Sql(err) => write!(f, "{err}"),
            MigrationFailure::Step { migration, err } => write!(
                f,
                "migration {:04}_{} failed: {err}",
                migration.version, migration.name
            ),
            MigrationFailure::Unknown { version, name } => write!(
                f,
                "the database has migration {version:04}_{name}, which this version does not \
                 know: it was upgraded by a newer bridge"
            ),
            MigrationFailure::Renamed {
                migration,
                recorded,
            } => write!(
                f,
                "migration {:04} is recorded as {recorded:?} but this version calls it {:?}",
                migration.version, migration.name
            ),
        }
    }
}

/// Applies the missing migrations in one `BEGIN IMMEDIATE` transaction, so a
/// second process starting at the same moment waits and then finds nothing to do.
/// Returns the versions it applied.
fn apply_migrations(
    conn: &mut Connection,
    migrations: &[Migration],
    now: Millis,
) -> Result<Vec<i64>, MigrationFailure> {
    let tx = immediate(conn)?;
    tx.execute_batch(SCHEMA_MIGRATIONS_DDL)?;
    let recorded: Vec<(i64, String)> = tx
        .prepare("SELECT version, name FROM schema_migrations ORDER BY version")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (version, name) in &recorded {
        match migrations.iter().find(|m| m.version == *version) {
            None => {
                return Err(MigrationFailure::Unknown {
                    version: *version,
                    name: name.clone(),
                });
            }
            Some(migration) if migration.name != name => {
                return Err(MigrationFailure::Renamed {
                    migration: *migration,
                    recorded: name.clone(),
                });
            }
            Some(_) => {}
        }
    }
    let mut applied = Vec::new();
    for migration in migrations {
        if recorded
            .iter()
            .any(|(version, _)| *version == migration.version)
        {
            continue;
        }
        tx.execute_batch(migration.sql)
            .map_err(|err| MigrationFailure::Step {
                migration: *migration,
                err,
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            (migration.version, migration.name, now),
        )?;
        applied.push(migration.version);
    }
    tx.commit()?;
    Ok(applied)
}

fn wall_clock_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| Millis::try_from(elapsed.as_millis()).unwrap_or(Millis::MAX))
        .unwrap_or(0)
}

/// An image inside `dead_letters.images` (a JSON array of these).
#[derive(Debug, Serialize, Deserialize)]
struct StoredImage {
    namespace: String,
    name: String,
    tag: String,
    instance_url: Option<String>,
}

impl From<&BatchImage> for StoredImage {
    fn from(image: &BatchImage) -> Self {
        StoredImage {
            namespace: image.image.namespace.clone(),
            name: image.image.name.clone(),
            tag: image.image.tag.clone(),
            instance_url: image.instance_url.clone(),
        }
    }
}

impl From<StoredImage> for BatchImage {
    fn from(image: StoredImage) -> Self {
        BatchImage {
            image: ImageRef::new(image.namespace, image.name, image.tag),
            instance_url: image.instance_url,
        }
    }
}

fn images_to_json(images: &[BatchImage]) -> rusqlite::Result<String> {
    let stored: Vec<StoredImage> = images.iter().map(StoredImage::from).collect();
    serde_json::to_string(&stored)
        .map_err(|err| rusqlite::Error::ToSqlConversionFailure(err.into()))
}

fn images_from_json(row: &Row<'_>, idx: usize) -> rusqlite::Result<Vec<BatchImage>> {
    let text: String = row.get(idx)?;
    let stored: Vec<StoredImage> = serde_json::from_str(&text)
        .map_err(|err| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, err.into()))?;
    Ok(stored.into_iter().map(BatchImage::from).collect())
}

/// Reads a partition stored as `image_type, instance_id, enterprise_project_id`
/// starting at column `first`.
fn partition_at(row: &Row<'_>, first: usize) -> rusqlite::Result<Partition> {
    let image_type: String = row.get(first)?;
    let image_type = ImageType::parse(&image_type).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            first,
            Type::Text,
            format!("unknown image_type {image_type:?}").into(),
        )
    })?;
    Ok(Partition {
        image_type,
        instance_id: row.get(first + 1)?,
        enterprise_project_id: row.get(first + 2)?,
    })
}

/// A `COUNT(*)` column: an `i64` that is never negative.
fn count_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let count: i64 = row.get(idx)?;
    u64::try_from(count).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, count))
}

fn sql_count(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Stores one image as waiting unless the same image already waits in its
/// partition; `true` when a row was added.
fn insert_unbatched(
    tx: &Transaction<'_>,
    partition: &Partition,
    image: &ImageRef,
    instance_url: Option<&str>,
    now: Millis,
) -> rusqlite::Result<bool> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO pending_images (partition_key, image_type, instance_id,
                 enterprise_project_id, namespace, name, tag, instance_url, enqueued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (partition_key, namespace, name, tag) WHERE batch_id IS NULL
             DO NOTHING",
        )?
        .execute((
            partition.key(),
            partition.image_type.as_str(),
            partition.instance_id.as_deref(),
            partition.enterprise_project_id.as_deref(),
            &image.namespace,
            &image.name,
            &image.tag,
            instance_url,
            now,
        ))?;
    Ok(inserted == 1)
}

/// Each partition with waiting images: its key, its oldest image's enqueue
/// time, and the enqueue time of its `?1`-th oldest (NULL when it holds fewer,
/// i.e. it is not full). Walks the partitions through the index one seek at a
/// time, so the cost grows with the number of partitions, not of images.
const WAITING_PARTITIONS_SQL: &str = "
    WITH RECURSIVE waiting (partition_key) AS (
        SELECT MIN(partition_key) FROM pending_images WHERE batch_id IS NULL
        UNION ALL
        SELECT (SELECT MIN(p.partition_key) FROM pending_images AS p
                WHERE p.batch_id IS NULL AND p.partition_key > waiting.partition_key)
        FROM waiting WHERE waiting.partition_key IS NOT NULL
    )
    SELECT w.partition_key,
           (SELECT MIN(p.enqueued_at) FROM pending_images AS p
            WHERE p.batch_id IS NULL AND p.partition_key = w.partition_key),
           (SELECT p.enqueued_at FROM pending_images AS p
            WHERE p.batch_id IS NULL AND p.partition_key = w.partition_key
            ORDER BY p.enqueued_at, p.id LIMIT 1 OFFSET ?1 - 1)
    FROM waiting AS w
    WHERE w.partition_key IS NOT NULL";

/// The batch that may be (re)claimed soonest: `next_attempt_at` is the lease
/// end while leased and the retry time once released.
const RECLAIMABLE_BATCH_SQL: &str = "
    SELECT id FROM batches WHERE next_attempt_at <= ?1
    ORDER BY next_attempt_at, id LIMIT 1";

const CREATE_BATCH_SQL: &str = "
    INSERT INTO batches (partition_key, image_type, instance_id, enterprise_project_id,
                         next_attempt_at, attempts, created_at)
    SELECT partition_key, image_type, instance_id, enterprise_project_id, ?2, 0, ?2
    FROM pending_images
    WHERE batch_id IS NULL AND partition_key = ?1
    ORDER BY enqueued_at, id LIMIT 1
    RETURNING id";

const ATTACH_IMAGES_SQL: &str = "
    UPDATE pending_images SET batch_id = ?1
    WHERE id IN (SELECT id FROM pending_images
                 WHERE batch_id IS NULL AND partition_key = ?2
                 ORDER BY enqueued_at, id LIMIT ?3)";

const LEASE_BATCH_SQL: &str = "
    UPDATE batches
    SET owner = ?2, lease_until = ?3, next_attempt_at = ?3, attempts = attempts + 1
    WHERE id = ?1
    RETURNING image_type, instance_id, enterprise_project_id, attempts";

const BATCH_IMAGES_SQL: &str = "
    SELECT namespace, name, tag, instance_url FROM pending_images
    WHERE batch_id = ?1 ORDER BY enqueued_at, id";

/// A partition with waiting images, as [`WAITING_PARTITIONS_SQL`] reports it.
struct WaitingPartition {
    key: String,
    oldest: Millis,
    full: bool,
}

impl WaitingPartition {
    /// When the partition may be sent: at once when full, else once its
    /// oldest image waited a window.
    fn due_at(&self, now: Millis, policy: &BatchPolicy) -> Millis {
        let window_end = self.oldest.saturating_add(policy.window_ms);
        if self.full {
            window_end.min(now)
        } else {
            window_end
        }
    }
}

fn effective_max_images(policy: &BatchPolicy) -> usize {
    // A batch must carry something, or a claim would create empty batches forever.
    policy.max_images.max(1)
}

fn waiting_partitions(
    conn: &Connection,
    policy: &BatchPolicy,
) -> rusqlite::Result<Vec<WaitingPartition>> {
    conn.prepare_cached(WAITING_PARTITIONS_SQL)?
        .query_map([sql_count(effective_max_images(policy))], |row| {
            Ok(WaitingPartition {
                key: row.get(0)?,
                oldest: row.get(1)?,
                full: row.get::<_, Option<Millis>>(2)?.is_some(),
            })
        })?
        .collect()
}

fn batch_images(conn: &Connection, batch_id: i64) -> rusqlite::Result<Vec<BatchImage>> {
    conn.prepare_cached(BATCH_IMAGES_SQL)?
        .query_map([batch_id], |row| {
            Ok(BatchImage {
                image: ImageRef::new(
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ),
                instance_url: row.get(3)?,
            })
        })?
        .collect()
}

fn claim(
    conn: &mut Connection,
    owner: String,
    now: Millis,
    policy: BatchPolicy,
) -> rusqlite::Result<Option<ClaimedBatch>> {
    let tx = immediate(conn)?;
    let reclaimable: Option<i64> = tx
        .prepare_cached(RECLAIMABLE_BATCH_SQL)?
        .query_row([now], |row| row.get(0))
        .optional()?;
    let batch_id = match reclaimable {
        Some(batch_id) => batch_id,
        None => {
            // Among due partitions, the one whose oldest image waited longest.
            let due = waiting_partitions(&tx, &policy)?
                .into_iter()
                .filter(|partition| partition.due_at(now, &policy) <= now)
                .min_by(|a, b| (a.oldest, &a.key).cmp(&(b.oldest, &b.key)));
            let Some(due) = due else {
                return Ok(None);
            };
            let batch_id: i64 = tx
                .prepare_cached(CREATE_BATCH_SQL)?
                .query_row((&due.key, now), |row| row.get(0))?;
            tx.prepare_cached(ATTACH_IMAGES_SQL)?.execute((
                batch_id,
                &due.key,
                sql_count(effective_max_images(&policy)),
            ))?;
            batch_id
        }
    };
    let lease_until = now.saturating_add(policy.lease_ms);
    let (partition, attempt) = tx
        .prepare_cached(LEASE_BATCH_SQL)?
        .query_row((batch_id, &owner, lease_until), |row| {
            Ok((partition_at(row, 0)?, row.get::<_, u32>(3)?))
        })?;
    let images = batch_images(&tx, batch_id)?;
    tx.commit()?;
    Ok(Some(ClaimedBatch {
        id: batch_id,
        owner,
        partition,
        images,
        attempt,
        lease_until,
    }))
}

fn next_due(
    conn: &mut Connection,
    now: Millis,
    policy: BatchPolicy,
) -> rusqlite::Result<Option<Millis>> {
    // One read transaction, so batches and images are seen at the same instant.
    let tx = conn.transaction()?;
    let batch_due: Option<Millis> = tx
        .prepare_cached("SELECT MIN(next_attempt_at) FROM batches")?
        .query_row([], |row| row.get(0))?;
    let partition_due = waiting_partitions(&tx, &policy)?
        .iter()
        .map(|partition| partition.due_at(now, &policy))
        .min();
    tx.finish()?;
    Ok(batch_due.into_iter().chain(partition_due).min())
}

fn enqueue(
    conn: &mut Connection,
    delivery: Option<DeliveryKey>,
    targets: Vec<ScanTarget>,
    now: Millis,
) -> rusqlite::Result<Enqueued> {
    let tx = immediate(conn)?;
    if let Some(key) = &delivery {
        let first_time = tx
            .prepare_cached(
                "INSERT INTO deliveries (source, id, seen_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (source, id) DO NOTHING",
            )?
            .execute((&key.source, &key.id, now))?;
        if first_time == 0 {
            return Ok(Enqueued::DuplicateDelivery);
        }
    }
    let mut counts = EnqueueCounts::default();
    for target in &targets {
        if insert_unbatched(
            &tx,
            &target.partition,
            &target.image,
            target.instance_url.as_deref(),
            now,
        )? {
            counts.accepted += 1;
        } else {
            counts.duplicates += 1;
        }
    }
    tx.commit()?;
    Ok(Enqueued::Stored(counts))
}

fn complete(conn: &mut Connection, batch_id: i64) -> rusqlite::Result<usize> {
    let tx = immediate(conn)?;
    let images = tx
        .prepare_cached("DELETE FROM pending_images WHERE batch_id = ?1")?
        .execute([batch_id])?;
    tx.prepare_cached("DELETE FROM batches WHERE id = ?1")?
        .execute([batch_id])?;
    tx.commit()?;
    Ok(images)
}

fn dead_letter(
    conn: &mut Connection,
    batch_id: i64,
    cause: DeadLetterCause,
    now: Millis,
) -> rusqlite::Result<Option<i64>> {
    let tx = immediate(conn)?;
    let batch = tx
        .prepare_cached(
            "SELECT partition_key, image_type, instance_id, enterprise_project_id, attempts
             FROM batches WHERE id = ?1",
        )?
        .query_row([batch_id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                partition_at(row, 1)?,
                row.get::<_, u32>(4)?,
            ))
        })
        .optional()?;
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
    tx.prepare_cached("DELETE FROM pending_images WHERE batch_id = ?1")?
        .execute([batch_id])?;
    tx.prepare_cached("DELETE FROM batches WHERE id = ?1")?
        .execute([batch_id])?;
    tx.commit()?;
    Ok(Some(letter_id))
}

fn retry_dead_letter(
    conn: &mut Connection,
    letter_id: i64,
    now: Millis,
) -> rusqlite::Result<Option<EnqueueCounts>> {
    let tx = immediate(conn)?;
    let letter = tx
        .prepare_cached(
            "SELECT image_type, instance_id, enterprise_project_id, images
             FROM dead_letters WHERE id = ?1",
        )?
        .query_row([letter_id], |row| {
            Ok((partition_at(row, 0)?, images_from_json(row, 3)?))
        })
        .optional()?;
    let Some((partition, images)) = letter else {
        return Ok(None);
    };
    let mut counts = EnqueueCounts::default();
    for image in &images {
        if insert_unbatched(
            &tx,
            &partition,
            &image.image,
            image.instance_url.as_deref(),
            now,
        )? {
            counts.accepted += 1;
        } else {
            counts.duplicates += 1;
        }
    }
    tx.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
        .execute([letter_id])?;
    tx.commit()?;
    Ok(Some(counts))
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let now = wall_clock_ms();
        let applied = self
            .run_raw("migrate", move |conn| {
                apply_migrations(conn, MIGRATIONS, now)
            })
            .await?
            .map_err(|failure| {
                StoreError::Migration(format!(
                    "sqlite database {}: {failure}",
                    self.path.display()
                ))
            })?;
        for version in applied {
            tracing::info!(db = %self.path.display(), version, "applied schema migration");
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run("ping", |conn| {
            conn.prepare_cached("SELECT 1")?
                .query_row([], |row| row.get::<_, i64>(0))
        })
        .await
        .map(|_| ())
    }

    async fn enqueue(
        &self,
        delivery: Option<&DeliveryKey>,
        targets: &[ScanTarget],
        now: Millis,
    ) -> Result<Enqueued, StoreError> {
        let delivery = delivery.cloned();
        let targets = targets.to_vec();
        self.run("enqueue", move |conn| enqueue(conn, delivery, targets, now))
            .await
    }

    async fn claim_batch(
        &self,
        owner: &str,
        now: Millis,
        policy: &BatchPolicy,
    ) -> Result<Option<ClaimedBatch>, StoreError> {
        let owner = owner.to_string();
        let policy = *policy;
        let claimed = self
            .run("claim_batch", move |conn| claim(conn, owner, now, policy))
            .await?;
        if let Some(batch) = &claimed {
            tracing::debug!(
                batch_id = batch.id,
                partition = %batch.partition,
                images = batch.images.len(),
                attempt = batch.attempt,
                owner = %batch.owner,
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
        let policy = *policy;
        self.run("next_due", move |conn| next_due(conn, now, policy))
            .await
    }

    async fn complete(&self, batch: &ClaimedBatch) -> Result<(), StoreError> {
        let batch_id = batch.id;
        let images = self
            .run("complete", move |conn| complete(conn, batch_id))
            .await?;
        tracing::debug!(batch_id, images, "completed batch");
        Ok(())
    }

    async fn release_for_retry(
        &self,
        batch: &ClaimedBatch,
        not_before: Millis,
        last_error: &str,
    ) -> Result<(), StoreError> {
        let (batch_id, owner, attempt) = (batch.id, batch.owner.clone(), batch.attempt);
        let last_error = last_error.to_string();
        let released = self
            .run("release_for_retry", move |conn| {
                // Owner and attempt together name one lease: a stale handle, even
                // one from the same owner after its lease ran out, changes nothing.
                conn.prepare_cached(
                    "UPDATE batches
                     SET owner = NULL, lease_until = NULL, next_attempt_at = ?4, last_error = ?5
                     WHERE id = ?1 AND owner = ?2 AND attempts = ?3",
                )?
                .execute((batch_id, &owner, attempt, not_before, &last_error))
            })
            .await?;
        if released == 0 {
            tracing::debug!(batch_id, "batch was taken over; release ignored");
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        batch: &ClaimedBatch,
        cause: &DeadLetterCause,
        now: Millis,
    ) -> Result<(), StoreError> {
        let batch_id = batch.id;
        let cause = cause.clone();
        let letter = self
            .run("dead_letter", move |conn| {
                dead_letter(conn, batch_id, cause, now)
            })
            .await?;
        if let Some(letter_id) = letter {
            tracing::debug!(batch_id, letter_id, "moved batch to dead letters");
        }
        Ok(())
    }

    async fn pending(&self, limit: usize) -> Result<Vec<PendingImage>, StoreError> {
        self.run("pending", move |conn| {
            conn.prepare_cached(
                "SELECT image_type, instance_id, enterprise_project_id, namespace, name, tag,
                        instance_url, enqueued_at, batch_id
                 FROM pending_images ORDER BY enqueued_at, id LIMIT ?1",
            )?
            .query_map([sql_count(limit)], |row| {
                Ok(PendingImage {
                    partition: partition_at(row, 0)?,
                    image: ImageRef::new(
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, String>(5)?,
                    ),
                    instance_url: row.get(6)?,
                    enqueued_at: row.get(7)?,
                    batch_id: row.get(8)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.run("dead_letters", move |conn| {
            conn.prepare_cached(
                "SELECT id, image_type, instance_id, enterprise_project_id, images, http_status,
                        error_code, error_msg, request_id, attempts, failed_at
                 FROM dead_letters ORDER BY id DESC LIMIT ?1",
            )?
            .query_map([sql_count(limit)], |row| {
                Ok(DeadLetter {
                    id: row.get(0)?,
                    partition: partition_at(row, 1)?,
                    images: images_from_json(row, 4)?,
                    cause: DeadLetterCause {
                        http_status: row.get(5)?,
                        error_code: row.get(6)?,
                        error_msg: row.get(7)?,
                        request_id: row.get(8)?,
                    },
                    attempts: row.get(9)?,
                    failed_at: row.get(10)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn retry_dead_letter(
        &self,
        id: i64,
        now: Millis,
    ) -> Result<Option<EnqueueCounts>, StoreError> {
        self.run("retry_dead_letter", move |conn| {
            retry_dead_letter(conn, id, now)
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.run("stats", |conn| {
            conn.prepare_cached(
                "SELECT (SELECT COUNT(*) FROM pending_images),
                        (SELECT MIN(enqueued_at) FROM pending_images),
                        (SELECT COUNT(*) FROM batches WHERE lease_until IS NOT NULL),
                        (SELECT COUNT(*) FROM dead_letters)",
            )?
            .query_row([], |row| {
                Ok(StoreStats {
                    pending_images: count_at(row, 0)?,
                    oldest_enqueued_at: row.get(1)?,
                    batches_in_flight: count_at(row, 2)?,
                    dead_letters: count_at(row, 3)?,
                })
            })
        })
        .await
    }

    async fn prune_deliveries(&self, cutoff: Millis) -> Result<u64, StoreError> {
        let pruned = self
            .run("prune_deliveries", move |conn| {
                conn.prepare_cached("DELETE FROM deliveries WHERE seen_at < ?1")?
                    .execute([cutoff])
            })
            .await?;
        Ok(u64::try_from(pruned).unwrap_or(u64::MAX))
    }
}
