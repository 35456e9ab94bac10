-- Fewer b-tree entries and triggers for every image, the PostgreSQL intake's
-- cost being the server's CPU (BENCHMARKS.md, issue 14):
--
-- pending_images_age, as the SQLite schema dropped its counterpart in
-- migration 0004: every enqueued image and every claimed one (its batch_id
-- update writes a new row version) paid for an entry that only /admin/pending
-- and the oldest-image gauge read. The gauge now walks
-- pending_images_unbatched_age like the claims do (postgres/partition_walk.rs);
-- /admin/pending sorts.
DROP INDEX pending_images_age;

-- The primary key on pending_images.id: nothing looks an image up by id. A
-- claim moves the rows it has just locked by their ctid (stable while they are
-- locked), and `id` stays as the tie-break of the age order.
ALTER TABLE pending_images DROP CONSTRAINT pending_images_pkey;

-- The foreign key to batches: its check ran once for every image a claim moved
-- into a batch, and its cascade is now the explicit delete of a finished
-- batch's images, in the same statement as the batch's (postgres/mod.rs).
ALTER TABLE pending_images DROP CONSTRAINT pending_images_batch_id_fkey;
