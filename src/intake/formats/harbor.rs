//! Harbor's default webhook payload, which SWR Enterprise Edition posts for
//! `PUSH_ARTIFACT` (Harbor 1.x: `pushImage`, same body); its `event_data`
//! reader also serves the CloudEvents format, whose `data` has the same shape.

use serde::Deserialize;

use super::json::{self, Field, JsonObject, JsonPath, Problem, ROOT, Text};
use super::reference;
use super::{IgnoreReason, Ignored, ParsedWebhook, PayloadError, PushedDigest, PushedImage};
use crate::domain::ImageRef;

const FORMAT: &str = "harbor";
/// The Harbor event types that push an image: Harbor 2.x (and SWR EE) name
/// it `PUSH_ARTIFACT`; Harbor 1.x sent the same body as `pushImage`.
const PUSH_EVENTS: [&str; 2] = ["PUSH_ARTIFACT", "pushImage"];

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", default, borrow)]
    event_type: Text<'a>,
    #[serde(default, borrow)]
    event_data: Field<EventData<'a>>,
}

impl JsonObject for Envelope<'_> {}

/// The pushed artifacts of one Harbor event: `event_data`, or CloudEvents `data`.
#[derive(Deserialize)]
pub(super) struct EventData<'a> {
    #[serde(default, borrow)]
    resources: Field<Vec<Field<Resource<'a>>>>,
    #[serde(default, borrow)]
    repository: Field<Repository<'a>>,
}

impl JsonObject for EventData<'_> {}

#[derive(Deserialize)]
struct Resource<'a> {
    #[serde(default, borrow)]
    tag: Text<'a>,
    #[serde(default, borrow)]
    digest: Text<'a>,
    #[serde(default, borrow)]
    resource_url: Text<'a>,
}

impl JsonObject for Resource<'_> {}

#[derive(Deserialize)]
struct Repository<'a> {
    #[serde(default, borrow)]
    namespace: Text<'a>,
    #[serde(default, borrow)]
    name: Text<'a>,
    #[serde(default, borrow)]
    repo_full_name: Text<'a>,
}

impl JsonObject for Repository<'_> {}

/// Parses a Harbor default payload. Harbor sends no delivery id.
pub fn parse(body: &[u8]) -> Result<ParsedWebhook, PayloadError> {
    let envelope: Envelope<'_> = json::decode(body, FORMAT)?;
    read(&envelope).map_err(|problem| problem.into_error(FORMAT))
}

fn read(envelope: &Envelope<'_>) -> Result<ParsedWebhook, Problem> {
    let event_type = envelope.event_type.required(&ROOT.key("type"))?;
    let mut parsed = ParsedWebhook::default();
    if !PUSH_EVENTS.contains(&event_type.as_ref()) {
        parsed.ignored.push(Ignored {
            reason: IgnoreReason::NotAPush,
            subject: event_type.to_string(),
        });
        return Ok(parsed);
    }
    let data_path = ROOT.key("event_data");
    collect_push(
        envelope.event_data.required(&data_path)?,
        &data_path,
        &mut parsed,
    )?;
    Ok(parsed)
}

/// Adds the images of a push event's `data` (found at `at`) to `parsed`: one
/// per resource with a tag, a digest-only push per resource named by digest
/// alone, for every entry of `resources` (a push of several tags at once lists
/// each); resources with neither are ignored with a reason.
pub(super) fn collect_push(
    data: &EventData<'_>,
    at: &JsonPath<'_>,
    parsed: &mut ParsedWebhook,
) -> Result<(), Problem> {
    let (namespace, name) = repository_of(data, at)?;
    let resources_path = at.key("resources");
    let resources = data.resources.required(&resources_path)?;
    parsed.images.reserve(resources.len());
    for (index, resource) in resources.iter().enumerate() {
        let resource_path = resources_path.index(index);
        let resource = resource.required(&resource_path)?;
        // Go's encoder writes unset strings as "": an empty tag is no tag.
        let tag = non_empty(resource.tag.optional(&resource_path.key("tag"))?);
        let digest_path = resource_path.key("digest");
        let digest = non_empty(resource.digest.optional(&digest_path)?);
        if let Some(digest) = digest {
            reference::check_digest(digest, &digest_path)?;
        }
        let url_path = resource_path.key("resource_url");
        let registry_host = || -> Result<Option<String>, Problem> {
            match resource
                .resource_url
                .optional(&url_path)?
                .and_then(|url| reference::host_of_resource_url(url))
            {
                Some(host) => {
                    reference::check_host(host, &url_path)?;
                    Ok(Some(host.to_string()))
                }
                None => Ok(None),
            }
        };
        match (tag, digest) {
            // Harbor writes the digest into `tag` for pushes by digest.
            (Some(tag), digest) if reference::is_digest(tag) => {
                parsed.digest_only.push(PushedDigest {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    digest: digest.unwrap_or(tag).to_string(),
                    registry_host: registry_host()?,
                })
            }
            (Some(tag), digest) => {
                reference::check_tag(tag, &resource_path.key("tag"))?;
                parsed.images.push(PushedImage {
                    image: ImageRef::new(namespace, name, tag),
                    digest: digest.map(str::to_string),
                    registry_host: registry_host()?,
                });
            }
            (None, Some(digest)) => parsed.digest_only.push(PushedDigest {
                namespace: namespace.to_string(),
                name: name.to_string(),
                digest: digest.to_string(),
                registry_host: registry_host()?,
            }),
            (None, None) => parsed.ignored.push(Ignored {
                reason: IgnoreReason::Untagged,
                subject: format!("{namespace}/{name}"),
            }),
        }
    }
    Ok(())
}

/// The namespace and image name of a push: `repo_full_name` minus the leading
/// `namespace/` (the name may hold `/`), else `repository.name`.
fn repository_of<'d>(
    data: &'d EventData<'_>,
    at: &JsonPath<'_>,
) -> Result<(&'d str, &'d str), Problem> {
    let repository_path = at.key("repository");
    let repository = data.repository.required(&repository_path)?;
    let namespace_path = repository_path.key("namespace");
    let namespace = repository.namespace.required(&namespace_path)?;
    reference::check_namespace(namespace, &namespace_path)?;

    let full_name_path = repository_path.key("repo_full_name");
    let name_path = repository_path.key("name");
    let full_name = repository.repo_full_name.optional(&full_name_path)?;
    let from_full_name = full_name.and_then(|full| {
        full.strip_prefix(namespace.as_ref())
            .and_then(|rest| rest.strip_prefix('/'))
    });
    let (name, path) = match (from_full_name, full_name) {
        (Some(name), _) => (name, full_name_path),
        (None, Some(full)) => match repository.name.optional(&name_path)? {
            Some(name) => (name.as_ref(), name_path),
            None => {
                return Err(Problem::new(
                    &full_name_path,
                    format!(
                        "{} does not start with the namespace {}/ and repository.name is missing",
                        json::quote(full),
                        json::quote(namespace)
                    ),
                ));
            }
        },
        (None, None) => (repository.name.required(&name_path)?.as_ref(), name_path),
    };
    reference::check_name(namespace, name, &path)?;
    Ok((namespace, name))
}

fn non_empty<'v>(value: Option<&'v std::borrow::Cow<'_, str>>) -> Option<&'v str> {
    value
        .map(AsRef::as_ref)
        .filter(|value: &&str| !value.is_empty())
}
