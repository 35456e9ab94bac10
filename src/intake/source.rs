//! A configured webhook source, compiled once at start-up: its verifier,
//! filter, partition and rate limit, ready for every request.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::filter::ImageFilter;
use super::formats::{PushedDigest, PushedImage};
use super::verify::Verifier;
use crate::config::{ConfigError, HssSettings, SourceSettings};
use crate::domain::{ImageRef, ImageType, Partition, ScanTarget};
use crate::store::UnresolvedDigest;

pub struct Source {
    pub settings: SourceSettings,
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
        let verifier = Verifier::new(&settings.verify).map_err(|r| invalid("verify", r))?;
        let filter = ImageFilter::new(&settings.filter).map_err(|r| invalid("filter", r))?;
        let rate_limiter = settings
            .rate_limit_per_s
            .and_then(NonZeroU32::new)
            .map(|per_second| RateLimiter::direct(Quota::per_second(per_second)));
        Ok(Self {
            partition: settings.partition(hss),
            settings: settings.clone(),
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
        ScanTarget {
            partition: self.partition.clone(),
            image: pushed.image,
            instance_url: self.instance_url(pushed.registry_host),
            digest: pushed.digest,
        }
    }

    /// Whether digest-only pushes are resolved (else ignored).
    pub fn resolves_digests(&self) -> bool {
        self.settings.resolve_digests
    }

    /// A digest-only push as it waits for resolution, in this source's partition.
    pub fn unresolved_digest(&self, pushed: PushedDigest) -> UnresolvedDigest {
        UnresolvedDigest {
            source: self.name().to_string(),
            partition: self.partition.clone(),
            instance_url: self.instance_url(pushed.registry_host),
            namespace: pushed.namespace,
            name: pushed.name,
            digest: pushed.digest,
        }
    }

    /// The image a resolved digest's `tag` names, to scan where the digest
    /// would have been scanned.
    pub fn resolved_target(&self, unresolved: &UnresolvedDigest, tag: &str) -> ScanTarget {
        ScanTarget {
            partition: unresolved.partition.clone(),
            image: ImageRef::new(&unresolved.namespace, &unresolved.name, tag),
            instance_url: unresolved.instance_url.clone(),
            digest: Some(unresolved.digest.clone()),
        }
    }

    fn instance_url(&self, registry_host: Option<String>) -> Option<String> {
        match self.partition.image_type {
            ImageType::InstanceImage => self.settings.instance_url.clone().or(registry_host),
            _ => None,
        }
    }
}

/// All sources by name.
pub type Sources = HashMap<String, Arc<Source>>;

pub fn build_sources(
    sources: &[SourceSettings],
    hss: &HssSettings,
) -> Result<Sources, ConfigError> {
    sources
        .iter()
        .map(|settings| Ok((settings.name.clone(), Arc::new(Source::new(settings, hss)?))))
        .collect()
}
