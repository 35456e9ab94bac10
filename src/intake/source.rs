//! A configured webhook source, compiled once at start-up: its verifier,
//! filter, partition and rate limit, ready for every request. Poll sources
//! (`format = "swr-poll"`) are not webhook sources: [`crate::poll`] runs them.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::filter::ImageFilter;
use super::formats::PushedImage;
use super::verify::Verifier;
use crate::config::{ConfigError, HssSettings, PayloadFormat, SourceSettings};
use crate::domain::{ImageType, Partition, ScanTarget};

pub struct Source {
    pub settings: SourceSettings,
    pub payload_format: PayloadFormat,
    pub verifier: Verifier,
    pub filter: ImageFilter,
    pub partition: Partition,
    rate_limiter: Option<DefaultDirectRateLimiter>,
}

impl Source {
    pub fn new(settings: &SourceSettings, hss: &HssSettings) -> Result<Self, ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            key: format!("sources.{}.{field}", settings.name),
            reason,
        };
        let payload_format = settings.format.payload().ok_or_else(|| {
            invalid(
                "format",
                "a swr-poll source receives no webhooks".to_string(),
            )
        })?;
        let verify = settings
            .verify
            .as_ref()
            .ok_or_else(|| invalid("verify", "required for a webhook source".to_string()))?;
        let verifier = Verifier::new(verify).map_err(|r| invalid("verify", r))?;
        let filter = ImageFilter::new(&settings.filter).map_err(|r| invalid("filter", r))?;
        let rate_limiter = settings
            .rate_limit_per_s
            .and_then(NonZeroU32::new)
            .map(|per_second| RateLimiter::direct(Quota::per_second(per_second)));
        Ok(Self {
            partition: settings.partition(hss),
            settings: settings.clone(),
            payload_format,
            verifier,
            filter,
            rate_limiter,
        })
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
        let instance_url = match self.partition.image_type {
            ImageType::InstanceImage => self.settings.instance_url.clone().or(pushed.registry_host),
            _ => None,
        };
        ScanTarget {
            partition: self.partition.clone(),
            image: pushed.image,
            instance_url,
            digest: None,
        }
    }
}

/// All sources by name.
pub type Sources = HashMap<String, Arc<Source>>;

/// The webhook sources by name; poll sources are left out, so a webhook
/// posted to one is answered as for an unknown source.
pub fn build_sources(
    sources: &[SourceSettings],
    hss: &HssSettings,
) -> Result<Sources, ConfigError> {
    sources
        .iter()
        .filter(|settings| settings.format.payload().is_some())
        .map(|settings| Ok((settings.name.clone(), Arc::new(Source::new(settings, hss)?))))
        .collect()
}
