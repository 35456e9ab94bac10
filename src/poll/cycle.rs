//! One poll of one source: for each scope, the repositories SWR updated since
//! the watermark, then the tags of each one that changed since its tags were
//! last read; every `(tag, digest)` not seen before is enqueued (through the
//! source's filter) and then recorded as seen.
//!
//! Why enqueue first, then record: a crash between the two leaves the tag
//! unseen, so the next poll finds it again and enqueues it again. That repeat
//! is harmless because each image is enqueued with a delivery id naming its
//! `(namespace, repository, tag, digest)`: the store remembers the id in the
//! same transaction as the image and answers a repeat as a duplicate delivery.
//! The other order could lose a tag (recorded, then the crash before the
//! enqueue). The delivery id also makes a poll that overlaps another (a
//! replica that stalled past its lease) harmless.

use std::collections::HashMap;

use futures_util::future::join_all;

use super::PollSource;
use super::diff::{self, Cutoff};
use super::lease::Lease;
use crate::batcher::BatcherHandle;
use crate::clock::Clock;
use crate::domain::{ImageRef, ScanTarget};
use crate::intake::formats::IgnoreReason;
use crate::ops::metrics::Metrics;
use crate::store::poll_state::{PolledRepository, RepositoryRead, SeenTag};
use crate::store::{
    Arrival, DeliveryKey, Enqueued, HistorySubject, IgnoredImage, Millis, Store, StoreError,
};
use crate::swr::basic::{self, Repository, RepositoryScope, RepositoryTag};
use crate::swr::{SwrClient, SwrError, SwrErrorKind};

/// Repositories and tags per request: enough for a normal poll's changes in
/// one page, small enough to stop early in a registry of thousands.
pub const PAGE_SIZE: u32 = 100;

/// Why a poll stopped early. What it did before stays done.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Swr(#[from] SwrError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("lost the poll lease to another replica mid-poll")]
    LeaseLost,
}

impl PollError {
    /// The `outcome` label of `swr_polls_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            PollError::Swr(error) if error.kind() == SwrErrorKind::Unauthorized => "auth_error",
            _ => "error",
        }
    }
}

/// What one poll did, for its log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    /// Repositories read from SWR's lists.
    pub repositories: usize,
    /// Of them, those whose tags were read (changed, or not settled yet).
    pub changed: usize,
    /// `(tag, digest)` pairs not seen before.
    pub found: usize,
    pub accepted: usize,
    pub duplicates: usize,
    pub filtered: usize,
    /// Scopes polled for the first time (recorded, not enqueued unless `scan_existing`).
    pub baselines: usize,
    /// Repositories that failed on their own (their tags are read again next poll).
    pub skipped: usize,
}

/// Everything one poll needs.
pub struct Cycle<'a> {
    pub source: &'a PollSource,
    pub swr: &'a SwrClient,
    pub store: &'a dyn Store,
    pub clock: Clock,
    pub metrics: &'a Metrics,
    pub wake_batcher: &'a BatcherHandle,
}

impl Cycle<'_> {
    /// Polls every scope of the source while `lease` holds.
    pub async fn run(&self, lease: &mut Lease) -> Result<PollReport, PollError> {
        let mut report = PollReport::default();
        let mut first_failure = None;
        for scope in self.source.scopes() {
            match self.poll_scope(scope, lease, &mut report).await {
                Ok(()) => {}
                // Only this repository or scope: try the others.
                Err(PollError::Swr(error)) if error.kind() == SwrErrorKind::Rejected => {
                    first_failure.get_or_insert(PollError::Swr(error));
                }
                Err(error) => return Err(error),
            }
        }
        match first_failure {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    async fn poll_scope(
        &self,
        scope: RepositoryScope<'_>,
        lease: &mut Lease,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let scope_key = match scope {
            RepositoryScope::Namespace(namespace) => namespace,
            RepositoryScope::Every => crate::store::poll_state::EVERY_NAMESPACE,
        };
        let source = self.source.name.as_str();
        let watermark = self.store.poll_watermark(source, scope_key).await?;
        let cutoff = watermark.map_or(Cutoff::EVERYTHING, Cutoff::since);
        let baseline = watermark.is_none();
        let (candidates, newest) = self.changed_repositories(scope, cutoff, report).await?;
        if baseline {
            report.baselines += 1;
        }
        let enqueue = !baseline || self.source.settings.scan_existing;
        let mut skipped = None;
        for repository in &candidates {
            if !lease.keep().await? {
                return Err(PollError::LeaseLost);
            }
            let polled = PolledRepository::new(source, &repository.namespace, &repository.name);
            let last = self.store.repository_read(&polled).await?;
            if !diff::needs_reading(&repository.updated_at, last.as_ref()) {
                continue;
            }
            report.changed += 1;
            let read = RepositoryRead {
                updated_at: repository.updated_at.clone(),
                read_at: self.clock.now_ms(),
            };
            match self
                .poll_repository(repository, cutoff, enqueue, report)
                .await
            {
                Ok(()) => {
                    self.store.record_repository_read(&polled, &read).await?;
                }
                Err(PollError::Swr(error)) if error.kind() == SwrErrorKind::NotFound => {
                    tracing::debug!(
                        source,
                        namespace = %repository.namespace,
                        repository = %repository.name,
                        "repository gone before its tags were read"
                    );
                }
                Err(PollError::Swr(error)) if error.kind() == SwrErrorKind::Rejected => {
                    report.skipped += 1;
                    skipped.get_or_insert(error);
                }
                Err(error) => return Err(error),
            }
        }
        if let Some(error) = skipped {
            // The watermark stays, so the skipped repositories are read again.
            return Err(error.into());
        }
        let watermark = newest.or(watermark).unwrap_or(0);
        self.store
            .raise_poll_watermark(source, scope_key, watermark, self.clock.now_ms())
            .await?;
        Ok(())
    }

    /// The repositories updated since the cutoff (newest first, paged until
    /// the first older one), and the newest update time among them.
    async fn changed_repositories(
        &self,
        scope: RepositoryScope<'_>,
        cutoff: Cutoff,
        report: &mut PollReport,
    ) -> Result<(Vec<Repository>, Option<Millis>), PollError> {
        let mut changed = Vec::new();
        let mut newest = None;
        let mut offset = 0;
        loop {
            let page = basic::list_repositories(self.swr, scope, offset, PAGE_SIZE).await?;
            report.repositories += page.items.len();
            let last = page.is_last(PAGE_SIZE);
            let count = page.items.len() as u32;
            for repository in page.items {
                if cutoff.is_behind(&repository.updated_at) {
                    return Ok((changed, newest));
                }
                newest = diff::newest(newest, &repository.updated_at);
                changed.push(repository);
            }
            if last || count == 0 {
                return Ok((changed, newest));
            }
            offset += count;
        }
    }

    async fn poll_repository(
        &self,
        repository: &Repository,
        cutoff: Cutoff,
        enqueue: bool,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let source = self.source.name.as_str();
        let (namespace, name) = (repository.namespace.as_str(), repository.name.as_str());
        let polled = PolledRepository::new(source, namespace, name);
        let seen = self.store.seen_tags(&polled).await?;
        let listed = self.list_tags(namespace, name, cutoff, &seen).await?;
        let unseen = diff::unseen(&listed, &seen);
        if unseen.is_empty() {
            return Ok(());
        }
        if enqueue {
            report.found += unseen.len();
            self.metrics
                .swr_poll_tags_found
                .with_label_values(&[source])
                .inc_by(unseen.len() as u64);
            self.enqueue(repository, &unseen, report).await?;
        }
        let seen_now: Vec<SeenTag> = unseen
            .iter()
            .map(|tag| SeenTag {
                tag: tag.tag.clone(),
                digest: tag.digest.clone(),
            })
            .collect();
        self.store
            .record_seen_tags(&polled, &seen_now, self.clock.now_ms())
            .await?;
        Ok(())
    }

    /// The repository's tags, newest first, until the first one older than
    /// the cutoff that was already seen with its digest.
    async fn list_tags(
        &self,
        namespace: &str,
        repository: &str,
        cutoff: Cutoff,
        seen: &HashMap<String, String>,
    ) -> Result<Vec<RepositoryTag>, PollError> {
        let mut tags = Vec::new();
        let mut offset = 0;
        loop {
            let page = basic::list_tags(self.swr, namespace, repository, offset, PAGE_SIZE).await?;
            let last = page.is_last(PAGE_SIZE);
            let count = page.items.len() as u32;
            for tag in page.items {
                if diff::tags_end_here(&tag, cutoff, seen) {
                    return Ok(tags);
                }
                tags.push(tag);
            }
            if last || count == 0 {
                return Ok(tags);
            }
            offset += count;
        }
    }

    /// Each image through the filter, then into the store with its delivery id.
    async fn enqueue(
        &self,
        repository: &Repository,
        unseen: &[&RepositoryTag],
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let source = self.source.name.as_str();
        let images = &self.metrics.images;
        let now = self.clock.now_ms();
        let mut admitted = Vec::with_capacity(unseen.len());
        let mut filtered = Vec::new();
        for tag in unseen {
            let image = ImageRef::new(&repository.namespace, &repository.name, &tag.tag);
            if self.source.filter.admits(&image) {
                admitted.push((image, tag.digest.clone()));
            } else {
                report.filtered += 1;
                images
                    .with_label_values(&[source, "ignored", IgnoreReason::FilteredOut.as_str()])
                    .inc();
                filtered.push(IgnoredImage {
                    subject: HistorySubject::Tagged(image),
                    reason: IgnoreReason::FilteredOut.as_str().to_string(),
                });
            }
        }
        // Their history says why they were not scanned, as a webhook's
        // filtered images' does. A crash before the repository is recorded
        // as seen records them once more at the next poll.
        let filtered_recorded = if filtered.is_empty() {
            Ok(())
        } else {
            let arrival = Arrival {
                source,
                delivery: None,
                targets: &[],
                ignored: &filtered,
            };
            self.store.enqueue_arrival(&arrival, now).await.map(drop)
        };
        let stored = join_all(admitted.into_iter().map(|(image, digest)| {
            let delivery = DeliveryKey {
                source: source.to_string(),
                id: format!("swr-poll:{image}@{digest}"),
            };
            let target = ScanTarget {
                partition: self.source.partition.clone(),
                image,
                instance_url: None,
                digest: (!digest.is_empty()).then_some(digest),
            };
            async move { self.store.enqueue(Some(&delivery), &[target], now).await }
        }))
        .await;
        let (mut accepted, mut duplicates) = (0, 0);
        let mut failure = None;
        if let Err(error) = filtered_recorded {
            self.metrics
                .store_errors
                .with_label_values(&["enqueue"])
                .inc();
            failure = Some(error);
        }
        for outcome in stored {
            match outcome {
                Ok(Enqueued::Stored(counts)) => {
                    accepted += counts.accepted;
                    duplicates += counts.duplicates;
                }
                Ok(Enqueued::DuplicateDelivery) => duplicates += 1,
                Err(error) => {
                    self.metrics
                        .store_errors
                        .with_label_values(&["enqueue"])
                        .inc();
                    failure.get_or_insert(error);
                }
            }
        }
        report.accepted += accepted;
        report.duplicates += duplicates;
        images
            .with_label_values(&[source, "accepted", ""])
            .inc_by(accepted as u64);
        images
            .with_label_values(&[source, "duplicate", ""])
            .inc_by(duplicates as u64);
        if accepted > 0 {
            self.wake_batcher.wake();
        }
        match failure {
            // Nothing of this repository is recorded as seen: all of it is
            // found again next poll, and what was stored is a duplicate then.
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }
}
