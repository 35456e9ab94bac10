//! Writing webhooks' images: one group of webhooks per transaction.

use std::path::Path;

use rusqlite::{Connection, Transaction};

use super::connection::immediate;
use super::errors::sql_failure;
use super::history::insert_record;
use crate::domain::ScanTarget;
use crate::store::group_commit::EnqueueJob;
use crate::store::history::{ALREADY_PENDING, KeyedRecord, arrival_records};
use crate::store::{Arrival, EnqueueCounts, Enqueued, Millis, StoreError};

/// Stores one image as waiting unless the same image already waits in its
/// partition; `true` when a row was added. A duplicate leaves a history row
/// when `record_history`.
pub(super) fn insert_unbatched(
    tx: &Connection,
    target: &ScanTarget,
    source: &str,
    now: Millis,
    record_history: bool,
) -> rusqlite::Result<bool> {
    let partition = &target.partition;
    let image = &target.image;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO pending_images (partition_key, image_type, instance_id,
                 enterprise_project_id, namespace, name, tag, instance_url, enqueued_at, digest,
                 source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
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
            target.instance_url.as_deref(),
            now,
            target.digest.as_deref(),
            source,
        ))?;
    if inserted == 0 && record_history {
        let duplicate = KeyedRecord::duplicate(target, source, ALREADY_PENDING, now);
        insert_record(tx, &duplicate, now)?;
    }
    Ok(inserted == 1)
}

/// One transaction for a group of webhooks, each in its own savepoint; every
/// job is answered once the outcome of the commit is known.
pub(super) fn commit_group(conn: &mut Connection, path: &Path, jobs: Vec<EnqueueJob>) {
    let failure = |err: &rusqlite::Error| sql_failure(path, "enqueue", err);
    let started = std::time::Instant::now();
    let webhooks = jobs.len();
    let tx = match immediate(conn) {
        Ok(tx) => tx,
        Err(err) => {
            let error = failure(&err);
            for job in jobs {
                job.answer(Err(same_error(&error)));
            }
            return;
        }
    };
    let mut outcomes: Vec<(EnqueueJob, rusqlite::Result<Enqueued>)> = Vec::with_capacity(webhooks);
    let mut jobs = jobs.into_iter();
    let mut undo_failed = None;
    for job in jobs.by_ref() {
        match enqueue_in_savepoint(&tx, &job) {
            Ok(outcome) => outcomes.push((job, outcome)),
            Err(err) => {
                undo_failed = Some((job, err));
                break;
            }
        }
    }
    let written = started.elapsed();
    // A webhook whose rows could not be undone must not be committed with
    // the others: the whole group is refused (dropping `tx` rolls it back).
    if let Some((job, err)) = undo_failed {
        let error = failure(&err);
        let done = outcomes.into_iter().map(|(job, _)| job);
        for job in done.chain(std::iter::once(job)).chain(jobs) {
            job.answer(Err(same_error(&error)));
        }
        return;
    }
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

/// One webhook's rows; on error its savepoint rolls back and the group goes
/// on. The outer error: that roll-back failed, so the transaction holds rows
/// of a webhook that will be told it failed.
///
/// The savepoint statements are prepared once per connection (rusqlite's
/// `Transaction::savepoint` parses `SAVEPOINT`/`RELEASE` text for every webhook).
fn enqueue_in_savepoint(
    tx: &Transaction<'_>,
    job: &EnqueueJob,
) -> rusqlite::Result<rusqlite::Result<Enqueued>> {
    let run = |sql: &str| tx.prepare_cached(sql)?.execute([]).map(drop);
    if let Err(err) = run("SAVEPOINT webhook") {
        return Ok(Err(err));
    }
    let arrival = Arrival {
        source: &job.source,
        delivery: job.delivery.as_ref(),
        targets: &job.targets,
        ignored: &job.ignored,
    };
    let outcome = enqueue(tx, &arrival, job.now, job.record_history)
        .and_then(|outcome| run("RELEASE webhook").map(|()| outcome));
    if outcome.is_err() {
        run("ROLLBACK TO webhook").and_then(|()| run("RELEASE webhook"))?;
    }
    Ok(outcome)
}

/// One webhook's delivery id and images, and the history rows of what it
/// ignored, inside the caller's transaction.
pub(super) fn enqueue(
    tx: &Connection,
    arrival: &Arrival<'_>,
    now: Millis,
    record_history: bool,
) -> rusqlite::Result<Enqueued> {
    let redelivery = match arrival.delivery {
        Some(key) => {
            tx.prepare_cached(
                "INSERT INTO deliveries (source, id, seen_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (source, id) DO NOTHING",
            )?
            .execute((&key.source, &key.id, now))?
                == 0
        }
        None => false,
    };
    if record_history {
        for record in arrival_records(arrival, redelivery, now) {
            insert_record(tx, &record, now)?;
        }
    }
    if redelivery {
        return Ok(Enqueued::DuplicateDelivery);
    }
    let mut counts = EnqueueCounts::default();
    for target in arrival.targets {
        let stored = insert_unbatched(tx, target, arrival.source, now, record_history)?;
        counts.count(stored);
    }
    Ok(Enqueued::Stored(counts))
}
