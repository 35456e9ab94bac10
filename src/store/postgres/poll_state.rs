//! [`PollStateStore`] on PostgreSQL: the tables of `0003_poll_state.sql`.
//! A lease is taken by one `INSERT … ON CONFLICT DO UPDATE … WHERE`, which
//! locks the row, so two replicas asking at once never both get it.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio_postgres::types::ToSql;

use super::errors::from_postgres;
use super::rows::get;
use super::{PostgresStore, bounded};
use crate::store::poll_state::{PollStateStore, PolledRepository, RepositoryRead, SeenTag};
use crate::store::{Millis, StoreError};

#[async_trait]
impl PollStateStore for PostgresStore {
    async fn take_poll_lease(
        &self,
        source: &str,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<bool, StoreError> {
        let taken = self
            .execute(
                "take_poll_lease",
                "INSERT INTO poll_leases (source, owner, lease_until) VALUES ($1, $2, $4)
                 ON CONFLICT (source) DO UPDATE
                 SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
                 WHERE poll_leases.owner = EXCLUDED.owner OR poll_leases.lease_until <= $3",
                &[&source, &owner, &now, &until],
            )
            .await?;
        Ok(taken == 1)
    }

    async fn release_poll_lease(&self, source: &str, owner: &str) -> Result<(), StoreError> {
        self.execute(
            "release_poll_lease",
            "DELETE FROM poll_leases WHERE source = $1 AND owner = $2",
            &[&source, &owner],
        )
        .await?;
        Ok(())
    }

    async fn poll_watermark(
        &self,
        source: &str,
        scope: &str,
    ) -> Result<Option<Millis>, StoreError> {
        self.query_row(
            "poll_watermark",
            "SELECT watermark FROM poll_watermarks WHERE source = $1 AND scope = $2",
            &[&source, &scope],
            |row| get(row, "watermark"),
        )
        .await
    }

    async fn raise_poll_watermark(
        &self,
        source: &str,
        scope: &str,
        watermark: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.execute(
            "raise_poll_watermark",
            "INSERT INTO poll_watermarks (source, scope, watermark, polled_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, scope) DO UPDATE
             SET watermark = GREATEST(poll_watermarks.watermark, EXCLUDED.watermark),
                 polled_at = EXCLUDED.polled_at",
            &[&source, &scope, &watermark, &now],
        )
        .await?;
        Ok(())
    }

    async fn seen_tags(
        &self,
        repository: &PolledRepository,
    ) -> Result<HashMap<String, String>, StoreError> {
        let rows = self
            .query_rows(
                "seen_tags",
                "SELECT tag, digest FROM poll_seen_tags
                 WHERE source = $1 AND namespace = $2 AND repository = $3",
                &key_params(repository),
                |row| Ok((get(row, "tag")?, get(row, "digest")?)),
            )
            .await?;
        Ok(rows.into_iter().collect())
    }

    async fn record_seen_tags(
        &self,
        repository: &PolledRepository,
        tags: &[SeenTag],
        now: Millis,
    ) -> Result<(), StoreError> {
        bounded("record_seen_tags", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(from_postgres)?;
            let upsert = tx
                .prepare_cached(
                    "INSERT INTO poll_seen_tags (source, namespace, repository, tag, digest, seen_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (source, namespace, repository, tag) DO UPDATE
                     SET digest = EXCLUDED.digest, seen_at = EXCLUDED.seen_at",
                )
                .await
                .map_err(from_postgres)?;
            let [source, namespace, name] = key_params(repository);
            for seen in tags {
                tx.execute(
                    &upsert,
                    &[source, namespace, name, &seen.tag, &seen.digest, &now],
                )
                .await
                .map_err(from_postgres)?;
            }
            tx.commit().await.map_err(from_postgres)
        })
        .await
    }

    async fn repository_read(
        &self,
        repository: &PolledRepository,
    ) -> Result<Option<RepositoryRead>, StoreError> {
        self.query_row(
            "repository_read",
            "SELECT updated_at, read_at FROM poll_read_repositories
                 WHERE source = $1 AND namespace = $2 AND repository = $3",
            &key_params(repository),
            |row| {
                Ok(RepositoryRead {
                    updated_at: get(row, "updated_at")?,
                    read_at: get(row, "read_at")?,
                })
            },
        )
        .await
    }

    async fn record_repository_read(
        &self,
        repository: &PolledRepository,
        read: &RepositoryRead,
    ) -> Result<(), StoreError> {
        let [source, namespace, name] = key_params(repository);
        self.execute(
            "record_repository_read",
            "INSERT INTO poll_read_repositories
                 (source, namespace, repository, updated_at, read_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (source, namespace, repository) DO UPDATE
             SET updated_at = EXCLUDED.updated_at, read_at = EXCLUDED.read_at",
            &[source, namespace, name, &read.updated_at, &read.read_at],
        )
        .await?;
        Ok(())
    }
}

/// `$1, $2, $3` of every statement about one repository.
fn key_params(repository: &PolledRepository) -> [&(dyn ToSql + Sync); 3] {
    [
        &repository.source,
        &repository.namespace,
        &repository.repository,
    ]
}
