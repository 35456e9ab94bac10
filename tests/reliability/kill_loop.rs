//! Kill loop: under a steady stream of signed pushes (all three schemes), the
//! bridge binary on its SQLite file is SIGKILLed and restarted ten times.
//! Senders retry a push until it is answered 202, as Harbor does; every image
//! acknowledged with 202 must reach the fake HSS.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::fake_hss::{FakeHss, Reply};
use crate::common::helpers::*;
use crate::common::process::{BridgeProcess, free_port};
use crate::reliability::support::*;

const KILLS: usize = 10;
/// How long each life of the bridge lasts before its SIGKILL: uneven, so the
/// kills land at different points of the window/claim/send/settle cycle.
const LIFETIMES_MS: [u64; KILLS] = [700, 400, 1100, 250, 900, 550, 1300, 350, 800, 600];
const MAX_IMAGES: usize = 25;
/// Each HSS answer takes this long, so kills often find a batch in flight.
const HSS_LATENCY: Duration = Duration::from_millis(150);

fn config(port: u16, hss: &str, db: &std::path::Path) -> String {
    base_config(hss, &format!("sqlite://{}", db.display()))
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace("window_ms = 60000", "window_ms = 200")
        .replace("max_images = 100", &format!("max_images = {MAX_IMAGES}"))
        .replace("lease_ms = 30000", "lease_ms = 2500")
        .replace(
            "[store]",
            "[log]\nformat = \"json\"\nlevel = \"info\"\n\n[store]",
        )
}

#[derive(Default)]
struct PushLog {
    acknowledged: Mutex<BTreeSet<String>>,
    sent: AtomicUsize,
    failed_attempts: AtomicUsize,
    given_up: AtomicUsize,
}

/// Sends pushes of fresh tags from `sender` one after another until `stop`;
/// each is retried every 50 ms until the bridge answers 202.
async fn pusher(sender: Sender, base_url: String, stop: Arc<AtomicBool>, log: Arc<PushLog>) {
    let client = reqwest::Client::new();
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let push = signed_push(sender, &format!("k{n}"));
        log.sent.fetch_add(1, Ordering::SeqCst);
        let mut acknowledged = false;
        for _ in 0..200 {
            // Signed anew per attempt: a standard-webhooks timestamp must be fresh.
            let attempt = signed_push(sender, &format!("k{n}"));
            match send(&client, &base_url, &attempt).await {
                Some((202, _)) => {
                    acknowledged = true;
                    break;
                }
                other => {
                    assert!(
                        !matches!(other, Some((400..=499, _))),
                        "a valid push was refused: {other:?}"
                    );
                    log.failed_attempts.fetch_add(1, Ordering::SeqCst);
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        if acknowledged {
            log.acknowledged
                .lock()
                .expect("push log")
                .insert(push.image.clone());
        } else {
            log.given_up.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lines of the bridge logs where HSS accepted a batch on its second or later attempt.
fn resent_batches(logs: &[String]) -> usize {
    logs.iter()
        .flat_map(|log| log.lines())
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| {
            entry["message"] == "batch accepted by HSS"
                && entry["attempt"].as_u64().is_some_and(|attempt| attempt > 1)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_ten_times_under_steady_pushes_loses_no_acknowledged_image() {
    let mut summary = Summary::start("kill_loop");
    let hss = FakeHss::start(AK, SK).await;
    hss.answer_all_with(Reply::accepted().delayed(HSS_LATENCY));
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bridge.db");
    let port = free_port();
    let config = config(port, &hss.uri(), &db);
    let mut bridge = BridgeProcess::start_in(dir.path(), &config, &[]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(PushLog::default());
    let pushers: Vec<_> = Sender::ALL
        .into_iter()
        .map(|sender| {
            tokio::spawn(pusher(
                sender,
                bridge.address.clone(),
                stop.clone(),
                log.clone(),
            ))
        })
        .collect();

    let mut logs = Vec::new();
    for lifetime in &LIFETIMES_MS {
        tokio::time::sleep(Duration::from_millis(*lifetime)).await;
        bridge.kill().await;
        logs.push(bridge.logs());
        bridge = BridgeProcess::start_in(dir.path(), &config, &[]).await;
    }
    // One more stretch of pushes on the last life, then the senders stop.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::SeqCst);
    for pusher in pushers {
        pusher.await.expect("pusher ends");
    }

    let acknowledged = log.acknowledged.lock().expect("push log").clone();
    wait_until(
        Duration::from_secs(60),
        "every acknowledged image delivered and the queue empty",
        || {
            let client = reqwest::Client::new();
            let pending = client
                .get(bridge.url("/admin/pending"))
                .bearer_auth(ADMIN_TOKEN)
                .send();
            let delivered = delivered_images(&hss);
            let all_there = acknowledged
                .iter()
                .all(|image| delivered.contains_key(image));
            async move {
                let empty = match pending.await {
                    Ok(response) => response
                        .json::<serde_json::Value>()
                        .await
                        .is_ok_and(|body| body["pending_images"] == 0),
                    Err(_) => false,
                };
                all_there && empty
            }
        },
    )
    .await;
    logs.push(bridge.logs());

    let delivered = delivered_images(&hss);
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|image| !delivered.contains_key(*image))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}"
    );
    let duplicated: BTreeMap<&String, &usize> =
        delivered.iter().filter(|(_, count)| **count > 1).collect();
    let duplicate_deliveries: usize = duplicated.values().map(|count| **count - 1).sum();
    // At least once: a kill can repeat what was in flight at that instant (at
    // most MAX_IN_FLIGHT batches of MAX_IMAGES), nothing more.
    let bound = KILLS * swr_scan_bridge::batcher::MAX_IN_FLIGHT * MAX_IMAGES;
    assert!(
        duplicate_deliveries <= bound,
        "{duplicate_deliveries} duplicate deliveries exceed {bound}: {duplicated:?}"
    );
    assert!(hss.requests_with_bad_signature().is_empty());
    assert_eq!(
        requests_with_repeats(&hss),
        0,
        "an image twice in one request"
    );
    assert!(
        acknowledged.len() >= 100,
        "the stream was too thin to mean anything: {} acknowledged",
        acknowledged.len()
    );
    for sender in Sender::ALL {
        let source = signed_push(sender, "x").image;
        let prefix = source.split('|').next().unwrap_or_default();
        assert!(
            acknowledged.iter().any(|image| image.starts_with(prefix)),
            "no {sender:?} push was acknowledged"
        );
    }

    summary
        .count("kills", KILLS)
        .count("pushes_sent", log.sent.load(Ordering::SeqCst))
        .count("pushes_acknowledged", acknowledged.len())
        .count(
            "push_attempts_failed",
            log.failed_attempts.load(Ordering::SeqCst),
        )
        .count("pushes_given_up", log.given_up.load(Ordering::SeqCst))
        .count("images_delivered", delivered.len())
        .count("hss_requests", hss.requests().len())
        .count("batches_resent_after_kill", resent_batches(&logs))
        .count("duplicate_deliveries", duplicate_deliveries)
        .count("lost", missing.len())
        .print();
}
