-- Digests: every pending image keeps the manifest digest its push named, and
-- pushes that named only a digest wait here until SWR EE names its tags.
-- Both stores run this template (its placeholders: src/store/migrations.rs).

ALTER TABLE pending_images ADD COLUMN digest TEXT;

-- A digest-only push waiting for resolution. `next_attempt_at` is when anyone
-- may (re)claim it: the lease end while leased, the next ask once released.
-- `claims` counts leases; with `owner` it names one, so a stale resolver's
-- settle changes nothing.
CREATE TABLE pending_digests (
    id                    {{id_never_reused}},
    source                TEXT    NOT NULL,
    partition_key         TEXT    NOT NULL,
    image_type            TEXT    NOT NULL,
    instance_id           TEXT,
    enterprise_project_id TEXT,
    namespace             TEXT    NOT NULL,
    name                  TEXT    NOT NULL,
    digest                TEXT    NOT NULL,
    instance_url          TEXT,
    enqueued_at           BIGINT  NOT NULL,
    next_attempt_at       BIGINT  NOT NULL,
    owner                 TEXT,
    claims                INTEGER NOT NULL DEFAULT 0{{postgres: CHECK (claims >= 0)}},
    untagged_answers      INTEGER NOT NULL DEFAULT 0,
    failures              INTEGER NOT NULL DEFAULT 0,
    last_error            TEXT
);

-- One waiting row per digest and source: a second push is a duplicate.
CREATE UNIQUE INDEX pending_digests_unique
    ON pending_digests (source, partition_key, namespace, name, digest);

-- Claim and next_digest_due: the digest that may be asked soonest.
CREATE INDEX pending_digests_by_next_attempt ON pending_digests (next_attempt_at, id);

-- A dead letter for a digest SWR refused to resolve: the digest as JSON
-- {"source", "partition", "namespace", "name", "digest", "instance_url"};
-- NULL for batches HSS refused.
ALTER TABLE dead_letters ADD COLUMN unresolved {{json}};
