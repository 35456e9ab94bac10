//! Request ids: the caller's `X-Request-Id` when it sent a sane one, else a
//! fresh UUID-shaped id, echoed in the response and in the request's log line.
//!
//! Why not `Uuid::new_v4()` per request: that asks the kernel for random bytes
//! (a `getrandom` syscall) on every request. An id only has to be unique and
//! not collide with another process's, so one random base is drawn per
//! process and each request adds a counter to it: 2^64 ids before a repeat.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest id taken from a caller; longer ones are replaced by ours.
const MAX_GIVEN_LEN: usize = 128;

/// Drawn once per process: the high half and the starting low half of every id.
static BASE: LazyLock<(u64, u64)> = LazyLock::new(|| uuid::Uuid::new_v4().as_u64_pair());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A request's id, as the header value it travels in (a caller's value is
/// kept by reference, not copied).
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only visible ASCII ever gets in (see `from_header` and `fresh`).
        self.0.to_str().unwrap_or_default()
    }

    fn from_header(value: Option<&HeaderValue>) -> Self {
        value
            .filter(|value| is_sane(value.as_bytes()))
            .map(|value| Self(value.clone()))
            .unwrap_or_else(Self::fresh)
    }

    /// A new UUID-shaped (version 4 layout) id, unique within this process.
    fn fresh() -> Self {
        let (high, low_base) = *BASE;
        let low = low_base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&high.to_be_bytes());
        bytes[8..].copy_from_slice(&low.to_be_bytes());
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut text = uuid::Uuid::encode_buffer();
        let text = id.hyphenated().encode_lower(&mut text);
        Self(HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-")))
    }
}

/// Safe to echo and log: 1–128 characters of `[A-Za-z0-9-_.:]`.
fn is_sane(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_GIVEN_LEN
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// Middleware: attaches a [`RequestId`] to the request and the response.
pub async fn request_id(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = RequestId::from_header(request.headers().get(REQUEST_ID_HEADER));
    let header = id.0.clone();
    request.extensions_mut().insert(id);
    let mut response = next.call(request).await?;
    response
        .headers_mut()
        .insert(HeaderName::from_static(REQUEST_ID_HEADER), header);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_distinct_uuids() {
        let first = RequestId::fresh();
        let second = RequestId::fresh();
        assert_ne!(first.as_str(), second.as_str());
        for id in [&first, &second] {
            let parsed = uuid::Uuid::parse_str(id.as_str()).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4, "{}", id.as_str());
            assert_eq!(id.as_str().len(), 36);
        }
    }

    #[test]
    fn a_sane_given_id_is_kept_and_others_replaced() {
        let given = HeaderValue::from_static("trace-123:a.b_c");
        assert_eq!(
            RequestId::from_header(Some(&given)).as_str(),
            "trace-123:a.b_c"
        );
        for odd in ["", "has space", "quote\"", &"x".repeat(129)] {
            let value = HeaderValue::from_str(odd).expect("header value");
            let id = RequestId::from_header(Some(&value));
            assert_ne!(id.as_str(), odd);
            assert_eq!(id.as_str().len(), 36, "{odd:?}");
        }
        assert_eq!(RequestId::from_header(None).as_str().len(), 36);
    }
}
