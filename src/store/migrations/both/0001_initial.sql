-- The durable queue: pending images, the batches that carry them to HSS,
-- what HSS refused for good, and the webhook ids already seen. Both stores
-- run this template (its placeholders: src/store/migrations.rs). PostgreSQL,
-- written by several replicas, also checks a few invariants and cascades a
-- batch's deletion to its images; the index names are each dialect's as first
-- deployed. Times are BIGINT milliseconds since the Unix epoch, given by the
-- bridge (never the database clock), so both stores compare the same numbers.
--
-- A partition (the HSS request an image travels in) is stored both as its
-- `partition_key` (grouping, uniqueness, locking) and as its three parts
-- (to rebuild it without parsing the key).

-- A batch claimed for one partition. `next_attempt_at` is when anyone may
-- (re)claim it: the lease end while leased, the retry time once released;
-- `owner`/`lease_until` are set while a worker holds it. A batch id is never
-- reused, so a stale handle held by a worker whose lease ran out can never
-- settle a later batch that got the same id.
CREATE TABLE batches (
    id                    {{id_never_reused}},
    partition_key         TEXT    NOT NULL,
    image_type            TEXT    NOT NULL,
    instance_id           TEXT,
    enterprise_project_id TEXT,
    owner                 TEXT,
    lease_until           BIGINT,
    next_attempt_at       BIGINT  NOT NULL,
    attempts              INTEGER NOT NULL DEFAULT 0{{postgres: CHECK (attempts >= 0)}},
    last_error            TEXT,
    created_at            BIGINT  NOT NULL{{postgres:,
    CHECK ((owner IS NULL) = (lease_until IS NULL))}}
);
{{sqlite:
-- Reclaim and next_due: the batch that may be taken soonest.
CREATE INDEX batches_by_next_attempt ON batches (next_attempt_at, id);
}}
-- An acknowledged image, until HSS accepts it. `batch_id` is NULL while it
-- waits for a batch; completing a batch deletes its images.
CREATE TABLE pending_images (
    id                    {{id_never_reused}},
    partition_key         TEXT    NOT NULL,
    image_type            TEXT    NOT NULL,
    instance_id           TEXT,
    enterprise_project_id TEXT,
    namespace             TEXT    NOT NULL,
    name                  TEXT    NOT NULL,
    tag                   TEXT    NOT NULL,
    instance_url          TEXT,
    enqueued_at           BIGINT  NOT NULL,
    batch_id              BIGINT  REFERENCES batches (id){{postgres: ON DELETE CASCADE}}
);

-- One waiting row per image and partition: a second push is a duplicate. Rows
-- already in a batch are outside the index, so a push during flight is a new
-- row, and the image is scanned once more after the batch in flight.
CREATE UNIQUE INDEX {{sqlite:pending_images_unbatched_unique}}{{postgres:pending_images_unbatched_key}}
    ON pending_images (partition_key, namespace, name, tag)
    WHERE batch_id IS NULL;

-- Claim and next_due: walk the waiting partitions and their oldest images.
CREATE INDEX {{sqlite:pending_images_unbatched_by_age}}{{postgres:pending_images_unbatched_age}}
    ON pending_images (partition_key, enqueued_at, id)
    WHERE batch_id IS NULL;

-- A batch's images, for sending, completing and dead-lettering.
CREATE INDEX {{sqlite:pending_images_by_batch}}{{postgres:pending_images_batch}}
    ON pending_images (batch_id{{sqlite:, enqueued_at, id}})
    WHERE batch_id IS NOT NULL;

-- /admin/pending (oldest first) and the oldest-image gauge.
CREATE INDEX {{sqlite:pending_images_by_age}}{{postgres:pending_images_age}} ON pending_images (enqueued_at, id);

-- A batch HSS refused for good. `images` is a JSON array of
-- {"namespace", "name", "tag", "instance_url"} objects, in batch order.
CREATE TABLE dead_letters (
    id                    {{id_never_reused}},
    partition_key         TEXT    NOT NULL,
    image_type            TEXT    NOT NULL,
    instance_id           TEXT,
    enterprise_project_id TEXT,
    images                {{json}}    NOT NULL,
    http_status           INTEGER,
    error_code            TEXT,
    error_msg             TEXT    NOT NULL,
    request_id            TEXT,
    attempts              INTEGER NOT NULL{{postgres: CHECK (attempts >= 0)}},
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
CREATE INDEX {{sqlite:deliveries_by_seen_at}}{{postgres:deliveries_seen_at}} ON deliveries (seen_at);
