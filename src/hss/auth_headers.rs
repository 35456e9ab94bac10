//! The headers that authenticate one Huawei Cloud API call, as the official
//! SDKs build them: AK/SK signatures (SDK-HMAC-SHA256 over a fresh
//! `X-Sdk-Date`) or an IAM token. HSS and SWR calls share this, so every
//! outbound call is signed the same way.

use chrono::{DateTime, Utc};
use reqwest::header::{AUTHORIZATION, HOST, HeaderMap, HeaderName, HeaderValue};

use super::credentials::CallCredentials;
use super::signer::{self, SDK_DATE_HEADER, SECURITY_TOKEN_HEADER, SignableRequest};

pub const PROJECT_ID_HEADER: &str = "X-Project-Id";
pub const AUTH_TOKEN_HEADER: &str = "X-Auth-Token";
pub const REQUEST_ID_HEADER: &str = "X-Request-Id";
/// Lower-case names of the headers that carry credentials.
const SENSITIVE_HEADERS: [&str; 3] = ["authorization", "x-auth-token", "x-security-token"];

/// What is being called, as far as authentication needs to know.
#[derive(Debug, Clone, Copy)]
pub struct ApiCall<'a> {
    pub method: &'a str,
    /// The `Host` header: `host` or `host:port`. Sent explicitly because it is signed.
    pub host: &'a str,
    /// The request path as sent (segments already percent-encoded).
    pub path: &'a str,
    /// Query pairs, unencoded; sent as [`signer::canonical_query`] of the same pairs.
    pub query: &'a [(String, String)],
    pub body: &'a [u8],
}

/// `headers` (the call's own, e.g. `Content-Type`, `X-Project-Id`) plus the
/// authentication ones, as a [`HeaderMap`] whose credential values are marked
/// sensitive so the HTTP stack never prints them. The error never quotes a value.
pub fn authenticated_headers(
    call: &ApiCall<'_>,
    mut headers: Vec<(String, String)>,
    credentials: &CallCredentials,
    now: DateTime<Utc>,
) -> Result<HeaderMap, String> {
    match credentials {
        CallCredentials::AccessKey(key) => {
            headers.push((HOST.as_str().into(), call.host.to_string()));
            headers.push((SDK_DATE_HEADER.into(), signer::sdk_date(now)));
            if let Some(token) = &key.security_token {
                headers.push((SECURITY_TOKEN_HEADER.into(), token.expose().to_string()));
            }
            let request = SignableRequest {
                method: call.method,
                path: call.path,
                query: call.query,
                headers: &headers,
                body: call.body,
            };
            let authorization =
                signer::authorization(key.access_key.expose(), &key.secret_key, &request)
                    .map_err(|e| e.to_string())?;
            headers.push((AUTHORIZATION.as_str().into(), authorization));
        }
        CallCredentials::Token(token) => {
            headers.push((AUTH_TOKEN_HEADER.into(), token.expose().to_string()));
        }
    }

    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
        // The value is not quoted: it may be a credential.
        let mut header_value = HeaderValue::from_str(&value)
            .map_err(|_| format!("the value of header `{name}` cannot be sent over HTTP"))?;
        header_value.set_sensitive(SENSITIVE_HEADERS.contains(&header_name.as_str()));
        map.insert(header_name, header_value);
    }
    Ok(map)
}
