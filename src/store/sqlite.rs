//! PLACEHOLDER until the sqlite branch lands (replaced on merge).
use std::path::Path;

use super::{MemoryStore, StoreError};

pub struct SqliteStore;

impl SqliteStore {
    pub async fn open(_path: &Path, _pool_size: usize) -> Result<MemoryStore, StoreError> {
        Ok(MemoryStore::new())
    }
}
