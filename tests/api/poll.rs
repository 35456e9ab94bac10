//! Poll sources (SWR basic edition) end to end: the real application polls a
//! fake SWR API that checks signatures and pages like SWR, and sends what it
//! finds to a fake HSS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use swr_scan_bridge::config::raw::RawSource;
use swr_scan_bridge::config::{PollSettings, RawSettings, Settings};
use swr_scan_bridge::startup::Application;

use crate::common::fake_hss::FakeHss;
use crate::common::fake_swr_basic::FakeSwr;
use crate::common::helpers::*;
use crate::common::postgres_support::FreshDatabase;
use crate::common::prometheus_text::Scrape;

const SOURCE: &str = "swr-basic";
const DIGEST_A: &str = "sha256:aaaa000000000000000000000000000000000000000000000000000000000001";
const DIGEST_B: &str = "sha256:bbbb000000000000000000000000000000000000000000000000000000000002";
const DIGEST_C: &str = "sha256:cccc000000000000000000000000000000000000000000000000000000000003";
/// Long before any test runs: content the first poll finds.
const LAST_YEAR_MS: i64 = 1_700_000_000_000;
const WAIT: Duration = Duration::from_secs(20);

fn poll_source(extra: &str) -> RawSource {
    toml::from_str(&format!(
        r#"
name = "{SOURCE}"
format = "swr-poll"
image_type = "private_image"
[poll]
interval_ms = 1000
{extra}
[filter]
exclude = ["**:*-cache"]
"#
    ))
    .expect("poll source")
}

fn settings(hss: &FakeHss, swr: &FakeSwr, store_url: &str, poll_extra: &str) -> Settings {
    let mut raw = RawSettings::from_toml(&base_config(&hss.uri(), store_url)).expect("base config");
    raw.swr.endpoint = Some(swr.uri());
    raw.batch.window_ms = 200;
    raw.sources.push(poll_source(poll_extra));
    Settings::parse(&raw).expect("valid with a poll source")
}

struct Bridge {
    address: String,
    stopper: Arc<Notify>,
    server: tokio::task::JoinHandle<()>,
}

impl Bridge {
    async fn start(settings: Settings) -> Bridge {
        let app = Application::build(settings).await.expect("app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let stopper = app.stopper();
        let server = tokio::spawn(async move { app.run_until_stopped().await.expect("runs") });
        Bridge {
            address,
            stopper,
            server,
        }
    }

    async fn scrape(&self) -> Scrape {
        let text = reqwest::get(format!("{}/metrics", self.address))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        Scrape::parse(&text).expect("exposition")
    }

    /// `/admin/history` for `image`: its events' `(event, reason)`.
    async fn history(&self, image: &str) -> Vec<(String, Option<String>)> {
        let body: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/admin/history", self.address))
            .query(&[("image", image)])
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("history JSON");
        body["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|event| {
                (
                    event["event"].as_str().unwrap_or_default().to_string(),
                    event["reason"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    async fn polls(&self, outcome: &str) -> f64 {
        self.scrape()
            .await
            .value(
                "swr_scan_bridge_swr_polls_total",
                &[("source", SOURCE), ("outcome", outcome)],
            )
            .unwrap_or(0.0)
    }

    /// Waits for `more` polls with this outcome after the ones counted so far.
    async fn wait_for_polls(&self, outcome: &str, more: f64) {
        let target = self.polls(outcome).await + more;
        let what = format!("{more} more {outcome} polls");
        wait_until(WAIT, &what, || async {
            self.polls(outcome).await >= target
        })
        .await;
    }

    async fn stop(self) {
        self.stopper.notify_one();
        self.server.await.expect("app ends cleanly");
    }
}

/// How often HSS was asked to scan each `namespace/name:tag`.
fn scanned(hss: &FakeHss) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for batch in hss.received_batches() {
        assert_eq!(batch["image_type"], "private_image");
        for image in batch["image_info_list"].as_array().expect("image list") {
            let key = format!(
                "{}/{}:{}",
                image["namespace"].as_str().expect("namespace"),
                image["image_name"].as_str().expect("image_name"),
                image["image_version"].as_str().expect("image_version"),
            );
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

fn expect_scanned(hss: &FakeHss, images: &[&str]) -> bool {
    let counts = scanned(hss);
    images.iter().all(|image| counts.contains_key(*image))
}

fn once(images: &[&str]) -> BTreeMap<String, usize> {
    images.iter().map(|image| (image.to_string(), 1)).collect()
}

fn seed_last_year(swr: &FakeSwr) {
    swr.push_at("team-a", "api", "1.0", DIGEST_A, LAST_YEAR_MS);
    swr.push_at("team-a", "tools/cli", "2.0", DIGEST_A, LAST_YEAR_MS + 1);
    swr.push_at("team-b", "web", "latest", DIGEST_A, LAST_YEAR_MS + 2);
}

#[tokio::test]
async fn new_tags_and_moved_tags_are_scanned_once_and_the_baseline_never() {
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(AK, SK).await;
    seed_last_year(&swr);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("sqlite://{}/bridge.db", dir.path().display());
    let bridge = Bridge::start(settings(&hss, &swr, &store, "")).await;
    bridge.wait_for_polls("success", 1.0).await;

    swr.push("team-a", "api", "1.1", DIGEST_B);
    swr.push("team-a", "tools/cli", "2.0", DIGEST_B);
    swr.push("team-a", "api", "build-cache", DIGEST_C);
    swr.push("team-c", "new-repo", "0.1", DIGEST_C);
    let expected = [
        "team-a/api:1.1",
        "team-a/tools/cli:2.0",
        "team-c/new-repo:0.1",
    ];
    wait_until(WAIT, "the new tags reach HSS", || async {
        expect_scanned(&hss, &expected)
    })
    .await;
    bridge.wait_for_polls("success", 3.0).await;
    assert_eq!(
        scanned(&hss),
        once(&expected),
        "each once; baseline and filtered: never"
    );
    assert_eq!(
        bridge.history("team-a/api:build-cache").await,
        [("ignored".to_string(), Some("filtered_out".to_string()))],
        "a filtered tag's history says why it was not scanned"
    );
    assert_eq!(
        bridge
            .history("team-a/api:1.1")
            .await
            .first()
            .map(|e| e.0.as_str()),
        Some("accepted")
    );

    let requests = swr.requests();
    assert!(swr.requests_with_bad_signature().is_empty());
    assert!(
        requests
            .iter()
            .any(|r| r.path.ends_with("/repos/tools%24cli/tags")),
        "a / in a repository name travels as $: {:?}",
        requests.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    let scrape = bridge.scrape().await;
    assert_eq!(
        scrape.get(
            "swr_scan_bridge_swr_poll_tags_found_total",
            &[("source", SOURCE)]
        ),
        4.0,
        "1.1, the moved 2.0, build-cache and 0.1"
    );
    assert_eq!(
        scrape.get(
            "swr_scan_bridge_images_total",
            &[
                ("source", SOURCE),
                ("outcome", "ignored"),
                ("reason", "filtered_out")
            ]
        ),
        1.0
    );
    assert!(
        scrape.get(
            "swr_scan_bridge_swr_poll_last_success_timestamp_seconds",
            &[("source", SOURCE)]
        ) > 1.7e9
    );
    for outcome in ["error", "auth_error"] {
        assert_eq!(
            scrape.get(
                "swr_scan_bridge_swr_polls_total",
                &[("source", SOURCE), ("outcome", outcome)]
            ),
            0.0,
            "initialised at zero"
        );
    }
    bridge.stop().await;
}

#[tokio::test]
async fn scan_existing_enqueues_what_the_first_poll_finds() {
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(AK, SK).await;
    seed_last_year(&swr);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("sqlite://{}/bridge.db", dir.path().display());
    let bridge = Bridge::start(settings(&hss, &swr, &store, "scan_existing = true")).await;
    let existing = [
        "team-a/api:1.0",
        "team-a/tools/cli:2.0",
        "team-b/web:latest",
    ];
    wait_until(WAIT, "the existing tags reach HSS", || async {
        expect_scanned(&hss, &existing)
    })
    .await;
    bridge.wait_for_polls("success", 2.0).await;
    assert_eq!(scanned(&hss), once(&existing));
    bridge.stop().await;
}

#[tokio::test]
async fn a_push_made_while_the_bridge_was_down_is_scanned_after_restart() {
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(AK, SK).await;
    seed_last_year(&swr);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("sqlite://{}/bridge.db", dir.path().display());
    let bridge = Bridge::start(settings(&hss, &swr, &store, "")).await;
    bridge.wait_for_polls("success", 1.0).await;
    swr.push("team-a", "api", "1.1", DIGEST_B);
    wait_until(WAIT, "1.1 reaches HSS", || async {
        expect_scanned(&hss, &["team-a/api:1.1"])
    })
    .await;
    bridge.stop().await;

    swr.push("team-a", "api", "1.2", DIGEST_C);
    swr.push("team-b", "web", "latest", DIGEST_B);
    let bridge = Bridge::start(settings(&hss, &swr, &store, "")).await;
    let expected = ["team-a/api:1.1", "team-a/api:1.2", "team-b/web:latest"];
    wait_until(WAIT, "the pushes made meanwhile reach HSS", || async {
        expect_scanned(&hss, &expected)
    })
    .await;
    bridge.wait_for_polls("success", 2.0).await;
    assert_eq!(
        scanned(&hss),
        once(&expected),
        "the restart is no new baseline and repeats nothing"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn swr_failures_are_counted_retried_and_lose_nothing() {
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(AK, SK).await;
    seed_last_year(&swr);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("sqlite://{}/bridge.db", dir.path().display());
    let bridge = Bridge::start(settings(&hss, &swr, &store, "")).await;
    bridge.wait_for_polls("success", 1.0).await;

    swr.answer_all_with(500);
    swr.push("team-a", "api", "1.1", DIGEST_B);
    bridge.wait_for_polls("error", 2.0).await;
    let ready = reqwest::get(format!("{}/readyz", bridge.address))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200, "the webhook side is unaffected");
    swr.answer_all_with(403);
    bridge.wait_for_polls("auth_error", 1.0).await;
    assert!(scanned(&hss).is_empty());

    swr.answer_normally();
    swr.push("team-a", "tools/cli", "2.1", DIGEST_C);
    let expected = ["team-a/api:1.1", "team-a/tools/cli:2.1"];
    wait_until(
        WAIT,
        "the tags pushed during the outage reach HSS",
        || async { expect_scanned(&hss, &expected) },
    )
    .await;
    bridge.wait_for_polls("success", 2.0).await;
    assert_eq!(scanned(&hss), once(&expected));
    let scrape = bridge.scrape().await;
    assert!(
        scrape.get(
            "swr_scan_bridge_swr_requests_total",
            &[("operation", "list_repos_details"), ("status_class", "5xx")]
        ) >= 2.0
    );
    bridge.stop().await;
}

#[tokio::test]
async fn only_the_configured_namespaces_are_polled_each_with_its_own_baseline() {
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(AK, SK).await;
    seed_last_year(&swr);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("sqlite://{}/bridge.db", dir.path().display());
    let namespaces = "namespaces = [\"team-a\", \"team-c\"]";
    let bridge = Bridge::start(settings(&hss, &swr, &store, namespaces)).await;
    bridge.wait_for_polls("success", 1.0).await;
    swr.push("team-a", "api", "1.1", DIGEST_B);
    swr.push("team-b", "web", "2.0", DIGEST_B);
    swr.push("team-c", "new-repo", "0.1", DIGEST_C);
    let expected = ["team-a/api:1.1", "team-c/new-repo:0.1"];
    wait_until(WAIT, "the watched namespaces' pushes reach HSS", || async {
        expect_scanned(&hss, &expected)
    })
    .await;
    bridge.wait_for_polls("success", 2.0).await;
    assert_eq!(scanned(&hss), once(&expected), "team-b is not watched");
    let listed: Vec<String> = swr
        .requests()
        .iter()
        .filter(|r| r.operation == "list_repos_details")
        .filter_map(|r| {
            r.query
                .iter()
                .find(|(key, _)| key == "namespace")
                .map(|(_, value)| value.clone())
        })
        .collect();
    assert!(listed.contains(&"team-a".to_string()) && listed.contains(&"team-c".to_string()));
    assert!(!listed.contains(&"team-b".to_string()));
    bridge.stop().await;
}

#[tokio::test]
async fn a_webhook_to_a_poll_source_is_answered_as_an_unknown_source() {
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(AK, SK).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("sqlite://{}/bridge.db", dir.path().display());
    let bridge = Bridge::start(settings(&hss, &swr, &store, "")).await;
    let answer = reqwest::Client::new()
        .post(format!("{}/webhooks/{SOURCE}", bridge.address))
        .header("Content-Type", "application/json")
        .body(harbor_push("team-a", "api", "1.0"))
        .send()
        .await
        .expect("post");
    assert_eq!(answer.status(), 404);
    let body: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(body["error"], "unknown_source");
    bridge.stop().await;
}

#[tokio::test]
async fn three_replicas_on_postgresql_enqueue_each_new_tag_once() {
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(AK, SK).await;
    seed_last_year(&swr);
    let Some(database) = FreshDatabase::create().await else {
        return;
    };
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Bridge::start(settings(&hss, &swr, &database.url, "")).await);
    }
    wait_until(WAIT, "the baseline is recorded", || async {
        !database
            .query_strings("SELECT scope FROM poll_watermarks")
            .await
            .is_empty()
    })
    .await;
    let mut expected = Vec::new();
    for i in 0..6 {
        let tag = format!("1.{i}");
        swr.push("team-a", &format!("svc-{}", i % 3), &tag, DIGEST_B);
        expected.push(format!("team-a/svc-{}:{tag}", i % 3));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    wait_until(WAIT, "every new tag reaches HSS", || async {
        expect_scanned(&hss, &expected)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(scanned(&hss), once(&expected));

    let mut polling = Vec::new();
    for (index, replica) in replicas.iter().enumerate() {
        if replica.polls("success").await > 0.0 {
            polling.push(index);
        }
    }
    assert_eq!(polling.len(), 1, "one replica holds the lease: {polling:?}");

    // The leader leaves (its lease is given up on the way out): another takes over.
    let leader = replicas.remove(polling[0]);
    leader.stop().await;
    swr.push("team-b", "web", "2.0", DIGEST_C);
    wait_until(WAIT, "a push after the leader left reaches HSS", || async {
        expect_scanned(&hss, &["team-b/web:2.0"])
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(scanned(&hss)["team-b/web:2.0"], 1);
    for replica in replicas {
        replica.stop().await;
    }
}

#[test]
fn check_config_refuses_poll_sources_that_cannot_work() {
    let base = base_config("https://hss.example.com", "sqlite://./x.db");
    let with = |source: &str| Settings::from_toml(&format!("{base}\n[[sources]]\n{source}"));
    let reason = |source: &str| match with(source) {
        Ok(_) => panic!("accepted: {source}"),
        Err(error) => error.to_string(),
    };
    let valid = "name = \"basic\"\nformat = \"swr-poll\"\nimage_type = \"shared_image\"";
    let settings = with(valid).expect("defaults are enough");
    let poll = settings.source("basic").expect("source");
    assert_eq!(
        poll.poll(),
        Some(&PollSettings {
            interval: Duration::from_secs(30),
            namespaces: None,
            scan_existing: false,
        }),
        "absent: every default applies"
    );

    assert!(
        reason(&format!(
            "{valid}\n[sources.verify]\nscheme = \"token\"\nsecrets = [\"x\"]"
        ))
        .contains("sources[4].verify")
    );
    assert!(
        reason(&format!(
            "{}\ninstance_id = \"i\"",
            valid.replace("shared_image", "instance_image")
        ))
        .contains("sources[4].image_type")
    );
    assert!(
        reason(&format!("{valid}\n[sources.poll]\ninterval_ms = 200"))
            .contains("sources[4].poll.interval_ms")
    );
    assert!(
        reason(&format!("{valid}\n[sources.poll]\nnamespaces = []"))
            .contains("sources[4].poll.namespaces")
    );
    assert!(
        reason("name = \"hook\"\nformat = \"harbor\"\nimage_type = \"private_image\"")
            .contains("sources[4].verify")
    );
}
