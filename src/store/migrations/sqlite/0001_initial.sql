-- The durable queue: pending images, the batches that carry them to HSS,
-- what HSS refused for good, and the webhook ids already seen.
-- Plain SQL on purpose: the PostgreSQL schema has the same tables, columns and
-- indexes (INTEGER PRIMARY KEY AUTOINCREMENT there is BIGINT GENERATED ALWAYS
-- AS IDENTITY, TEXT holding JSON is JSONB). All times are Unix milliseconds.

-- A batch claimed for one partition. `next_attempt_at` is when anyone may
-- (re)claim it: the lease end while leased, the retry time once released.
-- AUTOINCREMENT: a batch id is never reused, so a stale handle held by a worker
-- whose lease ran out can never settle a later batch that got the same id.
CREATE TABLE batches (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    partition_key         TEXT    NOT NULL,
    image_type            TEXT    NOT NULL,
    instance_id           TEXT,
    enterprise_project_id TEXT,
    owner                 TEXT,
    lease_until           BIGINT,
    next_attempt_at       BIGINT  NOT NULL,
    attempts              INTEGER NOT NULL DEFAULT 0,
    last_error            TEXT,
    created_at            BIGINT  NOT NULL
);

-- Reclaim and next_due: the batch that may be taken soonest.
CREATE INDEX batches_by_next_attempt ON batches (next_attempt_at, id);

-- An acknowledged image, until HSS accepts it. `batch_id` is NULL while it
-- waits for a batch.
CREATE TABLE pending_images (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    partition_key         TEXT    NOT NULL,
    image_type            TEXT    NOT NULL,
    instance_id           TEXT,
    enterprise_project_id TEXT,
    namespace             TEXT    NOT NULL,
    name                  TEXT    NOT NULL,
    tag                   TEXT    NOT NULL,
    instance_url          TEXT,
    enqueued_at           BIGINT  NOT NULL,
    batch_id              BIGINT  REFERENCES batches (id)
);

-- One waiting row per image and partition: a second push is a duplicate. Rows
-- already in a batch are outside the index, so a push during flight is a new row.
CREATE UNIQUE INDEX pending_images_unbatched_unique
    ON pending_images (partition_key, namespace, name, tag)
    WHERE batch_id IS NULL;

-- Claim and next_due: walk the waiting partitions and their oldest images.
CREATE INDEX pending_images_unbatched_by_age
    ON pending_images (partition_key, enqueued_at, id)
    WHERE batch_id IS NULL;

-- A batch's images, for sending, completing and dead-lettering.
CREATE INDEX pending_images_by_batch
    ON pending_images (batch_id, enqueued_at, id)
    WHERE batch_id IS NOT NULL;

-- /admin/pending (oldest first) and the oldest-image gauge.
CREATE INDEX pending_images_by_age ON pending_images (enqueued_at, id);

-- A batch HSS refused for good. `images` is a JSON array of
-- {"namespace", "name", "tag", "instance_url"} objects, in batch order.
CREATE TABLE dead_letters (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    partition_key         TEXT    NOT NULL,
    image_type            TEXT    NOT NULL,
    instance_id           TEXT,
    enterprise_project_id TEXT,
    images                TEXT    NOT NULL,
    http_status           INTEGER,
    error_code            TEXT,
    error_msg             TEXT    NOT NULL,
    request_id            TEXT,
    attempts              INTEGER NOT NULL,
    failed_at             BIGINT  NOT NULL
);

-- A webhook id already stored, so a redelivery is answered as a duplicate.
CREATE TABLE deliveries (
    source  TEXT   NOT NULL,
    id      TEXT   NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (source, id)
);

-- Pruning old ids.
CREATE INDEX deliveries_by_seen_at ON deliveries (seen_at);
