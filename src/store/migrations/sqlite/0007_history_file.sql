-- The indexed history moves to a file of its own beside this one (see
-- src/store/sqlite/history_file.rs): moving rows into its index then takes
-- that file's write lock, not the queue's, and intake never waits for it.
-- This file keeps the unindexed recent_history, appended in the same
-- transaction as the state change, and batch_events.
--
-- A background mover copies recent rows with an id above a cursor kept in
-- the history file, then deletes them here with a range delete, which can
-- empty the table: with a plain rowid the next id would then start again at
-- 1 and new rows would hide below the cursor. AUTOINCREMENT never reuses an
-- id. The rows 0006 moved into this file's image_history come back into
-- recent_history (oldest first, before the not yet moved ones), so the mover
-- carries them to the history file like any other.

CREATE TABLE recent_history_ids (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    image_key   TEXT    NOT NULL,
    event       TEXT    NOT NULL,
    at_ms       BIGINT  NOT NULL,
    source      TEXT,
    batch_id    BIGINT,
    reason      TEXT,
    digest      TEXT,
    recorded_at BIGINT  NOT NULL
);

INSERT INTO recent_history_ids (image_key, event, at_ms, source, batch_id, reason, digest,
                                recorded_at)
SELECT image_key, event, at_ms, source, batch_id, reason, digest, recorded_at
FROM image_history ORDER BY id;

INSERT INTO recent_history_ids (image_key, event, at_ms, source, batch_id, reason, digest,
                                recorded_at)
SELECT image_key, event, at_ms, source, batch_id, reason, digest, recorded_at
FROM recent_history ORDER BY id;

DROP TABLE image_history;
DROP TABLE recent_history;
ALTER TABLE recent_history_ids RENAME TO recent_history;
