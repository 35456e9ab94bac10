//! Reading and writing the columns that several queries share.

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Params, Row};

use crate::domain::{ImageRef, ImageType, Partition};
use crate::store::BatchImage;
use crate::store::stored_image::StoredImage;

pub(super) fn images_to_json(images: &[BatchImage]) -> rusqlite::Result<String> {
    let stored: Vec<StoredImage> = images.iter().map(StoredImage::from).collect();
    serde_json::to_string(&stored)
        .map_err(|err| rusqlite::Error::ToSqlConversionFailure(err.into()))
}

pub(super) fn images_from_json(row: &Row<'_>, idx: usize) -> rusqlite::Result<Vec<BatchImage>> {
    let text: String = row.get(idx)?;
    let stored: Vec<StoredImage> = serde_json::from_str(&text)
        .map_err(|err| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, err.into()))?;
    Ok(stored.into_iter().map(BatchImage::from).collect())
}

/// Reads a partition stored as `image_type, instance_id, enterprise_project_id`
/// starting at column `first`.
pub(super) fn partition_at(row: &Row<'_>, first: usize) -> rusqlite::Result<Partition> {
    let image_type: String = row.get(first)?;
    let image_type = ImageType::parse(&image_type).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            first,
            Type::Text,
            format!("unknown image_type {image_type:?}").into(),
        )
    })?;
    Ok(Partition {
        image_type,
        instance_id: row.get(first + 1)?,
        enterprise_project_id: row.get(first + 2)?,
    })
}

/// Reads an image named by `namespace, name, tag` starting at column `first`.
pub(super) fn image_ref_at(row: &Row<'_>, first: usize) -> rusqlite::Result<ImageRef> {
    Ok(ImageRef::new(
        row.get::<_, String>(first)?,
        row.get::<_, String>(first + 1)?,
        row.get::<_, String>(first + 2)?,
    ))
}

/// A `COUNT(*)` column: an `i64` that is never negative.
pub(super) fn count_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let count: i64 = row.get(idx)?;
    u64::try_from(count).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, count))
}

pub(super) fn sql_count(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The one row `sql` finds for `params`, read by `read`, or `None` when there
/// is none: the lookups by id or by due time that the queries share.
pub(super) fn optional_row<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    read: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    conn.prepare_cached(sql)?.query_row(params, read).optional()
}

/// Every row `sql` finds for `params`, each read by `read`.
pub(super) fn all_rows<T, B: FromIterator<T>>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<B> {
    conn.prepare_cached(sql)?.query_map(params, read)?.collect()
}
