//! Per-connection settings, the write turn and the transactions the store opens.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

/// Enough for every statement below, so cached statements are never evicted.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// How long the store waits before it calls the database unavailable.
#[derive(Debug, Clone, Copy)]
pub(super) struct Patience {
    /// For the file's write lock, held by another connection or process.
    pub(super) busy: Duration,
    /// For a free connection in the pool (and for opening a new one).
    pub(super) pool: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Self {
            busy: Duration::from_secs(5),
            pool: Duration::from_secs(5),
        }
    }
}

/// Waits for this process's write turn, on a blocking thread.
pub(super) fn take_turn(turn: &Mutex<()>) -> MutexGuard<'_, ()> {
    // The guarded value is `()`: a writer that panicked left nothing half-done
    // here (its transaction rolled back with its connection).
    turn.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ConfigureError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("journal_mode stayed {0:?} instead of WAL")]
    NotWal(String),
}

/// Per-connection settings; see the module docs for why.
pub(super) fn configure_connection(
    conn: &mut Connection,
    busy: Duration,
) -> Result<(), ConfigureError> {
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

pub(super) fn immediate(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}
