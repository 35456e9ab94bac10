//! HSS slow: answers slower than `hss.request_timeout_ms`. The batches are
//! retried, and no image is accepted twice: each is in exactly one request
//! whose 2xx reached the bridge in time. What the timed-out requests carried
//! may also have been scanned (HSS got them; the bridge cannot know): that is
//! the at-least-once duplicate, bounded by the number of timeouts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use swr_scan_bridge::config::{RawSettings, Settings};
use swr_scan_bridge::domain::Partition;
use swr_scan_bridge::hss::{ScanOutcome, ScanSender};
use swr_scan_bridge::startup::Application;
use swr_scan_bridge::store::BatchImage;

use crate::common::fake_hss::{FakeHss, Reply};
use crate::common::helpers::*;
use crate::reliability::support::*;

const TIMEOUT_MS: u64 = 500;
const SLOW_REPLIES: usize = 4;
const MAX_IMAGES: usize = 10;
const IMAGES: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_slower_than_the_timeout_are_retried_without_a_duplicated_success() {
    let mut summary = Summary::start("hss_slow");
    let hss = FakeHss::start(AK, SK).await;
    // The first requests are answered 200 — three times too late.
    hss.respond_with_sequence(
        (0..SLOW_REPLIES)
            .map(|_| Reply::accepted().delayed(Duration::from_millis(TIMEOUT_MS * 3)))
            .collect(),
    );
    let app = spawn_app_with(&hss.uri(), |s| {
        s.hss.request_timeout_ms = TIMEOUT_MS;
        s.batch.window_ms = 200;
        s.batch.max_images = MAX_IMAGES;
    })
    .await;
    let pushes = (0..IMAGES).map(|i| {
        let push = signed_push(Sender::SwrEe, &format!("slow-{i}"));
        let app = &app;
        async move {
            let response = app
                .post_webhook(push.source, &push.body, &push.headers)
                .await;
            assert_eq!(response.status(), 202);
            push.image
        }
    });
    let acknowledged: Vec<String> = join_all(pushes).await;
    wait_until(
        Duration::from_secs(30),
        "every image delivered in time",
        || async { app.pending_count().await == 0 },
    )
    .await;

    let requests = hss.requests();
    assert!(requests.len() > SLOW_REPLIES, "{} requests", requests.len());
    // Authenticated requests take the scripted replies in arrival order.
    assert!(hss.requests_with_bad_signature().is_empty());
    let mut in_time: BTreeMap<String, usize> = BTreeMap::new();
    let mut late: BTreeMap<String, usize> = BTreeMap::new();
    for (index, request) in requests.iter().enumerate() {
        let target = if index < SLOW_REPLIES {
            &mut late
        } else {
            &mut in_time
        };
        for image in images_of(&request.json()) {
            *target.entry(image).or_insert(0) += 1;
        }
    }
    for image in &acknowledged {
        assert_eq!(
            in_time.get(image),
            Some(&1),
            "{image} must be in exactly one request answered in time"
        );
    }
    assert_eq!(in_time.len(), IMAGES, "nothing else was sent: {in_time:?}");
    let late_copies: usize = late.values().sum();
    assert!(
        late_copies <= SLOW_REPLIES * MAX_IMAGES,
        "{late_copies} images in timed-out requests"
    );
    let retries =
        crate::reliability::support::metric(&app, "swr_scan_bridge_hss_retries_total").await;
    assert_eq!(retries as usize, SLOW_REPLIES, "one retry per timeout");

    summary
        .count("images_acknowledged", acknowledged.len())
        .count("hss_requests", requests.len())
        .count("timeouts", SLOW_REPLIES)
        .count("retries", retries)
        .count(
            "images_accepted_in_time_once",
            in_time.values().filter(|c| **c == 1).count(),
        )
        .count(
            "duplicated_successes",
            in_time.values().filter(|c| **c > 1).count(),
        )
        .count("images_in_timed_out_requests", late_copies)
        .print();
    app.stop().await;
}

/// A sender whose first call outlives the batch's lease (as a token renewal
/// after a 401 can: two credential fetches and two attempts, each allowed the
/// whole request timeout), then answers promptly. It records which calls ran
/// to completion, and when each call started and ended.
#[derive(Default)]
struct LingeringSender {
    calls: Mutex<Vec<Call>>,
}

#[derive(Debug, Clone)]
struct Call {
    images: Vec<String>,
    started: Instant,
    /// `None`: the call was abandoned (its future dropped) before it answered.
    finished: Option<Instant>,
}

const LEASE_MS: u64 = 1_500;
const FIRST_CALL: Duration = Duration::from_millis(4_000);

#[async_trait::async_trait]
impl ScanSender for LingeringSender {
    async fn batch_scan(&self, _partition: &Partition, images: &[BatchImage]) -> ScanOutcome {
        let index = {
            let mut calls = self.calls.lock().expect("calls");
            calls.push(Call {
                images: images.iter().map(|i| i.image.to_string()).collect(),
                started: Instant::now(),
                finished: None,
            });
            calls.len() - 1
        };
        if index == 0 {
            tokio::time::sleep(FIRST_CALL).await;
        }
        self.calls.lock().expect("calls")[index].finished = Some(Instant::now());
        ScanOutcome::Accepted {
            status: 200,
            request_id: None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_outlives_its_lease_is_abandoned_not_doubled() {
    let mut summary = Summary::start("hss_slower_than_lease");
    let dir = tempfile::tempdir().expect("temp dir");
    let store_url = format!("sqlite://{}/bridge.db", dir.path().display());
    let mut raw =
        RawSettings::from_toml(&base_config("http://127.0.0.1:9", &store_url)).expect("config");
    raw.hss.request_timeout_ms = 500;
    raw.store.lease_ms = LEASE_MS;
    raw.batch.window_ms = 100;
    let settings = Settings::parse(&raw).expect("valid");
    let sender = Arc::new(LingeringSender::default());
    let app = Application::build_with_sender(settings, sender.clone())
        .await
        .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let stopper = app.stopper();
    let server = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let push = signed_push(Sender::SwrEe, "lingering");
    let answer = send(&client, &address, &push).await;
    assert!(matches!(answer, Some((202, _))), "{answer:?}");

    // Wait past the moment the first call would have answered, had it been
    // left running, and until some call answered.
    wait_until(
        FIRST_CALL + Duration::from_secs(10),
        "the first call's answer time passed and the image was accepted",
        || {
            let calls = sender.calls.lock().expect("calls").clone();
            async move {
                calls.first().is_some_and(|first| {
                    first.started.elapsed() > FIRST_CALL + Duration::from_millis(500)
                }) && calls.iter().any(|call| call.finished.is_some())
            }
        },
    )
    .await;
    let calls = sender.calls.lock().expect("calls").clone();
    let successes = calls.iter().filter(|call| call.finished.is_some()).count();
    assert_eq!(
        successes, 1,
        "the batch was accepted {successes} times: {calls:?}"
    );
    assert!(
        calls.iter().all(|call| call.images == calls[0].images),
        "{calls:?}"
    );
    summary
        .count("lease_ms", LEASE_MS)
        .count("first_call_ms", FIRST_CALL.as_millis())
        .count("calls", calls.len())
        .count(
            "abandoned_calls",
            calls.iter().filter(|c| c.finished.is_none()).count(),
        )
        .count("successful_calls", successes)
        .print();
    stopper.notify_one();
    let _ = server.await;
}
