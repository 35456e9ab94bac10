//! The HTTP side every Huawei Cloud client shares (HSS and SWR): one way to
//! build the connection pool with its credentials, and to read an answer's
//! headers.

use std::sync::Arc;

use super::credentials::{CredentialProvider, WallClock};
use super::errors::{HssError, describe_transport_error};
use crate::config::HssSettings;

/// The HTTP client (rustls with the webpki roots verifies certificates;
/// nothing here turns that off) and the `[hss]` credentials, which fetch
/// temporary keys and tokens over the same pool.
pub fn client_with_credentials(
    settings: &HssSettings,
    clock: Arc<dyn WallClock>,
) -> Result<(reqwest::Client, CredentialProvider), HssError> {
    let http = reqwest::Client::builder()
        .timeout(settings.request_timeout)
        .user_agent(concat!("swr-scan-bridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| HssError::HttpClient(describe_transport_error(&e)))?;
    let credentials = CredentialProvider::from_settings(settings, http.clone(), clock)?;
    Ok((http, credentials))
}

/// The value of header `name` in `response`, when it is text.
pub fn header_text(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}
