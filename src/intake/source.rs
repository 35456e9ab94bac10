//! A configured webhook source, ready for every request: its settings (typed
//! at load time: partition, filter, verification keys), the verifier built
//! from them, and its rate limiter. Poll sources (`format = "swr-poll"`) are
//! not webhook sources: [`crate::poll`] runs them.

use std::collections::HashMap;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::formats::{PushedDigest, PushedImage};
use super::verify::Verifier;
use crate::config::{PayloadFormat, SourceSettings, WebhookSettings};
use crate::domain::{ImageRef, ImageType, ScanTarget};
use crate::store::UnresolvedDigest;

pub struct Source {
    pub settings: SourceSettings,
    pub webhook: WebhookSettings,
    pub verifier: Verifier,
    rate_limiter: Option<DefaultDirectRateLimiter>,
}

impl Source {
    /// `None` for a poll source, which receives no webhooks.
    pub fn new(settings: &SourceSettings) -> Option<Self> {
        let webhook = settings.webhook()?.clone();
        Some(Self {
            settings: settings.clone(),
            verifier: Verifier::new(&webhook.verify),
            rate_limiter: webhook
                .rate_limit_per_s
                .map(|per_second| RateLimiter::direct(Quota::per_second(per_second))),
            webhook,
        })
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub fn payload_format(&self) -> PayloadFormat {
        self.webhook.format
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
            partition: self.settings.partition.clone(),
            image: pushed.image,
            instance_url: self.instance_url(pushed.registry_host),
            digest: pushed.digest,
        }
    }

    /// Whether digest-only pushes are resolved (else ignored).
    pub fn resolves_digests(&self) -> bool {
        self.webhook.resolve_digests
    }

    /// A digest-only push as it waits for resolution, in this source's partition.
    pub fn unresolved_digest(&self, pushed: PushedDigest) -> UnresolvedDigest {
        UnresolvedDigest {
            source: self.name().to_string(),
            partition: self.settings.partition.clone(),
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
        match self.settings.partition.image_type {
            ImageType::InstanceImage => self.settings.instance_url.clone().or(registry_host),
            _ => None,
        }
    }
}

/// All sources by name.
pub type Sources = HashMap<String, Arc<Source>>;

/// The webhook sources by name; poll sources are left out, so a webhook
/// posted to one is answered as for an unknown source.
pub fn build_sources(sources: &[SourceSettings]) -> Sources {
    sources
        .iter()
        .filter_map(|settings| Some((settings.name.clone(), Arc::new(Source::new(settings)?))))
        .collect()
}
