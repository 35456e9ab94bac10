//! What the HSS side shares about failures: why a client cannot be built, and
//! how an answer's error body, `Retry-After` and transport errors are read.
//! Kept apart from the clients so that every client (HSS, its credential
//! issuers, an SWR API client) reads failures the same way without importing
//! one another.

use std::time::{Duration, SystemTime};

/// Longest piece of a non-JSON error body kept for logs and dead letters.
pub const ERROR_TEXT_LIMIT: usize = 256;

/// Why an [`HssClient`](super::HssClient) cannot be built from the settings. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum HssError {
    /// A configured base URL cannot carry an API path.
    #[error("config key `{key}`: \"{value}\" is not a usable URL: {reason}")]
    InvalidUrl {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot build the HTTP client for HSS: {0}")]
    HttpClient(String),
}

/// `Retry-After` as delay-seconds or an HTTP-date (a date in the past means
/// "now"). Anything else is ignored: the caller's own backoff applies.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `(error_code, error_msg)` from an error body: HSS/APIG's
/// `{"error_code","error_msg"}`, IAM's `{"error":{"code","message"}}`, or
/// the start of a non-JSON body as the message.
pub fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    fn text(value: Option<&serde_json::Value>) -> Option<String> {
        match value? {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(body) {
        let nested = object.get("error").and_then(|e| e.as_object());
        let code =
            text(object.get("error_code")).or_else(|| nested.and_then(|e| text(e.get("code"))));
        let message =
            text(object.get("error_msg")).or_else(|| nested.and_then(|e| text(e.get("message"))));
        if code.is_some() || message.is_some() {
            return (code, message);
        }
    }
    let body = String::from_utf8_lossy(body);
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return (None, None);
    }
    (None, Some(trimmed.chars().take(ERROR_TEXT_LIMIT).collect()))
}

/// A transport error with its causes ("connection refused", "timed out", …).
/// reqwest names only the URL, which holds no secret.
pub fn describe_transport_error(error: &reqwest::Error) -> String {
    crate::error_chain::with_causes(error)
}

/// Where a JSON document went wrong, without serde's excerpt of the input
/// (which could quote a credential).
pub fn describe_json_error(error: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        error.classify(),
        error.line(),
        error.column()
    )
}

/// `": code: message"`, `": text"` or nothing: what an error body adds to a
/// one-line reason.
pub fn error_detail(code: Option<&str>, message: Option<&str>) -> String {
    match (code, message) {
        (Some(code), Some(message)) => format!(": {code}: {message}"),
        (Some(text), None) | (None, Some(text)) => format!(": {text}"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_in_every_known_shape_are_read() {
        assert_eq!(
            parse_error_body(br#"{"error":{"code":"APIGW.0301","message":"Incorrect IAM authentication information"}}"#),
            (
                Some("APIGW.0301".into()),
                Some("Incorrect IAM authentication information".into())
            )
        );
        assert_eq!(
            parse_error_body(br#"{"error":{"code":401,"message":"no"}}"#),
            (Some("401".into()), Some("no".into()))
        );
        assert_eq!(
            parse_error_body(b"<html>Bad Gateway</html>\n"),
            (None, Some("<html>Bad Gateway</html>".into()))
        );
        let long = "x".repeat(1000);
        assert_eq!(
            parse_error_body(long.as_bytes()).1.unwrap().len(),
            ERROR_TEXT_LIMIT
        );
        assert_eq!(
            parse_error_body(br#"{"other":1}"#),
            (None, Some(r#"{"other":1}"#.into()))
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_http_dates() {
        let now = httpdate::parse_http_date("Sat, 28 Nov 2026 09:30:15 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sat, 28 Nov 2026 09:31:00 GMT", now),
            Some(Duration::from_secs(45))
        );
        assert_eq!(
            parse_retry_after("Sat, 28 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }
}
