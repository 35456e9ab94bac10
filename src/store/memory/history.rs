//! The in-memory store's history: the same records and batch events the SQL
//! stores keep in `image_history` and `batch_events`.

use crate::store::Millis;
use crate::store::history::{
    BatchEvent, HistoryEvent, ImageRecord, KeyedRecord, PRUNE_BATCH, assemble, batches_named,
};

#[derive(Debug, Default)]
pub(super) struct HistoryTables {
    next_seq: i64,
    /// Subject key, when written, record; oldest first.
    rows: Vec<(String, Millis, ImageRecord)>,
    batch_events: Vec<BatchEvent>,
}

impl HistoryTables {
    fn next_seq(&mut self) -> i64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// A rare event, written as it happens.
    pub fn record(&mut self, keyed: KeyedRecord, now: Millis) {
        let record = ImageRecord {
            seq: 0,
            at_ms: keyed.at_ms,
            event: keyed.event,
            source: keyed.source,
            batch_id: None,
            reason: keyed.reason,
            digest: keyed.digest,
        };
        self.keep(keyed.image_key, record, now);
    }

    /// A queue row leaving the queue (its `accepted` facts, with its batch).
    pub fn keep(&mut self, key: String, mut record: ImageRecord, now: Millis) {
        record.seq = self.next_seq();
        self.rows.push((key, now, record));
    }

    pub fn batch_event(&mut self, mut fact: BatchEvent) {
        fact.seq = self.next_seq();
        self.batch_events.push(fact);
    }

    /// `key`'s rows joined with `live` (its queue rows, as records).
    pub fn read(&self, key: &str, live: Vec<ImageRecord>, limit: usize) -> Vec<HistoryEvent> {
        let mut records: Vec<ImageRecord> = self
            .rows
            .iter()
            .filter(|(row_key, _, _)| row_key == key)
            .map(|(_, _, record)| record.clone())
            .collect();
        records.extend(live);
        let batches = batches_named(&records);
        let facts: Vec<BatchEvent> = self
            .batch_events
            .iter()
            .filter(|fact| batches.contains(&fact.batch_id))
            .cloned()
            .collect();
        assemble(&records, &facts, limit)
    }

    /// Like the SQL stores: the oldest rows written before `cutoff`, up to
    /// the first younger one, at most [`PRUNE_BATCH`] of each kind.
    pub fn prune(&mut self, cutoff: Millis) -> u64 {
        let bound = usize::try_from(PRUNE_BATCH).unwrap_or(usize::MAX);
        let rows = self
            .rows
            .iter()
            .take(bound)
            .take_while(|(_, written, _)| *written < cutoff)
            .count();
        self.rows.drain(..rows);
        let facts = self
            .batch_events
            .iter()
            .take(bound)
            .take_while(|fact| fact.at_ms < cutoff)
            .count();
        self.batch_events.drain(..facts);
        (rows + facts) as u64
    }
}
