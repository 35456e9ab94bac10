//! Exact `/metrics` values after known traffic: webhook outcomes by source
//! and reason, the oldest pending image, HSS calls by status class.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::fake_hss::{FakeHss, Reply};
use crate::common::helpers::*;
use crate::common::ops::*;
use crate::common::prometheus_text::{Labels, Scrape, labels_of};

type Headers = Vec<(String, String)>;

/// The non-zero series of a counter family (a zero counter and a missing one
/// mean the same thing to Prometheus).
fn nonzero_series(scrape: &Scrape, name: &str) -> BTreeMap<Labels, f64> {
    scrape
        .series(&metric_name(name))
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

    let scrape = scrape_metrics(&app).await;
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
                &metric_name("webhooks_total"),
                &[("source", source), ("outcome", outcome), ("reason", "")]
            ),
            0.0
        );
    }
    assert_eq!(scrape.get(&metric_name("images_pending"), &[]), 4.0);
    assert_eq!(scrape.get(&metric_name("batches_in_flight"), &[]), 0.0);
    assert_eq!(scrape.get(&metric_name("dead_letters"), &[]), 0.0);
    // Nothing reached HSS or failed in the store: the series exist (from
    // start-up, for alerts' increase()) and are all 0.
    for family in [
        "hss_requests_total",
        "batches_total",
        "store_errors_total",
        "hss_request_duration_seconds_count",
        "batch_size_images_count",
    ] {
        assert_ne!(
            scrape.series(&metric_name(family)),
            BTreeMap::new(),
            "{family}"
        );
        assert_eq!(nonzero_series(&scrape, family), BTreeMap::new(), "{family}");
    }
    assert_eq!(scrape.get(&metric_name("hss_retries_total"), &[]), 0.0);
    assert_eq!(
        scrape.get(&metric_name("dead_lettered_images_total"), &[]),
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn oldest_pending_age_follows_the_oldest_image() {
    let hss = quiet_hss().await;
    let app = spawn_app_with(&hss.uri(), |_| {}).await;
    let empty = scrape_metrics(&app).await;
    assert_eq!(empty.get(&metric_name("images_pending"), &[]), 0.0);
    assert_eq!(
        empty.get(&metric_name("oldest_pending_age_seconds"), &[]),
        0.0
    );

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
    let scraped = scrape_metrics(&app).await;
    let scrape_end = Instant::now();

    let age = scraped.get(&metric_name("oldest_pending_age_seconds"), &[]);
    let youngest_possible = scrape_start.duration_since(after_push).as_secs() as f64;
    let oldest_possible = scrape_end.duration_since(before_push).as_secs() as f64;
    assert!(
        (youngest_possible..=oldest_possible).contains(&age) && age >= 1.0,
        "age {age} outside [{youngest_possible}, {oldest_possible}]"
    );
    assert_eq!(scraped.get(&metric_name("images_pending"), &[]), 2.0);
    app.stop().await;
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
    let before_retry = scrape_metrics(&app).await;
    assert_eq!(before_retry.get(&metric_name("dead_letters"), &[]), 1.0);
    assert_eq!(
        before_retry.get(&metric_name("dead_lettered_images_total"), &[]),
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

    let scrape = scrape_metrics(&app).await;
    let by_class = |family: &str| {
        scrape
            .series(&metric_name(family))
            .into_iter()
            .filter(|(labels, value)| {
                // Both APIs' series exist from start-up; only batch-scan was called.
                labels["api"] == "batch-scan" || {
                    assert_eq!(*value, 0.0, "{family}: {labels:?}");
                    false
                }
            })
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
        &metric_name("hss_request_duration_seconds_sum"),
        &[("api", "batch-scan"), ("status_class", "error")],
    );
    assert!((0.3..1.0).contains(&timeout_seconds), "{timeout_seconds}");
    assert_eq!(
        scrape.get(
            &metric_name("hss_request_duration_seconds_bucket"),
            &[
                ("api", "batch-scan"),
                ("status_class", "error"),
                ("le", "0.25")
            ]
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
    assert_eq!(scrape.get(&metric_name("hss_retries_total"), &[]), 2.0);
    assert_eq!(
        scrape.get(&metric_name("dead_lettered_images_total"), &[]),
        1.0
    );
    // Batch sizes, per image type, of the batches HSS accepted.
    for (image_type, count, sum) in [
        ("instance_image", 1.0, 2.0),
        ("private_image", 1.0, 1.0),
        ("shared_image", 1.0, 1.0),
    ] {
        let labels = [("image_type", image_type)];
        assert_eq!(
            scrape.get(&metric_name("batch_size_images_count"), &labels),
            count,
            "{image_type}"
        );
        assert_eq!(
            scrape.get(&metric_name("batch_size_images_sum"), &labels),
            sum,
            "{image_type}"
        );
    }
    assert_eq!(
        scrape.get(
            &metric_name("batch_size_images_bucket"),
            &[("image_type", "instance_image"), ("le", "1")]
        ),
        0.0
    );
    assert_eq!(
        scrape.get(
            &metric_name("batch_size_images_bucket"),
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
        assert_eq!(scrape.get(&metric_name(gauge), &[]), 0.0, "{gauge}");
    }
    assert_eq!(
        nonzero_series(&scrape, "store_errors_total"),
        BTreeMap::new()
    );
    assert!(hss.requests_with_bad_signature().is_empty());
    app.stop().await;
}
