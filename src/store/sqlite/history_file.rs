//! The SQLite store's indexed history, in a file of its own beside the
//! queue file (`<queue file>-history`).
//!
//! # Why a second file
//!
//! SQLite has one write lock per file. Indexing history rows by image costs
//! about one index page per row however they are sorted (the index's leaf
//! pages outnumber a move's keys), and while the queue file held those rows
//! every webhook waited for the move: throughput with history was 0.72× of
//! without (BENCHMARKS.md). Here the moves take this file's lock; the queue
//! file only gives a read snapshot to copy from and one short range delete.
//!
//! # The cursor protocol
//!
//! The queue file's `recent_history` is appended in the same transaction as
//! the state change it records, with ids that are never reused (migration
//! 0007). A move copies the recent rows with an id above the cursor, sorted
//! by image, keeping their ids, and raises the cursor (`history_cursor`) to
//! the highest id it copied, in ONE transaction of this file. Only then are
//! the recent rows up to the cursor deleted from the queue file. A crash
//! between the two leaves rows on both sides; readers and the next move
//! ignore the recent ones at or below the cursor, and the next delete takes
//! them: nothing is doubled, nothing skipped.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::Connection;

use super::connection::{Patience, WriteTurn, configure_connection, take_turn};
use super::history::record_at;
use super::rows::all_rows;
use crate::store::Millis;
use crate::store::history::{ImageRecord, MERGE_AT, PRUNE_BATCH};

/// The most rows one move copies: a backlog (a legacy file's history after
/// migration 0007) goes over in steps, each with a short delete on the queue.
const MOVE_AT_MOST: i64 = 4 * MERGE_AT;

/// This file's schema version (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS image_history (
    id          INTEGER PRIMARY KEY,
    image_key   TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    at_ms       BIGINT  NOT NULL,
    source      TEXT,
    batch_id    BIGINT,
    reason      TEXT,
    digest      TEXT,
    recorded_at BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS image_history_by_key ON image_history (image_key, id);
CREATE TABLE IF NOT EXISTS history_cursor (
    only          INTEGER PRIMARY KEY CHECK (only = 1),
    moved_through BIGINT  NOT NULL
);
INSERT OR IGNORE INTO history_cursor (only, moved_through) VALUES (1, 0);
";

/// The queue file as the mover's connection names it.
const QUEUE: &str = "queue";

/// Where the history file of the queue file `queue` lives.
pub fn history_path(queue: &Path) -> PathBuf {
    let mut path = queue.as_os_str().to_owned();
    path.push("-history");
    PathBuf::from(path)
}

/// Why the history file could not be used.
#[derive(Debug, thiserror::Error)]
pub(super) enum HistoryFileError {
    #[error("sqlite history file {path}: cannot open: {cause}")]
    Open { path: String, cause: String },
    #[error("sqlite history file {path}: {operation}: {source}")]
    Sql {
        path: String,
        operation: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "sqlite history file {path}: its schema is version {found}, this version knows {SCHEMA_VERSION}: \
         it was upgraded by a newer bridge"
    )]
    Newer { path: String, found: i64 },
}

/// Recent rows on their way from the queue file to this one.
#[derive(Debug)]
pub(super) struct Gathered {
    rows: Vec<GatheredRow>,
    /// The cursor once they are written: the highest id read, or past a gap.
    through: i64,
}

#[derive(Debug)]
struct GatheredRow {
    id: i64,
    image_key: String,
    event: String,
    at_ms: Millis,
    source: Option<String>,
    batch_id: Option<i64>,
    reason: Option<String>,
    digest: Option<String>,
    recorded_at: Millis,
}

/// The history file's connections.
#[derive(Debug)]
pub(super) struct HistoryFile {
    path: PathBuf,
    /// Moves and prunes, with the queue file attached as [`QUEUE`] to copy
    /// from and delete in.
    mover: Mutex<Connection>,
    /// This file alone: the mover's idle-priority writes, which must hold no
    /// snapshot of the queue file (an idle thread may keep one for seconds,
    /// and the queue's WAL could not be checkpointed meanwhile).
    indexer: Mutex<Connection>,
    /// `/admin/history` reads, so that a read does not wait for a move.
    reader: Mutex<Connection>,
}

fn locked(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic mid-transaction rolled it back with the unwinding (rusqlite's
    // Transaction drop): the connection itself is still sound.
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HistoryFile {
    /// Opens (creating when missing) the history file of the queue file `queue`.
    pub fn open(queue: &Path, patience: Patience) -> Result<Self, HistoryFileError> {
        let path = history_path(queue);
        let open_failure = |cause: String| HistoryFileError::Open {
            path: path.display().to_string(),
            cause,
        };
        let open = || -> Result<Connection, HistoryFileError> {
            let mut conn = Connection::open(&path).map_err(|err| open_failure(err.to_string()))?;
            configure_connection(&mut conn, patience.busy)
                .map_err(|err| open_failure(err.to_string()))?;
            Ok(conn)
        };
        let mover = open()?;
        mover
            .execute(
                &format!("ATTACH DATABASE ?1 AS {QUEUE}"),
                [queue.to_string_lossy()],
            )
            .map_err(|err| open_failure(format!("cannot attach the queue file: {err}")))?;
        let indexer = open()?;
        let reader = open()?;
        Ok(Self {
            path,
            mover: Mutex::new(mover),
            indexer: Mutex::new(indexer),
            reader: Mutex::new(reader),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn failure(&self, operation: &'static str) -> impl Fn(rusqlite::Error) -> HistoryFileError {
        let path = self.path.display().to_string();
        move |source| HistoryFileError::Sql {
            path: path.clone(),
            operation,
            source,
        }
    }

    /// Creates the schema when missing. Call after the queue file's
    /// migrations: it also keeps the queue's next recent id above the cursor
    /// (see [`keep_ids_above_cursor`]).
    pub fn migrate(&self) -> Result<(), HistoryFileError> {
        let mut conn = locked(&self.mover);
        let failure = self.failure("migrate");
        let found: i64 = conn
            .query_row("PRAGMA main.user_version", [], |row| row.get(0))
            .map_err(&failure)?;
        if found > SCHEMA_VERSION {
            return Err(HistoryFileError::Newer {
                path: self.path.display().to_string(),
                found,
            });
        }
        let tx = conn.transaction().map_err(&failure)?;
        tx.execute_batch(SCHEMA).map_err(&failure)?;
        tx.pragma_update(Some("main"), "user_version", SCHEMA_VERSION)
            .map_err(&failure)?;
        tx.commit().map_err(&failure)?;
        keep_ids_above_cursor(&conn).map_err(&failure)
    }

    /// Copies the gathered recent rows here once at least `at_least` wait
    /// (all of them with 1), [`MOVE_AT_MOST`] at a time, then deletes them
    /// from the queue file in turns of `write_turn`; the number of rows moved.
    pub fn move_gathered(&self, at_least: i64, write_turn: &WriteTurn) -> rusqlite::Result<usize> {
        self.move_gathered_with(at_least, write_turn, |gathered, _| {
            Some(self.write_gathered(&gathered))
        })
    }

    /// [`HistoryFile::move_gathered`] with the writing of each step left to
    /// `write`, given the rows and how many were waiting: the mover hands
    /// them to its idle-priority thread (see [`super::mover`]). `None` from
    /// `write` ends the move, leaving the rows to the next.
    pub fn move_gathered_with(
        &self,
        at_least: i64,
        write_turn: &WriteTurn,
        mut write: impl FnMut(Gathered, i64) -> Option<rusqlite::Result<usize>>,
    ) -> rusqlite::Result<usize> {
        let mut moved = 0;
        loop {
            let waiting = self.waiting()?;
            if waiting < at_least.max(1) {
                return Ok(moved);
            }
            let gathered = self.read_gathered(MOVE_AT_MOST)?;
            match write(gathered, waiting) {
                Some(written) => moved += written?,
                None => return Ok(moved),
            }
            self.delete_moved(write_turn)?;
        }
    }

    /// The recent rows above the cursor (at most `at_most`), read from one
    /// snapshot of the queue file, sorted by image, and the id the cursor
    /// may be raised to once they are written here
    /// ([`HistoryFile::write_gathered`]). The split lets the slow half, the
    /// index writes, run on a thread that holds no lock nor snapshot of the
    /// queue file (see [`super::mover`]).
    pub fn read_gathered(&self, at_most: i64) -> rusqlite::Result<Gathered> {
        let conn = locked(&self.mover);
        let tx = conn.unchecked_transaction()?;
        let cursor = cursor(&tx, "main")?;
        let rows = all_rows(
            &tx,
            &format!(
                "SELECT id, image_key, event, at_ms, source, batch_id, reason, digest, recorded_at
                 FROM {QUEUE}.recent_history WHERE id > ?1 AND id <= ?1 + ?2
                 ORDER BY image_key, id"
            ),
            (cursor, at_most),
            |row| {
                Ok(GatheredRow {
                    id: row.get(0)?,
                    image_key: row.get(1)?,
                    event: row.get(2)?,
                    at_ms: row.get(3)?,
                    source: row.get(4)?,
                    batch_id: row.get(5)?,
                    reason: row.get(6)?,
                    digest: row.get(7)?,
                    recorded_at: row.get(8)?,
                })
            },
        )?;
        // Every id up to the snapshot's highest was committed when the
        // snapshot was taken (one writer assigns them, in commit order).
        let newest: i64 = tx
            .prepare_cached(&format!(
                "SELECT COALESCE(MAX(id), 0) FROM {QUEUE}.recent_history"
            ))?
            .query_row([], |row| row.get(0))?;
        tx.finish()?;
        Ok(Gathered {
            rows,
            through: cursor.max(newest.min(cursor + at_most)),
        })
    }

    /// Writes rows [`HistoryFile::read_gathered`] read, and raises the cursor
    /// past them, in one transaction of this file alone. A row here already
    /// (a prune moved it meanwhile) is kept as it is.
    pub fn write_gathered(&self, gathered: &Gathered) -> rusqlite::Result<usize> {
        let mut conn = locked(&self.indexer);
        let tx = conn.transaction()?;
        let mut written = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO image_history (id, image_key, event, at_ms, source,
                                                      batch_id, reason, digest, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for row in &gathered.rows {
                written += insert.execute((
                    row.id,
                    &row.image_key,
                    &row.event,
                    row.at_ms,
                    &row.source,
                    row.batch_id,
                    &row.reason,
                    &row.digest,
                    row.recorded_at,
                ))?;
            }
        }
        tx.prepare_cached("UPDATE history_cursor SET moved_through = MAX(moved_through, ?1)")?
            .execute([gathered.through])?;
        tx.commit()?;
        Ok(written)
    }

    /// Deletes from the queue file, in a turn of `write_turn`, the recent rows
    /// the history file holds already.
    pub fn delete_moved(&self, write_turn: &WriteTurn) -> rusqlite::Result<usize> {
        let conn = locked(&self.mover);
        let _turn = take_turn(write_turn);
        delete_moved(&conn)
    }

    /// Recent rows not copied here yet.
    pub fn waiting(&self) -> rusqlite::Result<i64> {
        waiting_rows(&locked(&self.mover))
    }

    /// The first half of a move alone, as a crash before its delete leaves it.
    #[cfg(test)]
    pub fn copy_only(&self) -> rusqlite::Result<usize> {
        self.write_gathered(&self.read_gathered(MOVE_AT_MOST)?)
    }

    /// Moves every recent row here, then deletes the oldest rows recorded
    /// before `cutoff`, at most [`PRUNE_BATCH`]: walks the ids from the
    /// oldest and stops at the first young row, so a pass costs what it
    /// deletes, not the table's size.
    pub fn prune(&self, cutoff: Millis, write_turn: &WriteTurn) -> rusqlite::Result<usize> {
        self.move_gathered(1, write_turn)?;
        locked(&self.mover)
            .prepare_cached(
                "DELETE FROM main.image_history
                 WHERE id < COALESCE((SELECT id FROM main.image_history WHERE recorded_at >= ?1
                                      ORDER BY id LIMIT 1),
                                     (SELECT MAX(id) + 1 FROM main.image_history))
                   AND id < (SELECT MIN(id) FROM main.image_history) + ?2",
            )?
            .execute((cutoff, PRUNE_BATCH))
    }

    /// The rows of `image_key` stored here with an id up to `through`, and
    /// the cursor: the recent rows at or below it are here.
    pub fn rows(&self, image_key: &str, through: i64) -> rusqlite::Result<(Vec<ImageRecord>, i64)> {
        let mut conn = locked(&self.reader);
        // One snapshot: the rows and the cursor of the same move.
        let tx = conn.transaction()?;
        let rows = all_rows(
            &tx,
            "SELECT id, at_ms, event, source, batch_id, reason, digest
             FROM image_history WHERE image_key = ?1 AND id <= ?2",
            (image_key, through),
            record_at,
        )?;
        let cursor = cursor(&tx, "main")?;
        tx.finish()?;
        Ok((rows, cursor))
    }
}

fn cursor(conn: &Connection, schema: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(&format!(
        "SELECT COALESCE(MAX(moved_through), 0) FROM {schema}.history_cursor"
    ))?
    .query_row([], |row| row.get(0))
}

/// Recent rows above the cursor.
fn waiting_rows(conn: &Connection) -> rusqlite::Result<i64> {
    let newest: i64 = conn
        .prepare_cached(&format!(
            "SELECT COALESCE(MAX(id), 0) FROM {QUEUE}.recent_history"
        ))?
        .query_row([], |row| row.get(0))?;
    Ok(newest - cursor(conn, "main")?)
}

/// Deletes from the queue file the recent rows a committed move copied here.
fn delete_moved(conn: &Connection) -> rusqlite::Result<usize> {
    conn.prepare_cached(&format!(
        "DELETE FROM {QUEUE}.recent_history
         WHERE id <= (SELECT moved_through FROM main.history_cursor)"
    ))?
    .execute([])
}

/// A queue file newer than its history file (restored from a backup, or
/// replaced) would number its recent rows again from below the cursor, and
/// they would be taken for moved ones: its id sequence starts above it.
fn keep_ids_above_cursor(conn: &Connection) -> rusqlite::Result<()> {
    let cursor = cursor(conn, "main")?;
    let raised = conn.execute(
        &format!(
            "UPDATE {QUEUE}.sqlite_sequence SET seq = ?1 WHERE name = 'recent_history' AND seq < ?1"
        ),
        [cursor],
    )?;
    let known: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {QUEUE}.sqlite_sequence WHERE name = 'recent_history'"),
        [],
        |row| row.get(0),
    )?;
    if raised == 0 && known == 0 && cursor > 0 {
        conn.execute(
            &format!(
                "INSERT INTO {QUEUE}.sqlite_sequence (name, seq) VALUES ('recent_history', ?1)"
            ),
            [cursor],
        )?;
    }
    Ok(())
}
