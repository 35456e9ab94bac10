//! `/healthz` (the process runs) and `/readyz` (the store answers and the
//! bridge is not draining: send traffic here).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::app_state::AppState;

/// A store that takes longer than this to answer counts as not ready.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.drain.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"status": "draining", "store": "not checked"}));
    }
    match tokio::time::timeout(READINESS_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => HttpResponse::Ok().json(json!({"status": "ready", "store": "ok"})),
        Ok(Err(error)) => {
            state
                .metrics
                .store_errors
                .with_label_values(&["ping"])
                .inc();
            HttpResponse::ServiceUnavailable()
                .json(json!({"status": "not ready", "store": error.to_string()}))
        }
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({
            "status": "not ready",
            "store": format!("no answer within {} s", READINESS_TIMEOUT.as_secs())
        })),
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // Gauges come from the store at scrape time; a failing store leaves the
    // last values and shows up in store_errors_total.
    match state.store.stats().await {
        Ok(stats) => state.metrics.observe_store(&stats, state.clock.now_ms()),
        Err(_) => state
            .metrics
            .store_errors
            .with_label_values(&["stats"])
            .inc(),
    }
    match state.metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(error) => HttpResponse::InternalServerError().body(error.to_string()),
    }
}
