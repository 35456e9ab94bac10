//! What may become an image: Docker's grammar for repository names and tags,
//! digests and registry hosts, checked before anything reaches the store.

use super::json::{JsonPath, Problem, quote};

/// Docker's limit on `namespace/name` (the registry host not counted).
pub(crate) const MAX_REPOSITORY_LEN: usize = 255;
/// Docker's limit on a tag.
pub(crate) const MAX_TAG_LEN: usize = 128;
/// A DNS name (253) plus `:65535`, or a bracketed IPv6 address and port.
const MAX_HOST_LEN: usize = 261;

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(crate) fn is_valid_tag(tag: &str) -> bool {
    let Some((first, rest)) = tag.as_bytes().split_first() else {
        return false;
    };
    tag.len() <= MAX_TAG_LEN
        && (first.is_ascii_alphanumeric() || *first == b'_')
        && rest
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// One path component of a repository name:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub(crate) fn is_valid_component(component: &str) -> bool {
    let is_alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut rest = component.as_bytes();
    loop {
        let run = rest.iter().take_while(|b| is_alphanumeric(b)).count();
        if run == 0 {
            return false;
        }
        let Some((_, after_run)) = rest.split_at_checked(run) else {
            return false;
        };
        if after_run.is_empty() {
            return true;
        }
        let separator_len = after_run
            .iter()
            .take_while(|b| matches!(b, b'.' | b'_' | b'-'))
            .count();
        let Some((separator, after_separator)) = after_run.split_at_checked(separator_len) else {
            return false;
        };
        let valid_separator = matches!(separator, b"." | b"_" | b"__")
            || (!separator.is_empty() && separator.iter().all(|b| *b == b'-'));
        if !valid_separator {
            return false;
        }
        rest = after_separator;
    }
}

/// An image name below the namespace: one or more components joined by `/`.
pub(crate) fn is_valid_name(name: &str) -> bool {
    name.split('/').all(is_valid_component)
}

/// An OCI digest, `algorithm:encoded`, as Harbor puts in `tag` for pushes by
/// digest: `[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+`.
pub(crate) fn is_digest(value: &str) -> bool {
    let Some((algorithm, encoded)) = value.split_once(':') else {
        return false;
    };
    let algorithm_valid = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    let encoded_valid = !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
    algorithm_valid && encoded_valid
}

/// The host (and port) of a Harbor `resource_url` such as
/// `harbor.example/library/nginx:1.0` or `https://harbor.example/...`;
/// `None` when it names none.
pub(crate) fn host_of_resource_url(url: &str) -> Option<&str> {
    let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = without_scheme
        .split_once('/')
        .map_or(without_scheme, |(host, _)| host);
    (!host.is_empty()).then_some(host)
}

fn is_valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

const COMPONENT_RULE: &str =
    "lowercase letters and digits, separated by single '.', '_', '__' or runs of '-'";

/// The parts of an image reference a push names, each with its own rule.
#[derive(Clone, Copy)]
enum Part {
    Namespace,
    Name,
    Tag,
    Host,
    Digest,
}

impl Part {
    /// Why `value` is not a valid part of this kind.
    fn invalid(self, value: &str) -> String {
        let value = quote(value);
        match self {
            Part::Namespace => format!("{value} is not a valid namespace: {COMPONENT_RULE}"),
            Part::Name => format!(
                "{value} is not a valid image name: '/'-separated components of {COMPONENT_RULE}"
            ),
            Part::Tag => format!(
                "{value} is not a valid tag: 1 to {MAX_TAG_LEN} of A-Z a-z 0-9 _ . -, not starting with '.' or '-'"
            ),
            Part::Host => format!("{value} is not a valid registry host"),
            Part::Digest => format!(
                "{value} is not a valid digest: algorithm:encoded, e.g. sha256: and 64 hex digits"
            ),
        }
    }
}

/// `Ok` when `valid`, else the problem at `path` that `value` is not a valid `part`.
fn require(valid: bool, part: Part, value: &str, path: &JsonPath<'_>) -> Result<(), Problem> {
    if valid {
        Ok(())
    } else {
        Err(Problem::new(path, part.invalid(value)))
    }
}

pub(crate) fn check_namespace(namespace: &str, path: &JsonPath<'_>) -> Result<(), Problem> {
    require(
        is_valid_component(namespace),
        Part::Namespace,
        namespace,
        path,
    )
}

/// The name, and the length of `namespace/name` against Docker's limit.
pub(crate) fn check_name(namespace: &str, name: &str, path: &JsonPath<'_>) -> Result<(), Problem> {
    require(is_valid_name(name), Part::Name, name, path)?;
    let repository_len = namespace.len() + 1 + name.len();
    if repository_len > MAX_REPOSITORY_LEN {
        return Err(Problem::new(
            path,
            format!(
                "namespace/name is {repository_len} characters long; at most {MAX_REPOSITORY_LEN} are allowed"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn check_tag(tag: &str, path: &JsonPath<'_>) -> Result<(), Problem> {
    require(is_valid_tag(tag), Part::Tag, tag, path)
}

pub(crate) fn check_host(host: &str, path: &JsonPath<'_>) -> Result<(), Problem> {
    require(is_valid_host(host), Part::Host, host, path)
}

/// Docker's limit on a digest's length is not written down; sha512 in hex is
/// 135 characters, so this leaves room for any real algorithm.
const MAX_DIGEST_LEN: usize = 255;

pub(crate) fn check_digest(digest: &str, path: &JsonPath<'_>) -> Result<(), Problem> {
    let valid = digest.len() <= MAX_DIGEST_LEN && is_digest(digest);
    require(valid, Part::Digest, digest, path)
}
