//! `[[sources]]`: one webhook sender or polled SWR basic registry each, parsed
//! into what intake or the poller serves it with: its HSS partition, compiled
//! filter, and either prepared verifier settings or poll settings.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::time::Duration;

use super::error::ConfigError;
use super::parse::optional_non_zero;
use super::raw::{PayloadFormat, RawSource, SourceFormat};
use super::verify::VerifySettings;
use crate::domain::{ImageType, Partition};
use crate::filter::ImageFilter;

#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Path segment of `POST /webhooks/{name}` (webhook sources); a poll
    /// source's name labels its logs, metrics and poll state.
    pub name: String,
    /// The HSS request this source's images travel in.
    pub partition: Partition,
    /// `instance_image` only: where HSS pulls from when the payload does not say.
    pub instance_url: Option<String>,
    pub filter: ImageFilter,
    /// How images arrive: pushed by webhook, or found by polling SWR.
    pub kind: SourceKind,
}

/// A source either receives webhooks or is polled; each way carries only its
/// own settings.
#[derive(Debug, Clone)]
pub enum SourceKind {
    Webhook(WebhookSettings),
    Poll(PollSettings),
}

/// A webhook sender: `format = "harbor" | "cloudevents" | "distribution"`.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub format: PayloadFormat,
    pub verify: VerifySettings,
    /// Requests per second accepted; excess gets 429. `None`: unlimited.
    pub rate_limit_per_s: Option<NonZeroU32>,
    /// Digest-only pushes are resolved to their tags through SWR EE
    /// (instance_image sources only); when false they are ignored.
    pub resolve_digests: bool,
}

/// SWR basic edition, polled: `format = "swr-poll"` with `[sources.poll]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollSettings {
    /// How often SWR is asked for what changed (at least [`MIN_POLL_INTERVAL_MS`]).
    pub interval: Duration,
    /// Namespaces to watch (never empty); `None`: every namespace the
    /// credentials can list.
    pub namespaces: Option<Vec<String>>,
    /// The very first poll enqueues every tag it finds, not only records them.
    pub scan_existing: bool,
}

/// Polling more often than this buys little (SWR's own update times are
/// coarse) and spends the account's SWR API quota.
pub const MIN_POLL_INTERVAL_MS: u64 = 1_000;

impl SourceSettings {
    /// Parses every source; names must be unique. The first broken rule wins,
    /// named by its key path (`sources[1].verify.secrets[0]`).
    pub fn parse_all(
        raw: &[RawSource],
        default_enterprise_project_id: Option<&str>,
    ) -> Result<Vec<Self>, ConfigError> {
        let mut seen = HashSet::new();
        raw.iter()
            .enumerate()
            .map(|(index, source)| {
                let parsed = Self::parse(source, default_enterprise_project_id)
                    .map_err(|e| e.under(&format!("sources[{index}]")))?;
                if !seen.insert(source.name.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("sources[{index}].name"),
                        format!("\"{}\" is used by two sources", source.name),
                    ));
                }
                Ok(parsed)
            })
            .collect()
    }

    /// One source; keys in errors are relative to it (`verify.header`).
    fn parse(
        raw: &RawSource,
        default_enterprise_project_id: Option<&str>,
    ) -> Result<Self, ConfigError> {
        if !is_path_segment(&raw.name) {
            return Err(ConfigError::invalid(
                "name",
                format!(
                    "\"{}\" must be non-empty and use only letters, digits, '-', '_' and '.' (it is a URL path segment)",
                    raw.name
                ),
            ));
        }
        let instance_id = match (raw.format, raw.image_type) {
            (SourceFormat::SwrPoll, _) => None,
            (_, ImageType::InstanceImage) => match raw.instance_id.as_deref() {
                Some(id) if !id.is_empty() => Some(id.to_string()),
                _ => {
                    return Err(ConfigError::invalid(
                        "instance_id",
                        "required when image_type = \"instance_image\"",
                    ));
                }
            },
            (_, ImageType::PrivateImage | ImageType::SharedImage) => None,
        };
        let kind = match raw.format.payload() {
            Some(format) => SourceKind::Webhook(WebhookSettings::parse(raw, format)?),
            None => SourceKind::Poll(PollSettings::parse(raw)?),
        };
        let filter = ImageFilter::new(&raw.filter.include, &raw.filter.exclude)
            .map_err(|e| ConfigError::invalid(format!("filter.{}", e.key), e.reason))?;
        Ok(Self {
            name: raw.name.clone(),
            partition: Partition {
                image_type: raw.image_type,
                instance_id,
                enterprise_project_id: raw
                    .enterprise_project_id
                    .clone()
                    .or_else(|| default_enterprise_project_id.map(str::to_string)),
            },
            instance_url: match raw.image_type {
                ImageType::InstanceImage => raw.instance_url.clone(),
                ImageType::PrivateImage | ImageType::SharedImage => None,
            },
            filter,
            kind,
        })
    }

    /// The webhook settings, for a webhook source.
    pub fn webhook(&self) -> Option<&WebhookSettings> {
        match &self.kind {
            SourceKind::Webhook(webhook) => Some(webhook),
            SourceKind::Poll(_) => None,
        }
    }

    /// The poll settings, for a poll source.
    pub fn poll(&self) -> Option<&PollSettings> {
        match &self.kind {
            SourceKind::Poll(poll) => Some(poll),
            SourceKind::Webhook(_) => None,
        }
    }
}

impl WebhookSettings {
    fn parse(raw: &RawSource, format: PayloadFormat) -> Result<Self, ConfigError> {
        if raw.poll.is_some() {
            return Err(ConfigError::invalid(
                "poll",
                "only a format = \"swr-poll\" source polls; remove [sources.poll] or change the format",
            ));
        }
        let Some(verify) = &raw.verify else {
            return Err(ConfigError::invalid(
                "verify",
                "required for a webhook source: add [sources.verify] with a scheme and secrets",
            ));
        };
        if raw.resolve_digests && raw.image_type != ImageType::InstanceImage {
            return Err(ConfigError::invalid(
                "resolve_digests",
                format!(
                    "only instance_image sources can resolve digests (through the SWR EE API); this source has image_type = \"{}\": set resolve_digests = false",
                    raw.image_type
                ),
            ));
        }
        let rate_limit_per_s =
            optional_non_zero("rate_limit_per_s", raw.rate_limit_per_s, "for no limit")?;
        Ok(Self {
            format,
            verify: VerifySettings::parse(verify)?,
            rate_limit_per_s,
            resolve_digests: raw.resolve_digests,
        })
    }
}

impl PollSettings {
    /// A poll source: no webhook settings, an SWR basic image type, a sane interval.
    fn parse(raw: &RawSource) -> Result<Self, ConfigError> {
        if raw.verify.is_some() {
            return Err(ConfigError::invalid(
                "verify",
                "a swr-poll source receives no webhooks (the bridge polls SWR); remove [sources.verify]",
            ));
        }
        if !matches!(
            raw.image_type,
            ImageType::PrivateImage | ImageType::SharedImage
        ) {
            return Err(ConfigError::invalid(
                "image_type",
                "a swr-poll source watches SWR basic edition: private_image or shared_image \
                 (SWR Enterprise Edition sends webhooks; use format = \"harbor\")",
            ));
        }
        for (field, present) in [
            ("instance_id", raw.instance_id.is_some()),
            ("instance_url", raw.instance_url.is_some()),
            ("rate_limit_per_s", raw.rate_limit_per_s.is_some()),
            ("resolve_digests", raw.resolve_digests),
        ] {
            if present {
                return Err(ConfigError::invalid(
                    field,
                    "not used by a swr-poll source; remove it",
                ));
            }
        }
        let poll = raw.poll.clone().unwrap_or_default();
        if poll.interval_ms < MIN_POLL_INTERVAL_MS {
            return Err(ConfigError::invalid(
                "poll.interval_ms",
                format!(
                    "{} is too often; poll at most once a second (at least {MIN_POLL_INTERVAL_MS})",
                    poll.interval_ms
                ),
            ));
        }
        if let Some(namespaces) = &poll.namespaces {
            if namespaces.is_empty() {
                return Err(ConfigError::invalid(
                    "poll.namespaces",
                    "an empty list watches nothing; remove the key to watch every namespace",
                ));
            }
            for (i, namespace) in namespaces.iter().enumerate() {
                if namespace.is_empty() || namespace.contains('/') {
                    return Err(ConfigError::invalid(
                        format!("poll.namespaces[{i}]"),
                        format!("\"{namespace}\" is not an SWR namespace (organization) name"),
                    ));
                }
            }
        }
        Ok(Self {
            interval: Duration::from_millis(poll.interval_ms),
            namespaces: poll.namespaces,
            scan_existing: poll.scan_existing,
        })
    }
}

fn is_path_segment(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}
