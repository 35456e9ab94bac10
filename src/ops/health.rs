//! `/healthz` (the process runs) and `/readyz` (the store answers and the
//! bridge is not draining: send traffic here).

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::STORE_ANSWER_TIMEOUT;
use crate::app_state::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.drain.is_draining() {
        state.metrics.record_readiness(false);
        return HttpResponse::ServiceUnavailable()
            .json(json!({"status": "draining", "store": "not checked"}));
    }
    let store = match tokio::time::timeout(STORE_ANSWER_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => {
            state.metrics.record_readiness(true);
            return HttpResponse::Ok().json(json!({"status": "ready", "store": "ok"}));
        }
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {} s", STORE_ANSWER_TIMEOUT.as_secs()),
    };
    // A store that does not answer in time is as much a store error as one that fails.
    state
        .metrics
        .store_errors
        .with_label_values(&["ping"])
        .inc();
    state.metrics.record_readiness(false);
    tracing::warn!(store = %store, "not ready: the store does not answer");
    HttpResponse::ServiceUnavailable().json(json!({"status": "not ready", "store": store}))
}
