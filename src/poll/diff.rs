//! What a poll compares: SWR's update times against the watermark, and the
//! tags SWR lists against the tags seen before. Pure functions.

use std::collections::HashMap;

use crate::store::Millis;
use crate::store::poll_state::RepositoryRead;
use crate::swr::basic::{RepositoryTag, parse_swr_time};

/// How long SWR may take to settle. It may stamp a repository's update
/// before its tag list shows the new tag, and its API nodes' (and the
/// bridge's) clocks may differ slightly. So a poll still looks at
/// repositories updated up to this long before the watermark, and reads a
/// repository's tags once more when it last read them within this long of
/// the repository's update (the seen tags make a repeat harmless). The
/// price: a repository polled within this long of its update is read once
/// more at the next poll (see BENCHMARKS.md).
pub const WATERMARK_MARGIN_MS: Millis = 10_000;

/// Where a poll stops reading lists ordered newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoff(Option<Millis>);

impl Cutoff {
    /// No cutoff: the first poll of a scope reads everything.
    pub const EVERYTHING: Cutoff = Cutoff(None);

    /// Everything updated since the watermark (minus the margin).
    pub fn since(watermark: Millis) -> Cutoff {
        Cutoff(Some(watermark.saturating_sub(WATERMARK_MARGIN_MS)))
    }

    /// True when an item with this SWR update time is older than the cutoff,
    /// so it and everything after it in a newest-first list were looked at by
    /// an earlier poll. An unreadable time is never older: it might be new.
    pub fn is_behind(self, updated: &str) -> bool {
        match (self.0, parse_swr_time(updated)) {
            (Some(cutoff), Some(updated)) => updated < cutoff,
            _ => false,
        }
    }
}

/// True when a repository's tags must be read: never read before, updated
/// since, or last read so soon after its update (by the bridge's clock) that
/// SWR may not have listed everything yet. An unreadable update time is
/// always read.
pub fn needs_reading(updated_at: &str, last: Option<&RepositoryRead>) -> bool {
    let Some(last) = last else {
        return true;
    };
    if last.updated_at != updated_at {
        return true;
    }
    parse_swr_time(updated_at)
        .is_none_or(|updated| last.read_at < updated.saturating_add(WATERMARK_MARGIN_MS))
}

/// The newest of the times seen so far and `updated` (unreadable: ignored).
pub fn newest(so_far: Option<Millis>, updated: &str) -> Option<Millis> {
    match (so_far, parse_swr_time(updated)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The tags whose `(tag, digest)` was not seen before: new tags, and tags
/// pushed again with another digest.
pub fn unseen<'a>(
    listed: &'a [RepositoryTag],
    seen: &HashMap<String, String>,
) -> Vec<&'a RepositoryTag> {
    let mut unseen: Vec<&RepositoryTag> = listed
        .iter()
        .filter(|tag| seen.get(&tag.tag) != Some(&tag.digest))
        .collect();
    // A tag moving between pages while they are read may be listed twice.
    let mut names = std::collections::HashSet::new();
    unseen.retain(|tag| names.insert(tag.tag.as_str()));
    unseen
}

/// True when a newest-first tag list can stop here: this tag is older than
/// the cutoff and known with this digest, so the rest were seen too.
pub fn tags_end_here(tag: &RepositoryTag, cutoff: Cutoff, seen: &HashMap<String, String>) -> bool {
    cutoff.is_behind(&tag.updated) && seen.get(&tag.tag) == Some(&tag.digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, digest: &str, updated: &str) -> RepositoryTag {
        RepositoryTag {
            tag: name.into(),
            digest: digest.into(),
            created: updated.into(),
            updated: updated.into(),
        }
    }

    #[test]
    fn only_new_tags_and_new_digests_are_unseen() {
        let listed = vec![
            tag("new", "sha256:1", ""),
            tag("moved", "sha256:3", ""),
            tag("same", "sha256:2", ""),
            tag("new", "sha256:1", ""),
        ];
        let seen: HashMap<String, String> = [
            ("moved".to_string(), "sha256:old".to_string()),
            ("same".to_string(), "sha256:2".to_string()),
        ]
        .into();
        let names: Vec<&str> = unseen(&listed, &seen)
            .iter()
            .map(|t| t.tag.as_str())
            .collect();
        assert_eq!(names, ["new", "moved"]);
    }

    #[test]
    fn the_cutoff_keeps_a_margin_and_never_skips_unreadable_times() {
        let watermark = parse_swr_time("2026-01-01T00:10:00Z").expect("time");
        let cutoff = Cutoff::since(watermark);
        assert!(
            !cutoff.is_behind("2026-01-01T00:09:50Z"),
            "within the margin"
        );
        assert!(cutoff.is_behind("2026-01-01T00:09:49.999Z"));
        assert!(!cutoff.is_behind("not a time"));
        assert!(!Cutoff::EVERYTHING.is_behind("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn a_tag_list_ends_only_at_an_old_tag_already_seen() {
        let cutoff = Cutoff::since(parse_swr_time("2026-01-01T00:10:00Z").expect("time"));
        let seen: HashMap<String, String> = [("1.0".to_string(), "sha256:a".to_string())].into();
        let old = "2026-01-01T00:00:00Z";
        assert!(tags_end_here(&tag("1.0", "sha256:a", old), cutoff, &seen));
        assert!(!tags_end_here(&tag("1.0", "sha256:b", old), cutoff, &seen));
        assert!(!tags_end_here(&tag("2.0", "sha256:a", old), cutoff, &seen));
        assert!(!tags_end_here(
            &tag("1.0", "sha256:a", "2026-01-01T00:09:55Z"),
            cutoff,
            &seen
        ));
    }

    #[test]
    fn a_repository_is_read_again_only_when_updated_or_not_yet_settled() {
        let updated = "2026-01-01T00:10:00Z";
        let at = parse_swr_time(updated).expect("time");
        let read = |updated_at: &str, read_at: Millis| RepositoryRead {
            updated_at: updated_at.into(),
            read_at,
        };
        assert!(needs_reading(updated, None), "never read");
        assert!(
            needs_reading(updated, Some(&read("2026-01-01T00:09:00Z", at + 60_000))),
            "updated since"
        );
        assert!(
            needs_reading(updated, Some(&read(updated, at + 1_000))),
            "read a second after the update: SWR may not have settled"
        );
        assert!(!needs_reading(
            updated,
            Some(&read(updated, at + WATERMARK_MARGIN_MS))
        ));
        assert!(needs_reading("garbled", Some(&read("garbled", i64::MAX))));
    }

    #[test]
    fn the_newest_time_ignores_unreadable_ones() {
        assert_eq!(newest(None, "bad"), None);
        assert_eq!(newest(Some(5), "bad"), Some(5));
        assert_eq!(newest(Some(5), "1970-01-01T00:00:01Z"), Some(1_000));
        assert_eq!(newest(Some(5_000), "1970-01-01T00:00:01Z"), Some(5_000));
    }
}
