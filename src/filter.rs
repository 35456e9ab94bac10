//! Include/exclude filters over `namespace/name:tag`, with SWR's glob rules:
//! `*` and `?` stay inside one path segment, `**` crosses segments, `{a,b}` is
//! an alternation (nestable).
//!
//! Globs that are a literal with at most one `**` at an end are compared as
//! text, without building the subject string; the others run as regexes.
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
    include: Option<Globs>,
    exclude: Option<Globs>,
}

impl ImageFilter {
    /// Compiles the include and exclude globs, each list into one matcher.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, GlobError> {
        Ok(Self {
            include: Globs::compile("include", include)?,
            exclude: Globs::compile("exclude", exclude)?,
        })
    }

    pub fn admits(&self, image: &ImageRef) -> bool {
        if self.include.is_none() && self.exclude.is_none() {
            return true;
        }
        let subject = Subject::of(image);
        let included = self
            .include
            .as_ref()
            .is_none_or(|globs| globs.matches(&subject));
        let excluded = self
            .exclude
            .as_ref()
            .is_some_and(|globs| globs.matches(&subject));
        included && !excluded
    }
}

/// One list of globs: those that are a literal with at most a leading or a
/// trailing `**` are compared as text (most filters are `team-a/**` or
/// `**:*-cache`-like); only the others go to one anchored `RegexSet`.
#[derive(Debug, Clone)]
struct Globs {
    literal: Vec<LiteralGlob>,
    patterns: Option<RegexSet>,
}

/// A glob whose only wildcard, if any, is a `**` at one end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LiteralGlob {
    Exactly(String),
    StartsWith(String),
    EndsWith(String),
}

impl LiteralGlob {
    /// `None` when `glob` has wildcards elsewhere, or braces.
    fn of(glob: &str) -> Option<Self> {
        let is_literal = |text: &str| !text.contains(['*', '?', '{', '}', ',']);
        if let Some(prefix) = glob.strip_suffix("**")
            && is_literal(prefix)
        {
            return Some(LiteralGlob::StartsWith(prefix.to_string()));
        }
        if let Some(suffix) = glob.strip_prefix("**")
            && is_literal(suffix)
        {
            return Some(LiteralGlob::EndsWith(suffix.to_string()));
        }
        is_literal(glob).then(|| LiteralGlob::Exactly(glob.to_string()))
    }

    fn matches(&self, subject: &Subject<'_>) -> bool {
        match self {
            LiteralGlob::Exactly(text) => subject.len() == text.len() && subject.starts_with(text),
            LiteralGlob::StartsWith(prefix) => subject.starts_with(prefix),
            LiteralGlob::EndsWith(suffix) => subject.ends_with(suffix),
        }
    }
}

impl Globs {
    fn compile(list: &str, globs: &[String]) -> Result<Option<Self>, GlobError> {
        if globs.is_empty() {
            return Ok(None);
        }
        let mut literal = Vec::new();
        let mut patterns = Vec::new();
        for (index, glob) in globs.iter().enumerate() {
            // Translated even when literal: a broken glob is refused either way.
            let pattern = glob_to_regex(glob).map_err(|reason| GlobError {
                key: format!("{list}[{index}]"),
                reason,
            })?;
            match LiteralGlob::of(glob) {
                Some(glob) => literal.push(glob),
                None => patterns.push(pattern),
            }
        }
        let patterns = if patterns.is_empty() {
            None
        } else {
            let set = RegexSet::new(patterns).map_err(|e| GlobError {
                key: list.to_string(),
                reason: format!("the globs do not compile: {e}"),
            })?;
            Some(set)
        };
        Ok(Some(Self { literal, patterns }))
    }

    fn matches(&self, subject: &Subject<'_>) -> bool {
        self.literal.iter().any(|glob| glob.matches(subject))
            || self
                .patterns
                .as_ref()
                .is_some_and(|set| set.is_match(&subject.joined()))
    }
}

/// `namespace/name:tag` as its five pieces, compared without joining them.
struct Subject<'a>([&'a str; 5]);

impl<'a> Subject<'a> {
    fn of(image: &'a ImageRef) -> Self {
        Self([&image.namespace, "/", &image.name, ":", &image.tag])
    }

    fn len(&self) -> usize {
        self.0.iter().map(|piece| piece.len()).sum()
    }

    fn bytes(&self) -> impl DoubleEndedIterator<Item = u8> + '_ {
        self.0.iter().flat_map(|piece| piece.bytes())
    }

    fn starts_with(&self, prefix: &str) -> bool {
        prefix.len() <= self.len() && self.bytes().zip(prefix.bytes()).all(|(a, b)| a == b)
    }

    fn ends_with(&self, suffix: &str) -> bool {
        suffix.len() <= self.len()
            && self
                .bytes()
                .rev()
                .zip(suffix.bytes().rev())
                .all(|(a, b)| a == b)
    }

    fn joined(&self) -> String {
        self.0.concat()
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

    /// Asserts that `f` admits each of `admitted` and none of `refused`.
    fn assert_admits(f: &ImageFilter, admitted: &[&str], refused: &[&str]) {
        for full in admitted {
            assert!(f.admits(&image(full)), "{full} is admitted");
        }
        for full in refused {
            assert!(!f.admits(&image(full)), "{full} is refused");
        }
    }

    #[test]
    fn single_star_stays_in_one_segment() {
        let f = filter(&["team-a/*"], &[]);
        assert_admits(
            &f,
            &["team-a/api:v1"],
            &["team-a/payments/api:v1", "team-b/api:v1"],
        );
    }

    #[test]
    fn double_star_crosses_segments() {
        let f = filter(&["team-a/**"], &[]);
        assert_admits(
            &f,
            &["team-a/payments/api:v1.4.2", "team-a/api:latest"],
            &["team-ab/api:latest"],
        );
    }

    #[test]
    fn question_mark_is_one_character() {
        let f = filter(&["test/openjdk:?.?"], &[]);
        assert_admits(&f, &["test/openjdk:8.8"], &["test/openjdk:11.0"]);
    }

    #[test]
    fn braces_are_alternatives() {
        let f = filter(&["{team-a,team-b}/**:{v*,latest}"], &[]);
        assert_admits(
            &f,
            &["team-a/api:v1", "team-b/x/y:latest"],
            &["team-c/api:v1", "team-a/api:dev"],
        );
    }

    #[test]
    fn exclude_wins_over_include() {
        let f = filter(&["team-a/**"], &["**:*-cache"]);
        assert_admits(&f, &["team-a/api:v1"], &["team-a/api:build-cache"]);
    }

    #[test]
    fn no_globs_admit_everything() {
        assert!(filter(&[], &[]).admits(&image("any/thing:at-all")));
    }

    #[test]
    fn regex_metacharacters_are_literal() {
        let f = filter(&["lib/a.b:1+2"], &[]);
        assert_admits(&f, &["lib/a.b:1+2"], &["lib/aXb:1+2"]);
    }

    #[test]
    fn literal_globs_skip_the_regexes_and_keep_their_meaning() {
        assert_eq!(
            LiteralGlob::of("team-a/**"),
            Some(LiteralGlob::StartsWith("team-a/".into()))
        );
        assert_eq!(
            LiteralGlob::of("**-cache"),
            Some(LiteralGlob::EndsWith("-cache".into()))
        );
        assert_eq!(
            LiteralGlob::of("lib/a.b:1+2"),
            Some(LiteralGlob::Exactly("lib/a.b:1+2".into()))
        );
        for wild in ["**:*-cache", "team-?/**", "{a,b}/**", "a/*", "a,b"] {
            assert_eq!(LiteralGlob::of(wild), None, "{wild} is not literal");
        }
        let f = filter(&["team-a/**", "lib/exact:1"], &["**-cache", "**:dev"]);
        assert_admits(
            &f,
            &["team-a/x/y:v1", "lib/exact:1", "team-a/api:dev2"],
            &[
                "lib/exact:12",
                "lib/exac:1",
                "team-a/api:build-cache",
                "team-a/api:dev",
                "team-b/api:v1",
            ],
        );
    }

    #[test]
    fn every_glob_matches_as_its_regex_does() {
        let globs = [
            "team-a/**",
            "**",
            "**-cache",
            "**:v1",
            "a/b:c",
            "team-?/**",
            "**:*-cache",
            "{x,y}/**",
            "a/*:1",
        ];
        let subjects = [
            "team-a/api:v1",
            "team-a/p/api:x-cache",
            "a/b:c",
            "a/b:cd",
            "x/q:v1",
            "team-b/s:1",
            "a/z:1",
            "a/z/y:1",
        ];
        for glob in globs {
            let regex = regex::Regex::new(&glob_to_regex(glob).expect("glob")).expect("regex");
            let compiled = filter(&[glob], &[]);
            for subject in subjects {
                assert_eq!(
                    compiled.admits(&image(subject)),
                    regex.is_match(subject),
                    "{glob} on {subject}"
                );
            }
        }
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
