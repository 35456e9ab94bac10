//! HSS outage: HSS answers 503 (with and without `Retry-After`), or refuses
//! connections, for a sustained period, then recovers. Nothing acknowledged is
//! lost, retries are bounded and spread (the retries after recovery are not one
//! synchronized burst), and only a permanent refusal makes a dead letter.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;
use swr_scan_bridge::config::RawSettings;

use crate::common::fake_hss::{FakeHss, Reply};
use crate::common::helpers::*;
use crate::reliability::support::*;

/// One source, hence one partition (by enterprise project), per index.
const PARTITIONS: usize = 24;
const IMAGES_PER_PARTITION: usize = 5;
const OUTAGE: Duration = Duration::from_secs(4);
/// Ceilings 400, 800, 1600 ms: by the end of the outage every batch has failed
/// at least twice, so its pending retry is spread over at least 800 ms.
const RETRY_BASE_MS: u64 = 400;
const RETRY_MAX_MS: u64 = 1_600;
/// A batch retried more often than this during the outage was not backing off.
const MAX_ATTEMPTS_PER_BATCH: usize = 25;
/// "A synchronized burst": more than `BURST_LIMIT` of the 24 partitions got
/// through within one `BURST_SPAN` after recovery. Spread as the backoff
/// spreads them (uniform over 800 or 1600 ms, or the sum of two jitters of
/// 400 and 800 ms as with `Retry-After`), 18 was the most seen in 60 000
/// simulations; in lockstep they all come back within the ~150 ms it takes
/// to claim and send 24 batches four at a time.
const BURST_SPAN: Duration = Duration::from_millis(200);
const BURST_LIMIT: usize = 18;

#[derive(Debug, Clone, Copy)]
enum Outage {
    /// Every request is answered 503, optionally with `Retry-After: <s>`.
    Unavailable { retry_after_s: Option<u64> },
    /// Nothing listens: every connection is refused.
    Refused,
}

fn partition_source(index: usize) -> String {
    format!("p{index:02}")
}

fn enterprise_project(index: usize) -> String {
    format!("ep-{index:02}")
}

/// Adds `PARTITIONS` harbor/token sources, each its own enterprise project.
fn with_partitions(settings: &mut RawSettings) {
    settings.batch.window_ms = 200;
    settings.batch.retry_base_ms = RETRY_BASE_MS;
    settings.batch.retry_max_ms = RETRY_MAX_MS;
    let template = settings
        .sources
        .iter()
        .find(|source| source.name == "filtered")
        .cloned()
        .expect("base config has the filtered source");
    for index in 0..PARTITIONS {
        let mut source = template.clone();
        source.name = partition_source(index);
        source.filter = Default::default();
        source.enterprise_project_id = Some(enterprise_project(index));
        settings.sources.push(source);
    }
}

/// One Harbor webhook naming `tags` of `team-a/svc`.
fn harbor_push_many(tags: &[String]) -> Vec<u8> {
    let resources: Vec<_> = tags
        .iter()
        .map(|tag| {
            json!({
                "digest": "sha256:9f3d7a2c1b0e4d5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f",
                "tag": tag,
                "resource_url": format!("ee-demo.swr.cn-north-4.myhuaweicloud.com/team-a/svc:{tag}")
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "type": "PUSH_ARTIFACT",
        "occur_at": 1795859400,
        "operator": "ci",
        "event_data": {
            "resources": resources,
            "repository": {
                "name": "svc",
                "namespace": "team-a",
                "repo_full_name": "team-a/svc",
                "repo_type": "private"
            }
        }
    }))
    .expect("json")
}

/// The most of `instants` that fall within any one `span`.
fn most_within(instants: &[Duration], span: Duration) -> usize {
    let mut sorted = instants.to_vec();
    sorted.sort();
    (0..sorted.len())
        .map(|start| {
            sorted[start..]
                .iter()
                .take_while(|at| **at - sorted[start] <= span)
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn outage_then_recovery(scenario: &'static str, outage: Outage) {
    let mut summary = Summary::start(scenario);
    // For `Refused`, the port is bound but not listening (connections are
    // refused) and only listens once HSS "recovers".
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let refused_endpoint = format!("http://{}", socket.local_addr().expect("local addr"));
    let early_hss = match outage {
        Outage::Unavailable { retry_after_s } => {
            let hss = FakeHss::start(AK, SK).await;
            let mut reply = Reply::error(503, "HSS.0503", "Service temporarily unavailable");
            if let Some(seconds) = retry_after_s {
                reply = reply.with_header("Retry-After", &seconds.to_string());
            }
            hss.answer_all_with(reply);
            Some(hss)
        }
        Outage::Refused => None,
    };
    let endpoint = early_hss.as_ref().map_or(refused_endpoint, |hss| hss.uri());
    let app = spawn_app_with(&endpoint, with_partitions).await;

    let mut acknowledged = Vec::new();
    let pushes = (0..PARTITIONS).map(|index| {
        let tags: Vec<String> = (0..IMAGES_PER_PARTITION)
            .map(|j| format!("p{index:02}-{j}"))
            .collect();
        let body = harbor_push_many(&tags);
        let app = &app;
        async move {
            let response = app
                .post_webhook(&partition_source(index), &body, &token(TOKEN_NEW))
                .await;
            assert_eq!(response.status(), 202);
            let answer: serde_json::Value = response.json().await.expect("json");
            assert_eq!(answer["accepted"], IMAGES_PER_PARTITION);
            tags
        }
    });
    for tags in join_all(pushes).await {
        acknowledged.extend(
            tags.into_iter()
                .map(|t| format!("private_image|team-a/svc:{t}")),
        );
    }

    tokio::time::sleep(OUTAGE).await;
    let retries_during_outage = metric(&app, "swr_scan_bridge_hss_retries_total").await as usize;
    let attempts_during_outage = early_hss.as_ref().map_or(0, |hss| hss.requests().len());
    assert!(
        retries_during_outage >= PARTITIONS,
        "every batch failed at least once: {retries_during_outage}"
    );
    let dead_during_outage = app.admin_get("/admin/dead-letters").await["dead_letters"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(dead_during_outage, 0, "an outage is not a permanent error");

    let recovered_at = Instant::now();
    let hss = match early_hss {
        Some(hss) => {
            hss.answer_accepted();
            hss
        }
        None => {
            let listener = socket
                .listen(1024)
                .expect("listen")
                .into_std()
                .expect("std");
            FakeHss::start_on(listener, AK, SK).await
        }
    };
    wait_until(
        Duration::from_secs(30),
        "every acknowledged image delivered after recovery",
        || async {
            let delivered = delivered_images(&hss);
            acknowledged
                .iter()
                .all(|image| delivered.contains_key(image))
                && app.pending_count().await == 0
        },
    )
    .await;

    // Per partition: attempts during the outage, and when its batch got through.
    let mut attempts: BTreeMap<String, usize> = BTreeMap::new();
    let mut first_success: BTreeMap<String, Duration> = BTreeMap::new();
    for request in hss.requests() {
        let partition = request
            .query
            .iter()
            .find(|(key, _)| key == "enterprise_project_id")
            .map(|(_, value)| value.clone())
            .unwrap_or_default();
        if request.received_at < recovered_at {
            *attempts.entry(partition.clone()).or_insert(0) += 1;
        } else if (200..300).contains(&request.status) {
            first_success
                .entry(partition)
                .or_insert(request.received_at - recovered_at);
        }
    }
    assert_eq!(first_success.len(), PARTITIONS, "{first_success:?}");
    let most_attempts = attempts.values().copied().max().unwrap_or(0);
    assert!(
        most_attempts <= MAX_ATTEMPTS_PER_BATCH,
        "a batch was tried {most_attempts} times in {OUTAGE:?}: {attempts:?}"
    );
    assert!(
        retries_during_outage <= PARTITIONS * MAX_ATTEMPTS_PER_BATCH,
        "{retries_during_outage} retries for {PARTITIONS} batches in {OUTAGE:?}"
    );
    let offsets: Vec<Duration> = first_success.values().copied().collect();
    let burst = most_within(&offsets, BURST_SPAN);
    assert!(
        burst <= BURST_LIMIT,
        "{burst} of {PARTITIONS} partitions retried within {BURST_SPAN:?} after recovery: {first_success:?}"
    );
    let delivered = delivered_images(&hss);
    let duplicates: usize = delivered.values().map(|count| count - 1).sum();
    assert_eq!(duplicates, 0, "a 503 or a refused connection took nothing");
    assert!(hss.requests_with_bad_signature().is_empty());

    // A permanent refusal, by contrast, is a dead letter at once.
    hss.respond_with_sequence(vec![Reply::error(
        400,
        "HSS.1001",
        "invalid image information",
    )]);
    let body = harbor_push_many(&["refused".to_string()]);
    let response = app
        .post_webhook(&partition_source(0), &body, &token(TOKEN_NEW))
        .await;
    assert_eq!(response.status(), 202);
    wait_until(
        Duration::from_secs(15),
        "the refused batch dead-lettered",
        || async { app.pending_count().await == 0 },
    )
    .await;
    let letters = app.admin_get("/admin/dead-letters").await["dead_letters"].clone();
    let letters = letters.as_array().cloned().unwrap_or_default();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["images"][0]["image"]["tag"], "refused");
    assert_eq!(letters[0]["cause"]["error_code"], "HSS.1001");
    assert_eq!(letters[0]["attempts"], 1);
    let dead_lettered = metric(&app, "swr_scan_bridge_dead_lettered_images_total").await;
    assert_eq!(dead_lettered, 1.0);

    let spread = offsets.iter().max().copied().unwrap_or_default()
        - offsets.iter().min().copied().unwrap_or_default();
    summary
        .count("partitions", PARTITIONS)
        .count("images_acknowledged", acknowledged.len())
        .count("images_delivered", delivered.len())
        .count(
            "lost",
            acknowledged
                .iter()
                .filter(|i| !delivered.contains_key(*i))
                .count(),
        )
        .count("outage_ms", OUTAGE.as_millis())
        .count("hss_requests_during_outage", attempts_during_outage)
        .count("retries_during_outage", retries_during_outage)
        .count("max_attempts_one_batch", most_attempts)
        .count("recovery_spread_ms", spread.as_millis())
        .count("max_retries_within_200ms", burst)
        .count("duplicates", duplicates)
        .count("dead_letters", letters.len());
    summary.print();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hss_answering_503_then_recovering_loses_nothing_and_spreads_retries() {
    outage_then_recovery(
        "hss_outage_503",
        Outage::Unavailable {
            retry_after_s: None,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hss_503_with_retry_after_does_not_synchronize_the_retries() {
    outage_then_recovery(
        "hss_outage_503_retry_after",
        Outage::Unavailable {
            retry_after_s: Some(2),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hss_refusing_connections_then_listening_loses_nothing() {
    outage_then_recovery("hss_outage_refused", Outage::Refused).await;
}
