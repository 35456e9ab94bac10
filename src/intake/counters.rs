//! A source's intake counters, resolved to their series once, so that a
//! webhook's increments do not hash label values and search the vector's
//! map on every request.
//!
//! The accepted and duplicate series exist from start-up (see
//! [`Metrics::export_from_start`]); the others are resolved at their first
//! use, so each still appears on `/metrics` exactly when it did while every
//! increment looked it up: an ignored or resolving webhook's series once it
//! counted one, the resolving images' series at the first webhook.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec};

use super::formats::{IgnoreReason, Ignored};
use crate::ops::metrics::Metrics;

/// Why a webhook that named nothing to scan was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoredWebhook {
    /// Every image (or event) it named was ignored for this one reason.
    Because(IgnoreReason),
    /// Its images were ignored for different reasons.
    Mixed,
    /// It named no image at all.
    NoImages,
}

impl IgnoredWebhook {
    /// Its images' one reason, `Mixed` when they differ, `NoImages` when it
    /// named none.
    pub fn of(reasons: &[Ignored]) -> Self {
        let mut distinct = reasons.iter().map(|ignored| ignored.reason);
        match distinct.next() {
            None => IgnoredWebhook::NoImages,
            Some(first) if distinct.all(|reason| reason == first) => IgnoredWebhook::Because(first),
            Some(_) => IgnoredWebhook::Mixed,
        }
    }

    /// The metrics label: bounded by the few [`IgnoreReason`]s, never by input.
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoredWebhook::Because(reason) => reason.as_str(),
            IgnoredWebhook::Mixed => "mixed",
            IgnoredWebhook::NoImages => "no_images",
        }
    }

    fn slot(self) -> usize {
        match self {
            IgnoredWebhook::Because(reason) => reason_slot(reason),
            IgnoredWebhook::Mixed => REASONS,
            IgnoredWebhook::NoImages => REASONS + 1,
        }
    }
}

/// How many [`IgnoreReason`]s there are.
const REASONS: usize = 4;

fn reason_slot(reason: IgnoreReason) -> usize {
    match reason {
        IgnoreReason::NotAPush => 0,
        IgnoreReason::PushByDigest => 1,
        IgnoreReason::Untagged => 2,
        IgnoreReason::FilteredOut => 3,
    }
}

/// One configured source's series of `webhooks_total` and `images_total`.
pub struct IntakeCounters {
    source: String,
    webhook_vec: IntCounterVec,
    image_vec: IntCounterVec,
    webhooks_accepted: IntCounter,
    webhooks_duplicate: IntCounter,
    webhooks_resolving: OnceLock<IntCounter>,
    webhooks_ignored: [OnceLock<IntCounter>; REASONS + 2],
    images_accepted: IntCounter,
    images_duplicate: IntCounter,
    images_resolving: OnceLock<IntCounter>,
    images_ignored: [OnceLock<IntCounter>; REASONS],
}

/// What one webhook's images came to.
#[derive(Debug, Clone, Copy)]
pub struct ImageCounts<'a> {
    pub accepted: usize,
    pub duplicates: usize,
    /// Pushed by digest only, waiting for the digest to be resolved to tags.
    pub resolving: usize,
    pub ignored: &'a [Ignored],
}

impl IntakeCounters {
    pub fn new(metrics: &Metrics, source: &str) -> Self {
        let webhook_vec = metrics.webhooks.clone();
        let image_vec = metrics.images.clone();
        Self {
            source: source.to_string(),
            webhooks_accepted: webhook_vec.with_label_values(&[source, "accepted", ""]),
            webhooks_duplicate: webhook_vec.with_label_values(&[source, "duplicate", ""]),
            images_accepted: image_vec.with_label_values(&[source, "accepted", ""]),
            images_duplicate: image_vec.with_label_values(&[source, "duplicate", ""]),
            webhook_vec,
            image_vec,
            webhooks_resolving: OnceLock::new(),
            webhooks_ignored: Default::default(),
            images_resolving: OnceLock::new(),
            images_ignored: Default::default(),
        }
    }

    pub fn webhook_accepted(&self) {
        self.webhooks_accepted.inc();
    }

    pub fn webhook_duplicate(&self) {
        self.webhooks_duplicate.inc();
    }

    pub fn webhook_resolving(&self) {
        self.webhooks_resolving
            .get_or_init(|| {
                self.webhook_vec
                    .with_label_values(&[&self.source, "resolving", ""])
            })
            .inc();
    }

    pub fn webhook_ignored(&self, why: IgnoredWebhook) {
        self.webhooks_ignored[why.slot()]
            .get_or_init(|| {
                self.webhook_vec
                    .with_label_values(&[&self.source, "ignored", why.as_str()])
            })
            .inc();
    }

    /// A webhook's images by outcome, with one increment per ignored image
    /// under its reason.
    pub fn images(&self, counts: &ImageCounts<'_>) {
        self.images_accepted.inc_by(counts.accepted as u64);
        self.images_duplicate.inc_by(counts.duplicates as u64);
        self.images_resolving
            .get_or_init(|| {
                self.image_vec
                    .with_label_values(&[&self.source, "resolving", ""])
            })
            .inc_by(counts.resolving as u64);
        for image in counts.ignored {
            let reason = image.reason;
            self.images_ignored[reason_slot(reason)]
                .get_or_init(|| {
                    self.image_vec
                        .with_label_values(&[&self.source, "ignored", reason.as_str()])
                })
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored(reason: IgnoreReason) -> Ignored {
        Ignored {
            reason,
            subject: "x".into(),
        }
    }

    #[test]
    fn a_webhook_is_ignored_for_its_images_one_reason() {
        assert_eq!(IgnoredWebhook::of(&[]).as_str(), "no_images");
        let same = [
            ignored(IgnoreReason::Untagged),
            ignored(IgnoreReason::Untagged),
        ];
        assert_eq!(IgnoredWebhook::of(&same).as_str(), "untagged");
        let mixed = [
            ignored(IgnoreReason::Untagged),
            ignored(IgnoreReason::FilteredOut),
        ];
        assert_eq!(IgnoredWebhook::of(&mixed).as_str(), "mixed");
    }

    #[test]
    fn handles_count_in_the_labelled_series_and_ignored_ones_appear_when_used() {
        let metrics = Metrics::new().expect("metrics");
        let counters = IntakeCounters::new(&metrics, "swr-ee");
        counters.webhook_accepted();
        counters.webhook_duplicate();
        counters.webhook_duplicate();
        counters.images(&ImageCounts {
            accepted: 3,
            duplicates: 1,
            resolving: 2,
            ignored: &[ignored(IgnoreReason::FilteredOut)],
        });
        counters.webhook_resolving();
        let series = |vec: &IntCounterVec, labels: &[&str]| vec.with_label_values(labels).get();
        assert_eq!(series(&metrics.webhooks, &["swr-ee", "accepted", ""]), 1);
        assert_eq!(series(&metrics.webhooks, &["swr-ee", "duplicate", ""]), 2);
        assert_eq!(series(&metrics.images, &["swr-ee", "accepted", ""]), 3);
        assert_eq!(series(&metrics.images, &["swr-ee", "duplicate", ""]), 1);
        assert_eq!(series(&metrics.images, &["swr-ee", "resolving", ""]), 2);
        assert_eq!(series(&metrics.webhooks, &["swr-ee", "resolving", ""]), 1);
        assert_eq!(
            series(&metrics.images, &["swr-ee", "ignored", "filtered_out"]),
            1
        );
        let ignored_webhooks = |metrics: &Metrics| {
            prometheus::core::Collector::collect(&metrics.webhooks)
                .iter()
                .flat_map(|family| family.get_metric().to_vec())
                .filter(|metric| {
                    metric
                        .get_label()
                        .iter()
                        .any(|label| label.value() == "ignored")
                })
                .count()
        };
        assert_eq!(
            ignored_webhooks(&metrics),
            0,
            "no ignored series before use"
        );
        counters.webhook_ignored(IgnoredWebhook::Mixed);
        counters.webhook_ignored(IgnoredWebhook::Mixed);
        assert_eq!(
            series(&metrics.webhooks, &["swr-ee", "ignored", "mixed"]),
            2
        );
        assert_eq!(ignored_webhooks(&metrics), 1);
    }
}
