//! An image's history: what the bridge did with it and when, kept per image
//! for `store.history_retention_s` so that "was my image scanned, when, in
//! which HSS request?" has an answer.
//!
//! Every backend records an event in the same transaction as the state change
//! that causes it (enqueue, claim, settle), so the history never tells of a
//! change that was rolled back, nor misses one that committed. The events of
//! one webhook's arrival are built here, once, for every backend; the events
//! of a batch (sent, scanned, retried, dead_letter) are written by each
//! backend for every image the batch carries, naming the source each image
//! came from.

use serde::{Deserialize, Serialize};

use super::{
    ClaimedDigest, DeadLetterCause, DeliveryKey, DigestSettlement, Millis, UnresolvedDigest,
};
use crate::domain::ScanTarget;

mod subject;

pub use subject::{HistorySubject, SubjectError};

/// `GET /admin/history` answers at most this many events: an image's newest.
pub const HISTORY_LIMIT: usize = 1_000;

/// What happened to an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Stored as pending by a webhook.
    Accepted,
    /// Already pending (or the webhook was a redelivery): not stored twice.
    Duplicate,
    /// Deliberately not scanned; `reason` says why.
    Ignored,
    /// A digest-only push stored for resolution through SWR.
    Resolving,
    /// SWR named the digest's tags.
    Resolved,
    /// A digest-only push given up (`reason`: untagged, not_found).
    Dropped,
    /// Claimed in a batch to be sent to HSS (`batch_id`, `api`).
    Sent,
    /// HSS answered 2xx (`hss_status`, `hss_request_id`).
    Scanned,
    /// HSS failed in a way worth retrying; the batch will be sent again.
    Retried,
    /// HSS refused the batch for good: see `/admin/dead-letters`.
    DeadLetter,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::Accepted,
        EventKind::Duplicate,
        EventKind::Ignored,
        EventKind::Resolving,
        EventKind::Resolved,
        EventKind::Dropped,
        EventKind::Sent,
        EventKind::Scanned,
        EventKind::Retried,
        EventKind::DeadLetter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Accepted => "accepted",
            EventKind::Duplicate => "duplicate",
            EventKind::Ignored => "ignored",
            EventKind::Resolving => "resolving",
            EventKind::Resolved => "resolved",
            EventKind::Dropped => "dropped",
            EventKind::Sent => "sent",
            EventKind::Scanned => "scanned",
            EventKind::Retried => "retried",
            EventKind::DeadLetter => "dead_letter",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// One event of an image's history, as `/admin/history` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub at_ms: Millis,
    pub event: EventKind,
    /// The webhook or poll source the image came through (`admin` when an
    /// operator put it back from the dead letters).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<i64>,
    /// `batch-scan` or `scan-tasks`, on `sent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hss_status: Option<u16>,
    /// HSS's `X-Request-Id`, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hss_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl HistoryEvent {
    pub fn new(at_ms: Millis, event: EventKind, source: impl Into<String>) -> Self {
        Self {
            at_ms,
            event,
            source: source.into(),
            batch_id: None,
            api: None,
            hss_status: None,
            hss_request_id: None,
            reason: None,
            digest: None,
        }
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn with_digest(mut self, digest: Option<&str>) -> Self {
        self.digest = digest.map(str::to_string);
        self
    }

    // The batch events below leave `source` empty: each backend fills in the
    // source of every image the batch carries.

    /// The batch was claimed to be sent to HSS's `api`.
    pub fn sent(at_ms: Millis, batch_id: i64, api: &str) -> Self {
        Self {
            batch_id: Some(batch_id),
            api: Some(api.to_string()),
            ..Self::new(at_ms, EventKind::Sent, "")
        }
    }

    pub fn scanned(at_ms: Millis, batch_id: i64, receipt: &ScanReceipt) -> Self {
        Self {
            batch_id: Some(batch_id),
            hss_status: Some(receipt.hss_status),
            hss_request_id: receipt.hss_request_id.clone(),
            ..Self::new(at_ms, EventKind::Scanned, "")
        }
    }

    pub fn retried(at_ms: Millis, batch_id: i64, cause: &RetryCause) -> Self {
        Self {
            batch_id: Some(batch_id),
            hss_status: cause.hss_status,
            hss_request_id: cause.hss_request_id.clone(),
            ..Self::new(at_ms, EventKind::Retried, "").with_reason(&cause.reason)
        }
    }

    pub fn dead_letter(at_ms: Millis, batch_id: i64, cause: &DeadLetterCause) -> Self {
        let reason = match &cause.error_code {
            Some(code) => format!("{code}: {}", cause.error_msg),
            None => cause.error_msg.clone(),
        };
        Self {
            batch_id: Some(batch_id),
            hss_status: cause.http_status,
            hss_request_id: cause.request_id.clone(),
            ..Self::new(at_ms, EventKind::DeadLetter, "").with_reason(reason)
        }
    }

    /// An operator put the image back from the dead letters: `kind` is
    /// `accepted`, or `duplicate` when it was pending again already.
    pub fn requeued(at_ms: Millis, kind: EventKind) -> Self {
        Self::new(at_ms, kind, ADMIN_SOURCE).with_reason(DEAD_LETTER_RETRY)
    }
}

/// An event and the image it belongs to, as the store writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedEvent {
    /// [`HistorySubject`]'s text: `namespace/name:tag` or `namespace/name@digest`.
    pub image_key: String,
    pub event: HistoryEvent,
}

/// Something a webhook named and the intake chose not to scan, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredImage {
    pub subject: HistorySubject,
    /// `filtered_out`, `push_by_digest`, … (the intake's reason codes).
    pub reason: String,
}

/// One webhook (or poll) as the store takes it: where it came from, its
/// delivery id, the images to queue and the ones deliberately ignored.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    pub source: &'a str,
    pub delivery: Option<&'a DeliveryKey>,
    pub targets: &'a [ScanTarget],
    pub ignored: &'a [IgnoredImage],
}

/// How one target of an arrival ended in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetOutcome {
    Accepted,
    /// Already pending.
    Duplicate,
    /// The whole webhook was a redelivery.
    Redelivery,
}

/// The events an arrival leaves: one per target (`outcomes` in target order)
/// and one per ignored image. Shared by every backend.
pub fn arrival_events(
    arrival: &Arrival<'_>,
    outcomes: &[TargetOutcome],
    now: Millis,
) -> Vec<KeyedEvent> {
    let source = arrival.source;
    let queued = arrival
        .targets
        .iter()
        .zip(outcomes)
        .map(|(target, outcome)| {
            let event = match outcome {
                TargetOutcome::Accepted => HistoryEvent::new(now, EventKind::Accepted, source),
                TargetOutcome::Duplicate => HistoryEvent::new(now, EventKind::Duplicate, source)
                    .with_reason("already_pending"),
                TargetOutcome::Redelivery => {
                    HistoryEvent::new(now, EventKind::Duplicate, source).with_reason("redelivery")
                }
            };
            KeyedEvent {
                image_key: target.image.to_string(),
                event: event.with_digest(target.digest.as_deref()),
            }
        });
    let skipped = arrival.ignored.iter().map(|ignored| KeyedEvent {
        image_key: ignored.subject.to_string(),
        event: HistoryEvent::new(now, EventKind::Ignored, source)
            .with_reason(ignored.reason.clone())
            .with_digest(match &ignored.subject {
                HistorySubject::Digest { digest, .. } => Some(digest),
                HistorySubject::Tagged(_) => None,
            }),
    });

    queued.chain(skipped).collect()
}

/// The events of digest-only pushes stored for resolution: `resolving`, or
/// `duplicate` when the digest already waits or the webhook was redelivered.
pub fn digests_queued_events(
    digests: &[UnresolvedDigest],
    outcomes: &[TargetOutcome],
    now: Millis,
) -> Vec<KeyedEvent> {
    digests
        .iter()
        .zip(outcomes)
        .map(|(digest, outcome)| {
            let event = match outcome {
                TargetOutcome::Accepted => {
                    HistoryEvent::new(now, EventKind::Resolving, &digest.source)
                }
                TargetOutcome::Duplicate => {
                    HistoryEvent::new(now, EventKind::Duplicate, &digest.source)
                        .with_reason("already_resolving")
                }
                TargetOutcome::Redelivery => {
                    HistoryEvent::new(now, EventKind::Duplicate, &digest.source)
                        .with_reason("redelivery")
                }
            };
            KeyedEvent {
                image_key: digest.subject(),
                event: event.with_digest(Some(&digest.digest)),
            }
        })
        .collect()
}

/// A dead-lettered digest an operator put back in the resolution queue.
pub fn digest_requeued_event(digest: &UnresolvedDigest, now: Millis) -> KeyedEvent {
    KeyedEvent {
        image_key: digest.subject(),
        event: HistoryEvent::new(now, EventKind::Resolving, ADMIN_SOURCE)
            .with_reason(DEAD_LETTER_RETRY)
            .with_digest(Some(&digest.digest)),
    }
}

/// The events of a resolution's end. `resolved`: on the digest, naming its
/// tags, and on each tag (`accepted` or `duplicate`, `target_outcomes` in
/// target order) naming the digest; `dropped` and `dead_letter` on the
/// digest. Asking again later leaves no event.
pub fn digest_settled_events(
    claimed: &ClaimedDigest,
    settlement: &DigestSettlement,
    target_outcomes: &[TargetOutcome],
    now: Millis,
) -> Vec<KeyedEvent> {
    let unresolved = &claimed.digest;
    let on_digest = |kind: EventKind, reason: String| KeyedEvent {
        image_key: unresolved.subject(),
        event: HistoryEvent::new(now, kind, &unresolved.source)
            .with_reason(reason)
            .with_digest(Some(&unresolved.digest)),
    };
    match settlement {
        DigestSettlement::Resolved(targets) => {
            let tags: Vec<&str> = targets.iter().map(|t| t.image.tag.as_str()).collect();
            let summary = if tags.is_empty() {
                "no tag the source's filter admits".to_string()
            } else {
                format!("tags: {}", tags.join(", "))
            };
            let per_tag = targets
                .iter()
                .zip(target_outcomes)
                .map(|(target, outcome)| {
                    let kind = match outcome {
                        TargetOutcome::Accepted => EventKind::Accepted,
                        _ => EventKind::Duplicate,
                    };
                    KeyedEvent {
                        image_key: target.image.to_string(),
                        event: HistoryEvent::new(now, kind, &unresolved.source)
                            .with_reason("resolved")
                            .with_digest(Some(&unresolved.digest)),
                    }
                });
            std::iter::once(on_digest(EventKind::Resolved, summary))
                .chain(per_tag)
                .collect()
        }
        DigestSettlement::AskAgain { .. } => Vec::new(),
        DigestSettlement::Drop { reason } => {
            vec![on_digest(EventKind::Dropped, reason.to_string())]
        }
        DigestSettlement::DeadLetter(cause) => {
            let reason = match &cause.error_code {
                Some(code) => format!("SWR {code}: {}", cause.error_msg),
                None => format!("SWR: {}", cause.error_msg),
            };
            vec![on_digest(EventKind::DeadLetter, reason)]
        }
    }
}

/// HSS's 2xx answer to a batch: what `scanned` events record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReceipt {
    pub hss_status: u16,
    pub hss_request_id: Option<String>,
}

/// Why a batch goes back to wait for a retry: what `retried` events record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryCause {
    pub hss_status: Option<u16>,
    pub hss_request_id: Option<String>,
    /// What went wrong, for logs and history; never a secret.
    pub reason: String,
}

/// The source recorded for images an operator re-queued from the dead letters.
pub const ADMIN_SOURCE: &str = "admin";

/// The reason recorded with their `accepted` event.
pub const DEAD_LETTER_RETRY: &str = "dead_letter_retry";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ImageRef;

    fn parse(text: &str) -> Result<HistorySubject, SubjectError> {
        text.parse()
    }

    #[test]
    fn event_kinds_round_trip_through_their_names() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_value(kind).expect("serializes");
            assert_eq!(json, kind.as_str());
        }
        assert_eq!(EventKind::parse("scan"), None);
    }

    #[test]
    fn arrival_events_cover_targets_and_ignored_images() {
        let target = ScanTarget {
            partition: crate::store::conformance::partition("i-1"),
            image: ImageRef::new("team-a", "api", "1"),
            instance_url: None,
            digest: Some("sha256:cd".into()),
        };
        let ignored = IgnoredImage {
            subject: parse("team-a/api@sha256:ab").expect("digest"),
            reason: "push_by_digest".into(),
        };
        let arrival = Arrival {
            source: "swr-ee",
            delivery: None,
            targets: &[target.clone(), target],
            ignored: &[ignored],
        };
        let events = arrival_events(
            &arrival,
            &[TargetOutcome::Accepted, TargetOutcome::Redelivery],
            7,
        );
        let summary: Vec<_> = events
            .iter()
            .map(|keyed| {
                (
                    keyed.image_key.as_str(),
                    keyed.event.event,
                    keyed.event.reason.as_deref(),
                    keyed.event.digest.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("team-a/api:1", EventKind::Accepted, None, Some("sha256:cd")),
                (
                    "team-a/api:1",
                    EventKind::Duplicate,
                    Some("redelivery"),
                    Some("sha256:cd")
                ),
                (
                    "team-a/api@sha256:ab",
                    EventKind::Ignored,
                    Some("push_by_digest"),
                    Some("sha256:ab")
                ),
            ]
        );
        assert!(events.iter().all(|keyed| keyed.event.source == "swr-ee"));
        assert!(events.iter().all(|keyed| keyed.event.at_ms == 7));
    }
}
