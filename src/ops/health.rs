//! `/healthz` (the process runs) and `/readyz` (the store answers and the
//! bridge is not draining: send traffic here).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::app_state::AppState;

/// A store that takes longer than this to answer counts as not ready, and a
/// scrape stops waiting for its queue gauges (a stuck store is exactly when
/// operators need `/metrics` to answer).
const STORE_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.drain.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"status": "draining", "store": "not checked"}));
    }
    let store = match tokio::time::timeout(STORE_ANSWER_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => return HttpResponse::Ok().json(json!({"status": "ready", "store": "ok"})),
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {} s", STORE_ANSWER_TIMEOUT.as_secs()),
    };
    // A store that does not answer in time is as much a store error as one that fails.
    state
        .metrics
        .store_errors
        .with_label_values(&["ping"])
        .inc();
    tracing::warn!(store = %store, "not ready: the store does not answer");
    HttpResponse::ServiceUnavailable().json(json!({"status": "not ready", "store": store}))
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // Gauges come from the store at scrape time; a failing store leaves the
    // last values and shows up in store_errors_total.
    match tokio::time::timeout(STORE_ANSWER_TIMEOUT, state.store.stats()).await {
        Ok(Ok(stats)) => state.metrics.observe_store(&stats, state.clock.now_ms()),
        Ok(Err(_)) | Err(_) => state
            .metrics
            .store_errors
            .with_label_values(&["stats"])
            .inc(),
    }
    match tokio::time::timeout(STORE_ANSWER_TIMEOUT, state.store.digests_resolving()).await {
        Ok(Ok(waiting)) => state.metrics.digests_resolving.set(waiting as i64),
        Ok(Err(_)) | Err(_) => state
            .metrics
            .store_errors
            .with_label_values(&["digests_resolving"])
            .inc(),
    }
    match state.metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(error) => HttpResponse::InternalServerError().body(error.to_string()),
    }
}
