//! Well-formed requests with hostile content: invalid UTF-8, deep nesting,
//! huge arrays, path tricks, secrets in odd encodings.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::common::fake_hss::FakeHss;
use crate::common::helpers::*;
use crate::common::ops::metrics_text;
use crate::reliability::raw_http::{exchange, request};
use crate::reliability::support::*;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_bodies_are_a_400_for_every_format() {
    let hss = FakeHss::start(AK, SK).await;
    let app = app(&hss).await;
    let bodies: [&[u8]; 3] = [
        b"{\"type\":\"PUSH_ARTIFACT\",\"event_data\":{\"repository\":{\"namespace\":\"\xff\xfe\"}}}",
        b"\xef\xbb\xbf{\"events\":[]}\xc0\xaf",
        b"\xc3\x28",
    ];
    for body in bodies {
        let signed_for: [(&str, Vec<(String, String)>); 3] = [
            ("swr-ee", token(TOKEN_NEW)),
            ("harbor-ce", standard_webhooks(WHSEC_A, "utf8", now(), body)),
            ("registry", hmac_sha256(HMAC_SECRET, body)),
        ];
        for (source, headers) in signed_for {
            let response = app.post_webhook(source, body, &headers).await;
            assert_eq!(response.status(), 400, "{source} {body:?}");
            let answer: Value = response.json().await.expect("json error");
            assert_eq!(answer["error"], "malformed_json", "{source}");
        }
    }
    // A token that is not UTF-8 (obs-text bytes) is just a wrong token.
    let answer = exchange(
        &app.address,
        &request(
            "POST",
            "/webhooks/swr-ee",
            &[
                ("Content-Type", b"application/json"),
                ("Authorization", b"swr-token-new\xff\xfe"),
            ],
            &harbor_push("team-a", "api", "v1"),
        ),
    )
    .await
    .expect("answer");
    assert_error(&answer, 401, "bad_token");
    still_serving(&app, "after-utf8").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_nested_a_hundred_thousand_levels_deep_is_a_400() {
    let mut summary = Summary::start("hostile_deep_json");
    let hss = FakeHss::start(AK, SK).await;
    let app = app(&hss).await;
    const DEPTH: usize = 100_000;
    let arrays = format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH)).into_bytes();
    let objects = format!("{}1{}", "{\"a\":".repeat(DEPTH), "}".repeat(DEPTH)).into_bytes();
    let inside = format!(
        "{{\"type\":\"PUSH_ARTIFACT\",\"event_data\":{}{}}}",
        "[".repeat(DEPTH),
        "]".repeat(DEPTH)
    )
    .into_bytes();
    let mut answered = 0;
    for body in [&arrays, &objects, &inside] {
        assert!(body.len() <= MIB, "within max_body_bytes");
        let signed_for: [(&str, Vec<(String, String)>); 3] = [
            ("swr-ee", token(TOKEN_NEW)),
            ("harbor-ce", standard_webhooks(WHSEC_A, "deep", now(), body)),
            ("registry", hmac_sha256(HMAC_SECRET, body)),
        ];
        for (source, headers) in signed_for {
            let response = app.post_webhook(source, body, &headers).await;
            assert_eq!(response.status(), 400, "{source}");
            let answer: Value = response.json().await.expect("json error");
            assert!(
                matches!(
                    answer["error"].as_str(),
                    Some("malformed_json" | "invalid_payload")
                ),
                "{source}: {answer}"
            );
            answered += 1;
        }
    }
    still_serving(&app, "after-deep-json").await;
    summary
        .count("depth", DEPTH)
        .count("bodies_answered_400", answered)
        .print();
    app.stop().await;
}

fn harbor_resources(resources: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "PUSH_ARTIFACT",
        "event_data": {
            "resources": resources,
            "repository": {"namespace": "team-a", "name": "big", "repo_full_name": "team-a/big"}
        }
    }))
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_arrays_of_resources_are_stored_once_and_delivered() {
    let mut summary = Summary::start("hostile_huge_arrays");
    let hss = FakeHss::start(AK, SK).await;
    let app = app(&hss).await;
    const N: usize = 20_000;

    let distinct = harbor_resources((0..N).map(|i| json!({"tag": format!("t{i}")})).collect());
    assert!(distinct.len() <= MIB);
    let started = Instant::now();
    let response = app
        .post_webhook("swr-ee", &distinct, &token(TOKEN_NEW))
        .await;
    let distinct_ms = started.elapsed().as_millis();
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["accepted"], N);

    let same = harbor_resources((0..N).map(|_| json!({"tag": "same"})).collect());
    let answer: Value = app
        .post_webhook("swr-ee", &same, &token(TOKEN_NEW))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (answer["accepted"].clone(), answer["duplicates"].clone()),
        (json!(1), json!(N - 1))
    );

    // A push-by-digest resource is four times larger: fewer fit in 1 MiB.
    const N_DIGESTS: usize = 10_000;
    let digests = harbor_resources(
        (0..N_DIGESTS)
            .map(|_| json!({"digest": "sha256:9f3d7a2c1b0e4d5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f"}))
            .collect(),
    );
    let response = app
        .post_webhook("swr-ee", &digests, &token(TOKEN_NEW))
        .await;
    assert_eq!(response.status(), 202);
    let ignored_answer = response.bytes().await.expect("body");
    let ignored: Value = serde_json::from_slice(&ignored_answer).expect("json");
    assert_eq!(ignored["ignored"], N_DIGESTS);

    let started = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "20 001 images delivered",
        || async { app.pending_count().await == 0 },
    )
    .await;
    let delivered = delivered_images(&hss);
    assert_eq!(delivered.len(), N + 1);
    assert!(delivered.values().all(|count| *count == 1));
    assert_eq!(requests_with_repeats(&hss), 0);
    summary
        .count("resources_per_push", N)
        .count("distinct_push_body_bytes", distinct.len())
        .count("distinct_push_answer_ms", distinct_ms)
        .count("digest_push_body_bytes", digests.len())
        .count("digest_push_answer_bytes", ignored_answer.len())
        .count("hss_requests", hss.requests().len())
        .count("images_delivered", delivered.len())
        .count("delivery_ms", started.elapsed().as_millis())
        .print();
    app.stop().await;
}

/// A JSON `POST` with the right token to `path`, sent as raw bytes (so the
/// path reaches the server exactly as written).
async fn post_raw(app: &TestApp, path: &str, body: &[u8]) -> RawResponse {
    exchange(
        &app.address,
        &request(
            "POST",
            path,
            &[
                ("Content-Type", b"application/json"),
                ("Authorization", TOKEN_NEW.as_bytes()),
            ],
            body,
        ),
    )
    .await
    .expect("answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_in_source_names_reach_no_source_and_no_other_route() {
    let hss = FakeHss::start(AK, SK).await;
    let app = app(&hss).await;
    let body = harbor_push("team-a", "api", "path");
    let long = format!("/webhooks/{}", "a".repeat(8_000));
    let paths = [
        "/webhooks/..%2F..%2Fetc",
        "/webhooks/..%2f..%2fetc%2fpasswd",
        "/webhooks/%00",
        "/webhooks/swr-ee%00",
        "/webhooks/swr-ee%2F..",
        "/webhooks/%2e%2e",
        "/webhooks/SWR-EE",
        "/webhooks/swr-ee%20",
        "/webhooks/%E2%80%AEswr-ee",
        long.as_str(),
    ];
    for path in paths {
        let answer = post_raw(&app, path, &body).await;
        assert_error(&answer, 404, "unknown_source");
        let message = answer.json()["message"].as_str().unwrap_or("").to_string();
        assert!(
            message
                .chars()
                .all(|c| c.is_ascii_graphic() || c == ' ' || c == '…'),
            "{path}: unprintable echo {message:?}"
        );
        assert!(
            message.len() < 300,
            "{path}: echo of {} bytes",
            message.len()
        );
    }
    // Dot segments are not resolved into other routes.
    for path in [
        "/webhooks/../admin/pending",
        "/webhooks/swr-ee/../../admin/flush",
        "/webhooks/./swr-ee",
        "//webhooks/swr-ee",
    ] {
        let answer = post_raw(&app, path, &body).await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.body_text());
    }
    // Unknown names never become metric labels.
    let metrics = metrics_text(&app).await;
    for line in metrics.lines().filter(|l| l.contains("source=")) {
        assert!(
            ["swr-ee", "harbor-ce", "registry", "filtered", "unknown"]
                .iter()
                .any(|known| line.contains(&format!("source=\"{known}\""))),
            "{line}"
        );
    }
    assert_eq!(app.pending_count().await, 0, "nothing was stored");
    still_serving(&app, "after-paths").await;
    app.stop().await;
}

/// The token scheme compares the header value byte for byte with a
/// configured token: no decoding, trimming beyond HTTP's own, or normalising.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_odd_encodings_are_rejected() {
    const UNICODE_NFC: &str = "t\u{f6}k\u{e9}n-secret";
    const UNICODE_NFD: &str = "to\u{308}ke\u{301}n-secret";
    let hss = FakeHss::start(AK, SK).await;
    let app = spawn_app_with(&hss.uri(), |s| {
        let mut unicode = s
            .sources
            .iter()
            .find(|source| source.name == "filtered")
            .cloned()
            .expect("filtered source");
        unicode.name = "unicode".into();
        unicode.filter = Default::default();
        unicode.verify.as_mut().expect("a webhook source").secrets =
            vec![swr_scan_bridge::secret::Secret::literal(UNICODE_NFC)];
        s.sources.push(unicode);
    })
    .await;
    let body = harbor_push("team-a", "api", "odd");
    let b64 = base64::engine::general_purpose::STANDARD;
    let rejected: Vec<(&str, Vec<u8>)> = vec![
        ("swr-ee", format!("{TOKEN_NEW}\u{a0}").into_bytes()),
        ("swr-ee", format!("{TOKEN_NEW}\u{3000}").into_bytes()),
        ("swr-ee", format!("\u{feff}{TOKEN_NEW}").into_bytes()),
        ("swr-ee", format!("{TOKEN_NEW}\\n").into_bytes()),
        ("swr-ee", b"swr%2Dtoken%2Dnew".to_vec()),
        ("swr-ee", b"swr-token-new%20".to_vec()),
        ("swr-ee", b64.encode(TOKEN_NEW).into_bytes()),
        ("swr-ee", format!("Bearer {TOKEN_NEW}").into_bytes()),
        ("swr-ee", TOKEN_NEW.to_uppercase().into_bytes()),
        ("swr-ee", format!("{TOKEN_NEW}{TOKEN_OLD}").into_bytes()),
        (
            "swr-ee",
            TOKEN_NEW.as_bytes()[..TOKEN_NEW.len() - 1].to_vec(),
        ),
        ("unicode", UNICODE_NFD.as_bytes().to_vec()),
        ("unicode", b"t%C3%B6k%C3%A9n-secret".to_vec()),
        ("unicode", "tokén-secret".as_bytes().to_vec()),
    ];
    for (source, value) in &rejected {
        let answer = exchange(
            &app.address,
            &request(
                "POST",
                &format!("/webhooks/{source}"),
                &[
                    ("Content-Type", b"application/json"),
                    ("Authorization", value),
                ],
                &body,
            ),
        )
        .await
        .expect("answer");
        assert_error(&answer, 401, "bad_token");
    }
    // Optional whitespace around a header value is not part of it (RFC 9110
    // §5.5): the parser strips SP/HTAB, so these carry the token itself.
    for value in [
        format!("{TOKEN_NEW} "),
        format!("{TOKEN_NEW}\t"),
        format!(" {TOKEN_NEW}"),
    ] {
        let answer = exchange(
            &app.address,
            &request(
                "POST",
                "/webhooks/swr-ee",
                &[
                    ("Content-Type", b"application/json"),
                    ("Authorization", value.as_bytes()),
                ],
                &body,
            ),
        )
        .await
        .expect("answer");
        assert_eq!(answer.status, 202, "{value:?}: {}", answer.body_text());
    }
    let answer = app
        .post_webhook("unicode", &body, &token(UNICODE_NFC))
        .await;
    assert_eq!(answer.status(), 202, "the exact token in its own encoding");

    // HMAC and Standard Webhooks keys are not guessable by re-encoding either.
    let hmac_body = distribution_push("team-b/worker", "odd");
    let key_b64 = b64.encode(HMAC_SECRET);
    for headers in [
        hmac_sha256(&key_b64, &hmac_body),
        hmac_sha256(&HMAC_SECRET.to_uppercase(), &hmac_body),
        hmac_sha256(&format!("{HMAC_SECRET} "), &hmac_body),
    ] {
        let response = app.post_webhook("registry", &hmac_body, &headers).await;
        assert_eq!(response.status(), 401);
    }
    let ce_body = cloudevents_push("library", "nginx", "odd");
    // The whsec_ string's own bytes as the key, instead of its base64 decoding.
    let raw_key = format!("whsec_{}", b64.encode(WHSEC_A));
    let response = app
        .post_webhook(
            "harbor-ce",
            &ce_body,
            &standard_webhooks(&raw_key, "odd-1", now(), &ce_body),
        )
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        app.pending_count().await,
        2,
        "only the two exact pushes were stored"
    );
    app.stop().await;
}
