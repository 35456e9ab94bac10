//! Include/exclude filters over `namespace/name:tag`, with SWR's glob rules:
//! `*` and `?` stay inside one path segment, `**` crosses segments, `{a,b}` is
//! an alternation (nestable).
//!
//! Why not `globset`: it only allows `**` as a whole path component, so SWR
//! rules such as `**:*-cache` (any repository, tags ending in `-cache`) would be
//! rejected. Translating to an anchored `regex` keeps the exact SWR meaning.

use regex::RegexSet;

use crate::domain::ImageRef;

/// Translates one SWR glob into an anchored regular expression.
pub fn glob_to_regex(glob: &str) -> Result<String, String> {
    if glob.is_empty() {
        return Err("an empty glob matches nothing; remove it or write a pattern".into());
    }
    let mut out = String::with_capacity(glob.len() * 2 + 2);
    out.push('^');
    let mut open_braces = 0usize;
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str(".*");
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '{' => {
                open_braces += 1;
                out.push_str("(?:");
            }
            ',' if open_braces > 0 => out.push('|'),
            '}' if open_braces > 0 => {
                open_braces -= 1;
                out.push(')');
            }
            '}' => return Err(format!("\"{glob}\": '}}' without a matching '{{'")),
            other => out.push_str(&regex::escape(other.encode_utf8(&mut [0; 4]))),
        }
    }
    if open_braces > 0 {
        return Err(format!("\"{glob}\": '{{' is never closed"));
    }
    out.push('$');
    Ok(out)
}

/// Why a filter does not compile: `key` names the glob relative to the
/// filter (`include[1]`), or the list when the set as a whole fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct GlobError {
    pub key: String,
    pub reason: String,
}

/// A source's filter: an image passes when it matches an include glob (or
/// there are none) and no exclude glob.
#[derive(Debug, Clone)]
pub struct ImageFilter {
    include: Option<RegexSet>,
    exclude: Option<RegexSet>,
}

impl ImageFilter {
    /// Compiles the include and exclude globs, each list into one set.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, GlobError> {
        Ok(Self {
            include: Self::set("include", include)?,
            exclude: Self::set("exclude", exclude)?,
        })
    }

    fn set(list: &str, globs: &[String]) -> Result<Option<RegexSet>, GlobError> {
        if globs.is_empty() {
            return Ok(None);
        }
        let patterns = globs
            .iter()
            .enumerate()
            .map(|(index, glob)| {
                glob_to_regex(glob).map_err(|reason| GlobError {
                    key: format!("{list}[{index}]"),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        RegexSet::new(patterns).map(Some).map_err(|e| GlobError {
            key: list.to_string(),
            reason: format!("the globs do not compile: {e}"),
        })
    }

    pub fn admits(&self, image: &ImageRef) -> bool {
        let subject = image.to_string();
        let included = self
            .include
            .as_ref()
            .is_none_or(|set| set.is_match(&subject));
        let excluded = self
            .exclude
            .as_ref()
            .is_some_and(|set| set.is_match(&subject));
        included && !excluded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> ImageFilter {
        let strings = |globs: &[&str]| globs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ImageFilter::new(&strings(include), &strings(exclude)).expect("valid globs")
    }

    fn image(full: &str) -> ImageRef {
        let (path, tag) = full.rsplit_once(':').expect("tag");
        let (namespace, name) = path.split_once('/').expect("namespace");
        ImageRef::new(namespace, name, tag)
    }

    #[test]
    fn single_star_stays_in_one_segment() {
        let f = filter(&["team-a/*"], &[]);
        assert!(f.admits(&image("team-a/api:v1")));
        assert!(!f.admits(&image("team-a/payments/api:v1")));
        assert!(!f.admits(&image("team-b/api:v1")));
    }

    #[test]
    fn double_star_crosses_segments() {
        let f = filter(&["team-a/**"], &[]);
        assert!(f.admits(&image("team-a/payments/api:v1.4.2")));
        assert!(f.admits(&image("team-a/api:latest")));
        assert!(!f.admits(&image("team-ab/api:latest")));
    }

    #[test]
    fn question_mark_is_one_character() {
        let f = filter(&["test/openjdk:?.?"], &[]);
        assert!(f.admits(&image("test/openjdk:8.8")));
        assert!(!f.admits(&image("test/openjdk:11.0")));
    }

    #[test]
    fn braces_are_alternatives() {
        let f = filter(&["{team-a,team-b}/**:{v*,latest}"], &[]);
        assert!(f.admits(&image("team-a/api:v1")));
        assert!(f.admits(&image("team-b/x/y:latest")));
        assert!(!f.admits(&image("team-c/api:v1")));
        assert!(!f.admits(&image("team-a/api:dev")));
    }

    #[test]
    fn exclude_wins_over_include() {
        let f = filter(&["team-a/**"], &["**:*-cache"]);
        assert!(f.admits(&image("team-a/api:v1")));
        assert!(!f.admits(&image("team-a/api:build-cache")));
    }

    #[test]
    fn no_globs_admit_everything() {
        assert!(filter(&[], &[]).admits(&image("any/thing:at-all")));
    }

    #[test]
    fn regex_metacharacters_are_literal() {
        let f = filter(&["lib/a.b:1+2"], &[]);
        assert!(f.admits(&image("lib/a.b:1+2")));
        assert!(!f.admits(&image("lib/aXb:1+2")));
    }

    #[test]
    fn broken_globs_are_explained() {
        assert!(glob_to_regex("{a,b").unwrap_err().contains("never closed"));
        assert!(
            glob_to_regex("a}")
                .unwrap_err()
                .contains("without a matching")
        );
        assert!(glob_to_regex("").is_err());
        let error = ImageFilter::new(&["ok/**".into()], &["x".into(), "{".into()]).unwrap_err();
        assert_eq!(error.key, "exclude[1]");
    }
}
