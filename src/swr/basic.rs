//! SWR basic edition: the two list calls a poll source needs, on
//! [`SwrClient::get_json`]. Shapes follow the official SDK models
//! (`ShowReposResp`, `ShowReposTagResp`) and SWR's API reference.
//!
//! - `ListReposDetails`: `GET /v2/manage/repos?namespace=&order_column=updated_at
//!   &order_type=desc&limit=&offset=`: repositories, newest update first.
//! - `ListRepositoryTags`: `GET /v2/manage/namespaces/{namespace}/repos/{repository}/tags
//!   ?order_column=updated_at&order_type=desc&limit=&offset=`: a repository's
//!   tags, newest first; a `/` in the repository name is written `$`.
//!
//! Both answer a JSON array and name the total in `Content-Range`.

use chrono::{DateTime, NaiveDateTime};
use serde::Deserialize;

use super::client::{SwrAnswer, SwrClient, SwrError};

pub const LIST_REPOS_DETAILS: &str = "list_repos_details";
pub const LIST_REPOSITORY_TAGS: &str = "list_repository_tags";

/// SWR's largest page (its default is 100).
pub const MAX_PAGE_SIZE: u32 = 1_000;

/// A repository as `ListReposDetails` lists it (the fields the poller uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Repository {
    pub name: String,
    pub namespace: String,
    /// UTC, e.g. `2017-09-11T03:00:02.542841141Z`; see [`parse_swr_time`].
    #[serde(default)]
    pub updated_at: String,
}

/// A tag as `ListRepositoryTags` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RepositoryTag {
    /// SWR spells this key with a capital T.
    #[serde(rename = "Tag")]
    pub tag: String,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub updated: String,
}

/// One page: where it started, what it held, and SWR's total when given.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub offset: u32,
    pub total: Option<u64>,
    pub request_id: Option<String>,
}

impl<T> Page<T> {
    /// True when no further page can hold anything: a short page, or the
    /// total reached.
    pub fn is_last(&self, limit: u32) -> bool {
        let end = u64::from(self.offset) + self.items.len() as u64;
        self.items.len() < limit as usize || self.total.is_some_and(|total| end >= total)
    }
}

/// Which repositories to list: one namespace, or every namespace the
/// credentials can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepositoryScope<'a> {
    Namespace(&'a str),
    Every,
}

fn paging(offset: u32, limit: u32) -> [(String, String); 4] {
    [
        ("order_column".to_string(), "updated_at".to_string()),
        ("order_type".to_string(), "desc".to_string()),
        ("limit".to_string(), limit.min(MAX_PAGE_SIZE).to_string()),
        ("offset".to_string(), offset.to_string()),
    ]
}

fn page<T>(answer: SwrAnswer<Vec<T>>, offset: u32) -> Page<T> {
    Page {
        items: answer.body,
        offset,
        total: answer.total,
        request_id: answer.request_id,
    }
}

/// One page of `ListReposDetails`, newest update first.
pub async fn list_repositories(
    client: &SwrClient,
    scope: RepositoryScope<'_>,
    offset: u32,
    limit: u32,
) -> Result<Page<Repository>, SwrError> {
    let mut query = Vec::with_capacity(5);
    if let RepositoryScope::Namespace(namespace) = scope {
        query.push(("namespace".to_string(), namespace.to_string()));
    }
    query.extend(paging(offset, limit));
    let answer = client
        .get_json(LIST_REPOS_DETAILS, &["v2", "manage", "repos"], &query)
        .await?;
    Ok(page(answer, offset))
}

/// One page of `ListRepositoryTags`, newest update first.
pub async fn list_tags(
    client: &SwrClient,
    namespace: &str,
    repository: &str,
    offset: u32,
    limit: u32,
) -> Result<Page<RepositoryTag>, SwrError> {
    let repository = repository_path_segment(repository);
    let answer = client
        .get_json(
            LIST_REPOSITORY_TAGS,
            &[
                "v2",
                "manage",
                "namespaces",
                namespace,
                "repos",
                &repository,
                "tags",
            ],
            &paging(offset, limit),
        )
        .await?;
    Ok(page(answer, offset))
}

/// SWR basic writes a `/` inside a repository name as `$` in its paths.
pub fn repository_path_segment(repository: &str) -> String {
    repository.replace('/', "$")
}

/// SWR's UTC times in milliseconds since the epoch. The reference shows
/// RFC 3339 with up to nine fractional digits (`2017-09-11T03:00:02.542841141Z`);
/// offsets, a space instead of `T` and a missing zone (UTC, as documented) are
/// accepted too. `None` for anything else: the caller must then assume the
/// item may be new.
pub fn parse_swr_time(value: &str) -> Option<i64> {
    let value = value.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Some(at.timestamp_millis());
    }
    let spaced = value.replacen(' ', "T", 1);
    if let Ok(at) = DateTime::parse_from_rfc3339(&spaced) {
        return Some(at.timestamp_millis());
    }
    let naive = spaced.trim_end_matches(['Z', 'z']);
    NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|at| at.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swr_times_parse_in_every_documented_shape() {
        let second = 1_505_098_802_000;
        assert_eq!(
            parse_swr_time("2017-09-11T03:00:02.542841141Z"),
            Some(second + 542)
        );
        assert_eq!(parse_swr_time("2017-09-11T03:00:02Z"), Some(second));
        assert_eq!(parse_swr_time("2017-09-11T11:00:02+08:00"), Some(second));
        assert_eq!(parse_swr_time("2017-09-11 03:00:02"), Some(second));
        assert_eq!(parse_swr_time("2017-09-11T03:00:02.5"), Some(second + 500));
        assert_eq!(parse_swr_time(""), None);
        assert_eq!(parse_swr_time("yesterday"), None);
    }

    #[test]
    fn tags_use_the_capitalised_key_and_tolerate_missing_times() {
        let tags: Vec<RepositoryTag> = serde_json::from_str(
            r#"[{"id": 1, "repo_id": 2, "Tag": "1.0", "digest": "sha256:ab",
                 "created": "2024-01-02T03:04:05Z", "updated": "2024-01-02T03:04:05Z",
                 "tag_type": 0},
                {"Tag": "latest"}]"#,
        )
        .expect("SDK shape");
        assert_eq!(tags[0].tag, "1.0");
        assert_eq!(tags[0].digest, "sha256:ab");
        assert_eq!(tags[1].digest, "");
        assert!(serde_json::from_str::<Vec<RepositoryTag>>(r#"[{"tag": "1.0"}]"#).is_err());
    }

    #[test]
    fn a_page_is_last_when_short_or_at_the_total() {
        let page = |items: usize, offset: u32, total: Option<u64>| Page {
            items: vec![(); items],
            offset,
            total,
            request_id: None,
        };
        assert!(page(3, 0, None).is_last(10));
        assert!(!page(10, 0, None).is_last(10));
        assert!(page(10, 10, Some(20)).is_last(10));
        assert!(!page(10, 10, Some(21)).is_last(10));
    }

    #[test]
    fn a_slash_in_a_repository_name_is_a_dollar_in_the_path() {
        assert_eq!(repository_path_segment("tools/cli"), "tools$cli");
        assert_eq!(repository_path_segment("api"), "api");
    }
}
