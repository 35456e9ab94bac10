//! Prometheus metrics: one registry per application instance (so tests running
//! several apps in one process do not mix their counts), and `GET /metrics`,
//! which renders it.
//!
//! The handler takes the registry, the store and the clock as separate app
//! data rather than the whole `AppState`, which itself holds the registry:
//! that keeps this file below `app_state` instead of beside it in a circle.

use actix_web::{HttpResponse, web};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

use super::STORE_ANSWER_TIMEOUT;
use crate::clock::Clock;
use crate::domain::ImageType;
use crate::store::{Store, StoreStats};

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
    /// HSS calls by API (`batch-scan`, `scan-tasks`) and status class:
    /// `2xx`, `4xx`, `5xx`, `error` (no response).
    pub hss_requests: IntCounterVec,
    pub hss_request_seconds: HistogramVec,
    pub retries: IntCounter,
    /// Images moved to dead letters.
    pub dead_lettered_images: IntCounter,
    /// Store failures by operation.
    pub store_errors: IntCounterVec,
    /// The last `/readyz` answer: 1 ready, 0 not (also before the first probe).
    ready: IntGauge,
    readiness_changes: IntCounter,
    /// Orders concurrent probes so each change of `ready` is counted once.
    readiness_lock: Arc<Mutex<()>>,
    /// `batch.window_ms` in seconds: lets alerts scale with the configured window.
    batch_window_seconds: Gauge,
    /// SWR API calls by operation and status class.
    pub swr_requests: IntCounterVec,
    pub swr_request_seconds: HistogramVec,
    /// Digest resolutions by outcome (see [`DIGEST_RESOLUTION_OUTCOMES`]).
    pub digest_resolutions: IntCounterVec,
    /// Digest-only pushes waiting for resolution.
    pub digests_resolving: IntGauge,
    /// Polls of swr-poll sources by source and outcome (`success`, `error`,
    /// `auth_error`), counted by the replica holding the source's lease.
    pub swr_polls: IntCounterVec,
    /// `(tag, digest)` pairs a poll found that were not seen before, by source.
    pub swr_poll_tags_found: IntCounterVec,
    /// When each poll source last completed a poll (Unix seconds).
    pub swr_poll_last_success: GaugeVec,
}

/// Every outcome of one digest resolution; each is exported from the start.
pub const DIGEST_RESOLUTION_OUTCOMES: [&str; 6] = [
    "resolved",
    "untagged_retry",
    "untagged",
    "not_found",
    "retry",
    "dead_letter",
];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Makes metrics already registered in one registry, so that no metric is
/// made and then forgotten by the registry.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn register<C: Collector + Clone + 'static>(&self, collector: C) -> prometheus::Result<C> {
        self.0.register(Box::new(collector.clone()))?;
        Ok(collector)
    }

    fn int_counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        self.register(IntCounter::new(name, help)?)
    }

    fn int_counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        self.register(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    fn int_gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        self.register(IntGauge::new(name, help)?)
    }

    fn gauge(&self, name: &str, help: &str) -> prometheus::Result<Gauge> {
        self.register(Gauge::new(name, help)?)
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
        self.register(GaugeVec::new(Opts::new(name, help), labels)?)
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> prometheus::Result<HistogramVec> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.register(HistogramVec::new(opts, labels)?)
    }
}

/// Latency buckets of calls to HSS and SWR, in seconds.
const CALL_SECONDS_BUCKETS: [f64; 11] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("swr_scan_bridge".into()), None)?;
        let new = Registrar(&registry);
        let intake_labels = ["source", "outcome", "reason"];
        let metrics = Self {
            webhooks: new.int_counter_vec(
                "webhooks_total",
                "Webhooks received, by source, outcome and reason",
                &intake_labels,
            )?,
            images: new.int_counter_vec(
                "images_total",
                "Images named by webhooks, by source, outcome and reason",
                &intake_labels,
            )?,
            images_pending: new.int_gauge(
                "images_pending",
                "Acknowledged images not yet accepted by HSS",
            )?,
            oldest_pending_age_seconds: new.int_gauge(
                "oldest_pending_age_seconds",
                "Age of the oldest pending image",
            )?,
            batches_in_flight: new
                .int_gauge("batches_in_flight", "Batches claimed and not yet settled")?,
            dead_letters_stored: new
                .int_gauge("dead_letters", "Dead letters waiting for an operator")?,
            batches: new.int_counter_vec(
                "batches_total",
                "Batch send attempts, by outcome",
                &["outcome"],
            )?,
            batch_size: new.histogram_vec(
                "batch_size_images",
                "Images per batch that HSS accepted",
                &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
                &["image_type"],
            )?,
            hss_requests: new.int_counter_vec(
                "hss_requests_total",
                "HSS calls, by API and status class",
                &["api", "status_class"],
            )?,
            hss_request_seconds: new.histogram_vec(
                "hss_request_duration_seconds",
                "HSS call latency, by API and status class",
                &CALL_SECONDS_BUCKETS,
                &["api", "status_class"],
            )?,
            retries: new
                .int_counter("hss_retries_total", "Batches scheduled for another attempt")?,
            dead_lettered_images: new
                .int_counter("dead_lettered_images_total", "Images moved to dead letters")?,
            store_errors: new.int_counter_vec(
                "store_errors_total",
                "Store failures, by operation",
                &["operation"],
            )?,
            swr_requests: new.int_counter_vec(
                "swr_requests_total",
                "SWR API calls, by operation and status class",
                &["operation", "status_class"],
            )?,
            swr_request_seconds: new.histogram_vec(
                "swr_request_duration_seconds",
                "SWR API call latency",
                &CALL_SECONDS_BUCKETS,
                &["operation", "status_class"],
            )?,
            ready: new.int_gauge(
                "ready",
                "1 when the last /readyz answer was 200, else 0 (0 until first probed)",
            )?,
            readiness_changes: new.int_counter(
                "readiness_changes_total",
                "Times the /readyz answer changed between ready and not ready",
            )?,
            readiness_lock: Arc::new(Mutex::new(())),
            batch_window_seconds: new.gauge(
                "batch_window_seconds",
                "Configured batch.window_ms, in seconds",
            )?,
            digest_resolutions: new.int_counter_vec(
                "digest_resolutions_total",
                "Digest-only pushes asked of SWR EE, by outcome",
                &["outcome"],
            )?,
            digests_resolving: new.int_gauge(
                "digests_resolving",
                "Digest-only pushes waiting for SWR EE to name their tags",
            )?,
            swr_polls: new.int_counter_vec(
                "swr_polls_total",
                "Polls of SWR basic edition, by source and outcome",
                &["source", "outcome"],
            )?,
            swr_poll_tags_found: new.int_counter_vec(
                "swr_poll_tags_found_total",
                "Tags (with a digest) a poll found that were not seen before, by source",
                &["source"],
            )?,
            swr_poll_last_success: new.gauge_vec(
                "swr_poll_last_success_timestamp_seconds",
                "When a poll source last completed a poll",
                &["source"],
            )?,
            registry: registry.clone(),
        };
        for outcome in DIGEST_RESOLUTION_OUTCOMES {
            metrics.digest_resolutions.with_label_values(&[outcome]);
        }
        Ok(metrics)
    }

    /// Creates at zero the series that alert rules and dashboards rely on, for
    /// the label values known at start-up, so `rate()` and `increase()` see a
    /// fresh instance's first dead letter or store error (a series that appears
    /// already at 1 shows no increase). Other label values (a rejection's error
    /// code, an ignore reason) appear on first use.
    ///
    /// A poll source's last-success time starts at 0 (never): a poller that
    /// has not succeeded since start-up is as stalled as one that stopped.
    pub fn export_from_start(
        &self,
        source_names: &[&str],
        poll_source_names: &[&str],
        batch_window: Duration,
    ) {
        self.batch_window_seconds.set(batch_window.as_secs_f64());
        let image_types = [
            ImageType::PrivateImage,
            ImageType::SharedImage,
            ImageType::InstanceImage,
        ]
        .map(ImageType::as_str);
        let intake = [
            ("source", source_names),
            ("outcome", &["accepted", "duplicate"][..]),
            ("reason", &[""][..]),
        ];
        expose_at_zero(&self.webhooks, &intake);
        expose_at_zero(&self.images, &intake);
        expose_at_zero(
            &self.batches,
            &[("outcome", &["accepted", "retry", "dead_letter"])],
        );
        expose_at_zero(&self.batch_size, &[("image_type", &image_types)]);
        let hss_calls = [("api", HSS_APIS), ("status_class", STATUS_CLASSES)];
        expose_at_zero(&self.hss_requests, &hss_calls);
        expose_at_zero(&self.hss_request_seconds, &hss_calls);
        expose_at_zero(&self.store_errors, &[("operation", STORE_OPERATIONS)]);
        let swr_calls = [
            ("operation", SWR_OPERATIONS),
            ("status_class", STATUS_CLASSES),
        ];
        expose_at_zero(&self.swr_requests, &swr_calls);
        expose_at_zero(&self.swr_request_seconds, &swr_calls);
        expose_at_zero(
            &self.swr_polls,
            &[
                ("source", poll_source_names),
                ("outcome", &["success", "error", "auth_error"]),
            ],
        );
        expose_at_zero(&self.swr_poll_tags_found, &[("source", poll_source_names)]);
        for source in poll_source_names {
            self.swr_poll_last_success.with_label_values(&[source]);
        }
    }

    /// Records one `/readyz` answer, counting it when it differs from the last.
    pub fn record_readiness(&self, ready: bool) {
        let _order = self
            .readiness_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = i64::from(ready);
        if self.ready.get() != now {
            self.ready.set(now);
            self.readiness_changes.inc();
        }
    }

    /// Counts one HSS call to `api` and its latency, by the class of the
    /// answer's `status` (`None`: no answer).
    pub fn record_hss_request(&self, api: &str, status: Option<u16>, elapsed: Duration) {
        record_request(
            &self.hss_requests,
            &self.hss_request_seconds,
            api,
            status,
            elapsed,
        );
    }

    /// Counts one SWR call of `operation` and its latency, like
    /// [`Metrics::record_hss_request`].
    pub fn record_swr_request(&self, operation: &str, status: Option<u16>, elapsed: Duration) {
        record_request(
            &self.swr_requests,
            &self.swr_request_seconds,
            operation,
            status,
            elapsed,
        );
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

/// The SWR API operations the bridge calls (the `operation` label of SWR calls).
pub const SWR_OPERATIONS: &[&str] = &[
    "show_instance_artifact",
    "list_repos_details",
    "list_repository_tags",
];

/// Every value [`status_class`] returns.
pub const STATUS_CLASSES: &[&str] = &["2xx", "4xx", "5xx", "other", "error"];

/// The HSS APIs a bridge may call (`hss.api`); labels of the HSS call metrics.
const HSS_APIS: &[&str] = &["batch-scan", "scan-tasks"];

/// Store operations whose failures are counted (`store_errors_total`).
const STORE_OPERATIONS: &[&str] = &[
    "ping",
    "stats",
    "enqueue",
    "claim_batch",
    "next_due",
    "complete",
    "release_for_retry",
    "dead_letter",
];

/// Creates one zero series for each combination of the `known` label values.
/// Labels are matched by name, so a family that gains or lacks a label (the
/// HSS families' `api`) still gets its series; a family with a label that
/// `known` does not list keeps its series to first use, with a warning.
pub fn expose_at_zero<B: MetricVecBuilder>(family: &MetricVec<B>, known: &[(&str, &[&str])]) {
    for desc in family.desc() {
        let mut combinations: Vec<Vec<&str>> = vec![Vec::new()];
        for label in &desc.variable_labels {
            let Some((_, values)) = known.iter().find(|(name, _)| name == label) else {
                tracing::warn!(
                    metric = %desc.fq_name,
                    label = %label,
                    "no known values for this label: its series appear on first use"
                );
                return;
            };
            combinations = combinations
                .into_iter()
                .flat_map(|prefix| {
                    values.iter().map(move |value| {
                        let mut combination = prefix.clone();
                        combination.push(*value);
                        combination
                    })
                })
                .collect();
        }
        for combination in combinations {
            if let Err(error) = family.get_metric_with_label_values(&combination) {
                tracing::warn!(metric = %desc.fq_name, %error, "cannot create a zero series");
            }
        }
    }
}

/// One call in a pair of families labelled by what was called and the status class.
fn record_request(
    calls: &IntCounterVec,
    seconds: &HistogramVec,
    called: &str,
    status: Option<u16>,
    elapsed: Duration,
) {
    let labels = [called, status_class(status)];
    calls.with_label_values(&labels).inc();
    seconds
        .with_label_values(&labels)
        .observe(elapsed.as_secs_f64());
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

/// `GET /metrics`: Prometheus text. Queue gauges are read from the store at
/// scrape time; a failing or stuck store leaves their last values and shows
/// up in `store_errors_total`.
pub async fn serve(
    metrics: web::Data<Metrics>,
    store: web::Data<dyn Store>,
    clock: web::Data<Clock>,
) -> HttpResponse {
    match tokio::time::timeout(STORE_ANSWER_TIMEOUT, store.stats()).await {
        Ok(Ok(stats)) => metrics.observe_store(&stats, clock.now_ms()),
        Ok(Err(_)) | Err(_) => metrics.store_errors.with_label_values(&["stats"]).inc(),
    }
    match tokio::time::timeout(STORE_ANSWER_TIMEOUT, store.digests_resolving()).await {
        Ok(Ok(waiting)) => metrics.digests_resolving.set(waiting as i64),
        Ok(Err(_)) | Err(_) => metrics
            .store_errors
            .with_label_values(&["digests_resolving"])
            .inc(),
    }
    match metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(error) => HttpResponse::InternalServerError().body(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rendered sample lines of `name` (any labels) whose labels include
    /// every one of `labels`, e.g. `status_class="5xx"`.
    fn samples<'a>(text: &'a str, name: &str, labels: &[&str]) -> Vec<&'a str> {
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter(|line| labels.iter().all(|label| line.contains(label)))
            .collect()
    }

    fn fresh() -> (Metrics, String) {
        let metrics = Metrics::new().expect("registry");
        metrics.export_from_start(&["swr-ee", "harbor"], &[], Duration::from_millis(2_500));
        let text = metrics.render().expect("render");
        (metrics, text)
    }

    #[test]
    fn labelled_counters_alerts_rely_on_are_exported_at_zero_from_start_up() {
        let (_, text) = fresh();
        for (name, labels) in [
            (
                "swr_scan_bridge_batches_total",
                &[r#"outcome="dead_letter""#][..],
            ),
            ("swr_scan_bridge_batches_total", &[r#"outcome="retry""#]),
            ("swr_scan_bridge_batches_total", &[r#"outcome="accepted""#]),
            (
                "swr_scan_bridge_store_errors_total",
                &[r#"operation="enqueue""#],
            ),
            (
                "swr_scan_bridge_store_errors_total",
                &[r#"operation="ping""#],
            ),
            (
                "swr_scan_bridge_store_errors_total",
                &[r#"operation="claim_batch""#],
            ),
            (
                "swr_scan_bridge_hss_requests_total",
                &[r#"api="batch-scan""#, r#"status_class="4xx""#],
            ),
            (
                "swr_scan_bridge_hss_requests_total",
                &[r#"api="batch-scan""#, r#"status_class="5xx""#],
            ),
            (
                "swr_scan_bridge_hss_requests_total",
                &[r#"api="batch-scan""#, r#"status_class="error""#],
            ),
            (
                "swr_scan_bridge_webhooks_total",
                &[r#"source="harbor""#, r#"outcome="accepted""#],
            ),
            (
                "swr_scan_bridge_images_total",
                &[r#"source="swr-ee""#, r#"outcome="duplicate""#],
            ),
        ] {
            let found = samples(&text, name, labels);
            assert_eq!(found.len(), 1, "{name} {labels:?} in:\n{text}");
            assert!(found[0].ends_with(" 0"), "{}", found[0]);
        }
    }

    #[test]
    fn histograms_and_gauges_alerts_rely_on_are_exported_from_start_up() {
        let (_, text) = fresh();
        for image_type in ["private_image", "shared_image", "instance_image"] {
            let label = format!(r#"image_type="{image_type}""#);
            let count = samples(&text, "swr_scan_bridge_batch_size_images_count", &[&label]);
            assert_eq!(
                count,
                [format!(
                    "swr_scan_bridge_batch_size_images_count{{{label}}} 0"
                )]
            );
        }
        let latency = samples(
            &text,
            "swr_scan_bridge_hss_request_duration_seconds_count",
            &[r#"api="scan-tasks""#, r#"status_class="2xx""#],
        );
        assert_eq!(latency.len(), 1, "{text}");
        assert_eq!(
            samples(&text, "swr_scan_bridge_batch_window_seconds", &[]),
            ["swr_scan_bridge_batch_window_seconds 2.5"]
        );
        assert_eq!(
            samples(&text, "swr_scan_bridge_ready", &[]),
            ["swr_scan_bridge_ready 0"]
        );
        assert_eq!(
            samples(&text, "swr_scan_bridge_readiness_changes_total", &[]),
            ["swr_scan_bridge_readiness_changes_total 0"]
        );
    }

    #[test]
    fn label_values_that_are_not_known_at_start_up_wait_for_first_use() {
        let (metrics, text) = fresh();
        assert!(
            samples(
                &text,
                "swr_scan_bridge_webhooks_total",
                &[r#"outcome="rejected""#]
            )
            .is_empty()
        );
        metrics
            .webhooks
            .with_label_values(&["swr-ee", "rejected", "bad_signature"])
            .inc();
        let text = metrics.render().expect("render");
        assert_eq!(
            samples(
                &text,
                "swr_scan_bridge_webhooks_total",
                &[r#"outcome="rejected""#]
            )
            .len(),
            1
        );
    }

    #[test]
    fn zero_series_follow_the_labels_a_family_has_by_name() {
        let registry = Registry::new();
        let family = IntCounterVec::new(Opts::new("calls_total", "test"), &["status_class", "api"])
            .expect("family");
        registry
            .register(Box::new(family.clone()))
            .expect("register");
        expose_at_zero(
            &family,
            &[
                ("api", &["batch-scan", "scan-tasks"]),
                ("status_class", &["2xx", "5xx"]),
                ("unused", &["x"]),
            ],
        );
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buffer)
            .expect("encode");
        let text = String::from_utf8(buffer).expect("utf-8");
        assert_eq!(samples(&text, "calls_total", &[]).len(), 4, "{text}");
        assert_eq!(
            samples(
                &text,
                "calls_total",
                &[r#"api="scan-tasks""#, r#"status_class="5xx""#]
            )
            .len(),
            1
        );
    }

    #[test]
    fn a_family_with_an_unlisted_label_gets_no_partial_series() {
        let family = IntCounterVec::new(Opts::new("polls_total", "test"), &["source", "outcome"])
            .expect("family");
        expose_at_zero(&family, &[("outcome", &["success"])]);
        assert!(family.collect()[0].get_metric().is_empty());
    }

    #[test]
    fn readiness_changes_count_transitions_only() {
        let (metrics, _) = fresh();
        for ready in [true, true, false, false, true] {
            metrics.record_readiness(ready);
        }
        assert_eq!(metrics.ready.get(), 1);
        // 0 (start) -> 1 -> 0 -> 1
        assert_eq!(metrics.readiness_changes.get(), 3);
        metrics.record_readiness(false);
        assert_eq!(metrics.ready.get(), 0);
        assert_eq!(metrics.readiness_changes.get(), 4);
    }

    #[test]
    fn status_classes_lists_every_class_status_class_returns() {
        for status in [
            None,
            Some(100),
            Some(204),
            Some(302),
            Some(429),
            Some(503),
            Some(600),
        ] {
            assert!(STATUS_CLASSES.contains(&status_class(status)), "{status:?}");
        }
    }
}
