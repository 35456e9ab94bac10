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
//! # Why enqueues are group-committed
//!
//! With one fsync per commit, webhooks answered one transaction at a time are
//! bounded by the disk's sync rate, and under load they queue on the write
//! lock (`busy_timeout` polls it with sleeps). Enqueues that arrive while a
//! commit runs are therefore written together in the next transaction, each in
//! its own savepoint, and each answered only once that transaction committed:
//! see [`super::group_commit`].
//!
//! All blocking SQLite work runs on the pool's `interact` (tokio's blocking
//! threads), never on the async runtime threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use deadpool_sqlite::{Config, Hook, HookError, InteractError, Pool, PoolError, Runtime};
use rusqlite::types::Type;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::stored_image::StoredImage;
use super::{
    BatchImage, BatchPolicy, ClaimedBatch, DeadLetter, DeadLetterCause, DeliveryKey, EnqueueCounts,
    Enqueued, Millis, PendingImage, Store, StoreError, StoreStats,
};
use crate::domain::{ImageRef, ImageType, Partition, ScanTarget};

use super::group_commit::{EnqueueJob, GroupCommit};

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
    path: PathBuf,
    group: GroupCommit,
    /// Taken on the blocking thread by every write transaction of this process
    /// (group commits, claims, settles), so that they queue on a mutex that
    /// wakes the next one when it is released, instead of polling SQLite's file
    /// lock: `busy_timeout` sleeps up to 100 ms between tries, which kept a
    /// claim waiting far behind a stream of group commits. Held only inside
    /// blocking tasks, never across an `.await`, so a future that is not being
    /// polled can never hold it. Between processes, `busy_timeout` still rules.
    write_turn: Arc<Mutex<()>>,
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
                        Ok(Err(err)) => Err(HookError::message(err.to_string())),
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
            path: path.to_path_buf(),
            group: GroupCommit::default(),
            write_turn: Arc::default(),
        };
        store.ping().await?;
        tracing::debug!(db = %path.display(), pool_size, "sqlite store opened");
        Ok(store)
    }

    /// Closes the pool: idle connections close now, the others when they are
    /// returned, and every later call fails as [`StoreError::Unavailable`].
    pub fn close(&self) {
        self.pool.close();
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
            Err(InteractError::Panic(payload)) => {
                let reason = panic_reason(payload.as_ref());
                tracing::error!(db = %self.path.display(), operation, reason, "sqlite task panicked");
                Err(StoreError::Query(format!(
                    "{operation}: the database task panicked: {reason}"
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
        sql_failure(&self.path, operation, &err)
    }

    /// Writes one group of queued enqueues in one transaction. Runs under the
    /// writer lock.
    async fn commit(&self, jobs: Vec<EnqueueJob>) {
        let conn = match self.pool.get().await {
            Ok(conn) => conn,
            Err(err) => {
                let message = self.pool_failure(err).to_string();
                for job in jobs {
                    job.answer(Err(StoreError::Unavailable(message.clone())));
                }
                return;
            }
        };
        let path = self.path.clone();
        let turn = Arc::clone(&self.write_turn);
        // The jobs move into the blocking task, which answers each one after
        // the commit: even if this future is dropped, no caller is left
        // waiting on a transaction that did commit.
        if let Err(err) = conn
            .interact(move |conn| {
                let _turn = take_turn(&turn);
                commit_group(conn, &path, jobs)
            })
            .await
        {
            // The jobs were dropped with the task: their callers get an error.
            tracing::error!(db = %self.path.display(), error = %err, "sqlite group commit task failed");
        }
    }

    /// [`Self::run`] for a write transaction: it takes its turn among this
    /// process's writers first (see `write_turn`).
    async fn write<T, F>(&self, operation: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let turn = Arc::clone(&self.write_turn);
        self.run(operation, move |conn| {
            let _turn = take_turn(&turn);
            work(conn)
        })
        .await
    }
}

/// Waits for this process's write turn, on a blocking thread.
fn take_turn(turn: &Mutex<()>) -> MutexGuard<'_, ()> {
    // The guarded value is `()`: a writer that panicked left nothing half-done
    // here (its transaction rolled back with its connection).
    turn.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A SQLite error as the store reports it: unavailable (retry later) or a
/// failed query.
fn sql_failure(path: &Path, operation: &'static str, err: &rusqlite::Error) -> StoreError {
    if is_unavailable(err) {
        StoreError::Unavailable(format!(
            "sqlite database {}: {operation}: {err}",
            path.display()
        ))
    } else {
        StoreError::Query(format!("{operation}: {err}"))
    }
}

fn panic_reason(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
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

#[derive(Debug, thiserror::Error)]
enum ConfigureError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("journal_mode stayed {0:?} instead of WAL")]
    NotWal(String),
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
#[derive(Debug, thiserror::Error)]
enum MigrationFailure {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("migration {:04}_{} failed: {err}", migration.version, migration.name)]
    Step {
        migration: Migration,
        err: rusqlite::Error,
    },
    #[error(
        "the database has migration {version:04}_{name}, which this version does not know: \
         it was upgraded by a newer bridge"
    )]
    Unknown { version: i64, name: String },
    #[error(
        "migration {:04} is recorded as {recorded:?} but this version calls it {:?}",
        migration.version,
        migration.name
    )]
    Renamed {
        migration: Migration,
        recorded: String,
    },
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
    tx: &Connection,
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

/// One transaction for a group of webhooks, each in its own savepoint; every
/// job is answered once the outcome of the commit is known.
fn commit_group(conn: &mut Connection, path: &Path, jobs: Vec<EnqueueJob>) {
    let failure = |err: &rusqlite::Error| sql_failure(path, "enqueue", err);
    let started = std::time::Instant::now();
    let webhooks = jobs.len();
    let mut tx = match immediate(conn) {
        Ok(tx) => tx,
        Err(err) => {
            let error = failure(&err);
            for job in jobs {
                job.answer(Err(same_error(&error)));
            }
            return;
        }
    };
    let outcomes: Vec<(EnqueueJob, rusqlite::Result<Enqueued>)> = jobs
        .into_iter()
        .map(|job| {
            let outcome = enqueue_in_savepoint(&mut tx, &job);
            (job, outcome)
        })
        .collect();
    let written = started.elapsed();
    // Only this COMMIT makes a job's answer Ok. If an error made SQLite roll the
    // whole transaction back (disk full, I/O error), the jobs before it were
    // lost too, and this COMMIT fails (no transaction is active, or a later
    // savepoint already ended on its own): every job then gets an error and
    // its sender retries.
    let committed = tx.commit();
    // Where a group's time goes: statements vs the commit's fsync (benchmarks read this).
    tracing::debug!(
        webhooks,
        write_us = written.as_micros() as u64,
        commit_us = (started.elapsed() - written).as_micros() as u64,
        ok = committed.is_ok(),
        "sqlite group commit"
    );
    match committed {
        Ok(()) => {
            for (job, outcome) in outcomes {
                job.answer(outcome.map_err(|err| failure(&err)));
            }
        }
        Err(err) => {
            let error = failure(&err);
            for (job, _) in outcomes {
                job.answer(Err(same_error(&error)));
            }
        }
    }
}

/// `StoreError` carries only text; one failure told to several callers.
fn same_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
        StoreError::Query(message) => StoreError::Query(message.clone()),
        StoreError::Migration(message) => StoreError::Migration(message.clone()),
    }
}

/// One webhook's rows; on error its savepoint rolls back and the group goes on.
fn enqueue_in_savepoint(tx: &mut Transaction<'_>, job: &EnqueueJob) -> rusqlite::Result<Enqueued> {
    let savepoint = tx.savepoint()?;
    let outcome = enqueue(&savepoint, job.delivery.as_ref(), &job.targets, job.now)?;
    savepoint.commit()?;
    Ok(outcome)
}

/// One webhook's delivery id and images, inside the caller's transaction.
fn enqueue(
    tx: &Connection,
    delivery: Option<&DeliveryKey>,
    targets: &[ScanTarget],
    now: Millis,
) -> rusqlite::Result<Enqueued> {
    if let Some(key) = delivery {
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
    for target in targets {
        if insert_unbatched(
            tx,
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
        let answer = self.group.queue(delivery.cloned(), targets.to_vec(), now);
        self.group.settle(answer, |jobs| self.commit(jobs)).await
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
            .write("claim_batch", move |conn| claim(conn, owner, now, policy))
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
            .write("complete", move |conn| complete(conn, batch_id))
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
            .write("release_for_retry", move |conn| {
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
            .write("dead_letter", move |conn| {
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
        self.write("retry_dead_letter", move |conn| {
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
            .write("prune_deliveries", move |conn| {
                conn.prepare_cached("DELETE FROM deliveries WHERE seen_at < ?1")?
                    .execute([cutoff])
            })
            .await?;
        Ok(u64::try_from(pruned).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use tempfile::TempDir;

    use super::*;
    use crate::store::conformance::{self, POLICY, partition, target};

    const T0: Millis = 1_800_000_000_000;

    fn db_path(dir: &TempDir) -> PathBuf {
        dir.path().join("bridge.db")
    }

    async fn open_migrated(path: &Path, pool_size: usize) -> SqliteStore {
        let store = SqliteStore::open(path, pool_size).await.expect("open");
        store.migrate().await.expect("migrate");
        store
    }

    fn stored(accepted: usize, duplicates: usize) -> Enqueued {
        Enqueued::Stored(EnqueueCounts {
            accepted,
            duplicates,
        })
    }

    fn tags(batch: &ClaimedBatch) -> Vec<String> {
        batch.images.iter().map(|i| i.image.tag.clone()).collect()
    }

    #[tokio::test]
    async fn sqlite_store_meets_the_store_contract() {
        // Every case gets a fresh database, in a directory `open` has to create.
        let dirs = Mutex::new(Vec::new());
        conformance::run_all(|| async {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SqliteStore::open(&dir.path().join("data/queue/bridge.db"), 4)
                .await
                .expect("open");
            dirs.lock().expect("dirs").push(dir);
            store
        })
        .await;
    }

    #[tokio::test]
    async fn connections_run_in_wal_with_full_sync_and_foreign_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_migrated(&db_path(&dir), 2).await;
        let settings = store
            .run("pragmas", |conn| {
                Ok((
                    conn.pragma_query_value(None, "journal_mode", |r| r.get::<_, String>(0))?,
                    conn.pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))?,
                    conn.pragma_query_value(None, "foreign_keys", |r| r.get::<_, i64>(0))?,
                    conn.pragma_query_value(None, "busy_timeout", |r| r.get::<_, i64>(0))?,
                ))
            })
            .await
            .expect("pragmas");
        // synchronous: 2 is FULL.
        assert_eq!(settings, ("wal".to_string(), 2, 1, 5_000));
    }

    #[tokio::test]
    async fn data_survives_closing_and_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let key = DeliveryKey {
            source: "swr-ee".into(),
            id: "msg-1".into(),
        };
        let cause = DeadLetterCause {
            http_status: Some(400),
            error_code: Some("HSS.1001".into()),
            error_msg: "invalid image".into(),
            request_id: Some("req-7".into()),
        };

        let store = open_migrated(&path, 2).await;
        let first = store
            .enqueue(
                Some(&key),
                &[target("i1", "api", "v1"), target("i1", "api", "v2")],
                T0,
            )
            .await
            .expect("enqueue");
        assert_eq!(first, stored(2, 0));
        store
            .enqueue(None, &[target("i2", "web", "v1")], T0 + 10)
            .await
            .expect("enqueue");
        store
            .enqueue(None, &[target("i3", "db", "v1")], T0 + 20)
            .await
            .expect("enqueue");
        let flying = store
            .claim_batch("w1", T0 + 2_000, &POLICY)
            .await
            .expect("claim")
            .expect("i1 is due");
        assert_eq!(flying.partition, partition("i1"));
        let doomed = store
            .claim_batch("w1", T0 + 2_010, &POLICY)
            .await
            .expect("claim")
            .expect("i2 is due");
        store
            .dead_letter(&doomed, &cause, T0 + 2_100)
            .await
            .expect("dead letter");
        let pending_before = store.pending(100).await.expect("pending");
        assert_eq!(pending_before.len(), 3);
        store.close();
        drop(store);

        let store = open_migrated(&path, 2).await;
        assert_eq!(store.pending(100).await.expect("pending"), pending_before);
        assert_eq!(
            store.stats().await.expect("stats"),
            StoreStats {
                pending_images: 3,
                oldest_enqueued_at: Some(T0),
                batches_in_flight: 1,
                dead_letters: 1,
            }
        );
        assert_eq!(
            store
                .enqueue(Some(&key), &[target("i1", "api", "v9")], T0 + 3_000)
                .await
                .expect("enqueue"),
            Enqueued::DuplicateDelivery
        );
        let letters = store.dead_letters(10).await.expect("dead letters");
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].cause, cause);
        assert_eq!(letters[0].images, doomed.images);
        assert_eq!(letters[0].partition, partition("i2"));
        // The i3 image is due, but first the lease taken before the restart
        // still holds, and then it is taken over.
        let next = store
            .claim_batch("w2", T0 + 3_000, &POLICY)
            .await
            .expect("claim")
            .expect("i3 is due");
        assert_eq!(next.partition, partition("i3"));
        assert_eq!(
            store
                .claim_batch("w2", flying.lease_until - 1, &POLICY)
                .await
                .expect("claim"),
            None
        );
        let resumed = store
            .claim_batch("w2", flying.lease_until, &POLICY)
            .await
            .expect("claim")
            .expect("expired lease");
        assert_eq!(resumed.id, flying.id);
        assert_eq!(resumed.attempt, 2);
        assert_eq!(resumed.images, flying.images);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_file_never_lease_a_batch_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        // Two "processes" start together on a fresh file.
        let (a, b) = tokio::join!(SqliteStore::open(&path, 4), SqliteStore::open(&path, 4));
        let (a, b) = (Arc::new(a.expect("open a")), Arc::new(b.expect("open b")));
        let (migrated_a, migrated_b) = tokio::join!(a.migrate(), b.migrate());
        migrated_a.expect("migrate a");
        migrated_b.expect("migrate b");

        let policy = BatchPolicy {
            window_ms: 2_000,
            max_images: 10,
            lease_ms: 60_000,
        };
        let instances = 6;
        let per_instance = 95;
        for instance in 0..instances {
            let targets: Vec<ScanTarget> = (0..per_instance)
                .map(|n| target(&format!("i{instance}"), "api", &format!("v{n}")))
                .collect();
            let writer = if instance % 2 == 0 { &a } else { &b };
            assert_eq!(
                writer.enqueue(None, &targets, T0).await.expect("enqueue"),
                stored(per_instance, 0)
            );
        }

        let now = T0 + policy.window_ms;
        let mut workers = Vec::new();
        for worker in 0..8 {
            let store = if worker % 2 == 0 {
                a.clone()
            } else {
                b.clone()
            };
            workers.push(tokio::spawn(async move {
                let owner = format!("worker-{worker}");
                let mut claimed = Vec::new();
                while let Some(batch) = store
                    .claim_batch(&owner, now, &policy)
                    .await
                    .expect("claim")
                {
                    claimed.push(batch);
                }
                claimed
            }));
        }
        let mut batches = Vec::new();
        for worker in workers {
            batches.extend(worker.await.expect("worker"));
        }

        // 6 partitions of 95 images in batches of 10: 6 × 10 batches.
        assert_eq!(batches.len(), 60);
        let ids: HashSet<i64> = batches.iter().map(|b| b.id).collect();
        assert_eq!(ids.len(), batches.len(), "a batch was leased twice");
        assert!(batches.iter().all(|b| b.attempt == 1));
        let images: Vec<(Partition, String)> = batches
            .iter()
            .flat_map(|b| {
                b.images
                    .iter()
                    .map(|i| (b.partition.clone(), i.image.tag.clone()))
            })
            .collect();
        let distinct: HashSet<&(Partition, String)> = images.iter().collect();
        assert_eq!(images.len(), instances * per_instance);
        assert_eq!(distinct.len(), images.len(), "an image travelled twice");
        // While the leases hold, neither process finds anything to claim.
        assert_eq!(
            a.claim_batch("late", now + 1, &policy)
                .await
                .expect("claim"),
            None
        );
        assert_eq!(
            b.claim_batch("late", now + 1, &policy)
                .await
                .expect("claim"),
            None
        );
    }

    #[tokio::test]
    async fn a_claim_over_ten_thousand_rows_takes_the_oldest_hundred() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_migrated(&db_path(&dir), 2).await;
        // 100 webhooks of 100 images (50 for i1, 50 for i2), stored in a
        // scrambled order so that row ids do not follow enqueue times.
        for slot in 0..100 {
            let webhook = (slot * 37) % 100;
            let targets: Vec<ScanTarget> = (0..100)
                .map(|n| {
                    let instance = if n % 2 == 0 { "i1" } else { "i2" };
                    target(instance, "api", &format!("w{webhook:02}-{n:02}"))
                })
                .collect();
            let now = T0 + webhook * 10;
            assert_eq!(
                store.enqueue(None, &targets, now).await.expect("enqueue"),
                stored(100, 0)
            );
        }
        // Stored last, but the oldest image of all: i2 goes first.
        store
            .enqueue(None, &[target("i2", "api", "early")], T0 - 5)
            .await
            .expect("enqueue");
        assert_eq!(store.stats().await.expect("stats").pending_images, 10_001);

        let policy = BatchPolicy {
            window_ms: 2_000,
            max_images: 100,
            lease_ms: 30_000,
        };
        let now = T0 + 10_000;
        let first = store
            .claim_batch("w1", now, &policy)
            .await
            .expect("claim")
            .expect("due");
        assert_eq!(first.partition, partition("i2"));
        let mut expected = vec!["early".to_string()];
        expected.extend((0..50).map(|k| format!("w00-{:02}", 2 * k + 1)));
        expected.extend((0..49).map(|k| format!("w01-{:02}", 2 * k + 1)));
        assert_eq!(tags(&first), expected);

        let second = store
            .claim_batch("w1", now, &policy)
            .await
            .expect("claim")
            .expect("due");
        assert_eq!(second.partition, partition("i1"));
        let mut expected: Vec<String> = (0..50).map(|k| format!("w00-{:02}", 2 * k)).collect();
        expected.extend((0..50).map(|k| format!("w01-{:02}", 2 * k)));
        assert_eq!(tags(&second), expected);

        let stats = store.stats().await.expect("stats");
        assert_eq!(stats.pending_images, 10_001);
        assert_eq!(stats.batches_in_flight, 2);
    }

    /// Plan lines that walk a whole table instead of seeking in an index, or
    /// that sort rows the index should already deliver in order.
    fn costly_plan_lines(plan: &[String]) -> Vec<String> {
        // Scanning a CTE's few rows (one per partition) is fine.
        const CTE_SCANS: [&str; 2] = ["SCAN waiting", "SCAN w"];
        plan.iter()
            .filter(|line| {
                (line.starts_with("SCAN") && !CTE_SCANS.contains(&line.as_str()))
                    || line.contains("TEMP B-TREE")
            })
            .cloned()
            .collect()
    }

    #[tokio::test]
    async fn claim_and_due_queries_seek_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_migrated(&db_path(&dir), 1).await;
        let targets: Vec<ScanTarget> = (0..500)
            .map(|n| target(&format!("i{}", n % 5), "api", &format!("v{n}")))
            .collect();
        store.enqueue(None, &targets, T0).await.expect("enqueue");
        for sql in [
            WAITING_PARTITIONS_SQL,
            RECLAIMABLE_BATCH_SQL,
            CREATE_BATCH_SQL,
            ATTACH_IMAGES_SQL,
            LEASE_BATCH_SQL,
            BATCH_IMAGES_SQL,
            "SELECT MIN(next_attempt_at) FROM batches",
            "DELETE FROM pending_images WHERE batch_id = ?1",
            "DELETE FROM deliveries WHERE seen_at < ?1",
        ] {
            let plan = store
                .run("explain", move |conn| {
                    let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let nulls =
                        std::iter::repeat_n(rusqlite::types::Null, statement.parameter_count());
                    statement
                        .query_map(rusqlite::params_from_iter(nulls), |row| {
                            row.get::<_, String>(3)
                        })?
                        .collect::<rusqlite::Result<Vec<String>>>()
                })
                .await
                .expect("explain");
            assert!(!plan.is_empty(), "no plan for {sql}");
            assert_eq!(
                costly_plan_lines(&plan),
                Vec::<String>::new(),
                "plan of {sql}: {plan:#?}"
            );
        }
    }

    #[test]
    fn migrations_match_the_files_on_disk() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/migrations/sqlite");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations directory")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        on_disk.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(listed, on_disk);
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
        assert_eq!(versions, expected, "versions are 1, 2, 3, … without gaps");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_migrations_apply_each_step_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let stores: Vec<SqliteStore> =
            futures_util::future::join_all((0..4).map(|_| SqliteStore::open(&path, 2)))
                .await
                .into_iter()
                .map(|store| store.expect("open"))
                .collect();
        let results = futures_util::future::join_all(stores.iter().map(|s| s.migrate())).await;
        for result in results {
            result.expect("migrate");
        }
        let recorded = stores[0]
            .run("versions", |conn| {
                conn.prepare("SELECT version, name FROM schema_migrations ORDER BY version")?
                    .query_map([], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .expect("versions");
        let expected: Vec<(i64, String)> = MIGRATIONS
            .iter()
            .map(|m| (m.version, m.name.to_string()))
            .collect();
        assert_eq!(recorded, expected);
    }

    #[tokio::test]
    async fn a_schema_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_migrated(&db_path(&dir), 1).await;
        store
            .run("forge", |conn| {
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', 0)",
                    [],
                )
            })
            .await
            .expect("forge a newer migration");
        let err = store.migrate().await.expect_err("newer schema");
        let StoreError::Migration(message) = err else {
            panic!("expected a migration error, got {err:?}");
        };
        assert!(message.contains("0099_future"), "{message}");
        assert!(
            message.contains(&db_path(&dir).display().to_string()),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_failing_migration_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&db_path(&dir), 1).await.expect("open");
        let broken = [
            MIGRATIONS[0],
            Migration {
                version: 2,
                name: "broken",
                sql: "CREATE TABLE extra (id INTEGER); SELECT * FROM no_such_table;",
            },
        ];
        let failure = store
            .run_raw("migrate", move |conn| apply_migrations(conn, &broken, T0))
            .await
            .expect("reach the database")
            .expect_err("the second step fails");
        assert!(
            failure
                .to_string()
                .starts_with("migration 0002_broken failed"),
            "{failure}"
        );
        // The whole run was one transaction: not even the first step stayed.
        let tables: Vec<String> = store
            .run("tables", |conn| {
                conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
                    .query_map([], |row| row.get(0))?
                    .collect()
            })
            .await
            .expect("tables");
        assert_eq!(tables, Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_path_that_cannot_hold_a_database_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"x").expect("write");
        let path = blocker.join("bridge.db");
        let err = SqliteStore::open(&path, 1)
            .await
            .expect_err("parent is a file");
        let StoreError::Unavailable(message) = err else {
            panic!("expected unavailable, got {err:?}");
        };
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        std::fs::write(&path, vec![b'x'; 4096]).expect("write");
        let err = SqliteStore::open(&path, 1).await.expect_err("garbage file");
        let StoreError::Unavailable(message) = err else {
            panic!("expected unavailable, got {err:?}");
        };
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("not a database"), "{message}");
    }

    /// Holds the writer lock while `jobs` callers queue, then lets go: the
    /// next lock holder commits all of them in one transaction.
    async fn enqueue_as_one_group(
        store: &Arc<SqliteStore>,
        jobs: Vec<(Option<DeliveryKey>, Vec<ScanTarget>)>,
    ) -> Vec<Result<Enqueued, StoreError>> {
        let count = jobs.len();
        let writer = store.group.writer().await;
        let tasks: Vec<_> = jobs
            .into_iter()
            .map(|(delivery, targets)| {
                let store = Arc::clone(store);
                tokio::spawn(async move { store.enqueue(delivery.as_ref(), &targets, T0).await })
            })
            .collect();
        while store.group.queued() < count {
            tokio::task::yield_now().await;
        }
        drop(writer);
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.expect("enqueue task"));
        }
        outcomes
    }

    #[tokio::test]
    async fn one_group_commit_answers_each_webhook_with_its_own_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let store = Arc::new(open_migrated(&path, 2).await);
        let key = |id: &str| DeliveryKey {
            source: "harbor-ce".into(),
            id: id.into(),
        };
        let outcomes = enqueue_as_one_group(
            &store,
            vec![
                (
                    Some(key("m1")),
                    vec![target("i1", "api", "v1"), target("i1", "api", "v2")],
                ),
                // Same image as the first webhook, in the same transaction: a duplicate.
                (None, vec![target("i1", "api", "v1")]),
                // A redelivery inside the same group: answered as such.
                (Some(key("m1")), vec![target("i1", "api", "v3")]),
                (Some(key("m2")), vec![target("i2", "web", "v1")]),
            ],
        )
        .await;
        let outcomes: Vec<Enqueued> = outcomes.into_iter().map(|o| o.expect("stored")).collect();
        assert_eq!(
            outcomes,
            vec![
                stored(2, 0),
                stored(0, 1),
                Enqueued::DuplicateDelivery,
                stored(1, 0)
            ]
        );
        store.close();
        drop(store);

        // Durable: another store on the file sees exactly those rows.
        let reopened = open_migrated(&path, 1).await;
        let mut pending: Vec<String> = reopened
            .pending(10)
            .await
            .expect("pending")
            .into_iter()
            .map(|p| p.image.to_string())
            .collect();
        pending.sort();
        assert_eq!(
            pending,
            vec!["team-a/api:v1", "team-a/api:v2", "team-a/web:v1"]
        );
        assert_eq!(
            reopened
                .enqueue(Some(&key("m2")), &[target("i9", "x", "v1")], T0)
                .await
                .expect("redelivery"),
            Enqueued::DuplicateDelivery
        );
    }

    #[tokio::test]
    async fn a_failing_webhook_rolls_back_alone_in_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open_migrated(&db_path(&dir), 2).await);
        store
            .run("poison", |conn| {
                conn.execute_batch(
                    "CREATE TRIGGER poison BEFORE INSERT ON pending_images
                     WHEN NEW.tag = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned tag'); END;",
                )
            })
            .await
            .expect("trigger");
        let key = DeliveryKey {
            source: "harbor-ce".into(),
            id: "bad".into(),
        };
        let outcomes = enqueue_as_one_group(
            &store,
            vec![
                (None, vec![target("i1", "api", "v1")]),
                // Its first image and its delivery id are rolled back with it.
                (
                    Some(key.clone()),
                    vec![target("i1", "api", "v2"), target("i1", "api", "poison")],
                ),
                (None, vec![target("i1", "api", "v3")]),
            ],
        )
        .await;
        assert_eq!(outcomes[0].as_ref().expect("first"), &stored(1, 0));
        assert!(
            matches!(&outcomes[1], Err(StoreError::Query(m)) if m.starts_with("enqueue: ") && m.contains("poisoned tag")),
            "{:?}",
            outcomes[1]
        );
        assert_eq!(outcomes[2].as_ref().expect("third"), &stored(1, 0));
        let mut tags: Vec<String> = store
            .pending(10)
            .await
            .expect("pending")
            .into_iter()
            .map(|p| p.image.tag)
            .collect();
        tags.sort();
        assert_eq!(tags, vec!["v1", "v3"]);
        // The failed webhook's id was not remembered: its retry is stored.
        assert_eq!(
            store
                .enqueue(Some(&key), &[target("i1", "api", "v2")], T0)
                .await
                .expect("retry"),
            stored(1, 0)
        );
    }

    /// The batcher's drain awaits a claim while settle futures of the same task
    /// wait unpolled: a write that held an async lock across its `.await` would
    /// block the claim for good.
    #[tokio::test]
    async fn a_claim_completes_while_a_settle_of_the_same_task_is_not_polled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_migrated(&db_path(&dir), 2).await;
        store
            .enqueue(
                None,
                &[target("i1", "api", "v1"), target("i2", "web", "v1")],
                T0,
            )
            .await
            .expect("enqueue");
        let policy = POLICY.flush_now();
        let first = store
            .claim_batch("w", T0, &policy)
            .await
            .expect("claim")
            .expect("a batch");
        let mut settle = std::pin::pin!(store.complete(&first));
        // Started, then left unpolled while the same task claims again.
        assert!(futures_util::poll!(&mut settle).is_pending());
        let second =
            tokio::time::timeout(Duration::from_secs(10), store.claim_batch("w", T0, &policy))
                .await
                .expect("the claim is not blocked by the unpolled settle")
                .expect("claim")
                .expect("a second batch");
        assert_ne!(second.partition, first.partition);
        settle.await.expect("complete");
    }

    #[tokio::test]
    async fn concurrent_webhooks_are_all_stored_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(open_migrated(&db_path(&dir), 4).await);
        // 200 webhooks at once, each naming its own image and a shared one.
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let targets = [
                        target("i1", "api", &format!("v{i}")),
                        target("i1", "api", "latest"),
                    ];
                    store.enqueue(None, &targets, T0 + i).await
                })
            })
            .collect();
        let (mut accepted, mut duplicates) = (0, 0);
        for task in tasks {
            match task.await.expect("task").expect("stored") {
                Enqueued::Stored(counts) => {
                    accepted += counts.accepted;
                    duplicates += counts.duplicates;
                }
                Enqueued::DuplicateDelivery => panic!("no delivery ids were given"),
            }
        }
        assert_eq!((accepted, duplicates), (201, 199));
        assert_eq!(store.stats().await.expect("stats").pending_images, 201);
    }

    #[tokio::test]
    async fn a_write_lock_held_too_long_is_unavailable_then_recovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(&dir);
        let patience = Patience {
            busy: Duration::from_millis(50),
            pool: Duration::from_secs(5),
        };
        let store = SqliteStore::open_with(&path, 1, patience)
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        // Another process holds the write lock.
        let other = Connection::open(&path).expect("other connection");
        other.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let err = store
            .enqueue(None, &[target("i1", "api", "v1")], T0)
            .await
            .expect_err("locked");
        let StoreError::Unavailable(message) = err else {
            panic!("expected unavailable, got {err:?}");
        };
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("enqueue"), "{message}");
        // Reads still work beside the writer (WAL).
        assert_eq!(store.stats().await.expect("stats").pending_images, 0);
        other.execute_batch("ROLLBACK").expect("unlock");
        assert_eq!(
            store
                .enqueue(None, &[target("i1", "api", "v1")], T0)
                .await
                .expect("enqueue"),
            stored(1, 0)
        );
    }

    #[tokio::test]
    async fn an_exhausted_pool_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let patience = Patience {
            busy: Duration::from_secs(5),
            pool: Duration::from_millis(50),
        };
        let store = SqliteStore::open_with(&db_path(&dir), 1, patience)
            .await
            .expect("open");
        let held = store.pool.get().await.expect("the only connection");
        let err = store.ping().await.expect_err("no free connection");
        assert!(
            matches!(&err, StoreError::Unavailable(m) if m.contains("timed out waiting for a connection")),
            "{err:?}"
        );
        drop(held);
        store
            .ping()
            .await
            .expect("ping once the connection is back");
        store.close();
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn a_panic_inside_the_database_task_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_migrated(&db_path(&dir), 1).await;
        let err = store
            .run("explode", |_conn| -> rusqlite::Result<()> {
                panic!("boom")
            })
            .await
            .expect_err("panicked");
        assert!(
            matches!(&err, StoreError::Query(m) if m == "explode: the database task panicked: boom"),
            "{err:?}"
        );
        // The poisoned connection is discarded; the store goes on.
        store.ping().await.expect("ping");
        assert_eq!(
            store
                .enqueue(None, &[target("i1", "api", "v1")], T0)
                .await
                .expect("enqueue"),
            stored(1, 0)
        );
    }

    #[tokio::test]
    async fn a_broken_statement_is_a_query_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&db_path(&dir), 1).await.expect("open");
        // Not migrated yet: the tables are missing.
        let err = store.stats().await.expect_err("no schema");
        assert!(
            matches!(&err, StoreError::Query(m) if m.starts_with("stats: ") && m.contains("no such table")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_stale_lease_of_the_same_owner_cannot_release_the_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_migrated(&db_path(&dir), 1).await;
        store
            .enqueue(None, &[target("i1", "api", "v1")], T0)
            .await
            .expect("enqueue");
        let first = store
            .claim_batch("replica-1", T0 + 2_000, &POLICY)
            .await
            .expect("claim")
            .expect("due");
        // The same replica takes it over after its own lease ran out.
        let second = store
            .claim_batch("replica-1", first.lease_until, &POLICY)
            .await
            .expect("claim")
            .expect("expired");
        assert_eq!((second.id, second.attempt), (first.id, 2));
        store
            .release_for_retry(&first, first.lease_until + 10, "stale")
            .await
            .expect("release");
        assert_eq!(
            store
                .next_due(first.lease_until + 20, &POLICY)
                .await
                .expect("next_due"),
            Some(second.lease_until),
            "the stale release changed nothing"
        );
    }

    #[tokio::test]
    async fn a_full_partition_is_due_now_and_the_next_window_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_migrated(&db_path(&dir), 1).await;
        store
            .enqueue(None, &[target("i1", "api", "v1")], T0)
            .await
            .expect("enqueue");
        assert_eq!(
            store.next_due(T0 + 1, &POLICY).await.expect("next_due"),
            Some(T0 + POLICY.window_ms)
        );
        store
            .enqueue(
                None,
                &[
                    target("i2", "api", "v1"),
                    target("i2", "api", "v2"),
                    target("i2", "api", "v3"),
                ],
                T0 + 100,
            )
            .await
            .expect("enqueue");
        assert_eq!(
            store.next_due(T0 + 150, &POLICY).await.expect("next_due"),
            Some(T0 + 150)
        );
    }
}
