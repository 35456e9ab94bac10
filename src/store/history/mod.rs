//! An image's history: what the bridge did with it and when, kept for
//! `store.history_retention_s` so that "was my image scanned, when, in which
//! HSS request?" has an answer.
//!
//! # Why history is mostly written when a state ends
//!
//! Intake is the hot path, so it writes nothing for an accepted image: the
//! pending row (or waiting digest) already is the open part of its history.
//! When a batch settles (scanned, dead letter), the same transaction copies
//! its images' accepted facts into ONE history row each, set-based, before
//! deleting them. Facts of the batch itself (sent, retried, scanned with HSS's
//! request id, dead letter) are stored once per batch as [`BatchEvent`]s and
//! expanded per image when a history is read. Rare events (duplicate, ignored,
//! a digest's resolution) are written directly in the transaction that
//! handles them. A read therefore joins three sources: history rows, live
//! queue rows, and batch events ([`assemble`]), shared by every backend.
//!
//! # Why history rows are moved in bulk
//!
//! The SQLite store appends history rows to an unindexed `recent_history`
//! table in the queue file, and a thread of its own moves them, once
//! [`MERGE_AT`] have gathered and sorted by image, to the indexed
//! `image_history` in a file of its own (`sqlite::history_file`). Indexing
//! each image as its batch settled touched one index page per image at a
//! random place: measured on SQLite, that alone took intake from 0.93× to
//! 0.61× of its throughput without history (BENCHMARKS.md); and a move in the
//! queue file held its only write lock while every webhook waited.
//! PostgreSQL writes the indexed table directly: there a random index insert
//! changes a page in shared buffers, and staging rows cost more than it
//! saved (see [`crate::store::postgres`]'s `history` module).

use serde::{Deserialize, Serialize};

use super::{DeadLetterCause, DeliveryKey, Millis};
use crate::domain::ScanTarget;

mod subject;

pub use subject::{HistorySubject, SubjectError};

/// `GET /admin/history` answers at most this many events: an image's newest.
pub const HISTORY_LIMIT: usize = 1_000;

/// Recent rows the SQLite store gathers before it moves them, sorted, to
/// its history file. Larger moves write each index page for more rows (they
/// no longer stall intake: only the history file is locked), but a history
/// read scans up to this many recent rows. Measured in BENCHMARKS.md,
/// "History recording (issue 16)".
pub const MERGE_AT: i64 = 8_192;

/// History rows deleted per pruning statement: keeps one delete short
/// against the writers it shares the store with.
pub const PRUNE_BATCH: i64 = 5_000;

/// What happened to an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Stored as pending by a webhook (or a poll, or a digest's resolution).
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
    /// Claimed in a batch to be sent to HSS.
    Sent,
    /// HSS failed in a way worth retrying; the batch will be sent again.
    Retried,
    /// HSS answered 2xx (`hss_status`, `hss_request_id`).
    Scanned,
    /// HSS (or SWR, for a digest) refused for good: see `/admin/dead-letters`.
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
        EventKind::Retried,
        EventKind::Scanned,
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
            EventKind::Retried => "retried",
            EventKind::Scanned => "scanned",
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
    /// `batch-scan` or `scan-tasks`, on `scanned`.
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

/// One per-image record as a store keeps it: a history row, or a live queue
/// row read as its `accepted` / `resolving` event. An `accepted` record with
/// a `batch_id` also stands for every [`BatchEvent`] of that batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// Orders records of equal time and kind (row id, or insertion order).
    pub seq: i64,
    pub at_ms: Millis,
    pub event: EventKind,
    pub source: String,
    pub batch_id: Option<i64>,
    pub reason: Option<String>,
    pub digest: Option<String>,
}

/// A fact of one batch, stored once for all its images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEvent {
    pub seq: i64,
    pub batch_id: i64,
    pub at_ms: Millis,
    pub event: EventKind,
    pub api: Option<String>,
    pub hss_status: Option<u16>,
    pub hss_request_id: Option<String>,
    pub reason: Option<String>,
}

impl BatchEvent {
    /// The batch was claimed to be sent (again).
    pub fn sent(batch_id: i64, at_ms: Millis) -> Self {
        Self::of(batch_id, at_ms, EventKind::Sent)
    }

    pub fn scanned(batch_id: i64, at_ms: Millis, receipt: &ScanReceipt) -> Self {
        Self {
            api: Some(receipt.api.to_string()),
            hss_status: Some(receipt.hss_status),
            hss_request_id: receipt.hss_request_id.clone(),
            ..Self::of(batch_id, at_ms, EventKind::Scanned)
        }
    }

    pub fn retried(batch_id: i64, at_ms: Millis, cause: &RetryCause) -> Self {
        Self {
            hss_status: cause.hss_status,
            hss_request_id: cause.hss_request_id.clone(),
            reason: Some(cause.reason.clone()),
            ..Self::of(batch_id, at_ms, EventKind::Retried)
        }
    }

    pub fn dead_letter(batch_id: i64, at_ms: Millis, cause: &DeadLetterCause) -> Self {
        let reason = match &cause.error_code {
            Some(code) => format!("{code}: {}", cause.error_msg),
            None => cause.error_msg.clone(),
        };
        Self {
            hss_status: cause.http_status,
            hss_request_id: cause.request_id.clone(),
            reason: Some(reason),
            ..Self::of(batch_id, at_ms, EventKind::DeadLetter)
        }
    }

    fn of(batch_id: i64, at_ms: Millis, event: EventKind) -> Self {
        Self {
            seq: 0,
            batch_id,
            at_ms,
            event,
            api: None,
            hss_status: None,
            hss_request_id: None,
            reason: None,
        }
    }
}

/// A subject's events from its records and the events of the batches they
/// name: oldest first (ties: in the order events of one image happen), at
/// most the newest `limit`.
pub fn assemble(
    records: &[ImageRecord],
    batch_events: &[BatchEvent],
    limit: usize,
) -> Vec<HistoryEvent> {
    let mut events: Vec<(Millis, EventKind, i64, HistoryEvent)> = Vec::new();
    for record in records {
        events.push((
            record.at_ms,
            record.event,
            record.seq,
            HistoryEvent {
                at_ms: record.at_ms,
                event: record.event,
                source: record.source.clone(),
                batch_id: None,
                api: None,
                hss_status: None,
                hss_request_id: None,
                reason: record.reason.clone(),
                digest: record.digest.clone(),
            },
        ));
        let Some(batch_id) = record
            .batch_id
            .filter(|_| record.event == EventKind::Accepted)
        else {
            continue;
        };
        for fact in batch_events.iter().filter(|fact| fact.batch_id == batch_id) {
            events.push((
                fact.at_ms,
                fact.event,
                fact.seq,
                HistoryEvent {
                    at_ms: fact.at_ms,
                    event: fact.event,
                    source: record.source.clone(),
                    batch_id: Some(batch_id),
                    api: fact.api.clone(),
                    hss_status: fact.hss_status,
                    hss_request_id: fact.hss_request_id.clone(),
                    reason: fact.reason.clone(),
                    digest: record.digest.clone(),
                },
            ));
        }
    }
    events.sort_by_key(|a| (a.0, a.1, a.2));
    let skip = events.len().saturating_sub(limit);
    events
        .into_iter()
        .skip(skip)
        .map(|(_, _, _, event)| event)
        .collect()
}

/// The batch ids `records` expand, each once.
pub fn batches_named(records: &[ImageRecord]) -> Vec<i64> {
    let mut ids: Vec<i64> = records
        .iter()
        .filter(|record| record.event == EventKind::Accepted)
        .filter_map(|record| record.batch_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
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

/// A history row written directly (the rare events): its subject key and
/// record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRecord {
    /// [`HistorySubject`]'s text: `namespace/name:tag` or `namespace/name@digest`.
    pub image_key: String,
    pub at_ms: Millis,
    pub event: EventKind,
    pub source: String,
    pub reason: Option<String>,
    pub digest: Option<String>,
}

impl KeyedRecord {
    /// A target already pending (`already_pending`) or named again by a
    /// redelivered webhook (`redelivery`).
    pub fn duplicate(target: &ScanTarget, source: &str, reason: &str, now: Millis) -> Self {
        Self {
            image_key: target.image.to_string(),
            at_ms: now,
            event: EventKind::Duplicate,
            source: source.to_string(),
            reason: Some(reason.to_string()),
            digest: target.digest.clone(),
        }
    }

    pub fn ignored(ignored: &IgnoredImage, source: &str, now: Millis) -> Self {
        Self {
            image_key: ignored.subject.to_string(),
            at_ms: now,
            event: EventKind::Ignored,
            source: source.to_string(),
            reason: Some(ignored.reason.clone()),
            digest: ignored.subject.digest().map(str::to_string),
        }
    }

    /// An event of a digest-only push, on the digest's subject.
    pub fn on_digest(
        digest: &super::UnresolvedDigest,
        event: EventKind,
        at_ms: Millis,
        reason: Option<String>,
    ) -> Self {
        Self {
            image_key: digest.subject(),
            at_ms,
            event,
            source: digest.source.clone(),
            reason,
            digest: Some(digest.digest.clone()),
        }
    }
}

/// Reason of a duplicate found pending.
pub const ALREADY_PENDING: &str = "already_pending";
/// Reason of a duplicate from a redelivered webhook.
pub const REDELIVERY: &str = "redelivery";

/// The rows an arrival writes besides its queue rows: one per ignored image,
/// and one per target when the whole webhook was a redelivery.
pub fn arrival_records(arrival: &Arrival<'_>, redelivery: bool, now: Millis) -> Vec<KeyedRecord> {
    let redelivered = arrival
        .targets
        .iter()
        .filter(|_| redelivery)
        .map(|target| KeyedRecord::duplicate(target, arrival.source, REDELIVERY, now));
    let ignored = arrival
        .ignored
        .iter()
        .map(|ignored| KeyedRecord::ignored(ignored, arrival.source, now));
    redelivered.chain(ignored).collect()
}

/// The rows that end a digest's resolution: its `resolving` facts (the
/// waiting row goes away) and how it ended, both on the digest's subject.
/// `None` for an ending that keeps the digest waiting.
pub fn digest_ending_records(
    claimed: &super::ClaimedDigest,
    settlement: &super::DigestSettlement,
    now: Millis,
) -> Option<[KeyedRecord; 2]> {
    use super::DigestSettlement;
    let digest = &claimed.digest;
    let (event, reason) = match settlement {
        DigestSettlement::Resolved(targets) => {
            let tags: Vec<&str> = targets.iter().map(|t| t.image.tag.as_str()).collect();
            let summary = if tags.is_empty() {
                "no tag the source's filter admits".to_string()
            } else {
                format!("tags: {}", tags.join(", "))
            };
            (EventKind::Resolved, summary)
        }
        DigestSettlement::AskAgain(_) => return None,
        DigestSettlement::Drop { reason } => (EventKind::Dropped, reason.to_string()),
        DigestSettlement::DeadLetter(cause) => {
            let reason = match &cause.error_code {
                Some(code) => format!("SWR {code}: {}", cause.error_msg),
                None => format!("SWR: {}", cause.error_msg),
            };
            (EventKind::DeadLetter, reason)
        }
    };
    Some([
        KeyedRecord::on_digest(digest, EventKind::Resolving, claimed.enqueued_at, None),
        KeyedRecord::on_digest(digest, event, now, Some(reason)),
    ])
}

/// HSS's 2xx answer to a batch: what `scanned` events record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReceipt {
    /// `batch-scan` or `scan-tasks`.
    pub api: &'static str,
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

impl RetryCause {
    /// A cause with only a reason (tests, and failures before any answer).
    pub fn reason(reason: impl Into<String>) -> Self {
        Self {
            hss_status: None,
            hss_request_id: None,
            reason: reason.into(),
        }
    }
}

/// The source recorded for images an operator re-queued from the dead letters.
pub const ADMIN_SOURCE: &str = "admin";

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: i64, at_ms: Millis, event: EventKind, batch_id: Option<i64>) -> ImageRecord {
        ImageRecord {
            seq,
            at_ms,
            event,
            source: "swr-ee".into(),
            batch_id,
            reason: None,
            digest: Some("sha256:ab".into()),
        }
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
    fn an_accepted_record_expands_into_its_batch_events_in_time_order() {
        let receipt = ScanReceipt {
            api: "batch-scan",
            hss_status: 200,
            hss_request_id: Some("req-1".into()),
        };
        let facts = [
            BatchEvent::sent(7, 10),
            BatchEvent::retried(7, 10, &RetryCause::reason("HTTP 503")),
            BatchEvent::sent(7, 20),
            BatchEvent::scanned(7, 20, &receipt),
            BatchEvent::sent(8, 5),
        ];
        let records = [
            record(2, 30, EventKind::Duplicate, None),
            record(1, 10, EventKind::Accepted, Some(7)),
        ];
        assert_eq!(batches_named(&records), vec![7]);
        let events = assemble(&records, &facts, 100);
        let kinds: Vec<_> = events.iter().map(|e| (e.at_ms, e.event)).collect();
        assert_eq!(
            kinds,
            vec![
                (10, EventKind::Accepted),
                (10, EventKind::Sent),
                (10, EventKind::Retried),
                (20, EventKind::Sent),
                (20, EventKind::Scanned),
                (30, EventKind::Duplicate),
            ]
        );
        let scanned = &events[4];
        assert_eq!(scanned.batch_id, Some(7));
        assert_eq!(scanned.hss_request_id.as_deref(), Some("req-1"));
        assert_eq!(scanned.source, "swr-ee");
        assert_eq!(scanned.digest.as_deref(), Some("sha256:ab"));
        assert_eq!(assemble(&records, &facts, 2).len(), 2, "newest kept");
        assert_eq!(assemble(&records, &facts, 2)[1].event, EventKind::Duplicate);
    }
}
