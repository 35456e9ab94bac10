//! Bodies and headers that are too big, too slow or endless.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::fake_hss::FakeHss;
use crate::common::helpers::*;
use crate::reliability::raw_http::{connect, exchange, read_response, request};
use crate::reliability::support::*;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_without_being_read() {
    let mut summary = Summary::start("hostile_oversized_body");
    let hss = FakeHss::start(AK, SK).await;
    let app = app(&hss).await;

    // Declared: 1 GiB announced, 1 KiB sent; the answer comes without the rest.
    let mut stream = connect(&app.address).await;
    let head = webhook_head("swr-ee", "Content-Length: 1073741824\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(&[b'['; 1024]).await.expect("first KiB");
    let answer = read_response(&mut stream, Duration::from_secs(10))
        .await
        .expect("an answer before the body was sent");
    assert_error(&answer, 413, "payload_too_large");
    drop(stream);

    // Undeclared (chunked) and endless: the bridge answers at the limit and
    // then hangs up (after actix's short linger), rather than draining the
    // stream for as long as the sender keeps it going.
    let stream = connect(&app.address).await;
    let (mut reader, mut writer) = stream.into_split();
    let written = Arc::new(AtomicUsize::new(0));
    let writer_count = written.clone();
    let writer_task = tokio::spawn(async move {
        let head = webhook_head("swr-ee", "Transfer-Encoding: chunked\r\n\r\n");
        writer.write_all(head.as_bytes()).await?;
        let chunk_data = vec![b' '; 64 * 1024];
        let mut chunk = format!("{:x}\r\n", chunk_data.len()).into_bytes();
        chunk.extend_from_slice(&chunk_data);
        chunk.extend_from_slice(b"\r\n");
        loop {
            writer.write_all(&chunk).await?;
            writer_count.fetch_add(chunk_data.len(), Ordering::SeqCst);
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    let started = Instant::now();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut raw)).await;
    let hung_up = tokio::time::timeout(Duration::from_secs(20), writer_task).await;
    let hung_up_after = started.elapsed();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "answer to the endless body: {text}"
    );
    assert!(
        matches!(hung_up, Ok(Ok(Err(_)))),
        "the bridge kept reading the endless body for 20 s"
    );
    let streamed = written.load(Ordering::SeqCst);

    still_serving(&app, "after-oversized").await;
    summary
        .count("declared_bytes", 1u64 << 30)
        .count("declared_answer", answer.status)
        .count("endless_body_bytes_taken_before_hang_up", streamed)
        .count("endless_body_hang_up_after_ms", hung_up_after.as_millis())
        .print();
    app.stop().await;
}

/// Slow clients: many connections trickling their headers a byte at a time
/// hold no worker; a normal push is answered while they trickle, and each of
/// them is cut off once its request head has taken too long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_do_not_starve_other_clients() {
    const SLOW: usize = 256;
    let mut summary = Summary::start("hostile_slowloris");
    let hss = FakeHss::start(AK, SK).await;
    let app = app(&hss).await;
    let closed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..SLOW {
        let stream = connect(&app.address).await;
        let closed = closed.clone();
        tasks.push(tokio::spawn(async move {
            let (mut reader, mut writer) = stream.into_split();
            let trickle = async move {
                let head =
                    format!("POST /webhooks/swr-ee HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-{i}: ");
                writer.write_all(head.as_bytes()).await?;
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    writer.write_all(b"a").await?;
                }
                #[allow(unreachable_code)]
                Ok::<(), std::io::Error>(())
            };
            let mut sink = Vec::new();
            tokio::select! {
                _ = trickle => {}
                _ = reader.read_to_end(&mut sink) => {}
            }
            closed.fetch_add(1, Ordering::SeqCst);
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = Instant::now();
    let push = signed_push(Sender::SwrEe, "amid-slowloris");
    let answer = app
        .client
        .post(app.url("/webhooks/swr-ee"))
        .header("Content-Type", "application/json")
        .header("Authorization", TOKEN_NEW)
        .timeout(Duration::from_secs(5))
        .body(push.body)
        .send()
        .await
        .expect("a normal push is answered while the slow clients trickle");
    let latency = before.elapsed();
    assert_eq!(answer.status(), 202);
    let open_while_served = SLOW - closed.load(Ordering::SeqCst);
    assert_eq!(
        open_while_served, SLOW,
        "the slow clients were still connected"
    );

    // Cut off by the server (client_request_timeout), not by the test.
    wait_until(
        Duration::from_secs(25),
        "every trickling connection closed by the bridge",
        || {
            let closed = closed.load(Ordering::SeqCst);
            async move { closed == SLOW }
        },
    )
    .await;
    let cut_after = started.elapsed();
    for task in tasks {
        task.await.expect("slow client task");
    }
    still_serving(&app, "after-slowloris").await;
    summary
        .count("slow_connections", SLOW)
        .count("normal_push_status", answer.status().as_u16())
        .count("normal_push_latency_ms", latency.as_millis())
        .count(
            "all_slow_connections_closed_after_ms",
            cut_after.as_millis(),
        )
        .print();
    app.stop().await;
}

/// A body that trickles in after a complete head does not hold its connection
/// (and handler) open forever either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_off() {
    let mut summary = Summary::start("hostile_slow_body");
    let hss = FakeHss::start(AK, SK).await;
    let app = app(&hss).await;
    let stream = connect(&app.address).await;
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let head = webhook_head("swr-ee", "Content-Length: 100000\r\n\r\n");
        writer.write_all(head.as_bytes()).await?;
        loop {
            writer.write_all(b" ").await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(40), reader.read_to_end(&mut raw)).await;
    trickle.abort();
    assert!(
        read.is_ok(),
        "the bridge still waits for the trickled body after 40 s"
    );
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    still_serving(&app, "after-slow-body").await;
    summary
        .count("answer", text.split(' ').nth(1).unwrap_or("none"))
        .count("cut_off_after_ms", started.elapsed().as_millis())
        .print();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_are_refused_and_the_server_keeps_serving() {
    let mut summary = Summary::start("hostile_header_flood");
    let hss = FakeHss::start(AK, SK).await;
    let app = app(&hss).await;
    let body = harbor_push("team-a", "api", "flood");

    let many: Vec<(String, Vec<u8>)> = (0..500)
        .map(|i| (format!("X-Flood-{i}"), b"v".to_vec()))
        .collect();
    let huge = vec![("X-Huge".to_string(), vec![b'h'; 256 * 1024])];
    let wide: Vec<(String, Vec<u8>)> = (0..64)
        .map(|i| (format!("X-Wide-{i}"), vec![b'w'; 16 * 1024]))
        .collect();
    let mut statuses = Vec::new();
    for (case, headers) in [("many", many), ("huge", huge), ("wide", wide)] {
        let mut all: Vec<(&str, &[u8])> = vec![
            ("Content-Type", b"application/json"),
            ("Authorization", TOKEN_NEW.as_bytes()),
        ];
        all.extend(headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
        let answer = exchange(
            &app.address,
            &request("POST", "/webhooks/swr-ee", &all, &body),
        )
        .await;
        // Refused while reading the head: some servers answer, some just hang up.
        let status = answer.as_ref().map_or(0, |a| a.status);
        assert!(
            matches!(status, 431 | 400 | 0),
            "{case}: {status} {:?}",
            answer.map(|a| a.body_text())
        );
        statuses.push(format!("{case}:{status}"));
        still_serving(&app, &format!("after-{case}")).await;
    }
    // Each header repeated: the token scheme refuses an ambiguous credential.
    let twice = exchange(
        &app.address,
        &request(
            "POST",
            "/webhooks/swr-ee",
            &[
                ("Content-Type", b"application/json"),
                ("Authorization", TOKEN_NEW.as_bytes()),
                ("Authorization", TOKEN_OLD.as_bytes()),
            ],
            &body,
        ),
    )
    .await
    .expect("answer");
    assert_error(&twice, 401, "malformed_header");
    summary.count("answers", statuses.join(",")).print();
    app.stop().await;
}
