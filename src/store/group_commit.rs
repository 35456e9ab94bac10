//! Group commit for enqueues, shared by the SQLite and PostgreSQL stores:
//! webhooks that arrive while a commit is running are written together in the
//! next transaction, so they share one commit (SQLite: one `BEGIN IMMEDIATE`
//! and one WAL fsync; PostgreSQL: one statement and one WAL flush) instead of
//! paying for it one by one.
//!
//! The promise of [`Store::enqueue`](crate::store::Store::enqueue) is kept per
//! caller: each gets its answer only after the transaction that holds ITS rows
//! committed. How a backend isolates one webhook's failure from the others of
//! its group is up to its `commit` function; a failed commit fails every
//! webhook of the group, and none of them was acknowledged.
//!
//! Who commits differs by backend. SQLite has one writer per file, so the
//! SQLite store gives the queue to a thread of its own
//! (`sqlite::writer`), which takes one group per write turn with
//! [`GroupCommit::next_group`]; callers only wait for their
//! [`GroupCommit::outcome`]. PostgreSQL commits with the callers' own
//! tasks ([`GroupCommit::settle`]): every caller queues its job, then waits
//! for whichever comes first: its answer (a committer committed its job) or a
//! committer's turn. It has a few turns, so that one group's statements run
//! while another waits for its WAL flush (the server flushes concurrent
//! commits together). A turn's holder commits one group of the oldest queued
//! jobs and lets go. A job is never stranded: its caller keeps waiting for a
//! turn until someone answers it; if it holds a turn and finds nothing
//! queued, its job is in a group being committed, whose end answers it. A
//! caller whose job is committed leaves at once, without queueing for a turn
//! behind the next group.

use std::sync::Mutex;

use std::future::Future;

use tokio::sync::oneshot;

use crate::domain::ScanTarget;
use crate::store::{Arrival, DeliveryKey, Enqueued, IgnoredImage, Millis, StoreError};

/// Most webhooks written in one transaction; the rest wait for the next one.
/// Bounds how long one commit holds the write lock against the batcher.
pub(super) const MAX_GROUP: usize = 256;

/// One webhook's images, waiting for a group commit.
pub(super) struct EnqueueJob {
    pub source: String,
    pub delivery: Option<DeliveryKey>,
    pub targets: Vec<ScanTarget>,
    pub ignored: Vec<IgnoredImage>,
    pub now: Millis,
    /// Whether duplicates and ignored images get their history rows.
    pub record_history: bool,
    answer: oneshot::Sender<Result<Enqueued, StoreError>>,
}

impl EnqueueJob {
    /// Tells the caller how its webhook ended. A caller that gave up (its HTTP
    /// request was dropped) no longer listens; its rows stand all the same.
    pub fn answer(self, outcome: Result<Enqueued, StoreError>) {
        let _ = self.answer.send(outcome);
    }
}

/// The caller's side of a queued job.
pub(super) struct Answer(oneshot::Receiver<Result<Enqueued, StoreError>>);

fn outcome_of(
    received: Result<Result<Enqueued, StoreError>, oneshot::error::RecvError>,
) -> Result<Enqueued, StoreError> {
    received.unwrap_or_else(|_| {
        // The committing task died (panic, runtime shutdown) before it
        // answered: nothing tells whether the rows are durable, so the sender
        // must retry; a retry of stored rows is a duplicate.
        Err(StoreError::Unavailable(
            "enqueue: the group commit ended without an answer".into(),
        ))
    })
}

pub(super) struct GroupCommit {
    queued: Mutex<Vec<EnqueueJob>>,
    /// One permit per group that may be committing at a time.
    turns: tokio::sync::Semaphore,
}

impl Default for GroupCommit {
    /// One group at a time.
    fn default() -> Self {
        GroupCommit::with_committers(1)
    }
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Up to `committers` groups committing at once (at least one).
    pub fn with_committers(committers: usize) -> Self {
        GroupCommit {
            queued: Mutex::default(),
            turns: tokio::sync::Semaphore::new(committers.max(1)),
        }
    }

    /// Queues one webhook's images; its outcome arrives through the [`Answer`].
    pub fn queue(&self, arrival: &Arrival<'_>, now: Millis, record_history: bool) -> Answer {
        let (answer, receiver) = oneshot::channel();
        let job = EnqueueJob {
            source: arrival.source.to_string(),
            delivery: arrival.delivery.cloned(),
            targets: arrival.targets.to_vec(),
            ignored: arrival.ignored.to_vec(),
            now,
            record_history,
            answer,
        };
        self.lock_queue().push(job);
        Answer(receiver)
    }

    /// Waits for the answer to a queued job. Each time a turn comes first,
    /// commits the next group with `commit` (which must answer every job it
    /// is given) during it.
    pub async fn settle<F>(
        &self,
        answer: Answer,
        commit: impl Fn(Vec<EnqueueJob>) -> F,
    ) -> Result<Enqueued, StoreError>
    where
        F: Future<Output = ()>,
    {
        let mut receiver = answer.0;
        loop {
            tokio::select! {
                biased;
                outcome = &mut receiver => return outcome_of(outcome),
                turn = self.turns.acquire() => {
                    // The semaphore is never closed; were it, waiting for
                    // the answer is all that is left.
                    let Ok(turn) = turn else {
                        return outcome_of(receiver.await);
                    };
                    let jobs = self.next_group();
                    if jobs.is_empty() {
                        // Ours is in a group still being committed.
                        drop(turn);
                        return outcome_of(receiver.await);
                    }
                    commit(jobs).await;
                    drop(turn);
                }
            }
        }
    }

    /// Waits for the answer to a queued job that someone else commits.
    pub async fn outcome(answer: Answer) -> Result<Enqueued, StoreError> {
        outcome_of(answer.0.await)
    }

    /// Takes every turn as committing callers would (tests line jobs up
    /// behind them, so that they commit as one group).
    #[cfg(test)]
    pub async fn writer(&self) -> tokio::sync::SemaphorePermit<'_> {
        let all = u32::try_from(self.turns.available_permits()).expect("few permits");
        self.turns.acquire_many(all).await.expect("never closed")
    }

    /// Up to [`MAX_GROUP`] of the oldest queued jobs; empty when none wait.
    pub fn next_group(&self) -> Vec<EnqueueJob> {
        let mut queued = self.lock_queue();
        let take = queued.len().min(MAX_GROUP);
        queued.drain(..take).collect()
    }

    /// How many jobs wait for a commit.
    pub fn queued(&self) -> usize {
        self.lock_queue().len()
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<EnqueueJob>> {
        // Only push and drain happen under this lock; neither can panic
        // halfway, so a poisoned queue is still consistent.
        self.queued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: Arrival<'static> = Arrival {
        source: "test",
        delivery: None,
        targets: &[],
        ignored: &[],
    };

    #[tokio::test]
    async fn groups_are_taken_oldest_first_and_capped() {
        let group = GroupCommit::default();
        let answers: Vec<Answer> = (0..MAX_GROUP + 3)
            .map(|i| group.queue(&EMPTY, i as Millis, true))
            .collect();
        let first = group.next_group();
        assert_eq!(first.len(), MAX_GROUP);
        assert_eq!(first[0].now, 0);
        assert_eq!(first[MAX_GROUP - 1].now, (MAX_GROUP - 1) as Millis);
        let rest = group.next_group();
        assert_eq!(
            rest.iter().map(|job| job.now).collect::<Vec<_>>(),
            vec![
                MAX_GROUP as Millis,
                MAX_GROUP as Millis + 1,
                MAX_GROUP as Millis + 2
            ]
        );
        assert!(group.next_group().is_empty());
        // Jobs dropped unanswered (a committing task that died) are errors.
        drop(first);
        drop(rest);
        for answer in answers {
            assert!(matches!(
                group.settle(answer, |_| async { unreachable!("nothing is queued") }).await,
                Err(StoreError::Unavailable(message)) if message.contains("without an answer")
            ));
        }
    }

    #[tokio::test]
    async fn an_answered_caller_does_not_wait_for_the_writer_lock() {
        let group = GroupCommit::default();
        let answer = group.queue(&EMPTY, 7, true);
        let job = group.next_group().pop().expect("queued job");
        // Another caller is committing the next group and holds the lock.
        let held = group.writer().await;
        job.answer(Ok(Enqueued::DuplicateDelivery));
        let outcome = group
            .settle(answer, |_| async {
                unreachable!("the lock is held elsewhere")
            })
            .await;
        assert_eq!(outcome.expect("answered"), Enqueued::DuplicateDelivery);
        drop(held);
    }

    #[tokio::test]
    async fn the_lock_holder_commits_what_is_queued() {
        let group = GroupCommit::default();
        let answer = group.queue(&EMPTY, 7, true);
        let outcome = group
            .settle(answer, |jobs| async move {
                assert_eq!(jobs.len(), 1);
                for job in jobs {
                    job.answer(Ok(Enqueued::DuplicateDelivery));
                }
            })
            .await;
        assert_eq!(outcome.expect("answered"), Enqueued::DuplicateDelivery);
        assert_eq!(group.queued(), 0);
    }

    #[tokio::test]
    async fn a_caller_behind_a_full_group_commits_the_next_one() {
        let group = GroupCommit::default();
        let ahead: Vec<Answer> = (0..MAX_GROUP)
            .map(|i| group.queue(&EMPTY, i as Millis, true))
            .collect();
        let answer = group.queue(&EMPTY, -1, true);
        let groups = Mutex::new(Vec::new());
        let outcome = group
            .settle(answer, |jobs| {
                groups.lock().expect("groups").push(jobs.len());
                async move {
                    for job in jobs {
                        let now = job.now;
                        job.answer(Err(StoreError::Query(format!("job {now}"))));
                    }
                }
            })
            .await;
        // Two turns of the lock: the full group ahead, then its own.
        assert_eq!(*groups.lock().expect("groups"), vec![MAX_GROUP, 1]);
        assert!(matches!(outcome, Err(StoreError::Query(m)) if m == "job -1"));
        for answer in ahead {
            assert!(matches!(
                group
                    .settle(answer, |_| async { unreachable!("answered") })
                    .await,
                Err(StoreError::Query(_))
            ));
        }
    }

    #[tokio::test]
    async fn each_caller_gets_the_answer_of_its_own_job_from_another_committer() {
        let group = GroupCommit::default();
        let first = group.queue(&EMPTY, 1, true);
        let second = group.queue(&EMPTY, 2, true);
        assert_eq!(group.queued(), 2);
        for job in group.next_group() {
            let now = job.now;
            job.answer(Err(StoreError::Query(format!("job {now}"))));
        }
        assert_eq!(group.queued(), 0);
        let answered =
            |outcome, expected: &str| matches!(outcome, Err(StoreError::Query(m)) if m == expected);
        assert!(answered(GroupCommit::outcome(second).await, "job 2"));
        assert!(answered(GroupCommit::outcome(first).await, "job 1"));
        // A job dropped unanswered (a committer that panicked) is an error.
        let dropped = group.queue(&EMPTY, 3, true);
        drop(group.next_group());
        assert!(matches!(
            GroupCommit::outcome(dropped).await,
            Err(StoreError::Unavailable(m)) if m.contains("without an answer")
        ));
    }
}
