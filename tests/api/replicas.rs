//! Several bridge processes on one PostgreSQL database behind a round-robin
//! "load balancer": one HSS request per partition per window across the
//! cluster, takeover after a replica dies, and survival of a database restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;

use crate::common::fake_hss::{FakeHss, Reply};
use crate::common::helpers::*;
use crate::common::postgres_support::{FreshDatabase, PrivateCluster};
use crate::common::process::{BridgeProcess, free_port};

fn replica_config(port: u16, hss: &str, store_url: &str, window_ms: u64) -> String {
    base_config(hss, store_url)
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace("window_ms = 60000", &format!("window_ms = {window_ms}"))
        .replace("lease_ms = 30000", "lease_ms = 3000")
        .replace("[store]", "[log]\nformat = \"json\"\n\n[store]")
}

async fn start_replicas(
    count: usize,
    hss: &FakeHss,
    store_url: &str,
    window_ms: u64,
) -> (Vec<BridgeProcess>, Vec<tempfile::TempDir>) {
    let mut replicas = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..count {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = replica_config(port, &hss.uri(), store_url, window_ms);
        replicas.push(BridgeProcess::start_in(dir.path(), &config, &[]).await);
        dirs.push(dir);
    }
    (replicas, dirs)
}

/// Posts one Harbor push per tag, round-robin over `targets`; returns the
/// tags acknowledged with 202 and how many answers were 503.
async fn push_round_robin(
    targets: &[String],
    name: &str,
    tags: Vec<String>,
) -> (BTreeSet<String>, usize) {
    let client = reqwest::Client::new();
    let pushes = tags.into_iter().enumerate().map(|(i, tag)| {
        let url = format!("{}/webhooks/swr-ee", targets[i % targets.len()]);
        let client = client.clone();
        let body = harbor_push("team-a", name, &tag);
        async move {
            let status = client
                .post(url)
                .header("Content-Type", "application/json")
                .header("Authorization", TOKEN_NEW)
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            (tag, status)
        }
    });
    let answers = join_all(pushes).await;
    let acknowledged = answers
        .iter()
        .filter(|(_, s)| *s == 202)
        .map(|(t, _)| t.clone())
        .collect();
    let unavailable = answers.iter().filter(|(_, s)| *s == 503).count();
    (acknowledged, unavailable)
}

/// Delivered tags → how many 2xx-answered requests carried each.
fn deliveries(hss: &FakeHss) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for batch in hss.received_batches() {
        for item in batch["image_info_list"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(tag) = item["image_version"].as_str() {
                *seen.entry(tag.to_string()).or_insert(0) += 1;
            }
        }
    }
    seen
}

fn addresses(replicas: &[BridgeProcess]) -> Vec<String> {
    replicas.iter().map(|r| r.address.clone()).collect()
}

#[tokio::test]
async fn three_replicas_send_one_request_per_partition_per_window() {
    let Some(database) = FreshDatabase::create().await else {
        return;
    };
    let hss = FakeHss::start(AK, SK).await;
    let (replicas, _dirs) = start_replicas(3, &hss, &database.url, 3_000).await;
    let targets = addresses(&replicas);

    let tags: Vec<String> = (0..90).map(|i| format!("w1-{i}")).collect();
    let (acknowledged, _) = push_round_robin(&targets, "api", tags).await;
    assert_eq!(acknowledged.len(), 90);
    // A second partition, pushed through every replica too.
    let client = reqwest::Client::new();
    for (i, target) in targets.iter().enumerate() {
        let body = sample("harbor-cloudevents-push.json");
        let headers = standard_webhooks(WHSEC_A, &format!("msg_rr_{i}"), now(), &body);
        let mut request = client
            .post(format!("{target}/webhooks/harbor-ce"))
            .header("Content-Type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        assert_eq!(request.send().await.expect("sent").status(), 202);
    }

    wait_until(Duration::from_secs(20), "all images delivered", || async {
        acknowledged
            .iter()
            .all(|tag| deliveries(&hss).contains_key(tag))
            && hss.received_batches().len() >= 2
    })
    .await;
    // Let any (wrong) extra flush of another replica show up.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let batches: Vec<Value> = hss.received_batches();
    let mut per_type: BTreeMap<String, usize> = BTreeMap::new();
    for batch in &batches {
        *per_type
            .entry(batch["image_type"].as_str().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(
        per_type,
        BTreeMap::from([
            ("instance_image".to_string(), 1),
            ("private_image".to_string(), 1)
        ]),
        "one request per partition for the whole cluster"
    );
    assert!(
        deliveries(&hss).values().all(|&n| n == 1),
        "no image sent twice"
    );
    assert!(hss.requests_with_bad_signature().is_empty());
}

#[tokio::test]
async fn a_replica_killed_mid_flush_has_its_batch_delivered_by_another() {
    let Some(database) = FreshDatabase::create().await else {
        return;
    };
    let hss = FakeHss::start(AK, SK).await;
    // The first attempt hangs (and fails): whoever sends it dies meanwhile.
    hss.respond_with_sequence(vec![Reply::status(503).delayed(Duration::from_secs(4))]);
    let (mut replicas, _dirs) = start_replicas(3, &hss, &database.url, 500).await;
    let targets = addresses(&replicas);
    let (acknowledged, _) =
        push_round_robin(&targets, "api", (0..30).map(|i| format!("k-{i}")).collect()).await;
    assert_eq!(acknowledged.len(), 30);

    wait_until(Duration::from_secs(10), "a batch in flight", || async {
        !hss.requests().is_empty()
    })
    .await;
    let owners = database
        .query_strings(
            "SELECT owner FROM batches WHERE owner IS NOT NULL AND lease_until IS NOT NULL",
        )
        .await;
    assert_eq!(owners.len(), 1, "one batch in flight: {owners:?}");
    // Lease owners are `{host}-{pid}-{suffix}`.
    let pid: u32 = owners[0]
        .rsplit('-')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("pid in lease owner");
    let victim = replicas
        .iter()
        .position(|r| r.pid() == Some(pid))
        .expect("the lease owner is one of our replicas");
    replicas[victim].kill().await;

    wait_until(
        Duration::from_secs(20),
        "the orphaned batch delivered",
        || async {
            acknowledged
                .iter()
                .all(|tag| deliveries(&hss).contains_key(tag))
        },
    )
    .await;
    // The hung first request already carried every tag (one window's batch),
    // so wait for the survivor's own send of the batch to end.
    let survivors_logs = || -> String {
        replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, r)| r.logs())
            .collect()
    };
    wait_until(
        Duration::from_secs(20),
        "taken over after the lease",
        || async { survivors_logs().contains("\"attempt\":2") },
    )
    .await;
}

#[tokio::test]
async fn a_database_restart_during_load_loses_nothing() {
    let Some(cluster) = PrivateCluster::start(free_port()) else {
        return;
    };
    let hss = FakeHss::start(AK, SK).await;
    let store_url = cluster.url("postgres");
    let (replicas, _dirs) = start_replicas(2, &hss, &store_url, 300).await;
    let targets = addresses(&replicas);
    let client = reqwest::Client::new();

    let (mut acknowledged, _) = push_round_robin(
        &targets,
        "api",
        (0..20).map(|i| format!("before-{i}")).collect(),
    )
    .await;
    assert_eq!(acknowledged.len(), 20);

    cluster.halt();
    let (during, unavailable) = push_round_robin(
        &targets,
        "api",
        (0..20).map(|i| format!("during-{i}")).collect(),
    )
    .await;
    assert!(
        during.is_empty(),
        "nothing can be acknowledged without the database: {during:?}"
    );
    assert_eq!(unavailable, 20, "the sender is told to retry (503)");
    for target in &targets {
        let ready = client
            .get(format!("{target}/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 503, "not ready while the database is down");
    }

    cluster.resume();
    wait_until(
        Duration::from_secs(30),
        "replicas ready again without restart",
        || async {
            let mut all = true;
            for target in &targets {
                all &= client
                    .get(format!("{target}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
            }
            all
        },
    )
    .await;
    let (after, _) = push_round_robin(
        &targets,
        "api",
        (0..20).map(|i| format!("after-{i}")).collect(),
    )
    .await;
    assert_eq!(after.len(), 20);
    acknowledged.extend(after);

    wait_until(
        Duration::from_secs(30),
        "every acknowledged image delivered",
        || async {
            acknowledged
                .iter()
                .all(|tag| deliveries(&hss).contains_key(tag))
        },
    )
    .await;
    drop(replicas);
}
