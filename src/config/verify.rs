//! `[sources.verify]`, parsed: every secret decoded and keyed, the header name
//! valid. What intake's `Verifier` is built from, and what `sign` signs with.

use std::fmt;

use actix_web::http::header::HeaderName;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit};
use sha2::Sha256;

use super::error::ConfigError;
use super::raw::{RawVerify, VerifyScheme};
use crate::secret::Secret;

/// A keyed HMAC-SHA256 state, cloned for each message.
pub type HmacSha256 = Hmac<Sha256>;

/// The header a scheme reads: parsed for matching, spelled as configured for
/// what `sign` prints.
#[derive(Debug, Clone)]
pub struct ConfiguredHeader {
    pub name: HeaderName,
    pub spelling: String,
}

/// One source's verification scheme with its prepared secrets. Each list holds
/// at least one entry (several are a rotation set).
#[derive(Clone)]
pub enum VerifySettings {
    /// The header's value must equal one of `tokens`.
    Token {
        header: ConfiguredHeader,
        tokens: Vec<Secret>,
    },
    /// Standard Webhooks v1: keys decoded from `whsec_<base64>`.
    StandardWebhooks {
        keys: Vec<HmacSha256>,
        tolerance_s: u64,
    },
    /// `sha256=<hex>` over the body, keyed by each secret's UTF-8 bytes.
    HmacSha256 {
        header: ConfiguredHeader,
        keys: Vec<HmacSha256>,
    },
}

impl fmt::Debug for VerifySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifySettings")
            .field("scheme", &self.scheme_name())
            .field("secrets", &self.secret_count())
            .finish_non_exhaustive()
    }
}

impl VerifySettings {
    /// Parses a `[sources.verify]` table. Errors name keys relative to the
    /// source (`verify.secrets[1]`) and never a secret.
    pub fn parse(raw: &RawVerify) -> Result<Self, ConfigError> {
        if raw.secrets.is_empty() {
            return Err(ConfigError::invalid(
                "verify.secrets",
                "needs at least one secret; unauthenticated webhooks are not accepted",
            ));
        }
        Ok(match raw.scheme {
            VerifyScheme::Token => VerifySettings::Token {
                header: header_name(raw)?,
                tokens: raw.secrets.clone(),
            },
            VerifyScheme::StandardWebhooks => VerifySettings::StandardWebhooks {
                keys: raw
                    .secrets
                    .iter()
                    .enumerate()
                    .map(|(index, secret)| match standard_webhooks_key(secret) {
                        Some(key) => hmac_key(&key, index),
                        None => Err(ConfigError::invalid(
                            format!("verify.secrets[{index}]"),
                            "a standard-webhooks secret must be whsec_ followed by non-empty base64",
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                tolerance_s: raw.tolerance_s,
            },
            VerifyScheme::HmacSha256 => VerifySettings::HmacSha256 {
                header: header_name(raw)?,
                keys: raw
                    .secrets
                    .iter()
                    .enumerate()
                    .map(|(index, secret)| hmac_key(secret.expose().as_bytes(), index))
                    .collect::<Result<_, _>>()?,
            },
        })
    }

    pub fn scheme_name(&self) -> &'static str {
        match self {
            VerifySettings::Token { .. } => "token",
            VerifySettings::StandardWebhooks { .. } => "standard-webhooks",
            VerifySettings::HmacSha256 { .. } => "hmac-sha256",
        }
    }

    fn secret_count(&self) -> usize {
        match self {
            VerifySettings::Token { tokens, .. } => tokens.len(),
            VerifySettings::StandardWebhooks { keys, .. }
            | VerifySettings::HmacSha256 { keys, .. } => keys.len(),
        }
    }
}

/// The header a scheme reads when `verify.header` is absent.
fn default_header(scheme: VerifyScheme) -> &'static str {
    match scheme {
        VerifyScheme::HmacSha256 => "X-Hub-Signature-256",
        VerifyScheme::Token | VerifyScheme::StandardWebhooks => "Authorization",
    }
}

fn header_name(raw: &RawVerify) -> Result<ConfiguredHeader, ConfigError> {
    let spelling = raw
        .header
        .as_deref()
        .unwrap_or_else(|| default_header(raw.scheme));
    let name = HeaderName::try_from(spelling)
        .map_err(|_| ConfigError::invalid("verify.header", "must be a valid HTTP header name"))?;
    Ok(ConfiguredHeader {
        name,
        spelling: spelling.to_string(),
    })
}

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_`.
/// `None` when the secret is not of that form, or decodes to no key at all
/// (`whsec_` alone), which would make every signature forgeable.
pub fn standard_webhooks_key(secret: &Secret) -> Option<Vec<u8>> {
    let encoded = secret.expose();
    let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
    BASE64.decode(encoded).ok().filter(|key| !key.is_empty())
}

fn hmac_key(key: &[u8], index: usize) -> Result<HmacSha256, ConfigError> {
    // HMAC takes keys of any length; the error exists only in the generic API.
    <HmacSha256 as KeyInit>::new_from_slice(key).map_err(|_| {
        ConfigError::invalid(
            format!("verify.secrets[{index}]"),
            "not usable as an HMAC key",
        )
    })
}
