//! `spawn_app` and what tests need to talk to it: a base configuration with
//! one source per format and scheme, signing helpers written independently of
//! the crate's own verifier, and the shared sample payloads.

use std::sync::Arc;

use base64::Engine;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::Notify;

use swr_scan_bridge::config::{RawSettings, Settings};
use swr_scan_bridge::startup::Application;

pub const TOKEN_OLD: &str = "swr-token-old";
pub const TOKEN_NEW: &str = "swr-token-new";
/// The Standard Webhooks worked example's secret, and a second one for rotation.
pub const WHSEC_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const WHSEC_B: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=";
pub const HMAC_SECRET: &str = "registry-hmac-secret";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
pub const AK: &str = "HPUAEXAMPLEAKID0EXAM";
pub const SK: &str = "ExampleSecretKeyDoNotUse0123456789abcdef";
pub const PROJECT_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
pub const INSTANCE_ID: &str = "4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6";

/// Every secret of [`base_config`], as the texts that must never show: each
/// value, and the key material of the whsec secrets without their prefix.
pub fn base_config_secrets() -> Vec<String> {
    let mut all: Vec<String> = [
        TOKEN_OLD,
        TOKEN_NEW,
        WHSEC_A,
        WHSEC_B,
        HMAC_SECRET,
        ADMIN_TOKEN,
        SK,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.push(WHSEC_A.trim_start_matches("whsec_").to_string());
    all.push(WHSEC_B.trim_start_matches("whsec_").to_string());
    all
}

/// A configuration with four sources:
/// - `swr-ee`: harbor payloads, instance images, token scheme (two tokens: rotation);
/// - `harbor-ce`: CloudEvents, private images, standard-webhooks (two secrets);
/// - `registry`: distribution notifications, shared images, hmac-sha256;
/// - `filtered`: harbor, private images, token, include `team-a/**`, exclude `**:*-cache`.
pub fn base_config(hss_endpoint: &str, store_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536
admin_token = "{ADMIN_TOKEN}"
shutdown_grace_ms = 5000
drain_linger_ms = 200
workers = 2

[store]
url = "{store_url}"
pool_size = 4
lease_ms = 30000

[batch]
window_ms = 60000
max_images = 100
retry_base_ms = 100
retry_max_ms = 1000

[hss]
region = "cn-north-4"
endpoint = "{hss_endpoint}"
project_id = "{PROJECT_ID}"
enterprise_project_id = "0"
auth = "aksk"
ak = "{AK}"
sk = "{SK}"
request_timeout_ms = 2000

[[sources]]
name = "swr-ee"
format = "harbor"
image_type = "instance_image"
instance_id = "{INSTANCE_ID}"
[sources.verify]
scheme = "token"
header = "Authorization"
secrets = ["{TOKEN_OLD}", "{TOKEN_NEW}"]

[[sources]]
name = "harbor-ce"
format = "cloudevents"
image_type = "private_image"
[sources.verify]
scheme = "standard-webhooks"
secrets = ["{WHSEC_A}", "{WHSEC_B}"]
tolerance_s = 300

[[sources]]
name = "registry"
format = "distribution"
image_type = "shared_image"
[sources.verify]
scheme = "hmac-sha256"
header = "X-Hub-Signature-256"
secrets = ["{HMAC_SECRET}"]

[[sources]]
name = "filtered"
format = "harbor"
image_type = "private_image"
[sources.verify]
scheme = "token"
secrets = ["{TOKEN_NEW}"]
[sources.filter]
include = ["team-a/**"]
exclude = ["**:*-cache"]
"#
    )
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub stopper: Arc<Notify>,
    pub server: tokio::task::JoinHandle<()>,
    /// Keeps the embedded store's directory alive.
    pub _data_dir: tempfile::TempDir,
}

/// Starts the real application on port 0 with `base_config`, after
/// `customize` changed it as a file would (then it is typed like any config).
pub async fn spawn_app_with(
    hss_endpoint: &str,
    customize: impl FnOnce(&mut RawSettings),
) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let store_url = format!("sqlite://{}/bridge.db", data_dir.path().display());
    let mut raw = RawSettings::from_toml(&base_config(hss_endpoint, &store_url))
        .expect("test config is valid");
    customize(&mut raw);
    let settings = Settings::parse(&raw).expect("customized test config is valid");
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let stopper = app.stopper();
    let server = tokio::spawn(async move {
        app.run_until_stopped().await.expect("app runs");
    });
    TestApp {
        address,
        client: reqwest::Client::new(),
        stopper,
        server,
        _data_dir: data_dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// POSTs `body` as JSON to `/webhooks/{source}` with `headers`.
    pub async fn post_webhook(
        &self,
        source: &str,
        body: &[u8],
        headers: &[(String, String)],
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(&format!("/webhooks/{source}")))
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        request.send().await.expect("request sent")
    }

    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        self.client
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin request")
            .json()
            .await
            .expect("admin json")
    }

    pub async fn pending_count(&self) -> u64 {
        self.admin_get("/admin/pending").await["pending_images"]
            .as_u64()
            .expect("pending_images")
    }
}

pub fn token(value: &str) -> Vec<(String, String)> {
    vec![("Authorization".into(), value.into())]
}

/// Standard Webhooks v1 headers, computed here independently of the crate.
pub fn standard_webhooks(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("whsec base64");
    let mut mac = <hmac::Hmac<Sha256>>::new_from_slice(&key).expect("hmac key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), format!("v1,{signature}")),
    ]
}

/// GitHub-style `sha256=<hex>` of HMAC-SHA256 over the raw body.
pub fn hmac_sha256(secret: &str, body: &[u8]) -> Vec<(String, String)> {
    let mut mac = <hmac::Hmac<Sha256>>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(body);
    vec![(
        "X-Hub-Signature-256".into(),
        format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
    )]
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A sample payload from the shared fixtures.
pub fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/../shared/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// A Harbor PUSH_ARTIFACT payload for one image.
pub fn harbor_push(namespace: &str, name: &str, tag: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": "PUSH_ARTIFACT",
        "occur_at": 1795859400,
        "operator": "ci",
        "event_data": {
            "resources": [{
                "digest": "sha256:9f3d7a2c1b0e4d5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f",
                "tag": tag,
                "resource_url": format!("ee-demo.swr.cn-north-4.myhuaweicloud.com/{namespace}/{name}:{tag}")
            }],
            "repository": {
                "name": name,
                "namespace": namespace,
                "repo_full_name": format!("{namespace}/{name}"),
                "repo_type": "private"
            }
        }
    }))
    .expect("json")
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: std::time::Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

impl TestApp {
    /// Drains the app as SIGTERM would and waits for it to finish.
    pub async fn stop(self) {
        self.stopper.notify_one();
        self.server.await.expect("app task ends cleanly");
    }
}
