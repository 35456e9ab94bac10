-- The durable queue, shared by every replica. Times are BIGINT milliseconds
-- since the Unix epoch, given by the bridge (never the database clock), so
-- the PostgreSQL and SQLite stores compare the same numbers.
--
-- A partition (the HSS request an image travels in) is stored both as its
-- `partition_key` (grouping, uniqueness, locking) and as its three parts
-- (to rebuild it without parsing the key).

-- A batch is a set of images claimed together for one HSS request.
-- `owner`/`lease_until` are set while a worker holds it; both are cleared
-- when it waits for a retry at `next_attempt_at`.
CREATE TABLE batches (
    id                    BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partition_key         TEXT    NOT NULL,
    image_type            TEXT    NOT NULL,
    instance_id           TEXT,
    enterprise_project_id TEXT,
    owner                 TEXT,
    lease_until           BIGINT,
    next_attempt_at       BIGINT  NOT NULL,
    attempts              INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error            TEXT,
    created_at            BIGINT  NOT NULL,
    CHECK ((owner IS NULL) = (lease_until IS NULL))
);

-- Every acknowledged image until HSS accepted it. `batch_id` is NULL while
-- the image waits for a batch; completing a batch deletes its images.
CREATE TABLE pending_images (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partition_key         TEXT   NOT NULL,
    image_type            TEXT   NOT NULL,
    instance_id           TEXT,
    enterprise_project_id TEXT,
    namespace             TEXT   NOT NULL,
    name                  TEXT   NOT NULL,
    tag                   TEXT   NOT NULL,
    instance_url          TEXT,
    enqueued_at           BIGINT NOT NULL,
    batch_id              BIGINT REFERENCES batches (id) ON DELETE CASCADE
);

-- Unique among images not yet in a batch only: a push during flight is a
-- new row, so the image is scanned once more after the batch in flight.
CREATE UNIQUE INDEX pending_images_unbatched_key
    ON pending_images (partition_key, namespace, name, tag)
    WHERE batch_id IS NULL;

-- Due partitions and their oldest images.
CREATE INDEX pending_images_unbatched_age
    ON pending_images (partition_key, enqueued_at, id)
    WHERE batch_id IS NULL;

CREATE INDEX pending_images_batch
    ON pending_images (batch_id)
    WHERE batch_id IS NOT NULL;

-- `/admin/pending` and the oldest pending image.
CREATE INDEX pending_images_age
    ON pending_images (enqueued_at, id);

-- Batches HSS refused for good, with their images and why.
-- `images` is a JSON array of {"namespace","name","tag","instance_url"}.
CREATE TABLE dead_letters (
    id                    BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partition_key         TEXT    NOT NULL,
    image_type            TEXT    NOT NULL,
    instance_id           TEXT,
    enterprise_project_id TEXT,
    images                JSONB   NOT NULL,
    http_status           INTEGER,
    error_code            TEXT,
    error_msg             TEXT    NOT NULL,
    request_id            TEXT,
    attempts              INTEGER NOT NULL CHECK (attempts >= 0),
    failed_at             BIGINT  NOT NULL
);

-- Delivery ids seen recently, so that redeliveries are answered as duplicates.
CREATE TABLE deliveries (
    source  TEXT   NOT NULL,
    id      TEXT   NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (source, id)
);

CREATE INDEX deliveries_seen_at ON deliveries (seen_at);
