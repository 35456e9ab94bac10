//! Reading the store's rows back into domain values, with a precise error
//! when a row holds something the bridge never writes.

use tokio_postgres::Row;

use super::errors::from_postgres;
use crate::domain::{ImageRef, ImageType, Partition};
use crate::store::{BatchImage, StoreError};

pub(super) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    column: &str,
) -> Result<T, StoreError> {
    row.try_get(column).map_err(from_postgres)
}

/// Rebuilds a partition from the `image_type`, `instance_id` and
/// `enterprise_project_id` columns that every table carries.
pub(super) fn partition_of(row: &Row) -> Result<Partition, StoreError> {
    let image_type: String = get(row, "image_type")?;
    let image_type = ImageType::parse(&image_type).ok_or_else(|| {
        StoreError::Query(format!("unknown image_type {image_type:?} in the store"))
    })?;
    Ok(Partition {
        image_type,
        instance_id: get(row, "instance_id")?,
        enterprise_project_id: get(row, "enterprise_project_id")?,
    })
}

/// Reads the `namespace`, `name`, `tag`, `instance_url`, `digest` columns.
pub(super) fn batch_image_of(row: &Row) -> Result<BatchImage, StoreError> {
    Ok(BatchImage {
        image: ImageRef::new(
            get::<String>(row, "namespace")?,
            get::<String>(row, "name")?,
            get::<String>(row, "tag")?,
        ),
        instance_url: get(row, "instance_url")?,
        digest: get(row, "digest")?,
    })
}

pub(super) fn attempts_of(row: &Row) -> Result<u32, StoreError> {
    let attempts: i32 = get(row, "attempts")?;
    u32::try_from(attempts)
        .map_err(|_| StoreError::Query(format!("negative attempts {attempts} in the store")))
}

pub(super) fn count_of(row: &Row, column: &str) -> Result<u64, StoreError> {
    let count: i64 = get(row, column)?;
    u64::try_from(count).map_err(|_| StoreError::Query(format!("negative {column} {count}")))
}

/// A `usize` limit as the BIGINT PostgreSQL wants.
pub(super) fn as_bigint(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
