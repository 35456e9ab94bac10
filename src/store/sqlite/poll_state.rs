//! [`PollStateStore`] on SQLite: the tables of `0003_poll_state.sql`. Writes
//! take their turn among this process's writers like every other write.

use std::collections::HashMap;

use async_trait::async_trait;

use super::SqliteStore;
use super::connection::immediate;
use super::rows::{all_rows, optional_row};
use crate::store::poll_state::{PollStateStore, PolledRepository, RepositoryRead, SeenTag};
use crate::store::{Millis, StoreError};

#[async_trait]
impl PollStateStore for SqliteStore {
    async fn take_poll_lease(
        &self,
        source: &str,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<bool, StoreError> {
        let (source, owner) = (source.to_string(), owner.to_string());
        self.write("take_poll_lease", move |conn| {
            let taken = conn
                .prepare_cached(
                    "INSERT INTO poll_leases (source, owner, lease_until) VALUES (?1, ?2, ?4)
                     ON CONFLICT (source) DO UPDATE
                     SET owner = excluded.owner, lease_until = excluded.lease_until
                     WHERE poll_leases.owner = excluded.owner OR poll_leases.lease_until <= ?3",
                )?
                .execute((&source, &owner, now, until))?;
            Ok(taken == 1)
        })
        .await
    }

    async fn release_poll_lease(&self, source: &str, owner: &str) -> Result<(), StoreError> {
        let (source, owner) = (source.to_string(), owner.to_string());
        self.write("release_poll_lease", move |conn| {
            conn.prepare_cached("DELETE FROM poll_leases WHERE source = ?1 AND owner = ?2")?
                .execute((&source, &owner))?;
            Ok(())
        })
        .await
    }

    async fn poll_watermark(
        &self,
        source: &str,
        scope: &str,
    ) -> Result<Option<Millis>, StoreError> {
        let (source, scope) = (source.to_string(), scope.to_string());
        self.run("poll_watermark", move |conn| {
            optional_row(
                conn,
                "SELECT watermark FROM poll_watermarks WHERE source = ?1 AND scope = ?2",
                (&source, &scope),
                |row| row.get(0),
            )
        })
        .await
    }

    async fn raise_poll_watermark(
        &self,
        source: &str,
        scope: &str,
        watermark: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (source, scope) = (source.to_string(), scope.to_string());
        self.write("raise_poll_watermark", move |conn| {
            conn.prepare_cached(
                "INSERT INTO poll_watermarks (source, scope, watermark, polled_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (source, scope) DO UPDATE
                 SET watermark = MAX(poll_watermarks.watermark, excluded.watermark),
                     polled_at = excluded.polled_at",
            )?
            .execute((&source, &scope, watermark, now))?;
            Ok(())
        })
        .await
    }

    async fn seen_tags(
        &self,
        repository: &PolledRepository,
    ) -> Result<HashMap<String, String>, StoreError> {
        let key = repository.clone();
        self.run("seen_tags", move |conn| {
            all_rows(
                conn,
                "SELECT tag, digest FROM poll_seen_tags
                 WHERE source = ?1 AND namespace = ?2 AND repository = ?3",
                (&key.source, &key.namespace, &key.repository),
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
        })
        .await
    }

    async fn record_seen_tags(
        &self,
        repository: &PolledRepository,
        tags: &[SeenTag],
        now: Millis,
    ) -> Result<(), StoreError> {
        let key = repository.clone();
        let tags = tags.to_vec();
        self.write("record_seen_tags", move |conn| {
            let tx = immediate(conn)?;
            {
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO poll_seen_tags (source, namespace, repository, tag, digest, seen_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (source, namespace, repository, tag) DO UPDATE
                     SET digest = excluded.digest, seen_at = excluded.seen_at",
                )?;
                for seen in &tags {
                    upsert.execute((&key.source, &key.namespace, &key.repository, &seen.tag, &seen.digest, now))?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn repository_read(
        &self,
        repository: &PolledRepository,
    ) -> Result<Option<RepositoryRead>, StoreError> {
        let key = repository.clone();
        self.run("repository_read", move |conn| {
            optional_row(
                conn,
                "SELECT updated_at, read_at FROM poll_read_repositories
                 WHERE source = ?1 AND namespace = ?2 AND repository = ?3",
                (&key.source, &key.namespace, &key.repository),
                |row| {
                    Ok(RepositoryRead {
                        updated_at: row.get(0)?,
                        read_at: row.get(1)?,
                    })
                },
            )
        })
        .await
    }

    async fn record_repository_read(
        &self,
        repository: &PolledRepository,
        read: &RepositoryRead,
    ) -> Result<(), StoreError> {
        let key = repository.clone();
        let read = read.clone();
        self.write("record_repository_read", move |conn| {
            conn.prepare_cached(
                "INSERT INTO poll_read_repositories
                     (source, namespace, repository, updated_at, read_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (source, namespace, repository) DO UPDATE
                 SET updated_at = excluded.updated_at, read_at = excluded.read_at",
            )?
            .execute((
                &key.source,
                &key.namespace,
                &key.repository,
                &read.updated_at,
                read.read_at,
            ))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::poll_state::conformance;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn sqlite_store_meets_the_poll_state_contract() {
        let dir = tempfile::tempdir().expect("temp dir");
        let counter = std::sync::atomic::AtomicUsize::new(0);
        conformance::run_all(|| async {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let store = SqliteStore::open(&dir.path().join(format!("poll-{n}.db")), 2)
                .await
                .expect("open");
            store.migrate().await.expect("migrate");
            store
        })
        .await;
    }
}
