-- What swr-poll sources remember between polls (see src/store/poll_state.rs).
-- Both SQL stores run this file as it stands: its SQL means the same in SQLite
-- and PostgreSQL. Times are Unix milliseconds.

-- Which replica polls a source, until when.
CREATE TABLE poll_leases (
    source      TEXT   PRIMARY KEY,
    owner       TEXT   NOT NULL,
    lease_until BIGINT NOT NULL
);

-- Per source and scope (a namespace, or '*' for every namespace): SWR's newest
-- repository update time in the last complete poll. A row means the first
-- poll (which only records what exists) is done.
CREATE TABLE poll_watermarks (
    source    TEXT   NOT NULL,
    scope     TEXT   NOT NULL,
    watermark BIGINT NOT NULL,
    polled_at BIGINT NOT NULL,
    PRIMARY KEY (source, scope)
);

-- Each tag's digest when it was last seen; a (tag, digest) not here is new.
CREATE TABLE poll_seen_tags (
    source     TEXT   NOT NULL,
    namespace  TEXT   NOT NULL,
    repository TEXT   NOT NULL,
    tag        TEXT   NOT NULL,
    digest     TEXT   NOT NULL,
    seen_at    BIGINT NOT NULL,
    PRIMARY KEY (source, namespace, repository, tag)
);

-- When each repository's tags were last read, and SWR's update time of the
-- repository then: a repository whose update time is unchanged, and whose tags
-- were read well after that update, is not read again.
CREATE TABLE poll_read_repositories (
    source     TEXT   NOT NULL,
    namespace  TEXT   NOT NULL,
    repository TEXT   NOT NULL,
    updated_at TEXT   NOT NULL,
    read_at    BIGINT NOT NULL,
    PRIMARY KEY (source, namespace, repository)
);
