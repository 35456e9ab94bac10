//! Crash safety: the bridge is SIGKILLed right after acknowledging a burst
//! (with a batch in flight), restarted on the same database file, and every
//! acknowledged image still reaches HSS.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;

use crate::common::fake_hss::{FakeHss, Reply};
use crate::common::helpers::*;
use crate::common::process::{BridgeProcess, free_port};

fn config(port: u16, hss: &str, db: &std::path::Path) -> String {
    let base = base_config(hss, &format!("sqlite://{}", db.display()));
    base.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    )
    .replace("window_ms = 60000", "window_ms = 300")
    .replace("lease_ms = 30000", "lease_ms = 2500")
    .replace(
        "[store]",
        "[log]\nformat = \"json\"\nlevel = \"info\"\n\n[store]",
    )
}

fn delivered_tags(hss: &FakeHss) -> BTreeSet<String> {
    hss.received_batches()
        .iter()
        .flat_map(|batch| {
            batch["image_info_list"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|item| item["image_version"].as_str().map(str::to_string))
        })
        .collect()
}

#[tokio::test]
async fn every_acknowledged_image_survives_a_sigkill() {
    let hss = FakeHss::start(AK, SK).await;
    // The first batch is still waiting for HSS when the process dies, and that
    // attempt fails: its images come back only through the expired lease.
    hss.respond_with_sequence(vec![Reply::status(503).delayed(Duration::from_secs(5))]);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bridge.db");
    let port = free_port();
    let mut bridge = BridgeProcess::start_in(dir.path(), &config(port, &hss.uri(), &db), &[]).await;

    let client = reqwest::Client::new();
    let send = |tag: String| {
        let client = client.clone();
        let url = bridge.url("/webhooks/swr-ee");
        async move {
            let response = client
                .post(url)
                .header("Content-Type", "application/json")
                .header("Authorization", TOKEN_NEW)
                .body(harbor_push("team-a", "api", &tag))
                .send()
                .await;
            match response {
                Ok(r) if r.status() == 202 => Some(tag),
                _ => None,
            }
        }
    };
    let first_burst: Vec<String> = join_all((0..60).map(|i| send(format!("early-{i}"))))
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(
        first_burst.len(),
        60,
        "all pushes acknowledged before the crash"
    );
    // Let the first window close so a batch is in flight, then acknowledge more.
    wait_until(Duration::from_secs(10), "a batch in flight", || async {
        !hss.requests().is_empty()
    })
    .await;
    let second_burst: Vec<String> = join_all((0..60).map(|i| send(format!("late-{i}"))))
        .await
        .into_iter()
        .flatten()
        .collect();
    bridge.kill().await;
    let acknowledged: BTreeSet<String> = first_burst.into_iter().chain(second_burst).collect();
    assert!(acknowledged.len() >= 60);
    let before_restart = delivered_tags(&hss);
    assert!(
        !acknowledged.is_subset(&before_restart),
        "the crash must leave work behind for the test to mean anything"
    );

    let restarted = BridgeProcess::start_in(dir.path(), &config(port, &hss.uri(), &db), &[]).await;
    wait_until(
        Duration::from_secs(30),
        "every acknowledged image delivered",
        || async { acknowledged.is_subset(&delivered_tags(&hss)) },
    )
    .await;
    assert!(hss.requests_with_bad_signature().is_empty());
    // The send's log line follows HSS's answer, so it may come a moment after
    // the fake HSS saw the request that completed the set.
    wait_until(
        Duration::from_secs(10),
        "the in-flight batch taken over after its lease (attempt 2 in the log)",
        || async { restarted.logs().contains("\"attempt\":2") },
    )
    .await;
    drop(restarted);
}
