//! The store `[store]` configures: the one place that turns settings into a
//! backend, kept apart from the [`Store`] trait so that the settings layer,
//! which parses PostgreSQL URLs with the backend's own parser, stays below it.

use std::sync::Arc;

use super::{Store, StoreError, postgres, sqlite};
use crate::config::{StoreLocation, StoreSettings};

/// Opens the backend `store.url` names, and migrates it.
pub async fn open(settings: &StoreSettings) -> Result<Arc<dyn Store>, StoreError> {
    let pool_size = settings.pool_size.get();
    let record_history = settings.history_retention.is_some();
    let store: Arc<dyn Store> = match &settings.location {
        StoreLocation::Sqlite(path) => Arc::new(
            sqlite::SqliteStore::open(path, pool_size)
                .await?
                .recording_history(record_history),
        ),
        StoreLocation::Postgres(config) => Arc::new(
            postgres::PostgresStore::connect_with(config, pool_size, None)
                .await?
                .recording_history(record_history),
        ),
    };
    store.migrate().await?;
    Ok(store)
}
