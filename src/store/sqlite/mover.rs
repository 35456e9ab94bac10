//! The threads that move recent history rows into the history file (see
//! [`super::history_file`]), woken by settles and on a timer.
//!
//! Why threads of their own: a move runs for many milliseconds; on tokio's
//! blocking pool it would hold one of the threads the queue's work needs,
//! and nobody waits for its answer anyway.
//!
//! Why two: the mover thread, at normal priority, does what touches the
//! queue file: it reads the gathered rows from one snapshot, and after they
//! are written deletes them in a turn of the queue's write lock, which every
//! webhook needs. The indexer thread writes them into the history file and
//! raises its cursor, the CPU-heavy part, at idle priority (see
//! [`super::mover_priority`]), holding nothing of the queue file's: an idle
//! thread may wait seconds for a core, and a lock or snapshot held that long
//! would stall intake or the queue's checkpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{self, Thread};
use std::time::Duration;

use super::connection::WriteTurn;
use super::history_file::{Gathered, HistoryFile};
use super::mover_priority::{YIELD_UP_TO, make_current_thread_idle};
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
        let (to_index, gathered) = sync_channel::<Gathered>(1);
        let (indexed, written) = sync_channel::<rusqlite::Result<usize>>(1);
        let indexer_history = Arc::clone(&history);
        thread::Builder::new()
            .name("sqlite-history-index".into())
            .spawn(move || index_at_idle_priority(&gathered, &indexed, &indexer_history))
            .map_err(|err| {
                StoreError::Unavailable(format!("cannot start the history indexer thread: {err}"))
            })?;
        let channels = IndexerChannels { to_index, written };
        let handle = thread::Builder::new()
            .name("sqlite-history".into())
            .spawn(move || move_while_open(&thread_flags, &history, &write_turn, &channels))
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

/// The mover's ends of the indexer's channels.
struct IndexerChannels {
    to_index: SyncSender<Gathered>,
    written: Receiver<rusqlite::Result<usize>>,
}

impl IndexerChannels {
    /// Has the indexer write `gathered`; `None` once the indexer is gone.
    fn index(&self, gathered: Gathered) -> Option<rusqlite::Result<usize>> {
        self.to_index.send(gathered).ok()?;
        self.written.recv().ok()
    }
}

/// The mover thread, until the store stops (dropping `channels` then ends the
/// indexer thread).
fn move_while_open(
    flags: &Flags,
    history: &HistoryFile,
    write_turn: &WriteTurn,
    channels: &IndexerChannels,
) {
    loop {
        // `unpark` before `park` is not lost: it returns at once.
        thread::park_timeout(LOOK_EVERY);
        if flags.stopping.load(Ordering::SeqCst) {
            return;
        }
        if !flags.migrated.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(err) = move_gathered(history, write_turn, channels) {
            // Nothing is lost: the rows wait in the queue file for the next try.
            tracing::warn!(history = %history.path().display(), error = %err, "moving history rows failed");
        }
    }
}

/// Moves what has gathered once [`MERGE_AT`] rows wait, each step's rows
/// written by the idle-priority indexer, or by this thread past
/// [`YIELD_UP_TO`]: so long a backlog slows every history read.
fn move_gathered(
    history: &HistoryFile,
    write_turn: &WriteTurn,
    channels: &IndexerChannels,
) -> rusqlite::Result<()> {
    let moved = history.move_gathered_with(MERGE_AT, write_turn, |gathered, waiting| {
        if waiting > YIELD_UP_TO {
            Some(history.write_gathered(&gathered))
        } else {
            channels.index(gathered)
        }
    })?;
    if moved > 0 {
        tracing::debug!(history = %history.path().display(), moved, "moved history rows");
    }
    Ok(())
}

/// The indexer thread: writes what the mover hands it, at idle priority,
/// until the mover is gone.
fn index_at_idle_priority(
    gathered: &Receiver<Gathered>,
    indexed: &SyncSender<rusqlite::Result<usize>>,
    history: &HistoryFile,
) {
    if let Err(err) = make_current_thread_idle() {
        // At normal priority the index writes take CPU from intake, no more.
        tracing::warn!(history = %history.path().display(), error = %err, "the history indexer cannot run at idle priority");
    }
    while let Ok(rows) = gathered.recv() {
        if indexed.send(history.write_gathered(&rows)).is_err() {
            return;
        }
    }
}
