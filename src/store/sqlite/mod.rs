//! The embedded [`Store`]: one SQLite file behind a deadpool-sqlite pool, for a
//! single bridge instance, and a second file for images' indexed history.
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
//! see [`super::group_commit`]. One thread with its own connection writes the
//! groups ([`writer`]).
//!
//! # Why history has a file of its own
//!
//! Images' history is indexed by image, and keeping that index up to date
//! costs a write per index page; in the queue file it held the only write
//! lock while webhooks waited. The queue file keeps the unindexed recent
//! rows, written in the same transactions as the state changes they record;
//! a mover thread ([`mover`]) carries them in bulk to `<queue file>-history`
//! ([`history_file`], which explains the cursor that makes a crash between
//! the two files repeat or skip nothing).
//!
//! All other blocking SQLite work runs on the pool's `interact` (tokio's
//! blocking threads), never on the async runtime threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_sqlite::{Config, Hook, HookError, InteractError, Pool, PoolError, Runtime};
use rusqlite::Connection;

use super::{
    Arrival, BatchPolicy, ClaimedBatch, DeadLetter, DeadLetterCause, EnqueueCounts, Enqueued,
    HistoryEvent, HistorySubject, Millis, PendingImage, RetryCause, ScanReceipt, Store, StoreError,
    StoreStats,
};

mod admin;
mod claim;
mod connection;
mod digests;
mod enqueue;
mod errors;
mod history;
mod history_file;
#[cfg(test)]
mod history_tests;
mod migrate;
mod mover;
mod mover_priority;
mod poll_state;
mod rows;
mod settle;
#[cfg(test)]
mod tests;
mod writer;

use admin::{dead_letters, pending, prune_deliveries, retry_dead_letter, stats};
use claim::{claim, next_due};
use connection::{ConfigureError, Patience, WriteTurn, configure_connection, take_turn};
use errors::{panic_reason, sql_failure};
use history::{history, prune_batch_events};
use history_file::HistoryFile;
pub use history_file::history_path;
use migrate::{apply_migrations, migrations, wall_clock_ms};
use mover::Mover;
use settle::{Lease, complete, dead_letter, release};
use writer::GroupWriter;

/// A group commit takes milliseconds; one still running after this long waits
/// on a lock held elsewhere, and readiness says so.
const WRITER_STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The SQLite [`Store`]. Cheap to share behind an `Arc`; drop it inside the
/// tokio runtime (its connections close on blocking threads).
#[derive(Debug)]
pub struct SqliteStore {
    pool: Pool,
    path: PathBuf,
    writer: GroupWriter,
    /// Taken on the blocking thread by every write transaction of this process
    /// (group commits, claims, settles), so that they queue, first come first
    /// served, for a turn that wakes the next one when it is released, instead
    /// of polling SQLite's file lock: `busy_timeout` sleeps up to 100 ms between tries, which kept a
    /// claim waiting far behind a stream of group commits. Held only inside
    /// blocking tasks, never across an `.await`, so a future that is not being
    /// polled can never hold it. Between processes, `busy_timeout` still rules.
    write_turn: Arc<WriteTurn>,
    /// `store.history_retention_s = 0` turns history off: nothing is recorded.
    record_history: bool,
    /// The indexed history, in its own file ([`history_path`]).
    history: Arc<HistoryFile>,
    mover: Mover,
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
        let write_turn: Arc<WriteTurn> = Arc::default();
        let writer = GroupWriter::start(path, patience, Arc::clone(&write_turn)).await?;
        let queue = path.to_path_buf();
        let history = tokio::task::spawn_blocking(move || HistoryFile::open(&queue, patience))
            .await
            .map_err(|err| unavailable(format!("opening the history file failed: {err}")))?
            .map_err(|err| StoreError::Unavailable(err.to_string()))?;
        let history = Arc::new(history);
        let mover = Mover::start(Arc::clone(&history), Arc::clone(&write_turn))?;
        let store = SqliteStore {
            pool,
            path: path.to_path_buf(),
            writer,
            write_turn,
            record_history: true,
            history,
            mover,
        };
        store.ping().await?;
        tracing::debug!(db = %path.display(), pool_size, "sqlite store opened");
        Ok(store)
    }

    /// Whether images' history is recorded (the default) or not at all.
    pub fn recording_history(mut self, record_history: bool) -> Self {
        self.record_history = record_history;
        self
    }

    /// Closes the pool: idle connections close now, the others when they are
    /// returned, and every later call fails as [`StoreError::Unavailable`].
    pub fn close(&self) {
        self.writer.stop();
        self.mover.stop();
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

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let now = wall_clock_ms();
        let applied = self
            .run_raw("migrate", move |conn| {
                apply_migrations(conn, migrations(), now)
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
        let history = Arc::clone(&self.history);
        tokio::task::spawn_blocking(move || history.migrate())
            .await
            .map_err(|err| {
                StoreError::Migration(format!(
                    "sqlite history file {}: {err}",
                    self.history.path().display()
                ))
            })?
            .map_err(|err| StoreError::Migration(err.to_string()))?;
        self.mover.migrated();
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Reads can work while writes are stuck (another process holds the
        // file's write lock): a writer long on one group is not ready either.
        if let Some(busy) = self
            .writer
            .busy_for()
            .filter(|busy| *busy > WRITER_STUCK_AFTER)
        {
            return Err(StoreError::Unavailable(format!(
                "sqlite database {}: the enqueue writer has waited {} ms on one group",
                self.path.display(),
                busy.as_millis()
            )));
        }
        self.run("ping", |conn| {
            conn.prepare_cached("SELECT 1")?
                .query_row([], |row| row.get::<_, i64>(0))
        })
        .await
        .map(|_| ())
    }

    async fn enqueue_arrival(
        &self,
        arrival: &Arrival<'_>,
        now: Millis,
    ) -> Result<Enqueued, StoreError> {
        self.writer.enqueue(arrival, now, self.record_history).await
    }

    async fn claim_batch(
        &self,
        owner: &str,
        now: Millis,
        policy: &BatchPolicy,
    ) -> Result<Option<ClaimedBatch>, StoreError> {
        let owner = owner.to_string();
        let policy = *policy;
        let record_history = self.record_history;
        self.write("claim_batch", move |conn| {
            claim(conn, owner, now, policy, record_history)
        })
        .await
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

    async fn complete(
        &self,
        batch: &ClaimedBatch,
        receipt: &ScanReceipt,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (batch_id, receipt) = (batch.id, receipt.clone());
        let record_history = self.record_history;
        let images = self
            .write("complete", move |conn| {
                complete(conn, batch_id, receipt, now, record_history)
            })
            .await?;
        self.mover.nudge();
        tracing::debug!(batch_id, images, "completed batch");
        Ok(())
    }

    async fn release_for_retry(
        &self,
        batch: &ClaimedBatch,
        not_before: Millis,
        cause: &RetryCause,
        now: Millis,
    ) -> Result<(), StoreError> {
        let batch_id = batch.id;
        let lease = Lease {
            batch_id,
            owner: batch.owner.clone(),
            attempt: batch.attempt,
        };
        let (cause, record_history) = (cause.clone(), self.record_history);
        let released = self
            .write("release_for_retry", move |conn| {
                release(conn, lease, not_before, cause, now, record_history)
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
        let (cause, record_history) = (cause.clone(), self.record_history);
        let letter = self
            .write("dead_letter", move |conn| {
                dead_letter(conn, batch_id, cause, now, record_history)
            })
            .await?;
        self.mover.nudge();
        if let Some(letter_id) = letter {
            tracing::debug!(batch_id, letter_id, "moved batch to dead letters");
        }
        Ok(())
    }

    async fn pending(&self, limit: usize) -> Result<Vec<PendingImage>, StoreError> {
        self.run("pending", move |conn| pending(conn, limit)).await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.run("dead_letters", move |conn| dead_letters(conn, limit))
            .await
    }

    async fn retry_dead_letter(
        &self,
        id: i64,
        now: Millis,
    ) -> Result<Option<EnqueueCounts>, StoreError> {
        let record_history = self.record_history;
        self.write("retry_dead_letter", move |conn| {
            retry_dead_letter(conn, id, now, record_history)
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.run("stats", stats).await
    }

    async fn prune_deliveries(&self, cutoff: Millis) -> Result<u64, StoreError> {
        let pruned = self
            .write("prune_deliveries", move |conn| {
                prune_deliveries(conn, cutoff)
            })
            .await?;
        Ok(u64::try_from(pruned).unwrap_or(u64::MAX))
    }

    async fn history(
        &self,
        subject: &HistorySubject,
        limit: usize,
    ) -> Result<Vec<HistoryEvent>, StoreError> {
        let subject = subject.clone();
        let history_file = Arc::clone(&self.history);
        self.run("history", move |conn| {
            history(conn, &history_file, &subject, limit)
        })
        .await
    }

    async fn prune_history(&self, cutoff: Millis) -> Result<u64, StoreError> {
        let (history, write_turn) = (Arc::clone(&self.history), Arc::clone(&self.write_turn));
        let rows = tokio::task::spawn_blocking(move || history.prune(cutoff, &write_turn))
            .await
            .map_err(|err| {
                StoreError::Query(format!("prune_history: the history task failed: {err}"))
            })?
            .map_err(|err| sql_failure(self.history.path(), "prune_history", &err))?;
        let events = self
            .write("prune_history", move |conn| {
                prune_batch_events(conn, cutoff)
            })
            .await?;
        Ok(u64::try_from(rows + events).unwrap_or(u64::MAX))
    }
}
