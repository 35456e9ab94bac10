//! Prometheus metrics: one registry per application instance (so tests running
//! several apps in one process do not mix their counts).

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::store::StoreStats;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Webhooks by source and outcome (`accepted`, `duplicate`, `ignored`,
    /// `rejected`) and reason: the error code when rejected, the ignore
    /// reason (or `mixed`, `no_images`) when ignored, else empty.
    pub webhooks: IntCounterVec,
    /// Images named by webhooks, by source and outcome (`accepted`,
    /// `duplicate`, `ignored`) and reason.
    pub images: IntCounterVec,
    pub images_pending: IntGauge,
    pub oldest_pending_age_seconds: IntGauge,
    pub batches_in_flight: IntGauge,
    pub dead_letters_stored: IntGauge,
    /// Batches by outcome: `accepted`, `retry`, `dead_letter`.
    pub batches: IntCounterVec,
    pub batch_size: HistogramVec,
    /// HSS calls by status class: `2xx`, `4xx`, `5xx`, `error` (no response).
    pub hss_requests: IntCounterVec,
    pub hss_request_seconds: HistogramVec,
    pub retries: IntCounter,
    /// Images moved to dead letters.
    pub dead_lettered_images: IntCounter,
    /// Store failures by operation.
    pub store_errors: IntCounterVec,
    /// SWR API calls by operation and status class.
    pub swr_requests: IntCounterVec,
    pub swr_request_seconds: HistogramVec,
    /// Polls of swr-poll sources by source and outcome (`success`, `error`,
    /// `auth_error`), counted by the replica holding the source's lease.
    pub swr_polls: IntCounterVec,
    /// `(tag, digest)` pairs a poll found that were not seen before, by source.
    pub swr_poll_tags_found: IntCounterVec,
    /// When each poll source last completed a poll (Unix seconds).
    pub swr_poll_last_success: GaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("swr_scan_bridge".into()), None)?;
        let webhooks = IntCounterVec::new(
            Opts::new(
                "webhooks_total",
                "Webhooks received, by source, outcome and reason",
            ),
            &["source", "outcome", "reason"],
        )?;
        let images = IntCounterVec::new(
            Opts::new(
                "images_total",
                "Images named by webhooks, by source, outcome and reason",
            ),
            &["source", "outcome", "reason"],
        )?;
        let images_pending = IntGauge::new(
            "images_pending",
            "Acknowledged images not yet accepted by HSS",
        )?;
        let oldest_pending_age_seconds = IntGauge::new(
            "oldest_pending_age_seconds",
            "Age of the oldest pending image",
        )?;
        let batches_in_flight =
            IntGauge::new("batches_in_flight", "Batches claimed and not yet settled")?;
        let dead_letters_stored =
            IntGauge::new("dead_letters", "Dead letters waiting for an operator")?;
        let batches = IntCounterVec::new(
            Opts::new("batches_total", "Batch-scan attempts, by outcome"),
            &["outcome"],
        )?;
        let batch_size = HistogramVec::new(
            HistogramOpts::new("batch_size_images", "Images per batch that HSS accepted").buckets(
                vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
            ),
            &["image_type"],
        )?;
        let hss_requests = IntCounterVec::new(
            Opts::new(
                "hss_requests_total",
                "HSS batch-scan calls, by status class",
            ),
            &["status_class"],
        )?;
        let hss_request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "hss_request_duration_seconds",
                "HSS batch-scan call latency",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["status_class"],
        )?;
        let retries =
            IntCounter::new("hss_retries_total", "Batches scheduled for another attempt")?;
        let dead_lettered_images =
            IntCounter::new("dead_lettered_images_total", "Images moved to dead letters")?;
        let store_errors = IntCounterVec::new(
            Opts::new("store_errors_total", "Store failures, by operation"),
            &["operation"],
        )?;
        let swr_requests = IntCounterVec::new(
            Opts::new(
                "swr_requests_total",
                "SWR API calls, by operation and status class",
            ),
            &["operation", "status_class"],
        )?;
        let swr_request_seconds = HistogramVec::new(
            HistogramOpts::new("swr_request_duration_seconds", "SWR API call latency").buckets(
                vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ),
            &["operation", "status_class"],
        )?;
        let swr_polls = IntCounterVec::new(
            Opts::new(
                "swr_polls_total",
                "Polls of SWR basic edition, by source and outcome",
            ),
            &["source", "outcome"],
        )?;
        let swr_poll_tags_found = IntCounterVec::new(
            Opts::new(
                "swr_poll_tags_found_total",
                "Tags (with a digest) a poll found that were not seen before, by source",
            ),
            &["source"],
        )?;
        let swr_poll_last_success = GaugeVec::new(
            Opts::new(
                "swr_poll_last_success_timestamp_seconds",
                "When a poll source last completed a poll",
            ),
            &["source"],
        )?;
        registry.register(Box::new(swr_polls.clone()))?;
        registry.register(Box::new(swr_poll_tags_found.clone()))?;
        registry.register(Box::new(swr_poll_last_success.clone()))?;
        registry.register(Box::new(swr_requests.clone()))?;
        registry.register(Box::new(swr_request_seconds.clone()))?;
        registry.register(Box::new(webhooks.clone()))?;
        registry.register(Box::new(images.clone()))?;
        registry.register(Box::new(images_pending.clone()))?;
        registry.register(Box::new(oldest_pending_age_seconds.clone()))?;
        registry.register(Box::new(batches_in_flight.clone()))?;
        registry.register(Box::new(dead_letters_stored.clone()))?;
        registry.register(Box::new(batches.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(hss_requests.clone()))?;
        registry.register(Box::new(hss_request_seconds.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(dead_lettered_images.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        Ok(Self {
            registry,
            webhooks,
            images,
            images_pending,
            oldest_pending_age_seconds,
            batches_in_flight,
            dead_letters_stored,
            batches,
            batch_size,
            hss_requests,
            hss_request_seconds,
            retries,
            dead_lettered_images,
            store_errors,
            swr_requests,
            swr_request_seconds,
            swr_polls,
            swr_poll_tags_found,
            swr_poll_last_success,
        })
    }

    /// Copies the store's view of the queue into the gauges (at scrape time).
    pub fn observe_store(&self, stats: &StoreStats, now_ms: i64) {
        self.images_pending.set(stats.pending_images as i64);
        self.oldest_pending_age_seconds.set(
            stats
                .oldest_enqueued_at
                .map(|at| ((now_ms - at).max(0)) / 1000)
                .unwrap_or(0),
        );
        self.batches_in_flight.set(stats.batches_in_flight as i64);
        self.dead_letters_stored.set(stats.dead_letters as i64);
    }

    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// `2xx`, `4xx`, `5xx`, or `error` when no response came back.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "error",
    }
}
