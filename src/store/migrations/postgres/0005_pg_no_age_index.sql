-- Drops pending_images_age, as the SQLite schema did in migration 0004: every
-- enqueued image and every claimed one (its batch_id update writes a new row
-- version) paid for a b-tree entry that only /admin/pending and the
-- oldest-image gauge read. The gauge now walks pending_images_unbatched_age
-- like the claims do (postgres/partition_walk.rs); /admin/pending sorts.
DROP INDEX pending_images_age;
