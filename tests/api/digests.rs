//! Digest-only pushes resolved through the SWR EE artifact API: tags scanned
//! once each through the source's filter, late tags still found, 404 and
//! untagged dropped, refusals dead-lettered and retried, and nothing lost to a
//! SIGKILL or doubled by two replicas.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::fake_hss::{FakeHss, Reply, Verdict};
use crate::common::fake_swr::FakeSwr;
use crate::common::helpers::*;
use crate::common::process::{BridgeProcess, free_port};
use crate::common::prometheus_text::Scrape;

const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const DIGEST_C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
/// A nested repository: SWR must receive it as `payments%2Fapi`.
const REPOSITORY: &str = "payments/api";

/// A Harbor push naming only digests, as SWR EE sends it for robot pushes:
/// the digest in `tag` too.
fn digest_push(repository: &str, digests: &[&str]) -> Vec<u8> {
    let resources: Vec<Value> = digests
        .iter()
        .map(|digest| {
            json!({
                "digest": digest,
                "tag": digest,
                "resource_url": format!("ee-demo.swr.cn-north-4.myhuaweicloud.com/team-a/{repository}@{digest}"),
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "type": "PUSH_ARTIFACT",
        "occur_at": 1795859400,
        "operator": "robot$ci",
        "event_data": {
            "resources": resources,
            "repository": {
                "name": repository,
                "namespace": "team-a",
                "repo_full_name": format!("team-a/{repository}"),
                "repo_type": "private"
            }
        }
    }))
    .expect("json")
}

/// Every `image_version` HSS accepted, with how often.
fn scanned_tags(hss: &FakeHss) -> BTreeMap<String, usize> {
    let mut tags = BTreeMap::new();
    for batch in hss.received_batches() {
        for item in batch["image_info_list"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let tag = item["image_version"].as_str().unwrap_or("").to_string();
            *tags.entry(tag).or_insert(0) += 1;
        }
    }
    tags
}

fn tags_once(tags: &[&str]) -> BTreeMap<String, usize> {
    tags.iter().map(|tag| (tag.to_string(), 1)).collect()
}

async fn scrape(app: &TestApp) -> Scrape {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    Scrape::parse(&text).expect("prometheus text")
}

fn resolutions(scrape: &Scrape, outcome: &str) -> f64 {
    scrape.get(
        "swr_scan_bridge_digest_resolutions_total",
        &[("outcome", outcome)],
    )
}

/// Waits until `outcome` was counted `count` times: a resolution is counted
/// right after its commit, which tests otherwise observe first.
async fn wait_for_resolutions(app: &TestApp, outcome: &str, count: f64) {
    wait_until(
        Duration::from_secs(10),
        &format!("{count} resolutions {outcome}"),
        || async { resolutions(&scrape(app).await, outcome) == count },
    )
    .await;
}

async fn resolving(app: &TestApp) -> u64 {
    app.admin_get("/admin/pending").await["digests_resolving"]
        .as_u64()
        .expect("digests_resolving")
}

/// The bridge with `swr-ee` resolving digests against `swr`.
async fn spawn_resolving_app(
    hss: &FakeHss,
    swr: &FakeSwr,
    customize: impl FnOnce(&mut swr_scan_bridge::config::RawSettings),
) -> TestApp {
    let swr_endpoint = swr.uri();
    spawn_app_with(&hss.uri(), move |settings| {
        settings.swr.endpoint = Some(swr_endpoint);
        settings.sources[0].resolve_digests = true;
        settings.batch.window_ms = 200;
        customize(settings);
    })
    .await
}

async fn post_digests(app: &TestApp, repository: &str, digests: &[&str]) -> Value {
    let response = app
        .post_webhook(
            "swr-ee",
            &digest_push(repository, digests),
            &token(TOKEN_NEW),
        )
        .await;
    assert_eq!(response.status(), 202);
    response.json().await.expect("answer json")
}

#[tokio::test]
async fn each_tag_of_a_resolved_digest_is_scanned_once_through_the_source_filter() {
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(hss.credentials(), PROJECT_ID, INSTANCE_ID).await;
    swr.put_artifact(
        "team-a",
        REPOSITORY,
        DIGEST_A,
        &["v1.4.2", "latest", "build-cache"],
    );
    let app = spawn_resolving_app(&hss, &swr, |settings| {
        settings.batch.window_ms = 60_000;
        settings.sources[0].filter.exclude = vec!["**:*-cache".into()];
    })
    .await;

    // The same digest twice in one push: the second is a duplicate.
    let answer = post_digests(&app, REPOSITORY, &[DIGEST_A, DIGEST_A]).await;
    assert_eq!(
        (
            &answer["accepted"],
            &answer["resolving"],
            &answer["duplicates"],
            &answer["ignored"]
        ),
        (&json!(0), &json!(1), &json!(1), &json!(0)),
        "{answer}"
    );
    wait_until(Duration::from_secs(10), "the tags wait for HSS", || async {
        app.pending_count().await == 2
    })
    .await;
    // Pushed again once resolved: asked again, and its tags, still waiting
    // for the window, are not queued twice.
    let again = post_digests(&app, REPOSITORY, &[DIGEST_A]).await;
    assert_eq!(again["resolving"], json!(1), "{again}");
    wait_until(Duration::from_secs(10), "the second resolution", || async {
        swr.requests().len() == 2 && resolving(&app).await == 0
    })
    .await;
    assert_eq!(app.pending_count().await, 2);
    let pending = app.admin_get("/admin/pending").await;
    let images: Vec<(String, String)> = pending["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|image| {
            (
                format!(
                    "{}/{}:{}",
                    image["image"]["namespace"].as_str().unwrap_or(""),
                    image["image"]["name"].as_str().unwrap_or(""),
                    image["image"]["tag"].as_str().unwrap_or("")
                ),
                image["digest"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        images,
        [
            (
                "team-a/payments/api:v1.4.2".to_string(),
                DIGEST_A.to_string()
            ),
            (
                "team-a/payments/api:latest".to_string(),
                DIGEST_A.to_string()
            ),
        ]
    );
    assert_eq!(pending["digests_resolving"], json!(0));

    let flushed = app
        .client
        .post(app.url("/admin/flush"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("flush");
    assert_eq!(flushed.status(), 200);
    assert_eq!(scanned_tags(&hss), tags_once(&["v1.4.2", "latest"]));
    let batch = &hss.received_batches()[0];
    assert_eq!(batch["image_type"], "instance_image");
    assert_eq!(
        batch["image_info_list"][0]["instance_id"],
        json!(INSTANCE_ID)
    );
    assert_eq!(
        batch["image_info_list"][0]["instance_url"],
        json!("ee-demo.swr.cn-north-4.myhuaweicloud.com")
    );

    // SWR was asked once per push, signed, with the repository as one `%2F` segment.
    let requests = swr.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for request in &requests {
        assert_eq!(
            request.path,
            format!(
                "/v2/{PROJECT_ID}/instances/{INSTANCE_ID}/namespaces/team-a/repositories/payments%2Fapi/artifacts/{}",
                DIGEST_A.replace(':', "%3A")
            )
        );
        assert!(matches!(request.verdict, Verdict::Signed { .. }));
    }
    wait_for_resolutions(&app, "resolved", 2.0).await;
    let scrape = scrape(&app).await;
    for outcome in [
        "untagged_retry",
        "untagged",
        "not_found",
        "retry",
        "dead_letter",
    ] {
        assert_eq!(resolutions(&scrape, outcome), 0.0, "{outcome}");
    }
    assert_eq!(scrape.get("swr_scan_bridge_digests_resolving", &[]), 0.0);
    assert_eq!(
        scrape.get(
            "swr_scan_bridge_swr_requests_total",
            &[
                ("operation", "show_instance_artifact"),
                ("status_class", "2xx")
            ]
        ),
        2.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_tag_that_appears_a_second_after_the_push_is_still_scanned() {
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(hss.credentials(), PROJECT_ID, INSTANCE_ID).await;
    swr.put_artifact("team-a", "api", DIGEST_B, &[]);
    let app = spawn_resolving_app(&hss, &swr, |settings| {
        settings.batch.resolve_delay_ms = Some(300);
        settings.batch.resolve_attempts = 10;
    })
    .await;
    post_digests(&app, "api", &[DIGEST_B]).await;
    wait_until(Duration::from_secs(10), "SWR asked once", || async {
        !swr.requests().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(hss.received_batches().is_empty());
    swr.put_artifact("team-a", "api", DIGEST_B, &["2026.11.28"]);

    wait_until(Duration::from_secs(10), "the late tag scanned", || async {
        scanned_tags(&hss) == tags_once(&["2026.11.28"])
    })
    .await;
    wait_for_resolutions(&app, "resolved", 1.0).await;
    let scrape = scrape(&app).await;
    assert!(resolutions(&scrape, "untagged_retry") >= 2.0);
    assert_eq!(resolutions(&scrape, "untagged"), 0.0);
    assert_eq!(resolving(&app).await, 0);
    assert!(swr.requests_with_bad_signature().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn unknown_and_untagged_digests_are_dropped_with_their_reasons() {
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(hss.credentials(), PROJECT_ID, INSTANCE_ID).await;
    // DIGEST_A is unknown to SWR; DIGEST_B never gets a tag.
    swr.put_artifact("team-a", "api", DIGEST_B, &[]);
    let app = spawn_resolving_app(&hss, &swr, |settings| {
        settings.batch.resolve_delay_ms = Some(100);
        settings.batch.resolve_attempts = 3;
    })
    .await;
    let answer = post_digests(&app, "api", &[DIGEST_A, DIGEST_B]).await;
    assert_eq!(answer["resolving"], json!(2), "{answer}");

    wait_until(Duration::from_secs(10), "both digests settled", || async {
        let scrape = scrape(&app).await;
        resolutions(&scrape, "not_found") == 1.0 && resolutions(&scrape, "untagged") == 1.0
    })
    .await;
    let scrape = scrape(&app).await;
    assert_eq!(resolutions(&scrape, "untagged_retry"), 2.0);
    assert_eq!(resolutions(&scrape, "resolved"), 0.0);
    assert_eq!(resolving(&app).await, 0);
    // Asked once (404) and three times (untagged) in all.
    assert_eq!(swr.requests().len(), 4);
    assert!(hss.requests().is_empty());
    assert!(
        app.admin_get("/admin/dead-letters").await["dead_letters"]
            .as_array()
            .expect("letters")
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn throttling_is_retried_and_a_refusal_is_a_dead_letter_that_retry_resolves_again() {
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(hss.credentials(), PROJECT_ID, INSTANCE_ID).await;
    swr.put_artifact("team-a", "api", DIGEST_C, &["v3"]);
    swr.respond_with_sequence(vec![
        Reply::throttled("0"),
        Reply::error(503, "SVCSTG.SWR.5000001", "busy"),
        // SWR's own error format: a list of {errorCode, errorMessage, detail}.
        Reply::status(403).with_json(json!([{
            "errorCode": "SVCSTG.SWR.4030011",
            "errorMessage": "no permission on the instance",
            "detail": ""
        }])),
    ]);
    let app = spawn_resolving_app(&hss, &swr, |_| {}).await;
    post_digests(&app, "api", &[DIGEST_C]).await;

    wait_until(Duration::from_secs(10), "a dead letter", || async {
        !app.admin_get("/admin/dead-letters").await["dead_letters"]
            .as_array()
            .expect("letters")
            .is_empty()
    })
    .await;
    let letters = app.admin_get("/admin/dead-letters").await;
    let letter = &letters["dead_letters"][0];
    assert_eq!(letter["cause"]["http_status"], json!(403), "{letter}");
    assert_eq!(
        letter["cause"]["error_code"],
        json!("SVCSTG.SWR.4030011"),
        "{letter}"
    );
    assert!(
        letter["cause"]["error_msg"]
            .as_str()
            .unwrap_or("")
            .contains("no permission on the instance"),
        "{letter}"
    );
    assert_eq!(letter["unresolved"]["digest"], json!(DIGEST_C));
    assert_eq!(letter["unresolved"]["name"], json!("api"));
    assert_eq!(letter["images"], json!([]));
    wait_for_resolutions(&app, "dead_letter", 1.0).await;
    assert_eq!(resolutions(&scrape(&app).await, "retry"), 2.0);
    assert!(hss.requests().is_empty());

    let id = letter["id"].as_i64().expect("id");
    let retried = app
        .client
        .post(app.url(&format!("/admin/dead-letters/{id}/retry")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("retry");
    assert_eq!(retried.status(), 200);
    wait_until(Duration::from_secs(10), "the tag scanned", || async {
        scanned_tags(&hss) == tags_once(&["v3"])
    })
    .await;
    wait_for_resolutions(&app, "resolved", 1.0).await;
    assert!(swr.requests_with_bad_signature().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn without_resolution_a_digest_only_push_is_ignored_and_resolving_is_zero() {
    let hss = FakeHss::start(AK, SK).await;
    let app = spawn_app_with(&hss.uri(), |_| {}).await;
    let response = app
        .post_webhook(
            "swr-ee",
            &digest_push("api", &[DIGEST_A]),
            &token(TOKEN_NEW),
        )
        .await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["resolving"], json!(0));
    assert_eq!(answer["ignored"], json!(1));
    assert_eq!(answer["reasons"][0]["reason"], json!("push_by_digest"));
    assert_eq!(resolving(&app).await, 0);
    app.stop().await;
}

#[test]
fn resolution_settings_are_checked_at_load() {
    let data = tempfile::tempdir().expect("dir");
    let base = base_config(
        "http://127.0.0.1:9",
        &format!("sqlite://{}/b.db", data.path().display()),
    );
    let shared_source = base.replace(
        "name = \"registry\"\nformat = \"distribution\"\nimage_type = \"shared_image\"",
        "name = \"registry\"\nformat = \"distribution\"\nimage_type = \"shared_image\"\nresolve_digests = true",
    );
    let no_attempts = base.replace(
        "retry_max_ms = 1000",
        "retry_max_ms = 1000\nresolve_attempts = 0",
    );
    let no_delay = base.replace(
        "retry_max_ms = 1000",
        "retry_max_ms = 1000\nresolve_delay_ms = 0",
    );
    let bad_endpoint = base.replace("[store]", "[swr]\nendpoint = \"swr.example\"\n\n[store]");
    for (config, key, words) in [
        (
            shared_source,
            "sources[2].resolve_digests",
            "instance_image",
        ),
        (no_attempts, "batch.resolve_attempts", "at least 1"),
        (no_delay, "batch.resolve_delay_ms", "greater than 0"),
        (bad_endpoint, "swr.endpoint", "http"),
    ] {
        let error = swr_scan_bridge::config::Settings::from_toml(&config)
            .expect_err(key)
            .to_string();
        assert!(error.contains(key) && error.contains(words), "{error}");
    }
    let resolving = swr_scan_bridge::config::Settings::from_toml(&base.replace(
        "retry_max_ms = 1000",
        "retry_max_ms = 1000\nresolve_attempts = 3",
    ))
    .expect("valid");
    assert_eq!(resolving.batch.resolve_attempts.get(), 3);
    // The delay defaults to the window.
    assert_eq!(
        resolving.batch.resolve_delay.as_duration(),
        Duration::from_millis(60_000)
    );
}

fn process_config(port: u16, hss: &str, swr: &str, store_url: &str) -> String {
    base_config(hss, store_url)
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace("window_ms = 60000", "window_ms = 200")
        .replace("lease_ms = 30000", "lease_ms = 2500")
        .replace(
            "instance_id = \"4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6\"",
            "instance_id = \"4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6\"\nresolve_digests = true",
        )
        .replace(
            "[store]",
            &format!("[log]\nformat = \"json\"\n\n[swr]\nendpoint = \"{swr}\"\n\n[store]"),
        )
}

#[tokio::test]
async fn a_digest_acknowledged_before_a_sigkill_is_resolved_after_the_restart() {
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(hss.credentials(), PROJECT_ID, INSTANCE_ID).await;
    swr.put_artifact("team-a", REPOSITORY, DIGEST_A, &["v9"]);
    // SWR hangs until the process is dead: the 202 came, the resolution did
    // not. Every ask hangs, not only the first: an ask cut short by its lease
    // is asked again, and under load the kill could come after that second ask.
    swr.answer_after(Duration::from_secs(60));
    let dir = tempfile::tempdir().expect("dir");
    let store_url = format!("sqlite://{}", dir.path().join("bridge.db").display());
    let port = free_port();
    let config = process_config(port, &hss.uri(), &swr.uri(), &store_url);
    let mut bridge = BridgeProcess::start_in(dir.path(), &config, &[]).await;
    let response = reqwest::Client::new()
        .post(bridge.url("/webhooks/swr-ee"))
        .header("Content-Type", "application/json")
        .header("Authorization", TOKEN_NEW)
        .body(digest_push(REPOSITORY, &[DIGEST_A]))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202);
    wait_until(Duration::from_secs(10), "SWR being asked", || async {
        !swr.requests().is_empty()
    })
    .await;
    bridge.kill().await;
    assert!(hss.requests().is_empty(), "nothing scanned before the kill");
    swr.answer_after(Duration::ZERO);

    let restarted = BridgeProcess::start_in(dir.path(), &config, &[]).await;
    wait_until(Duration::from_secs(20), "the tag scanned", || async {
        scanned_tags(&hss) == tags_once(&["v9"])
    })
    .await;
    // The restarted bridge itself resolved it: its counter says so (counted
    // right after the commit that queued the tag, which under load may come
    // after the tag already reached HSS).
    let metrics_url = restarted.url("/metrics");
    let resolutions_line = "swr_scan_bridge_digest_resolutions_total{outcome=\"resolved\"} ";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = match reqwest::get(&metrics_url).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let resolved: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix(resolutions_line))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0);
        if resolved >= 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted bridge never counted the resolution; its resolution counters:\n{}\nits log:\n{}",
            text.lines()
                .filter(|line| line.contains("digest_resolutions_total"))
                .collect::<Vec<_>>()
                .join("\n"),
            restarted.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(restarted);
}

#[tokio::test]
async fn two_replicas_on_postgres_resolve_each_digest_once() {
    let Some(database) = crate::common::postgres_support::FreshDatabase::create().await else {
        return;
    };
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(hss.credentials(), PROJECT_ID, INSTANCE_ID).await;
    // A slow SWR: while one replica waits for an answer, the other claims.
    swr.answer_after(Duration::from_millis(300));
    let digests: Vec<String> = (0..20).map(|i| format!("sha256:{i:064x}")).collect();
    for (i, digest) in digests.iter().enumerate() {
        swr.put_artifact("team-a", "api", digest, &[&format!("r{i}")]);
    }
    let mut replicas = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().expect("dir");
        let port = free_port();
        let config = process_config(port, &hss.uri(), &swr.uri(), &database.url);
        replicas.push(BridgeProcess::start_in(dir.path(), &config, &[]).await);
        dirs.push(dir);
    }
    // Every digest through the first replica: the second finds them in the
    // shared store when it next looks, and both resolvers compete for them.
    let all: Vec<&str> = digests.iter().map(String::as_str).collect();
    let response = reqwest::Client::new()
        .post(replicas[0].url("/webhooks/swr-ee"))
        .header("Content-Type", "application/json")
        .header("Authorization", TOKEN_NEW)
        .body(digest_push("api", &all))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202);
    let expected: BTreeMap<String, usize> = (0..20).map(|i| (format!("r{i}"), 1)).collect();
    wait_until(Duration::from_secs(30), "every tag scanned", || async {
        scanned_tags(&hss).len() == expected.len()
    })
    .await;
    // Settled: give a second resolution (if there were one) time to show.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(scanned_tags(&hss), expected);
    let mut asked: Vec<String> = swr
        .requests()
        .iter()
        .map(|request| request.path.clone())
        .collect();
    asked.sort();
    let before = asked.len();
    asked.dedup();
    assert_eq!(before, asked.len(), "a digest was asked of SWR twice");
    assert_eq!(asked.len(), digests.len());
    assert!(swr.requests_with_bad_signature().is_empty());
    wait_until(
        Duration::from_secs(10),
        "every resolution logged",
        || async {
            replicas
                .iter()
                .map(|replica| replica.logs().matches("\"outcome\":\"resolved\"").count())
                .sum::<usize>()
                >= digests.len()
        },
    )
    .await;
    let resolved_by: Vec<usize> = replicas
        .iter()
        .map(|replica| replica.logs().matches("\"outcome\":\"resolved\"").count())
        .collect();
    assert_eq!(
        resolved_by.iter().sum::<usize>(),
        digests.len(),
        "{resolved_by:?}"
    );
    assert!(
        resolved_by.iter().all(|count| *count > 0),
        "both replicas took part: {resolved_by:?}"
    );
}
