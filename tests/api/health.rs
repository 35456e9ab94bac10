//! `/healthz` and `/readyz`, also while draining and while the store is stuck.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::helpers::*;
use crate::common::ops::*;

fn db_path(app: &TestApp) -> std::path::PathBuf {
    app._data_dir.path().join("bridge.db")
}

/// Another process holding SQLite's write lock stands in for a stuck store:
/// the webhook waits, then gets 503; readiness turns 503 meanwhile; both
/// count as store errors; everything recovers when the lock goes.
#[tokio::test]
async fn a_stuck_store_fails_readiness_and_webhooks_and_counts_store_errors() {
    let hss = quiet_hss().await;
    let app = spawn_app_with(&hss.uri(), |s| s.store.pool_size = 1).await;
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);

    let blocker = rusqlite::Connection::open(db_path(&app)).expect("open db");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");

    // The webhook holds the only pooled connection while it waits for the lock.
    let webhook = {
        let client = app.client.clone();
        let url = app.url("/webhooks/swr-ee");
        tokio::spawn(async move {
            client
                .post(url)
                .header("Content-Type", "application/json")
                .header("Authorization", TOKEN_OLD)
                .body(harbor_push("team-a", "api", "stuck"))
                .send()
                .await
                .expect("webhook answered")
        })
    };
    wait_until(Duration::from_secs(4), "readiness fails", || async {
        let response = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        response.status() == 503
    })
    .await;
    let answer = webhook.await.expect("webhook task");
    assert_eq!(answer.status(), 503);
    assert_eq!(
        answer
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body["error"], "store_unavailable");

    blocker.execute_batch("ROLLBACK").expect("release the lock");
    drop(blocker);
    wait_until(Duration::from_secs(6), "readiness recovers", || async {
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status()
            == 200
    })
    .await;
    push(
        &app,
        "swr-ee",
        &harbor_push("team-a", "api", "after"),
        &token(TOKEN_OLD),
    )
    .await;

    let scrape = scrape_metrics(&app).await;
    assert_eq!(
        scrape.get(
            &metric_name("store_errors_total"),
            &[("operation", "enqueue")]
        ),
        1.0
    );
    // At least the ping that turned readiness off; one more when the first
    // probe after the ROLLBACK comes before the writer, sleeping in SQLite's
    // busy handler, has noticed the lock is free.
    assert!(scrape.get(&metric_name("store_errors_total"), &[("operation", "ping")]) >= 1.0);
    // Ready, not ready (the one failed ping), ready again: three changes.
    assert_eq!(scrape.get(&metric_name("ready"), &[]), 1.0);
    assert_eq!(
        scrape.get(&metric_name("readiness_changes_total"), &[]),
        3.0
    );
    assert_eq!(
        scrape.get(
            &metric_name("webhooks_total"),
            &[
                ("source", "swr-ee"),
                ("outcome", "rejected"),
                ("reason", "store_unavailable")
            ]
        ),
        1.0
    );
    assert_eq!(scrape.get(&metric_name("images_pending"), &[]), 1.0);
    app.stop().await;
}

#[tokio::test]
async fn health_stays_up_and_readiness_turns_503_at_once_when_draining() {
    let hss = quiet_hss().await;
    let app = spawn_app_with(&hss.uri(), |s| s.server.drain_linger_ms = 3_000).await;
    let (status, health) = status_of(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("healthz"),
    )
    .await;
    assert_eq!((status, health), (200, json!({"status": "ok"})));
    let (status, ready) = status_of(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz"),
    )
    .await;
    assert_eq!(
        (status, ready),
        (200, json!({"status": "ready", "store": "ok"}))
    );

    app.stopper.notify_one();
    let asked = Instant::now();
    wait_until(Duration::from_secs(1), "readiness 503", || async {
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status()
            == 503
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );
    let (status, ready) = status_of(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz"),
    )
    .await;
    assert_eq!((status, ready["status"].as_str()), (503, Some("draining")));
    let (status, health) = status_of(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("healthz"),
    )
    .await;
    assert_eq!((status, health), (200, json!({"status": "ok"})));
    let refused = app
        .post_webhook(
            "swr-ee",
            &harbor_push("team-a", "api", "late"),
            &token(TOKEN_OLD),
        )
        .await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "draining");
    app.server.await.expect("drained");
}
