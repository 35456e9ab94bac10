//! `GET /admin/history` and the `history` command: "was my image scanned,
//! when, in which HSS request?" across success, retry, dead letter, ignore,
//! duplicate and a SIGKILL.

use std::time::Duration;

use serde_json::Value;

use crate::common::fake_hss::{FakeHss, Reply};
use crate::common::fake_swr::FakeSwr;
use crate::common::helpers::*;
use crate::common::ops::{admin_call, admin_post, flush, push, quiet_hss, status_of};
use crate::common::process::{BridgeProcess, free_port};

const DIGEST: &str = "sha256:9f3d7a2c1b0e4d5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f";

async fn history(app: &TestApp, image: &str) -> Value {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let path = format!("/admin/history?image={}", urlencode(image));
    let (status, body) = status_of(admin_call(app, "GET", &path, Some(&bearer)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["image"], image, "{body}");
    body
}

fn urlencode(text: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", [("q", text)])
        .expect("url")
        .query()
        .expect("query")
        .trim_start_matches("q=")
        .to_string()
}

fn events(body: &Value) -> &Vec<Value> {
    body["events"].as_array().expect("events")
}

fn kinds(body: &Value) -> Vec<&str> {
    events(body)
        .iter()
        .map(|event| event["event"].as_str().expect("event"))
        .collect()
}

#[tokio::test]
async fn a_scanned_image_names_its_batch_and_hss_request() {
    let hss = FakeHss::start(AK, SK).await;
    hss.answer_accepted();
    let app = spawn_app_with(&hss.uri(), |_| {}).await;
    let unknown = history(&app, "team-a/api:1.0").await;
    assert_eq!(unknown["events"], serde_json::json!([]));

    let body = harbor_push("team-a", "api", "1.0");
    push(&app, "swr-ee", &body, &token(TOKEN_NEW)).await;
    push(&app, "swr-ee", &body, &token(TOKEN_NEW)).await;
    assert_eq!(flush(&app).await, 1);

    let answer = history(&app, "team-a/api:1.0").await;
    assert_eq!(
        kinds(&answer),
        ["accepted", "duplicate", "sent", "scanned"],
        "{answer}"
    );
    let events = events(&answer);
    assert!(events.iter().all(|event| event["source"] == "swr-ee"));
    assert!(
        events
            .windows(2)
            .all(|w| w[0]["at_ms"].as_i64() <= w[1]["at_ms"].as_i64()),
        "oldest first: {answer}"
    );
    let sent = &events[2];
    assert!(sent["batch_id"].is_i64(), "{sent}");
    let scanned = &events[3];
    assert_eq!(scanned["batch_id"], sent["batch_id"]);
    assert_eq!(scanned["api"], "batch-scan");
    assert_eq!(scanned["hss_status"], 200);
    let requests = hss.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(scanned["hss_request_id"], requests[0].request_id.as_str());
    // Fields without a value are left out, not null.
    assert!(events[0].get("batch_id").is_none(), "{}", events[0]);
    app.stop().await;
}

#[tokio::test]
async fn retries_dead_letters_and_requeues_show_in_order() {
    let hss = FakeHss::start(AK, SK).await;
    hss.respond_with_sequence(vec![
        Reply::status(503),
        Reply::error(400, "HSS.1001", "invalid image_info_list"),
        Reply::accepted(),
    ]);
    let app = spawn_app_with(&hss.uri(), |_| {}).await;
    push(
        &app,
        "swr-ee",
        &harbor_push("team-a", "api", "2.0"),
        &token(TOKEN_NEW),
    )
    .await;
    flush(&app).await;
    wait_until(Duration::from_secs(10), "the dead letter", || async {
        kinds(&history(&app, "team-a/api:2.0").await).contains(&"dead_letter")
    })
    .await;
    let letters = app.admin_get("/admin/dead-letters").await;
    let letter_id = letters["dead_letters"][0]["id"].as_i64().expect("id");
    let (status, body) = admin_post(&app, &format!("/admin/dead-letters/{letter_id}/retry")).await;
    assert_eq!(status, 200, "{body}");
    flush(&app).await;
    wait_until(Duration::from_secs(10), "the requeued scan", || async {
        kinds(&history(&app, "team-a/api:2.0").await).contains(&"scanned")
    })
    .await;

    let answer = history(&app, "team-a/api:2.0").await;
    assert_eq!(
        kinds(&answer),
        [
            "accepted",
            "sent",
            "retried",
            "sent",
            "dead_letter",
            "accepted",
            "sent",
            "scanned"
        ],
        "{answer}"
    );
    let events = events(&answer);
    let requests = hss.requests();
    assert_eq!(requests.len(), 3);
    let retried = &events[2];
    assert_eq!(retried["hss_status"], 503);
    assert_eq!(retried["hss_request_id"], requests[0].request_id.as_str());
    assert!(retried["reason"].is_string(), "{retried}");
    assert_eq!(
        events[3]["batch_id"], events[1]["batch_id"],
        "the same batch"
    );
    let dead = &events[4];
    assert_eq!(dead["hss_status"], 400);
    assert_eq!(dead["hss_request_id"], requests[1].request_id.as_str());
    assert_eq!(dead["reason"], "HSS.1001: invalid image_info_list");
    let requeued = &events[5];
    assert_eq!(requeued["source"], "admin");
    assert_eq!(events[7]["hss_request_id"], requests[2].request_id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn ignored_pushes_and_redeliveries_say_why() {
    let hss = quiet_hss().await;
    let app = spawn_app_with(&hss.uri(), |_| {}).await;
    // Filtered out by `filtered`'s include/exclude globs.
    push(
        &app,
        "filtered",
        &harbor_push("team-a", "builder", "v1-cache"),
        &token(TOKEN_NEW),
    )
    .await;
    let filtered = history(&app, "team-a/builder:v1-cache").await;
    assert_eq!(kinds(&filtered), ["ignored"]);
    assert_eq!(events(&filtered)[0]["reason"], "filtered_out");
    assert_eq!(events(&filtered)[0]["source"], "filtered");

    // A push naming only a digest: asked for as name@digest.
    push(
        &app,
        "swr-ee",
        &harbor_push("team-a", "api", DIGEST),
        &token(TOKEN_NEW),
    )
    .await;
    let by_digest = history(&app, &format!("team-a/api@{DIGEST}")).await;
    assert_eq!(kinds(&by_digest), ["ignored"]);
    assert_eq!(events(&by_digest)[0]["reason"], "push_by_digest");
    assert_eq!(events(&by_digest)[0]["digest"], DIGEST);

    // A redelivery (same webhook-id) stores nothing but is on record.
    let body = sample("harbor-cloudevents-push.json");
    let headers = standard_webhooks(WHSEC_A, "msg_history", now(), &body);
    push(&app, "harbor-ce", &body, &headers).await;
    push(&app, "harbor-ce", &body, &headers).await;
    let pending = app.admin_get("/admin/pending").await;
    let image = &pending["images"][0]["image"];
    let name = format!(
        "{}/{}:{}",
        image["namespace"].as_str().expect("namespace"),
        image["name"].as_str().expect("name"),
        image["tag"].as_str().expect("tag")
    );
    let redelivered = history(&app, &name).await;
    assert_eq!(
        kinds(&redelivered),
        ["accepted", "duplicate"],
        "{redelivered}"
    );
    assert_eq!(events(&redelivered)[1]["reason"], "redelivery");
    app.stop().await;
}

#[tokio::test]
async fn a_resolved_digest_leads_to_its_tags_which_name_it() {
    const UNKNOWN: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let hss = FakeHss::start(AK, SK).await;
    hss.answer_accepted();
    let swr = FakeSwr::start(hss.credentials(), PROJECT_ID, INSTANCE_ID).await;
    swr.put_artifact("team-a", "api", DIGEST, &["7.0"]);
    let swr_endpoint = swr.uri();
    let app = spawn_app_with(&hss.uri(), move |settings| {
        settings.swr.endpoint = Some(swr_endpoint);
        settings.sources[0].resolve_digests = true;
        settings.batch.window_ms = 200;
    })
    .await;
    for digest in [DIGEST, UNKNOWN] {
        // A robot push: the digest in `tag` and in `digest`.
        let mut body: Value =
            serde_json::from_slice(&harbor_push("team-a", "api", digest)).expect("json");
        body["event_data"]["resources"][0]["digest"] = Value::from(digest);
        let body = serde_json::to_vec(&body).expect("json");
        push(&app, "swr-ee", &body, &token(TOKEN_NEW)).await;
    }
    wait_until(Duration::from_secs(15), "the tag scanned", || async {
        kinds(&history(&app, "team-a/api:7.0").await).contains(&"scanned")
    })
    .await;

    let digest = history(&app, &format!("team-a/api@{DIGEST}")).await;
    assert_eq!(kinds(&digest), ["resolving", "resolved"], "{digest}");
    assert_eq!(events(&digest)[1]["reason"], "tags: 7.0");
    let tag = history(&app, "team-a/api:7.0").await;
    assert_eq!(kinds(&tag), ["accepted", "sent", "scanned"], "{tag}");
    assert!(
        events(&tag)
            .iter()
            .all(|event| event["digest"] == DIGEST && event["source"] == "swr-ee"),
        "{tag}"
    );
    assert_eq!(
        events(&tag)[2]["hss_request_id"],
        hss.requests()[0].request_id.as_str()
    );
    wait_until(
        Duration::from_secs(10),
        "the unknown digest dropped",
        || async {
            kinds(&history(&app, &format!("team-a/api@{UNKNOWN}")).await).contains(&"dropped")
        },
    )
    .await;
    let unknown = history(&app, &format!("team-a/api@{UNKNOWN}")).await;
    assert_eq!(kinds(&unknown), ["resolving", "dropped"], "{unknown}");
    assert_eq!(events(&unknown)[1]["reason"], "not_found");
    app.stop().await;
}

#[tokio::test]
async fn malformed_image_parameters_are_400_and_the_route_needs_the_token() {
    let hss = quiet_hss().await;
    let app = spawn_app_with(&hss.uri(), |_| {}).await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    for (path, mentions) in [
        ("/admin/history?image=team-a/api", "has no tag"),
        ("/admin/history?image=api:1.0", "has no namespace"),
        ("/admin/history?image=team-a/api@sha256", "malformed digest"),
        ("/admin/history", "missing"),
    ] {
        let (status, body) = status_of(admin_call(&app, "GET", path, Some(&bearer)).await).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "invalid_image", "{body}");
        let message = body["message"].as_str().expect("message");
        assert!(message.contains(mentions), "{path}: {message}");
        assert!(message.contains("namespace/name:tag"), "{message}");
    }
    let (status, _) =
        status_of(admin_call(&app, "GET", "/admin/history?image=team-a/api:1", None).await).await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn the_history_command_prints_a_running_bridges_answer() {
    let hss = FakeHss::start(AK, SK).await;
    hss.answer_accepted();
    let app = spawn_app_with(&hss.uri(), |_| {}).await;
    push(
        &app,
        "swr-ee",
        &harbor_push("team-a", "web", "3.1"),
        &token(TOKEN_NEW),
    )
    .await;
    flush(&app).await;
    let request_id = hss.requests()[0].request_id.clone();

    let run = |token_ref: &str, extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_swr-scan-bridge"));
        command
            .args(["history", "team-a/web:3.1", "--url", &app.address])
            .args(["--token", token_ref])
            .args(extra)
            .env("HISTORY_TEST_ADMIN_TOKEN", ADMIN_TOKEN);
        command.output().expect("the binary runs")
    };
    let text = run("env:HISTORY_TEST_ADMIN_TOKEN", &[]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&text.stderr)
    );
    assert!(stdout.starts_with("team-a/web:3.1\n"), "{stdout}");
    for expected in ["accepted", "sent", "scanned", "hss_status=200", &request_id] {
        assert!(stdout.contains(expected), "{expected} in {stdout}");
    }

    let json = run("env:HISTORY_TEST_ADMIN_TOKEN", &["--json"]);
    assert!(json.status.success());
    let answer: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(answer["events"][2]["hss_request_id"], request_id.as_str());

    let literal = run(ADMIN_TOKEN, &[]);
    assert_eq!(literal.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&literal.stderr);
    assert!(stderr.contains("env:NAME or file:PATH"), "{stderr}");
    assert!(!stderr.contains(ADMIN_TOKEN), "{stderr}");

    let dir = tempfile::tempdir().expect("temp dir");
    let wrong = dir.path().join("token");
    std::fs::write(&wrong, "not-the-token\n").expect("token file");
    let refused = run(&format!("file:{}", wrong.display()), &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    app.stop().await;
}

#[tokio::test]
async fn history_survives_a_sigkill_and_tells_of_the_takeover() {
    let hss = FakeHss::start(AK, SK).await;
    // The first send is still waiting for HSS when the process dies.
    hss.respond_with_sequence(vec![
        Reply::status(503).delayed(Duration::from_secs(5)),
        Reply::accepted(),
    ]);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bridge.db");
    let port = free_port();
    let config = base_config(&hss.uri(), &format!("sqlite://{}", db.display()))
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace("window_ms = 60000", "window_ms = 200")
        .replace("lease_ms = 30000", "lease_ms = 2500");
    let mut bridge = BridgeProcess::start_in(dir.path(), &config, &[]).await;
    let client = reqwest::Client::new();
    let response = client
        .post(bridge.url("/webhooks/swr-ee"))
        .header("Content-Type", "application/json")
        .header("Authorization", TOKEN_NEW)
        .body(harbor_push("team-a", "api", "9.9"))
        .send()
        .await
        .expect("push");
    assert_eq!(response.status(), 202);
    wait_until(Duration::from_secs(10), "the send in flight", || async {
        !hss.requests().is_empty()
    })
    .await;
    bridge.kill().await;

    let restarted = BridgeProcess::start_in(dir.path(), &config, &[]).await;
    let url = restarted.url("/admin/history?image=team-a/api:9.9");
    let fetch = || async {
        client
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("history")
            .json::<Value>()
            .await
            .expect("JSON")
    };
    wait_until(
        Duration::from_secs(30),
        "the scan after the restart",
        || async { kinds(&fetch().await).contains(&"scanned") },
    )
    .await;
    let answer = fetch().await;
    assert_eq!(
        kinds(&answer),
        ["accepted", "sent", "sent", "scanned"],
        "the killed send left its `sent`, the takeover its own: {answer}"
    );
    let events = events(&answer);
    assert_eq!(events[1]["batch_id"], events[2]["batch_id"]);
    assert_eq!(events[3]["batch_id"], events[1]["batch_id"]);
    assert_eq!(
        events[3]["hss_request_id"],
        hss.requests()[1].request_id.as_str()
    );
    drop(restarted);
}
