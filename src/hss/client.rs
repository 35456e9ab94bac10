//! One call to HSS per batch, to the configured API (batch-scan or
//! scan-tasks): build the request, authenticate it (signed anew on every
//! attempt), send it, and classify the answer as a [`ScanOutcome`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::api::HssApi;
use super::auth_headers::{self, ApiCall, PROJECT_ID_HEADER, REQUEST_ID_HEADER};
use super::batch_scan::batch_scan_body;
use super::credentials::CallCredentials;
use super::credentials::{CredentialProvider, SystemClock, WallClock};
use super::errors::{
    HssError, describe_transport_error, error_detail, parse_error_body, parse_retry_after,
};
use super::http;
use super::scan_tasks::{ScanScope, scan_tasks_body};
use super::sender::{ScanOutcome, ScanSender};
use super::signer;
use crate::config::HssSettings;
use crate::domain::{BatchImage, Partition};
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap};

const CONTENT_TYPE_JSON: &str = "application/json";
const REGION_HEADER: &str = "region";
const ENTERPRISE_PROJECT_QUERY: &str = "enterprise_project_id";
/// The most of an answer body read: HSS answers are a few hundred bytes, and
/// whatever answers in its place (a proxy, a captive portal, a broken
/// gateway) must not fill memory with an endless one.
const ANSWER_BODY_LIMIT: usize = 64 * 1024;

/// The bridge's only HSS client. Cheap to share: one connection pool, and
/// credentials cached across calls.
#[derive(Debug)]
pub struct HssClient {
    http: reqwest::Client,
    api: HssApi,
    /// Only scan-tasks sends it.
    scan_scope: ScanScope,
    /// `{endpoint}/v5/{project_id}/{api path}`, without query.
    url: Url,
    /// The `Host` header, set explicitly because it is signed.
    host: String,
    project_id: String,
    region: String,
    send_region_header: bool,
    timeout: Duration,
    credentials: CredentialProvider,
    clock: Arc<dyn WallClock>,
}

impl HssClient {
    pub fn new(settings: &HssSettings) -> Result<HssClient, HssError> {
        Self::with_clock(settings, Arc::new(SystemClock))
    }

    /// Like [`HssClient::new`], with the clock that dates signatures and
    /// decides credential expiry (tests pass a `ManualClock`).
    pub fn with_clock(
        settings: &HssSettings,
        clock: Arc<dyn WallClock>,
    ) -> Result<HssClient, HssError> {
        let mut url = settings.endpoint.url().clone();
        let host = settings.endpoint.host().to_string();
        let api = settings.api;
        let path = format!(
            "{}/v5/{}/{}",
            url.path().trim_end_matches('/'),
            signer::encode_component(&settings.project_id),
            api.path()
        );
        url.set_path(&path);

        let timeout = settings.request_timeout;
        let (http, credentials) = http::client_with_credentials(settings, clock.clone())?;
        Ok(HssClient {
            http,
            api,
            scan_scope: settings.scan_scope.clone(),
            url,
            host,
            project_id: settings.project_id.clone(),
            region: settings.region.clone(),
            send_region_header: settings.send_region_header,
            timeout,
            credentials,
            clock,
        })
    }

    /// Where requests go (before their query).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The JSON body of `images` for this client's API.
    pub fn request_body(
        &self,
        partition: &Partition,
        images: &[BatchImage],
    ) -> Result<Vec<u8>, serde_json::Error> {
        match self.api {
            HssApi::BatchScan => batch_scan_body(partition, images),
            HssApi::ScanTasks => scan_tasks_body(partition, images, &self.scan_scope),
        }
    }

    /// The query of a request for `partition`: the API's fixed parameters,
    /// then `enterprise_project_id` when the partition has one.
    fn query(&self, partition: &Partition) -> Vec<(String, String)> {
        let fixed = self
            .api
            .fixed_query()
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()));
        let enterprise_project = partition
            .enterprise_project_id
            .iter()
            .map(|id| (ENTERPRISE_PROJECT_QUERY.to_string(), id.clone()));
        fixed.chain(enterprise_project).collect()
    }

    /// Logs a call given up before it was sent: `why`, and the error behind
    /// it when there is one.
    fn log_not_sent(
        &self,
        partition: &Partition,
        images: usize,
        auth: &str,
        outcome: &ScanOutcome,
        why: &str,
        error: Option<&dyn std::fmt::Display>,
    ) {
        tracing::warn!(
            partition = %partition.key(),
            api = self.api.as_str(),
            images,
            auth,
            outcome = outcome_name(outcome),
            reason = error.map(tracing::field::display),
            "HSS call not sent: {why}"
        );
    }

    /// One HTTP call. The flag says whether HSS answered 401, which may be
    /// cured by renewing the credentials.
    async fn attempt(
        &self,
        partition: &Partition,
        body: &[u8],
        images: usize,
    ) -> (ScanOutcome, bool) {
        let auth = self.credentials.auth_name();
        let credentials = match self.credentials.current().await {
            Ok(credentials) => credentials,
            Err(error) => {
                let outcome = if error.is_retryable() {
                    ScanOutcome::Retryable {
                        status: None,
                        reason: format!("no credentials for HSS: {error}"),
                        retry_after: None,
                        request_id: None,
                    }
                } else {
                    ScanOutcome::Permanent {
                        status: None,
                        error_code: None,
                        error_msg: format!("no credentials for HSS: {error}"),
                        request_id: None,
                    }
                };
                let why = "credentials unavailable";
                self.log_not_sent(partition, images, auth, &outcome, why, Some(&error));
                return (outcome, false);
            }
        };

        let query = self.query(partition);
        let mut url = self.url.clone();
        let query_string = signer::canonical_query(&query);
        if !query_string.is_empty() {
            url.set_query(Some(&query_string));
        }

        let headers = match self.headers(&credentials, &query, body) {
            Ok(headers) => headers,
            Err(reason) => {
                let outcome = ScanOutcome::Permanent {
                    status: None,
                    error_code: None,
                    error_msg: reason,
                    request_id: None,
                };
                let why = "request could not be built";
                self.log_not_sent(partition, images, auth, &outcome, why, None);
                return (outcome, false);
            }
        };

        let started = Instant::now();
        let sent = self
            .http
            .post(url)
            .headers(headers)
            .body(body.to_vec())
            .send()
            .await;
        let (outcome, unauthorized) = match sent {
            Err(error) => {
                let reason = if error.is_timeout() {
                    format!("HSS did not answer within {} ms", self.timeout.as_millis())
                } else {
                    format!("HSS unreachable: {}", describe_transport_error(&error))
                };
                let outcome = ScanOutcome::Retryable {
                    status: None,
                    reason,
                    retry_after: None,
                    request_id: None,
                };
                (outcome, false)
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let request_id = http::header_text(&response, REQUEST_ID_HEADER);
                let retry_after =
                    http::header_text(&response, reqwest::header::RETRY_AFTER.as_str())
                        .and_then(|value| parse_retry_after(&value, self.clock.now().into()));
                // A body cut off mid-way still leaves the status to classify by.
                let body = read_answer_body(response, ANSWER_BODY_LIMIT).await;
                let outcome = classify_response(status, request_id, retry_after, &body);
                (outcome, status == 401)
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        log_call(self.api, partition, images, auth, &outcome, duration_ms);
        (outcome, unauthorized)
    }

    fn headers(
        &self,
        credentials: &CallCredentials,
        query: &[(String, String)],
        body: &[u8],
    ) -> Result<HeaderMap, String> {
        let mut headers: Vec<(String, String)> = vec![
            (CONTENT_TYPE.as_str().into(), CONTENT_TYPE_JSON.into()),
            (PROJECT_ID_HEADER.into(), self.project_id.clone()),
        ];
        if self.send_region_header {
            headers.push((REGION_HEADER.into(), self.region.clone()));
        }
        let call = ApiCall {
            method: "POST",
            host: &self.host,
            path: self.url.path(),
            query,
            body,
        };
        auth_headers::authenticated_headers(&call, headers, credentials, self.clock.now())
    }
}

#[async_trait::async_trait]
impl ScanSender for HssClient {
    fn api(&self) -> HssApi {
        self.api
    }

    async fn batch_scan(&self, partition: &Partition, images: &[BatchImage]) -> ScanOutcome {
        let body = match self.request_body(partition, images) {
            Ok(body) => body,
            Err(error) => {
                return ScanOutcome::Permanent {
                    status: None,
                    error_code: None,
                    error_msg: format!("cannot encode the {} body: {error}", self.api),
                    request_id: None,
                };
            }
        };
        let (outcome, unauthorized) = self.attempt(partition, &body, images.len()).await;
        // A token or temporary key can be revoked or expire early: one renewal, one more try.
        if unauthorized && self.credentials.invalidate().await {
            tracing::info!(
                partition = %partition.key(),
                auth = self.credentials.auth_name(),
                "HSS answered 401; renewing credentials and trying once more"
            );
            return self.attempt(partition, &body, images.len()).await.0;
        }
        outcome
    }
}

/// At most `limit` bytes of `response`'s body. The rest is left unread: the
/// connection is then dropped rather than reused. A transport error ends the
/// body where it broke.
async fn read_answer_body(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// What an HSS answer means for the batch.
pub fn classify_response(
    status: u16,
    request_id: Option<String>,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ScanOutcome {
    if (200..300).contains(&status) {
        return ScanOutcome::Accepted { status, request_id };
    }
    let (error_code, error_msg) = parse_error_body(body);
    if matches!(status, 429 | 500 | 502 | 503 | 504) {
        let detail = error_detail(error_code.as_deref(), error_msg.as_deref());
        return ScanOutcome::Retryable {
            status: Some(status),
            reason: format!("HSS answered HTTP {status}{detail}"),
            retry_after,
            request_id,
        };
    }
    ScanOutcome::Permanent {
        status: Some(status),
        error_msg: error_msg.unwrap_or_else(|| format!("HSS answered HTTP {status}")),
        error_code,
        request_id,
    }
}

fn outcome_name(outcome: &ScanOutcome) -> &'static str {
    match outcome {
        ScanOutcome::Accepted { .. } => "accepted",
        ScanOutcome::Retryable { .. } => "retryable",
        ScanOutcome::Permanent { .. } => "permanent",
    }
}

fn log_call(
    api: HssApi,
    partition: &Partition,
    images: usize,
    auth: &str,
    outcome: &ScanOutcome,
    duration_ms: u64,
) {
    let partition = partition.key();
    let api = api.as_str();
    let outcome_kind = outcome_name(outcome);
    // Every outcome logs the same fields; those an outcome lacks are `None`,
    // which the event leaves out.
    let (mut retry_after_s, mut reason, mut error_code, mut error_msg) = (None, None, None, None);
    let (status, request_id) = match outcome {
        ScanOutcome::Accepted { status, request_id } => (Some(*status), request_id),
        ScanOutcome::Retryable {
            status,
            reason: why,
            retry_after,
            request_id,
        } => {
            retry_after_s = retry_after.map(|d| d.as_secs());
            reason = Some(why.as_str());
            (*status, request_id)
        }
        ScanOutcome::Permanent {
            status,
            error_code: code,
            error_msg: message,
            request_id,
        } => {
            error_code = code.as_deref();
            error_msg = Some(message.as_str());
            (*status, request_id)
        }
    };
    macro_rules! hss_call_event {
        ($level:ident) => {
            tracing::$level!(
                %partition,
                api,
                images,
                auth,
                status,
                hss_request_id = request_id.as_deref(),
                duration_ms,
                outcome = outcome_kind,
                retry_after_s,
                reason,
                error_code,
                error_msg,
                "HSS call"
            )
        };
    }
    match outcome {
        ScanOutcome::Accepted { .. } => hss_call_event!(info),
        ScanOutcome::Retryable { .. } | ScanOutcome::Permanent { .. } => hss_call_event!(warn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hss::credentials::{AccessKey, CallCredentials, ManualClock};
    use crate::hss::image_info::fixtures::{vector_1, vector_3};
    use crate::hss::signer::SECURITY_TOKEN_HEADER;
    use crate::secret::Secret;
    use reqwest::header::{AUTHORIZATION, HOST};

    fn vector_client(region: &str, extra: &str) -> HssClient {
        let toml = format!(
            "[hss]\nregion = \"{region}\"\nproject_id = \"0a1b2c3d4e5f60718293a4b5c6d7e8f9\"\n\
             ak = \"HPUAEXAMPLEAKID0EXAM\"\nsk = \"ExampleSecretKeyDoNotUse0123456789abcdef\"\n{extra}"
        );
        let settings = crate::config::Settings::from_toml(&toml).unwrap().hss;
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-28T09:30:15Z").unwrap();
        let clock = ManualClock::new(at.with_timezone(&chrono::Utc));
        HssClient::with_clock(&settings, Arc::new(clock)).unwrap()
    }

    fn key(security_token: Option<&str>) -> CallCredentials {
        CallCredentials::AccessKey(AccessKey {
            access_key: Secret::literal("HPUAEXAMPLEAKID0EXAM"),
            secret_key: Secret::literal("ExampleSecretKeyDoNotUse0123456789abcdef"),
            security_token: security_token.map(Secret::literal),
        })
    }

    /// The client's own request for the batches of shared vectors 1 and 3
    /// carries exactly the Authorization the official SDK computed.
    #[test]
    fn client_headers_reproduce_the_sdk_vectors() {
        let client = vector_client("cn-north-4", "");
        assert_eq!(
            client.url().as_str(),
            "https://hss.cn-north-4.myhuaweicloud.com/v5/0a1b2c3d4e5f60718293a4b5c6d7e8f9/image/batch-scan"
        );
        let (partition, images) = vector_1();
        let body = batch_scan_body(&partition, &images).unwrap();
        let headers = client.headers(&key(None), &[], &body).unwrap();
        assert_eq!(
            headers[AUTHORIZATION],
            "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAKID0EXAM, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature=c5e86f5d954712a5940460b14bee810500415117f442c407ae7f2a64226b45fa"
        );
        assert_eq!(headers[HOST], "hss.cn-north-4.myhuaweicloud.com");
        assert!(headers[AUTHORIZATION].is_sensitive());
        assert!(!headers[HOST].is_sensitive());

        let (partition, images) = vector_3();
        let body = batch_scan_body(&partition, &images).unwrap();
        let query = [("enterprise_project_id".to_string(), "0".to_string())];
        let headers = client
            .headers(&key(Some("ExampleSecurityTokenValue+/==")), &query, &body)
            .unwrap();
        assert_eq!(
            headers[AUTHORIZATION],
            "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAKID0EXAM, SignedHeaders=content-type;host;x-project-id;x-sdk-date;x-security-token, Signature=e1f7cf052212381043e9fa0b48a63916fb18770d0c7c13548ac159cdac49b4fb"
        );
        assert!(headers[SECURITY_TOKEN_HEADER].is_sensitive());
    }

    #[test]
    fn endpoints_with_ports_and_path_prefixes_shape_host_and_url() {
        let client = vector_client(
            "cn-north-4",
            "endpoint = \"http://127.0.0.1:8443/hss-proxy/\"",
        );
        assert_eq!(client.host, "127.0.0.1:8443");
        assert_eq!(
            client.url().as_str(),
            "http://127.0.0.1:8443/hss-proxy/v5/0a1b2c3d4e5f60718293a4b5c6d7e8f9/image/batch-scan"
        );
        let eu = vector_client("eu-west-101", "");
        assert_eq!(eu.host, "hss.eu-west-101.myhuaweicloud.eu");
    }

    #[test]
    fn two_xx_is_accepted() {
        for status in [200, 201, 202, 204] {
            assert_eq!(
                classify_response(status, Some("r1".into()), None, b"{}"),
                ScanOutcome::Accepted {
                    status,
                    request_id: Some("r1".into())
                }
            );
        }
    }

    #[test]
    fn throttling_and_server_errors_are_retryable() {
        assert_eq!(
            classify_response(
                429,
                Some("r2".into()),
                Some(Duration::from_secs(7)),
                br#"{"error_code":"APIG.0308","error_msg":"The request is throttled."}"#
            ),
            ScanOutcome::Retryable {
                status: Some(429),
                reason: "HSS answered HTTP 429: APIG.0308: The request is throttled.".into(),
                retry_after: Some(Duration::from_secs(7)),
                request_id: Some("r2".into()),
            }
        );
        for status in [500, 502, 503, 504] {
            assert_eq!(
                classify_response(status, None, None, b""),
                ScanOutcome::Retryable {
                    status: Some(status),
                    reason: format!("HSS answered HTTP {status}"),
                    retry_after: None,
                    request_id: None,
                }
            );
        }
    }

    #[test]
    fn other_statuses_are_permanent_with_the_hss_error() {
        assert_eq!(
            classify_response(
                400,
                Some("r3".into()),
                Some(Duration::from_secs(9)),
                br#"{"error_code":"HSS.1059","error_msg":"Invalid image type"}"#
            ),
            ScanOutcome::Permanent {
                status: Some(400),
                error_code: Some("HSS.1059".into()),
                error_msg: "Invalid image type".into(),
                request_id: Some("r3".into()),
            }
        );
        for status in [301, 401, 403, 404, 409, 501, 505] {
            assert_eq!(
                classify_response(status, None, None, b"  "),
                ScanOutcome::Permanent {
                    status: Some(status),
                    error_code: None,
                    error_msg: format!("HSS answered HTTP {status}"),
                    request_id: None,
                }
            );
        }
    }
}
