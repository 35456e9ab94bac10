//! Per-connection settings, the write turn and the transactions the store opens.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
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

/// This process's write turn: writers get it in the order they asked.
///
/// Why first come, first served: the enqueue writer asks again as soon as it
/// lets go, and a plain mutex mostly hands the lock straight back to the
/// thread that just released it, so a claim could wait behind many groups.
#[derive(Debug, Default)]
pub(super) struct WriteTurn {
    tickets: Mutex<Tickets>,
    next: Condvar,
}

#[derive(Debug, Default)]
struct Tickets {
    issued: u64,
    serving: u64,
}

/// Holds the write turn; the next ticket is served when it drops (also when
/// its holder panics, whose transaction rolled back with its connection).
pub(super) struct TurnGuard<'a>(&'a WriteTurn);

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        lock_tickets(&self.0.tickets).serving += 1;
        self.0.next.notify_all();
    }
}

fn lock_tickets(tickets: &Mutex<Tickets>) -> MutexGuard<'_, Tickets> {
    // Two counters, each changed in one step: consistent even if poisoned.
    tickets.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits for this process's write turn, on a blocking thread.
pub(super) fn take_turn(turn: &WriteTurn) -> TurnGuard<'_> {
    let mut tickets = lock_tickets(&turn.tickets);
    let mine = tickets.issued;
    tickets.issued += 1;
    while tickets.serving != mine {
        tickets = turn
            .next
            .wait(tickets)
            .unwrap_or_else(PoisonError::into_inner);
    }
    TurnGuard(turn)
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
    let mode = switch_to_wal(conn, busy)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(ConfigureError::NotWal(mode));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(())
}

/// `journal_mode = WAL`, asked again while another opener holds the file:
/// two connections switching a fresh file at once can each hold the read
/// lock the other must upgrade past, and SQLite then answers BUSY at once,
/// without waiting in the busy handler (which would deadlock).
fn switch_to_wal(conn: &Connection, patience: Duration) -> rusqlite::Result<String> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(rusqlite::Error::SqliteFailure(error, _))
                if error.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            outcome => return outcome,
        }
    }
}

pub(super) fn immediate(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_turn_goes_to_writers_in_the_order_they_asked() {
        let turn = Arc::new(WriteTurn::default());
        let first = take_turn(&turn);
        let (order, served) = mpsc::channel();
        let mut waiters = Vec::new();
        for name in ["claim", "group"] {
            let shared = Arc::clone(&turn);
            let order = order.clone();
            waiters.push(std::thread::spawn(move || {
                let _turn = take_turn(&shared);
                order.send(name).expect("test listens");
            }));
            // The claim asks first, then the group.
            while lock_tickets(&turn.tickets).issued < waiters.len() as u64 + 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // The holder lets go and at once asks again, as the enqueue writer does:
        // it is served after both waiters, not before them.
        drop(first);
        let again = take_turn(&turn);
        order.send("holder again").expect("test listens");
        drop(again);
        for waiter in waiters {
            waiter.join().expect("waiter");
        }
        drop(order);
        assert_eq!(
            served.iter().collect::<Vec<_>>(),
            vec!["claim", "group", "holder again"]
        );
    }
}
