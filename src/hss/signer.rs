//! SDK-HMAC-SHA256 request signing, byte for byte as the official Huawei Cloud
//! SDKs sign (huaweicloudsdkcore `Signer`).
//!
//! ```text
//! canonical request = METHOD \n canonical URI \n canonical query \n
//!                     canonical headers (each "name:value\n") \n signed headers \n hex(sha256(body))
//! string to sign    = SDK-HMAC-SHA256 \n {X-Sdk-Date} \n hex(sha256(canonical request))
//! Authorization     = SDK-HMAC-SHA256 Access={ak}, SignedHeaders={…}, Signature={hex hmac(sk, string to sign)}
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
pub const SDK_DATE_HEADER: &str = "X-Sdk-Date";
pub const SECURITY_TOKEN_HEADER: &str = "X-Security-Token";

/// `X-Sdk-Date` format: basic ISO 8601 in UTC, e.g. `20261128T093015Z`.
const SDK_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// What the SDK leaves unescaped: RFC 3986 unreserved characters. Everything
/// else, `/` inside a segment and `*` included, becomes `%XX` (upper-case hex).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One request as the signer sees it. `headers` are the headers that will be
/// sent and signed: they must include `Host` and `X-Sdk-Date`.
#[derive(Debug, Clone, Copy)]
pub struct SignableRequest<'a> {
    pub method: &'a str,
    /// The path as it appears in the URL (percent-encoded or not: it is
    /// decoded, then each segment encoded again, as the SDK does).
    pub path: &'a str,
    /// Query parameters, not encoded, in any order.
    pub query: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the request has no X-Sdk-Date header to sign with")]
    MissingSdkDate,
    /// HMAC takes keys of any length, so this stays unreachable; it exists so
    /// that no input can make signing panic.
    #[error("the secret key cannot key an HMAC")]
    UnusableKey,
}

/// The canonical request and the `;`-joined names of the headers it signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalRequest {
    pub text: String,
    pub signed_headers: String,
}

/// `X-Sdk-Date` value for an instant.
pub fn sdk_date(at: DateTime<Utc>) -> String {
    at.format(SDK_DATE_FORMAT).to_string()
}

/// Percent-encodes one path segment, query key or query value.
pub fn encode_component(value: &str) -> String {
    utf8_percent_encode(value, UNRESERVED).to_string()
}

/// The path as the SDK sends it: each segment encoded, no trailing `/` added.
pub fn encode_path(path: &str) -> String {
    percent_decode_str(path)
        .decode_utf8_lossy()
        .split('/')
        .map(encode_component)
        .collect::<Vec<_>>()
        .join("/")
}

/// The canonical URI: the encoded path, always ending in `/`.
pub fn canonical_uri(path: &str) -> String {
    let mut uri = encode_path(path);
    if !uri.ends_with('/') {
        uri.push('/');
    }
    uri
}

/// Query parameters sorted by key, then value (before encoding, as the SDK
/// sorts them), each key and value encoded, joined with `&`. The SDK sends the
/// query in this same form, so it doubles as the query string of the URL.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = query.iter().collect();
    sorted.sort();
    sorted
        .iter()
        .map(|(key, value)| format!("{}={}", encode_component(key), encode_component(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Signed headers by lower-cased name with trimmed values. The SDK skips
/// names containing `_` (gateways may drop such headers).
fn signable_headers(headers: &[(String, String)]) -> BTreeMap<String, &str> {
    headers
        .iter()
        .filter(|(name, _)| !name.contains('_'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim()))
        .collect()
}

pub fn canonical_request(request: &SignableRequest<'_>) -> CanonicalRequest {
    let headers = signable_headers(request.headers);
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let signed_headers = headers.keys().cloned().collect::<Vec<_>>().join(";");
    let text = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method.to_ascii_uppercase(),
        canonical_uri(request.path),
        canonical_query(request.query),
        canonical_headers,
        signed_headers,
        hex::encode(Sha256::digest(request.body)),
    );
    CanonicalRequest {
        text,
        signed_headers,
    }
}

pub fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{sdk_date}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// The `Authorization` header value for `request`, signed with `sk`.
pub fn authorization(
    access_key: &str,
    secret_key: &Secret,
    request: &SignableRequest<'_>,
) -> Result<String, SignError> {
    let sdk_date = request
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(SDK_DATE_HEADER))
        .map(|(_, value)| value.trim())
        .ok_or(SignError::MissingSdkDate)?;
    let canonical = canonical_request(request);
    let to_sign = string_to_sign(sdk_date, &canonical.text);
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret_key.expose().as_bytes())
        .map_err(|_| SignError::UnusableKey)?;
    mac.update(to_sign.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    Ok(format!(
        "{ALGORITHM} Access={access_key}, SignedHeaders={}, Signature={signature}",
        canonical.signed_headers
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const VECTORS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/vectors/hss-aksk-signing.json"
    );

    #[derive(Deserialize)]
    struct VectorFile {
        algorithm: String,
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        name: String,
        method: String,
        host: String,
        path: String,
        query: Vec<(String, String)>,
        headers: serde_json::Map<String, serde_json::Value>,
        body: String,
        ak: String,
        sk: String,
        canonical_request: String,
        authorization: String,
        uri_as_sent: String,
    }

    impl Case {
        /// The vector's headers plus `Host`, which the SDK adds when sending.
        fn headers(&self) -> Vec<(String, String)> {
            let mut headers: Vec<(String, String)> = self
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.as_str().unwrap().to_string()))
                .collect();
            headers.push(("Host".into(), self.host.clone()));
            headers
        }
    }

    fn vectors() -> VectorFile {
        let text = std::fs::read_to_string(VECTORS).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn every_shared_vector_is_reproduced_byte_for_byte() {
        let file = vectors();
        assert_eq!(file.algorithm, ALGORITHM);
        assert_eq!(
            file.cases.len(),
            5,
            "the vector file changed: review the cases"
        );
        for case in &file.cases {
            let headers = case.headers();
            let request = SignableRequest {
                method: &case.method,
                path: &case.path,
                query: &case.query,
                headers: &headers,
                body: case.body.as_bytes(),
            };
            assert_eq!(
                canonical_request(&request).text,
                case.canonical_request,
                "canonical request of case {:?}",
                case.name
            );
            let authorization =
                authorization(&case.ak, &Secret::literal(case.sk.clone()), &request).unwrap();
            assert_eq!(
                authorization, case.authorization,
                "authorization of case {:?}",
                case.name
            );
            let query = canonical_query(&case.query);
            let uri = if query.is_empty() {
                encode_path(&case.path)
            } else {
                format!("{}?{query}", encode_path(&case.path))
            };
            assert_eq!(uri, case.uri_as_sent, "uri as sent of case {:?}", case.name);
        }
    }

    #[test]
    fn header_order_and_case_do_not_change_the_signature() {
        let file = vectors();
        let case = &file.cases[1];
        let mut headers: Vec<(String, String)> = case
            .headers()
            .into_iter()
            .rev()
            .map(|(name, value)| (name.to_ascii_uppercase(), format!("  {value} ")))
            .collect();
        headers.rotate_left(2);
        let request = SignableRequest {
            method: "post",
            path: &case.path,
            query: &case.query,
            headers: &headers,
            body: case.body.as_bytes(),
        };
        let authorization =
            authorization(&case.ak, &Secret::literal(case.sk.clone()), &request).unwrap();
        assert_eq!(authorization, case.authorization);
    }

    /// `GET /` with these headers and nothing else.
    fn get_root(headers: &[(String, String)]) -> SignableRequest<'_> {
        SignableRequest {
            method: "GET",
            path: "/",
            query: &[],
            headers,
            body: b"",
        }
    }

    #[test]
    fn headers_with_underscores_are_not_signed() {
        let headers = vec![
            ("Host".to_string(), "example.com".to_string()),
            ("X-Sdk-Date".to_string(), "20261128T093015Z".to_string()),
            ("x_custom".to_string(), "dropped".to_string()),
        ];
        let canonical = canonical_request(&get_root(&headers));
        assert_eq!(canonical.signed_headers, "host;x-sdk-date");
        assert!(!canonical.text.contains("x_custom"));
    }

    #[test]
    fn paths_are_decoded_then_encoded_per_segment() {
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a b/c%2Bd/"), "/a%20b/c%2Bd/");
        assert_eq!(encode_path("/v5/p r/x*y"), "/v5/p%20r/x%2Ay");
        assert_eq!(encode_component("ä~-_."), "%C3%A4~-_.");
    }

    #[test]
    fn missing_sdk_date_is_an_error_not_a_bad_signature() {
        let headers = vec![("Host".to_string(), "example.com".to_string())];
        assert_eq!(
            authorization("ak", &Secret::literal("sk"), &get_root(&headers)),
            Err(SignError::MissingSdkDate)
        );
    }

    #[test]
    fn sdk_date_is_basic_iso8601_utc() {
        let at = DateTime::parse_from_rfc3339("2026-11-28T09:30:15.987+00:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(sdk_date(at), "20261128T093015Z");
    }
}
