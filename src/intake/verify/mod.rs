//! Webhook authenticity: the three verification schemes of the contract
//! (`token`, `standard-webhooks`, `hmac-sha256`), and the headers a sender
//! must add for each (the `sign` command).
//!
//! Every comparison with a secret runs in constant time and tries every
//! secret of the rotation set, so timing tells neither which secret nor how
//! much of one matched.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::Mac;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::config::verify::{HmacSha256, VerifySettings};

/// Standard Webhooks header names (lower case, as HTTP/2 sends them).
pub const WEBHOOK_ID: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The only signature version this bridge verifies (symmetric HMAC-SHA256).
const SIGNATURE_VERSION: &str = "v1";
/// Prefix of the `hmac-sha256` header value.
const HMAC_PREFIX: &str = "sha256=";
const MAC_LEN: usize = 32;

/// A request that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The sender's id for this delivery (`webhook-id` for standard-webhooks);
    /// a repeated id is a redelivery.
    pub delivery_id: Option<String>,
}

/// Why a request failed verification: a 401 for the sender. Messages name
/// headers and numbers, never a secret or a value the sender supplied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("required header `{header}` is missing")]
    MissingHeader { header: String },
    #[error("header `{header}` is malformed: {reason}")]
    MalformedHeader {
        header: String,
        reason: &'static str,
    },
    #[error("the value of header `{header}` matches no configured token")]
    BadToken { header: String },
    #[error("the {scheme} signature matches no configured secret")]
    BadSignature { scheme: &'static str },
    #[error(
        "`webhook-timestamp` is {age_s} s in the past; at most {tolerance_s} s of clock skew is accepted"
    )]
    StaleTimestamp { age_s: u128, tolerance_s: u64 },
    #[error(
        "`webhook-timestamp` is {ahead_s} s in the future; at most {tolerance_s} s of clock skew is accepted"
    )]
    FutureTimestamp { ahead_s: u128, tolerance_s: u64 },
}

impl VerifyError {
    /// The machine code of the 401 body: `{"error": "<code>", ...}`.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader { .. } => "missing_header",
            VerifyError::MalformedHeader { .. } => "malformed_header",
            VerifyError::BadToken { .. } => "bad_token",
            VerifyError::BadSignature { .. } => "bad_signature",
            // One code for both directions: to the sender both mean "fix your clock
            // or stop replaying"; the message says which.
            VerifyError::StaleTimestamp { .. } | VerifyError::FutureTimestamp { .. } => {
                "stale_timestamp"
            }
        }
    }

    fn malformed(header: &HeaderName, reason: &'static str) -> Self {
        VerifyError::MalformedHeader {
            header: header.as_str().to_string(),
            reason,
        }
    }
}

/// Checks one source's webhooks. Built once per source at start-up, so keys
/// are decoded (and HMAC keys scheduled) once, not per request.
pub struct Verifier {
    scheme: Scheme,
}

enum Scheme {
    /// SHA-256 digests of the accepted tokens: comparing fixed-size digests
    /// keeps even a token's length out of the timing.
    Token {
        header: HeaderName,
        digests: Vec<[u8; 32]>,
    },
    StandardWebhooks {
        keys: Vec<HmacSha256>,
        tolerance_s: u64,
    },
    HmacSha256 {
        header: HeaderName,
        keys: Vec<HmacSha256>,
    },
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, secrets) = match &self.scheme {
            Scheme::Token { digests, .. } => ("token", digests.len()),
            Scheme::StandardWebhooks { keys, .. } => ("standard-webhooks", keys.len()),
            Scheme::HmacSha256 { keys, .. } => ("hmac-sha256", keys.len()),
        };
        f.debug_struct("Verifier")
            .field("scheme", &scheme)
            .field("secrets", &secrets)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Ready for requests: token digests computed, HMAC keys already
    /// scheduled when the settings were parsed.
    pub fn new(settings: &VerifySettings) -> Verifier {
        let scheme = match settings {
            VerifySettings::Token { header, tokens } => Scheme::Token {
                header: header.name.clone(),
                digests: tokens
                    .iter()
                    .map(|token| Sha256::digest(token.expose().as_bytes()).into())
                    .collect(),
            },
            VerifySettings::StandardWebhooks { keys, tolerance_s } => Scheme::StandardWebhooks {
                keys: keys.clone(),
                tolerance_s: *tolerance_s,
            },
            VerifySettings::HmacSha256 { header, keys } => Scheme::HmacSha256 {
                header: header.name.clone(),
                keys: keys.clone(),
            },
        };
        Verifier { scheme }
    }

    /// Checks that `body` with `headers` comes from a holder of one of the
    /// secrets. `now_unix_s` is the current time (standard-webhooks tolerance).
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_unix_s: i64,
    ) -> Result<Verified, VerifyError> {
        let outcome = match &self.scheme {
            Scheme::Token { header, digests } => verify_token(header, digests, headers),
            Scheme::StandardWebhooks { keys, tolerance_s } => {
                verify_standard_webhooks(keys, *tolerance_s, headers, body, now_unix_s)
            }
            Scheme::HmacSha256 { header, keys } => verify_hmac_sha256(header, keys, headers, body),
        };
        if let Err(error) = &outcome {
            tracing::debug!(code = error.code(), %error, "webhook verification failed");
        }
        outcome
    }

    /// What can be checked before the body is read, so that a request
    /// without valid credentials is refused before anything about its body
    /// (size, type, shape) is revealed. `token` needs no body: its verdict is
    /// final (`Some`). Signing schemes check that their headers are present,
    /// well-formed and (standard-webhooks) fresh; the signature itself needs
    /// the body, so their verdict waits for [`Verifier::verify`] (`None`).
    pub fn verify_before_body(
        &self,
        headers: &HeaderMap,
        now_unix_s: i64,
    ) -> Result<Option<Verified>, VerifyError> {
        let outcome = match &self.scheme {
            Scheme::Token { header, digests } => verify_token(header, digests, headers).map(Some),
            Scheme::StandardWebhooks { tolerance_s, .. } => {
                StandardWebhooksHeaders::read(headers, *tolerance_s, now_unix_s).map(|_| None)
            }
            Scheme::HmacSha256 { header, .. } => hmac_candidate(header, headers).map(|_| None),
        };
        if let Err(error) = &outcome {
            tracing::debug!(code = error.code(), %error, "webhook verification failed");
        }
        outcome
    }
}

/// HMAC-SHA256 over the concatenation of `parts`, from a pre-keyed state.
fn mac_of(key: &HmacSha256, parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut mac = key.clone();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Exactly one value of `name`. Several would be ambiguous (which one did a
/// proxy add?), so they are refused rather than guessed between.
fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<&'h HeaderValue, VerifyError> {
    let mut values = headers.get_all(name);
    match (values.next(), values.next()) {
        (Some(value), None) => Ok(value),
        (None, _) => Err(VerifyError::MissingHeader {
            header: name.as_str().to_string(),
        }),
        (Some(_), Some(_)) => Err(VerifyError::malformed(
            name,
            "sent more than once; send it exactly once",
        )),
    }
}

fn verify_token(
    header: &HeaderName,
    digests: &[[u8; 32]],
    headers: &HeaderMap,
) -> Result<Verified, VerifyError> {
    let value = single_header(headers, header)?;
    let candidate: [u8; 32] = Sha256::digest(value.as_bytes()).into();
    let matched = digests.iter().fold(Choice::from(0), |matched, digest| {
        matched | digest.ct_eq(&candidate)
    });
    if bool::from(matched) {
        Ok(Verified { delivery_id: None })
    } else {
        Err(VerifyError::BadToken {
            header: header.as_str().to_string(),
        })
    }
}

/// Whether any of `macs` equals any of `candidates`, comparing every pair so
/// the time taken does not depend on which (if any) matched.
fn any_match(macs: &[[u8; MAC_LEN]], candidates: &[[u8; MAC_LEN]]) -> bool {
    let matched = macs.iter().fold(Choice::from(0), |matched, mac| {
        candidates
            .iter()
            .fold(matched, |matched, candidate| matched | mac.ct_eq(candidate))
    });
    matched.into()
}

/// The Standard Webhooks headers of a request, checked for presence, form
/// and freshness: everything but the signature's match.
struct StandardWebhooksHeaders<'h> {
    id: &'h str,
    /// As sent: the timestamp is signed as its bytes, not as re-formatted.
    timestamp: &'h [u8],
    candidates: Vec<[u8; MAC_LEN]>,
}

impl<'h> StandardWebhooksHeaders<'h> {
    fn read(
        headers: &'h HeaderMap,
        tolerance_s: u64,
        now_unix_s: i64,
    ) -> Result<Self, VerifyError> {
        let id_header = HeaderName::from_static(WEBHOOK_ID);
        let timestamp_header = HeaderName::from_static(WEBHOOK_TIMESTAMP);
        let signature_header = HeaderName::from_static(WEBHOOK_SIGNATURE);
        let id = single_header(headers, &id_header)?;
        let timestamp = single_header(headers, &timestamp_header)?;
        let signature = single_header(headers, &signature_header)?;

        let id = id
            .to_str()
            .map_err(|_| VerifyError::malformed(&id_header, "must be visible ASCII"))?;
        if id.is_empty() {
            return Err(VerifyError::malformed(&id_header, "must not be empty"));
        }
        let sent_at = parse_timestamp(timestamp.as_bytes()).ok_or_else(|| {
            VerifyError::malformed(
                &timestamp_header,
                "must be whole seconds since the Unix epoch",
            )
        })?;
        check_tolerance(sent_at, now_unix_s, tolerance_s)?;

        let candidates = v1_signatures(signature.as_bytes()).ok_or_else(|| {
            VerifyError::malformed(
                &signature_header,
                "must hold space-separated `v1,<base64 of 32 bytes>` entries",
            )
        })?;
        Ok(Self {
            id,
            timestamp: timestamp.as_bytes(),
            candidates,
        })
    }
}

fn verify_standard_webhooks(
    keys: &[HmacSha256],
    tolerance_s: u64,
    headers: &HeaderMap,
    body: &[u8],
    now_unix_s: i64,
) -> Result<Verified, VerifyError> {
    let sent = StandardWebhooksHeaders::read(headers, tolerance_s, now_unix_s)?;
    let macs: Vec<[u8; MAC_LEN]> = keys
        .iter()
        .map(|key| mac_of(key, &[sent.id.as_bytes(), b".", sent.timestamp, b".", body]))
        .collect();
    if any_match(&macs, &sent.candidates) {
        Ok(Verified {
            delivery_id: Some(sent.id.to_string()),
        })
    } else {
        Err(VerifyError::BadSignature {
            scheme: "standard-webhooks",
        })
    }
}

/// Decimal seconds, digits only (no sign, no spaces), as the spec writes them.
fn parse_timestamp(raw: &[u8]) -> Option<i64> {
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

fn check_tolerance(sent_at: i64, now: i64, tolerance_s: u64) -> Result<(), VerifyError> {
    // i128: no pair of i64 instants can overflow the difference.
    let age = i128::from(now) - i128::from(sent_at);
    let tolerance = i128::from(tolerance_s);
    if age > tolerance {
        Err(VerifyError::StaleTimestamp {
            age_s: age.unsigned_abs(),
            tolerance_s,
        })
    } else if -age > tolerance {
        Err(VerifyError::FutureTimestamp {
            ahead_s: age.unsigned_abs(),
            tolerance_s,
        })
    } else {
        Ok(())
    }
}

/// The decoded `v1` signatures of a `webhook-signature` header. Entries of
/// other versions (`v1a`, future ones) are skipped as the spec asks; a `v1`
/// entry that is not base64 of 32 bytes cannot match and is skipped too.
/// `None` when no usable `v1` entry remains: the header is malformed.
fn v1_signatures(header: &[u8]) -> Option<Vec<[u8; MAC_LEN]>> {
    let signatures: Vec<[u8; MAC_LEN]> = header
        .split(|b| *b == b' ')
        .filter_map(|entry| {
            let comma = entry.iter().position(|b| *b == b',')?;
            let (version, rest) = entry.split_at_checked(comma)?;
            let encoded = rest.get(1..)?;
            if version != SIGNATURE_VERSION.as_bytes() {
                return None;
            }
            // 44 characters encode 32 bytes; longer input is not decoded at all.
            if encoded.len() != 44 {
                return None;
            }
            BASE64.decode(encoded).ok()?.try_into().ok()
        })
        .collect();
    (!signatures.is_empty()).then_some(signatures)
}

/// The MAC a `hmac-sha256` header claims: `sha256=` and 64 hex digits.
fn hmac_candidate(header: &HeaderName, headers: &HeaderMap) -> Result<[u8; MAC_LEN], VerifyError> {
    let value = single_header(headers, header)?;
    let malformed =
        || VerifyError::malformed(header, "must be `sha256=` followed by 64 hex digits");
    let hex_digits = value
        .as_bytes()
        .strip_prefix(HMAC_PREFIX.as_bytes())
        .ok_or_else(malformed)?;
    let mut candidate = [0u8; MAC_LEN];
    hex::decode_to_slice(hex_digits, &mut candidate).map_err(|_| malformed())?;
    Ok(candidate)
}

fn verify_hmac_sha256(
    header: &HeaderName,
    keys: &[HmacSha256],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verified, VerifyError> {
    let candidate = hmac_candidate(header, headers)?;
    let macs: Vec<[u8; MAC_LEN]> = keys.iter().map(|key| mac_of(key, &[body])).collect();
    if any_match(&macs, &[candidate]) {
        Ok(Verified { delivery_id: None })
    } else {
        Err(VerifyError::BadSignature {
            scheme: "hmac-sha256",
        })
    }
}

/// The headers a sender must add to `body` for `settings`, using its first
/// secret: what the `sign` command prints.
pub fn sign_headers(
    settings: &VerifySettings,
    body: &[u8],
    now_unix_s: i64,
    message_id: &str,
) -> Vec<(String, String)> {
    match settings {
        VerifySettings::Token { header, tokens } => tokens
            .first()
            .map(|token| (header.spelling.clone(), token.expose().to_string()))
            .into_iter()
            .collect(),
        VerifySettings::StandardWebhooks { keys, .. } => {
            let Some(key) = keys.first() else {
                return Vec::new();
            };
            let timestamp = now_unix_s.to_string();
            let mac = mac_of(
                key,
                &[
                    message_id.as_bytes(),
                    b".",
                    timestamp.as_bytes(),
                    b".",
                    body,
                ],
            );
            vec![
                (WEBHOOK_ID.to_string(), message_id.to_string()),
                (WEBHOOK_TIMESTAMP.to_string(), timestamp),
                (
                    WEBHOOK_SIGNATURE.to_string(),
                    format!("{SIGNATURE_VERSION},{}", BASE64.encode(mac)),
                ),
            ]
        }
        VerifySettings::HmacSha256 { header, keys } => keys
            .first()
            .map(|key| {
                (
                    header.spelling.clone(),
                    format!("{HMAC_PREFIX}{}", hex::encode(mac_of(key, &[body]))),
                )
            })
            .into_iter()
            .collect(),
    }
}

#[cfg(test)]
mod tests;
