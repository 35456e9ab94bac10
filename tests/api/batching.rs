//! Intake → store → batcher → HSS, end to end against the fake HSS: windows,
//! size limits, partitions, retries, dead letters, re-pushes in flight.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;

use crate::common::fake_hss::{FakeHss, Reply};
use crate::common::helpers::*;

async fn hss() -> FakeHss {
    FakeHss::start(AK, SK).await
}

async fn push_tags(app: &TestApp, name: &str, tags: impl IntoIterator<Item = String>) {
    let pushes = tags.into_iter().map(|tag| {
        let body = harbor_push("team-a", name, &tag);
        async move {
            let response = app.post_webhook("swr-ee", &body, &token(TOKEN_NEW)).await;
            assert_eq!(response.status(), 202, "push {tag}");
        }
    });
    join_all(pushes).await;
}

fn tags_of(batch: &Value) -> Vec<String> {
    batch["image_info_list"]
        .as_array()
        .expect("image_info_list")
        .iter()
        .map(|item| {
            item["image_version"]
                .as_str()
                .expect("image_version")
                .to_string()
        })
        .collect()
}

fn assert_no_repeats(batch: &Value) {
    let tags = tags_of(batch);
    let distinct: BTreeSet<&String> = tags.iter().collect();
    assert_eq!(distinct.len(), tags.len(), "an image twice in one request");
}

async fn settled(app: &TestApp, hss: &FakeHss, batches: usize) {
    wait_until(Duration::from_secs(15), "batches delivered", || async {
        hss.received_batches().len() >= batches && app.pending_count().await == 0
    })
    .await;
}

#[tokio::test]
async fn fifty_pushes_in_one_window_leave_as_one_request() {
    let hss = hss().await;
    let app = spawn_app_with(&hss.uri(), |s| s.batch.window_ms = 3_000).await;
    push_tags(&app, "api", (0..50).map(|i| format!("v{i}"))).await;
    settled(&app, &hss, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let batches = hss.received_batches();
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(tags_of(&batches[0]).len(), 50);
    assert_no_repeats(&batches[0]);
    assert_eq!(batches[0]["image_type"], "instance_image");
    let item = &batches[0]["image_info_list"][0];
    assert_eq!(item["namespace"], "team-a");
    assert_eq!(item["image_name"], "api");
    assert_eq!(item["instance_id"], INSTANCE_ID);
    assert_eq!(
        item["instance_url"],
        "ee-demo.swr.cn-north-4.myhuaweicloud.com"
    );
    assert!(hss.requests_with_bad_signature().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn two_hundred_fifty_pushes_with_max_one_hundred_make_three_requests() {
    let hss = hss().await;
    let app = spawn_app_with(&hss.uri(), |s| {
        // Wide enough that all 250 pushes land in one window even on a busy machine.
        s.batch.window_ms = 5_000;
        s.batch.max_images = 100;
    })
    .await;
    push_tags(&app, "api", (0..250).map(|i| format!("v{i}"))).await;
    settled(&app, &hss, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let batches = hss.received_batches();
    let mut sizes: Vec<usize> = batches.iter().map(|b| tags_of(b).len()).collect();
    sizes.sort();
    assert_eq!(sizes, [50, 100, 100]);
    let all: BTreeSet<String> = batches.iter().flat_map(tags_of).collect();
    assert_eq!(all.len(), 250, "every image exactly once");
    app.stop().await;
}

#[tokio::test]
async fn mixed_partitions_leave_as_one_request_each() {
    let hss = hss().await;
    let app = spawn_app_with(&hss.uri(), |s| s.batch.window_ms = 1_000).await;
    let swr = sample("swr-ee-push-artifact.json");
    let ce = sample("harbor-cloudevents-push.json");
    let registry = sample("distribution-notification.json");
    let minimal = sample("harbor-push-minimal.json");
    let answers = join_all([
        app.post_webhook("swr-ee", &swr, &token(TOKEN_OLD)),
        app.post_webhook("swr-ee", &minimal, &token(TOKEN_OLD)),
        app.post_webhook(
            "harbor-ce",
            &ce,
            &standard_webhooks(WHSEC_A, "msg_mix", now(), &ce),
        ),
        app.post_webhook("registry", &registry, &hmac_sha256(HMAC_SECRET, &registry)),
    ])
    .await;
    assert!(answers.iter().all(|r| r.status() == 202));
    settled(&app, &hss, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let batches = hss.received_batches();
    assert_eq!(batches.len(), 3);
    let mut by_type: Vec<(String, usize)> = batches
        .iter()
        .map(|b| {
            (
                b["image_type"].as_str().expect("type").to_string(),
                tags_of(b).len(),
            )
        })
        .collect();
    by_type.sort();
    assert_eq!(
        by_type,
        [
            ("instance_image".to_string(), 3),
            ("private_image".to_string(), 1),
            ("shared_image".to_string(), 1)
        ]
    );
    for request in hss.requests() {
        assert_eq!(
            request.query,
            [("enterprise_project_id".to_string(), "0".to_string())]
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn unavailable_twice_then_accepted_delivers_once() {
    let hss = hss().await;
    hss.respond_with_sequence(vec![
        Reply::status(503),
        Reply::status(503),
        Reply::accepted(),
    ]);
    let app = spawn_app_with(&hss.uri(), |s| s.batch.window_ms = 200).await;
    push_tags(&app, "api", ["v1".to_string(), "v2".to_string()]).await;
    settled(&app, &hss, 1).await;
    let statuses: Vec<u16> = hss.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
    let requests = hss.requests();
    assert_eq!(
        requests[0].body, requests[2].body,
        "the same batch is retried"
    );
    for request in &requests {
        assert!(
            matches!(
                request.verdict,
                crate::common::fake_hss::Verdict::Signed { .. }
            ),
            "every attempt is signed: {:?}",
            request.verdict
        );
        assert!(request.header("x-sdk-date").is_some());
    }
    assert!(hss.requests_with_bad_signature().is_empty());
    let dead = app.admin_get("/admin/dead-letters").await;
    assert_eq!(dead["dead_letters"].as_array().map(Vec::len), Some(0));
    app.stop().await;
}

#[tokio::test]
async fn retry_after_from_a_throttling_hss_is_honoured() {
    let hss = hss().await;
    hss.respond_with_sequence(vec![Reply::throttled("2")]);
    let app = spawn_app_with(&hss.uri(), |s| {
        s.batch.window_ms = 200;
        s.batch.retry_base_ms = 10;
        s.batch.retry_max_ms = 50;
    })
    .await;
    push_tags(&app, "api", ["v1".to_string()]).await;
    wait_until(Duration::from_secs(5), "first attempt", || async {
        !hss.requests().is_empty()
    })
    .await;
    // Without Retry-After the backoff (≤ 50 ms) would have retried long before.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        hss.requests().len(),
        1,
        "retried before Retry-After elapsed"
    );
    settled(&app, &hss, 1).await;
    let statuses: Vec<u16> = hss.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);
    app.stop().await;
}

#[tokio::test]
async fn a_permanent_refusal_becomes_a_dead_letter_without_retry() {
    let hss = hss().await;
    hss.respond_with_sequence(vec![Reply::error(
        400,
        "HSS.0004",
        "invalid image_info_list",
    )]);
    let app = spawn_app_with(&hss.uri(), |s| {
        s.batch.window_ms = 200;
        s.batch.retry_base_ms = 10;
        s.batch.retry_max_ms = 50;
    })
    .await;
    push_tags(&app, "api", ["v1".to_string(), "v2".to_string()]).await;
    wait_until(Duration::from_secs(5), "dead letter", || async {
        app.admin_get("/admin/dead-letters").await["dead_letters"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hss.requests().len(),
        1,
        "a permanent failure is not retried"
    );
    let dead = app.admin_get("/admin/dead-letters").await;
    let letter = &dead["dead_letters"][0];
    assert_eq!(letter["cause"]["http_status"], 400);
    assert_eq!(letter["cause"]["error_code"], "HSS.0004");
    assert_eq!(letter["cause"]["error_msg"], "invalid image_info_list");
    assert_eq!(letter["cause"]["request_id"], "fake-req-1");
    assert_eq!(letter["images"].as_array().map(Vec::len), Some(2));
    assert_eq!(app.pending_count().await, 0);

    // An operator fixes the cause and retries the dead letter.
    let id = letter["id"].as_i64().expect("id");
    let retried = app
        .client
        .post(app.url(&format!("/admin/dead-letters/{id}/retry")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("retry");
    assert_eq!(retried.status(), 200);
    settled(&app, &hss, 1).await;
    assert_eq!(tags_of(&hss.received_batches()[0]).len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_repush_while_its_batch_is_in_flight_is_scanned_again() {
    let hss = hss().await;
    hss.respond_with_sequence(vec![Reply::accepted().delayed(Duration::from_millis(800))]);
    let app = spawn_app_with(&hss.uri(), |s| s.batch.window_ms = 200).await;
    push_tags(&app, "api", ["v1".to_string()]).await;
    wait_until(Duration::from_secs(5), "first batch in flight", || async {
        !hss.requests().is_empty()
            || app.admin_get("/admin/pending").await["batches_in_flight"] == 1
    })
    .await;
    // Pushed again while HSS is still answering the first request.
    let again = app
        .post_webhook(
            "swr-ee",
            &harbor_push("team-a", "api", "v1"),
            &token(TOKEN_NEW),
        )
        .await;
    let body: Value = again.json().await.expect("json");
    assert_eq!(
        body["accepted"], 1,
        "not a duplicate of an in-flight image: {body}"
    );
    settled(&app, &hss, 2).await;
    let batches = hss.received_batches();
    assert_eq!(batches.len(), 2);
    assert_eq!(tags_of(&batches[0]), ["v1"]);
    assert_eq!(tags_of(&batches[1]), ["v1"]);
    app.stop().await;
}

#[tokio::test]
async fn with_scan_tasks_the_same_batches_go_to_the_successor_api_signed() {
    use swr_scan_bridge::hss::HssApi;

    let hss = hss().await;
    let app = spawn_app_with(&hss.uri(), |s| {
        s.batch.window_ms = 1_000;
        s.hss.api = HssApi::ScanTasks;
        s.hss.scan_scope = serde_json::from_value(serde_json::json!(["baseline"])).unwrap();
    })
    .await;
    let swr = sample("swr-ee-push-artifact.json");
    let registry = sample("distribution-notification.json");
    let answers = join_all([
        app.post_webhook("swr-ee", &swr, &token(TOKEN_OLD)),
        app.post_webhook("registry", &registry, &hmac_sha256(HMAC_SECRET, &registry)),
    ])
    .await;
    assert!(answers.iter().all(|r| r.status() == 202));
    settled(&app, &hss, 2).await;

    let requests = hss.requests();
    assert_eq!(requests.len(), 2, "one request per partition: {requests:?}");
    assert!(hss.requests_with_bad_signature().is_empty());
    let mut registry_types = BTreeSet::new();
    for request in &requests {
        assert_eq!(request.api, crate::common::fake_hss::Api::ScanTasks);
        assert_eq!(request.problems, Vec::<String>::new());
        assert_eq!(request.status, 200);
        assert_eq!(
            request.path,
            format!("/v5/{PROJECT_ID}/image/image-scan/tasks")
        );
        assert_eq!(
            request.query,
            vec![
                ("enterprise_project_id".to_string(), "0".to_string()),
                ("global_image_type".to_string(), "registry".to_string()),
            ]
        );
        let body = request.json();
        assert_eq!(body["scan_scope"], 0x0000_f000);
        let items = body["image_info"].as_array().expect("image_info");
        let registry_type = items[0]["registry_type"].as_str().expect("registry_type");
        registry_types.insert(registry_type.to_string());
        match registry_type {
            "SwrEnterprise" => {
                let mut tags: Vec<&str> = items
                    .iter()
                    .map(|i| i["image_version"].as_str().expect("tag"))
                    .collect();
                tags.sort();
                assert_eq!(tags, ["latest", "v1.4.2"]);
                assert!(items.iter().all(|i| i["instance_id"] == INSTANCE_ID));
            }
            "SwrShared" => {
                assert_eq!(items.len(), 1);
                assert_eq!(items[0]["image_version"], "2026.11.28");
                assert!(items[0].get("instance_id").is_none());
            }
            other => panic!("unexpected registry type {other}"),
        }
    }
    assert_eq!(
        registry_types,
        BTreeSet::from(["SwrEnterprise".to_string(), "SwrShared".to_string()])
    );

    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text");
    let scrape = crate::common::prometheus_text::Scrape::parse(&text).expect("Prometheus text");
    for family in [
        "swr_scan_bridge_hss_requests_total",
        "swr_scan_bridge_hss_request_duration_seconds_count",
    ] {
        assert_eq!(
            scrape.get(family, &[("api", "scan-tasks"), ("status_class", "2xx")]),
            2.0,
            "{family}"
        );
        let nonzero: Vec<_> = scrape
            .series(family)
            .into_iter()
            .filter(|(_, value)| *value != 0.0)
            .collect();
        assert_eq!(nonzero.len(), 1, "{family}: only scan-tasks calls");
    }
    app.stop().await;
}
