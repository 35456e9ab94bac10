//! `/admin/*`: look at the queue, dead letters and an image's history, retry,
//! flush. Behind the admin bearer token (constant-time compare); without
//! `server.admin_token` configured the routes answer 404.

use actix_web::http::header::AUTHORIZATION;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::api_error::ApiError;
use crate::app_state::AppState;
use crate::store::HistorySubject;
use crate::store::history::HISTORY_LIMIT;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
}

impl ListQuery {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

fn authorize(request: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let Some(token) = &state.admin_token else {
        return Err(ApiError::AdminDisabled);
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .map(|value| value.as_bytes())
        .and_then(|value| value.strip_prefix(b"Bearer "))
        .unwrap_or(b"");
    if token.matches(presented) {
        Ok(())
    } else {
        Err(ApiError::AdminUnauthorized)
    }
}

pub async fn pending(
    request: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&request, &state)?;
    let stats = state.store.stats().await?;
    let images = state.store.pending(query.limit()).await?;
    let digests = state.store.waiting_digests(query.limit()).await?;
    let digests_resolving = state.store.digests_resolving().await?;
    Ok(HttpResponse::Ok().json(json!({
        "pending_images": stats.pending_images,
        "batches_in_flight": stats.batches_in_flight,
        "oldest_enqueued_at_ms": stats.oldest_enqueued_at,
        "images": images,
        "digests_resolving": digests_resolving,
        "digests": digests,
    })))
}

pub async fn dead_letters(
    request: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&request, &state)?;
    let letters = state.store.dead_letters(query.limit()).await?;
    Ok(HttpResponse::Ok().json(json!({ "dead_letters": letters })))
}

pub async fn retry_dead_letter(
    request: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // The id is parsed after the token check, so callers without the token
    // learn nothing from the path, and a bad id gets a JSON answer too.
    authorize(&request, &state)?;
    let Ok(id) = id.parse::<i64>() else {
        return Err(ApiError::NotFound("dead letter ids are integers".into()));
    };
    match state
        .store
        .retry_dead_letter(id, state.clock.now_ms())
        .await?
    {
        Some(counts) => {
            state.wake_batcher.wake();
            state.wake_resolver.wake();
            tracing::info!(
                dead_letter_id = id,
                requeued = counts.accepted,
                "dead letter retried"
            );
            Ok(HttpResponse::Ok().json(json!({
                "id": id,
                "requeued": counts.accepted,
                "already_pending": counts.duplicates,
            })))
        }
        None => Err(ApiError::NotFound(format!("no dead letter with id {id}"))),
    }
}

pub async fn flush(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&request, &state)?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let batches = state
        .batcher
        .drain(state.policy.flush_now(), deadline)
        .await;
    tracing::info!(batches, "admin flush");
    Ok(HttpResponse::Ok().json(json!({ "batches_sent": batches })))
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    image: Option<String>,
}

/// An image's events, oldest first: its newest [`HISTORY_LIMIT`] at most.
pub async fn history(
    request: HttpRequest,
    query: web::Query<HistoryQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&request, &state)?;
    let Some(image) = query.image.as_deref() else {
        return Err(ApiError::InvalidImage(
            "the image query parameter is missing: ask for ?image=namespace/name:tag \
             (or namespace/name@sha256:<hex> for a push by digest)"
                .into(),
        ));
    };
    let subject: HistorySubject =
        image
            .parse()
            .map_err(|error: crate::store::history::SubjectError| {
                ApiError::InvalidImage(error.to_string())
            })?;
    let events = state.store.history(&subject, HISTORY_LIMIT).await?;
    Ok(HttpResponse::Ok().json(json!({
        "image": subject.to_string(),
        "events": events,
    })))
}
