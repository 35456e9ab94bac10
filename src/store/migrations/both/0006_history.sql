-- Per-image history (see src/store/history/mod.rs). Intake writes nothing
-- extra for an accepted image: its pending row is the open part of its
-- history, and now names the source it came through. When a batch settles,
-- its images are copied here set-based, one row each; the batch's own facts
-- (sent, retried, scanned, dead letter) are kept once per batch in
-- batch_events. Rare events (duplicate, ignored, a digest's resolution) get a
-- row each. History rows are first appended to recent_history (no index
-- but the row id: appending is cheap), then moved to image_history in bulk,
-- sorted by image, so the image index is updated once per page per move
-- instead of once per image at a random place (that index update, per image,
-- was the whole cost of history under load). Both stores run this template
-- (its placeholders: src/store/migrations.rs).

ALTER TABLE pending_images ADD COLUMN source TEXT;

-- `image_key` is `namespace/name:tag`, or `namespace/name@digest` for a
-- digest-only push. An `accepted` row with a `batch_id` stands also for that
-- batch's events. `recorded_at` (when the row was written) drives pruning.
CREATE TABLE image_history (
    id          {{id}},
    image_key   TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    at_ms       BIGINT  NOT NULL,
    source      TEXT,
    batch_id    BIGINT,
    reason      TEXT,
    digest      TEXT,
    recorded_at BIGINT  NOT NULL
);

-- /admin/history: one image's rows.
CREATE INDEX image_history_by_key ON image_history (image_key, id);

-- Rows not yet moved to image_history (a few thousand at most: see
-- src/store/history/mod.rs, MERGE_AT); read by a scan.
CREATE TABLE recent_history (
    id          {{id}},
    image_key   TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    at_ms       BIGINT  NOT NULL,
    source      TEXT,
    batch_id    BIGINT,
    reason      TEXT,
    digest      TEXT,
    recorded_at BIGINT  NOT NULL
);

CREATE TABLE batch_events (
    id             {{id}},
    batch_id       BIGINT  NOT NULL,
    event          TEXT    NOT NULL,
    at_ms          BIGINT  NOT NULL,
    api            TEXT,
    hss_status     INTEGER,
    hss_request_id TEXT,
    reason         TEXT
);

-- Expanding an image's batch into its events.
CREATE INDEX batch_events_by_batch ON batch_events (batch_id, id);
