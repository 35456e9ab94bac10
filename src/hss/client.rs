//! One batch-scan call to HSS: build the request, authenticate it (signed
//! anew on every attempt), send it, and classify the answer as a [`ScanOutcome`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use super::credentials::{CallCredentials, CredentialProvider, SystemClock, WallClock};
use super::signer::{self, SDK_DATE_HEADER, SECURITY_TOKEN_HEADER, SignableRequest};
use super::{HssError, ScanOutcome, ScanSender};
use crate::config::{HssAuthKind, HssSettings};
use crate::domain::{ImageType, Partition};
use crate::store::BatchImage;

const CONTENT_TYPE_JSON: &str = "application/json";
const PROJECT_ID_HEADER: &str = "X-Project-Id";
const AUTH_TOKEN_HEADER: &str = "X-Auth-Token";
const REGION_HEADER: &str = "region";
const REQUEST_ID_HEADER: &str = "X-Request-Id";
/// Lower-case names of the headers that carry credentials.
const SENSITIVE_HEADERS: [&str; 3] = ["authorization", "x-auth-token", "x-security-token"];
const ENTERPRISE_PROJECT_QUERY: &str = "enterprise_project_id";
/// Longest piece of a non-JSON error body kept for logs and dead letters.
const ERROR_TEXT_LIMIT: usize = 256;
/// The most of an answer body read: HSS answers are a few hundred bytes, and
/// whatever answers in its place (a proxy, a captive portal, a broken
/// gateway) must not fill memory with an endless one.
const ANSWER_BODY_LIMIT: usize = 64 * 1024;

/// The bridge's only HSS client. Cheap to share: one connection pool, and
/// credentials cached across calls.
#[derive(Debug)]
pub struct HssClient {
    http: reqwest::Client,
    /// `{endpoint}/v5/{project_id}/image/batch-scan`, without query.
    batch_scan_url: Url,
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
        let endpoint = settings.effective_endpoint();
        let invalid = |reason: &str| HssError::InvalidUrl {
            key: "hss.endpoint",
            value: endpoint.clone(),
            reason: reason.to_string(),
        };
        let mut batch_scan_url = Url::parse(&endpoint).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(batch_scan_url.scheme(), "http" | "https") {
            return Err(invalid("needs an http:// or https:// URL"));
        }
        if batch_scan_url.query().is_some() || batch_scan_url.fragment().is_some() {
            return Err(invalid("must not carry a query or fragment"));
        }
        let host = match (batch_scan_url.host_str(), batch_scan_url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err(invalid("has no host")),
        };
        let path = format!(
            "{}/v5/{}/image/batch-scan",
            batch_scan_url.path().trim_end_matches('/'),
            signer::encode_component(&settings.project_id)
        );
        batch_scan_url.set_path(&path);

        let timeout = settings.request_timeout();
        // rustls with the webpki roots verifies certificates; nothing here
        // turns that off.
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("swr-scan-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HssError::HttpClient(describe_transport_error(&e)))?;
        let credentials = CredentialProvider::from_settings(settings, http.clone(), clock.clone())?;
        Ok(HssClient {
            http,
            batch_scan_url,
            host,
            project_id: settings.project_id.clone(),
            region: settings.region.clone(),
            send_region_header: settings.send_region_header,
            timeout,
            credentials,
            clock,
        })
    }

    /// Where batch-scan requests go (before `?enterprise_project_id=`).
    pub fn batch_scan_url(&self) -> &Url {
        &self.batch_scan_url
    }

    /// One HTTP call. The flag says whether HSS answered 401, which may be
    /// cured by renewing the credentials.
    async fn attempt(
        &self,
        partition: &Partition,
        body: &[u8],
        images: usize,
    ) -> (ScanOutcome, bool) {
        let auth = auth_name(self.credentials.auth_kind());
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
                tracing::warn!(
                    partition = %partition.key(),
                    images,
                    auth,
                    outcome = outcome_name(&outcome),
                    reason = %error,
                    "HSS batch-scan not sent: credentials unavailable"
                );
                return (outcome, false);
            }
        };

        let query: Vec<(String, String)> = partition
            .enterprise_project_id
            .iter()
            .map(|id| (ENTERPRISE_PROJECT_QUERY.to_string(), id.clone()))
            .collect();
        let mut url = self.batch_scan_url.clone();
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
                tracing::warn!(
                    partition = %partition.key(),
                    images,
                    auth,
                    outcome = outcome_name(&outcome),
                    "HSS batch-scan not sent: request could not be built"
                );
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
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|value| value.to_str().ok())
                        .map(str::to_string)
                };
                let request_id = header(REQUEST_ID_HEADER);
                let retry_after = header(reqwest::header::RETRY_AFTER.as_str())
                    .and_then(|value| parse_retry_after(&value, self.clock.now().into()));
                // A body cut off mid-way still leaves the status to classify by.
                let body = read_answer_body(response, ANSWER_BODY_LIMIT).await;
                let outcome = classify_response(status, request_id, retry_after, &body);
                (outcome, status == 401)
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        log_call(partition, images, auth, &outcome, duration_ms);
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
        match credentials {
            CallCredentials::AccessKey(key) => {
                headers.push((HOST.as_str().into(), self.host.clone()));
                headers.push((SDK_DATE_HEADER.into(), signer::sdk_date(self.clock.now())));
                if let Some(token) = &key.security_token {
                    headers.push((SECURITY_TOKEN_HEADER.into(), token.expose().to_string()));
                }
                let request = SignableRequest {
                    method: "POST",
                    path: self.batch_scan_url.path(),
                    query,
                    headers: &headers,
                    body,
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
            // Sensitive values are redacted from the HTTP stack's Debug output.
            header_value.set_sensitive(SENSITIVE_HEADERS.contains(&header_name.as_str()));
            map.insert(header_name, header_value);
        }
        Ok(map)
    }
}

#[async_trait::async_trait]
impl ScanSender for HssClient {
    async fn batch_scan(&self, partition: &Partition, images: &[BatchImage]) -> ScanOutcome {
        let body = match batch_scan_body(partition, images) {
            Ok(body) => body,
            Err(error) => {
                return ScanOutcome::Permanent {
                    status: None,
                    error_code: None,
                    error_msg: format!("cannot encode the batch-scan body: {error}"),
                    request_id: None,
                };
            }
        };
        let (outcome, unauthorized) = self.attempt(partition, &body, images.len()).await;
        // A token or temporary key can be revoked or expire early: one renewal, one more try.
        if unauthorized && self.credentials.invalidate().await {
            tracing::info!(
                partition = %partition.key(),
                auth = auth_name(self.credentials.auth_kind()),
                "HSS answered 401; renewing credentials and trying once more"
            );
            return self.attempt(partition, &body, images.len()).await.0;
        }
        outcome
    }
}

#[derive(Serialize)]
struct BatchScanBody<'a> {
    image_type: &'a str,
    image_info_list: Vec<ImageInfo<'a>>,
}

#[derive(Serialize)]
struct ImageInfo<'a> {
    namespace: &'a str,
    image_name: &'a str,
    image_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_url: Option<&'a str>,
}

/// The JSON body of one batch-scan request, fields in the order the SDK
/// writes them. Instance fields appear only for `instance_image`.
pub fn batch_scan_body(
    partition: &Partition,
    images: &[BatchImage],
) -> Result<Vec<u8>, serde_json::Error> {
    let is_instance = partition.image_type == ImageType::InstanceImage;
    let body = BatchScanBody {
        image_type: partition.image_type.as_str(),
        image_info_list: images
            .iter()
            .map(|item| ImageInfo {
                namespace: &item.image.namespace,
                image_name: &item.image.name,
                image_version: &item.image.tag,
                instance_id: partition.instance_id.as_deref().filter(|_| is_instance),
                instance_url: item.instance_url.as_deref().filter(|_| is_instance),
            })
            .collect(),
    };
    serde_json::to_vec(&body)
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
        let detail = match (&error_code, &error_msg) {
            (Some(code), Some(msg)) => format!(": {code}: {msg}"),
            (Some(text), None) | (None, Some(text)) => format!(": {text}"),
            (None, None) => String::new(),
        };
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
pub(crate) fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
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
pub(crate) fn describe_transport_error(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Where a JSON document went wrong, without serde's excerpt of the input
/// (which could quote a credential).
pub(crate) fn describe_json_error(error: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        error.classify(),
        error.line(),
        error.column()
    )
}

fn auth_name(kind: HssAuthKind) -> &'static str {
    match kind {
        HssAuthKind::Aksk => "aksk",
        HssAuthKind::Token => "token",
        HssAuthKind::Metadata => "metadata",
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
    partition: &Partition,
    images: usize,
    auth: &str,
    outcome: &ScanOutcome,
    duration_ms: u64,
) {
    let partition = partition.key();
    let outcome_kind = outcome_name(outcome);
    match outcome {
        ScanOutcome::Accepted { status, request_id } => tracing::info!(
            %partition,
            images,
            auth,
            status,
            hss_request_id = request_id.as_deref(),
            duration_ms,
            outcome = outcome_kind,
            "HSS batch-scan call"
        ),
        ScanOutcome::Retryable {
            status,
            reason,
            retry_after,
            request_id,
        } => tracing::warn!(
            %partition,
            images,
            auth,
            status,
            hss_request_id = request_id.as_deref(),
            duration_ms,
            outcome = outcome_kind,
            retry_after_s = retry_after.map(|d| d.as_secs()),
            %reason,
            "HSS batch-scan call"
        ),
        ScanOutcome::Permanent {
            status,
            error_code,
            error_msg,
            request_id,
        } => tracing::warn!(
            %partition,
            images,
            auth,
            status,
            hss_request_id = request_id.as_deref(),
            duration_ms,
            outcome = outcome_kind,
            error_code = error_code.as_deref(),
            %error_msg,
            "HSS batch-scan call"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ImageRef;
    use crate::hss::credentials::{AccessKey, ManualClock};
    use crate::secret::Secret;

    fn partition(image_type: ImageType) -> Partition {
        Partition {
            image_type,
            instance_id: Some("4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6".into()),
            enterprise_project_id: None,
        }
    }

    fn image(namespace: &str, name: &str, tag: &str, url: Option<&str>) -> BatchImage {
        BatchImage {
            image: ImageRef::new(namespace, name, tag),
            instance_url: url.map(str::to_string),
            digest: None,
        }
    }

    #[test]
    fn body_matches_the_sdk_bytes_of_the_vectors() {
        let private = batch_scan_body(
            &partition(ImageType::PrivateImage),
            &[image("test", "openjdk", "v8.8", Some("ignored.example"))],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(private).unwrap(),
            r#"{"image_type":"private_image","image_info_list":[{"namespace":"test","image_name":"openjdk","image_version":"v8.8"}]}"#
        );
        let instance = batch_scan_body(
            &partition(ImageType::InstanceImage),
            &[image(
                "team-a",
                "svc/api",
                "1.2.3",
                Some("ee-demo.swr.cn-north-4.myhuaweicloud.com"),
            )],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(instance).unwrap(),
            r#"{"image_type":"instance_image","image_info_list":[{"namespace":"team-a","image_name":"svc/api","image_version":"1.2.3","instance_id":"4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6","instance_url":"ee-demo.swr.cn-north-4.myhuaweicloud.com"}]}"#
        );
    }

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
            client.batch_scan_url().as_str(),
            "https://hss.cn-north-4.myhuaweicloud.com/v5/0a1b2c3d4e5f60718293a4b5c6d7e8f9/image/batch-scan"
        );
        let body = batch_scan_body(
            &partition(ImageType::PrivateImage),
            &[image("test", "openjdk", "v8.8", None)],
        )
        .unwrap();
        let headers = client.headers(&key(None), &[], &body).unwrap();
        assert_eq!(
            headers[AUTHORIZATION],
            "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAKID0EXAM, SignedHeaders=content-type;host;x-project-id;x-sdk-date, Signature=c5e86f5d954712a5940460b14bee810500415117f442c407ae7f2a64226b45fa"
        );
        assert_eq!(headers[HOST], "hss.cn-north-4.myhuaweicloud.com");
        assert!(headers[AUTHORIZATION].is_sensitive());
        assert!(!headers[HOST].is_sensitive());

        let body = batch_scan_body(
            &partition(ImageType::InstanceImage),
            &[image(
                "team-a",
                "svc/api",
                "1.2.3",
                Some("ee-demo.swr.cn-north-4.myhuaweicloud.com"),
            )],
        )
        .unwrap();
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
            client.batch_scan_url().as_str(),
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
