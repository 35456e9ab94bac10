-- The SQLite schema drops its pending_images_by_age in this step (one b-tree
-- update less per enqueued image there). PostgreSQL keeps its counterpart,
-- pending_images_age: its oldest-image
-- gauge and /admin/pending read it, and its intake writes a whole group in one
-- statement. The step exists here only to keep both dialects on the same
-- versions; it records why the index stays.
COMMENT ON INDEX pending_images_age IS
    'Kept in PostgreSQL; the SQLite schema dropped it in migration 0004 (no_age_index).';
