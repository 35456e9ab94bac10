//! [`PollStateStore`] in memory: the reference semantics in plain Rust.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::MemoryStore;
use crate::store::poll_state::{PollStateStore, PolledRepository, RepositoryRead, SeenTag};
use crate::store::{Millis, StoreError};

#[derive(Debug, Default)]
pub(super) struct PollTables(Mutex<Tables>);

#[derive(Debug, Default)]
struct Tables {
    /// source → (owner, lease_until)
    leases: HashMap<String, (String, Millis)>,
    /// (source, scope) → watermark
    watermarks: HashMap<(String, String), Millis>,
    /// repository → tag → digest
    seen: HashMap<PolledRepository, HashMap<String, String>>,
    /// repository → last read
    read: HashMap<PolledRepository, RepositoryRead>,
}

#[async_trait]
impl PollStateStore for MemoryStore {
    async fn take_poll_lease(
        &self,
        source: &str,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<bool, StoreError> {
        let mut tables = self.poll.0.lock().await;
        let free = match tables.leases.get(source) {
            None => true,
            Some((holder, lease_until)) => holder == owner || *lease_until <= now,
        };
        if free {
            tables
                .leases
                .insert(source.to_string(), (owner.to_string(), until));
        }
        Ok(free)
    }

    async fn release_poll_lease(&self, source: &str, owner: &str) -> Result<(), StoreError> {
        let mut tables = self.poll.0.lock().await;
        if tables
            .leases
            .get(source)
            .is_some_and(|(holder, _)| holder == owner)
        {
            tables.leases.remove(source);
        }
        Ok(())
    }

    async fn poll_watermark(
        &self,
        source: &str,
        scope: &str,
    ) -> Result<Option<Millis>, StoreError> {
        let tables = self.poll.0.lock().await;
        Ok(tables
            .watermarks
            .get(&(source.to_string(), scope.to_string()))
            .copied())
    }

    async fn raise_poll_watermark(
        &self,
        source: &str,
        scope: &str,
        watermark: Millis,
        _now: Millis,
    ) -> Result<(), StoreError> {
        let mut tables = self.poll.0.lock().await;
        let current = tables
            .watermarks
            .entry((source.to_string(), scope.to_string()))
            .or_insert(watermark);
        *current = (*current).max(watermark);
        Ok(())
    }

    async fn seen_tags(
        &self,
        repository: &PolledRepository,
    ) -> Result<HashMap<String, String>, StoreError> {
        let tables = self.poll.0.lock().await;
        Ok(tables.seen.get(repository).cloned().unwrap_or_default())
    }

    async fn record_seen_tags(
        &self,
        repository: &PolledRepository,
        tags: &[SeenTag],
        _now: Millis,
    ) -> Result<(), StoreError> {
        let mut tables = self.poll.0.lock().await;
        let seen = tables.seen.entry(repository.clone()).or_default();
        for tag in tags {
            seen.insert(tag.tag.clone(), tag.digest.clone());
        }
        Ok(())
    }

    async fn repository_read(
        &self,
        repository: &PolledRepository,
    ) -> Result<Option<RepositoryRead>, StoreError> {
        let tables = self.poll.0.lock().await;
        Ok(tables.read.get(repository).cloned())
    }

    async fn record_repository_read(
        &self,
        repository: &PolledRepository,
        read: &RepositoryRead,
    ) -> Result<(), StoreError> {
        let mut tables = self.poll.0.lock().await;
        tables.read.insert(repository.clone(), read.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_meets_the_poll_state_contract() {
        crate::store::poll_state::conformance::run_all(|| async { MemoryStore::new() }).await;
    }
}
