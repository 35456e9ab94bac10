//! The real binary stopped with SIGTERM: readiness flips, requests in flight
//! finish, the queue is flushed, the process exits 0 within its grace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use swr_scan_bridge::store::Store;
use swr_scan_bridge::store::sqlite::SqliteStore;

use crate::common::fake_hss::{FakeHss, Reply};
use crate::common::helpers::*;
use crate::common::process::{BridgeProcess, process_config, wait_ready};

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// What one load request ended as.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    Status(u16),
    /// The connection could not be opened: the listener had closed, nothing was sent.
    Refused,
    /// Anything else: the request may have been sent and was cut off.
    Broken(String),
}

/// Sends signed pushes of unique tags until told to stop or the bridge
/// answers 503 (a sender that respects readiness backs off then).
async fn load_generator(
    address: String,
    source: &'static str,
    worker: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    outcomes: Arc<Mutex<Vec<Sent>>>,
) {
    let client = reqwest::Client::new();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let tag = format!("{source}-w{worker}-{n}");
        n += 1;
        let body = harbor_push("team-a", "load", &tag);
        let result = client
            .post(format!("{address}/webhooks/{source}"))
            .header("Content-Type", "application/json")
            .header("Authorization", TOKEN_NEW)
            .body(body)
            .send()
            .await;
        let sent = match result {
            Ok(response) => Sent::Status(response.status().as_u16()),
            Err(error) if error.is_connect() => Sent::Refused,
            Err(error) => Sent::Broken(format!("{error:?}")),
        };
        if sent == Sent::Status(202) {
            acked.lock().expect("acked").push(tag);
        }
        let done = sent != Sent::Status(202);
        outcomes.lock().expect("outcomes").push(sent);
        if done {
            return;
        }
        // A steady load, not a flood: the backlog at SIGTERM stays one the
        // grace can flush on a busy CI machine too.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A webhook whose body arrives in two parts, so it is in flight at a chosen moment.
struct SlowWebhook {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl SlowWebhook {
    async fn begin(port: u16, source: &str, tag: &str) -> SlowWebhook {
        let body = harbor_push("team-a", "load", tag);
        let head = format!(
            "POST /webhooks/{source} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: application/json\r\nAuthorization: {TOKEN_NEW}\r\n\
             X-Request-Id: slow-webhook\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let half = body.len() / 2;
        stream.write_all(head.as_bytes()).await.expect("head");
        stream.write_all(&body[..half]).await.expect("first half");
        stream.flush().await.expect("flush");
        SlowWebhook {
            stream,
            rest: body[half..].to_vec(),
        }
    }

    /// Sends the rest of the body and returns the status code of the answer.
    async fn finish(mut self) -> (u16, String) {
        self.stream
            .write_all(&self.rest)
            .await
            .expect("second half");
        let mut answer = String::new();
        self.stream
            .read_to_string(&mut answer)
            .await
            .expect("read the answer");
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, answer)
    }
}

/// Tags of every image HSS accepted.
fn accepted_tags(hss: &FakeHss) -> Vec<String> {
    hss.received_batches()
        .iter()
        .flat_map(|batch| {
            batch["image_info_list"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|item| item["image_version"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_flips_readiness_finishes_requests_flushes_and_exits_zero() {
    // Longer than the load runs: at SIGTERM only full batches are due, and
    // each partition's partial batch must stay for the next start.
    const WINDOW_MS: i64 = 2_000;
    const MAX_IMAGES: usize = 10;
    const GRACE_MS: u64 = 5_000;
    const LINGER_MS: u64 = 1_000;
    let hss = FakeHss::start(AK, SK).await;
    // The first four calls take the bridge's four send slots for three
    // seconds, so full batches are due and unsent when SIGTERM comes, however
    // fast or slow this machine is; later calls take 100 ms.
    let mut replies = vec![Reply::accepted().delayed(Duration::from_secs(3)); 4];
    replies.extend(vec![
        Reply::accepted().delayed(Duration::from_millis(100));
        1_000
    ]);
    hss.respond_with_sequence(replies);
    let env = [
        ("SWR_SCAN_BRIDGE__BATCH__WINDOW_MS", WINDOW_MS.to_string()),
        ("SWR_SCAN_BRIDGE__BATCH__MAX_IMAGES", MAX_IMAGES.to_string()),
        (
            "SWR_SCAN_BRIDGE__SERVER__SHUTDOWN_GRACE_MS",
            GRACE_MS.to_string(),
        ),
        (
            "SWR_SCAN_BRIDGE__SERVER__DRAIN_LINGER_MS",
            LINGER_MS.to_string(),
        ),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bridge = BridgeProcess::start_in(dir.path(), &process_config(&hss.uri()), &env).await;
    let client = reqwest::Client::new();
    wait_ready(&client, &bridge).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let generators: Vec<_> = (0..8)
        .map(|worker| {
            let source = if worker % 2 == 0 {
                "swr-ee"
            } else {
                "filtered"
            };
            tokio::spawn(load_generator(
                bridge.address.clone(),
                source,
                worker,
                stop.clone(),
                acked.clone(),
                outcomes.clone(),
            ))
        })
        .collect();
    wait_until(Duration::from_secs(20), "load acknowledged", || async {
        acked.lock().expect("acked").len() >= 100
    })
    .await;
    assert_eq!(hss.requests().len(), 4, "only the slow calls went out");
    let slow = SlowWebhook::begin(bridge.port(), "swr-ee", "slow-in-flight").await;
    // Let the server read the head and start the handler before the signal.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let requests_before = hss.requests().len();
    let sigterm_ms = wall_ms();
    let signalled = Instant::now();
    bridge.sigterm();

    // Readiness: 503 at once, and only 503 until the listener closes.
    let probe = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut readiness = Vec::new();
    let mut slow = Some(slow);
    let mut slow_answer = None;
    loop {
        match probe.get(bridge.url("/readyz")).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                readiness.push((signalled.elapsed(), status));
                // Draining now: the request begun before the signal sends the rest of its body.
                if status == 503
                    && let Some(slow) = slow.take()
                {
                    slow_answer = Some(tokio::spawn(slow.finish()));
                }
            }
            Err(error) => {
                // Once the listener closes, a probe the kernel had queued for it is
                // closed unanswered; before the linger ends that would be a bug.
                assert!(
                    error.is_connect() || signalled.elapsed() >= Duration::from_millis(LINGER_MS),
                    "readiness probe cut off during the linger: {error:?}"
                );
                break;
            }
        }
        if signalled.elapsed() > Duration::from_millis(GRACE_MS) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let first_503 = readiness
        .iter()
        .position(|(_, status)| *status == 503)
        .expect("readiness turned 503");
    assert!(
        readiness[first_503].0 < Duration::from_millis(250),
        "readiness turned 503 only after {:?}",
        readiness[first_503].0
    );
    assert!(
        readiness[first_503..].iter().all(|(_, s)| *s == 503),
        "{readiness:?}"
    );
    assert!(
        readiness.len() - first_503 >= 10,
        "readiness answered 503 through the linger: {readiness:?}"
    );
    let status = bridge.wait(Duration::from_millis(GRACE_MS + 3_000)).await;
    let stopped_after = signalled.elapsed();
    stop.store(true, Ordering::SeqCst);
    for generator in generators {
        generator.await.expect("generator");
    }
    assert_eq!(status.code(), Some(0), "stderr: {:?}", bridge.stderr());
    assert!(
        stopped_after < Duration::from_millis(GRACE_MS),
        "exited {stopped_after:?} after SIGTERM; grace is {GRACE_MS} ms"
    );
    let (slow_status, slow_answer) = slow_answer
        .expect("the slow webhook was finished while draining")
        .await
        .expect("slow webhook task");
    assert_eq!(slow_status, 202, "{slow_answer}");
    let mut acked = acked.lock().expect("acked").clone();
    acked.push("slow-in-flight".into());

    // Every request that was sent got an answer: 202, or 503 once draining.
    let outcomes = outcomes.lock().expect("outcomes").clone();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Sent::Status(202) | Sent::Status(503)),
            "{outcome:?}"
        );
        *counts.entry(format!("{outcome:?}")).or_default() += 1;
    }
    assert_eq!(counts.get("Status(503)"), Some(&8), "{counts:?}");

    // Nothing acknowledged is lost, and nothing due at SIGTERM was left behind.
    let store = SqliteStore::open(&bridge.db_path(), 1)
        .await
        .expect("reopen");
    let stats = store.stats().await.expect("stats");
    assert_eq!(stats.batches_in_flight, 0, "sends in flight were settled");
    let left = store.pending(100_000).await.expect("pending");
    let sent: BTreeSet<String> = accepted_tags(&hss).into_iter().collect();
    let left_tags: BTreeSet<String> = left.iter().map(|p| p.image.tag.clone()).collect();
    for tag in &acked {
        assert!(
            sent.contains(tag) || left_tags.contains(tag),
            "{tag} was acknowledged but is neither sent nor stored"
        );
    }
    for image in &left {
        assert!(
            image.enqueued_at > sigterm_ms - WINDOW_MS,
            "{} was due at SIGTERM ({} ms old) but left behind",
            image.image,
            sigterm_ms - image.enqueued_at
        );
    }
    let mut left_per_partition: BTreeMap<String, usize> = BTreeMap::new();
    for image in &left {
        *left_per_partition
            .entry(format!("{:?}", image.partition))
            .or_default() += 1;
    }
    assert!(
        left_per_partition.values().all(|n| *n < MAX_IMAGES),
        "a full batch was left behind: {left_per_partition:?}"
    );
    drop(store);
    // At least 100 images in two partitions were at least 8 full batches.
    assert!(
        hss.requests().len() >= requests_before + 4,
        "the drain sent the due batches after SIGTERM"
    );
    assert!(hss.requests_with_bad_signature().is_empty());
    let stdout = bridge.stdout();
    assert!(
        stdout
            .iter()
            .any(|l| l.contains("drained; what is left stays in the store")),
        "{stdout:?}"
    );
    drop(client);
    eprintln!(
        "acked {} webhooks; HSS got {} requests ({} after SIGTERM); {} images left for the next start; \
         readiness 503 after {:?}; exit after {stopped_after:?}",
        acked.len(),
        hss.requests().len(),
        hss.requests().len() - requests_before,
        left.len(),
        readiness[first_503].0,
    );

    // The next start sends what was left: every acknowledged image reached HSS.
    let mut restarted =
        BridgeProcess::start_in(dir.path(), &process_config(&hss.uri()), &env).await;
    wait_until(
        Duration::from_secs(15),
        "the rest sent after restart",
        || async {
            let sent: BTreeSet<String> = accepted_tags(&hss).into_iter().collect();
            acked.iter().all(|tag| sent.contains(tag))
        },
    )
    .await;
    restarted.sigterm();
    let status = restarted
        .wait(Duration::from_millis(GRACE_MS + 3_000))
        .await;
    assert_eq!(status.code(), Some(0));
}

/// HSS hangs on every call: the bridge still exits 0 within its grace, and
/// what it could not send stays in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_hss_cannot_hold_the_process_past_its_grace() {
    const GRACE_MS: u64 = 2_000;
    let hss = FakeHss::start(AK, SK).await;
    hss.respond_with_sequence(vec![
        Reply::accepted().delayed(Duration::from_secs(30));
        100
    ]);
    let mut bridge = BridgeProcess::start(
        &process_config(&hss.uri()),
        &[
            ("SWR_SCAN_BRIDGE__BATCH__MAX_IMAGES", "1".to_string()),
            (
                "SWR_SCAN_BRIDGE__HSS__REQUEST_TIMEOUT_MS",
                "10000".to_string(),
            ),
            ("SWR_SCAN_BRIDGE__STORE__LEASE_MS", "20000".to_string()),
            (
                "SWR_SCAN_BRIDGE__SERVER__SHUTDOWN_GRACE_MS",
                GRACE_MS.to_string(),
            ),
            (
                "SWR_SCAN_BRIDGE__SERVER__DRAIN_LINGER_MS",
                "200".to_string(),
            ),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    wait_ready(&client, &bridge).await;
    // Six full batches: four go out at once and hang, two wait for a free slot.
    for tag in 0..6 {
        let response = client
            .post(bridge.url("/webhooks/swr-ee"))
            .header("Content-Type", "application/json")
            .header("Authorization", TOKEN_OLD)
            .body(harbor_push("team-a", "api", &format!("v{tag}")))
            .send()
            .await
            .expect("push");
        assert_eq!(response.status(), 202);
    }
    wait_until(Duration::from_secs(5), "four batches in flight", || async {
        hss.requests().len() == 4
    })
    .await;

    let signalled = Instant::now();
    bridge.sigterm();
    let status = bridge.wait(Duration::from_millis(GRACE_MS + 5_000)).await;
    let stopped_after = signalled.elapsed();
    eprintln!("a hanging HSS: exit {stopped_after:?} after SIGTERM, grace {GRACE_MS} ms");
    assert_eq!(status.code(), Some(0), "stderr: {:?}", bridge.stderr());
    assert!(
        stopped_after < Duration::from_millis(GRACE_MS),
        "exited {stopped_after:?} after SIGTERM; grace is {GRACE_MS} ms"
    );
    let stdout = bridge.stdout();
    assert!(
        stdout
            .iter()
            .any(|l| l.contains("grace period over with work unfinished")),
        "{stdout:?}"
    );
    let store = SqliteStore::open(&bridge.db_path(), 1)
        .await
        .expect("reopen");
    assert_eq!(store.stats().await.expect("stats").pending_images, 6);
    drop(client);
}

/// A SIGTERM that comes as soon as the bridge listens still drains: exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_start_still_drains_and_exits_zero() {
    let hss = FakeHss::start(AK, SK).await;
    for _ in 0..3 {
        let mut bridge = BridgeProcess::start(&process_config(&hss.uri()), &[]).await;
        bridge.sigterm();
        let status = bridge.wait(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(0), "stdout: {:?}", bridge.stdout());
        assert!(
            bridge
                .stdout()
                .iter()
                .any(|l| l.contains("drained; what is left stays in the store")),
            "{:?}",
            bridge.stdout()
        );
    }
}
