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
