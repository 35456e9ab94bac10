//! `POST /webhooks/{source}`: verify → parse → filter → store → 202.
//!
//! The answer is 202 only after the store committed every image, so a sender
//! that gets 202 may forget the push. Every outcome is one log line and one
//! metrics increment.
//!
//! Verification comes first: a request that fails it is answered 401 before
//! anything about its body or content type (415, 400) is judged. Only the
//! source (404), the rate limit (429), draining (503) and a body too large to
//! read (413) may be answered earlier, and 413 only to a request whose
//! credential headers are present and well-formed (a `token` request is
//! fully verified before its body is read): a body signature cannot be
//! checked without reading the body, and a body over `max_body_bytes` is
//! never read.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures_util::StreamExt;
use serde::Serialize;

use super::counters::{IgnoredWebhook, ImageCounts, IntakeCounters};
use super::formats::{self, IgnoreReason, Ignored};
use super::source::Source;
use crate::api_error::ApiError;
use crate::app_state::AppState;
use crate::store::{
    Arrival, DeliveryKey, EnqueueCounts, Enqueued, HistorySubject, IgnoredImage, StoreError,
    UnresolvedDigest,
};
use crate::telemetry::RequestId;

/// A body must arrive within this long of its head (which itself must arrive
/// within the server's client request timeout): a sender trickling its body
/// would otherwise hold the connection and its handler open indefinitely.
/// Webhook bodies are a few KiB; even `max_body_bytes` (1 MiB) needs only 100 KiB/s.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize)]
pub struct Accepted {
    pub accepted: usize,
    pub duplicates: usize,
    pub ignored: usize,
    /// Digest-only pushes stored for resolution through SWR EE.
    pub resolving: usize,
    pub reasons: Vec<Ignored>,
}

pub async fn receive_webhook(
    request: HttpRequest,
    path: web::Path<String>,
    mut payload: web::Payload,
    state: web::Data<AppState>,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let source_name = path.into_inner();
    let source = state.sources.get(&source_name);
    let outcome = match source {
        Some(source) => handle(&request, source, &mut payload, &state)
            .await
            .map(|answer| (source, answer)),
        None if state.drain.is_draining() => Err(ApiError::Draining),
        None => Err(ApiError::UnknownSource(printable(&source_name))),
    };
    match outcome {
        Ok((source, answer)) => {
            let verdict = Verdict::of(&answer);
            verdict.count(&source.counters);
            source.counters.images(&ImageCounts {
                accepted: answer.accepted,
                duplicates: answer.duplicates,
                resolving: answer.resolving,
                ignored: &answer.reasons,
            });
            let response = HttpResponse::Accepted().json(&answer);
            tracing::info!(
                request_id = request_id.as_str(),
                source = source.name(),
                outcome = verdict.outcome(),
                reason = verdict.reason(),
                accepted = answer.accepted,
                duplicates = answer.duplicates,
                ignored = answer.ignored,
                resolving = answer.resolving,
                status = response.status().as_u16(),
                duration_us = micros_since(started),
                "webhook"
            );
            Ok(response)
        }
        Err(error) => {
            // Unknown names are attacker-chosen: never let them become label values.
            let source_label = source.map_or("unknown", |source| source.name());
            state
                .metrics
                .webhooks
                .with_label_values(&[source_label, "rejected", error.code()])
                .inc();
            let response = answer_then_close(&error, payload);
            tracing::warn!(
                request_id = request_id.as_str(),
                source = source_label,
                outcome = "rejected",
                code = error.code(),
                error = %error,
                status = response.status().as_u16(),
                duration_us = micros_since(started),
                "webhook"
            );
            Ok(response)
        }
    }
}

fn micros_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// What a webhook that was not refused amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// It stored at least one new image.
    Accepted,
    /// It stored no new image, but at least one digest to resolve into one.
    Resolving,
    /// Every image it named was already waiting (or it was a redelivery).
    Duplicate,
    /// It named nothing to scan.
    Ignored(IgnoredWebhook),
}

impl Verdict {
    fn of(answer: &Accepted) -> Self {
        if answer.accepted > 0 {
            Verdict::Accepted
        } else if answer.resolving > 0 {
            Verdict::Resolving
        } else if answer.duplicates > 0 {
            Verdict::Duplicate
        } else {
            Verdict::Ignored(IgnoredWebhook::of(&answer.reasons))
        }
    }

    fn count(self, counters: &IntakeCounters) {
        match self {
            Verdict::Accepted => counters.webhook_accepted(),
            Verdict::Resolving => counters.webhook_resolving(),
            Verdict::Duplicate => counters.webhook_duplicate(),
            Verdict::Ignored(why) => counters.webhook_ignored(why),
        }
    }

    fn outcome(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Resolving => "resolving",
            Verdict::Duplicate => "duplicate",
            Verdict::Ignored(_) => "ignored",
        }
    }

    /// The metrics label `reason`: empty but for an ignored webhook.
    fn reason(self) -> &'static str {
        match self {
            Verdict::Ignored(why) => why.as_str(),
            Verdict::Accepted | Verdict::Resolving | Verdict::Duplicate => "",
        }
    }
}

/// The error answer, holding on to the request's body stream until the answer
/// is written. A refused request's body may be unread (too large, too slow,
/// not wanted); with its stream still held, the server closes the connection
/// after a short linger, where it would otherwise read and discard a chunked
/// body for as long as the sender keeps streaming it.
fn answer_then_close(error: &ApiError, unread: web::Payload) -> HttpResponse {
    let (response, body) = error.error_response().into_parts();
    let answer = body.try_into_bytes().unwrap_or_default();
    response
        .set_body(AnswerThenClose {
            size: answer.len() as u64,
            answer: Some(answer),
            _unread: unread,
        })
        .map_into_boxed_body()
}

struct AnswerThenClose {
    size: u64,
    answer: Option<web::Bytes>,
    _unread: web::Payload,
}

impl MessageBody for AnswerThenClose {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.size)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        Poll::Ready(self.get_mut().answer.take().map(Ok))
    }
}

async fn handle(
    request: &HttpRequest,
    source: &Source,
    payload: &mut web::Payload,
    state: &AppState,
) -> Result<Accepted, ApiError> {
    if state.drain.is_draining() {
        return Err(ApiError::Draining);
    }
    if !source.admit_request() {
        return Err(ApiError::RateLimited(source.name().to_string()));
    }
    let now_s = state.clock.now_ms().div_euclid(1000);
    let verified_without_body = source
        .verifier
        .verify_before_body(request.headers(), now_s)?;
    let body = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        read_body(request, payload, state.max_body_bytes),
    )
    .await
    .map_err(|_| ApiError::BodyTimeout(BODY_READ_TIMEOUT.as_secs()))??;
    let verified = match verified_without_body {
        Some(verified) => verified,
        None => source.verifier.verify(request.headers(), &body, now_s)?,
    };
    require_json(request)?;
    if body.is_empty() {
        return Err(ApiError::EmptyBody);
    }
    let parsed = formats::parse(source.payload_format(), request.headers(), &body)?;

    let mut reasons = parsed.ignored;
    let mut unresolved = Vec::new();
    for pushed in parsed.digest_only {
        if source.resolves_digests() {
            unresolved.push(source.unresolved_digest(pushed));
        } else {
            reasons.push(Ignored {
                reason: IgnoreReason::PushByDigest,
                subject: pushed.subject(),
            });
        }
    }
    let mut targets = Vec::with_capacity(parsed.images.len());
    for pushed in parsed.images {
        if source.settings.filter.admits(&pushed.image) {
            targets.push(source.scan_target(pushed));
        } else {
            reasons.push(Ignored {
                reason: IgnoreReason::FilteredOut,
                subject: pushed.image.to_string(),
            });
        }
    }

    let delivery = verified
        .delivery_id
        .or(parsed.delivery_id)
        .map(|id| DeliveryKey {
            source: source.name().to_string(),
            id,
        });
    // Read anew: the body may have taken a while to arrive.
    let now_ms = state.clock.now_ms();
    // Digests first: the delivery id is recorded with the images, after them,
    // so a redelivery is a duplicate only once both are stored.
    let digests = store_digests(source, state, delivery.as_ref(), &unresolved, now_ms).await?;
    let ignored = ignored_images(&reasons);
    let arrival = Arrival {
        source: source.name(),
        delivery: delivery.as_ref(),
        targets: &targets,
        ignored: &ignored,
    };
    let counts = store_targets(state, &arrival, now_ms).await?;
    if counts.accepted > 0 {
        state.wake_batcher.wake();
    }
    if digests.accepted > 0 {
        state.wake_resolver.wake();
    }
    Ok(Accepted {
        accepted: counts.accepted,
        duplicates: counts.duplicates + digests.duplicates,
        ignored: reasons.len(),
        resolving: digests.accepted,
        reasons,
    })
}

async fn store_digests(
    source: &Source,
    state: &AppState,
    delivery: Option<&DeliveryKey>,
    unresolved: &[UnresolvedDigest],
    now_ms: i64,
) -> Result<EnqueueCounts, ApiError> {
    if unresolved.is_empty() {
        return Ok(EnqueueCounts::default());
    }
    let stored = state
        .store
        .enqueue_digests(delivery, unresolved, now_ms)
        .await;
    counted(
        source.name(),
        state,
        "enqueue_digests",
        "digests",
        unresolved.len(),
        stored,
    )
}

/// The ignored things that name an image (or a digest-only push), so that
/// their history tells why they were not scanned; event types and the like
/// name none.
fn ignored_images(reasons: &[Ignored]) -> Vec<IgnoredImage> {
    reasons
        .iter()
        .filter_map(|ignored| {
            let subject = ignored.subject.parse::<HistorySubject>().ok()?;
            Some(IgnoredImage {
                subject,
                reason: ignored.reason.as_str().to_string(),
            })
        })
        .collect()
}

async fn store_targets(
    state: &AppState,
    arrival: &Arrival<'_>,
    now_ms: i64,
) -> Result<EnqueueCounts, ApiError> {
    let stored = state.store.enqueue_arrival(arrival, now_ms).await;
    counted(
        arrival.source,
        state,
        "enqueue",
        "images",
        arrival.targets.len(),
        stored,
    )
}

/// The answer's counts for one enqueue of `named` items (`what`, for the log),
/// or its failure, counted under the store `operation` and logged.
fn counted(
    source: &str,
    state: &AppState,
    operation: &str,
    what: &str,
    named: usize,
    stored: Result<Enqueued, StoreError>,
) -> Result<EnqueueCounts, ApiError> {
    match stored {
        Ok(Enqueued::Stored(counts)) => Ok(counts),
        // A redelivery: everything it names was stored the first time.
        Ok(Enqueued::DuplicateDelivery) => Ok(EnqueueCounts {
            accepted: 0,
            duplicates: named,
        }),
        Err(error) => {
            state
                .metrics
                .store_errors
                .with_label_values(&[operation])
                .inc();
            tracing::error!(source, error = %error, "cannot store webhook {what}");
            Err(error.into())
        }
    }
}

/// JSON only: `application/json`, or any `application/…+json` such as
/// `application/cloudevents+json`.
fn require_json(request: &HttpRequest) -> Result<(), ApiError> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else if content_type.is_empty() {
        Err(ApiError::UnsupportedMediaType("no Content-Type".into()))
    } else {
        Err(ApiError::UnsupportedMediaType(printable(&content_type)))
    }
}

/// Reads at most `limit` bytes; refuses early when Content-Length says more.
async fn read_body(
    request: &HttpRequest,
    payload: &mut web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if let Some(size) = declared
        && size > limit
    {
        return Err(ApiError::PayloadTooLarge { size, limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge {
                size: body.len() + chunk.len(),
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Echoes untrusted text safely: printable ASCII only, at most 64 characters.
fn printable(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(64)
        .collect();
    if text.chars().count() > 64 {
        format!("{cleaned}…")
    } else {
        cleaned
    }
}
