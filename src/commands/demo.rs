//! `demo`: the whole flow on one machine with no cloud account. An embedded
//! store in a temp dir, a stand-in HSS and SWR EE that check signatures and
//! bodies, the sample pushes of every supported format (the push by digest
//! resolved to its tags); prints the SWR requests and the HSS requests made, to
//! batch-scan or (`--api scan-tasks`) to its successor.

use std::time::Duration;

use serde_json::Value;

use super::demo_hss::{KnownArtifact, StandInHss};
use crate::config::Settings;
use crate::hss::HssApi;
use crate::intake::verify::sign_headers;
use crate::startup::Application;

const AK: &str = "DEMOACCESSKEY0000000";
const SK: &str = "demo-secret-key-not-for-production";
const ADMIN: &str = "demo-admin-token";
const SWR_TOKEN: &str = "demo-swr-token";
const WHSEC: &str = "whsec_ZGVtby1zdGFuZGFyZC13ZWJob29rcy1zZWNyZXQ=";
const HMAC: &str = "demo-registry-hmac-secret";

/// (source, file name, body): the pushes the demo sends, in order.
/// The manifest `harbor-push-by-digest.json` names, and the tags the stand-in
/// SWR EE reports for it.
const PUSHED_BY_DIGEST: KnownArtifact = KnownArtifact {
    digest: "sha256:1111111111111111111111111111111111111111111111111111111111111111",
    tags: &["8.9", "8-jdk"],
};

const PUSHES: [(&str, &str, &[u8]); 7] = [
    (
        "swr-ee",
        "swr-ee-push-artifact.json",
        include_bytes!("../../fixtures/swr-ee-push-artifact.json"),
    ),
    (
        "swr-ee",
        "swr-ee-push-artifact.json (redelivered)",
        include_bytes!("../../fixtures/swr-ee-push-artifact.json"),
    ),
    (
        "swr-ee",
        "harbor-push-minimal.json",
        include_bytes!("../../fixtures/harbor-push-minimal.json"),
    ),
    (
        "swr-ee",
        "harbor-push-by-digest.json",
        include_bytes!("../../fixtures/harbor-push-by-digest.json"),
    ),
    (
        "swr-ee",
        "harbor-delete-artifact.json",
        include_bytes!("../../fixtures/harbor-delete-artifact.json"),
    ),
    (
        "harbor-ce",
        "harbor-cloudevents-push.json",
        include_bytes!("../../fixtures/harbor-cloudevents-push.json"),
    ),
    (
        "registry",
        "distribution-notification.json",
        include_bytes!("../../fixtures/distribution-notification.json"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo set-up failed: {0}")]
    Setup(String),
    #[error("demo request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("the bridge did not send everything to the stand-in HSS within {0:?}")]
    Timeout(Duration),
    #[error("the stand-in HSS refused a request: {0}")]
    Refused(String),
}

/// The `[hss]` lines that choose the API; scan-tasks narrows the scope to show
/// how classes combine into `scan_scope`.
fn api_settings(api: HssApi) -> String {
    match api {
        HssApi::BatchScan => format!("api = \"{api}\""),
        HssApi::ScanTasks => {
            format!("api = \"{api}\"\nscan_scope = [\"vulnerability\", \"malware\"]")
        }
    }
}

fn config(endpoint: &str, store_url: &str, api: HssApi) -> String {
    let api_settings = api_settings(api);
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_token = "{ADMIN}"
shutdown_grace_ms = 3000
drain_linger_ms = 0
[store]
url = "{store_url}"
[batch]
window_ms = 1000
max_images = 100
[swr]
endpoint = "{endpoint}"
[hss]
region = "cn-north-4"
endpoint = "{endpoint}"
project_id = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
enterprise_project_id = "0"
auth = "aksk"
ak = "{AK}"
sk = "{SK}"
{api_settings}
[[sources]]
name = "swr-ee"
format = "harbor"
image_type = "instance_image"
instance_id = "4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6"
resolve_digests = true
[sources.verify]
scheme = "token"
secrets = ["{SWR_TOKEN}"]
[[sources]]
name = "harbor-ce"
format = "cloudevents"
image_type = "private_image"
[sources.verify]
scheme = "standard-webhooks"
secrets = ["{WHSEC}"]
[[sources]]
name = "registry"
format = "distribution"
image_type = "shared_image"
[sources.verify]
scheme = "hmac-sha256"
secrets = ["{HMAC}"]
[log]
level = "warn"
"#
    )
}

pub async fn run(api: HssApi) -> Result<(), DemoError> {
    let setup = |e: &dyn std::fmt::Display| DemoError::Setup(e.to_string());
    let data = tempfile::tempdir().map_err(|e| setup(&e))?;
    let store_url = format!("sqlite://{}/bridge.db", data.path().display());
    let hss = StandInHss::start(AK, SK, PUSHED_BY_DIGEST).map_err(|e| setup(&e))?;
    let settings =
        Settings::from_toml(&config(&hss.endpoint, &store_url, api)).map_err(|e| setup(&e))?;
    crate::telemetry::init(&settings.log);
    let app = Application::build(settings.clone())
        .await
        .map_err(|e| setup(&e))?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let stopper = app.stopper();
    let server = tokio::spawn(app.run_until_stopped());

    println!("swr-scan-bridge demo");
    println!(
        "  bridge:          {base}  (embedded store in {})",
        data.path().display()
    );
    println!("  stand-in HSS:    {}  (also SWR EE)", hss.endpoint);
    println!("  HSS API:         {api}");
    println!("  batch window:    {} ms\n", settings.batch.window.get());
    println!("1. Sample pushes (POST /webhooks/{{source}}):");
    let client = reqwest::Client::new();
    for (index, (source_name, file, body)) in PUSHES.iter().enumerate() {
        let source = settings
            .source(source_name)
            .ok_or_else(|| DemoError::Setup(format!("no source {source_name}")))?;
        let verify = source
            .webhook()
            .map(|webhook| &webhook.verify)
            .ok_or_else(|| DemoError::Setup(format!("source {source_name} takes no webhooks")))?;
        let now = chrono::Utc::now().timestamp();
        let mut request = client
            .post(format!("{base}/webhooks/{source_name}"))
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        for (name, value) in sign_headers(verify, body, now, &format!("msg_demo_{index}")) {
            request = request.header(name, value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        println!("   {status} {source_name:<9} {file:<42} {answer}");
    }

    println!("\n2. Waiting for the batch window to close...");
    let limit = Duration::from_secs(20);
    let started = tokio::time::Instant::now();
    loop {
        let pending: Value = client
            .get(format!("{base}/admin/pending"))
            .bearer_auth(ADMIN)
            .send()
            .await?
            .json()
            .await?;
        if pending["pending_images"].as_u64() == Some(0)
            && pending["digests_resolving"].as_u64() == Some(0)
            && !hss.received().is_empty()
        {
            break;
        }
        if started.elapsed() > limit {
            return Err(DemoError::Timeout(limit));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let received = hss.received();
    let asked = hss.artifact_requests();
    println!(
        "\n3. SWR EE asked for the tags of the push by digest ({}):",
        asked.len()
    );
    for request in &asked {
        println!(
            "   {} {}  (signature {}) -> tags {:?}",
            request.method,
            request.uri,
            if request.signature_valid {
                "valid"
            } else {
                "INVALID"
            },
            PUSHED_BY_DIGEST.tags
        );
    }

    println!("\n4. {api} requests the bridge made ({}):", received.len());
    for (index, scan) in received.iter().enumerate() {
        println!("\n   --- request {} ---", index + 1);
        println!("   {} {}", scan.method, scan.uri);
        let mut headers = scan.headers.clone();
        headers.sort();
        for (name, value) in &headers {
            if name.starts_with("x-")
                || name == "content-type"
                || name == "authorization"
                || name == "host"
            {
                println!("   {name}: {value}");
            }
        }
        println!(
            "   signature check by the stand-in: {}",
            if scan.signature_valid {
                "valid"
            } else {
                "INVALID"
            }
        );
        if let Some(scope) = scan.body["scan_scope"].as_i64() {
            println!("   scan_scope: {scope:#010x} (the OR of hss.scan_scope's classes)");
        }
        if scan.problems.is_empty() {
            println!("   body check by the stand-in: valid");
        } else {
            println!(
                "   body check by the stand-in: REFUSED: {}",
                scan.problems.join("; ")
            );
        }
        let pretty = serde_json::to_string_pretty(&scan.body).unwrap_or_default();
        for line in pretty.lines() {
            println!("   {line}");
        }
    }

    stopper.notify_one();
    let _ = server.await;
    hss.stop().await;
    if received.iter().any(|scan| !scan.signature_valid)
        || asked.iter().any(|lookup| !lookup.signature_valid)
    {
        return Err(DemoError::Refused(
            "a request carried an invalid signature".into(),
        ));
    }
    if let Some(scan) = received
        .iter()
        .find(|scan| scan.api != api || !scan.problems.is_empty())
    {
        return Err(DemoError::Refused(format!(
            "{} {}: {}",
            scan.method,
            scan.uri,
            if scan.api != api {
                format!("sent to {} instead of {api}", scan.api)
            } else {
                scan.problems.join("; ")
            }
        )));
    }
    println!("\nDone: every acknowledged image reached the stand-in HSS.");
    Ok(())
}
