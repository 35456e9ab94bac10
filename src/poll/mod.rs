//! Poll sources: SWR basic edition sends no webhooks, so for each source with
//! `format = "swr-poll"` the bridge asks SWR every `poll.interval_ms` what
//! changed, and enqueues each `(tag, digest)` it has not seen before like a
//! webhook's image.
//!
//! - [`cycle`]: one poll (repositories since the watermark, their tags, the
//!   diff, enqueue, record).
//! - [`diff`]: the comparisons, as pure functions.
//! - [`lease`]: one replica polls a source at a time.
//!
//! The state lives in the store ([`crate::store::poll_state`]), so a restart
//! carries on from the last poll and finds what was pushed meanwhile. An SWR
//! failure ends that poll only: it is logged, counted, and the next interval
//! tries again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::batcher::BatcherHandle;
use crate::clock::Clock;
use crate::config::{PollSettings, SourceSettings};
use crate::domain::Partition;
use crate::filter::ImageFilter;
use crate::ops::metrics::Metrics;
use crate::store::Store;
use crate::swr::SwrClient;
use crate::swr::basic::RepositoryScope;

pub mod cycle;
pub mod diff;
pub mod lease;

use cycle::{Cycle, PollError};
use lease::Lease;

/// A poll source compiled once at start-up.
#[derive(Debug)]
pub struct PollSource {
    pub name: String,
    pub settings: PollSettings,
    pub filter: ImageFilter,
    pub partition: Partition,
}

impl PollSource {
    /// `None` for a webhook source.
    pub fn new(settings: &SourceSettings) -> Option<Self> {
        Some(Self {
            name: settings.name.clone(),
            settings: settings.poll()?.clone(),
            filter: settings.filter.clone(),
            partition: settings.partition.clone(),
        })
    }

    /// The configured namespaces, or every namespace.
    pub fn scopes(&self) -> Vec<RepositoryScope<'_>> {
        match &self.settings.namespaces {
            Some(namespaces) => namespaces
                .iter()
                .map(|namespace| RepositoryScope::Namespace(namespace))
                .collect(),
            None => vec![RepositoryScope::Every],
        }
    }

    /// Long enough to outlast a poll and the wait after it (the holder renews
    /// it at every poll and while a long one runs), short enough that another
    /// replica takes over within a few intervals when the holder dies.
    pub fn lease_length(&self, request_timeout: Duration) -> Duration {
        self.settings.interval * 3 + request_timeout
    }
}

/// The poll sources of a configuration (webhook sources are left out).
pub fn build_poll_sources(sources: &[SourceSettings]) -> Vec<PollSource> {
    sources.iter().filter_map(PollSource::new).collect()
}

/// Polls one source every interval while this replica holds its lease.
pub struct Poller {
    pub source: PollSource,
    pub swr: Arc<SwrClient>,
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    pub metrics: Metrics,
    pub wake_batcher: BatcherHandle,
    /// This replica's name in leases.
    pub owner: String,
    pub lease_length: Duration,
}

impl Poller {
    /// Polls at once, then every interval, until `stop` turns true (or its
    /// sender is gone); a poll in progress is abandoned then (everything it
    /// stored stays, and the next poll, here or on another replica, redoes
    /// the rest). Gives up the lease on the way out.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        // Its series exist from start-up: `Metrics::export_from_start`.
        let source = self.source.name.clone();
        let interval = self.source.settings.interval;
        loop {
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                _ = self.poll_if_leader() => {}
                _ = stop.changed() => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => break,
            }
        }
        if let Err(error) = self.store.release_poll_lease(&source, &self.owner).await {
            tracing::warn!(source, %error, "cannot give up the poll lease; it runs out by itself");
        }
        tracing::info!(source, "poller stopped");
    }

    async fn poll_if_leader(&self) {
        let source = self.source.name.as_str();
        let lease = Lease::take(
            Arc::clone(&self.store),
            self.clock,
            source,
            &self.owner,
            self.lease_length,
        )
        .await;
        let mut lease = match lease {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                tracing::debug!(source, "another replica polls this source");
                return;
            }
            Err(error) => {
                self.metrics
                    .store_errors
                    .with_label_values(&["poll_lease"])
                    .inc();
                tracing::warn!(source, %error, "cannot take the poll lease; trying next interval");
                return;
            }
        };
        let cycle = Cycle {
            source: &self.source,
            swr: &self.swr,
            store: self.store.as_ref(),
            clock: self.clock,
            metrics: &self.metrics,
            wake_batcher: &self.wake_batcher,
        };
        let started = Instant::now();
        let result = cycle.run(&mut lease).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(report) => {
                self.count(source, "success");
                self.metrics
                    .swr_poll_last_success
                    .with_label_values(&[source])
                    .set(self.clock.now_ms() as f64 / 1000.0);
                tracing::info!(
                    source,
                    outcome = "success",
                    duration_ms,
                    repositories = report.repositories,
                    changed = report.changed,
                    found = report.found,
                    accepted = report.accepted,
                    duplicates = report.duplicates,
                    filtered = report.filtered,
                    baselines = report.baselines,
                    "swr poll"
                );
            }
            Err(PollError::LeaseLost) => {
                tracing::warn!(
                    source,
                    duration_ms,
                    "swr poll stopped: another replica took the lease over"
                );
            }
            Err(error) => {
                let outcome = error.outcome();
                self.count(source, outcome);
                self.log_failure(source, outcome, duration_ms, &error);
            }
        }
    }

    fn count(&self, source: &str, outcome: &str) {
        self.metrics
            .swr_polls
            .with_label_values(&[source, outcome])
            .inc();
    }

    fn log_failure(&self, source: &str, outcome: &str, duration_ms: u64, error: &PollError) {
        let (status, swr_error_code, swr_request_id) = match error {
            PollError::Swr(error) => (error.status(), error.error_code(), error.request_id()),
            _ => (None, None, None),
        };
        macro_rules! poll_failure {
            ($level:ident, $message:literal) => {
                tracing::$level!(
                    source,
                    outcome,
                    duration_ms,
                    status,
                    swr_error_code,
                    swr_request_id,
                    error = %error,
                    $message
                )
            };
        }
        if outcome == "auth_error" {
            poll_failure!(
                error,
                "swr poll refused: a configuration error. The [hss] credentials need read \
                 access to SWR (e.g. the SWR ReadOnlyAccess system policy); retrying next interval"
            );
        } else {
            poll_failure!(warn, "swr poll failed; retrying next interval");
        }
    }
}
