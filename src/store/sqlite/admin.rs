//! Operator actions on the queue (`/admin/*`).

use rusqlite::{Connection, OptionalExtension};

use super::connection::immediate;
use super::enqueue::insert_unbatched;
use super::rows::{images_from_json, partition_at};
use crate::store::{EnqueueCounts, Millis};

pub(super) fn retry_dead_letter(
    conn: &mut Connection,
    letter_id: i64,
    now: Millis,
) -> rusqlite::Result<Option<EnqueueCounts>> {
    let tx = immediate(conn)?;
    let letter = tx
        .prepare_cached(
            "SELECT image_type, instance_id, enterprise_project_id, images
             FROM dead_letters WHERE id = ?1",
        )?
        .query_row([letter_id], |row| {
            Ok((partition_at(row, 0)?, images_from_json(row, 3)?))
        })
        .optional()?;
    let Some((partition, images)) = letter else {
        return Ok(None);
    };
    let mut counts = EnqueueCounts::default();
    for image in &images {
        if insert_unbatched(
            &tx,
            &partition,
            &image.image,
            image.instance_url.as_deref(),
            now,
        )? {
            counts.accepted += 1;
        } else {
            counts.duplicates += 1;
        }
    }
    tx.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
        .execute([letter_id])?;
    tx.commit()?;
    Ok(Some(counts))
}
