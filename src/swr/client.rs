//! Signed `GET` calls to the SWR API, with the `[hss]` credentials: the one
//! place that knows how to reach SWR and what its answers mean. The digest
//! resolver (SWR Enterprise Edition) and the poll sources (SWR basic) build
//! their operations on [`SwrClient::get_json`].

use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use crate::config::{HssSettings, SwrSettings};
use crate::hss::auth_headers::{self, ApiCall, PROJECT_ID_HEADER, REQUEST_ID_HEADER};
use crate::hss::credentials::{CredentialError, CredentialProvider, SystemClock, WallClock};
use crate::hss::errors::{
    HssError, describe_json_error, describe_transport_error, error_detail, parse_error_body,
    parse_retry_after,
};
use crate::hss::http;
use crate::hss::signer;
use crate::ops::metrics::Metrics;

/// SWR list answers hold at most 1,000 items of a few hundred bytes each;
/// anything far larger is not SWR talking.
const ANSWER_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// The SWR API as the bridge uses it. Cheap to share.
#[derive(Debug)]
pub struct SwrClient {
    http: reqwest::Client,
    base: Url,
    host: String,
    project_id: String,
    timeout: Duration,
    credentials: CredentialProvider,
    clock: std::sync::Arc<dyn WallClock>,
    metrics: Metrics,
}

/// A successful answer.
#[derive(Debug)]
pub struct SwrAnswer<T> {
    pub body: T,
    pub request_id: Option<String>,
    /// The total a paged list reports in `Content-Range: items 0-99/1234`.
    pub total: Option<u64>,
}

/// How an SWR call failed. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum SwrError {
    #[error("SWR {operation} not sent: no credentials: {source}")]
    Credentials {
        operation: &'static str,
        #[source]
        source: CredentialError,
    },
    #[error("SWR {operation} not sent: {reason}")]
    Request {
        operation: &'static str,
        reason: String,
    },
    #[error("SWR {operation}: {reason}")]
    Transport {
        operation: &'static str,
        reason: String,
    },
    #[error("SWR {operation} answered HTTP {status}{}{}", error_detail(.error_code.as_deref(), .error_msg.as_deref()), request_suffix(.request_id))]
    Status {
        operation: &'static str,
        status: u16,
        error_code: Option<String>,
        error_msg: Option<String>,
        request_id: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("SWR {operation} answered with a body that is not what the API documents: {reason}{}", request_suffix(.request_id))]
    Decode {
        operation: &'static str,
        reason: String,
        request_id: Option<String>,
    },
}

fn request_suffix(request_id: &Option<String>) -> String {
    request_id
        .as_deref()
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default()
}

/// What a caller should do about an [`SwrError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwrErrorKind {
    /// Network trouble, timeouts, 429, 5xx, issuers briefly unavailable: try later.
    Retryable,
    /// 404: the thing asked for does not exist (any more).
    NotFound,
    /// 401/403 or credentials refused: only a configuration change helps.
    Unauthorized,
    /// Any other 4xx, or an answer of the wrong shape: retrying will not help.
    Rejected,
}

impl SwrError {
    pub fn kind(&self) -> SwrErrorKind {
        match self {
            SwrError::Credentials { source, .. } if source.is_retryable() => {
                SwrErrorKind::Retryable
            }
            SwrError::Credentials { .. } => SwrErrorKind::Unauthorized,
            SwrError::Request { .. } | SwrError::Decode { .. } => SwrErrorKind::Rejected,
            SwrError::Transport { .. } => SwrErrorKind::Retryable,
            SwrError::Status { status, .. } => match status {
                429 | 500..=599 => SwrErrorKind::Retryable,
                404 => SwrErrorKind::NotFound,
                401 | 403 => SwrErrorKind::Unauthorized,
                _ => SwrErrorKind::Rejected,
            },
        }
    }

    /// The server's `Retry-After`, when it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SwrError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            SwrError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn error_code(&self) -> Option<&str> {
        match self {
            SwrError::Status { error_code, .. } => error_code.as_deref(),
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            SwrError::Status { request_id, .. } | SwrError::Decode { request_id, .. } => {
                request_id.as_deref()
            }
            _ => None,
        }
    }
}

impl SwrClient {
    pub fn new(hss: &HssSettings, swr: &SwrSettings, metrics: Metrics) -> Result<Self, HssError> {
        Self::with_clock(hss, swr, metrics, std::sync::Arc::new(SystemClock))
    }

    /// Like [`SwrClient::new`], with the clock that dates signatures.
    pub fn with_clock(
        hss: &HssSettings,
        swr: &SwrSettings,
        metrics: Metrics,
        clock: std::sync::Arc<dyn WallClock>,
    ) -> Result<Self, HssError> {
        let base = swr.endpoint.url().clone();
        let host = swr.endpoint.host().to_string();
        let timeout = hss.request_timeout;
        let (http, credentials) = http::client_with_credentials(hss, clock.clone())?;
        Ok(Self {
            http,
            base,
            host,
            project_id: hss.project_id.clone(),
            timeout,
            credentials,
            clock,
            metrics,
        })
    }

    /// The project the credentials are scoped to (SWR EE paths name it).
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// `GET {endpoint}/{segments…}?{query}`, each segment percent-encoded
    /// (so a `/` inside one is sent as `%2F`), decoded as `T` when 2xx.
    /// A 401 renews renewable credentials and tries once more.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        segments: &[&str],
        query: &[(String, String)],
    ) -> Result<SwrAnswer<T>, SwrError> {
        let mut path = self.base.path().trim_end_matches('/').to_string();
        for segment in segments {
            path.push('/');
            path.push_str(&signer::encode_component(segment));
        }
        match self.attempt(operation, &path, query).await {
            Err(SwrError::Status { status: 401, .. }) if self.credentials.invalidate().await => {
                tracing::info!(
                    operation,
                    "SWR answered 401; renewing credentials and trying once more"
                );
                self.attempt(operation, &path, query).await
            }
            other => other,
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        query: &[(String, String)],
    ) -> Result<SwrAnswer<T>, SwrError> {
        let credentials = self
            .credentials
            .current()
            .await
            .map_err(|source| SwrError::Credentials { operation, source })?;
        let call = ApiCall {
            method: "GET",
            host: &self.host,
            path,
            query,
            body: b"",
        };
        let own_headers = vec![
            (
                CONTENT_TYPE.as_str().to_string(),
                "application/json".to_string(),
            ),
            (PROJECT_ID_HEADER.to_string(), self.project_id.clone()),
        ];
        let headers =
            auth_headers::authenticated_headers(&call, own_headers, &credentials, self.clock.now())
                .map_err(|reason| SwrError::Request { operation, reason })?;
        let mut url = self.base.clone();
        url.set_path(path);
        let query_string = signer::canonical_query(query);
        url.set_query((!query_string.is_empty()).then_some(query_string.as_str()));

        let started = Instant::now();
        let result = match self.http.get(url).headers(headers).send().await {
            Err(error) => Err(SwrError::Transport {
                operation,
                reason: if error.is_timeout() {
                    format!("no answer within {} ms", self.timeout.as_millis())
                } else {
                    format!("unreachable: {}", describe_transport_error(&error))
                },
            }),
            Ok(response) => self.read_answer(operation, response).await,
        };
        let elapsed = started.elapsed();
        let status = match &result {
            Ok(_) => Some(200),
            Err(error) => error.status(),
        };
        self.metrics.record_swr_request(operation, status, elapsed);
        let duration_ms = elapsed.as_millis() as u64;
        match &result {
            Ok(answer) => tracing::debug!(
                operation,
                duration_ms,
                swr_request_id = answer.request_id.as_deref(),
                "SWR call"
            ),
            Err(error) => tracing::warn!(
                operation,
                duration_ms,
                status = error.status(),
                swr_error_code = error.error_code(),
                swr_request_id = error.request_id(),
                error = %error,
                "SWR call failed"
            ),
        }
        result
    }

    async fn read_answer<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        mut response: reqwest::Response,
    ) -> Result<SwrAnswer<T>, SwrError> {
        let status = response.status().as_u16();
        let header = |name: &str| http::header_text(&response, name);
        let request_id = header(REQUEST_ID_HEADER);
        let total = header("Content-Range").and_then(|value| content_range_total(&value));
        let retry_after = header(reqwest::header::RETRY_AFTER.as_str())
            .and_then(|value| parse_retry_after(&value, self.clock.now().into()));
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= ANSWER_BODY_LIMIT => {
                    body.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => {
                    return Err(SwrError::Decode {
                        operation,
                        reason: format!("answer larger than {ANSWER_BODY_LIMIT} bytes"),
                        request_id,
                    });
                }
                Ok(None) => break,
                Err(error) if (200..300).contains(&status) => {
                    return Err(SwrError::Transport {
                        operation,
                        reason: format!("answer cut off: {}", describe_transport_error(&error)),
                    });
                }
                // An error answer cut short still has its status to go by.
                Err(_) => break,
            }
        }
        if !(200..300).contains(&status) {
            let (error_code, error_msg) = parse_swr_error_body(&body);
            return Err(SwrError::Status {
                operation,
                status,
                error_code,
                error_msg,
                request_id,
                retry_after,
            });
        }
        match serde_json::from_slice(&body) {
            Ok(body) => Ok(SwrAnswer {
                body,
                request_id,
                total,
            }),
            Err(error) => Err(SwrError::Decode {
                operation,
                reason: describe_json_error(&error),
                request_id,
            }),
        }
    }
}

/// SWR's own error bodies, `{"errorCode", "errorMessage"}` or a list of them
/// (the API reference's format), else what the gateway and other Huawei APIs
/// answer (`error_code`/`error_msg`, or the raw text).
fn parse_swr_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct SwrErrorBody {
        error_code: Option<String>,
        error_message: Option<String>,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Shape {
        One(SwrErrorBody),
        List(Vec<SwrErrorBody>),
    }
    let first = match serde_json::from_slice::<Shape>(body) {
        Ok(Shape::One(error)) => Some(error),
        Ok(Shape::List(errors)) => errors.into_iter().next(),
        Err(_) => None,
    };
    match first {
        Some(SwrErrorBody {
            error_code,
            error_message,
        }) if error_code.is_some() || error_message.is_some() => (error_code, error_message),
        _ => parse_error_body(body),
    }
}

/// `items 0-99/1234` → 1234 (SWR's paged lists name their total this way).
fn content_range_total(value: &str) -> Option<u64> {
    value.rsplit_once('/')?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_total_reads_the_number_after_the_slash() {
        assert_eq!(content_range_total("items 0-99/1234"), Some(1234));
        assert_eq!(content_range_total("0-0/0"), Some(0));
        assert_eq!(content_range_total("items 0-99/*"), None);
        assert_eq!(content_range_total("garbage"), None);
    }

    #[test]
    fn swr_error_bodies_are_read_in_every_shape() {
        let expected = (
            Some("SVCSTG.SWR.4030011".to_string()),
            Some("no permission".to_string()),
        );
        for body in [
            r#"[{"errorCode":"SVCSTG.SWR.4030011","errorMessage":"no permission","detail":""}]"#,
            r#"{"errorCode":"SVCSTG.SWR.4030011","errorMessage":"no permission"}"#,
            r#"{"error_code":"SVCSTG.SWR.4030011","error_msg":"no permission"}"#,
        ] {
            assert_eq!(parse_swr_error_body(body.as_bytes()), expected, "{body}");
        }
        assert_eq!(
            parse_swr_error_body(b"upstream timed out"),
            (None, Some("upstream timed out".to_string()))
        );
    }

    #[test]
    fn status_errors_are_classified_as_the_contract_says() {
        let status = |status| SwrError::Status {
            operation: "show_instance_artifact",
            status,
            error_code: None,
            error_msg: None,
            request_id: None,
            retry_after: None,
        };
        assert_eq!(status(429).kind(), SwrErrorKind::Retryable);
        assert_eq!(status(503).kind(), SwrErrorKind::Retryable);
        assert_eq!(status(404).kind(), SwrErrorKind::NotFound);
        assert_eq!(status(403).kind(), SwrErrorKind::Unauthorized);
        assert_eq!(status(400).kind(), SwrErrorKind::Rejected);
    }
}
