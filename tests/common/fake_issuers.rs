//! Fake credential issuers for the fake HSS: the ECS/CCE metadata service
//! (temporary AK/SK behind a session token) and IAM (password → token). What
//! they issue is registered with a [`FakeHss`](crate::common::fake_hss::FakeHss) so it
//! accepts exactly that; lifetimes follow a clock the test controls.

// A shared fixture: every test module uses a different part of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use swr_scan_bridge::hss::credentials::WallClock;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::common::fake_hss::HssCredentials;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn after(clock: &dyn WallClock, lifetime: Duration) -> DateTime<Utc> {
    clock.now() + TimeDelta::from_std(lifetime).unwrap()
}

/// Temporary credentials as the metadata service handed them out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedKey {
    pub access: String,
    pub secret: String,
    pub security_token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug)]
struct MetadataState {
    hss: HssCredentials,
    clock: Arc<dyn WallClock>,
    lifetime: Duration,
    sessions: Mutex<Vec<String>>,
    /// Sessions still valid (a restart of the service forgets them).
    live_sessions: Mutex<Vec<String>>,
    keys: Mutex<Vec<IssuedKey>>,
    security_key_script: Mutex<VecDeque<ResponseTemplate>>,
}

/// The ECS/CCE metadata service: `PUT /meta-data/latest/api/token` and
/// `GET /openstack/latest/securitykey` (which needs `X-Metadata-Token`).
pub struct FakeMetadata {
    server: MockServer,
    state: Arc<MetadataState>,
}

impl FakeMetadata {
    /// Each securitykey request issues a new key valid for `lifetime` from
    /// `clock`'s now, and allows it at `hss`.
    pub async fn start(hss: HssCredentials, clock: Arc<dyn WallClock>, lifetime: Duration) -> Self {
        let state = Arc::new(MetadataState {
            hss,
            clock,
            lifetime,
            sessions: Mutex::default(),
            live_sessions: Mutex::default(),
            keys: Mutex::default(),
            security_key_script: Mutex::default(),
        });
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .and(path("/meta-data/latest/api/token"))
            .respond_with(SessionResponder(state.clone()))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/openstack/latest/securitykey"))
            .respond_with(SecurityKeyResponder(state.clone()))
            .mount(&server)
            .await;
        FakeMetadata { server, state }
    }

    /// Base URL for `hss.metadata_url`.
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Session tokens handed out, in order.
    pub fn sessions(&self) -> Vec<String> {
        lock(&self.state.sessions).clone()
    }

    /// Forgets every session token, as a restarted metadata service would.
    pub fn forget_sessions(&self) {
        lock(&self.state.live_sessions).clear();
    }

    /// Keys handed out, in order.
    pub fn issued_keys(&self) -> Vec<IssuedKey> {
        lock(&self.state.keys).clone()
    }

    /// Answers for the next securitykey requests that carry a valid session.
    pub fn script_security_key(&self, replies: Vec<ResponseTemplate>) {
        lock(&self.state.security_key_script).extend(replies);
    }
}

struct SessionResponder(Arc<MetadataState>);

impl Respond for SessionResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !request.headers.contains_key("x-metadata-token-ttl-seconds") {
            return ResponseTemplate::new(400)
                .set_body_string("missing X-Metadata-Token-Ttl-Seconds");
        }
        let mut sessions = lock(&self.0.sessions);
        let session = format!("metadata-session-{}", sessions.len() + 1);
        sessions.push(session.clone());
        lock(&self.0.live_sessions).push(session.clone());
        ResponseTemplate::new(200).set_body_string(session)
    }
}

struct SecurityKeyResponder(Arc<MetadataState>);

impl Respond for SecurityKeyResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let session = request
            .headers
            .get("x-metadata-token")
            .and_then(|value| value.to_str().ok());
        let valid = session.is_some_and(|s| lock(&self.0.live_sessions).iter().any(|l| l == s));
        if !valid {
            return ResponseTemplate::new(401)
                .set_body_string("invalid or missing X-Metadata-Token");
        }
        if let Some(scripted) = lock(&self.0.security_key_script).pop_front() {
            return scripted;
        }
        let mut keys = lock(&self.0.keys);
        let n = keys.len() + 1;
        let key = IssuedKey {
            access: format!("TMPAK{n:015}"),
            secret: format!("temporary-secret-{n}-do-not-log"),
            security_token: format!("gQpzZWN1cml0eS10b2tlbi0{n}+/=="),
            expires_at: after(self.0.clock.as_ref(), self.0.lifetime),
        };
        self.0
            .hss
            .allow_access_key(&key.access, &key.secret, Some(&key.security_token));
        keys.push(key.clone());
        ResponseTemplate::new(200).set_body_json(json!({
            "credential": {
                "access": key.access,
                "secret": key.secret,
                "securitytoken": key.security_token,
                "expires_at": timestamp(key.expires_at),
            }
        }))
    }
}

/// Who may get a token from [`FakeIam`].
#[derive(Debug, Clone)]
pub struct IamUser {
    pub domain_name: String,
    pub user_name: String,
    pub password: String,
    pub project_id: String,
}

#[derive(Debug)]
struct IamState {
    hss: HssCredentials,
    clock: Arc<dyn WallClock>,
    user: IamUser,
    lifetime: Duration,
    register_with_hss: Mutex<bool>,
    tokens: Mutex<Vec<String>>,
    script: Mutex<VecDeque<ResponseTemplate>>,
}

/// IAM's `POST /v3/auth/tokens` for one user, password identity, project scope.
pub struct FakeIam {
    server: MockServer,
    state: Arc<IamState>,
}

impl FakeIam {
    /// Tokens live `lifetime` from `clock`'s now and are allowed at `hss`.
    pub async fn start(
        hss: HssCredentials,
        clock: Arc<dyn WallClock>,
        user: IamUser,
        lifetime: Duration,
    ) -> Self {
        let state = Arc::new(IamState {
            hss,
            clock,
            user,
            lifetime,
            register_with_hss: Mutex::new(true),
            tokens: Mutex::default(),
            script: Mutex::default(),
        });
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v3/auth/tokens"))
            .respond_with(TokenResponder(state.clone()))
            .mount(&server)
            .await;
        FakeIam { server, state }
    }

    /// Base URL for `hss.iam_endpoint`.
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Tokens issued, in order.
    pub fn tokens(&self) -> Vec<String> {
        lock(&self.state.tokens).clone()
    }

    /// When false, new tokens are not allowed at HSS (a token HSS refuses).
    pub fn register_with_hss(&self, register: bool) {
        *lock(&self.state.register_with_hss) = register;
    }

    /// Answers for the next correctly authenticated token requests.
    pub fn script(&self, replies: Vec<ResponseTemplate>) {
        lock(&self.state.script).extend(replies);
    }
}

struct TokenResponder(Arc<IamState>);

impl TokenResponder {
    fn identity_matches(&self, body: &Value) -> bool {
        let user = &self.0.user;
        let auth = &body["auth"];
        let password = &auth["identity"]["password"]["user"];
        auth["identity"]["methods"] == json!(["password"])
            && password["name"] == json!(user.user_name)
            && password["password"] == json!(user.password)
            && password["domain"]["name"] == json!(user.domain_name)
            && auth["scope"]["project"]["id"] == json!(user.project_id)
    }
}

impl Respond for TokenResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        if !self.identity_matches(&body) {
            return ResponseTemplate::new(401).set_body_json(json!({
                "error": {"code": 401, "message": "The username or password is wrong.", "title": "Unauthorized"}
            }));
        }
        if let Some(scripted) = lock(&self.0.script).pop_front() {
            return scripted;
        }
        let mut tokens = lock(&self.0.tokens);
        let token = format!("MIIfaketoken{}-{}", tokens.len() + 1, "x".repeat(64));
        if *lock(&self.0.register_with_hss) {
            self.0.hss.allow_token(&token);
        }
        tokens.push(token.clone());
        let now = self.0.clock.now();
        let expires_at = after(self.0.clock.as_ref(), self.0.lifetime);
        ResponseTemplate::new(201)
            .insert_header("X-Subject-Token", token.as_str())
            .set_body_json(json!({
                "token": {
                    "expires_at": timestamp(expires_at),
                    "issued_at": timestamp(now),
                    "methods": ["password"],
                    "project": {"id": self.0.user.project_id, "name": "cn-north-4"},
                    "user": {"name": self.0.user.user_name}
                }
            }))
    }
}
