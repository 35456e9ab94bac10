//! A stand-in for HSS on wiremock: serves batch-scan and its successor
//! scan-tasks (`CreateManualImageScanTask`), checks each request's
//! SDK-HMAC-SHA256 signature (with its own verifier, independent of the
//! bridge's signer) or IAM token, then its query and body as HSS would
//! (field names and types of the official SDK models), answers from a script,
//! and records what came.
//!
//! ```ignore
//! let hss = FakeHss::start("AK", "SK").await;
//! hss.respond_with_sequence(vec![Reply::status(503), Reply::accepted()]);
//! // … point `hss.endpoint = hss.uri()` at it and run the bridge …
//! assert_eq!(hss.received_batches().len(), 1);
//! assert!(hss.requests_with_bad_signature().is_empty());
//! ```

// A shared fixture: every test module uses a different part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use swr_scan_bridge::commands::hss_rules::{check_batch_scan, check_scan_tasks};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// One scripted answer for [`FakeHss::respond_with_sequence`].
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    template: ResponseTemplate,
}

impl Reply {
    /// What HSS answers when it takes a batch.
    pub fn accepted() -> Reply {
        Reply::status(200).with_json(json!({}))
    }

    /// A bare status, no body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            template: ResponseTemplate::new(status),
        }
    }

    /// An HSS/APIG error body: `{"error_code", "error_msg"}`.
    pub fn error(status: u16, error_code: &str, error_msg: &str) -> Reply {
        Reply::status(status).with_json(json!({"error_code": error_code, "error_msg": error_msg}))
    }

    /// APIG throttling: 429 `APIG.0308` with `Retry-After` (seconds or an HTTP-date).
    pub fn throttled(retry_after: &str) -> Reply {
        Reply::error(429, "APIG.0308", "The request is throttled.")
            .with_header("Retry-After", retry_after)
    }

    pub fn with_header(self, name: &str, value: &str) -> Reply {
        Reply {
            template: self.template.insert_header(name, value),
            ..self
        }
    }

    pub fn with_json(self, body: Value) -> Reply {
        Reply {
            template: self.template.set_body_json(body),
            ..self
        }
    }

    /// Answers only after `delay` (to run into the client's timeout).
    pub fn delayed(self, delay: Duration) -> Reply {
        Reply {
            template: self.template.set_delay(delay),
            ..self
        }
    }

    pub fn status_code(&self) -> u16 {
        self.status
    }

    /// The answer itself, for other fakes that take scripted replies.
    pub fn into_template(self) -> ResponseTemplate {
        self.template
    }
}

/// How the fake judged a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A valid SDK-HMAC-SHA256 signature by this access key.
    Signed { access_key: String },
    /// A known, unrevoked `X-Auth-Token`.
    Token,
    /// Answered 401 for this reason.
    Rejected(String),
}

/// The HSS API a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v5/{project_id}/image/batch-scan`
    BatchScan,
    /// `POST /v5/{project_id}/image/image-scan/tasks`
    ScanTasks,
}

/// One request that reached a scan route.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The `X-Request-Id` the fake answered with: `fake-req-{n}`, n from 1.
    pub request_id: String,
    pub api: Api,
    /// What HSS would refuse in the query or body (answered 400 when
    /// authenticated); empty when it would take the request.
    pub problems: Vec<String>,
    pub path: String,
    /// Decoded query parameters, in the order sent.
    pub query: Vec<(String, String)>,
    /// Header names lower-cased; repeated headers joined with `,`.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub verdict: Verdict,
    pub status: u16,
    /// When the request arrived (before any scripted delay).
    pub received_at: Instant,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The project id from `/v5/{project_id}/image/…`.
    pub fn project_id(&self) -> &str {
        self.path.split('/').nth(2).unwrap_or("")
    }
}

#[derive(Debug, Clone)]
struct AccessKeyEntry {
    secret_key: String,
    security_token: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    access_keys: Mutex<HashMap<String, AccessKeyEntry>>,
    tokens: Mutex<HashSet<String>>,
    script: Mutex<VecDeque<Reply>>,
    /// Answer once the script is used up; `None`: accept.
    fallback: Mutex<Option<Reply>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Which credentials the fake HSS accepts. Fake IAM and metadata services
/// hold one to register what they issue.
#[derive(Debug, Clone)]
pub struct HssCredentials(Arc<State>);

impl HssCredentials {
    /// Accepts nothing until credentials are allowed.
    pub fn none() -> HssCredentials {
        HssCredentials(Arc::default())
    }

    /// Accepts signatures by `access_key`; with a security token, only when
    /// `X-Security-Token` carries it (and is signed).
    pub fn allow_access_key(
        &self,
        access_key: &str,
        secret_key: &str,
        security_token: Option<&str>,
    ) {
        lock(&self.0.access_keys).insert(
            access_key.to_string(),
            AccessKeyEntry {
                secret_key: secret_key.to_string(),
                security_token: security_token.map(str::to_string),
            },
        );
    }

    pub fn revoke_access_key(&self, access_key: &str) {
        lock(&self.0.access_keys).remove(access_key);
    }

    pub fn allow_token(&self, token: &str) {
        lock(&self.0.tokens).insert(token.to_string());
    }

    pub fn revoke_token(&self, token: &str) {
        lock(&self.0.tokens).remove(token);
    }

    /// Judges a request to another Huawei API (the fake SWR) by the same
    /// rules and credentials as the batch-scan requests.
    pub fn judge(&self, request: &Request) -> Verdict {
        judge(&self.0, request)
    }
}

/// The fake HSS. Any project id works; only
/// `POST /v5/{project_id}/image/batch-scan` and
/// `POST /v5/{project_id}/image/image-scan/tasks` are served (anything else: 404).
pub struct FakeHss {
    server: MockServer,
    state: Arc<State>,
}

impl FakeHss {
    /// A fake that accepts requests signed with this AK/SK.
    pub async fn start(access_key: &str, secret_key: &str) -> FakeHss {
        let hss = FakeHss::start_without_credentials().await;
        hss.credentials()
            .allow_access_key(access_key, secret_key, None);
        hss
    }

    /// A fake that accepts nothing until credentials are allowed, e.g. by a
    /// fake IAM or metadata service given [`FakeHss::credentials`].
    pub async fn start_without_credentials() -> FakeHss {
        FakeHss::serve(MockServer::start().await).await
    }

    /// A fake accepting this AK/SK on `listener`: a port the bridge was
    /// already pointed at (an HSS that comes back after refusing connections).
    pub async fn start_on(
        listener: std::net::TcpListener,
        access_key: &str,
        secret_key: &str,
    ) -> FakeHss {
        let server = MockServer::builder().listener(listener).start().await;
        let hss = FakeHss::serve(server).await;
        hss.credentials()
            .allow_access_key(access_key, secret_key, None);
        hss
    }

    async fn serve(server: MockServer) -> FakeHss {
        let state = Arc::new(State::default());
        Mock::given(method("POST"))
            .and(path_regex(r"^/v5/[^/]+/image/batch-scan$"))
            .respond_with(Responder(state.clone(), Api::BatchScan))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path_regex(r"^/v5/[^/]+/image/image-scan/tasks$"))
            .respond_with(Responder(state.clone(), Api::ScanTasks))
            .mount(&server)
            .await;
        FakeHss { server, state }
    }

    /// Base URL for `hss.endpoint`.
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    pub fn credentials(&self) -> HssCredentials {
        HssCredentials(self.state.clone())
    }

    pub fn allow_access_key(
        &self,
        access_key: &str,
        secret_key: &str,
        security_token: Option<&str>,
    ) {
        self.credentials()
            .allow_access_key(access_key, secret_key, security_token);
    }

    pub fn allow_token(&self, token: &str) {
        self.credentials().allow_token(token);
    }

    pub fn revoke_token(&self, token: &str) {
        self.credentials().revoke_token(token);
    }

    pub fn revoke_access_key(&self, access_key: &str) {
        self.credentials().revoke_access_key(access_key);
    }

    /// Answers for the next authenticated requests, in order (appended to
    /// what is still scripted); once used up, every request is accepted.
    /// Requests failing authentication get 401 and use up nothing.
    pub fn respond_with_sequence(&self, replies: Vec<Reply>) {
        lock(&self.state.script).extend(replies);
    }

    /// Answers every authenticated request with `reply` once the script is
    /// used up, until [`FakeHss::answer_accepted`] (an outage of any length).
    pub fn answer_all_with(&self, reply: Reply) {
        *lock(&self.state.fallback) = Some(reply);
    }

    /// Ends [`FakeHss::answer_all_with`]: unscripted requests are accepted again.
    pub fn answer_accepted(&self) {
        *lock(&self.state.fallback) = None;
    }

    /// Bodies of the authenticated requests answered 2xx, in arrival order.
    pub fn received_batches(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| {
                !matches!(r.verdict, Verdict::Rejected(_)) && (200..300).contains(&r.status)
            })
            .map(RecordedRequest::json)
            .collect()
    }

    /// Every request to a scan route, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// Requests answered 401 because their signature or token did not check out.
    pub fn requests_with_bad_signature(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| matches!(r.verdict, Verdict::Rejected(_)))
            .collect()
    }
}

struct Responder(Arc<State>, Api);

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let received_at = Instant::now();
        let api = self.1;
        let verdict = judge(&self.0, request);
        let query = parse_query(request.url.query().unwrap_or(""));
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let problems = match api {
            Api::BatchScan => check_batch_scan(&body),
            Api::ScanTasks => check_scan_tasks(&query, &body),
        };
        let (template, status) = match &verdict {
            Verdict::Rejected(reason) => (
                ResponseTemplate::new(401).set_body_json(json!({
                    "error_code": "APIGW.0301",
                    "error_msg": format!("Incorrect IAM authentication information: {reason}"),
                })),
                401,
            ),
            Verdict::Signed { .. } | Verdict::Token if !problems.is_empty() => (
                ResponseTemplate::new(400).set_body_json(json!({
                    "error_code": "HSS.0001",
                    "error_msg": problems.join("; "),
                })),
                400,
            ),
            Verdict::Signed { .. } | Verdict::Token => {
                let next = lock(&self.0.script).pop_front();
                let reply = next
                    .or_else(|| lock(&self.0.fallback).clone())
                    .unwrap_or_else(|| match api {
                        Api::BatchScan => Reply::accepted(),
                        // CreateManualImageScanTask answers 200 with no body.
                        Api::ScanTasks => Reply::status(200),
                    });
                (reply.template, reply.status)
            }
        };
        let mut requests = lock(&self.0.requests);
        let request_id = format!("fake-req-{}", requests.len() + 1);
        requests.push(RecordedRequest {
            request_id: request_id.clone(),
            api,
            problems,
            path: request.url.path().to_string(),
            query,
            headers: header_map(request),
            body: request.body.clone(),
            verdict,
            status,
            received_at,
        });
        template.insert_header("X-Request-Id", request_id.as_str())
    }
}

fn header_map(request: &Request) -> BTreeMap<String, String> {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &request.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    headers
}

fn judge(state: &State, request: &Request) -> Verdict {
    let headers = header_map(request);
    if let Some(token) = headers.get("x-auth-token") {
        return if lock(&state.tokens).contains(token) {
            Verdict::Token
        } else {
            Verdict::Rejected("unknown or revoked X-Auth-Token".into())
        };
    }
    let Some(authorization) = headers.get("authorization") else {
        return Verdict::Rejected("no Authorization or X-Auth-Token header".into());
    };
    match verify_signature(state, request, &headers, authorization) {
        Ok(access_key) => Verdict::Signed { access_key },
        Err(reason) => Verdict::Rejected(reason),
    }
}

/// The independent verifier: rebuilds the canonical request from what
/// arrived on the wire and recomputes the signature.
fn verify_signature(
    state: &State,
    request: &Request,
    headers: &BTreeMap<String, String>,
    authorization: &str,
) -> Result<String, String> {
    let fields = authorization
        .strip_prefix("SDK-HMAC-SHA256 ")
        .ok_or("Authorization is not SDK-HMAC-SHA256")?;
    let mut access = None;
    let mut signed = None;
    let mut signature = None;
    for field in fields.split(", ") {
        match field.split_once('=') {
            Some(("Access", value)) => access = Some(value),
            Some(("SignedHeaders", value)) => signed = Some(value),
            Some(("Signature", value)) => signature = Some(value),
            _ => return Err(format!("unexpected Authorization field {field:?}")),
        }
    }
    let (Some(access), Some(signed), Some(signature)) = (access, signed, signature) else {
        return Err("Authorization lacks Access, SignedHeaders or Signature".into());
    };
    let entry = lock(&state.access_keys)
        .get(access)
        .cloned()
        .ok_or("unknown access key")?;
    let signed_names: Vec<&str> = signed.split(';').collect();
    for required in ["host", "x-sdk-date"] {
        if !signed_names.contains(&required) {
            return Err(format!("{required} is not signed"));
        }
    }
    let mut sorted = signed_names.clone();
    sorted.sort_unstable();
    if sorted != signed_names {
        return Err("SignedHeaders are not sorted".into());
    }
    if let Some(expected) = &entry.security_token {
        if !signed_names.contains(&"x-security-token") {
            return Err("temporary credentials without a signed X-Security-Token".into());
        }
        if headers.get("x-security-token") != Some(expected) {
            return Err("wrong X-Security-Token".into());
        }
    }
    let sdk_date = headers.get("x-sdk-date").ok_or("no X-Sdk-Date")?;
    if !is_sdk_date(sdk_date) {
        return Err(format!("X-Sdk-Date {sdk_date:?} is not yyyyMMddTHHmmssZ"));
    }

    let mut canonical_headers = String::new();
    for name in &signed_names {
        let value = headers
            .get(*name)
            .ok_or_else(|| format!("signed header {name} was not sent"))?;
        canonical_headers.push_str(&format!("{name}:{}\n", value.trim()));
    }
    let canonical = [
        request.method.as_str().to_string(),
        canonical_path(request.url.path()),
        canonical_query(request.url.query().unwrap_or("")),
        canonical_headers,
        signed.to_string(),
        hex::encode(Sha256::digest(&request.body)),
    ]
    .join("\n");
    let string_to_sign = format!(
        "SDK-HMAC-SHA256\n{sdk_date}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(entry.secret_key.as_bytes())
        .map_err(|_| "unusable secret key".to_string())?;
    mac.update(string_to_sign.as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    if expected == signature {
        Ok(access.to_string())
    } else {
        Err("signature mismatch".into())
    }
}

fn is_sdk_date(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 16
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes[..8]
            .iter()
            .chain(&bytes[9..15])
            .all(u8::is_ascii_digit)
}

fn sdk_escape(raw: &str) -> String {
    let mut out = String::new();
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub fn unescape(escaped: &str) -> String {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (other, _) => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// As APIG's own signers build it: the path decoded as a whole, then split
/// at `/` and each piece escaped. A `%2F` inside a segment (SWR repositories
/// such as `payments/api`) is thus signed as a `/`.
fn canonical_path(path: &str) -> String {
    let mut canonical: String = unescape(path)
        .split('/')
        .map(sdk_escape)
        .collect::<Vec<_>>()
        .join("/");
    if !canonical.ends_with('/') {
        canonical.push('/');
    }
    canonical
}

pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (unescape(key), unescape(value))
        })
        .collect()
}

fn canonical_query(query: &str) -> String {
    let mut pairs = parse_query(query);
    pairs.sort();
    pairs
        .iter()
        .map(|(key, value)| format!("{}={}", sdk_escape(key), sdk_escape(value)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod self_check {
    use super::*;

    /// The verifier itself against the first shared vector: the canonical
    /// pieces it builds agree with what the official SDK produced.
    #[test]
    fn verifier_pieces_agree_with_the_sdk_vector() {
        assert_eq!(
            canonical_path("/v5/0a1b2c3d4e5f60718293a4b5c6d7e8f9/image/batch-scan"),
            "/v5/0a1b2c3d4e5f60718293a4b5c6d7e8f9/image/batch-scan/"
        );
        assert_eq!(
            canonical_query("b=x%20y%2Fz&a=1~2%2A3"),
            "a=1~2%2A3&b=x%20y%2Fz"
        );
        assert!(is_sdk_date("20261128T093015Z"));
        assert!(!is_sdk_date("2026-11-28T09:30:15Z"));
    }

    #[test]
    fn scan_task_checks_take_a_good_body_and_name_each_broken_rule() {
        let registry = vec![("global_image_type".to_string(), "registry".to_string())];
        let item = json!({"namespace": "a", "image_name": "b", "image_version": "c",
                          "registry_type": "SwrShared"});
        let good = json!({"scan_scope": 0x7fff_ffff, "rate_limit": 0, "is_all": false,
                          "image_info": [item]});
        assert_eq!(check_scan_tasks(&registry, &good), Vec::<String>::new());
        let with = |key: &str, value: Value| {
            let mut body = good.clone();
            body[key] = value;
            body
        };
        for (query, body, expected) in [
            (vec![], good.clone(), "global_image_type"),
            (registry.clone(), with("scan_scope", json!(0)), "scan_scope"),
            (
                registry.clone(),
                with("scan_scope", json!("all")),
                "scan_scope",
            ),
            (
                registry.clone(),
                with("rate_limit", json!(-1)),
                "rate_limit",
            ),
            (registry.clone(), with("is_all", json!(true)), "is_all"),
            (
                registry.clone(),
                with("image_info", json!([])),
                "image_info",
            ),
            (
                registry.clone(),
                with("image_info_list", json!([])),
                "unknown field",
            ),
            (
                registry.clone(),
                with(
                    "image_info",
                    json!([{"namespace": "a", "image_name": "b", "image_version": "c", "registry_type": "Harbor"}]),
                ),
                "registry_type",
            ),
            (
                registry.clone(),
                with(
                    "image_info",
                    json!([{"namespace": "a", "image_name": "b", "image_version": "c", "registry_type": "SwrEnterprise"}]),
                ),
                "instance_id is required",
            ),
            (
                registry.clone(),
                with(
                    "image_info",
                    json!([{"namespace": "a", "image_name": "b", "image_version": "c", "registry_type": "SwrPrivate", "instance_url": "x"}]),
                ),
                "only for enterprise",
            ),
            (
                registry.clone(),
                with(
                    "image_info",
                    json!([{"namespace": "a", "image_name": "b", "image_version": "c", "registry_type": "SwrPrivate", "image_digest": "sha256:12"}]),
                ),
                "image_digest",
            ),
        ] {
            let problems = check_scan_tasks(&query, &body);
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
    }

    /// Replays every shared vector, signed by the official SDK, at the fake:
    /// the verifier accepts each as sent, and refuses it once the body changes.
    #[tokio::test]
    async fn verifier_accepts_the_sdk_vectors_and_refuses_tampering() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/vectors/hss-aksk-signing.json"
        ))
        .unwrap();
        let vectors: Value = serde_json::from_str(&text).unwrap();
        let cases = vectors["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 5);
        let hss = FakeHss::start_without_credentials().await;
        let http = reqwest::Client::new();
        for (i, case) in cases.iter().enumerate() {
            let text_of = |key: &str| case[key].as_str().unwrap().to_string();
            let headers = case["headers"].as_object().unwrap();
            let security_token = headers.get("X-Security-Token").and_then(Value::as_str);
            hss.allow_access_key(&text_of("ak"), &text_of("sk"), security_token);
            for (body, expect_accepted) in [(text_of("body"), true), (text_of("body") + " ", false)]
            {
                let mut request = http
                    .post(format!("{}{}", hss.uri(), text_of("uri_as_sent")))
                    .header("Host", text_of("host"))
                    .header("Authorization", text_of("authorization"))
                    .body(body);
                for (name, value) in headers {
                    request = request.header(name.as_str(), value.as_str().unwrap());
                }
                let status = request.send().await.unwrap().status().as_u16();
                // The signature-only vector with an empty body passes the
                // signature check, then HSS's body check (400).
                let expected = match (expect_accepted, text_of("body").is_empty()) {
                    (false, _) => 401,
                    (true, false) => 200,
                    (true, true) => 400,
                };
                assert_eq!(
                    status, expected,
                    "case {i} {:?}, tampered: {}",
                    case["name"], !expect_accepted
                );
            }
        }
        let signed = hss
            .requests()
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::Signed { .. }))
            .count();
        assert_eq!(signed, 5);
        assert_eq!(hss.received_batches().len(), 4);
        assert_eq!(hss.requests_with_bad_signature().len(), 5);
    }
}
