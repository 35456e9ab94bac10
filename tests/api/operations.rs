//! What operators see, in process: exact `/metrics` values after known
//! traffic, `/healthz` and `/readyz` (also while draining and while the store
//! is stuck), and the admin API behind its bearer token.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fake_hss::{FakeHss, Reply};
use crate::helpers::*;
use crate::prometheus_text::{Labels, Scrape, labels_of};

const PREFIX: &str = "swr_scan_bridge_";

type Headers = Vec<(String, String)>;

fn metric(name: &str) -> String {
    format!("{PREFIX}{name}")
}

async fn scrape(app: &TestApp) -> Scrape {
    let response = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("scrape body");
    Scrape::parse(&text).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"))
}

/// The non-zero series of a counter family (a zero counter and a missing one
/// mean the same thing to Prometheus).
fn nonzero_series(scrape: &Scrape, name: &str) -> BTreeMap<Labels, f64> {
    scrape
        .series(&metric(name))
        .into_iter()
        .filter(|(_, value)| *value != 0.0)
        .collect()
}

/// `(source, outcome, reason) → count` as a series map.
fn by_source(expected: &[(&str, &str, &str, f64)]) -> BTreeMap<Labels, f64> {
    expected
        .iter()
        .map(|(source, outcome, reason, value)| {
            (
                labels_of(&[("source", source), ("outcome", outcome), ("reason", reason)]),
                *value,
            )
        })
        .collect()
}

async fn quiet_hss() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

async fn status_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn harbor_resources(resources: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "PUSH_ARTIFACT",
        "occur_at": 1795859400,
        "event_data": {
            "resources": resources,
            "repository": {"name": "api", "namespace": "team-a", "repo_full_name": "team-a/api"}
        }
    }))
    .expect("json")
}

#[tokio::test]
async fn webhook_counters_count_every_outcome_by_source_and_reason() {
    let hss = quiet_hss().await;
    let app = spawn_app_with(&hss.uri(), |_| {}).await;
    let swr = sample("swr-ee-push-artifact.json");
    let ce = sample("harbor-cloudevents-push.json");
    let registry = sample("distribution-notification.json");
    let good = token(TOKEN_OLD);
    let post = |source: &'static str, body: Vec<u8>, headers: Vec<(String, String)>| {
        let app = &app;
        async move { status_of(app.post_webhook(source, &body, &headers).await).await }
    };

    // Accepted, then the same images again: a duplicate.
    assert_eq!(post("swr-ee", swr.clone(), good.clone()).await.0, 202);
    let (status, again) = post("swr-ee", swr.clone(), token(TOKEN_NEW)).await;
    assert_eq!((status, again["duplicates"].as_u64()), (202, Some(2)));
    // Ignored, for one reason each, for two reasons, and for naming nothing.
    let ignored = [
        sample("harbor-delete-artifact.json"),
        sample("harbor-push-by-digest.json"),
        harbor_resources(
            json!([{"digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111"}, {}]),
        ),
        harbor_resources(json!([])),
    ];
    for body in ignored {
        let (status, answer) = post("swr-ee", body, good.clone()).await;
        assert_eq!(
            (status, answer["accepted"].as_u64()),
            (202, Some(0)),
            "{answer}"
        );
    }
    let filtered_out = harbor_push("team-b", "api", "1.0");
    assert_eq!(
        post("filtered", filtered_out, token(TOKEN_NEW)).await.0,
        202
    );
    // Accepted with two ignored events beside the one image.
    let signed = hmac_sha256(HMAC_SECRET, &registry);
    assert_eq!(post("registry", registry.clone(), signed).await.0, 202);
    // A standard-webhooks delivery, then its redelivery: a duplicate.
    let delivery = standard_webhooks(WHSEC_A, "msg_metrics", now(), &ce);
    assert_eq!(post("harbor-ce", ce.clone(), delivery.clone()).await.0, 202);
    let (status, replay) = post("harbor-ce", ce.clone(), delivery).await;
    assert_eq!((status, replay["duplicates"].as_u64()), (202, Some(1)));

    // Rejected, by code.
    let rejected: Vec<(&str, Vec<u8>, Headers, u16, &str)> = vec![
        (
            "swr-ee",
            swr.clone(),
            token("swr-token-wrong"),
            401,
            "bad_token",
        ),
        ("swr-ee", swr.clone(), vec![], 401, "missing_header"),
        (
            "swr-ee",
            b"{not json".to_vec(),
            good.clone(),
            400,
            "malformed_json",
        ),
        (
            "swr-ee",
            br#"{"type": 7}"#.to_vec(),
            good.clone(),
            400,
            "invalid_payload",
        ),
        (
            "swr-ee",
            vec![b' '; 70_000],
            good.clone(),
            413,
            "payload_too_large",
        ),
        (
            "harbor-ce",
            ce.clone(),
            standard_webhooks(WHSEC_A, "msg_old", now() - 600, &ce),
            401,
            "stale_timestamp",
        ),
        (
            "registry",
            registry.clone(),
            hmac_sha256("not-the-secret", &registry),
            401,
            "bad_signature",
        ),
        (
            "no-such-source",
            swr.clone(),
            good.clone(),
            404,
            "unknown_source",
        ),
    ];
    for (source, body, headers, expected_status, code) in rejected {
        let (status, answer) = post(source, body, headers).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (expected_status, Some(code))
        );
    }
    let plain = app
        .client
        .post(app.url("/webhooks/swr-ee"))
        .header("Content-Type", "text/plain")
        .header("Authorization", TOKEN_OLD)
        .body(swr.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(plain.status(), 415);

    let scrape = scrape(&app).await;
    assert_eq!(
        nonzero_series(&scrape, "webhooks_total"),
        by_source(&[
            ("swr-ee", "accepted", "", 1.0),
            ("swr-ee", "duplicate", "", 1.0),
            ("swr-ee", "ignored", "not_a_push", 1.0),
            ("swr-ee", "ignored", "push_by_digest", 1.0),
            ("swr-ee", "ignored", "mixed", 1.0),
            ("swr-ee", "ignored", "no_images", 1.0),
            ("swr-ee", "rejected", "bad_token", 1.0),
            ("swr-ee", "rejected", "missing_header", 1.0),
            ("swr-ee", "rejected", "malformed_json", 1.0),
            ("swr-ee", "rejected", "invalid_payload", 1.0),
            ("swr-ee", "rejected", "payload_too_large", 1.0),
            ("swr-ee", "rejected", "unsupported_media_type", 1.0),
            ("filtered", "ignored", "filtered_out", 1.0),
            ("registry", "accepted", "", 1.0),
            ("registry", "rejected", "bad_signature", 1.0),
            ("harbor-ce", "accepted", "", 1.0),
            ("harbor-ce", "duplicate", "", 1.0),
            ("harbor-ce", "rejected", "stale_timestamp", 1.0),
            ("unknown", "rejected", "unknown_source", 1.0),
        ])
    );
    assert_eq!(
        nonzero_series(&scrape, "images_total"),
        by_source(&[
            ("swr-ee", "accepted", "", 2.0),
            ("swr-ee", "duplicate", "", 2.0),
            ("swr-ee", "ignored", "not_a_push", 1.0),
            ("swr-ee", "ignored", "push_by_digest", 2.0),
            ("swr-ee", "ignored", "untagged", 1.0),
            ("filtered", "ignored", "filtered_out", 1.0),
            ("registry", "accepted", "", 1.0),
            ("registry", "ignored", "not_a_push", 1.0),
            ("registry", "ignored", "push_by_digest", 1.0),
            ("harbor-ce", "accepted", "", 1.0),
            ("harbor-ce", "duplicate", "", 1.0),
        ])
    );
    // Every source's accepted and duplicate counts exist from start-up, at 0 until used.
    for (source, outcome) in [("registry", "duplicate"), ("filtered", "accepted")] {
        assert_eq!(
            scrape.get(
                &metric("webhooks_total"),
                &[("source", source), ("outcome", outcome), ("reason", "")]
            ),
            0.0
        );
    }
    assert_eq!(scrape.get(&metric("images_pending"), &[]), 4.0);
    assert_eq!(scrape.get(&metric("batches_in_flight"), &[]), 0.0);
    assert_eq!(scrape.get(&metric("dead_letters"), &[]), 0.0);
    // Nothing reached HSS or failed in the store: the series exist (from
    // start-up, for alerts' increase()) and are all 0.
    for family in [
        "hss_requests_total",
        "batches_total",
        "store_errors_total",
        "hss_request_duration_seconds_count",
        "batch_size_images_count",
    ] {
        assert_ne!(scrape.series(&metric(family)), BTreeMap::new(), "{family}");
        assert_eq!(nonzero_series(&scrape, family), BTreeMap::new(), "{family}");
    }
    assert_eq!(scrape.get(&metric("hss_retries_total"), &[]), 0.0);
    assert_eq!(scrape.get(&metric("dead_lettered_images_total"), &[]), 0.0);
    app.stop().await;
}

#[tokio::test]
async fn oldest_pending_age_follows_the_oldest_image() {
    let hss = quiet_hss().await;
    let app = spawn_app_with(&hss.uri(), |_| {}).await;
    let empty = scrape(&app).await;
    assert_eq!(empty.get(&metric("images_pending"), &[]), 0.0);
    assert_eq!(empty.get(&metric("oldest_pending_age_seconds"), &[]), 0.0);

    let before_push = Instant::now();
    let response = app
        .post_webhook(
            "swr-ee",
            &harbor_push("team-a", "api", "1"),
            &token(TOKEN_OLD),
        )
        .await;
    assert_eq!(response.status(), 202);
    let after_push = Instant::now();
    // Let the image age past a whole second, then a newer one must not change the age.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let response = app
        .post_webhook(
            "swr-ee",
            &harbor_push("team-a", "api", "2"),
            &token(TOKEN_OLD),
        )
        .await;
    assert_eq!(response.status(), 202);
    let scrape_start = Instant::now();
    let scraped = scrape(&app).await;
    let scrape_end = Instant::now();

    let age = scraped.get(&metric("oldest_pending_age_seconds"), &[]);
    let youngest_possible = scrape_start.duration_since(after_push).as_secs() as f64;
    let oldest_possible = scrape_end.duration_since(before_push).as_secs() as f64;
    assert!(
        (youngest_possible..=oldest_possible).contains(&age) && age >= 1.0,
        "age {age} outside [{youngest_possible}, {oldest_possible}]"
    );
    assert_eq!(scraped.get(&metric("images_pending"), &[]), 2.0);
    app.stop().await;
}

async fn admin_post(app: &TestApp, path: &str) -> (u16, Value) {
    status_of(
        app.client
            .post(app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin post"),
    )
    .await
}

async fn flush(app: &TestApp) -> u64 {
    let (status, body) = admin_post(app, "/admin/flush").await;
    assert_eq!(status, 200, "{body}");
    body["batches_sent"].as_u64().expect("batches_sent")
}

async fn push(app: &TestApp, source: &str, body: &[u8], headers: &[(String, String)]) {
    let response = app.post_webhook(source, body, headers).await;
    assert_eq!(response.status(), 202);
}

async fn wait_for_settled(app: &TestApp, hss: &FakeHss, requests: usize) {
    wait_until(Duration::from_secs(10), "HSS calls settled", || async {
        let stats = app.admin_get("/admin/pending").await;
        hss.requests().len() >= requests
            && stats["pending_images"] == 0
            && stats["batches_in_flight"] == 0
    })
    .await;
}

/// Each HSS outcome once, in a fixed order, so every counter has one exact value:
/// a 503 then success, a 401 (dead letter) then an operator's retry, a
/// timeout then success.
#[tokio::test]
async fn hss_counters_and_histograms_count_every_call_by_status_class() {
    let hss = FakeHss::start(AK, SK).await;
    let app = spawn_app_with(&hss.uri(), |s| s.hss.request_timeout_ms = 300).await;

    // 1. Instance images (2): 503 with Retry-After, then accepted by the run loop.
    hss.respond_with_sequence(vec![Reply::status(503).with_header("Retry-After", "1")]);
    push(
        &app,
        "swr-ee",
        &sample("swr-ee-push-artifact.json"),
        &token(TOKEN_OLD),
    )
    .await;
    assert_eq!(flush(&app).await, 1);
    wait_for_settled(&app, &hss, 2).await;

    // 2. A private image (1): refused with 401, dead-lettered, then retried by an operator.
    hss.respond_with_sequence(vec![Reply::error(
        401,
        "APIGW.0301",
        "Incorrect IAM authentication information",
    )]);
    let ce = sample("harbor-cloudevents-push.json");
    push(
        &app,
        "harbor-ce",
        &ce,
        &standard_webhooks(WHSEC_B, "msg_hss", now(), &ce),
    )
    .await;
    assert_eq!(flush(&app).await, 1);
    let dead = app.admin_get("/admin/dead-letters").await;
    let letters = dead["dead_letters"].as_array().expect("dead_letters");
    assert_eq!(letters.len(), 1, "{dead}");
    let before_retry = scrape(&app).await;
    assert_eq!(before_retry.get(&metric("dead_letters"), &[]), 1.0);
    assert_eq!(
        before_retry.get(&metric("dead_lettered_images_total"), &[]),
        1.0
    );
    let id = letters[0]["id"].as_i64().expect("id");
    let (status, retried) = admin_post(&app, &format!("/admin/dead-letters/{id}/retry")).await;
    assert_eq!(
        (status, retried["requeued"].as_u64()),
        (200, Some(1)),
        "{retried}"
    );
    assert_eq!(flush(&app).await, 1);

    // 3. A shared image (1): HSS answers too late, then accepted.
    hss.respond_with_sequence(vec![
        Reply::accepted().delayed(Duration::from_millis(1_000)),
    ]);
    let registry = sample("distribution-notification.json");
    push(
        &app,
        "registry",
        &registry,
        &hmac_sha256(HMAC_SECRET, &registry),
    )
    .await;
    flush(&app).await;
    wait_for_settled(&app, &hss, 6).await;

    let scrape = scrape(&app).await;
    let by_class = |family: &str| {
        scrape
            .series(&metric(family))
            .into_iter()
            .map(|(labels, value)| (labels["status_class"].clone(), value))
            .collect::<BTreeMap<String, f64>>()
    };
    let expected_calls: BTreeMap<String, f64> = [
        ("2xx", 3.0),
        ("4xx", 1.0),
        ("5xx", 1.0),
        ("error", 1.0),
        ("other", 0.0),
    ]
    .into_iter()
    .map(|(class, n)| (class.to_string(), n))
    .collect();
    assert_eq!(by_class("hss_requests_total"), expected_calls);
    assert_eq!(
        by_class("hss_request_duration_seconds_count"),
        expected_calls
    );
    let timeout_seconds = scrape.get(
        &metric("hss_request_duration_seconds_sum"),
        &[("status_class", "error")],
    );
    assert!((0.3..1.0).contains(&timeout_seconds), "{timeout_seconds}");
    assert_eq!(
        scrape.get(
            &metric("hss_request_duration_seconds_bucket"),
            &[("status_class", "error"), ("le", "0.25")]
        ),
        0.0,
        "a 300 ms timeout is not faster than 250 ms"
    );
    assert_eq!(
        nonzero_series(&scrape, "batches_total"),
        [("accepted", 3.0), ("retry", 2.0), ("dead_letter", 1.0)]
            .into_iter()
            .map(|(outcome, n)| (labels_of(&[("outcome", outcome)]), n))
            .collect()
    );
    assert_eq!(scrape.get(&metric("hss_retries_total"), &[]), 2.0);
    assert_eq!(scrape.get(&metric("dead_lettered_images_total"), &[]), 1.0);
    // Batch sizes, per image type, of the batches HSS accepted.
    for (image_type, count, sum) in [
        ("instance_image", 1.0, 2.0),
        ("private_image", 1.0, 1.0),
        ("shared_image", 1.0, 1.0),
    ] {
        let labels = [("image_type", image_type)];
        assert_eq!(
            scrape.get(&metric("batch_size_images_count"), &labels),
            count,
            "{image_type}"
        );
        assert_eq!(
            scrape.get(&metric("batch_size_images_sum"), &labels),
            sum,
            "{image_type}"
        );
    }
    assert_eq!(
        scrape.get(
            &metric("batch_size_images_bucket"),
            &[("image_type", "instance_image"), ("le", "1")]
        ),
        0.0
    );
    assert_eq!(
        scrape.get(
            &metric("batch_size_images_bucket"),
            &[("image_type", "instance_image"), ("le", "2")]
        ),
        1.0
    );
    for gauge in [
        "images_pending",
        "oldest_pending_age_seconds",
        "batches_in_flight",
        "dead_letters",
    ] {
        assert_eq!(scrape.get(&metric(gauge), &[]), 0.0, "{gauge}");
    }
    assert_eq!(
        nonzero_series(&scrape, "store_errors_total"),
        BTreeMap::new()
    );
    assert!(hss.requests_with_bad_signature().is_empty());
    app.stop().await;
}

fn db_path(app: &TestApp) -> std::path::PathBuf {
    app._data_dir.path().join("bridge.db")
}

/// Another process holding SQLite's write lock stands in for a stuck store:
/// the webhook waits, then gets 503; readiness turns 503 meanwhile; both
/// count as store errors; everything recovers when the lock goes.
#[tokio::test]
async fn a_stuck_store_fails_readiness_and_webhooks_and_counts_store_errors() {
    let hss = quiet_hss().await;
    let app = spawn_app_with(&hss.uri(), |s| s.store.pool_size = 1).await;
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);

    let blocker = rusqlite::Connection::open(db_path(&app)).expect("open db");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");

    // The webhook holds the only pooled connection while it waits for the lock.
    let webhook = {
        let client = app.client.clone();
        let url = app.url("/webhooks/swr-ee");
        tokio::spawn(async move {
            client
                .post(url)
                .header("Content-Type", "application/json")
                .header("Authorization", TOKEN_OLD)
                .body(harbor_push("team-a", "api", "stuck"))
                .send()
                .await
                .expect("webhook answered")
        })
    };
    wait_until(Duration::from_secs(4), "readiness fails", || async {
        let response = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        response.status() == 503
    })
    .await;
    let answer = webhook.await.expect("webhook task");
    assert_eq!(answer.status(), 503);
    assert_eq!(
        answer
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body["error"], "store_unavailable");

    blocker.execute_batch("ROLLBACK").expect("release the lock");
    drop(blocker);
    wait_until(Duration::from_secs(6), "readiness recovers", || async {
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status()
            == 200
    })
    .await;
    push(
        &app,
        "swr-ee",
        &harbor_push("team-a", "api", "after"),
        &token(TOKEN_OLD),
    )
    .await;

    let scrape = scrape(&app).await;
    assert_eq!(
        scrape.get(&metric("store_errors_total"), &[("operation", "enqueue")]),
        1.0
    );
    assert_eq!(
        scrape.get(&metric("store_errors_total"), &[("operation", "ping")]),
        1.0
    );
    // Ready, not ready (the one failed ping), ready again: three changes.
    assert_eq!(scrape.get(&metric("ready"), &[]), 1.0);
    assert_eq!(scrape.get(&metric("readiness_changes_total"), &[]), 3.0);
    assert_eq!(
        scrape.get(
            &metric("webhooks_total"),
            &[
                ("source", "swr-ee"),
                ("outcome", "rejected"),
                ("reason", "store_unavailable")
            ]
        ),
        1.0
    );
    assert_eq!(scrape.get(&metric("images_pending"), &[]), 1.0);
    app.stop().await;
}

#[tokio::test]
async fn health_stays_up_and_readiness_turns_503_at_once_when_draining() {
    let hss = quiet_hss().await;
    let app = spawn_app_with(&hss.uri(), |s| s.server.drain_linger_ms = 3_000).await;
    let (status, health) = status_of(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("healthz"),
    )
    .await;
    assert_eq!((status, health), (200, json!({"status": "ok"})));
    let (status, ready) = status_of(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz"),
    )
    .await;
    assert_eq!(
        (status, ready),
        (200, json!({"status": "ready", "store": "ok"}))
    );

    app.stopper.notify_one();
    let asked = Instant::now();
    wait_until(Duration::from_secs(1), "readiness 503", || async {
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status()
            == 503
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );
    let (status, ready) = status_of(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz"),
    )
    .await;
    assert_eq!((status, ready["status"].as_str()), (503, Some("draining")));
    let (status, health) = status_of(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("healthz"),
    )
    .await;
    assert_eq!((status, health), (200, json!({"status": "ok"})));
    let refused = app
        .post_webhook(
            "swr-ee",
            &harbor_push("team-a", "api", "late"),
            &token(TOKEN_OLD),
        )
        .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "draining");
    app.server.await.expect("drained");
}

const ADMIN_ROUTES: [(&str, &str); 5] = [
    ("GET", "/admin/pending"),
    ("GET", "/admin/dead-letters"),
    ("POST", "/admin/dead-letters/1/retry"),
    ("POST", "/admin/dead-letters/not-a-number/retry"),
    ("POST", "/admin/flush"),
];

async fn admin_call(
    app: &TestApp,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut request = match method {
        "GET" => app.client.get(app.url(path)),
        _ => app.client.post(app.url(path)),
    };
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    request.send().await.expect("admin call")
}

#[tokio::test]
async fn admin_routes_need_the_exact_bearer_token() {
    let hss = quiet_hss().await;
    let app = spawn_app_with(&hss.uri(), |_| {}).await;
    let near_misses = [
        None,
        Some("Bearer".to_string()),
        Some("Bearer ".to_string()),
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("bearer{ADMIN_TOKEN}")),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some(ADMIN_TOKEN.to_string()),
    ];
    for (method, path) in ADMIN_ROUTES {
        for authorization in &near_misses {
            let response = admin_call(&app, method, path, authorization.as_deref()).await;
            assert_eq!(
                response.status(),
                401,
                "{method} {path} with {authorization:?}"
            );
            assert_eq!(
                response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer")
            );
            let text = response.text().await.expect("body");
            assert!(!text.contains(ADMIN_TOKEN), "{text}");
            let body: Value = serde_json::from_str(&text).expect("json");
            assert_eq!(body["error"], "unauthorized");
        }
    }
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let pending = admin_call(&app, "GET", "/admin/pending", Some(&bearer)).await;
    assert_eq!(pending.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn admin_routes_answer_404_when_no_admin_token_is_configured() {
    let hss = quiet_hss().await;
    let app = spawn_app_with(&hss.uri(), |s| s.server.admin_token = None).await;
    for (method, path) in ADMIN_ROUTES {
        for authorization in [None, Some(format!("Bearer {ADMIN_TOKEN}"))] {
            let response = admin_call(&app, method, path, authorization.as_deref()).await;
            assert_eq!(response.status(), 404, "{method} {path}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"], "admin_disabled");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn admin_lists_pending_images_oldest_first_with_a_limit() {
    let hss = quiet_hss().await;
    let app = spawn_app_with(&hss.uri(), |_| {}).await;
    for tag in ["1", "2", "3"] {
        push(
            &app,
            "swr-ee",
            &harbor_push("team-a", "api", tag),
            &token(TOKEN_OLD),
        )
        .await;
    }
    let all = app.admin_get("/admin/pending").await;
    assert_eq!(all["pending_images"], 3);
    assert_eq!(all["batches_in_flight"], 0);
    let tags: Vec<&str> = all["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["image"]["tag"].as_str().expect("tag"))
        .collect();
    assert_eq!(tags, ["1", "2", "3"]);
    let first = &all["images"][0];
    assert_eq!(
        first["image"],
        json!({"namespace": "team-a", "name": "api", "tag": "1"})
    );
    assert_eq!(first["partition"]["image_type"], "instance_image");
    assert_eq!(first["batch_id"], Value::Null);
    assert_eq!(all["oldest_enqueued_at_ms"], first["enqueued_at"]);

    let limited = app.admin_get("/admin/pending?limit=2").await;
    assert_eq!(limited["pending_images"], 3);
    assert_eq!(limited["images"].as_array().map(Vec::len), Some(2));
    app.stop().await;
}

#[tokio::test]
async fn admin_dead_letters_list_their_cause_and_retry_puts_them_back() {
    let hss = FakeHss::start(AK, SK).await;
    hss.respond_with_sequence(vec![Reply::error(403, "HSS.1001", "no permission")]);
    let app = spawn_app_with(&hss.uri(), |_| {}).await;
    push(
        &app,
        "swr-ee",
        &sample("swr-ee-push-artifact.json"),
        &token(TOKEN_OLD),
    )
    .await;
    assert_eq!(flush(&app).await, 1);

    let listed = app.admin_get("/admin/dead-letters").await;
    let letters = listed["dead_letters"].as_array().expect("dead_letters");
    assert_eq!(letters.len(), 1, "{listed}");
    let letter = &letters[0];
    assert_eq!(letter["cause"]["http_status"], 403);
    assert_eq!(letter["cause"]["error_code"], "HSS.1001");
    assert_eq!(letter["cause"]["error_msg"], "no permission");
    assert_eq!(letter["cause"]["request_id"], "fake-req-1");
    assert_eq!(letter["attempts"], 1);
    assert_eq!(letter["partition"]["image_type"], "instance_image");
    let mut tags: Vec<&str> = letter["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["image"]["tag"].as_str().expect("tag"))
        .collect();
    tags.sort();
    assert_eq!(tags, ["latest", "v1.4.2"]);
    assert_eq!(app.pending_count().await, 0);

    for unknown_id in ["999999", "abc", "-1", "99999999999999999999"] {
        let (status, unknown) =
            admin_post(&app, &format!("/admin/dead-letters/{unknown_id}/retry")).await;
        assert_eq!(
            (status, unknown["error"].as_str()),
            (404, Some("not_found")),
            "{unknown_id}"
        );
    }

    let id = letter["id"].as_i64().expect("id");
    let (status, retried) = admin_post(&app, &format!("/admin/dead-letters/{id}/retry")).await;
    assert_eq!(status, 200);
    assert_eq!(
        retried,
        json!({"id": id, "requeued": 2, "already_pending": 0})
    );
    assert_eq!(app.pending_count().await, 2);
    let listed = app.admin_get("/admin/dead-letters").await;
    assert_eq!(listed["dead_letters"], json!([]));
    let (status, again) = admin_post(&app, &format!("/admin/dead-letters/{id}/retry")).await;
    assert_eq!((status, again["error"].as_str()), (404, Some("not_found")));

    assert_eq!(flush(&app).await, 1);
    assert_eq!(app.pending_count().await, 0);
    assert_eq!(hss.received_batches().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn admin_flush_sends_every_pending_image_at_once() {
    let hss = FakeHss::start(AK, SK).await;
    // A window of a minute: nothing would leave on its own during the test.
    let app = spawn_app_with(&hss.uri(), |s| s.batch.max_images = 2).await;
    for tag in ["1", "2", "3", "4", "5"] {
        push(
            &app,
            "swr-ee",
            &harbor_push("team-a", "api", tag),
            &token(TOKEN_OLD),
        )
        .await;
    }
    let ce = sample("harbor-cloudevents-push.json");
    push(
        &app,
        "harbor-ce",
        &ce,
        &standard_webhooks(WHSEC_A, "msg_flush", now(), &ce),
    )
    .await;
    let registry = sample("distribution-notification.json");
    push(
        &app,
        "registry",
        &registry,
        &hmac_sha256(HMAC_SECRET, &registry),
    )
    .await;
    // Full batches of the instance partition (2 + 2) are due by size and may leave
    // before the flush; the flush sends the rest, and returns once all are sent.
    wait_until(Duration::from_secs(5), "full batches sent", || async {
        hss.received_batches().len() == 2 && app.pending_count().await == 3
    })
    .await;

    let sent = flush(&app).await;
    assert_eq!(sent, 3, "one instance image, one private, one shared");
    assert_eq!(app.pending_count().await, 0);
    let batches = hss.received_batches();
    let mut shapes: Vec<(String, usize)> = batches
        .iter()
        .map(|b| {
            (
                b["image_type"].as_str().expect("image_type").to_string(),
                b["image_info_list"].as_array().map(Vec::len).expect("list"),
            )
        })
        .collect();
    shapes.sort();
    assert_eq!(
        shapes,
        [
            ("instance_image".to_string(), 1),
            ("instance_image".to_string(), 2),
            ("instance_image".to_string(), 2),
            ("private_image".to_string(), 1),
            ("shared_image".to_string(), 1),
        ]
    );
    assert_eq!(flush(&app).await, 0, "nothing left to flush");
    app.stop().await;
}
