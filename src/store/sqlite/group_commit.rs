//! Group commit for the SQLite store's enqueues: webhooks that arrive while a
//! commit is running are written together in the next transaction, so they
//! share one `BEGIN IMMEDIATE` and one WAL fsync instead of queueing on the
//! file's write lock one by one.
//!
//! The promise of [`Store::enqueue`](crate::store::Store::enqueue) is kept per
//! caller: each gets its answer only after the transaction that holds ITS rows
//! committed (with `synchronous=FULL`, after the fsync). A failure inside one
//! webhook's statements rolls back that webhook's savepoint only; a failed
//! commit fails every webhook of the group, and none of them was acknowledged.
//!
//! Who commits: every caller queues its job and waits for its answer; the
//! store's writer thread ([`super::writer`]) takes the oldest queued jobs as
//! one group, one group per write turn, so the store's other writes (the
//! batcher's claims), which queue for the same turn, wait at most one group.
//! A job whose answer sender is dropped unanswered (a panicking commit) is
//! answered as an error, never left waiting.

use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::domain::ScanTarget;
use crate::store::{DeliveryKey, Enqueued, Millis, StoreError};

/// Most webhooks written in one transaction; the rest wait for the next one.
/// Bounds how long one commit holds the write lock against the batcher.
pub(super) const MAX_GROUP: usize = 256;

/// One webhook's images, waiting for a group commit.
pub(super) struct EnqueueJob {
    pub delivery: Option<DeliveryKey>,
    pub targets: Vec<ScanTarget>,
    pub now: Millis,
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

#[derive(Default)]
pub(super) struct GroupCommit {
    queued: Mutex<Vec<EnqueueJob>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Queues one webhook's images; its outcome arrives through the [`Answer`].
    pub fn queue(
        &self,
        delivery: Option<DeliveryKey>,
        targets: Vec<ScanTarget>,
        now: Millis,
    ) -> Answer {
        let (answer, receiver) = oneshot::channel();
        let job = EnqueueJob {
            delivery,
            targets,
            now,
            answer,
        };
        self.lock_queue().push(job);
        Answer(receiver)
    }

    /// Waits for the answer to a queued job.
    pub async fn outcome(answer: Answer) -> Result<Enqueued, StoreError> {
        outcome_of(answer.0.await)
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

    #[tokio::test]
    async fn groups_are_taken_oldest_first_and_capped() {
        let group = GroupCommit::default();
        let answers: Vec<Answer> = (0..MAX_GROUP + 3)
            .map(|i| group.queue(None, Vec::new(), i as Millis))
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
                GroupCommit::outcome(answer).await,
                Err(StoreError::Unavailable(message)) if message.contains("without an answer")
            ));
        }
    }

    #[tokio::test]
    async fn each_caller_gets_the_answer_of_its_own_job() {
        let group = GroupCommit::default();
        let first = group.queue(None, Vec::new(), 1);
        let second = group.queue(None, Vec::new(), 2);
        assert_eq!(group.queued(), 2);
        for job in group.next_group() {
            let now = job.now;
            job.answer(Err(StoreError::Query(format!("job {now}"))));
        }
        assert_eq!(group.queued(), 0);
        assert!(
            matches!(GroupCommit::outcome(second).await, Err(StoreError::Query(m)) if m == "job 2")
        );
        assert!(
            matches!(GroupCommit::outcome(first).await, Err(StoreError::Query(m)) if m == "job 1")
        );
    }
}
