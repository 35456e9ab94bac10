//! What HSS (or whatever answers in its place: a proxy, a captive portal)
//! sends back is untrusted input too: its classification never panics, and
//! an endless answer body is not read into memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use swr_scan_bridge::config::Settings;
use swr_scan_bridge::domain::{ImageRef, ImageType, Partition};
use swr_scan_bridge::hss::client::{classify_response, parse_retry_after};
use swr_scan_bridge::hss::{HssClient, ScanOutcome, ScanSender};
use swr_scan_bridge::store::BatchImage;

use crate::helpers::*;
use crate::support::Summary;

const MIB: usize = 1024 * 1024;

fn expected_kind(status: u16) -> &'static str {
    match status {
        200..=299 => "accepted",
        429 | 500 | 502 | 503 | 504 => "retryable",
        _ => "permanent",
    }
}

fn kind(outcome: &ScanOutcome) -> &'static str {
    match outcome {
        ScanOutcome::Accepted { .. } => "accepted",
        ScanOutcome::Retryable { .. } => "retryable",
        ScanOutcome::Permanent { .. } => "permanent",
    }
}

/// Error bodies: arbitrary bytes, JSON of the HSS/IAM shapes with odd values,
/// and long text.
fn answer_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        (any::<String>(), any::<String>()).prop_map(|(code, msg)| {
            serde_json::to_vec(&serde_json::json!({"error_code": code, "error_msg": msg}))
                .unwrap_or_default()
        }),
        any::<String>().prop_map(|msg| {
            serde_json::to_vec(&serde_json::json!({"error": {"code": 401, "message": msg}}))
                .unwrap_or_default()
        }),
        "[ -~]{0,4000}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_answer_is_classified_by_its_status_alone(
        status in 100u16..1000,
        body in answer_body(),
        request_id in proptest::option::of("[ -~]{0,64}"),
        retry_after in proptest::option::of(0u64..100_000),
    ) {
        let outcome = classify_response(
            status,
            request_id.clone(),
            retry_after.map(Duration::from_secs),
            &body,
        );
        prop_assert_eq!(kind(&outcome), expected_kind(status));
        match outcome {
            ScanOutcome::Permanent { error_msg, request_id: id, .. } => {
                prop_assert!(!error_msg.is_empty());
                prop_assert_eq!(id, request_id);
            }
            ScanOutcome::Retryable { reason, retry_after: after, .. } => {
                prop_assert!(reason.contains(&status.to_string()));
                prop_assert_eq!(after, retry_after.map(Duration::from_secs));
            }
            ScanOutcome::Accepted { status: s, .. } => prop_assert_eq!(s, status),
        }
    }

    #[test]
    fn any_retry_after_value_parses_or_is_ignored(value in any::<String>()) {
        let now = SystemTime::now();
        let parsed = parse_retry_after(&value, now);
        let trimmed = value.trim();
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            prop_assert_eq!(parsed, trimmed.parse::<u64>().ok().map(Duration::from_secs));
        }
    }

    #[test]
    fn delay_seconds_and_http_dates_parse(seconds in 0u64..10_000_000) {
        let now = SystemTime::now();
        prop_assert_eq!(
            parse_retry_after(&seconds.to_string(), now),
            Some(Duration::from_secs(seconds))
        );
        let at = now + Duration::from_secs(seconds);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(at), now);
        // HTTP dates have whole seconds: at most one second is lost.
        prop_assert!(parsed.is_some_and(|d| d.as_secs() + 1 >= seconds && d.as_secs() <= seconds));
    }
}

/// A "HSS" that answers `status` with a 1 GiB body it streams as fast as the
/// client takes it (at most `cap` bytes); reports how much was taken.
async fn endless_answer(status: u16, cap: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = taken.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 16 * 1024];
                let _ = stream.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 {status} Whatever\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                    1usize << 30
                );
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                while counter.load(Ordering::SeqCst) < cap {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                    counter.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            });
        }
    });
    (endpoint, taken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_hss_answer_body_is_not_read_to_the_end() {
    let mut summary = Summary::start("hostile_hss_answer_body");
    let cap = 512 * MIB;
    let partition = Partition {
        image_type: ImageType::PrivateImage,
        instance_id: None,
        enterprise_project_id: None,
    };
    let images = vec![BatchImage {
        image: ImageRef::new("team-a", "api", "v1"),
        instance_url: None,
        digest: None,
    }];
    for status in [503u16, 400, 200] {
        let (endpoint, taken) = endless_answer(status, cap).await;
        let settings = Settings::from_toml(&base_config(&endpoint, "memory://")).expect("config");
        let client = HssClient::new(&settings.hss).expect("client");
        let outcome = client.batch_scan(&partition, &images).await;
        assert_eq!(kind(&outcome), expected_kind(status), "{outcome:?}");
        if let ScanOutcome::Permanent { error_msg, .. } = &outcome {
            assert!(
                error_msg.len() <= 1024,
                "{} bytes of error text kept",
                error_msg.len()
            );
        }
        // Let the server notice the connection went away.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let read = taken.load(Ordering::SeqCst);
        assert!(
            read < 32 * MIB,
            "HTTP {status}: the client took {} MiB of an endless body",
            read / MIB
        );
        summary.count(
            match status {
                503 => "bytes_taken_503",
                400 => "bytes_taken_400",
                _ => "bytes_taken_200",
            },
            read,
        );
    }
    summary.print();
}
