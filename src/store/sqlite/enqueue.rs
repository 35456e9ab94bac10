//! Writing webhooks' images: one group of webhooks per transaction.

use std::path::Path;

use rusqlite::{Connection, Transaction};

use super::connection::immediate;
use super::errors::sql_failure;
use super::history;
use crate::domain::{ImageRef, Partition};
use crate::store::group_commit::EnqueueJob;
use crate::store::history::{TargetOutcome, arrival_events};
use crate::store::{Arrival, EnqueueCounts, Enqueued, Millis, StoreError};

/// Stores one image as waiting unless the same image already waits in its
/// partition; `true` when a row was added.
pub(super) fn insert_unbatched(
    tx: &Connection,
    source: &str,
    partition: &Partition,
    image: &ImageRef,
    instance_url: Option<&str>,
    digest: Option<&str>,
    now: Millis,
) -> rusqlite::Result<bool> {
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
            instance_url,
            now,
            digest,
            source,
        ))?;
    Ok(inserted == 1)
}

/// One transaction for a group of webhooks, each in its own savepoint; every
/// job is answered once the outcome of the commit is known.
pub(super) fn commit_group(conn: &mut Connection, path: &Path, jobs: Vec<EnqueueJob>) {
    let failure = |err: &rusqlite::Error| sql_failure(path, "enqueue", err);
    let started = std::time::Instant::now();
    let webhooks = jobs.len();
    let mut tx = match immediate(conn) {
        Ok(tx) => tx,
        Err(err) => {
            let error = failure(&err);
            for job in jobs {
                job.answer(Err(same_error(&error)));
            }
            return;
        }
    };
    let outcomes: Vec<(EnqueueJob, rusqlite::Result<Enqueued>)> = jobs
        .into_iter()
        .map(|job| {
            let outcome = enqueue_in_savepoint(&mut tx, &job);
            (job, outcome)
        })
        .collect();
    let written = started.elapsed();
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

/// One webhook's rows; on error its savepoint rolls back and the group goes on.
fn enqueue_in_savepoint(tx: &mut Transaction<'_>, job: &EnqueueJob) -> rusqlite::Result<Enqueued> {
    let savepoint = tx.savepoint()?;
    let arrival = Arrival {
        source: &job.source,
        delivery: job.delivery.as_ref(),
        targets: &job.targets,
        ignored: &job.ignored,
    };
    let outcome = enqueue(&savepoint, &arrival, job.now)?;
    savepoint.commit()?;
    Ok(outcome)
}

/// One webhook's delivery id, images and history events, inside the
/// caller's transaction.
pub(super) fn enqueue(
    tx: &Connection,
    arrival: &Arrival<'_>,
    now: Millis,
) -> rusqlite::Result<Enqueued> {
    if let Some(key) = arrival.delivery {
        let first_time = tx
            .prepare_cached(
                "INSERT INTO deliveries (source, id, seen_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (source, id) DO NOTHING",
            )?
            .execute((&key.source, &key.id, now))?;
        if first_time == 0 {
            let outcomes = vec![TargetOutcome::Redelivery; arrival.targets.len()];
            history::record(tx, &arrival_events(arrival, &outcomes, now))?;
            return Ok(Enqueued::DuplicateDelivery);
        }
    }
    let mut counts = EnqueueCounts::default();
    let mut outcomes = Vec::with_capacity(arrival.targets.len());
    for target in arrival.targets {
        if insert_unbatched(
            tx,
            arrival.source,
            &target.partition,
            &target.image,
            target.instance_url.as_deref(),
            target.digest.as_deref(),
            now,
        )? {
            counts.accepted += 1;
            outcomes.push(TargetOutcome::Accepted);
        } else {
            counts.duplicates += 1;
            outcomes.push(TargetOutcome::Duplicate);
        }
    }
    history::record(tx, &arrival_events(arrival, &outcomes, now))?;
    Ok(Enqueued::Stored(counts))
}
