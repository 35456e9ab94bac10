//! Webhook authenticity: the three verification schemes of the contract.
//! TODO(intake helper): Verifier, the schemes, and header signing for `sign`.

use base64::Engine;

use crate::secret::Secret;

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_`.
/// `None` when the secret is not of that form.
pub fn standard_webhooks_key(secret: &Secret) -> Option<Vec<u8>> {
    let encoded = secret.expose();
    let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
}

// --- placeholder until the intake branch lands (the lead replaces this on merge) ---
use crate::config::VerifySettings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub delivery_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(String),
}

impl VerifyError {
    pub fn code(&self) -> &'static str {
        "missing_header"
    }
}

#[derive(Debug, Clone)]
pub struct Verifier;

impl Verifier {
    pub fn new(_settings: &VerifySettings) -> Result<Self, String> {
        Ok(Verifier)
    }

    pub fn verify(
        &self,
        _headers: &actix_web::http::header::HeaderMap,
        _body: &[u8],
        _now_unix_s: i64,
    ) -> Result<Verified, VerifyError> {
        Err(VerifyError::MissingHeader("x".into()))
    }
}

pub fn sign_headers(
    _settings: &VerifySettings,
    _body: &[u8],
    _now_unix_s: i64,
    _message_id: &str,
) -> Vec<(String, String)> {
    Vec::new()
}
