//! The admin API behind its bearer token: listings, dead-letter retry, flush.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::fake_hss::{FakeHss, Reply};
use crate::common::helpers::*;
use crate::common::ops::*;

const ADMIN_ROUTES: [(&str, &str); 5] = [
    ("GET", "/admin/pending"),
    ("GET", "/admin/dead-letters"),
    ("POST", "/admin/dead-letters/1/retry"),
    ("POST", "/admin/dead-letters/not-a-number/retry"),
    ("POST", "/admin/flush"),
];

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
