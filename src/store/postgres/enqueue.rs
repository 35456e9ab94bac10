//! Enqueues, group-committed: the webhooks of one group (see
//! [`crate::store::group_commit`]) are written by ONE statement, which is its
//! own transaction: one round trip and one WAL flush for the whole group,
//! where a transaction per webhook took five round trips and a flush each.
//!
//! The statement passes every row as arrays (`unnest`) and keeps the
//! per-webhook semantics of sequential enqueues:
//! - a webhook whose delivery id is already remembered stores nothing
//!   (the delivery insert and the image insert are data-modifying CTEs of one
//!   statement, so an image is inserted only when its webhook's delivery id
//!   was);
//! - within a group, a delivery id's first webhook is the one that may store;
//!   its later webhooks are redeliveries, answered as such once the group
//!   committed;
//! - an image pending twice in one group is accepted for its first webhook
//!   and a duplicate for the others, as if they had come one by one.
//!
//! Rows are inserted in key order, so that two replicas' groups touching the
//! same images lock them in the same order and never deadlock each other.
//!
//! A group whose statement fails for a reason retrying will not fix (one
//! webhook's values broke it) is written again webhook by webhook, so that
//! only the webhook at fault fails. A failure of the database itself answers
//! every webhook of the group `Unavailable` (503): none was acknowledged, and
//! a sender's retry of rows that did commit is answered as a duplicate.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;

use super::OPERATION_TIMEOUT;
use super::errors::{from_pool, from_postgres};
use super::rows::get;
use crate::domain::{ImageRef, Partition, ScanTarget};
use crate::store::group_commit::EnqueueJob;
use crate::store::history::{KeyedRecord, REDELIVERY};
use crate::store::{DeliveryKey, EnqueueCounts, Enqueued, IgnoredImage, Millis, StoreError};

/// The result has one row per webhook whose delivery id was new (`job`
/// set), and one per inserted image (`job` NULL, the image's key set).
const INSERT_GROUP: &str = "
WITH new_deliveries AS (
    INSERT INTO deliveries (source, id, seen_at)
    SELECT d.source, d.id, d.seen_at
    FROM unnest($1::text[], $2::text[], $3::bigint[]) AS d(source, id, seen_at)
    ORDER BY d.source, d.id
    ON CONFLICT (source, id) DO NOTHING
    RETURNING source, id
),
stored_jobs AS (
    SELECT d.job
    FROM unnest($1::text[], $2::text[], $4::int4[]) AS d(source, id, job)
    JOIN new_deliveries USING (source, id)
),
images AS (
    SELECT i.*, (i.job = ANY($5::int4[]) OR i.job IN (SELECT job FROM stored_jobs)) AS stored
    FROM unnest($6::int4[], $7::text[], $8::text[], $9::text[], $10::text[],
                $11::text[], $12::text[], $13::text[], $14::text[], $15::bigint[],
                $16::text[], $17::text[])
         WITH ORDINALITY AS i(job, partition_key, image_type, instance_id,
             enterprise_project_id, namespace, name, tag, instance_url, enqueued_at, digest,
             source, ord)
),
new_images AS (
    INSERT INTO pending_images (partition_key, image_type, instance_id,
        enterprise_project_id, namespace, name, tag, instance_url, enqueued_at, digest, source)
    SELECT i.partition_key, i.image_type, i.instance_id, i.enterprise_project_id,
           i.namespace, i.name, i.tag, i.instance_url, i.enqueued_at, i.digest, i.source
    FROM images i
    WHERE i.stored
    ORDER BY i.partition_key, i.namespace, i.name, i.tag, i.ord
    ON CONFLICT (partition_key, namespace, name, tag) WHERE batch_id IS NULL
    DO NOTHING
    RETURNING partition_key, namespace, name, tag
),
-- History: the rows planned in advance (ignored images, redeliveries within
-- the group), and, when recording ($24), a duplicate row for each image not
-- inserted (pending already, or its webhook's delivery id was known).
history AS (
    INSERT INTO image_history (image_key, event, at_ms, source, reason, digest, recorded_at)
    SELECT r.image_key, r.event, r.at_ms, r.source, r.reason, r.digest, r.at_ms
    FROM unnest($18::text[], $19::text[], $20::bigint[], $21::text[], $22::text[],
                $23::text[]) AS r(image_key, event, at_ms, source, reason, digest)
    UNION ALL
    SELECT i.namespace || '/' || i.name || ':' || i.tag, 'duplicate', i.enqueued_at, i.source,
           CASE WHEN i.stored THEN 'already_pending' ELSE 'redelivery' END,
           i.digest, i.enqueued_at
    FROM images i
    WHERE $24::boolean AND NOT EXISTS (
        SELECT 1 FROM new_images n
        WHERE n.partition_key = i.partition_key AND n.namespace = i.namespace
          AND n.name = i.name AND n.tag = i.tag)
)
SELECT job, NULL::text AS partition_key, NULL::text AS namespace,
       NULL::text AS name, NULL::text AS tag
FROM stored_jobs
UNION ALL
SELECT NULL::int4, partition_key, namespace, name, tag FROM new_images";

/// One image to insert (unless it is pending already).
pub(super) struct ImageRow<'a> {
    pub partition: &'a Partition,
    pub image: &'a ImageRef,
    pub instance_url: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl ImageRow<'_> {
    /// The image as a target again, for its history row.
    fn target(&self) -> ScanTarget {
        ScanTarget {
            partition: self.partition.clone(),
            image: self.image.clone(),
            instance_url: self.instance_url.map(str::to_string),
            digest: self.digest.map(str::to_string),
        }
    }
}

impl<'a> From<&'a ScanTarget> for ImageRow<'a> {
    fn from(target: &'a ScanTarget) -> Self {
        ImageRow {
            partition: &target.partition,
            image: &target.image,
            instance_url: target.instance_url.as_deref(),
            digest: target.digest.as_deref(),
        }
    }
}

/// One webhook's part of a group: its images are `images` of the arrays.
enum JobPlan {
    /// Its delivery id came earlier in the same group.
    Redelivery,
    Candidate {
        has_delivery: bool,
        images: std::ops::Range<usize>,
    },
}

/// The statement's arguments, one array element per row.
#[derive(Default)]
struct GroupRows<'a> {
    delivery_sources: Vec<&'a str>,
    delivery_ids: Vec<&'a str>,
    delivery_seen_at: Vec<Millis>,
    delivery_jobs: Vec<i32>,
    jobs_without_delivery: Vec<i32>,
    image_jobs: Vec<i32>,
    partition_keys: Vec<String>,
    image_types: Vec<&'static str>,
    instance_ids: Vec<Option<&'a str>>,
    enterprise_project_ids: Vec<Option<&'a str>>,
    namespaces: Vec<&'a str>,
    names: Vec<&'a str>,
    tags: Vec<&'a str>,
    instance_urls: Vec<Option<&'a str>>,
    enqueued_at: Vec<Millis>,
    digests: Vec<Option<&'a str>>,
    sources: Vec<&'a str>,
    /// History rows known before the statement runs (see [`PlannedHistory`]).
    history: PlannedHistory,
    record_history: bool,
}

/// History rows a group writes whatever the statement finds: one per
/// ignored image, and one per image of a webhook redelivered within the group.
#[derive(Default)]
struct PlannedHistory {
    keys: Vec<String>,
    events: Vec<&'static str>,
    at_ms: Vec<Millis>,
    sources: Vec<String>,
    reasons: Vec<Option<String>>,
    digests: Vec<Option<String>>,
}

impl PlannedHistory {
    fn push(&mut self, record: KeyedRecord) {
        self.keys.push(record.image_key);
        self.events.push(record.event.as_str());
        self.at_ms.push(record.at_ms);
        self.sources.push(record.source);
        self.reasons.push(record.reason);
        self.digests.push(record.digest);
    }
}

/// One webhook as a group plans it.
pub(super) struct JobInput<'a, I> {
    pub source: &'a str,
    pub delivery: Option<&'a DeliveryKey>,
    pub images: I,
    pub ignored: &'a [IgnoredImage],
    pub now: Millis,
}

/// A group's webhooks laid out for [`INSERT_GROUP`], and how to answer each.
pub(super) struct GroupPlan<'a> {
    rows: GroupRows<'a>,
    jobs: Vec<JobPlan>,
}

impl<'a> GroupPlan<'a> {
    /// `jobs` in arrival order; `record_history`: whether the group writes
    /// history rows (ignored images, duplicates).
    pub fn new<I>(jobs: impl IntoIterator<Item = JobInput<'a, I>>, record_history: bool) -> Self
    where
        I: IntoIterator<Item = ImageRow<'a>>,
    {
        let mut rows = GroupRows {
            record_history,
            ..GroupRows::default()
        };
        let mut plans = Vec::new();
        let mut deliveries_seen: HashSet<(&str, &str)> = HashSet::new();
        for (index, input) in jobs.into_iter().enumerate() {
            let JobInput {
                source,
                delivery,
                images,
                ignored,
                now,
            } = input;
            // At most MAX_GROUP jobs (or one) per statement.
            let job = i32::try_from(index).unwrap_or(i32::MAX);
            if record_history {
                for image in ignored {
                    rows.history.push(KeyedRecord::ignored(image, source, now));
                }
            }
            if let Some(key) = delivery {
                if !deliveries_seen.insert((&key.source, &key.id)) {
                    if record_history {
                        for image in images {
                            rows.history.push(KeyedRecord::duplicate(
                                &image.target(),
                                source,
                                REDELIVERY,
                                now,
                            ));
                        }
                    }
                    plans.push(JobPlan::Redelivery);
                    continue;
                }
                rows.delivery_sources.push(&key.source);
                rows.delivery_ids.push(&key.id);
                rows.delivery_seen_at.push(now);
                rows.delivery_jobs.push(job);
            } else {
                rows.jobs_without_delivery.push(job);
            }
            let first = rows.image_jobs.len();
            for image in images {
                rows.image_jobs.push(job);
                rows.partition_keys.push(image.partition.key());
                rows.image_types.push(image.partition.image_type.as_str());
                rows.instance_ids
                    .push(image.partition.instance_id.as_deref());
                rows.enterprise_project_ids
                    .push(image.partition.enterprise_project_id.as_deref());
                rows.namespaces.push(&image.image.namespace);
                rows.names.push(&image.image.name);
                rows.tags.push(&image.image.tag);
                rows.instance_urls.push(image.instance_url);
                rows.enqueued_at.push(now);
                rows.digests.push(image.digest);
                rows.sources.push(source);
            }
            plans.push(JobPlan::Candidate {
                has_delivery: delivery.is_some(),
                images: first..rows.image_jobs.len(),
            });
        }
        GroupPlan { rows, jobs: plans }
    }

    /// Runs the group's statement (its own transaction, or part of the
    /// caller's) and answers each webhook in order.
    pub async fn write(&self, client: &impl GenericClient) -> Result<Vec<Enqueued>, StoreError> {
        let statement = client
            .prepare_cached(INSERT_GROUP)
            .await
            .map_err(from_postgres)?;
        let rows = &self.rows;
        let result = client
            .query(
                &statement,
                &[
                    &rows.delivery_sources,
                    &rows.delivery_ids,
                    &rows.delivery_seen_at,
                    &rows.delivery_jobs,
                    &rows.jobs_without_delivery,
                    &rows.image_jobs,
                    &rows.partition_keys,
                    &rows.image_types,
                    &rows.instance_ids,
                    &rows.enterprise_project_ids,
                    &rows.namespaces,
                    &rows.names,
                    &rows.tags,
                    &rows.instance_urls,
                    &rows.enqueued_at,
                    &rows.digests,
                    &rows.sources,
                    &rows.history.keys,
                    &rows.history.events,
                    &rows.history.at_ms,
                    &rows.history.sources,
                    &rows.history.reasons,
                    &rows.history.digests,
                    &rows.record_history,
                ],
            )
            .await
            .map_err(from_postgres)?;
        self.answers(&result)
    }

    fn answers(&self, result: &[Row]) -> Result<Vec<Enqueued>, StoreError> {
        let mut stored_jobs = HashSet::new();
        let mut inserted: HashSet<(&str, &str, &str, &str)> = HashSet::new();
        for row in result {
            match get::<Option<i32>>(row, "job")? {
                Some(job) => {
                    stored_jobs.insert(job);
                }
                None => {
                    inserted.insert((
                        get(row, "partition_key")?,
                        get(row, "namespace")?,
                        get(row, "name")?,
                        get(row, "tag")?,
                    ));
                }
            }
        }
        let rows = &self.rows;
        let answers = self
            .jobs
            .iter()
            .enumerate()
            .map(|(index, plan)| match plan {
                JobPlan::Redelivery => Enqueued::DuplicateDelivery,
                JobPlan::Candidate {
                    has_delivery,
                    images,
                } => {
                    let job = i32::try_from(index).unwrap_or(i32::MAX);
                    if *has_delivery && !stored_jobs.contains(&job) {
                        return Enqueued::DuplicateDelivery;
                    }
                    let mut counts = EnqueueCounts::default();
                    for row in images.clone() {
                        let key = (
                            rows.partition_keys[row].as_str(),
                            rows.namespaces[row],
                            rows.names[row],
                            rows.tags[row],
                        );
                        // The first webhook naming an inserted image is the
                        // one that stored it; later ones found it pending.
                        counts.count(inserted.remove(&key));
                    }
                    Enqueued::Stored(counts)
                }
            })
            .collect();
        Ok(answers)
    }
}

/// Writes one group and answers every webhook of it. Runs in a task of its
/// own, so that a caller that goes away (its HTTP request dropped) cannot
/// cancel a commit the group's other webhooks wait for.
pub(super) async fn commit_group(pool: Pool, server: Arc<str>, jobs: Vec<EnqueueJob>) {
    let started = Instant::now();
    let webhooks = jobs.len();
    let outcome = write_bounded(&pool, &server, &jobs).await;
    let ok = outcome.is_ok();
    match outcome {
        Ok(answers) => {
            for (job, answer) in jobs.into_iter().zip(answers) {
                job.answer(Ok(answer));
            }
        }
        Err(StoreError::Query(message)) if webhooks > 1 => {
            tracing::warn!(
                webhooks,
                error = %message,
                "postgres group commit refused; writing its webhooks one by one"
            );
            for job in jobs {
                let outcome = write_bounded(&pool, &server, std::slice::from_ref(&job)).await;
                job.answer(outcome.and_then(|answers| {
                    answers.into_iter().next().ok_or_else(|| {
                        StoreError::Query("enqueue: no answer for the webhook".into())
                    })
                }));
            }
        }
        Err(error) => {
            for job in jobs {
                job.answer(Err(error.clone()));
            }
        }
    }
    // Where a group's time goes (benchmarks read this): the checkout of a
    // connection and the one statement, its commit included.
    tracing::debug!(
        webhooks,
        write_us = started.elapsed().as_micros() as u64,
        ok,
        "postgres group commit"
    );
}

/// One statement for `jobs` on a pooled connection, within the store's
/// operation timeout: a database that stopped answering fails the group.
async fn write_bounded(
    pool: &Pool,
    server: &str,
    jobs: &[EnqueueJob],
) -> Result<Vec<Enqueued>, StoreError> {
    let work = async {
        match write_once(pool, server, jobs).await {
            // The pool hands out a connection used a moment ago without a
            // round trip (pool.rs), so one the server closed in between fails
            // here; writing the group again on a fresh connection is safe:
            // a delivery id or an unbatched image that did commit is found
            // again and answered (and recorded in history) as a duplicate,
            // never stored twice.
            Err(Attempt::ConnectionLost(_)) => write_once(pool, server, jobs).await,
            outcome => outcome,
        }
        .map_err(Attempt::into_error)
    };
    match tokio::time::timeout(OPERATION_TIMEOUT, work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(StoreError::Unavailable(format!(
            "PostgreSQL did not answer enqueue within {}s",
            OPERATION_TIMEOUT.as_secs()
        ))),
    }
}

/// How one write of a group failed.
enum Attempt {
    /// The connection was found closed: the statement may not have run.
    ConnectionLost(StoreError),
    Failed(StoreError),
}

impl Attempt {
    fn into_error(self) -> StoreError {
        match self {
            Attempt::ConnectionLost(error) | Attempt::Failed(error) => error,
        }
    }
}

async fn write_once(
    pool: &Pool,
    server: &str,
    jobs: &[EnqueueJob],
) -> Result<Vec<Enqueued>, Attempt> {
    let client = pool
        .get()
        .await
        .map_err(|error| Attempt::Failed(from_pool(error, server)))?;
    let record_history = jobs.iter().any(|job| job.record_history);
    let plan = GroupPlan::new(
        jobs.iter().map(|job| JobInput {
            source: &job.source,
            delivery: job.delivery.as_ref(),
            images: job.targets.iter().map(ImageRow::from),
            ignored: &job.ignored,
            now: job.now,
        }),
        record_history,
    );
    match plan.write(&client).await {
        Ok(answers) => Ok(answers),
        Err(error) if client.is_closed() => Err(Attempt::ConnectionLost(error)),
        Err(error) => {
            if let StoreError::Unavailable(_) = &error {
                // The server's condition, not the rows': after a failover the
                // old primary may go on answering read-only on a live
                // connection. Closing it makes the next checkout connect to
                // whatever the host name names now.
                drop(deadpool_postgres::Object::take(client));
            }
            Err(Attempt::Failed(error))
        }
    }
}
