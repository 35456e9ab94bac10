//! `POST /webhooks/{source}`: every sample, every scheme, every answer of the contract.

use serde_json::Value;
use wiremock::MockServer;

use crate::common::helpers::*;
use crate::common::ops::quiet_hss;

async fn spawn() -> (TestApp, MockServer) {
    let hss = quiet_hss().await;
    let app = spawn_app_with(&hss.uri(), |_| {}).await;
    (app, hss)
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON answer");
    (status, body)
}

fn assert_error(status: u16, body: &Value, expected_status: u16, expected_code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"], expected_code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error bodies carry a human message: {body}"
    );
}

fn reasons(body: &Value) -> Vec<String> {
    body["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| r["reason"].as_str().expect("reason code").to_string())
        .collect()
}

#[tokio::test]
async fn swr_ee_sample_yields_two_images_of_one_repository() {
    let (app, _hss) = spawn().await;
    let (status, body) = answer(
        app.post_webhook(
            "swr-ee",
            &sample("swr-ee-push-artifact.json"),
            &token(TOKEN_OLD),
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["duplicates"], 0);
    assert_eq!(body["ignored"], 0);

    let pending = app.admin_get("/admin/pending").await;
    let images = pending["images"].as_array().expect("images");
    let mut tags: Vec<&str> = images
        .iter()
        .map(|i| {
            assert_eq!(i["image"]["namespace"], "team-a");
            assert_eq!(i["image"]["name"], "payments/api");
            assert_eq!(i["partition"]["image_type"], "instance_image");
            assert_eq!(i["partition"]["instance_id"], INSTANCE_ID);
            assert_eq!(i["partition"]["enterprise_project_id"], "0");
            assert_eq!(
                i["instance_url"],
                "ee-demo.swr.cn-north-4.myhuaweicloud.com"
            );
            i["image"]["tag"].as_str().expect("tag")
        })
        .collect();
    tags.sort();
    assert_eq!(tags, ["latest", "v1.4.2"]);
}

#[tokio::test]
async fn a_rotated_token_is_accepted_and_a_repush_is_a_duplicate() {
    let (app, _hss) = spawn().await;
    let body = sample("swr-ee-push-artifact.json");
    let (status, first) = answer(app.post_webhook("swr-ee", &body, &token(TOKEN_OLD)).await).await;
    assert_eq!(status, 202);
    assert_eq!(first["accepted"], 2);
    let (status, again) = answer(app.post_webhook("swr-ee", &body, &token(TOKEN_NEW)).await).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["accepted"], 0);
    assert_eq!(again["duplicates"], 2);
    assert_eq!(app.pending_count().await, 2);
}

#[tokio::test]
async fn token_scheme_rejects_wrong_and_missing_tokens() {
    let (app, _hss) = spawn().await;
    let body = sample("swr-ee-push-artifact.json");
    let (status, wrong) = answer(
        app.post_webhook("swr-ee", &body, &token("swr-token-ol"))
            .await,
    )
    .await;
    assert_error(status, &wrong, 401, "bad_token");
    assert!(
        !wrong.to_string().contains(TOKEN_OLD),
        "the answer must not leak the secret"
    );
    let (status, missing) = answer(app.post_webhook("swr-ee", &body, &[]).await).await;
    assert_error(status, &missing, 401, "missing_header");
    assert_eq!(app.pending_count().await, 0);
}

#[tokio::test]
async fn standard_webhooks_accepts_each_rotated_secret_and_answers_replays_as_duplicates() {
    let (app, _hss) = spawn().await;
    let body = sample("harbor-cloudevents-push.json");
    let headers = standard_webhooks(WHSEC_A, "msg_first", now(), &body);
    let (status, first) = answer(app.post_webhook("harbor-ce", &body, &headers).await).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["accepted"], 1);

    // The same delivery again (sender retry): a duplicate, nothing stored.
    let (status, replay) = answer(app.post_webhook("harbor-ce", &body, &headers).await).await;
    assert_eq!(status, 202, "{replay}");
    assert_eq!(replay["accepted"], 0);
    assert_eq!(replay["duplicates"], 1);

    // Signed with the second secret of the rotation set, under a new id.
    let rotated = standard_webhooks(WHSEC_B, "msg_second", now(), &body);
    let (status, second) = answer(app.post_webhook("harbor-ce", &body, &rotated).await).await;
    assert_eq!(status, 202, "{second}");
    assert_eq!(
        second["duplicates"], 1,
        "library/nginx:2.0.1 is already pending"
    );
    assert_eq!(app.pending_count().await, 1);
}

#[tokio::test]
async fn standard_webhooks_finds_the_valid_one_among_several_signatures() {
    let (app, _hss) = spawn().await;
    let body = sample("harbor-cloudevents-push.json");
    let ts = now();
    let good = standard_webhooks(WHSEC_B, "msg_multi", ts, &body);
    let other = standard_webhooks("whsec_b3RoZXI=", "msg_multi", ts, &body);
    let header = format!("{} v2,ignored-version {}", other[2].1, good[2].1);
    let headers = vec![
        good[0].clone(),
        good[1].clone(),
        ("webhook-signature".into(), header),
    ];
    let (status, body) = answer(app.post_webhook("harbor-ce", &body, &headers).await).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn standard_webhooks_rejects_bad_stale_and_future_signatures() {
    let (app, _hss) = spawn().await;
    let body = sample("harbor-cloudevents-push.json");
    let wrong_secret = standard_webhooks("whsec_d3Jvbmc=", "msg_bad", now(), &body);
    let (status, bad) = answer(app.post_webhook("harbor-ce", &body, &wrong_secret).await).await;
    assert_error(status, &bad, 401, "bad_signature");

    let stale = standard_webhooks(WHSEC_A, "msg_stale", now() - 301, &body);
    let (status, old) = answer(app.post_webhook("harbor-ce", &body, &stale).await).await;
    assert_error(status, &old, 401, "stale_timestamp");

    let future = standard_webhooks(WHSEC_A, "msg_future", now() + 301, &body);
    let (status, early) = answer(app.post_webhook("harbor-ce", &body, &future).await).await;
    assert_error(status, &early, 401, "stale_timestamp");

    // A body changed after signing.
    let headers = standard_webhooks(WHSEC_A, "msg_tampered", now(), &body);
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let (status, changed) = answer(app.post_webhook("harbor-ce", &tampered, &headers).await).await;
    assert_error(status, &changed, 401, "bad_signature");

    let (status, missing) = answer(app.post_webhook("harbor-ce", &body, &[]).await).await;
    assert_error(status, &missing, 401, "missing_header");
    assert_eq!(app.pending_count().await, 0);
}

#[tokio::test]
async fn registry_notification_yields_only_the_tagged_push() {
    let (app, _hss) = spawn().await;
    let body = sample("distribution-notification.json");
    let (status, answer_body) = answer(
        app.post_webhook("registry", &body, &hmac_sha256(HMAC_SECRET, &body))
            .await,
    )
    .await;
    assert_eq!(status, 202, "{answer_body}");
    assert_eq!(answer_body["accepted"], 1);
    assert_eq!(answer_body["ignored"], 2);
    let mut why = reasons(&answer_body);
    why.sort();
    assert_eq!(why, ["not_a_push", "push_by_digest"]);
    let pending = app.admin_get("/admin/pending").await;
    let image = &pending["images"][0];
    assert_eq!(image["image"]["namespace"], "team-b");
    assert_eq!(image["image"]["name"], "worker");
    assert_eq!(image["image"]["tag"], "2026.11.28");
    assert_eq!(image["partition"]["image_type"], "shared_image");
}

#[tokio::test]
async fn hmac_scheme_rejects_a_wrong_signature() {
    let (app, _hss) = spawn().await;
    let body = sample("distribution-notification.json");
    let (status, bad) = answer(
        app.post_webhook("registry", &body, &hmac_sha256("not-the-secret", &body))
            .await,
    )
    .await;
    assert_error(status, &bad, 401, "bad_signature");
    let (status, missing) = answer(app.post_webhook("registry", &body, &[]).await).await;
    assert_error(status, &missing, 401, "missing_header");
}

#[tokio::test]
async fn events_that_are_not_tagged_pushes_are_ignored_with_reasons() {
    let (app, _hss) = spawn().await;
    for (file, reason) in [
        ("harbor-push-by-digest.json", "push_by_digest"),
        ("harbor-delete-artifact.json", "not_a_push"),
    ] {
        let (status, body) = answer(
            app.post_webhook("swr-ee", &sample(file), &token(TOKEN_NEW))
                .await,
        )
        .await;
        assert_eq!(status, 202, "{file}: {body}");
        assert_eq!(body["accepted"], 0, "{file}");
        assert_eq!(body["ignored"], 1, "{file}");
        assert_eq!(reasons(&body), [reason], "{file}");
    }
    let (status, body) = answer(
        app.post_webhook(
            "swr-ee",
            &sample("harbor-push-minimal.json"),
            &token(TOKEN_NEW),
        )
        .await,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(app.pending_count().await, 1);
}

#[tokio::test]
async fn filters_decide_with_swr_glob_rules() {
    let (app, _hss) = spawn().await;
    let cases = [
        (harbor_push("team-a", "payments/api", "v1"), 1, None),
        (harbor_push("team-b", "api", "v1"), 0, Some("filtered_out")),
        (
            harbor_push("team-a", "api", "build-cache"),
            0,
            Some("filtered_out"),
        ),
    ];
    for (body, accepted, reason) in cases {
        let (status, answer_body) =
            answer(app.post_webhook("filtered", &body, &token(TOKEN_NEW)).await).await;
        assert_eq!(status, 202, "{answer_body}");
        assert_eq!(answer_body["accepted"], accepted, "{answer_body}");
        if let Some(reason) = reason {
            assert_eq!(reasons(&answer_body), [reason]);
        }
    }
}

#[tokio::test]
async fn malformed_requests_get_precise_errors() {
    let (app, _hss) = spawn().await;
    let auth = token(TOKEN_NEW);

    let (status, body) = answer(app.post_webhook("swr-ee", b"{\"type\": ", &auth).await).await;
    assert_error(status, &body, 400, "malformed_json");

    let (status, body) = answer(app.post_webhook("swr-ee", b"[1, 2, 3]", &auth).await).await;
    assert_error(status, &body, 400, "invalid_payload");

    let (status, body) = answer(app.post_webhook("swr-ee", b"", &auth).await).await;
    assert_error(status, &body, 400, "empty_body");

    let oversized = vec![b' '; 65_537];
    let (status, body) = answer(app.post_webhook("swr-ee", &oversized, &auth).await).await;
    assert_error(status, &body, 413, "payload_too_large");

    let (status, body) = answer(
        app.post_webhook(
            "no-such-source",
            &sample("swr-ee-push-artifact.json"),
            &auth,
        )
        .await,
    )
    .await;
    assert_error(status, &body, 404, "unknown_source");

    let response = app
        .client
        .post(app.url("/webhooks/swr-ee"))
        .header("Content-Type", "text/plain")
        .header("Authorization", TOKEN_NEW)
        .body(sample("swr-ee-push-artifact.json"))
        .send()
        .await
        .expect("sent");
    let (status, body) = answer(response).await;
    assert_error(status, &body, 415, "unsupported_media_type");

    let response = app
        .client
        .post(app.url("/webhooks/swr-ee"))
        .header("Authorization", TOKEN_NEW)
        .body(sample("swr-ee-push-artifact.json"))
        .send()
        .await
        .expect("sent");
    let (status, body) = answer(response).await;
    assert_error(status, &body, 415, "unsupported_media_type");

    assert_eq!(app.pending_count().await, 0, "bad input stores nothing");
}

#[tokio::test]
async fn cloudevents_content_type_is_json_too() {
    let (app, _hss) = spawn().await;
    let body = sample("harbor-cloudevents-push.json");
    let mut request = app
        .client
        .post(app.url("/webhooks/harbor-ce"))
        .header(
            "Content-Type",
            "application/cloudevents+json; charset=utf-8",
        )
        .body(body.clone());
    for (name, value) in standard_webhooks(WHSEC_A, "msg_ce", now(), &body) {
        request = request.header(name, value);
    }
    let (status, body) = answer(request.send().await.expect("sent")).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let (app, _hss) = spawn().await;
    let response = app
        .client
        .post(app.url("/webhooks/swr-ee"))
        .header("Content-Type", "application/json")
        .header("X-Request-Id", "trace-123")
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["x-request-id"], "trace-123");
    let fresh = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        fresh.headers()["x-request-id"].len(),
        36,
        "a UUID when none was given"
    );
}

// ------------------------------------------- verification first, real payloads

/// `(status, error code)` of a POST to `source` with this content type, body and headers.
async fn refusal(
    app: &TestApp,
    source: &str,
    content_type: Option<&str>,
    body: &[u8],
    headers: &[(String, String)],
) -> (u16, String) {
    let mut request = app
        .client
        .post(app.url(&format!("/webhooks/{source}")))
        .body(body.to_vec());
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let (status, body) = answer(request.send().await.expect("sent")).await;
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn a_request_failing_verification_is_answered_401_whatever_its_body_or_type() {
    let (app, _hss) = spawn().await;
    let push = sample("swr-ee-push-artifact.json");
    let oversized = vec![b' '; 65_537];
    let bad_bodies: [(&str, Option<&str>, &[u8]); 5] = [
        ("wrong type", Some("text/plain"), &push),
        ("no type", None, &push),
        ("empty", Some("application/json"), b""),
        ("not JSON", Some("application/json"), b"{\"type\": "),
        ("wrong shape", Some("application/json"), b"[1, 2, 3]"),
    ];
    let forged_standard = {
        let mut headers = standard_webhooks(WHSEC_A, "msg_forged", now(), b"other body");
        headers[2].1 = format!("v1,{}", "A".repeat(43) + "=");
        headers
    };
    let wrong_hmac = vec![(
        "X-Hub-Signature-256".to_string(),
        format!("sha256={}", "0".repeat(64)),
    )];
    let stale_standard = standard_webhooks(WHSEC_A, "msg_stale", now() - 3_600, &push);
    type Headers = Vec<(String, String)>;
    let cases: [(&str, Headers, &str); 7] = [
        ("swr-ee", vec![], "missing_header"),
        ("swr-ee", token("not-the-token"), "bad_token"),
        ("harbor-ce", vec![], "missing_header"),
        ("harbor-ce", stale_standard, "stale_timestamp"),
        ("harbor-ce", forged_standard, "bad_signature"),
        ("registry", vec![], "missing_header"),
        ("registry", wrong_hmac, "bad_signature"),
    ];
    for (source, headers, code) in &cases {
        for (what, content_type, body) in bad_bodies {
            assert_eq!(
                refusal(&app, source, content_type, body, headers).await,
                (401, code.to_string()),
                "{source} {code}, body {what}"
            );
        }
    }
    // Credentials missing, malformed or refused without the body (a token) are
    // judged before the body is read: 401 even for a body over the limit.
    for (source, headers, code) in &cases[..4] {
        assert_eq!(
            refusal(&app, source, Some("application/json"), &oversized, headers).await,
            (401, code.to_string()),
            "{source} {code}, oversized body"
        );
    }
    assert_eq!(
        refusal(&app, "registry", Some("application/json"), &oversized, &[]).await,
        (401, "missing_header".to_string())
    );
    // A well-formed signature can only be checked against the body, which is
    // never read past the limit: 413 (the documented exception).
    assert_eq!(
        refusal(
            &app,
            "registry",
            Some("application/json"),
            &oversized,
            &cases[6].1
        )
        .await,
        (413, "payload_too_large".to_string())
    );
    // Verified requests still get the precise answer for their body.
    assert_eq!(
        refusal(&app, "swr-ee", Some("text/plain"), &push, &token(TOKEN_NEW)).await,
        (415, "unsupported_media_type".to_string())
    );
    assert_eq!(
        refusal(
            &app,
            "swr-ee",
            Some("application/json"),
            b"",
            &token(TOKEN_NEW)
        )
        .await,
        (400, "empty_body".to_string())
    );
    assert_eq!(app.pending_count().await, 0, "nothing refused was stored");
}

#[tokio::test]
async fn harbor_1_push_image_events_are_accepted() {
    let (app, _hss) = spawn().await;
    let body = serde_json::json!({
        "type": "pushImage",
        "occur_at": 1586922308,
        "operator": "admin",
        "event_data": {
            "resources": [{
                "digest": "sha256:457f4aa83fc9a6663ab9d1b0a6e2dce25a12a943ed5bf2c1747c58d48bbb4917",
                "tag": "v1.0.0",
                "resource_url": "harbor.example.internal/team-a/nginx:v1.0.0"
            }],
            "repository": {"date_created": 1586922308, "name": "nginx", "namespace": "team-a",
                           "repo_full_name": "team-a/nginx", "repo_type": "private"}
        }
    })
    .to_string();
    let (status, reply) = answer(
        app.post_webhook("swr-ee", body.as_bytes(), &token(TOKEN_NEW))
            .await,
    )
    .await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["accepted"], 1, "{reply}");
    let pending = app.admin_get("/admin/pending").await;
    assert_eq!(pending["images"][0]["image"]["tag"], "v1.0.0", "{pending}");
    assert_eq!(
        pending["images"][0]["instance_url"], "harbor.example.internal",
        "{pending}"
    );
}

#[tokio::test]
async fn every_resource_of_a_multi_resource_harbor_push_is_stored() {
    let (app, _hss) = spawn().await;
    let body = serde_json::json!({
        "type": "PUSH_ARTIFACT",
        "event_data": {
            "resources": [
                {"tag": "v1", "resource_url": "ee.example/team-a/api:v1"},
                {"tag": "v1-cache", "resource_url": "ee.example/team-a/api:v1-cache"},
                {"tag": "sha256:1111111111111111111111111111111111111111111111111111111111111111"},
                {"tag": "latest", "resource_url": "ee.example/team-a/api:latest"}
            ],
            "repository": {"name": "api", "namespace": "team-a", "repo_full_name": "team-a/api"}
        }
    })
    .to_string();
    let (status, reply) = answer(
        app.post_webhook("swr-ee", body.as_bytes(), &token(TOKEN_NEW))
            .await,
    )
    .await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["accepted"], 3, "{reply}");
    assert_eq!(reasons(&reply), ["push_by_digest"]);
    let pending = app.admin_get("/admin/pending").await;
    let mut tags: Vec<&str> = pending["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["image"]["tag"].as_str().expect("tag"))
        .collect();
    tags.sort();
    assert_eq!(tags, ["latest", "v1", "v1-cache"]);

    // The filter applies to each resource on its own.
    let (status, reply) = answer(
        app.post_webhook("filtered", body.as_bytes(), &token(TOKEN_NEW))
            .await,
    )
    .await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["accepted"], 2, "{reply}");
    let mut reasons = reasons(&reply);
    reasons.sort();
    assert_eq!(reasons, ["filtered_out", "push_by_digest"]);
}

/// A binary-mode CloudEvents push to `harbor-ce`: `ce-*` headers, `data` as
/// the body, signed with standard-webhooks over that body.
fn binary_cloudevent(
    ce_headers: &[(&str, &str)],
    data: &[u8],
    delivery: &str,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = ce_headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    headers.extend(standard_webhooks(WHSEC_A, delivery, now(), data));
    headers
}

const CE_PUSH: [(&str, &str); 4] = [
    ("ce-specversion", "1.0"),
    ("ce-id", "0b6b4a52-36c9-4b5e-a3a2-9d7f0e6c1a11"),
    ("ce-source", "/projects/3/webhook/policies/12"),
    ("ce-type", "harbor.artifact.pushed"),
];

#[tokio::test]
async fn cloudevents_in_binary_content_mode_are_accepted() {
    let (app, _hss) = spawn().await;
    let event: Value =
        serde_json::from_slice(&sample("harbor-cloudevents-push.json")).expect("sample");
    let data = serde_json::to_vec(&event["data"]).expect("data");

    let headers = binary_cloudevent(&CE_PUSH, &data, "msg_binary_1");
    let (status, body) = answer(app.post_webhook("harbor-ce", &data, &headers).await).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    let pending = app.admin_get("/admin/pending").await;
    assert_eq!(pending["images"][0]["image"]["name"], "nginx", "{pending}");
    assert_eq!(pending["images"][0]["image"]["tag"], "2.0.1", "{pending}");

    // Another event type in binary mode is not a push.
    let deleted = [
        CE_PUSH[0],
        CE_PUSH[1],
        CE_PUSH[2],
        ("ce-type", "harbor.artifact.deleted"),
    ];
    let headers = binary_cloudevent(&deleted, &data, "msg_binary_2");
    let (status, body) = answer(app.post_webhook("harbor-ce", &data, &headers).await).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(reasons(&body), ["not_a_push"]);

    // A binary-mode event without its type is refused, naming the header.
    let headers = binary_cloudevent(&CE_PUSH[..3], &data, "msg_binary_3");
    let (status, body) = answer(app.post_webhook("harbor-ce", &data, &headers).await).await;
    assert_error(status, &body, 400, "invalid_payload");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("ce-type")),
        "{body}"
    );
    assert_eq!(app.pending_count().await, 1);
}
