//! What a history is asked for, as `/admin/history?image=` and the
//! `history` command take it, parsed once into a subject whose text is the
//! key the store files its events under.

use std::fmt;
use std::str::FromStr;

use crate::domain::ImageRef;

/// What a history is asked for: a tagged image, or a push that named only a
/// digest. Its text form is the key the events are stored under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HistorySubject {
    Tagged(ImageRef),
    Digest {
        namespace: String,
        name: String,
        digest: String,
    },
}

impl fmt::Display for HistorySubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistorySubject::Tagged(image) => image.fmt(f),
            HistorySubject::Digest {
                namespace,
                name,
                digest,
            } => write!(f, "{namespace}/{name}@{digest}"),
        }
    }
}

impl HistorySubject {
    /// The digest a digest subject names.
    pub fn digest(&self) -> Option<&str> {
        match self {
            HistorySubject::Digest { digest, .. } => Some(digest),
            HistorySubject::Tagged(_) => None,
        }
    }
}

/// Why an `image` text names no image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image {text:?} {problem}; expected namespace/name:tag or namespace/name@sha256:<hex>")]
pub struct SubjectError {
    text: String,
    problem: &'static str,
}

impl FromStr for HistorySubject {
    type Err = SubjectError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |problem| SubjectError {
            text: text.to_string(),
            problem,
        };
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail("contains whitespace"));
        }
        let (repository, reference) = match text.split_once('@') {
            Some((repository, digest)) => (repository, Err(digest)),
            None => match text.rsplit_once(':') {
                Some((repository, tag)) if !tag.contains('/') => (repository, Ok(tag)),
                _ => return Err(fail("has no tag")),
            },
        };
        let Some((namespace, name)) = repository.split_once('/') else {
            return Err(fail("has no namespace (namespace/name)"));
        };
        if namespace.is_empty() || name.is_empty() || name.split('/').any(str::is_empty) {
            return Err(fail("has an empty namespace or repository name"));
        }
        match reference {
            Ok("") => Err(fail("has an empty tag")),
            Ok(tag) => Ok(HistorySubject::Tagged(ImageRef::new(namespace, name, tag))),
            Err(digest) if is_digest(digest) => Ok(HistorySubject::Digest {
                namespace: namespace.to_string(),
                name: name.to_string(),
                digest: digest.to_string(),
            }),
            Err(_) => Err(fail("has a malformed digest (algorithm:hex)")),
        }
    }
}

/// OCI digest grammar: `algorithm:encoded`.
fn is_digest(text: &str) -> bool {
    let Some((algorithm, encoded)) = text.split_once(':') else {
        return false;
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
    let encoded_ok = !encoded.is_empty()
        && encoded
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "=_-".contains(c));
    algorithm_ok && encoded_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HistorySubject, SubjectError> {
        text.parse()
    }

    #[test]
    fn tagged_and_digest_subjects_round_trip() {
        for text in [
            "team-a/api:1.0",
            "team-a/payments/api:v2",
            "team-a/api@sha256:0123abcdef",
        ] {
            assert_eq!(parse(text).expect(text).to_string(), text);
        }
        assert_eq!(
            parse("team-a/payments/api:v2").expect("nested"),
            HistorySubject::Tagged(ImageRef::new("team-a", "payments/api", "v2"))
        );
    }

    #[test]
    fn malformed_subjects_say_what_is_wrong() {
        for (text, problem) in [
            ("team-a/api", "has no tag"),
            ("api:1.0", "has no namespace"),
            ("/api:1.0", "empty namespace"),
            ("team-a/:1.0", "empty namespace or repository"),
            ("team-a//api:1.0", "empty namespace or repository"),
            ("team-a/api:", "empty tag"),
            ("team-a/api@sha256", "malformed digest"),
            ("team-a/api@sha256:", "malformed digest"),
            ("team-a/api@SHA256:ab", "malformed digest"),
            ("team-a/api:1 0", "whitespace"),
            ("host:5000/api", "has no tag"),
        ] {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains(problem), "{text}: {error}");
            assert!(error.contains("namespace/name:tag"), "{error}");
        }
    }
}
