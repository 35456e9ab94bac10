//! What poll sources (`format = "swr-poll"`) remember between polls, in the
//! same database as the queue, so that a restart or another replica carries on
//! where the last poll stopped:
//!
//! - a **lease** per source: which replica polls it, until when. Exactly one
//!   replica holds it at a time; it renews it at every poll, and once it runs
//!   out (its holder died) any replica takes it.
//! - a **watermark** per source and scope (a namespace, or every namespace):
//!   the newest repository update time SWR reported in the last complete
//!   poll. Its presence also says that the first poll (the baseline) is done.
//! - the **seen tags** per source and repository: each tag's last digest, so
//!   that only a `(tag, digest)` not seen before becomes an image to scan.
//! - the **read repositories**: when each repository's tags were last read,
//!   and SWR's update time of it then, so that an unchanged repository is
//!   not read again.
//!
//! Times are milliseconds since the Unix epoch: lease times on the bridge's
//! clock, watermarks on SWR's.

use std::collections::HashMap;

use async_trait::async_trait;

use super::{Millis, StoreError};

pub mod conformance;

/// Scope key of a poll over every namespace the credentials can list.
pub const EVERY_NAMESPACE: &str = "*";

/// A tag as last seen in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenTag {
    pub tag: String,
    /// Empty when SWR reported none.
    pub digest: String,
}

/// A repository as one poll source sees it: what seen tags and reads are
/// kept per.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolledRepository {
    pub source: String,
    pub namespace: String,
    pub repository: String,
}

impl PolledRepository {
    pub fn new(source: &str, namespace: &str, repository: &str) -> Self {
        Self {
            source: source.to_string(),
            namespace: namespace.to_string(),
            repository: repository.to_string(),
        }
    }
}

/// When a repository's tags were last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryRead {
    /// SWR's `updated_at` of the repository then, as SWR wrote it.
    pub updated_at: String,
    /// The bridge's clock when the tags were read.
    pub read_at: Millis,
}

#[async_trait]
pub trait PollStateStore: Send + Sync {
    /// Takes the poll lease of `source` for `owner` until `until` when it is
    /// free, expired at `now`, or already `owner`'s (then it is renewed).
    /// True when `owner` holds it afterwards.
    async fn take_poll_lease(
        &self,
        source: &str,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<bool, StoreError>;

    /// Gives up `owner`'s lease (at shutdown), so another replica takes over
    /// at its next poll instead of after the lease runs out.
    async fn release_poll_lease(&self, source: &str, owner: &str) -> Result<(), StoreError>;

    /// The watermark of `scope`, `None` before the scope's first complete poll.
    async fn poll_watermark(&self, source: &str, scope: &str)
    -> Result<Option<Millis>, StoreError>;

    /// Records a complete poll of `scope`: the watermark becomes `watermark`
    /// unless it is already higher (it never goes back).
    async fn raise_poll_watermark(
        &self,
        source: &str,
        scope: &str,
        watermark: Millis,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// The tags seen in a repository, tag → digest.
    async fn seen_tags(
        &self,
        repository: &PolledRepository,
    ) -> Result<HashMap<String, String>, StoreError>;

    /// Remembers these tags of a repository with their digests (replacing
    /// what was seen of them before), in one transaction.
    async fn record_seen_tags(
        &self,
        repository: &PolledRepository,
        tags: &[SeenTag],
        now: Millis,
    ) -> Result<(), StoreError>;

    /// When this repository's tags were last read, if ever.
    async fn repository_read(
        &self,
        repository: &PolledRepository,
    ) -> Result<Option<RepositoryRead>, StoreError>;

    /// Remembers that this repository's tags were read (replacing the last read).
    async fn record_repository_read(
        &self,
        repository: &PolledRepository,
        read: &RepositoryRead,
    ) -> Result<(), StoreError>;
}
