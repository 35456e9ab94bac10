//! The Docker/OCI registry (distribution) notification envelope
//! `{"events": [...]}`: each `push` with a `target.tag` is an image; one
//! with only a `target.digest` is a digest-only push.

use serde::Deserialize;

use super::json::{self, Field, JsonObject, JsonPath, Problem, ROOT, Text};
use super::reference;
use super::{IgnoreReason, Ignored, ParsedWebhook, PayloadError, PushedDigest, PushedImage};
use crate::domain::ImageRef;

const FORMAT: &str = "distribution";
const PUSH_ACTION: &str = "push";
/// Docker's namespace for repositories named without one (`nginx`).
const DEFAULT_NAMESPACE: &str = "library";

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    events: Field<Vec<Field<Event<'a>>>>,
}

impl JsonObject for Envelope<'_> {}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(default, borrow)]
    action: Text<'a>,
    #[serde(default, borrow)]
    target: Field<Target<'a>>,
    #[serde(default, borrow)]
    request: Field<Request<'a>>,
}

impl JsonObject for Event<'_> {}

#[derive(Deserialize)]
struct Target<'a> {
    #[serde(default, borrow)]
    repository: Text<'a>,
    #[serde(default, borrow)]
    tag: Text<'a>,
    #[serde(default, borrow)]
    digest: Text<'a>,
}

impl JsonObject for Target<'_> {}

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(default, borrow)]
    host: Text<'a>,
}

impl JsonObject for Request<'_> {}

/// Parses a registry notification envelope. Events carry their own ids but
/// the envelope has none, so there is no delivery id.
pub fn parse(body: &[u8]) -> Result<ParsedWebhook, PayloadError> {
    let envelope: Envelope<'_> = json::decode(body, FORMAT)?;
    read(&envelope).map_err(|problem| problem.into_error(FORMAT))
}

fn read(envelope: &Envelope<'_>) -> Result<ParsedWebhook, Problem> {
    let events_path = ROOT.key("events");
    let events = envelope.events.required(&events_path)?;
    let mut parsed = ParsedWebhook::default();
    for (index, event) in events.iter().enumerate() {
        let event_path = events_path.index(index);
        read_event(event.required(&event_path)?, &event_path, &mut parsed)?;
    }
    Ok(parsed)
}

fn read_event(
    event: &Event<'_>,
    at: &JsonPath<'_>,
    parsed: &mut ParsedWebhook,
) -> Result<(), Problem> {
    let action = event.action.required(&at.key("action"))?;
    if action != PUSH_ACTION {
        // Only the action matters here; a pull's target is not read, so a
        // malformed one cannot turn an ignorable event into an error.
        let subject = match &event.target {
            Field::Present(Target {
                repository: Field::Present(repository),
                ..
            }) => format!("{action} {repository}"),
            _ => action.to_string(),
        };
        parsed.ignored.push(Ignored {
            reason: IgnoreReason::NotAPush,
            subject,
        });
        return Ok(());
    }

    let target_path = at.key("target");
    let target = event.target.required(&target_path)?;
    let repository_path = target_path.key("repository");
    let repository = target.repository.required(&repository_path)?;
    let (namespace, name) = match repository.split_once('/') {
        Some(split) => split,
        None => (DEFAULT_NAMESPACE, repository.as_ref()),
    };
    reference::check_namespace(namespace, &repository_path)?;
    reference::check_name(namespace, name, &repository_path)?;

    let tag_path = target_path.key("tag");
    // An empty tag is no tag, as with Harbor.
    let tag = target
        .tag
        .optional(&tag_path)?
        .map(AsRef::as_ref)
        .filter(|tag: &&str| !tag.is_empty());
    let digest_path = target_path.key("digest");
    let digest = target
        .digest
        .optional(&digest_path)?
        .map(AsRef::as_ref)
        .filter(|digest: &&str| !digest.is_empty());
    if let Some(digest) = digest {
        reference::check_digest(digest, &digest_path)?;
    }
    match (tag, digest) {
        (Some(tag), digest) => {
            reference::check_tag(tag, &tag_path)?;
            let registry_host = registry_host(event, at)?;
            parsed.images.push(PushedImage {
                image: ImageRef::new(namespace, name, tag),
                digest: digest.map(str::to_string),
                registry_host,
            });
        }
        // Manifests pushed by digest alone: only the registry knows their tags.
        (None, Some(digest)) => parsed.digest_only.push(PushedDigest {
            namespace: namespace.to_string(),
            name: name.to_string(),
            digest: digest.to_string(),
            registry_host: registry_host(event, at)?,
        }),
        (None, None) => parsed.ignored.push(Ignored {
            reason: IgnoreReason::Untagged,
            subject: repository.to_string(),
        }),
    }
    Ok(())
}

/// `request.host`: the address the client pushed to, i.e. the registry.
fn registry_host(event: &Event<'_>, at: &JsonPath<'_>) -> Result<Option<String>, Problem> {
    let request_path = at.key("request");
    let Some(request) = event.request.optional(&request_path)? else {
        return Ok(None);
    };
    let host_path = request_path.key("host");
    match request.host.optional(&host_path)? {
        Some(host) if !host.is_empty() => {
            reference::check_host(host, &host_path)?;
            Ok(Some(host.to_string()))
        }
        _ => Ok(None),
    }
}
