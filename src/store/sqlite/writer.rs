//! The SQLite store's enqueue writer: one thread with its own connection that
//! takes the queued webhooks as one group, commits them, answers each, and
//! sleeps when nothing waits.
//!
//! Why a thread of its own: committing a group on a pooled connection meant,
//! for every group, a pool checkout, a hand-off to one of tokio's blocking
//! threads and back, and a lock that every waiting webhook polled. Here a
//! webhook's cost is a push onto the queue and a wake-up of the writer when
//! it sleeps; the writer takes the store's write turn first and the group
//! after, so what arrived while it waited for the turn joins that group.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::connection::{Patience, WriteTurn, configure_connection, take_turn};
use super::enqueue::commit_group;
use super::errors::panic_reason;
use crate::store::group_commit::GroupCommit;
use crate::store::{Arrival, Enqueued, Millis, StoreError};

/// What the store and its writer thread share.
#[derive(Debug, Default)]
struct Shared {
    group: GroupCommit,
    /// Set by [`GroupWriter::stop`]: the writer commits what is queued, then ends.
    stopping: AtomicBool,
    /// Set by the writer as it ends; a job queued after that is refused.
    ended: AtomicBool,
    /// Since when (µs after `epoch`, plus one) the writer works on one group;
    /// 0 while it sleeps. Lets readiness see a writer stuck on the file lock.
    busy_since_us: AtomicU64,
    epoch: OnceInstant,
}

/// When the writer's clock starts (for `busy_since_us`).
#[derive(Debug)]
struct OnceInstant(Instant);

impl Default for OnceInstant {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Shared {
    /// Answers every queued job as refused: nobody will commit them.
    fn refuse_queued(&self, why: &str) {
        loop {
            let jobs = self.group.next_group();
            if jobs.is_empty() {
                return;
            }
            for job in jobs {
                job.answer(Err(StoreError::Unavailable(why.to_string())));
            }
        }
    }
}

/// The store's handle on its writer thread.
#[derive(Debug)]
pub(super) struct GroupWriter {
    shared: Arc<Shared>,
    thread: Thread,
    path: PathBuf,
}

impl GroupWriter {
    /// Opens the writer's connection on a new thread and starts it; fails
    /// when the connection cannot be opened or configured.
    pub async fn start(
        path: &Path,
        patience: Patience,
        write_turn: Arc<WriteTurn>,
    ) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared::default());
        let (opened, opening) = tokio::sync::oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        let thread_path = path.to_path_buf();
        let handle = thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let mut conn = match open_connection(&thread_path, patience) {
                    Ok(conn) => conn,
                    Err(error) => {
                        let _ = opened.send(Err(error));
                        return;
                    }
                };
                let _ = opened.send(Ok(()));
                write_groups(&thread_shared, &mut conn, &thread_path, &write_turn);
            })
            .map_err(|err| unavailable(path, &format!("cannot start the writer thread: {err}")))?;
        match opening.await {
            Ok(Ok(())) => Ok(Self {
                shared,
                thread: handle.thread().clone(),
                path: path.to_path_buf(),
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(unavailable(path, "the writer thread ended while opening")),
        }
    }

    /// Queues one webhook's images and waits until the group holding them
    /// committed (or failed).
    pub async fn enqueue(
        &self,
        arrival: &Arrival<'_>,
        now: Millis,
        record_history: bool,
    ) -> Result<Enqueued, StoreError> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Err(unavailable(&self.path, "the store is closed"));
        }
        let answer = self.shared.group.queue(arrival, now, record_history);
        self.thread.unpark();
        if self.shared.ended.load(Ordering::SeqCst) {
            // The writer ended after the check above: it may not have seen
            // this job, so nobody else will answer it.
            self.shared.refuse_queued(&self.closed_message());
        }
        GroupCommit::outcome(answer).await
    }

    /// How long the writer has been on its current group, if it is on one.
    pub fn busy_for(&self) -> Option<Duration> {
        let since = self.shared.busy_since_us.load(Ordering::SeqCst);
        let now = self.shared.epoch.0.elapsed();
        (since > 0).then(|| now.saturating_sub(Duration::from_micros(since - 1)))
    }

    /// Lets the writer commit what is queued and end; later enqueues fail.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }

    fn closed_message(&self) -> String {
        unavailable(&self.path, "the store is closed").to_string()
    }

    /// How many webhooks wait for the writer (tests line them up).
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.shared.group.queued()
    }
}

impl Drop for GroupWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn unavailable(path: &Path, cause: &str) -> StoreError {
    StoreError::Unavailable(format!("sqlite database {}: {cause}", path.display()))
}

fn open_connection(path: &Path, patience: Patience) -> Result<Connection, StoreError> {
    let mut conn =
        Connection::open(path).map_err(|err| unavailable(path, &format!("cannot open: {err}")))?;
    configure_connection(&mut conn, patience.busy).map_err(|err| {
        unavailable(
            path,
            &format!("cannot configure the writer's connection: {err}"),
        )
    })?;
    Ok(conn)
}

/// The writer's loop: sleeps until a job is queued, takes the write turn,
/// then commits the queued jobs as one group (up to the group cap), until
/// asked to stop and nothing is left.
fn write_groups(shared: &Shared, conn: &mut Connection, path: &Path, write_turn: &WriteTurn) {
    loop {
        if shared.group.queued() == 0 {
            if shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            // `unpark` before `park` is not lost: park returns at once.
            thread::park();
            continue;
        }
        let started = shared.epoch.0.elapsed().as_micros();
        let started = u64::try_from(started).unwrap_or(u64::MAX - 1) + 1;
        shared.busy_since_us.store(started, Ordering::SeqCst);
        let turn = take_turn(write_turn);
        let jobs = shared.group.next_group();
        if !jobs.is_empty() {
            // A panic drops the group's jobs (their callers get an error) and
            // rolls its transaction back with the unwinding; the writer goes on.
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| commit_group(conn, path, jobs)))
            {
                let reason = panic_reason(payload.as_ref());
                tracing::error!(db = %path.display(), reason, "sqlite group commit panicked");
            }
        }
        drop(turn);
        shared.busy_since_us.store(0, Ordering::SeqCst);
    }
    shared.ended.store(true, Ordering::SeqCst);
    shared.refuse_queued(&unavailable(path, "the store is closed").to_string());
}
