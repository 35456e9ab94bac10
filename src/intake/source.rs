//! A configured webhook source, ready for every request: its settings (typed
//! at load time: partition, filter, verification keys), the verifier built
//! from them, its rate limiter and its intake counters.

use std::collections::HashMap;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::counters::IntakeCounters;
use super::formats::PushedImage;
use super::verify::Verifier;
use crate::config::SourceSettings;
use crate::domain::{ImageType, ScanTarget};
use crate::ops::metrics::Metrics;

pub struct Source {
    pub settings: SourceSettings,
    pub verifier: Verifier,
    pub counters: IntakeCounters,
    rate_limiter: Option<DefaultDirectRateLimiter>,
}

impl Source {
    pub fn new(settings: &SourceSettings, metrics: &Metrics) -> Self {
        Self {
            settings: settings.clone(),
            verifier: Verifier::new(&settings.verify),
            counters: IntakeCounters::new(metrics, &settings.name),
            rate_limiter: settings
                .rate_limit_per_s
                .map(|per_second| RateLimiter::direct(Quota::per_second(per_second))),
        }
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// False when this request exceeds the source's rate limit.
    pub fn admit_request(&self) -> bool {
        self.rate_limiter
            .as_ref()
            .is_none_or(|limiter| limiter.check().is_ok())
    }

    /// Where HSS should scan a pushed image: this source's partition, and for
    /// instance images the configured `instance_url` or the payload's registry host.
    pub fn scan_target(&self, pushed: PushedImage) -> ScanTarget {
        let partition = &self.settings.partition;
        let instance_url = match partition.image_type {
            ImageType::InstanceImage => self.settings.instance_url.clone().or(pushed.registry_host),
            ImageType::PrivateImage | ImageType::SharedImage => None,
        };
        ScanTarget {
            partition: partition.clone(),
            image: pushed.image,
            instance_url,
        }
    }
}

/// All sources by name.
pub type Sources = HashMap<String, Arc<Source>>;

pub fn build_sources(sources: &[SourceSettings], metrics: &Metrics) -> Sources {
    sources
        .iter()
        .map(|settings| {
            let source = Source::new(settings, metrics);
            (settings.name.clone(), Arc::new(source))
        })
        .collect()
}
