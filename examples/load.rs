//! Load tool for the whole service (issue 8): throughput and latency of signed
//! webhooks against a bare actix-web handler measured in the same run,
//! batching efficiency, end-to-end delay 202 → HSS request, and memory.
//!
//! ```text
//! cargo build --release --bin swr-scan-bridge --example load
//! nice target/release/examples/load --bridge-bin target/release/swr-scan-bridge
//! ```
//!
//! Everything runs on 127.0.0.1 and stops by itself; see BENCHMARKS.md for the
//! method. The servers under test run in this process (port 0); the memory
//! figures come from the bridge binary run as a child process, since RSS is
//! per process.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use swr_scan_bridge::config::raw::RawVerify;
use swr_scan_bridge::config::{Settings, VerifyScheme, VerifySettings};
use swr_scan_bridge::domain::Partition;
use swr_scan_bridge::hss::{ScanOutcome, ScanSender};
use swr_scan_bridge::intake::verify::sign_headers;
use swr_scan_bridge::secret::Secret;
use swr_scan_bridge::startup::Application;
use swr_scan_bridge::store::{BatchImage, MemoryStore, Store};

const TOKEN: &str = "bench-token";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ADMIN_TOKEN: &str = "bench-admin-token";
const INSTANCE_ID: &str = "4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6";
/// The SWR EE sample; its tag `v1.4.2` is replaced by a fresh tag per request.
const SWR_EE_SAMPLE: &str = include_str!("../fixtures/swr-ee-push-artifact.json");
const SAMPLE_TAG: &str = "v1.4.2";

#[derive(Parser, Debug)]
#[command(about = "Load and resource benchmarks of swr-scan-bridge (all traffic on 127.0.0.1)")]
struct Args {
    /// Concurrent connections for the throughput runs.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured seconds per throughput run (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Warm-up seconds per throughput run, not counted.
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// Which parts to run, comma-separated: throughput, batching, delay, memory,
    /// postgres, and (only when named) history: intake with history recording
    /// off and on (`store.history_retention_s = 0` or the default), alternated
    /// in one run, on SQLite (and PostgreSQL with history-postgres).
    #[arg(long, default_value = "throughput,batching,delay,memory,postgres")]
    only: String,
    /// Rounds of the history comparison (each: one run off, one on).
    #[arg(long, default_value_t = 3)]
    history_rounds: usize,
    /// Also run the bridge on the in-memory store (not durable): splits the
    /// cost of the intake pipeline from the cost of durable storage.
    #[arg(long)]
    in_memory_store: bool,
    /// Schemes for the throughput runs, comma-separated: token, standard-webhooks.
    #[arg(long, default_value = "token,standard-webhooks")]
    schemes: String,
    /// Skip the bare-handler baseline (for profiling the bridge alone; no ratios).
    #[arg(long)]
    no_baseline: bool,
    /// PostgreSQL server; a fresh database is created (and dropped) per run.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pg_url: String,
    /// The bridge's TLS modes to PostgreSQL, comma-separated, one run each
    /// (libpq's sslmode: disable, prefer, require, verify-ca, verify-full).
    #[arg(long, default_value = "prefer")]
    pg_sslmodes: String,
    /// The bridge binary, for the memory measurement (a child process).
    #[arg(long, default_value = "target/release/swr-scan-bridge")]
    bridge_bin: PathBuf,
    /// Where the SQLite databases go (a temporary directory inside it); must be a
    /// real disk, since fsync cost is part of the result.
    #[arg(long, default_value = ".")]
    data_dir: PathBuf,
    /// Format the bridge's info logs as JSON into a sink, as in production
    /// minus the write; `off` installs no subscriber.
    #[arg(long, default_value = "sink")]
    logs: String,
    /// Pushes per second for the end-to-end delay runs.
    #[arg(long, default_value_t = 500)]
    delay_rate: u64,
    /// Seconds per end-to-end delay run.
    #[arg(long, default_value_t = 10)]
    delay_s: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl Args {
    fn wants(&self, part: &str) -> bool {
        self.only.split(',').any(|p| p.trim() == part)
    }

    fn schemes(&self) -> Vec<Scheme> {
        [Scheme::Token, Scheme::StandardWebhooks]
            .into_iter()
            .filter(|scheme| self.schemes.split(',').any(|s| s.trim() == scheme.name()))
            .collect()
    }

    /// The baseline run for `scheme`, unless `--no-baseline`.
    async fn baseline(
        &self,
        scheme: Scheme,
        report: &mut Report,
    ) -> Result<Option<ThroughputResult>, String> {
        if self.no_baseline {
            return Ok(None);
        }
        let bare = bare_run(self, scheme).await?;
        report.throughput.push(bare.clone());
        Ok(Some(bare))
    }
}

#[derive(Debug, Default, Serialize)]
struct Report {
    throughput: Vec<ThroughputResult>,
    history: Vec<HistoryCost>,
    batching: Vec<BatchingResult>,
    delay: Vec<DelayResult>,
    memory: Option<MemoryResult>,
    notes: Vec<String>,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    install_tracing(args.logs == "sink");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let report = runtime.block_on(run(&args))?;
    print_report(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

async fn run(args: &Args) -> Result<Report, String> {
    let mut report = Report::default();
    let data_root = tempfile::tempdir_in(&args.data_dir).map_err(|e| e.to_string())?;
    if args.wants("throughput") {
        for scheme in args.schemes() {
            let bare = args.baseline(scheme, &mut report).await?;
            let sqlite =
                bridge_run(args, scheme, &sqlite_url(data_root.path(), "tp", scheme)).await?;
            report.throughput.push(sqlite.with_baseline(bare.as_ref()));
            if args.in_memory_store {
                let memory = bridge_run(args, scheme, IN_MEMORY).await?;
                report.throughput.push(memory.with_baseline(bare.as_ref()));
            }
        }
    }
    if args.wants("batching") {
        // The default policy, where full partitions go at once; then one where
        // the window governs (a window's distinct images fit one request).
        for max_images in [100, 1000] {
            let store = sqlite_url(
                data_root.path(),
                &format!("batching{max_images}"),
                Scheme::Token,
            );
            report
                .batching
                .push(batching_run(&store, 2000, max_images).await?);
        }
    }
    if args.wants("delay") {
        for max_images in [100, 100_000] {
            let store = sqlite_url(
                data_root.path(),
                &format!("delay{max_images}"),
                Scheme::Token,
            );
            report
                .delay
                .push(delay_run(args, &store, 2000, max_images).await?);
        }
    }
    if args.wants("memory") {
        report.memory = Some(memory_run(args, data_root.path()).await?);
    }
    if args.wants("history") {
        report
            .history
            .push(history_runs(args, &HistoryBackend::Sqlite(data_root.path())).await?);
    }
    if args.wants("history-postgres") {
        match history_runs(args, &HistoryBackend::Postgres).await {
            Ok(cost) => report.history.push(cost),
            Err(reason) => report
                .notes
                .push(format!("PostgreSQL history cost not measured: {reason}")),
        }
    }
    if args.wants("postgres") {
        match postgres_runs(args, &mut report).await {
            Ok(()) => {}
            Err(reason) => report
                .notes
                .push(format!("PostgreSQL not measured: {reason}")),
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------
// Tracing: production-like log formatting, and the store's group-commit timings
// ---------------------------------------------------------------------------

/// Totals of the stores' `sqlite group commit` and `postgres group commit`
/// debug events (PostgreSQL reports no separate commit: one statement).
#[derive(Default)]
struct GroupCommitStats {
    groups: AtomicU64,
    webhooks: AtomicU64,
    write_us: AtomicU64,
    commit_us: AtomicU64,
}

static GROUP_COMMITS: GroupCommitStats = GroupCommitStats {
    groups: AtomicU64::new(0),
    webhooks: AtomicU64::new(0),
    write_us: AtomicU64::new(0),
    commit_us: AtomicU64::new(0),
};

#[derive(Debug, Clone, Serialize)]
struct GroupCommitSummary {
    groups: u64,
    webhooks_per_group: f64,
    write_ms_per_group: f64,
    commit_ms_per_group: f64,
}

impl GroupCommitStats {
    fn take(&self) -> Option<GroupCommitSummary> {
        let groups = self.groups.swap(0, Ordering::SeqCst);
        let webhooks = self.webhooks.swap(0, Ordering::SeqCst);
        let write_us = self.write_us.swap(0, Ordering::SeqCst);
        let commit_us = self.commit_us.swap(0, Ordering::SeqCst);
        (groups > 0).then(|| GroupCommitSummary {
            groups,
            webhooks_per_group: webhooks as f64 / groups as f64,
            write_ms_per_group: write_us as f64 / groups as f64 / 1000.0,
            commit_ms_per_group: commit_us as f64 / groups as f64 / 1000.0,
        })
    }
}

struct GroupCommitLayer;

#[derive(Default)]
struct GroupCommitFields {
    webhooks: u64,
    write_us: u64,
    commit_us: u64,
}

impl tracing::field::Visit for GroupCommitFields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match field.name() {
            "webhooks" => self.webhooks = value,
            "write_us" => self.write_us = value,
            "commit_us" => self.commit_us = value,
            _ => {}
        }
    }

    fn record_debug(&mut self, _field: &tracing::field::Field, _value: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for GroupCommitLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = GroupCommitFields::default();
        event.record(&mut fields);
        if fields.webhooks > 0 {
            GROUP_COMMITS.groups.fetch_add(1, Ordering::Relaxed);
            GROUP_COMMITS
                .webhooks
                .fetch_add(fields.webhooks, Ordering::Relaxed);
            GROUP_COMMITS
                .write_us
                .fetch_add(fields.write_us, Ordering::Relaxed);
            GROUP_COMMITS
                .commit_us
                .fetch_add(fields.commit_us, Ordering::Relaxed);
        }
    }
}

/// The bridge's info logs formatted as JSON into a sink (as in production,
/// minus the write) when `logs`; always the group-commit timings.
fn install_tracing(logs: bool) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let format = logs.then(|| {
        tracing_subscriber::fmt::layer()
            .event_format(swr_scan_bridge::telemetry::JsonLines)
            .with_writer(std::io::sink)
            .with_filter(LevelFilter::INFO)
    });
    let groups = GroupCommitLayer.with_filter(
        Targets::new()
            .with_target("swr_scan_bridge::store::sqlite", tracing::Level::DEBUG)
            .with_target("swr_scan_bridge::store::postgres", tracing::Level::DEBUG),
    );
    tracing_subscriber::registry()
        .with(format)
        .with(groups)
        .init();
}

// ---------------------------------------------------------------------------
// The servers under test
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Scheme {
    Token,
    StandardWebhooks,
}

impl Scheme {
    fn source(self) -> &'static str {
        match self {
            Scheme::Token => "swr-ee",
            Scheme::StandardWebhooks => "swr-ee-sw",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scheme::Token => "token",
            Scheme::StandardWebhooks => "standard-webhooks",
        }
    }

    fn settings(self) -> VerifySettings {
        let (scheme, secret) = match self {
            Scheme::Token => (VerifyScheme::Token, TOKEN),
            Scheme::StandardWebhooks => (VerifyScheme::StandardWebhooks, WHSEC),
        };
        VerifySettings::parse(&RawVerify {
            scheme,
            header: None,
            secrets: vec![Secret::literal(secret)],
            tolerance_s: 300,
        })
        .expect("the benchmark's own secrets are valid")
    }
}

/// Stands for the in-memory store where the runs take a store URL.
const IN_MEMORY: &str = "memory://";

fn sqlite_url(root: &Path, name: &str, scheme: Scheme) -> String {
    format!(
        "sqlite://{}/{name}-{}/bridge.db",
        root.display(),
        scheme.name()
    )
}

/// The bridge configuration of every in-process run: two sources on the SWR EE
/// payload (token and standard-webhooks), two actix workers like the baseline.
fn bridge_config(store_url: &str, window_ms: u64, max_images: usize) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_token = "{ADMIN_TOKEN}"
shutdown_grace_ms = 3000
drain_linger_ms = 0
workers = 2

[store]
url = "{store_url}"

[batch]
window_ms = {window_ms}
max_images = {max_images}

[hss]
region = "cn-north-4"
endpoint = "http://127.0.0.1:9"
project_id = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
enterprise_project_id = "0"
auth = "aksk"
ak = "HPUAEXAMPLEAKID0EXAM"
sk = "ExampleSecretKeyDoNotUse0123456789abcdef"

[[sources]]
name = "swr-ee"
format = "harbor"
image_type = "instance_image"
instance_id = "{INSTANCE_ID}"
[sources.verify]
scheme = "token"
secrets = ["{TOKEN}"]

[[sources]]
name = "swr-ee-sw"
format = "harbor"
image_type = "instance_image"
instance_id = "{INSTANCE_ID}"
[sources.verify]
scheme = "standard-webhooks"
secrets = ["{WHSEC}"]
"#
    )
}

/// The in-process HSS stand-in: answers 200 at once and records when each
/// batch-scan call happened and which tags it carried.
#[derive(Default)]
struct RecordingSender {
    calls: Mutex<Vec<(Instant, Vec<String>)>>,
    images: AtomicUsize,
}

#[async_trait::async_trait]
impl ScanSender for RecordingSender {
    async fn batch_scan(&self, _partition: &Partition, images: &[BatchImage]) -> ScanOutcome {
        let at = Instant::now();
        let tags = images.iter().map(|i| i.image.tag.clone()).collect();
        self.images.fetch_add(images.len(), Ordering::SeqCst);
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((at, tags));
        }
        ScanOutcome::Accepted {
            status: 200,
            request_id: None,
        }
    }
}

struct RunningBridge {
    address: SocketAddr,
    stopper: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<Result<(), String>>,
    sender: Arc<RecordingSender>,
}

impl RunningBridge {
    async fn start(config: &str) -> Result<RunningBridge, String> {
        Self::start_on(config, None).await
    }

    /// `store`: run on this store instead of the one `store.url` names.
    async fn start_on(
        config: &str,
        store: Option<Arc<dyn Store>>,
    ) -> Result<RunningBridge, String> {
        let settings = Settings::from_toml(config).map_err(|e| e.to_string())?;
        let sender = Arc::new(RecordingSender::default());
        let app = match store {
            Some(store) => Application::build_with_parts(settings, sender.clone(), store).await,
            None => Application::build_with_sender(settings, sender.clone()).await,
        }
        .map_err(|e| format!("bridge does not start: {e}"))?;
        let address = SocketAddr::from(([127, 0, 0, 1], app.port()));
        let stopper = app.stopper();
        let task =
            tokio::spawn(async move { app.run_until_stopped().await.map_err(|e| e.to_string()) });
        Ok(RunningBridge {
            address,
            stopper,
            task,
            sender,
        })
    }

    async fn stop(self) -> Result<(), String> {
        self.stopper.notify_one();
        self.task.await.map_err(|e| e.to_string())?
    }
}

/// The baseline: the same actix-web server shape (two workers, same route),
/// with a handler that only reads the body and answers 200.
async fn bare_handler(mut payload: web::Payload) -> HttpResponse {
    let mut size = 0usize;
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(chunk) => size += chunk.len(),
            Err(_) => return HttpResponse::BadRequest().finish(),
        }
    }
    std::hint::black_box(size);
    HttpResponse::Ok().finish()
}

async fn start_bare() -> Result<
    (
        SocketAddr,
        actix_web::dev::ServerHandle,
        tokio::task::JoinHandle<()>,
    ),
    String,
> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let server =
        HttpServer::new(|| App::new().route("/webhooks/{source}", web::post().to(bare_handler)))
            .workers(2)
            .disable_signals()
            .listen(listener)
            .map_err(|e| e.to_string())?
            .run();
    let handle = server.handle();
    let task = tokio::spawn(async move {
        let _ = server.await;
    });
    Ok((address, handle, task))
}

// ---------------------------------------------------------------------------
// A minimal keep-alive HTTP/1.1 client: cheap, so the load generator takes as
// little of the two cores as possible from the server under test.
// ---------------------------------------------------------------------------

struct Connection {
    address: SocketAddr,
    stream: TcpStream,
    buffer: Vec<u8>,
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

impl Connection {
    async fn open(address: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            address,
            stream,
            buffer: Vec::with_capacity(4096),
        })
    }

    async fn request(&mut self, raw: &[u8]) -> std::io::Result<Response> {
        match self.exchange(raw).await {
            Ok(response) => Ok(response),
            Err(_) => {
                // The server closed an idle keep-alive connection: one fresh try.
                *self = Connection::open(self.address).await?;
                self.exchange(raw).await
            }
        }
    }

    async fn exchange(&mut self, raw: &[u8]) -> std::io::Result<Response> {
        self.stream.write_all(raw).await?;
        self.buffer.clear();
        let head_end = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end + 4;
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        };
        let head = std::str::from_utf8(&self.buffer[..head_end])
            .map_err(|_| std::io::Error::other("response head is not UTF-8"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| std::io::Error::other("no status code"))?;
        let length = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse::<usize>().ok())
            .ok_or_else(|| std::io::Error::other("response without Content-Length"))?;
        while self.buffer.len() < head_end + length {
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(Response {
            status,
            body: self.buffer[head_end..head_end + length].to_vec(),
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn raw_request(
    address: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn unix_now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A signed SWR EE push of `tag` for `scheme`, as raw HTTP.
fn signed_push(address: SocketAddr, scheme: Scheme, body: &[u8], id: &str) -> Vec<u8> {
    let headers = sign_headers(&scheme.settings(), body, unix_now_s(), id);
    raw_request(
        address,
        &format!("/webhooks/{}", scheme.source()),
        &headers,
        body,
    )
}

/// The SWR EE sample with its version tag replaced.
fn swr_ee_body(tag: &str) -> Vec<u8> {
    SWR_EE_SAMPLE.replace(SAMPLE_TAG, tag).into_bytes()
}

/// An SWR EE-shaped push of one image per tag.
fn single_image_body(tags: &[String]) -> Vec<u8> {
    let resources: Vec<serde_json::Value> = tags
        .iter()
        .map(|tag| {
            serde_json::json!({
                "digest": "sha256:9f3d7a2c1b0e4d5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f",
                "tag": tag,
                "resource_url": format!("ee-demo.swr.cn-north-4.myhuaweicloud.com/team-a/payments/api:{tag}")
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "type": "PUSH_ARTIFACT",
        "occur_at": 1795859400,
        "operator": "ci-robot",
        "event_data": {
            "resources": resources,
            "repository": {
                "date_created": 1795000000,
                "name": "payments/api",
                "namespace": "team-a",
                "repo_full_name": "team-a/payments/api",
                "repo_type": "private"
            }
        }
    }))
    .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Throughput and latency at N connections
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
struct ThroughputResult {
    target: String,
    scheme: &'static str,
    requests: u64,
    errors: u64,
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Cores this process kept busy on average (load generator included).
    cpu_cores: f64,
    /// CPU time of the whole process per completed request (load generator included).
    cpu_us_per_request: f64,
    /// Against the bare handler measured in the same run (None for the baseline).
    throughput_ratio: Option<f64>,
    p50_ratio: Option<f64>,
    p99_ratio: Option<f64>,
    /// The store's group commits during the run (warm-up included).
    group_commits: Option<GroupCommitSummary>,
    /// Images the stand-in HSS received during the run (bridge targets).
    images_sent_to_hss: Option<usize>,
    hss_requests: Option<usize>,
}

impl ThroughputResult {
    fn with_baseline(mut self, bare: Option<&ThroughputResult>) -> Self {
        let Some(bare) = bare else { return self };
        self.throughput_ratio = Some(self.requests_per_s / bare.requests_per_s);
        self.p50_ratio = Some(self.p50_ms / bare.p50_ms);
        self.p99_ratio = Some(self.p99_ms / bare.p99_ms);
        self
    }
}

struct Drive {
    ok: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    seconds: f64,
    /// CPU time of this whole process (load generator included) in the window.
    cpu_seconds: f64,
}

/// User + system CPU time of this process, all threads, from /proc/self/stat.
fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name: utime and stime are the
    // 12th and 13th, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

/// `connections` closed-loop clients, each sending fresh signed pushes back to
/// back; counts what completed inside the measured window.
async fn drive(
    address: SocketAddr,
    scheme: Scheme,
    connections: usize,
    warmup: Duration,
    measure: Duration,
    label: &str,
) -> Result<Drive, String> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop_at = measure_from + measure;
    let mut tasks = Vec::new();
    for conn_index in 0..connections {
        let label = label.to_string();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(address).await?;
            let mut latencies = Vec::with_capacity(4096);
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut seq = 0u64;
            loop {
                let sent_at = Instant::now();
                if sent_at >= stop_at {
                    break;
                }
                seq += 1;
                let tag = format!("{label}-{conn_index}-{seq}");
                let body = swr_ee_body(&tag);
                let raw = signed_push(address, scheme, &body, &format!("msg_{tag}"));
                let response = connection.request(&raw).await?;
                let done = Instant::now();
                if sent_at >= measure_from && done <= stop_at {
                    if (200..300).contains(&response.status) {
                        ok += 1;
                        latencies.push((done - sent_at).as_micros() as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            Ok::<_, std::io::Error>((ok, errors, latencies))
        }));
    }
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let before = process_cpu_seconds();
        tokio::time::sleep_until(stop_at.into()).await;
        process_cpu_seconds() - before
    });
    let mut total = Drive {
        ok: 0,
        errors: 0,
        latencies_us: Vec::new(),
        seconds: measure.as_secs_f64(),
        cpu_seconds: cpu.await.map_err(|e| e.to_string())?,
    };
    for task in tasks {
        let (ok, errors, latencies) = task
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("load client failed: {e}"))?;
        total.ok += ok;
        total.errors += errors;
        total.latencies_us.extend(latencies);
    }
    total.latencies_us.sort_unstable();
    Ok(total)
}

fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted_us.len() as f64 * q) as usize).min(sorted_us.len() - 1);
    sorted_us[index] as f64 / 1000.0
}

fn result_of(target: &str, scheme: Scheme, drive: &Drive) -> ThroughputResult {
    ThroughputResult {
        target: target.to_string(),
        scheme: scheme.name(),
        requests: drive.ok,
        errors: drive.errors,
        requests_per_s: drive.ok as f64 / drive.seconds,
        p50_ms: percentile_ms(&drive.latencies_us, 0.50),
        p99_ms: percentile_ms(&drive.latencies_us, 0.99),
        cpu_cores: drive.cpu_seconds / drive.seconds,
        cpu_us_per_request: drive.cpu_seconds * 1e6 / drive.ok.max(1) as f64,
        throughput_ratio: None,
        p50_ratio: None,
        p99_ratio: None,
        images_sent_to_hss: None,
        hss_requests: None,
        group_commits: None,
    }
}

async fn bare_run(args: &Args, scheme: Scheme) -> Result<ThroughputResult, String> {
    let (address, handle, task) = start_bare().await?;
    let drive = drive(
        address,
        scheme,
        args.connections,
        Duration::from_secs(args.warmup_s),
        Duration::from_secs(args.duration_s),
        "bare",
    )
    .await?;
    handle.stop(true).await;
    let _ = task.await;
    let result = result_of("bare actix-web handler", scheme, &drive);
    eprintln!("{result:?}");
    Ok(result)
}

async fn bridge_run(
    args: &Args,
    scheme: Scheme,
    store_url: &str,
) -> Result<ThroughputResult, String> {
    // No configuration names the in-memory store: it is handed to the bridge
    // directly, and `store.url` (never opened) only has to be valid.
    let bridge = if store_url == IN_MEMORY {
        let config = bridge_config("sqlite://./unused.db", 2000, 100);
        RunningBridge::start_on(&config, Some(Arc::new(MemoryStore::new()))).await?
    } else {
        RunningBridge::start(&bridge_config(store_url, 2000, 100)).await?
    };
    let target = if store_url.starts_with("sqlite") {
        "bridge, SQLite store".to_string()
    } else if store_url == IN_MEMORY {
        "bridge, in-memory store (not durable)".to_string()
    } else {
        // The TLS mode shows: it changes the cost per connection and byte.
        let sslmode = store_url
            .split_once("sslmode=")
            .map_or("prefer", |(_, mode)| mode.split('&').next().unwrap_or(mode));
        format!("bridge, PostgreSQL store (sslmode={sslmode})")
    };
    measure_bridge(args, scheme, bridge, &target).await
}

/// Drives a started bridge for one throughput run and stops it.
async fn measure_bridge(
    args: &Args,
    scheme: Scheme,
    bridge: RunningBridge,
    target: &str,
) -> Result<ThroughputResult, String> {
    GROUP_COMMITS.take();
    let drive = drive(
        bridge.address,
        scheme,
        args.connections,
        Duration::from_secs(args.warmup_s),
        Duration::from_secs(args.duration_s),
        target.split(',').next().unwrap_or("bridge"),
    )
    .await?;
    let sender = Arc::clone(&bridge.sender);
    bridge.stop().await?;
    let mut result = result_of(target, scheme, &drive);
    result.images_sent_to_hss = Some(sender.images.load(Ordering::SeqCst));
    result.group_commits = GROUP_COMMITS.take();
    result.hss_requests = sender.calls.lock().map(|c| c.len()).ok();
    eprintln!("{result:?}");
    Ok(result)
}

// ---------------------------------------------------------------------------
// Open-loop pushes at a fixed rate (batching efficiency, end-to-end delay)
// ---------------------------------------------------------------------------

/// Sends `tags.len()` single-image token pushes at `rate` per second over 64
/// connections, each scheduled at `start + i / rate`; records when each got
/// its 202 and how many images the answers said were accepted.
async fn paced_pushes(
    address: SocketAddr,
    tags: Arc<Vec<String>>,
    rate: u64,
) -> Result<(Vec<(String, Instant)>, u64, u64, Duration), String> {
    let start = Instant::now() + Duration::from_millis(50);
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (tags, next, accepted, failed) = (
            Arc::clone(&tags),
            Arc::clone(&next),
            Arc::clone(&accepted),
            Arc::clone(&failed),
        );
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(address).await?;
            let mut acked = Vec::new();
            let mut errors = 0u64;
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(tag) = tags.get(index) else { break };
                let due = start + Duration::from_secs_f64(index as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let body = single_image_body(std::slice::from_ref(tag));
                let raw = signed_push(address, Scheme::Token, &body, "");
                let response = connection.request(&raw).await?;
                if response.status == 202 {
                    acked.push((tag.clone(), Instant::now()));
                    let answer: serde_json::Value =
                        serde_json::from_slice(&response.body).unwrap_or_default();
                    accepted.fetch_add(answer["accepted"].as_u64().unwrap_or(0), Ordering::SeqCst);
                } else {
                    errors += 1;
                    failed.store(true, Ordering::SeqCst);
                }
            }
            Ok::<_, std::io::Error>((acked, errors))
        }));
    }
    let mut acked = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mut part, task_errors) = task
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("load client failed: {e}"))?;
        acked.append(&mut part);
        errors += task_errors;
    }
    let elapsed = start.elapsed();
    Ok((acked, accepted.load(Ordering::SeqCst), errors, elapsed))
}

/// Waits until the stand-in has received `images` images, or `timeout`.
async fn wait_for_images(sender: &RecordingSender, images: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while (sender.images.load(Ordering::SeqCst) as u64) < images {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[derive(Debug, Serialize)]
struct BatchingResult {
    window_ms: u64,
    max_images: usize,
    pushes: usize,
    distinct_images: usize,
    push_errors: u64,
    push_seconds: f64,
    images_accepted: u64,
    hss_requests: usize,
    images_sent: usize,
    /// Σ over windows (from the first push) of ceil(distinct images pushed in it / max_images).
    minimum_requests_per_window_rule: usize,
    /// ceil(images sent / max_images): every request full.
    minimum_requests_full_batches: usize,
    full_requests: usize,
    smallest_request: usize,
}

async fn batching_run(
    store_url: &str,
    window_ms: u64,
    max_images: usize,
) -> Result<BatchingResult, String> {
    const PUSHES: usize = 10_000;
    const DISTINCT: usize = 1_000;
    const SECONDS: u64 = 5;
    let bridge = RunningBridge::start(&bridge_config(store_url, window_ms, max_images)).await?;
    // A fixed pseudo-random order (xorshift), so runs are comparable.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let tags: Vec<String> = (0..PUSHES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("img-{}", state % DISTINCT as u64)
        })
        .collect();
    let tags = Arc::new(tags);
    let (acked, accepted, errors, elapsed) =
        paced_pushes(bridge.address, Arc::clone(&tags), PUSHES as u64 / SECONDS).await?;
    let complete = wait_for_images(
        &bridge.sender,
        accepted,
        Duration::from_millis(window_ms * 2 + 5000),
    )
    .await;
    let calls = bridge
        .sender
        .calls
        .lock()
        .map(|c| c.clone())
        .map_err(|e| e.to_string())?;
    bridge.stop().await?;

    let first = acked
        .iter()
        .map(|(_, at)| *at)
        .min()
        .unwrap_or_else(Instant::now);
    let mut per_window: HashMap<u64, HashSet<&str>> = HashMap::new();
    for (tag, at) in &acked {
        let window = at.duration_since(first).as_millis() as u64 / window_ms;
        per_window.entry(window).or_default().insert(tag.as_str());
    }
    let minimum: usize = per_window
        .values()
        .map(|distinct| distinct.len().div_ceil(max_images))
        .sum();
    let images_sent: usize = calls.iter().map(|(_, tags)| tags.len()).sum();
    let result = BatchingResult {
        window_ms,
        max_images,
        pushes: PUSHES,
        distinct_images: DISTINCT,
        push_errors: errors,
        push_seconds: elapsed.as_secs_f64(),
        images_accepted: accepted,
        hss_requests: calls.len(),
        images_sent,
        minimum_requests_per_window_rule: minimum,
        minimum_requests_full_batches: images_sent.div_ceil(max_images),
        full_requests: calls.iter().filter(|(_, t)| t.len() == max_images).count(),
        smallest_request: calls.iter().map(|(_, t)| t.len()).min().unwrap_or(0),
    };
    if !complete {
        return Err(format!(
            "batching run: not every accepted image reached HSS: {result:?}"
        ));
    }
    eprintln!("{result:?}");
    Ok(result)
}

#[derive(Debug, Serialize)]
struct DelayResult {
    window_ms: u64,
    max_images: usize,
    rate_per_s: u64,
    pushes: usize,
    push_errors: u64,
    hss_requests: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// window + 100 ms
    bound_ms: u64,
}

async fn delay_run(
    args: &Args,
    store_url: &str,
    window_ms: u64,
    max_images: usize,
) -> Result<DelayResult, String> {
    let pushes = (args.delay_rate * args.delay_s) as usize;
    let bridge = RunningBridge::start(&bridge_config(store_url, window_ms, max_images)).await?;
    let tags: Arc<Vec<String>> =
        Arc::new((0..pushes).map(|i| format!("d{max_images}-{i}")).collect());
    let (acked, accepted, errors, _) = paced_pushes(bridge.address, tags, args.delay_rate).await?;
    let complete = wait_for_images(
        &bridge.sender,
        accepted,
        Duration::from_millis(window_ms * 2 + 5000),
    )
    .await;
    let calls = bridge
        .sender
        .calls
        .lock()
        .map(|c| c.clone())
        .map_err(|e| e.to_string())?;
    bridge.stop().await?;
    if !complete {
        return Err("delay run: not every accepted image reached HSS".into());
    }
    let mut first_sent: HashMap<&str, Instant> = HashMap::new();
    for (at, tags) in &calls {
        for tag in tags {
            first_sent.entry(tag.as_str()).or_insert(*at);
        }
    }
    let mut delays: Vec<u32> = acked
        .iter()
        .filter_map(|(tag, acked_at)| {
            first_sent
                .get(tag.as_str())
                .map(|sent| sent.saturating_duration_since(*acked_at).as_micros() as u32)
        })
        .collect();
    if delays.len() != acked.len() {
        return Err(format!(
            "delay run: {} acknowledged images never reached HSS",
            acked.len() - delays.len()
        ));
    }
    delays.sort_unstable();
    let result = DelayResult {
        window_ms,
        max_images,
        rate_per_s: args.delay_rate,
        pushes,
        push_errors: errors,
        hss_requests: calls.len(),
        p50_ms: percentile_ms(&delays, 0.50),
        p99_ms: percentile_ms(&delays, 0.99),
        max_ms: delays
            .last()
            .map(|d| *d as f64 / 1000.0)
            .unwrap_or(f64::NAN),
        bound_ms: window_ms + 100,
    };
    eprintln!("{result:?}");
    Ok(result)
}

// ---------------------------------------------------------------------------
// Memory: the bridge binary as a child process
// ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct MemoryResult {
    idle_rss_kib: u64,
    idle_hwm_kib: u64,
    pending_images: u64,
    loaded_rss_kib: u64,
    loaded_hwm_kib: u64,
    fill_seconds: f64,
}

fn proc_status_kib(pid: u32, field: &str) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').trim().split(' ').next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn http_get(
    address: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> std::io::Result<Response> {
    let mut connection = Connection::open(address).await?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{auth}\r\n");
    connection.exchange(raw.as_bytes()).await
}

async fn memory_run(args: &Args, root: &Path) -> Result<MemoryResult, String> {
    const IMAGES: usize = 100_000;
    const PER_PUSH: usize = 100;
    if !args.bridge_bin.is_file() {
        return Err(format!(
            "{} not found: build it with `cargo build --release --bin swr-scan-bridge`",
            args.bridge_bin.display()
        ));
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let dir = root.join("memory");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // Nothing becomes due for an hour: every image stays pending.
    let config = bridge_config(
        &format!("sqlite://{}/bridge.db", dir.display()),
        3_600_000,
        1_000_000,
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
    .replace(
        "workers = 2",
        "workers = 2\n[log]\nlevel = \"warn\"\nformat = \"json\"",
    );
    let config_path = dir.join("bridge.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let child = Command::new(&args.bridge_bin)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.bridge_bin.display()))?;
    let child = ChildGuard(child);
    let pid = child.0.id();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = http_get(address, "/readyz", None).await
            && response.status == 200
        {
            break;
        }
        if Instant::now() > deadline {
            return Err("the bridge child process did not become ready".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss_kib = proc_status_kib(pid, "VmRSS")?;
    let idle_hwm_kib = proc_status_kib(pid, "VmHWM")?;

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(address).await?;
            loop {
                let push = next.fetch_add(1, Ordering::SeqCst);
                if push >= IMAGES / PER_PUSH {
                    break;
                }
                let tags: Vec<String> = (0..PER_PUSH).map(|i| format!("m{push}-{i}")).collect();
                let body = single_image_body(&tags);
                let raw = signed_push(address, Scheme::Token, &body, "");
                let response = connection.request(&raw).await?;
                if response.status != 202 {
                    return Err(std::io::Error::other(format!(
                        "fill push answered {}",
                        response.status
                    )));
                }
            }
            Ok::<_, std::io::Error>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("filling the store failed: {e}"))?;
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    let pending = http_get(address, "/admin/pending", Some(ADMIN_TOKEN))
        .await
        .map_err(|e| e.to_string())?;
    let pending: serde_json::Value =
        serde_json::from_slice(&pending.body).map_err(|e| e.to_string())?;
    let pending_images = pending["pending_images"].as_u64().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let result = MemoryResult {
        idle_rss_kib,
        idle_hwm_kib,
        pending_images,
        loaded_rss_kib: proc_status_kib(pid, "VmRSS")?,
        loaded_hwm_kib: proc_status_kib(pid, "VmHWM")?,
        fill_seconds,
    };
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    drop(child);
    eprintln!("{result:?}");
    Ok(result)
}

// ---------------------------------------------------------------------------
// PostgreSQL: a fresh database per run, dropped afterwards
// ---------------------------------------------------------------------------

/// A connection to `--pg-url` for creating and dropping the runs' databases,
/// and the URL without its database name (where a run's database goes).
async fn postgres_admin(args: &Args) -> Result<(tokio_postgres::Client, String), String> {
    let (admin, connection) = tokio_postgres::connect(&args.pg_url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot reach {}: {e}", args.pg_url))?;
    tokio::spawn(connection);
    let base = args
        .pg_url
        .rsplit_once('/')
        .map(|(base, _)| base.to_string())
        .ok_or("--pg-url has no database")?;
    Ok((admin, base))
}

async fn postgres_runs(args: &Args, report: &mut Report) -> Result<(), String> {
    let (admin, base) = postgres_admin(args).await?;
    let mut databases = Vec::new();
    let result = async {
        let sslmodes: Vec<&str> = args.pg_sslmodes.split(',').map(str::trim).collect();
        let runs = args
            .schemes()
            .into_iter()
            .flat_map(|scheme| sslmodes.iter().map(move |sslmode| (scheme, *sslmode)));
        for (scheme, sslmode) in runs {
            let database = format!("swr_bench_{}_{}", std::process::id(), databases.len());
            admin
                .batch_execute(&format!("CREATE DATABASE {database}"))
                .await
                .map_err(|e| format!("cannot create a database: {e}"))?;
            databases.push(database.clone());
            let url = format!("{base}/{database}?sslmode={sslmode}");
            let settings =
                Settings::from_toml(&bridge_config(&url, 2000, 100)).map_err(|e| e.to_string())?;
            // One quick try, so a missing backend does not cost the start-up retries.
            swr_scan_bridge::store::configured::open(&settings.store)
                .await
                .map_err(|e| e.to_string())?;
            let bare = args.baseline(scheme, report).await?;
            let postgres = bridge_run(args, scheme, &url).await?;
            report
                .throughput
                .push(postgres.with_baseline(bare.as_ref()));
        }
        Ok::<_, String>(())
    }
    .await;
    for database in databases {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .await;
    }
    result
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

fn ratio(value: Option<f64>) -> String {
    value
        .map(|v| format!("{v:.2}"))
        .unwrap_or_else(|| "-".into())
}

fn print_report(report: &Report) {
    if !report.throughput.is_empty() {
        println!("\n## Intake at 64 connections\n");
        println!(
            "| target | scheme | req/s | ratio | p50 ms | p50 ratio | p99 ms | p99 ratio | errors | CPU cores | CPU µs/req | HSS requests / images |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for r in &report.throughput {
            println!(
                "| {} | {} | {:.0} | {} | {:.2} | {} | {:.2} | {} | {} | {:.2} | {:.0} | {} |",
                r.target,
                r.scheme,
                r.requests_per_s,
                ratio(r.throughput_ratio),
                r.p50_ms,
                ratio(r.p50_ratio),
                r.p99_ms,
                ratio(r.p99_ratio),
                r.errors,
                r.cpu_cores,
                r.cpu_us_per_request,
                match (r.hss_requests, r.images_sent_to_hss) {
                    (Some(requests), Some(images)) => format!("{requests} / {images}"),
                    _ => "-".into(),
                }
            );
        }
    }
    let groups: Vec<_> = report
        .throughput
        .iter()
        .filter_map(|r| r.group_commits.as_ref().map(|g| (r, g)))
        .collect();
    if !groups.is_empty() {
        println!("\n### Group commits during those runs\n");
        println!(
            "(PostgreSQL: one statement per group, its commit included in the statements column)\n"
        );
        println!(
            "| target | scheme | groups | webhooks/group | statements ms/group | commit (fsync) ms/group |"
        );
        println!("|---|---|---:|---:|---:|---:|");
        for (r, g) in groups {
            println!(
                "| {} | {} | {} | {:.1} | {:.2} | {:.2} |",
                r.target,
                r.scheme,
                g.groups,
                g.webhooks_per_group,
                g.write_ms_per_group,
                g.commit_ms_per_group
            );
        }
    }
    for b in &report.batching {
        println!(
            "\n## Batching efficiency (window {} ms, max_images {})\n",
            b.window_ms, b.max_images
        );
        println!(
            "{} pushes over {} distinct images in {:.2} s ({} errors): {} images accepted, \
             {} HSS requests carrying {} images ({} full, smallest {}).\n\
             Minimum by the per-window rule: {}; minimum with every request full: {}.",
            b.pushes,
            b.distinct_images,
            b.push_seconds,
            b.push_errors,
            b.images_accepted,
            b.hss_requests,
            b.images_sent,
            b.full_requests,
            b.smallest_request,
            b.minimum_requests_per_window_rule,
            b.minimum_requests_full_batches
        );
    }
    if !report.delay.is_empty() {
        println!("\n## End-to-end delay, 202 → HSS request\n");
        println!(
            "| window ms | max_images | pushes/s | pushes | errors | HSS requests | p50 ms | p99 ms | max ms | bound ms |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for d in &report.delay {
            println!(
                "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} |",
                d.window_ms,
                d.max_images,
                d.rate_per_s,
                d.pushes,
                d.push_errors,
                d.hss_requests,
                d.p50_ms,
                d.p99_ms,
                d.max_ms,
                d.bound_ms
            );
        }
    }
    if let Some(m) = &report.memory {
        println!("\n## Memory (bridge binary, child process)\n");
        println!(
            "idle: VmRSS {:.1} MiB, VmHWM {:.1} MiB; with {} images pending: VmRSS {:.1} MiB, VmHWM {:.1} MiB (filled in {:.1} s)",
            m.idle_rss_kib as f64 / 1024.0,
            m.idle_hwm_kib as f64 / 1024.0,
            m.pending_images,
            m.loaded_rss_kib as f64 / 1024.0,
            m.loaded_hwm_kib as f64 / 1024.0,
            m.fill_seconds
        );
    }
    for h in &report.history {
        println!(
            "\n## History recording on {} (token, {} rounds, off/on alternated)\n",
            h.store, h.rounds
        );
        println!(
            "| history | req/s per round | median req/s | median CPU µs/req | median p99 ms |"
        );
        println!("|---|---|---:|---:|---:|");
        for (label, runs) in [("off", &h.off), ("on", &h.on)] {
            let rates: Vec<String> = runs
                .iter()
                .map(|r| format!("{:.0}", r.requests_per_s))
                .collect();
            println!(
                "| {label} | {} | {:.0} | {:.1} | {:.2} |",
                rates.join(", "),
                median(runs.iter().map(|r| r.requests_per_s)),
                median(runs.iter().map(|r| r.cpu_us_per_request)),
                median(runs.iter().map(|r| r.p99_ms))
            );
        }
        println!(
            "\non/off: throughput {:.3}, CPU per request {:.3}; per-round throughput ratios: {}",
            h.throughput_ratio,
            h.cpu_ratio,
            h.round_ratios
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "rows after the last \"on\" run: {} history, {} batch_events, for {} images sent to HSS; after the last \"off\" run: {} and {}",
            h.rows_on.0,
            h.rows_on.1,
            h.on.last().and_then(|r| r.images_sent_to_hss).unwrap_or(0),
            h.rows_off.0,
            h.rows_off.1
        );
    }
    for note in &report.notes {
        println!("\nNote: {note}");
    }
}

// ---------------------------------------------------------------------------
// The cost of history recording (issue 16)
// ---------------------------------------------------------------------------

/// Intake without and with history recording, in turns, so that a busy
/// neighbour on a shared machine weighs on both alike.
#[derive(Debug, Clone, Serialize)]
struct HistoryCost {
    store: &'static str,
    rounds: usize,
    off: Vec<ThroughputResult>,
    on: Vec<ThroughputResult>,
    /// median(on req/s) / median(off req/s).
    throughput_ratio: f64,
    /// median(on CPU µs/req) / median(off CPU µs/req).
    cpu_ratio: f64,
    /// on / off req/s of each round.
    round_ratios: Vec<f64>,
    /// (history, batch_events) rows after the last run of each kind.
    rows_on: (i64, i64),
    rows_off: (i64, i64),
}

enum HistoryBackend<'a> {
    /// Databases go under this directory.
    Sqlite(&'a Path),
    /// A fresh database per run on `--pg-url`'s server, dropped afterwards.
    Postgres,
}

/// One store for one run, and how to count its history rows afterwards.
enum RunStore {
    Sqlite(PathBuf),
    Postgres {
        admin: tokio_postgres::Client,
        database: String,
        url: String,
    },
}

impl RunStore {
    async fn create(
        backend: &HistoryBackend<'_>,
        args: &Args,
        name: &str,
    ) -> Result<RunStore, String> {
        match backend {
            HistoryBackend::Sqlite(root) => {
                let dir = root.join(name);
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                Ok(RunStore::Sqlite(dir.join("bridge.db")))
            }
            HistoryBackend::Postgres => {
                let (admin, base) = postgres_admin(args).await?;
                let database = format!("swr_bench_{}_{name}", std::process::id()).replace('-', "_");
                admin
                    .batch_execute(&format!("CREATE DATABASE {database}"))
                    .await
                    .map_err(|e| format!("cannot create a database: {e}"))?;
                let url = format!("{base}/{database}?sslmode=disable");
                Ok(RunStore::Postgres {
                    admin,
                    database,
                    url,
                })
            }
        }
    }

    fn url(&self) -> String {
        match self {
            RunStore::Sqlite(path) => format!("sqlite://{}", path.display()),
            RunStore::Postgres { url, .. } => url.clone(),
        }
    }

    /// (history, batch_events) rows; drops a PostgreSQL database.
    async fn count_and_drop(self) -> Result<(i64, i64), String> {
        const COUNT: &str =
            "SELECT (SELECT count(*) FROM image_history) + (SELECT count(*) FROM recent_history),
                    (SELECT count(*) FROM batch_events)";
        match self {
            RunStore::Sqlite(path) => {
                // The indexed history is in its own file; recent rows at or
                // below its cursor were moved already (not yet deleted).
                const SQLITE_COUNT: &str = "SELECT (SELECT count(*) FROM kept.image_history)
                        + (SELECT count(*) FROM recent_history
                           WHERE id > (SELECT moved_through FROM kept.history_cursor)),
                        (SELECT count(*) FROM batch_events)";
                let conn = rusqlite::Connection::open(&path).map_err(|e| e.to_string())?;
                let history = swr_scan_bridge::store::sqlite::history_path(&path);
                conn.execute("ATTACH DATABASE ?1 AS kept", [history.to_string_lossy()])
                    .map_err(|e| e.to_string())?;
                conn.query_row(SQLITE_COUNT, [], |row| Ok((row.get(0)?, row.get(1)?)))
                    .map_err(|e| e.to_string())
            }
            RunStore::Postgres {
                admin,
                database,
                url,
            } => {
                let counted = async {
                    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .map_err(|e| e.to_string())?;
                    tokio::spawn(connection);
                    let row = client
                        .query_one(COUNT, &[])
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>((row.get(0), row.get(1)))
                }
                .await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                    .await;
                counted
            }
        }
    }
}

async fn history_runs(args: &Args, backend: &HistoryBackend<'_>) -> Result<HistoryCost, String> {
    let store = match backend {
        HistoryBackend::Sqlite(_) => "SQLite",
        HistoryBackend::Postgres => "PostgreSQL",
    };
    let rounds = args.history_rounds.max(1);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut rows_on, mut rows_off) = ((0, 0), (0, 0));
    for round in 0..rounds {
        // Which goes first alternates too: a trend in the neighbours' load
        // then favours neither side.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for recording in order {
            let kind = if recording { "on" } else { "off" };
            let run_store =
                RunStore::create(backend, args, &format!("history-{round}-{kind}")).await?;
            let mut config = bridge_config(&run_store.url(), 2000, 100);
            if !recording {
                config = config.replace("[store]\n", "[store]\nhistory_retention_s = 0\n");
            }
            let bridge = RunningBridge::start(&config).await?;
            let target = format!("bridge, {store} store, history {kind}");
            let result = measure_bridge(args, Scheme::Token, bridge, &target).await?;
            let rows = run_store.count_and_drop().await?;
            if recording {
                rows_on = rows;
                on.push(result);
            } else {
                rows_off = rows;
                off.push(result);
            }
        }
    }
    let median_of = |runs: &[ThroughputResult], pick: fn(&ThroughputResult) -> f64| {
        median(runs.iter().map(pick))
    };
    Ok(HistoryCost {
        store,
        rounds,
        throughput_ratio: median_of(&on, |r| r.requests_per_s)
            / median_of(&off, |r| r.requests_per_s),
        cpu_ratio: median_of(&on, |r| r.cpu_us_per_request)
            / median_of(&off, |r| r.cpu_us_per_request),
        round_ratios: on
            .iter()
            .zip(&off)
            .map(|(on, off)| on.requests_per_s / off.requests_per_s)
            .collect(),
        off,
        on,
        rows_on,
        rows_off,
    })
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
