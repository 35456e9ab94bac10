//! The real `swr-scan-bridge` binary as operators run it: `serve --config`
//! from a file in a temp dir, output captured, stopped with SIGTERM; and the
//! `sign` command whose headers a person pastes into curl.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use swr_scan_bridge::store::Store;
use swr_scan_bridge::store::sqlite::SqliteStore;

use crate::common::fake_hss::{FakeHss, Reply};
use crate::common::helpers::*;

const BINARY: &str = env!("CARGO_BIN_EXE_swr-scan-bridge");

type Headers = Vec<(String, String)>;

/// Every line the process wrote, per stream.
#[derive(Default)]
struct Captured {
    stdout: Vec<String>,
    stderr: Vec<String>,
}

/// A running bridge process with its config, data and captured output.
struct Bridge {
    child: Child,
    address: String,
    dir: tempfile::TempDir,
    output: Arc<Mutex<Captured>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

fn lock(captured: &Mutex<Captured>) -> std::sync::MutexGuard<'_, Captured> {
    captured.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bridge {
    /// Writes `config` to `config.toml` in a fresh temp dir (where `{dir}`
    /// in it names that dir), runs `serve --config` with `env`, and waits
    /// until it logs its port.
    async fn start(config: &str, env: &[(&str, String)]) -> Bridge {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, config, env).await
    }

    async fn start_in(dir: tempfile::TempDir, config: &str, env: &[(&str, String)]) -> Bridge {
        let config = config.replace("{dir}", &dir.path().display().to_string());
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut command = Command::new(BINARY);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .env_remove("SWR_SCAN_BRIDGE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn the bridge");
        let output = Arc::new(Mutex::new(Captured::default()));
        let (port_tx, mut port_rx) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let readers = vec![
            tokio::spawn(collect_lines(stdout, output.clone(), false, Some(port_tx))),
            tokio::spawn(collect_lines(stderr, output.clone(), true, None)),
        ];
        let port = tokio::time::timeout(Duration::from_secs(30), port_rx.recv())
            .await
            .ok()
            .flatten();
        let Some(port) = port else {
            let exit = child.try_wait();
            let captured = lock(&output);
            panic!(
                "the bridge did not log its port (exit: {exit:?}); stdout: {:?} stderr: {:?}",
                captured.stdout, captured.stderr
            )
        };
        Bridge {
            child,
            address: format!("http://127.0.0.1:{port}"),
            dir,
            output,
            readers,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    fn port(&self) -> u16 {
        self.address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    fn sigterm(&self) {
        let pid = self.child.id().expect("the bridge still runs");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits for the process to end (at most `limit`) and for its output.
    async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the bridge still runs after {limit:?}"))
            .expect("wait for the bridge");
        for reader in self.readers.drain(..) {
            reader.await.expect("output reader");
        }
        status
    }

    fn stdout(&self) -> Vec<String> {
        lock(&self.output).stdout.clone()
    }

    fn stderr(&self) -> Vec<String> {
        lock(&self.output).stderr.clone()
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join("bridge.db")
    }
}

async fn collect_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    output: Arc<Mutex<Captured>>,
    is_stderr: bool,
    port_tx: Option<tokio::sync::mpsc::UnboundedSender<u16>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(tx) = &port_tx
            && let Ok(event) = serde_json::from_str::<Value>(&line)
            && event["message"] == "swr-scan-bridge listening"
            && let Some(port) = event["port"].as_u64()
        {
            let _ = tx.send(port as u16);
        }
        let mut captured = lock(&output);
        if is_stderr {
            captured.stderr.push(line);
        } else {
            captured.stdout.push(line);
        }
    }
}

/// The shared test configuration for a process: embedded store in the temp dir.
fn process_config(hss_endpoint: &str) -> String {
    base_config(hss_endpoint, "sqlite://{dir}/bridge.db")
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

async fn wait_ready(client: &reqwest::Client, bridge: &Bridge) {
    wait_until(Duration::from_secs(10), "bridge ready", || async {
        matches!(client.get(bridge.url("/readyz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
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
    let mut bridge = Bridge::start(&process_config(&hss.uri()), &env).await;
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
    let mut restarted = Bridge::start_in(bridge.dir, &process_config(&hss.uri()), &env).await;
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

/// Every secret the log test configures, as the bytes that must not show.
fn secret_values() -> Vec<String> {
    let mut values: Vec<String> = [
        AK,
        SK,
        STS,
        TOKEN_OLD,
        TOKEN_NEW,
        WHSEC_A,
        WHSEC_B,
        HMAC_SECRET,
        ADMIN_TOKEN,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The key material of the whsec secrets, without the prefix.
    values.push(WHSEC_A.trim_start_matches("whsec_").to_string());
    values.push(WHSEC_B.trim_start_matches("whsec_").to_string());
    values
}

const STS: &str = "sts-temporary-security-token-for-tests";

/// The base test config with every secret behind `env:` or `file:` or a
/// literal, and trace logging.
fn secret_config(hss_endpoint: &str, dir: &Path) -> (String, Vec<(&'static str, String)>) {
    let write = |name: &str, value: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{value}\n")).expect("secret file");
        path.display().to_string()
    };
    let sk_file = write("sk", SK);
    let whsec_file = write("whsec_b", WHSEC_B);
    let config = process_config(hss_endpoint)
        .replace(&format!("ak = \"{AK}\""), "ak = \"env:BRIDGE_TEST_AK\"")
        .replace(
            &format!("sk = \"{SK}\""),
            &format!("sk = \"file:{sk_file}\"\nsecurity_token = \"env:BRIDGE_TEST_STS\""),
        )
        .replace(
            &format!("admin_token = \"{ADMIN_TOKEN}\""),
            "admin_token = \"env:BRIDGE_TEST_ADMIN\"",
        )
        .replace(
            &format!("\"{TOKEN_OLD}\", \"{TOKEN_NEW}\""),
            &format!("\"{TOKEN_OLD}\", \"env:BRIDGE_TEST_TOKEN_NEW\""),
        )
        .replace(
            &format!("\"{WHSEC_A}\", \"{WHSEC_B}\""),
            &format!("\"{WHSEC_A}\", \"file:{whsec_file}\""),
        )
        .replace(
            &format!("[\"{HMAC_SECRET}\"]"),
            "[\"env:BRIDGE_TEST_HMAC\"]",
        )
        + "\n[log]\nlevel = \"trace\"\n";
    for reference in [
        "env:BRIDGE_TEST_AK",
        "file:",
        "env:BRIDGE_TEST_STS",
        "env:BRIDGE_TEST_ADMIN",
        "env:BRIDGE_TEST_TOKEN_NEW",
        "env:BRIDGE_TEST_HMAC",
    ] {
        assert!(config.contains(reference), "{reference} not in the config");
    }
    let env = vec![
        ("BRIDGE_TEST_AK", AK.to_string()),
        ("BRIDGE_TEST_STS", STS.to_string()),
        ("BRIDGE_TEST_ADMIN", ADMIN_TOKEN.to_string()),
        ("BRIDGE_TEST_TOKEN_NEW", TOKEN_NEW.to_string()),
        ("BRIDGE_TEST_HMAC", HMAC_SECRET.to_string()),
        (
            "SWR_SCAN_BRIDGE__SERVER__DRAIN_LINGER_MS",
            "100".to_string(),
        ),
    ];
    (config, env)
}

/// Keeps every HTTP answer (status, headers, body) as text.
#[derive(Default)]
struct Answers(Vec<String>);

impl Answers {
    async fn keep(&mut self, response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let mut text = format!("{status}\n");
        for (name, value) in response.headers() {
            text.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let body = response.text().await.expect("answer body");
        text.push_str(&body);
        self.0.push(text);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_at_trace_level_logs_json_lines_and_never_a_secret() {
    let hss = FakeHss::start_without_credentials().await;
    hss.allow_access_key(AK, SK, Some(STS));
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, env) = secret_config(&hss.uri(), dir.path());
    let mut bridge = Bridge::start_in(dir, &config, &env).await;
    let client = reqwest::Client::new();
    let mut answers = Answers::default();
    wait_ready(&client, &bridge).await;
    for path in ["/healthz", "/readyz"] {
        let (status, _) = answers
            .keep(client.get(bridge.url(path)).send().await.expect("probe"))
            .await;
        assert_eq!(status, 200, "{path}");
    }

    // Webhooks, good and bad, each under a request id of ours.
    let swr = sample("swr-ee-push-artifact.json");
    let ce = sample("harbor-cloudevents-push.json");
    let registry = sample("distribution-notification.json");
    let webhooks: Vec<(&str, &str, Vec<u8>, Headers, u16)> = vec![
        ("it-1", "swr-ee", swr.clone(), token(TOKEN_OLD), 202),
        ("it-2", "swr-ee", swr.clone(), token(TOKEN_NEW), 202),
        ("it-3", "swr-ee", swr.clone(), token("swr-token-wrong"), 401),
        (
            "it-4",
            "harbor-ce",
            ce.clone(),
            standard_webhooks(WHSEC_B, "msg_logs", now(), &ce),
            202,
        ),
        (
            "it-5",
            "harbor-ce",
            ce.clone(),
            standard_webhooks("whsec_d3Jvbmc=", "msg_bad", now(), &ce),
            401,
        ),
        (
            "it-6",
            "registry",
            registry.clone(),
            hmac_sha256(HMAC_SECRET, &registry),
            202,
        ),
        (
            "it-7",
            "registry",
            b"{oops".to_vec(),
            hmac_sha256(HMAC_SECRET, b"{oops"),
            400,
        ),
        ("it-8", "nowhere", swr.clone(), token(TOKEN_OLD), 404),
    ];
    for (request_id, source, body, headers, expected) in &webhooks {
        let mut request = client
            .post(bridge.url(&format!("/webhooks/{source}")))
            .header("Content-Type", "application/json")
            .header("X-Request-Id", *request_id)
            .body(body.clone());
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let (status, body) = answers.keep(request.send().await.expect("webhook")).await;
        assert_eq!(status, *expected, "{request_id}: {body}");
    }

    let admin = |method: reqwest::Method, path: &str, bearer: &str| {
        client
            .request(method, bridge.url(path))
            .bearer_auth(bearer)
            .send()
    };
    // HSS: one 503 (retried), the rest accepted.
    hss.respond_with_sequence(vec![Reply::status(503)]);
    let (status, _) = answers
        .keep(
            admin(reqwest::Method::POST, "/admin/flush", ADMIN_TOKEN)
                .await
                .expect("flush"),
        )
        .await;
    assert_eq!(status, 200);
    wait_until(
        Duration::from_secs(10),
        "first batches accepted",
        || async { hss.received_batches().len() == 3 },
    )
    .await;
    // HSS: 401 for a revoked key: a dead letter; the operator restores the key and retries.
    hss.revoke_access_key(AK);
    let filtered = harbor_push("team-a", "api", "dead");
    let mut request = client
        .post(bridge.url("/webhooks/filtered"))
        .header("Content-Type", "application/json")
        .header("X-Request-Id", "it-9")
        .body(filtered);
    for (name, value) in token(TOKEN_NEW) {
        request = request.header(name, value);
    }
    let (status, _) = answers.keep(request.send().await.expect("webhook")).await;
    assert_eq!(status, 202);
    let (status, _) = answers
        .keep(
            admin(reqwest::Method::POST, "/admin/flush", ADMIN_TOKEN)
                .await
                .expect("flush"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, dead) = answers
        .keep(
            admin(reqwest::Method::GET, "/admin/dead-letters", ADMIN_TOKEN)
                .await
                .expect("dead letters"),
        )
        .await;
    assert_eq!(status, 200);
    let id = dead["dead_letters"][0]["id"]
        .as_i64()
        .expect("a dead letter");
    hss.allow_access_key(AK, SK, Some(STS));
    let (status, _) = answers
        .keep(
            admin(
                reqwest::Method::POST,
                &format!("/admin/dead-letters/{id}/retry"),
                ADMIN_TOKEN,
            )
            .await
            .expect("retry"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, flushed) = answers
        .keep(
            admin(reqwest::Method::POST, "/admin/flush", ADMIN_TOKEN)
                .await
                .expect("flush"),
        )
        .await;
    assert_eq!((status, flushed["batches_sent"].as_u64()), (200, Some(1)));
    let (status, pending) = answers
        .keep(
            admin(reqwest::Method::GET, "/admin/pending", ADMIN_TOKEN)
                .await
                .expect("pending"),
        )
        .await;
    assert_eq!((status, pending["pending_images"].as_u64()), (200, Some(0)));
    let (status, _) = answers
        .keep(
            admin(reqwest::Method::GET, "/admin/pending", "not-the-token")
                .await
                .expect("pending"),
        )
        .await;
    assert_eq!(status, 401);
    let metrics = client
        .get(bridge.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");

    bridge.sigterm();
    let status = bridge.wait(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "stderr: {:?}", bridge.stderr());

    // The secrets were used: each scheme accepted, HSS took signed requests.
    let hss_requests = hss.requests();
    assert_eq!(
        hss_requests.len(),
        6,
        "503, 3 accepted, 401, accepted after the retry"
    );
    assert_eq!(hss.received_batches().len(), 4);
    assert_eq!(
        hss.requests_with_bad_signature().len(),
        1,
        "the revoked key only"
    );
    assert!(
        hss_requests
            .iter()
            .all(|r| r.header("x-security-token") == Some(STS))
    );

    let stdout = bridge.stdout();
    let stderr = bridge.stderr();
    assert!(
        stdout.len() > 100,
        "trace logging wrote only {} lines",
        stdout.len()
    );
    let everything = [
        ("stdout", stdout.join("\n")),
        ("stderr", stderr.join("\n")),
        ("metrics", metrics.clone()),
        ("answers", answers.0.join("\n")),
    ];
    for secret in secret_values() {
        for (place, text) in &everything {
            assert!(!text.contains(&secret), "a secret appears in {place}");
        }
    }

    // Logs are JSON lines.
    let events: Vec<Value> = stdout
        .iter()
        .chain(stderr.iter())
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
        })
        .collect();
    for event in &events {
        assert!(
            event["timestamp"].is_string()
                && event["level"].is_string()
                && event["target"].is_string(),
            "{event}"
        );
    }
    let targets: BTreeSet<&str> = events.iter().filter_map(|e| e["target"].as_str()).collect();
    eprintln!(
        "{} log lines ({} on stderr) from {} targets: {targets:?}",
        events.len(),
        stderr.len(),
        targets.len()
    );
    // One line per webhook, by our request id, with source, outcome and counts.
    let webhook_lines: BTreeMap<String, &Value> = events
        .iter()
        .filter(|e| e["message"] == "webhook")
        .map(|e| (e["request_id"].as_str().expect("request_id").to_string(), e))
        .collect();
    let summary = |id: &str| {
        let e = webhook_lines
            .get(id)
            .unwrap_or_else(|| panic!("no webhook line for {id}"));
        format!(
            "{} {} {} {} {} {}",
            e["source"].as_str().unwrap_or("-"),
            e["outcome"].as_str().unwrap_or("-"),
            e["accepted"],
            e["duplicates"],
            e["ignored"],
            e["code"].as_str().unwrap_or("-"),
        )
    };
    assert_eq!(webhook_lines.len(), 9, "{:?}", webhook_lines.keys());
    assert_eq!(
        events.iter().filter(|e| e["message"] == "webhook").count(),
        9
    );
    for (id, expected) in [
        ("it-1", "swr-ee accepted 2 0 0 -"),
        ("it-2", "swr-ee duplicate 0 2 0 -"),
        ("it-3", "swr-ee rejected null null null bad_token"),
        ("it-4", "harbor-ce accepted 1 0 0 -"),
        ("it-5", "harbor-ce rejected null null null bad_signature"),
        ("it-6", "registry accepted 1 0 2 -"),
        ("it-7", "registry rejected null null null malformed_json"),
        ("it-8", "unknown rejected null null null unknown_source"),
        ("it-9", "filtered accepted 1 0 0 -"),
    ] {
        assert_eq!(summary(id), expected, "{id}");
    }
    // One line per HSS call, with partition, images, status, HSS request id and duration.
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "HSS batch-scan call")
        .collect();
    assert_eq!(calls.len(), hss_requests.len());
    let mut logged: Vec<(String, u64)> = calls
        .iter()
        .map(|e| {
            assert!(
                e["partition"].as_str().is_some_and(|p| !p.is_empty()),
                "{e}"
            );
            assert!(e["images"].as_u64().is_some_and(|n| n >= 1), "{e}");
            assert!(e["duration_ms"].is_u64(), "{e}");
            (
                e["hss_request_id"]
                    .as_str()
                    .expect("hss_request_id")
                    .to_string(),
                e["status"].as_u64().expect("status"),
            )
        })
        .collect();
    logged.sort();
    let mut expected: Vec<(String, u64)> = hss_requests
        .iter()
        .map(|r| (r.request_id.clone(), u64::from(r.status)))
        .collect();
    expected.sort();
    assert_eq!(logged, expected);
}

/// Runs `sign` for a source; `body` goes through `--body FILE`, or stdin when `via_stdin`.
async fn sign(config: &Path, source: &str, body: &[u8], via_stdin: bool) -> Vec<(String, String)> {
    let mut command = Command::new(BINARY);
    command
        .args(["sign", "--config"])
        .arg(config)
        .args(["--source", source])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let body_file = tempfile::NamedTempFile::new().expect("body file");
    if via_stdin {
        command.stdin(Stdio::piped());
    } else {
        std::fs::write(body_file.path(), body).expect("write body");
        command
            .arg("--body")
            .arg(body_file.path())
            .stdin(Stdio::null());
    }
    let mut child = command.spawn().expect("spawn sign");
    if via_stdin {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(body).await.expect("write stdin");
        drop(stdin);
    }
    let output = child.wait_with_output().await.expect("sign output");
    assert!(
        output.status.success(),
        "sign failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let (name, value) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("not a header line: {line:?}"));
            (name.to_string(), value.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_prints_headers_that_a_running_bridge_accepts_for_every_scheme() {
    let hss = FakeHss::start(AK, SK).await;
    let bridge = Bridge::start(&process_config(&hss.uri()), &[]).await;
    let config = bridge.dir.path().join("config.toml");
    let client = reqwest::Client::new();
    wait_ready(&client, &bridge).await;

    let cases: [(&str, Vec<u8>, bool, &[&str]); 4] = [
        (
            "swr-ee",
            sample("swr-ee-push-artifact.json"),
            false,
            &["Authorization"],
        ),
        (
            "harbor-ce",
            sample("harbor-cloudevents-push.json"),
            false,
            &["webhook-id", "webhook-timestamp", "webhook-signature"],
        ),
        (
            "registry",
            sample("distribution-notification.json"),
            false,
            &["X-Hub-Signature-256"],
        ),
        (
            "filtered",
            harbor_push("team-a", "api", "signed"),
            true,
            &["Authorization"],
        ),
    ];
    for (source, body, via_stdin, scheme_headers) in cases {
        let headers = sign(&config, source, &body, via_stdin).await;
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        let mut expected = vec!["Content-Type"];
        expected.extend_from_slice(scheme_headers);
        assert_eq!(names, expected, "{source}");
        assert_eq!(headers[0].1, "application/json");
        let mut request = client
            .post(bridge.url(&format!("/webhooks/{source}")))
            .body(body.clone());
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.send().await.expect("post");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.expect("json");
        assert_eq!(status, 202, "{source}: {answer}");
        assert_eq!(
            answer["accepted"],
            1 + u64::from(source == "swr-ee"),
            "{source}: {answer}"
        );

        // The same headers over a changed body are refused: they really sign this body.
        let mut tampered = body.clone();
        tampered.extend_from_slice(b" ");
        let mut request = client
            .post(bridge.url(&format!("/webhooks/{source}")))
            .body(tampered);
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let expected_status = match source {
            // A token does not depend on the body.
            "swr-ee" | "filtered" => 202,
            _ => 401,
        };
        let response = request.send().await.expect("post");
        assert_eq!(
            response.status().as_u16(),
            expected_status,
            "{source} tampered"
        );
    }

    let unknown = std::process::Command::new(BINARY)
        .args(["sign", "--config"])
        .arg(&config)
        .args(["--source", "nope", "--body"])
        .arg(&config)
        .output()
        .expect("sign");
    assert_eq!(unknown.status.code(), Some(2));
    let message = String::from_utf8_lossy(&unknown.stderr);
    assert!(message.contains("no source named \"nope\""), "{message}");
    assert!(
        message.contains("swr-ee, harbor-ce, registry, filtered"),
        "{message}"
    );
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
    let mut bridge = Bridge::start(
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
        let mut bridge = Bridge::start(&process_config(&hss.uri()), &[]).await;
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
