//! The real binary's logs at trace level: JSON lines, one per webhook and per
//! HSS call, and never a secret.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::fake_hss::{FakeHss, Reply};
use crate::common::helpers::*;
use crate::common::process::{BridgeProcess, process_config, wait_ready};

type Headers = Vec<(String, String)>;

/// Every secret the log test configures, as the bytes that must not show.
fn secret_values() -> Vec<String> {
    let mut values = base_config_secrets();
    values.extend([AK.to_string(), STS.to_string()]);
    values
}

const STS: &str = "sts-temporary-security-token-for-tests";

/// The base test config with every secret behind `env:` or `file:` or a
/// literal, and trace logging.
fn secret_config(hss_endpoint: &str, dir: &Path) -> (String, Vec<(&'static str, String)>) {
    let write = |name: &str, value: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{value}\n")).expect("secret file");
        path.display().to_string()
    };
    let sk_file = write("sk", SK);
    let whsec_file = write("whsec_b", WHSEC_B);
    let config = process_config(hss_endpoint)
        .replace(&format!("ak = \"{AK}\""), "ak = \"env:BRIDGE_TEST_AK\"")
        .replace(
            &format!("sk = \"{SK}\""),
            &format!("sk = \"file:{sk_file}\"\nsecurity_token = \"env:BRIDGE_TEST_STS\""),
        )
        .replace(
            &format!("admin_token = \"{ADMIN_TOKEN}\""),
            "admin_token = \"env:BRIDGE_TEST_ADMIN\"",
        )
        .replace(
            &format!("\"{TOKEN_OLD}\", \"{TOKEN_NEW}\""),
            &format!("\"{TOKEN_OLD}\", \"env:BRIDGE_TEST_TOKEN_NEW\""),
        )
        .replace(
            &format!("\"{WHSEC_A}\", \"{WHSEC_B}\""),
            &format!("\"{WHSEC_A}\", \"file:{whsec_file}\""),
        )
        .replace(
            &format!("[\"{HMAC_SECRET}\"]"),
            "[\"env:BRIDGE_TEST_HMAC\"]",
        )
        + "\n[log]\nlevel = \"trace\"\n";
    for reference in [
        "env:BRIDGE_TEST_AK",
        "file:",
        "env:BRIDGE_TEST_STS",
        "env:BRIDGE_TEST_ADMIN",
        "env:BRIDGE_TEST_TOKEN_NEW",
        "env:BRIDGE_TEST_HMAC",
    ] {
        assert!(config.contains(reference), "{reference} not in the config");
    }
    let env = vec![
        ("BRIDGE_TEST_AK", AK.to_string()),
        ("BRIDGE_TEST_STS", STS.to_string()),
        ("BRIDGE_TEST_ADMIN", ADMIN_TOKEN.to_string()),
        ("BRIDGE_TEST_TOKEN_NEW", TOKEN_NEW.to_string()),
        ("BRIDGE_TEST_HMAC", HMAC_SECRET.to_string()),
        (
            "SWR_SCAN_BRIDGE__SERVER__DRAIN_LINGER_MS",
            "100".to_string(),
        ),
    ];
    (config, env)
}

/// Keeps every HTTP answer (status, headers, body) as text.
#[derive(Default)]
struct Answers(Vec<String>);

impl Answers {
    async fn keep(&mut self, response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let mut text = format!("{status}\n");
        for (name, value) in response.headers() {
            text.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let body = response.text().await.expect("answer body");
        text.push_str(&body);
        self.0.push(text);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_at_trace_level_logs_json_lines_and_never_a_secret() {
    let hss = FakeHss::start_without_credentials().await;
    hss.allow_access_key(AK, SK, Some(STS));
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, env) = secret_config(&hss.uri(), dir.path());
    let mut bridge = BridgeProcess::start_in(dir.path(), &config, &env).await;
    let client = reqwest::Client::new();
    let mut answers = Answers::default();
    wait_ready(&client, &bridge).await;
    for path in ["/healthz", "/readyz"] {
        let (status, _) = answers
            .keep(client.get(bridge.url(path)).send().await.expect("probe"))
            .await;
        assert_eq!(status, 200, "{path}");
    }

    // Webhooks, good and bad, each under a request id of ours.
    let swr = sample("swr-ee-push-artifact.json");
    let ce = sample("harbor-cloudevents-push.json");
    let registry = sample("distribution-notification.json");
    let webhooks: Vec<(&str, &str, Vec<u8>, Headers, u16)> = vec![
        ("it-1", "swr-ee", swr.clone(), token(TOKEN_OLD), 202),
        ("it-2", "swr-ee", swr.clone(), token(TOKEN_NEW), 202),
        ("it-3", "swr-ee", swr.clone(), token("swr-token-wrong"), 401),
        (
            "it-4",
            "harbor-ce",
            ce.clone(),
            standard_webhooks(WHSEC_B, "msg_logs", now(), &ce),
            202,
        ),
        (
            "it-5",
            "harbor-ce",
            ce.clone(),
            standard_webhooks("whsec_d3Jvbmc=", "msg_bad", now(), &ce),
            401,
        ),
        (
            "it-6",
            "registry",
            registry.clone(),
            hmac_sha256(HMAC_SECRET, &registry),
            202,
        ),
        (
            "it-7",
            "registry",
            b"{oops".to_vec(),
            hmac_sha256(HMAC_SECRET, b"{oops"),
            400,
        ),
        ("it-8", "nowhere", swr.clone(), token(TOKEN_OLD), 404),
    ];
    for (request_id, source, body, headers, expected) in &webhooks {
        let mut request = client
            .post(bridge.url(&format!("/webhooks/{source}")))
            .header("Content-Type", "application/json")
            .header("X-Request-Id", *request_id)
            .body(body.clone());
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let (status, body) = answers.keep(request.send().await.expect("webhook")).await;
        assert_eq!(status, *expected, "{request_id}: {body}");
    }

    let admin = |method: reqwest::Method, path: &str, bearer: &str| {
        client
            .request(method, bridge.url(path))
            .bearer_auth(bearer)
            .send()
    };
    // HSS: one 503 (retried), the rest accepted.
    hss.respond_with_sequence(vec![Reply::status(503)]);
    let (status, _) = answers
        .keep(
            admin(reqwest::Method::POST, "/admin/flush", ADMIN_TOKEN)
                .await
                .expect("flush"),
        )
        .await;
    assert_eq!(status, 200);
    wait_until(
        Duration::from_secs(10),
        "first batches accepted",
        || async { hss.received_batches().len() == 3 },
    )
    .await;
    // HSS: 401 for a revoked key: a dead letter; the operator restores the key and retries.
    hss.revoke_access_key(AK);
    let filtered = harbor_push("team-a", "api", "dead");
    let mut request = client
        .post(bridge.url("/webhooks/filtered"))
        .header("Content-Type", "application/json")
        .header("X-Request-Id", "it-9")
        .body(filtered);
    for (name, value) in token(TOKEN_NEW) {
        request = request.header(name, value);
    }
    let (status, _) = answers.keep(request.send().await.expect("webhook")).await;
    assert_eq!(status, 202);
    let (status, _) = answers
        .keep(
            admin(reqwest::Method::POST, "/admin/flush", ADMIN_TOKEN)
                .await
                .expect("flush"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, dead) = answers
        .keep(
            admin(reqwest::Method::GET, "/admin/dead-letters", ADMIN_TOKEN)
                .await
                .expect("dead letters"),
        )
        .await;
    assert_eq!(status, 200);
    let id = dead["dead_letters"][0]["id"]
        .as_i64()
        .expect("a dead letter");
    hss.allow_access_key(AK, SK, Some(STS));
    let (status, _) = answers
        .keep(
            admin(
                reqwest::Method::POST,
                &format!("/admin/dead-letters/{id}/retry"),
                ADMIN_TOKEN,
            )
            .await
            .expect("retry"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, flushed) = answers
        .keep(
            admin(reqwest::Method::POST, "/admin/flush", ADMIN_TOKEN)
                .await
                .expect("flush"),
        )
        .await;
    assert_eq!((status, flushed["batches_sent"].as_u64()), (200, Some(1)));
    let (status, pending) = answers
        .keep(
            admin(reqwest::Method::GET, "/admin/pending", ADMIN_TOKEN)
                .await
                .expect("pending"),
        )
        .await;
    assert_eq!((status, pending["pending_images"].as_u64()), (200, Some(0)));
    let (status, _) = answers
        .keep(
            admin(reqwest::Method::GET, "/admin/pending", "not-the-token")
                .await
                .expect("pending"),
        )
        .await;
    assert_eq!(status, 401);
    let metrics = client
        .get(bridge.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");

    bridge.sigterm();
    let status = bridge.wait(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "stderr: {:?}", bridge.stderr());

    // The secrets were used: each scheme accepted, HSS took signed requests.
    let hss_requests = hss.requests();
    assert_eq!(
        hss_requests.len(),
        6,
        "503, 3 accepted, 401, accepted after the retry"
    );
    assert_eq!(hss.received_batches().len(), 4);
    assert_eq!(
        hss.requests_with_bad_signature().len(),
        1,
        "the revoked key only"
    );
    assert!(
        hss_requests
            .iter()
            .all(|r| r.header("x-security-token") == Some(STS))
    );

    let stdout = bridge.stdout();
    let stderr = bridge.stderr();
    assert!(
        stdout.len() > 100,
        "trace logging wrote only {} lines",
        stdout.len()
    );
    let everything = [
        ("stdout", stdout.join("\n")),
        ("stderr", stderr.join("\n")),
        ("metrics", metrics.clone()),
        ("answers", answers.0.join("\n")),
    ];
    for secret in secret_values() {
        for (place, text) in &everything {
            assert!(!text.contains(&secret), "a secret appears in {place}");
        }
    }

    // Logs are JSON lines.
    let events: Vec<Value> = stdout
        .iter()
        .chain(stderr.iter())
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
        })
        .collect();
    for event in &events {
        assert!(
            event["timestamp"].is_string()
                && event["level"].is_string()
                && event["target"].is_string(),
            "{event}"
        );
    }
    let targets: BTreeSet<&str> = events.iter().filter_map(|e| e["target"].as_str()).collect();
    eprintln!(
        "{} log lines ({} on stderr) from {} targets: {targets:?}",
        events.len(),
        stderr.len(),
        targets.len()
    );
    // One line per webhook, by our request id, with source, outcome and counts.
    let webhook_lines: BTreeMap<String, &Value> = events
        .iter()
        .filter(|e| e["message"] == "webhook")
        .map(|e| (e["request_id"].as_str().expect("request_id").to_string(), e))
        .collect();
    let summary = |id: &str| {
        let e = webhook_lines
            .get(id)
            .unwrap_or_else(|| panic!("no webhook line for {id}"));
        format!(
            "{} {} {} {} {} {}",
            e["source"].as_str().unwrap_or("-"),
            e["outcome"].as_str().unwrap_or("-"),
            e["accepted"],
            e["duplicates"],
            e["ignored"],
            e["code"].as_str().unwrap_or("-"),
        )
    };
    assert_eq!(webhook_lines.len(), 9, "{:?}", webhook_lines.keys());
    assert_eq!(
        events.iter().filter(|e| e["message"] == "webhook").count(),
        9
    );
    for (id, expected) in [
        ("it-1", "swr-ee accepted 2 0 0 -"),
        ("it-2", "swr-ee duplicate 0 2 0 -"),
        ("it-3", "swr-ee rejected null null null bad_token"),
        ("it-4", "harbor-ce accepted 1 0 0 -"),
        ("it-5", "harbor-ce rejected null null null bad_signature"),
        ("it-6", "registry accepted 1 0 2 -"),
        ("it-7", "registry rejected null null null malformed_json"),
        ("it-8", "unknown rejected null null null unknown_source"),
        ("it-9", "filtered accepted 1 0 0 -"),
    ] {
        assert_eq!(summary(id), expected, "{id}");
    }
    // One line per HSS call, with partition, images, status, HSS request id and duration.
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "HSS call")
        .collect();
    assert_eq!(calls.len(), hss_requests.len());
    let mut logged: Vec<(String, u64)> = calls
        .iter()
        .map(|e| {
            assert!(
                e["partition"].as_str().is_some_and(|p| !p.is_empty()),
                "{e}"
            );
            assert!(e["images"].as_u64().is_some_and(|n| n >= 1), "{e}");
            assert!(e["duration_ms"].is_u64(), "{e}");
            (
                e["hss_request_id"]
                    .as_str()
                    .expect("hss_request_id")
                    .to_string(),
                e["status"].as_u64().expect("status"),
            )
        })
        .collect();
    logged.sort();
    let mut expected: Vec<(String, u64)> = hss_requests
        .iter()
        .map(|r| (r.request_id.clone(), u64::from(r.status)))
        .collect();
    expected.sort();
    assert_eq!(logged, expected);
}
