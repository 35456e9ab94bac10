//! PLACEHOLDER until the postgres branch lands (replaced on merge).
use super::{MemoryStore, StoreError};

pub struct PostgresStore;

impl PostgresStore {
    pub async fn connect(
        _url: &str,
        _pool_size: usize,
        _schema: Option<&str>,
    ) -> Result<MemoryStore, StoreError> {
        Err(StoreError::Unavailable(
            "postgres backend not merged yet".into(),
        ))
    }
}
