//! The thread that moves recent history rows into the history file (see
//! [`super::history_file`]), woken by settles and on a timer.
//!
//! Why a thread of its own: a move runs for many milliseconds on the history
//! file's lock; on tokio's blocking pool it would hold one of the threads the
//! queue's work needs, and nobody waits for its answer anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, Thread};
use std::time::Duration;

use super::connection::WriteTurn;
use super::history_file::HistoryFile;
use crate::store::StoreError;
use crate::store::history::MERGE_AT;

/// How often the mover looks without being woken: intake's own history rows
/// (duplicates, ignored pushes) gather without a settle to wake it.
const LOOK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Flags {
    stopping: AtomicBool,
    /// Set once both files' schemas are up to date: before that there is
    /// nothing to move, and no table to move it from.
    migrated: AtomicBool,
}

/// The store's handle on its mover thread.
#[derive(Debug)]
pub(super) struct Mover {
    flags: Arc<Flags>,
    thread: Thread,
}

impl Mover {
    pub fn start(
        history: Arc<HistoryFile>,
        write_turn: Arc<WriteTurn>,
    ) -> Result<Self, StoreError> {
        let flags = Arc::new(Flags::default());
        let thread_flags = Arc::clone(&flags);
        let handle = thread::Builder::new()
            .name("sqlite-history".into())
            .spawn(move || move_while_open(&thread_flags, &history, &write_turn))
            .map_err(|err| {
                StoreError::Unavailable(format!("cannot start the history mover thread: {err}"))
            })?;
        Ok(Self {
            flags,
            thread: handle.thread().clone(),
        })
    }

    /// The schemas are up to date: moves may start.
    pub fn migrated(&self) {
        self.flags.migrated.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }

    /// Rows were added: look now rather than at the next tick.
    pub fn nudge(&self) {
        self.thread.unpark();
    }

    /// Ends the thread after the move under way, if any; rows not moved stay
    /// in the queue file, where reads find them.
    pub fn stop(&self) {
        self.flags.stopping.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

impl Drop for Mover {
    fn drop(&mut self) {
        self.stop();
    }
}

fn move_while_open(flags: &Flags, history: &HistoryFile, write_turn: &WriteTurn) {
    loop {
        // `unpark` before `park` is not lost: it returns at once.
        thread::park_timeout(LOOK_EVERY);
        if flags.stopping.load(Ordering::SeqCst) {
            return;
        }
        if !flags.migrated.load(Ordering::SeqCst) {
            continue;
        }
        match history.move_gathered(MERGE_AT, write_turn) {
            Ok(0) => {}
            Ok(moved) => {
                tracing::debug!(history = %history.path().display(), moved, "moved history rows");
            }
            // Nothing is lost: the rows wait in the queue file for the next try.
            Err(err) => {
                tracing::warn!(history = %history.path().display(), error = %err, "moving history rows failed");
            }
        }
    }
}
