//! What authenticates an HSS call, by `hss.auth`: a static AK/SK, a temporary
//! AK/SK from the ECS/CCE metadata service, or an IAM token; fetched, cached
//! and renewed before it expires.

use std::fmt;
use std::sync::Arc;
#[cfg(any(test, feature = "test-support"))]
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::errors::{
    HssError, describe_json_error, describe_transport_error, error_detail, parse_error_body,
};
use crate::config::{HssAuth, HssSettings};
use crate::secret::Secret;

/// Temporary AK/SK are replaced when less than this is left of their life.
pub const METADATA_RENEWAL_MARGIN: Duration = Duration::from_secs(40 * 60);
/// IAM tokens live 24 h; one is replaced when less than this is left.
pub const TOKEN_RENEWAL_MARGIN: Duration = Duration::from_secs(60 * 60);
/// Lifetime asked for a metadata session token (the SDKs ask for 6 h).
const METADATA_SESSION_TTL: Duration = Duration::from_secs(6 * 60 * 60);
/// A session token is replaced this long before the metadata service would
/// drop it, so no request races its expiry.
const METADATA_SESSION_MARGIN: Duration = Duration::from_secs(10 * 60);

const METADATA_TOKEN_PATH: &str = "meta-data/latest/api/token";
const METADATA_SECURITY_KEY_PATH: &str = "openstack/latest/securitykey";
const METADATA_TOKEN_HEADER: &str = "X-Metadata-Token";
const METADATA_TOKEN_TTL_HEADER: &str = "X-Metadata-Token-Ttl-Seconds";
const IAM_TOKENS_PATH: &str = "v3/auth/tokens";
const SUBJECT_TOKEN_HEADER: &str = "X-Subject-Token";

/// Wall-clock "now" for expiry decisions and `X-Sdk-Date`. Production uses
/// [`SystemClock`]; tests move a [`ManualClock`] instead of waiting hours.
pub trait WallClock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until told to move.
#[cfg(any(test, feature = "test-support"))]
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

#[cfg(any(test, feature = "test-support"))]
impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

#[cfg(any(test, feature = "test-support"))]
impl WallClock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether a credential expiring at `expires_at` must be replaced at `now`.
pub fn needs_renewal(expires_at: DateTime<Utc>, now: DateTime<Utc>, margin: Duration) -> bool {
    let margin = TimeDelta::from_std(margin).unwrap_or(TimeDelta::MAX);
    expires_at.signed_duration_since(now) < margin
}

/// An AK/SK pair, with the security token that temporary pairs need.
#[derive(Debug, Clone)]
pub struct AccessKey {
    pub access_key: Secret,
    pub secret_key: Secret,
    pub security_token: Option<Secret>,
}

/// How one HSS call authenticates.
#[derive(Debug, Clone)]
pub enum CallCredentials {
    /// Sign with SDK-HMAC-SHA256 (and send `X-Security-Token` when present).
    AccessKey(AccessKey),
    /// Send as `X-Auth-Token`.
    Token(Secret),
}

/// Who issues renewable credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    MetadataService,
    Iam,
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Issuer::MetadataService => "ECS metadata service",
            Issuer::Iam => "IAM",
        })
    }
}

/// Why no credentials could be had. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The network failed on the way to the issuer: try again later.
    #[error("{issuer} unreachable: {reason}")]
    Unreachable { issuer: Issuer, reason: String },
    /// The issuer is throttling or failing (429, 5xx): try again later.
    #[error("{issuer} unavailable (HTTP {status}){detail}")]
    Unavailable {
        issuer: Issuer,
        status: u16,
        detail: String,
    },
    /// The issuer said no (wrong password, no agency bound, …): only a
    /// configuration change helps.
    #[error(
        "{issuer} refused to issue credentials (HTTP {status}){detail}; check the hss settings"
    )]
    Refused {
        issuer: Issuer,
        status: u16,
        detail: String,
    },
    /// The issuer answered 2xx without credentials we can use.
    #[error("{issuer} answered without usable credentials: {reason}")]
    Malformed { issuer: Issuer, reason: String },
}

impl CredentialError {
    /// Whether waiting and trying again can help. An unusable answer counts as
    /// transient: the issuers are managed services, and dead-lettering a batch
    /// over one odd answer would cost more than another attempt.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, CredentialError::Refused { .. })
    }

    fn from_status(issuer: Issuer, status: StatusCode, body: &[u8]) -> Self {
        let (code, message) = parse_error_body(body);
        let detail = error_detail(code.as_deref(), message.as_deref());
        let status_code = status.as_u16();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            CredentialError::Unavailable {
                issuer,
                status: status_code,
                detail,
            }
        } else {
            CredentialError::Refused {
                issuer,
                status: status_code,
                detail,
            }
        }
    }
}

/// Hands out the credentials for each HSS call, from the source `hss.auth` names.
#[derive(Debug)]
pub struct CredentialProvider {
    source: Source,
    clock: Arc<dyn WallClock>,
}

#[derive(Debug)]
enum Source {
    Static(AccessKey),
    Metadata(MetadataIssuer),
    Token(IamIssuer),
}

impl CredentialProvider {
    /// `http` carries the timeout and connection pool the HSS calls use too;
    /// IAM is asked through it.
    pub fn from_settings(
        settings: &HssSettings,
        http: reqwest::Client,
        clock: Arc<dyn WallClock>,
    ) -> Result<Self, HssError> {
        let source = match &settings.auth {
            HssAuth::Aksk {
                ak,
                sk,
                security_token,
            } => Source::Static(AccessKey {
                access_key: ak.clone(),
                secret_key: sk.clone(),
                security_token: security_token.clone(),
            }),
            HssAuth::Metadata { url } => {
                let base = as_base(url.url());
                // The link-local metadata service is never behind the
                // HTTP(S)_PROXY that may route the HSS calls.
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(settings.request_timeout)
                    .build()
                    .map_err(|e| HssError::HttpClient(describe_transport_error(&e)))?;
                Source::Metadata(MetadataIssuer {
                    http,
                    token_url: join(&base, "hss.metadata_url", METADATA_TOKEN_PATH)?,
                    security_key_url: join(&base, "hss.metadata_url", METADATA_SECURITY_KEY_PATH)?,
                    state: tokio::sync::Mutex::new(MetadataState::default()),
                })
            }
            HssAuth::Token {
                iam_endpoint,
                domain_name,
                user_name,
                password,
            } => Source::Token(IamIssuer {
                http,
                tokens_url: join(
                    &as_base(iam_endpoint.url()),
                    "hss.iam_endpoint",
                    IAM_TOKENS_PATH,
                )?,
                domain_name: domain_name.clone(),
                user_name: user_name.clone(),
                password: password.clone(),
                project_id: settings.project_id.clone(),
                cached: tokio::sync::Mutex::new(None),
            }),
        };
        Ok(Self { source, clock })
    }

    /// The `hss.auth` this provider serves, for logs.
    pub fn auth_name(&self) -> &'static str {
        match self.source {
            Source::Static(_) => "aksk",
            Source::Metadata(_) => "metadata",
            Source::Token(_) => "token",
        }
    }

    /// Credentials for the next call: cached ones while they have enough life
    /// left, else fresh ones from the issuer.
    pub async fn current(&self) -> Result<CallCredentials, CredentialError> {
        let now = self.clock.now();
        match &self.source {
            Source::Static(key) => Ok(CallCredentials::AccessKey(key.clone())),
            Source::Metadata(issuer) => issuer.current(now).await.map(CallCredentials::AccessKey),
            Source::Token(issuer) => issuer.current(now).await.map(CallCredentials::Token),
        }
    }

    /// HSS answered 401: forget cached credentials so that the next
    /// [`CredentialProvider::current`] fetches new ones. Returns whether that
    /// can change anything (a static key cannot be renewed).
    pub async fn invalidate(&self) -> bool {
        match &self.source {
            Source::Static(_) => false,
            Source::Metadata(issuer) => {
                issuer.state.lock().await.credentials = None;
                true
            }
            Source::Token(issuer) => {
                *issuer.cached.lock().await = None;
                true
            }
        }
    }
}

/// `url` as a base that `join` appends below: a trailing slash keeps its
/// last path segment instead of replacing it.
fn as_base(url: &Url) -> Url {
    let mut base = url.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base
}

fn join(base: &Url, key: &'static str, path: &str) -> Result<Url, HssError> {
    base.join(path).map_err(|e| HssError::InvalidUrl {
        key,
        value: base.to_string(),
        reason: e.to_string(),
    })
}

#[derive(Debug)]
struct Expiring<T> {
    value: T,
    expires_at: DateTime<Utc>,
}

/// Temporary AK/SK from `GET {metadata_url}/openstack/latest/securitykey`,
/// behind a session token from `PUT {metadata_url}/meta-data/latest/api/token`.
#[derive(Debug)]
struct MetadataIssuer {
    http: reqwest::Client,
    token_url: Url,
    security_key_url: Url,
    // Held across the fetch so concurrent batches wait for one refresh
    // instead of each asking the metadata service.
    state: tokio::sync::Mutex<MetadataState>,
}

#[derive(Debug, Default)]
struct MetadataState {
    session: Option<Expiring<MetadataSession>>,
    credentials: Option<Expiring<AccessKey>>,
}

#[derive(Debug, Clone)]
enum MetadataSession {
    Token(Secret),
    /// The service predates session tokens (404/405 on the PUT): ask without one.
    Unsupported,
}

#[derive(Deserialize)]
struct SecurityKeyDocument {
    credential: SecurityKeyCredential,
}

// Plain strings, not `Secret`: deserializing a `Secret` would follow
// `env:`/`file:` references, which a network answer must never trigger.
#[derive(Deserialize)]
struct SecurityKeyCredential {
    access: String,
    secret: String,
    securitytoken: String,
    expires_at: String,
}

impl MetadataIssuer {
    async fn current(&self, now: DateTime<Utc>) -> Result<AccessKey, CredentialError> {
        let mut state = self.state.lock().await;
        if let Some(cached) = &state.credentials
            && !needs_renewal(cached.expires_at, now, METADATA_RENEWAL_MARGIN)
        {
            return Ok(cached.value.clone());
        }
        let session = self.session(&mut state, now, false).await?;
        let mut response = self.fetch_security_key(&session).await?;
        if response.0 == StatusCode::UNAUTHORIZED && matches!(session, MetadataSession::Token(_)) {
            // The session token may have been dropped early (service restart): one new one.
            let session = self.session(&mut state, now, true).await?;
            response = self.fetch_security_key(&session).await?;
        }
        let (status, body) = response;
        if !status.is_success() {
            return Err(CredentialError::from_status(
                Issuer::MetadataService,
                status,
                &body,
            ));
        }
        let document: SecurityKeyDocument =
            parse_document(Issuer::MetadataService, "securitykey document", &body)?;
        let credential = document.credential;
        let expires_at = parse_expiry(Issuer::MetadataService, &credential.expires_at)?;
        if credential.access.is_empty() || credential.secret.is_empty() {
            return Err(CredentialError::Malformed {
                issuer: Issuer::MetadataService,
                reason: "securitykey document has an empty access or secret".into(),
            });
        }
        let key = AccessKey {
            access_key: Secret::literal(credential.access),
            secret_key: Secret::literal(credential.secret),
            security_token: (!credential.securitytoken.is_empty())
                .then(|| Secret::literal(credential.securitytoken)),
        };
        tracing::info!(
            issuer = %Issuer::MetadataService,
            %expires_at,
            "obtained temporary AK/SK for HSS"
        );
        state.credentials = Some(Expiring {
            value: key.clone(),
            expires_at,
        });
        Ok(key)
    }

    async fn session(
        &self,
        state: &mut MetadataState,
        now: DateTime<Utc>,
        force_new: bool,
    ) -> Result<MetadataSession, CredentialError> {
        if !force_new
            && let Some(session) = &state.session
            && !needs_renewal(session.expires_at, now, METADATA_SESSION_MARGIN)
        {
            return Ok(session.value.clone());
        }
        let request = self.http.put(self.token_url.clone()).header(
            METADATA_TOKEN_TTL_HEADER,
            METADATA_SESSION_TTL.as_secs().to_string(),
        );
        let IssuerAnswer { status, body, .. } = exchange(Issuer::MetadataService, request).await?;
        let session = if status.is_success() {
            let token = String::from_utf8_lossy(&body).trim().to_string();
            if token.is_empty() {
                return Err(CredentialError::Malformed {
                    issuer: Issuer::MetadataService,
                    reason: "empty session token".into(),
                });
            }
            MetadataSession::Token(Secret::literal(token))
        } else if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
            MetadataSession::Unsupported
        } else {
            return Err(CredentialError::from_status(
                Issuer::MetadataService,
                status,
                &body,
            ));
        };
        let lifetime = TimeDelta::from_std(METADATA_SESSION_TTL).unwrap_or(TimeDelta::MAX);
        state.session = Some(Expiring {
            value: session.clone(),
            expires_at: now + lifetime,
        });
        Ok(session)
    }

    async fn fetch_security_key(
        &self,
        session: &MetadataSession,
    ) -> Result<(StatusCode, Vec<u8>), CredentialError> {
        let mut request = self.http.get(self.security_key_url.clone());
        if let MetadataSession::Token(token) = session {
            request = request.header(METADATA_TOKEN_HEADER, token.expose());
        }
        let answer = exchange(Issuer::MetadataService, request).await?;
        Ok((answer.status, answer.body))
    }
}

/// An IAM token from `POST {iam_endpoint}/v3/auth/tokens` (password identity,
/// scoped to the HSS project).
#[derive(Debug)]
struct IamIssuer {
    http: reqwest::Client,
    tokens_url: Url,
    domain_name: String,
    user_name: String,
    password: Secret,
    project_id: String,
    // Held across the fetch: one token request at a time, shared by all waiters.
    cached: tokio::sync::Mutex<Option<Expiring<Secret>>>,
}

#[derive(Deserialize)]
struct TokenDocument {
    token: TokenBody,
}

#[derive(Deserialize)]
struct TokenBody {
    expires_at: String,
}

impl IamIssuer {
    async fn current(&self, now: DateTime<Utc>) -> Result<Secret, CredentialError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref()
            && !needs_renewal(token.expires_at, now, TOKEN_RENEWAL_MARGIN)
        {
            return Ok(token.value.clone());
        }
        let request_body = serde_json::json!({
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": self.user_name,
                            "password": self.password.expose(),
                            "domain": { "name": self.domain_name }
                        }
                    }
                },
                "scope": { "project": { "id": self.project_id } }
            }
        });
        let request = self.http.post(self.tokens_url.clone()).json(&request_body);
        let IssuerAnswer {
            status,
            headers,
            body,
        } = exchange(Issuer::Iam, request).await?;
        let token = headers
            .get(SUBJECT_TOKEN_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        if !status.is_success() {
            return Err(CredentialError::from_status(Issuer::Iam, status, &body));
        }
        let token =
            token
                .filter(|token| !token.is_empty())
                .ok_or_else(|| CredentialError::Malformed {
                    issuer: Issuer::Iam,
                    reason: format!("no {SUBJECT_TOKEN_HEADER} header"),
                })?;
        let document: TokenDocument = parse_document(Issuer::Iam, "token document", &body)?;
        let expires_at = parse_expiry(Issuer::Iam, &document.token.expires_at)?;
        tracing::info!(issuer = %Issuer::Iam, %expires_at, "obtained an IAM token for HSS");
        let token = Secret::literal(token);
        *cached = Some(Expiring {
            value: token.clone(),
            expires_at,
        });
        Ok(token)
    }
}

fn parse_expiry(issuer: Issuer, value: &str) -> Result<DateTime<Utc>, CredentialError> {
    DateTime::parse_from_rfc3339(value)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| CredentialError::Malformed {
            issuer,
            reason: format!("expires_at is not an RFC 3339 time ({e})"),
        })
}

/// An issuer's whole answer.
struct IssuerAnswer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

/// Sends `request` to `issuer` and reads its answer to the end.
async fn exchange(
    issuer: Issuer,
    request: reqwest::RequestBuilder,
) -> Result<IssuerAnswer, CredentialError> {
    let unreachable = |error: reqwest::Error| CredentialError::Unreachable {
        issuer,
        reason: describe_transport_error(&error),
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(unreachable)?;
    Ok(IssuerAnswer {
        status,
        headers,
        body: body.to_vec(),
    })
}

/// `body` as the JSON document `what` of `issuer`.
fn parse_document<T: serde::de::DeserializeOwned>(
    issuer: Issuer,
    what: &str,
    body: &[u8],
) -> Result<T, CredentialError> {
    serde_json::from_slice(body).map_err(|e| CredentialError::Malformed {
        issuer,
        reason: format!("{what}: {}", describe_json_error(&e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn renewal_starts_when_less_than_the_margin_is_left() {
        let expires_at = at("2026-11-28T12:00:00Z");
        let clock = ManualClock::new(at("2026-11-28T11:00:00Z"));
        let renew = || needs_renewal(expires_at, clock.now(), METADATA_RENEWAL_MARGIN);
        assert!(!renew());
        clock.advance(Duration::from_secs(20 * 60));
        assert!(!renew());
        clock.advance(Duration::from_secs(1));
        assert!(renew());
        clock.set(at("2026-11-28T13:00:00Z"));
        assert!(renew());
    }

    #[test]
    fn iam_tokens_are_renewed_an_hour_before_expiry() {
        let issued = at("2026-11-28T09:00:00Z");
        let expires_at = issued + TimeDelta::hours(24);
        let clock = ManualClock::new(issued);
        let renew = || needs_renewal(expires_at, clock.now(), TOKEN_RENEWAL_MARGIN);
        assert!(!renew());
        clock.advance(Duration::from_secs(23 * 3600));
        assert!(!renew());
        clock.advance(Duration::from_secs(1));
        assert!(renew());
    }

    #[test]
    fn issuer_statuses_split_into_refused_and_unavailable() {
        let refused = CredentialError::from_status(
            Issuer::Iam,
            StatusCode::UNAUTHORIZED,
            br#"{"error":{"code":401,"message":"The username or password is wrong.","title":"Unauthorized"}}"#,
        );
        assert_eq!(
            refused,
            CredentialError::Refused {
                issuer: Issuer::Iam,
                status: 401,
                detail: ": 401: The username or password is wrong.".into()
            }
        );
        assert!(!refused.is_retryable());
        for status in [429, 500, 503] {
            let error = CredentialError::from_status(
                Issuer::MetadataService,
                StatusCode::from_u16(status).unwrap(),
                b"",
            );
            assert_eq!(
                error,
                CredentialError::Unavailable {
                    issuer: Issuer::MetadataService,
                    status,
                    detail: String::new()
                }
            );
            assert!(error.is_retryable());
        }
    }

    #[test]
    fn expiry_times_with_fractions_parse() {
        assert_eq!(
            parse_expiry(Issuer::Iam, "2026-11-29T09:30:15.123000Z").unwrap(),
            at("2026-11-29T09:30:15.123Z")
        );
        assert!(matches!(
            parse_expiry(Issuer::MetadataService, "tomorrow"),
            Err(CredentialError::Malformed { .. })
        ));
    }

    #[test]
    fn base_urls_keep_their_path_prefix() {
        let base = as_base(&Url::parse("http://127.0.0.1:9/prefix").unwrap());
        assert_eq!(
            join(&base, "k", METADATA_SECURITY_KEY_PATH)
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9/prefix/openstack/latest/securitykey"
        );
        let error = crate::config::Settings::from_toml(
            "[hss]\nregion = \"cn-north-4\"\nproject_id = \"p\"\nauth = \"token\"\n\
             iam_endpoint = \"ftp://iam\"\ndomain_name = \"d\"\nuser_name = \"u\"\npassword = \"pw\"",
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("config key `hss.iam_endpoint`"),
            "{error}"
        );
    }
}
