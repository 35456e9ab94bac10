//! `[[sources]]`: one webhook sender each, parsed into what intake serves it
//! with: its HSS partition, its prepared verifier settings and compiled filter.

use std::collections::HashSet;
use std::num::NonZeroU32;

use super::error::ConfigError;
use super::raw::{PayloadFormat, RawSource};
use super::verify::VerifySettings;
use crate::domain::{ImageType, Partition};
use crate::filter::ImageFilter;

#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Path segment of `POST /webhooks/{name}`.
    pub name: String,
    pub format: PayloadFormat,
    /// The HSS request this source's images travel in.
    pub partition: Partition,
    /// `instance_image` only: where HSS pulls from when the payload does not say.
    pub instance_url: Option<String>,
    pub verify: VerifySettings,
    pub filter: ImageFilter,
    /// Requests per second accepted; excess gets 429. `None`: unlimited.
    pub rate_limit_per_s: Option<NonZeroU32>,
    /// Digest-only pushes are resolved to their tags through SWR EE
    /// (instance_image sources only); when false they are ignored.
    pub resolve_digests: bool,
}

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
        let instance_id = match raw.image_type {
            ImageType::InstanceImage => match raw.instance_id.as_deref() {
                Some(id) if !id.is_empty() => Some(id.to_string()),
                _ => {
                    return Err(ConfigError::invalid(
                        "instance_id",
                        "required when image_type = \"instance_image\"",
                    ));
                }
            },
            ImageType::PrivateImage | ImageType::SharedImage => None,
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
        let verify = VerifySettings::parse(&raw.verify)?;
        let rate_limit_per_s = match raw.rate_limit_per_s {
            None => None,
            Some(per_second) => Some(NonZeroU32::new(per_second).ok_or_else(|| {
                ConfigError::invalid(
                    "rate_limit_per_s",
                    "must be greater than 0, or absent for no limit",
                )
            })?),
        };
        let filter = ImageFilter::new(&raw.filter.include, &raw.filter.exclude)
            .map_err(|e| ConfigError::invalid(format!("filter.{}", e.key), e.reason))?;
        Ok(Self {
            name: raw.name.clone(),
            format: raw.format,
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
            verify,
            filter,
            rate_limit_per_s,
            resolve_digests: raw.resolve_digests,
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
