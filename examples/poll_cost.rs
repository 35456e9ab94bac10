//! What one poll of an SWR basic registry costs: requests made and time
//! taken by the real poll code ([`Cycle`]) against a local stand-in for the
//! SWR API, with the SQLite store, next to the fewest requests that could
//! find the same changes.
//!
//! Scenarios, for a registry of `--repositories` repositories (default 1,000)
//! with `--tags` tags each:
//! - the first poll (baseline): every repository and tag is read and recorded;
//! - a poll after `--changed` repositories (default 10) got a new tag since
//!   the previous poll, pushed evenly over the interval, for polls 30 s
//!   (the default interval), `--gap-s` (default 60 s) and 10 s apart: a
//!   repository pushed less than 10 s before a poll is read once more at the
//!   next (the settle margin), so the cost over the minimum grows as polls
//!   get closer;
//! - a poll when nothing changed.
//!
//! The stand-in pages like SWR (limit/offset, newest first, Content-Range)
//! and answers in microseconds, so the times are the bridge's own work plus
//! loopback HTTP; a real SWR adds its latency per request.
//!
//! ```text
//! cargo run --release --example poll_cost -- --rounds 5
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use swr_scan_bridge::batcher::BatcherHandle;
use swr_scan_bridge::clock::Clock;
use swr_scan_bridge::config::Settings;
use swr_scan_bridge::ops::metrics::Metrics;
use swr_scan_bridge::poll::PollSource;
use swr_scan_bridge::poll::cycle::{Cycle, PollReport};
use swr_scan_bridge::poll::lease::Lease;
use swr_scan_bridge::store::Store;
use swr_scan_bridge::store::sqlite::SqliteStore;
use swr_scan_bridge::swr::SwrClient;
use swr_scan_bridge::swr::basic::MAX_PAGE_SIZE;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 1_000)]
    repositories: usize,
    #[arg(long, default_value_t = 5)]
    tags: usize,
    #[arg(long, default_value_t = 10)]
    changed: usize,
    /// Polls measured per incremental scenario (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// SWR time between polls in the first incremental scenario.
    #[arg(long, default_value_t = 60)]
    gap_s: i64,
}

/// A tag's digest and update time (ms).
type Tags = BTreeMap<String, (String, i64)>;

#[derive(Default)]
struct Registry {
    /// SWR's clock, in ms.
    now_ms: i64,
    /// (namespace, repository) → (updated ms, tags)
    repositories: BTreeMap<(String, String), (i64, Tags)>,
}

impl Registry {
    fn push(&mut self, namespace: &str, repository: &str, tag: &str, digest: &str) {
        self.now_ms += 1;
        self.push_at(namespace, repository, tag, digest, self.now_ms);
    }

    fn push_at(&mut self, namespace: &str, repository: &str, tag: &str, digest: &str, at: i64) {
        self.now_ms = self.now_ms.max(at);
        let entry = self
            .repositories
            .entry((namespace.into(), repository.into()))
            .or_default();
        entry.0 = at;
        entry.1.insert(tag.into(), (digest.into(), at));
    }
}

#[derive(Clone, Default)]
struct Counters {
    repository_pages: Arc<AtomicU64>,
    tag_pages: Arc<AtomicU64>,
}

struct FakeSwr {
    registry: Arc<Mutex<Registry>>,
    counters: Counters,
}

fn swr_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

fn page(items: Vec<Value>, query: &BTreeMap<String, String>) -> ResponseTemplate {
    let number = |key: &str, default: usize| {
        query
            .get(key)
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    };
    let (limit, offset) = (number("limit", 100), number("offset", 0));
    if limit > MAX_PAGE_SIZE as usize || query.get("order_type").map(String::as_str) != Some("desc")
    {
        return ResponseTemplate::new(400);
    }
    let total = items.len();
    let items: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    let end = (offset + items.len()).saturating_sub(1);
    ResponseTemplate::new(200)
        .insert_header("Content-Range", format!("{offset}-{end}/{total}").as_str())
        .set_body_json(Value::Array(items))
}

impl Respond for FakeSwr {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let signed = request
            .headers
            .get("authorization")
            .is_some_and(|value| value.as_bytes().starts_with(b"SDK-HMAC-SHA256 "));
        if !signed {
            return ResponseTemplate::new(401);
        }
        let query: BTreeMap<String, String> = request.url.query_pairs().into_owned().collect();
        let segments: Vec<String> = request
            .url
            .path_segments()
            .map(|segments| {
                segments
                    .map(|s| percent_decode(s).replace('$', "/"))
                    .collect()
            })
            .unwrap_or_default();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        match segments
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["v2", "manage", "repos"] => {
                self.counters
                    .repository_pages
                    .fetch_add(1, Ordering::Relaxed);
                let mut repositories: Vec<_> = registry.repositories.iter().collect();
                repositories.sort_by_key(|(_, (updated, _))| std::cmp::Reverse(*updated));
                let items = repositories
                    .into_iter()
                    .map(|((namespace, name), (updated, _))| {
                        json!({"name": name, "namespace": namespace,
                               "updated_at": swr_time(*updated), "created_at": swr_time(*updated)})
                    })
                    .collect();
                page(items, &query)
            }
            [
                "v2",
                "manage",
                "namespaces",
                namespace,
                "repos",
                repository,
                "tags",
            ] => {
                self.counters.tag_pages.fetch_add(1, Ordering::Relaxed);
                let Some((_, tags)) = registry
                    .repositories
                    .get(&(namespace.to_string(), repository.to_string()))
                else {
                    return ResponseTemplate::new(404);
                };
                let mut tags: Vec<_> = tags.iter().collect();
                tags.sort_by_key(|(_, (_, updated))| std::cmp::Reverse(*updated));
                let items = tags
                    .into_iter()
                    .map(|(tag, (digest, updated))| {
                        json!({"Tag": tag, "digest": digest, "created": swr_time(*updated),
                               "updated": swr_time(*updated), "manifest": "{}"})
                    })
                    .collect();
                page(items, &query)
            }
            _ => ResponseTemplate::new(404),
        }
    }
}

fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

struct Measured {
    requests: u64,
    repository_pages: u64,
    tag_pages: u64,
    millis: f64,
    report: PollReport,
}

struct Bench {
    source: PollSource,
    swr: SwrClient,
    store: Arc<dyn Store>,
    metrics: Metrics,
    wake: BatcherHandle,
    counters: Counters,
}

impl Bench {
    /// One poll, with the bridge's clock reading `at_ms` (SWR's clock and the
    /// bridge's agree, as with NTP).
    async fn poll(&self, at_ms: i64) -> Measured {
        let clock = Clock::starting_at(at_ms);
        let before = (
            self.counters.repository_pages.load(Ordering::Relaxed),
            self.counters.tag_pages.load(Ordering::Relaxed),
        );
        let mut lease = Lease::take(
            Arc::clone(&self.store),
            clock,
            &self.source.name,
            "bench",
            Duration::from_secs(600),
        )
        .await
        .expect("store")
        .expect("the only poller holds the lease");
        let cycle = Cycle {
            source: &self.source,
            swr: &self.swr,
            store: self.store.as_ref(),
            clock,
            metrics: &self.metrics,
            wake_batcher: &self.wake,
        };
        let started = Instant::now();
        let report = cycle.run(&mut lease).await.expect("the poll succeeds");
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        let repository_pages = self.counters.repository_pages.load(Ordering::Relaxed) - before.0;
        let tag_pages = self.counters.tag_pages.load(Ordering::Relaxed) - before.1;
        Measured {
            requests: repository_pages + tag_pages,
            repository_pages,
            tag_pages,
            millis,
            report,
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn print_row(scenario: &str, runs: &[Measured], minimum: u64) {
    let fewest = runs.iter().map(|m| m.requests).min().unwrap_or(0);
    let most = runs.iter().map(|m| m.requests).max().unwrap_or(0);
    let typical = median(runs.iter().map(|m| m.requests as f64).collect());
    let last = &runs[runs.len() - 1];
    println!(
        "{scenario:<34} {typical:>8.0} {:>9} {:>6} {:>6} {minimum:>8} {:>10.1} {:>7}",
        format!("{fewest}-{most}"),
        last.repository_pages,
        last.tag_pages,
        median(runs.iter().map(|m| m.millis).collect()),
        last.report.found,
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let registry = Arc::new(Mutex::new(Registry {
        now_ms: Utc::now().timestamp_millis() - 30 * 24 * 3600 * 1000,
        ..Registry::default()
    }));
    {
        let mut registry = registry.lock().unwrap_or_else(|e| e.into_inner());
        for r in 0..args.repositories {
            for t in 0..args.tags {
                registry.push(
                    &format!("team-{}", r % 10),
                    &format!("svc-{r}"),
                    &format!("1.{t}"),
                    &format!("sha256:{r:032x}{t:032x}"),
                );
            }
            // Old content, updated at least the margin apart: as a registry
            // whose pushes are spread over the month.
            registry.now_ms += 60_000;
        }
    }
    let counters = Counters::default();
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(FakeSwr {
            registry: Arc::clone(&registry),
            counters: counters.clone(),
        })
        .mount(&server)
        .await;

    let settings = Settings::from_toml(&format!(
        r#"
[hss]
region = "cn-north-4"
endpoint = "http://127.0.0.1:9"
project_id = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
ak = "HPUAEXAMPLEAKID0EXAM"
sk = "ExampleSecretKeyDoNotUse0123456789abcdef"
[swr]
endpoint = "{}"
[[sources]]
name = "swr-basic"
format = "swr-poll"
image_type = "private_image"
"#,
        server.uri()
    ))
    .expect("bench config");
    let source = settings.source("swr-basic").expect("the poll source");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("bridge.db"), 4)
        .await
        .expect("open the store");
    store.migrate().await.expect("migrate");
    let metrics = Metrics::new().expect("metrics");
    let bench = Bench {
        source: PollSource::new(source).expect("a poll source"),
        swr: SwrClient::new(&settings.hss, &settings.swr, metrics.clone()).expect("swr client"),
        store: Arc::new(store),
        metrics,
        wake: BatcherHandle::default(),
        counters,
    };

    println!(
        "registry: {} repositories x {} tags; {} changed per incremental poll; SQLite store\n",
        args.repositories, args.tags, args.changed
    );
    println!(
        "{:<34} {:>8} {:>9} {:>6} {:>6} {:>8} {:>10} {:>7}",
        "scenario", "requests", "range", "repos", "tags", "minimum", "median ms", "found"
    );
    let mut poll_at = registry.lock().unwrap_or_else(|e| e.into_inner()).now_ms + 60_000;
    let baseline = bench.poll(poll_at).await;
    let repository_pages_at_max = args.repositories.div_ceil(MAX_PAGE_SIZE as usize) as u64;
    print_row(
        "first poll (baseline, recorded)",
        &[baseline],
        repository_pages_at_max + args.repositories as u64,
    );

    let mut round = 0;
    for gap_s in [30, args.gap_s, 10] {
        let gap_ms = gap_s * 1000;
        let mut runs = Vec::new();
        for _ in 0..args.rounds {
            let previous = poll_at;
            poll_at += gap_ms;
            {
                // The pushes spread evenly over the time since the last poll.
                let mut registry = registry.lock().unwrap_or_else(|e| e.into_inner());
                for c in 0..args.changed {
                    let r = (round * 7919 + c * 104_729) % args.repositories;
                    let at = previous + (c as i64 + 1) * gap_ms / (args.changed as i64 + 1);
                    registry.push_at(
                        &format!("team-{}", r % 10),
                        &format!("svc-{r}"),
                        &format!("2.{round}"),
                        &format!("sha256:{round:032x}{c:032x}"),
                        at,
                    );
                }
            }
            round += 1;
            let measured = bench.poll(poll_at).await;
            assert_eq!(measured.report.found, args.changed, "every change found");
            runs.push(measured);
        }
        let scenario = format!("{} changed, polls {gap_s} s apart", args.changed);
        print_row(&scenario, &runs, 1 + args.changed as u64);
    }
    let mut quiet = Vec::new();
    for _ in 0..args.rounds {
        poll_at += 30_000;
        quiet.push(bench.poll(poll_at).await);
    }
    print_row("nothing changed, polls 30 s apart", &quiet, 1);
}
