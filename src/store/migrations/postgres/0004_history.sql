-- Each image's history for /admin/history: one small row per event, written
-- in the transaction of the change it reports, pruned after
-- store.history_retention_s. `image_key` is `namespace/name:tag`, or
-- `namespace/name@digest` for a push that named only a digest.
CREATE TABLE image_history (
    id             BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    image_key      TEXT    NOT NULL,
    at_ms          BIGINT  NOT NULL,
    event          TEXT    NOT NULL,
    source         TEXT    NOT NULL,
    batch_id       BIGINT,
    api            TEXT,
    hss_status     INTEGER,
    hss_request_id TEXT,
    reason         TEXT,
    digest         TEXT
);

-- One image's events in order (the answer reads its newest, bounded).
CREATE INDEX image_history_by_image ON image_history (image_key, at_ms, id);

-- Pruning by age.
CREATE INDEX image_history_by_age ON image_history (at_ms);

-- The source each pending image came through, so that the events of its
-- batch (sent, scanned, retried, dead_letter) can name it. Rows queued before
-- this migration name none.
ALTER TABLE pending_images ADD COLUMN source TEXT NOT NULL DEFAULT '';
