//! [`PollStateStore`] on PostgreSQL: the tables of `0003_poll_state.sql`.
//! A lease is taken by one `INSERT … ON CONFLICT DO UPDATE … WHERE`, which
//! locks the row, so two replicas asking at once never both get it.

use std::collections::HashMap;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::errors::from_postgres;
use super::rows::get;
use super::{PostgresStore, bounded};
use crate::store::poll_state::{PollStateStore, RepositoryRead, SeenTag};
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
        bounded("take_poll_lease", async {
            let client = self.client().await?;
            let taken = client
                .execute(
                    "INSERT INTO poll_leases (source, owner, lease_until) VALUES ($1, $2, $4)
                     ON CONFLICT (source) DO UPDATE
                     SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
                     WHERE poll_leases.owner = EXCLUDED.owner OR poll_leases.lease_until <= $3",
                    &[&source, &owner, &now, &until],
                )
                .await
                .map_err(from_postgres)?;
            Ok(taken == 1)
        })
        .await
    }

    async fn release_poll_lease(&self, source: &str, owner: &str) -> Result<(), StoreError> {
        bounded("release_poll_lease", async {
            let client = self.client().await?;
            client
                .execute(
                    "DELETE FROM poll_leases WHERE source = $1 AND owner = $2",
                    &[&source, &owner],
                )
                .await
                .map_err(from_postgres)?;
            Ok(())
        })
        .await
    }

    async fn poll_watermark(
        &self,
        source: &str,
        scope: &str,
    ) -> Result<Option<Millis>, StoreError> {
        bounded("poll_watermark", async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT watermark FROM poll_watermarks WHERE source = $1 AND scope = $2",
                    &[&source, &scope],
                )
                .await
                .map_err(from_postgres)?;
            row.map(|row| get(&row, "watermark")).transpose()
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
        bounded("raise_poll_watermark", async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO poll_watermarks (source, scope, watermark, polled_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (source, scope) DO UPDATE
                     SET watermark = GREATEST(poll_watermarks.watermark, EXCLUDED.watermark),
                         polled_at = EXCLUDED.polled_at",
                    &[&source, &scope, &watermark, &now],
                )
                .await
                .map_err(from_postgres)?;
            Ok(())
        })
        .await
    }

    async fn seen_tags(
        &self,
        source: &str,
        namespace: &str,
        repository: &str,
    ) -> Result<HashMap<String, String>, StoreError> {
        bounded("seen_tags", async {
            let client = self.client().await?;
            client
                .query(
                    "SELECT tag, digest FROM poll_seen_tags
                     WHERE source = $1 AND namespace = $2 AND repository = $3",
                    &[&source, &namespace, &repository],
                )
                .await
                .map_err(from_postgres)?
                .iter()
                .map(|row| Ok((get(row, "tag")?, get(row, "digest")?)))
                .collect()
        })
        .await
    }

    async fn record_seen_tags(
        &self,
        source: &str,
        namespace: &str,
        repository: &str,
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
            for seen in tags {
                tx.execute(
                    &upsert,
                    &[&source, &namespace, &repository, &seen.tag, &seen.digest, &now],
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
        source: &str,
        namespace: &str,
        repository: &str,
    ) -> Result<Option<RepositoryRead>, StoreError> {
        bounded("repository_read", async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT updated_at, read_at FROM poll_read_repositories
                     WHERE source = $1 AND namespace = $2 AND repository = $3",
                    &[&source, &namespace, &repository],
                )
                .await
                .map_err(from_postgres)?;
            row.map(|row| {
                Ok(RepositoryRead {
                    updated_at: get(&row, "updated_at")?,
                    read_at: get(&row, "read_at")?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn record_repository_read(
        &self,
        source: &str,
        namespace: &str,
        repository: &str,
        read: &RepositoryRead,
    ) -> Result<(), StoreError> {
        bounded("record_repository_read", async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO poll_read_repositories
                         (source, namespace, repository, updated_at, read_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (source, namespace, repository) DO UPDATE
                     SET updated_at = EXCLUDED.updated_at, read_at = EXCLUDED.read_at",
                    &[
                        &source,
                        &namespace,
                        &repository,
                        &read.updated_at,
                        &read.read_at,
                    ],
                )
                .await
                .map_err(from_postgres)?;
            Ok(())
        })
        .await
    }
}
