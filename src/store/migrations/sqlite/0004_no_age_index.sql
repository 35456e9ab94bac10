-- Every enqueued image updated four b-trees: the table and three indexes.
-- `pending_images_by_age` served only /admin/pending's order and the
-- oldest-image gauge; the gauge now seeks the claim indexes (the oldest
-- waiting image per partition, and the few images in flight), and the
-- listing, bounded by its limit, sorts. One b-tree less per image.
-- The PostgreSQL schema keeps the index (see its 0004_no_age_index.sql).
DROP INDEX pending_images_by_age;
