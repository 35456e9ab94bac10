//! Payload formats: each turns a raw webhook body into the images it pushes
//! and the things it ignores, with a reason for each.

use actix_web::http::header::HeaderMap;
use serde::Serialize;

use crate::config::PayloadFormat;
use crate::domain::ImageRef;

pub mod cloudevents;
pub mod distribution;
pub mod harbor;
mod json;
pub(crate) mod reference;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// What one webhook body says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedWebhook {
    /// The sender's own id for this delivery, when the format has one
    /// (CloudEvents `id`); used to answer redeliveries as duplicates.
    pub delivery_id: Option<String>,
    pub images: Vec<PushedImage>,
    /// Manifests pushed by digest alone: no tag names them yet.
    pub digest_only: Vec<PushedDigest>,
    pub ignored: Vec<Ignored>,
}

/// A tagged image the webhook reports as pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    pub image: ImageRef,
    /// The manifest digest the push named, when it named one.
    pub digest: Option<String>,
    /// Registry host taken from the payload (`resource_url`, `request.host`);
    /// the default `instance_url` for instance images.
    pub registry_host: Option<String>,
}

/// A manifest the webhook reports as pushed by digest only (Harbor `tag`
/// empty or itself a digest; a distribution target without a tag). Its tags
/// are only known to the registry, so it is either resolved through SWR EE or
/// ignored with [`IgnoreReason::PushByDigest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedDigest {
    pub namespace: String,
    pub name: String,
    /// `algorithm:encoded`, checked by the OCI digest grammar.
    pub digest: String,
    /// As for [`PushedImage::registry_host`].
    pub registry_host: Option<String>,
}

impl PushedDigest {
    /// `namespace/name@digest`, how logs and answers name it.
    pub fn subject(&self) -> String {
        format!("{}/{}@{}", self.namespace, self.name, self.digest)
    }
}

/// Something in the webhook that is deliberately not scanned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ignored {
    pub reason: IgnoreReason,
    /// What was ignored, in words: an event type, `repo@digest`, an image.
    pub subject: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IgnoreReason {
    /// The event is not an image push (delete, pull, scan finished, …).
    NotAPush,
    /// Pushed by digest only and the source does not resolve digests
    /// (`resolve_digests = false`): HSS scans by tag, so there is nothing to name.
    PushByDigest,
    /// A push without any tag or digest (e.g. a blob upload).
    Untagged,
    /// The source's include/exclude globs reject the image.
    FilteredOut,
}

impl IgnoreReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::NotAPush => "not_a_push",
            IgnoreReason::PushByDigest => "push_by_digest",
            IgnoreReason::Untagged => "untagged",
            IgnoreReason::FilteredOut => "filtered_out",
        }
    }
}

/// The body is not something this format can read: 400 for the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("payload does not have the {format} shape: {detail}")]
    Shape {
        format: &'static str,
        detail: String,
    },
}

/// Parses a webhook of `format` from its body and, where the format puts
/// part of the event there (CloudEvents binary mode), its headers.
pub fn parse(
    format: PayloadFormat,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ParsedWebhook, PayloadError> {
    match format {
        PayloadFormat::Harbor => harbor::parse(body),
        PayloadFormat::Cloudevents => cloudevents::parse_request(headers, body),
        PayloadFormat::Distribution => distribution::parse(body),
    }
}
