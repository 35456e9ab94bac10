//! Properties of every payload parser over hostile input: arbitrary bytes,
//! arbitrary JSON, and mutations of the shared samples never panic, valid JSON
//! is never called invalid, and whatever comes out as an image is a valid one.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::Value;

use super::reference::{
    MAX_REPOSITORY_LEN, is_digest, is_valid_component, is_valid_name, is_valid_tag,
};
use super::*;
use crate::config::PayloadFormat;

const FORMATS: [PayloadFormat; 3] = [
    PayloadFormat::Harbor,
    PayloadFormat::Cloudevents,
    PayloadFormat::Distribution,
];

const SAMPLES: [&str; 6] = [
    "swr-ee-push-artifact.json",
    "harbor-push-minimal.json",
    "harbor-push-by-digest.json",
    "harbor-delete-artifact.json",
    "harbor-cloudevents-push.json",
    "distribution-notification.json",
];

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/../shared/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every image a parser returns must be one the store and HSS can take.
fn images_are_valid(parsed: &ParsedWebhook) -> Result<(), TestCaseError> {
    for pushed in &parsed.images {
        let image = &pushed.image;
        prop_assert!(is_valid_component(&image.namespace), "{image}");
        prop_assert!(is_valid_name(&image.name), "{image}");
        prop_assert!(is_valid_tag(&image.tag), "{image}");
        prop_assert!(!is_digest(&image.tag), "{image}");
        prop_assert!(image.namespace.len() + 1 + image.name.len() <= MAX_REPOSITORY_LEN);
        if let Some(digest) = &pushed.digest {
            prop_assert!(is_digest(digest), "{digest}");
        }
        if let Some(host) = &pushed.registry_host {
            prop_assert!(!host.is_empty() && !host.contains('/') && !host.contains(' '));
        }
    }
    Ok(())
}

/// Keys the parsers read, so arbitrary objects often reach deep code paths.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "type", "event_data", "resources", "repository", "namespace", "name",
            "repo_full_name", "tag", "digest", "resource_url", "id", "data", "events",
            "action", "target", "request", "host",
        ])
        .prop_map(str::to_string),
        1 => ".{0,8}",
    ]
}

/// Strings the parsers branch on, mixed with arbitrary text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "PUSH_ARTIFACT", "harbor.artifact.pushed", "push", "pull", "", "library",
            "team-a", "a/b", "v1.0", "sha256:abcd", "host.example:5000/a/b:c", "UPPER",
        ])
        .prop_map(str::to_string),
        1 => "[a-z0-9._/:-]{0,12}",
        1 => ".{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// JSON pointers to every node of `value`, the root included.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                pointers(item, format!("{at}/{index}"), out);
            }
        }
        Value::Object(entries) => {
            for (key, item) in entries {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                pointers(item, format!("{at}/{escaped}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// The headers of a binary-mode CloudEvents push: the body is its data.
fn binary_push_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-id", "prop-1"),
        ("ce-source", "/projects/1/webhook/policies/1"),
        ("ce-type", "harbor.artifact.pushed"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

/// Every way a body is read: each format structured, and as binary-mode CloudEvents data.
fn parse_all_ways(body: &[u8]) -> Vec<(String, Result<ParsedWebhook, PayloadError>)> {
    let mut results: Vec<_> = FORMATS
        .iter()
        .map(|format| {
            (
                format!("{format:?}"),
                parse(*format, &HeaderMap::new(), body),
            )
        })
        .collect();
    results.push((
        "binary-mode cloudevents".into(),
        parse(PayloadFormat::Cloudevents, &binary_push_headers(), body),
    ));
    results
}

fn parse_everywhere(body: &[u8]) -> Result<(), TestCaseError> {
    for (_, result) in parse_all_ways(body) {
        if let Ok(parsed) = result {
            images_are_valid(&parsed)?;
        }
    }
    Ok(())
}

fn parse_valid_json_everywhere(body: &[u8]) -> Result<(), TestCaseError> {
    for (format, result) in parse_all_ways(body) {
        match result {
            Ok(parsed) => images_are_valid(&parsed)?,
            Err(PayloadError::Shape { .. }) => {}
            Err(error @ PayloadError::Json(_)) => {
                prop_assert!(false, "{format} called valid JSON invalid: {error}")
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_everywhere(&body)?;
    }

    #[test]
    fn arbitrary_json_is_never_a_json_error(value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        parse_valid_json_everywhere(&body)?;
    }

    #[test]
    fn samples_with_one_node_replaced_never_panic(
        which in prop::sample::select(SAMPLES.to_vec()),
        target in any::<prop::sample::Index>(),
        replacement in json_value(),
    ) {
        let mut value: Value = serde_json::from_slice(&sample(which)).unwrap();
        let mut all = Vec::new();
        pointers(&value, String::new(), &mut all);
        let pointer = target.get(&all).clone();
        if let Some(node) = value.pointer_mut(&pointer) {
            *node = replacement;
        }
        parse_valid_json_everywhere(&serde_json::to_vec(&value).unwrap())?;
    }

    #[test]
    fn samples_with_bytes_changed_never_panic(
        which in prop::sample::select(SAMPLES.to_vec()),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut body = sample(which);
        for (at, byte, kind) in edits {
            let index = at.index(body.len() + 1);
            match kind {
                0 if index < body.len() => body[index] = byte,
                1 => body.insert(index, byte),
                _ if index < body.len() => { body.remove(index); }
                _ => {}
            }
        }
        parse_everywhere(&body)?;
    }

    #[test]
    fn valid_harbor_pushes_round_trip(
        namespace in "[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}",
        name in "[a-z0-9]{1,8}(__[a-z0-9]{1,4})?(/[a-z0-9]{1,8}(-{1,3}[a-z0-9]{1,4})?){0,3}",
        tags in prop::collection::vec("[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", 1..5),
    ) {
        let resources: Vec<Value> = tags
            .iter()
            .map(|tag| serde_json::json!({"tag": tag, "resource_url": format!("reg.example/{namespace}/{name}:{tag}")}))
            .collect();
        let body = serde_json::json!({
            "type": "PUSH_ARTIFACT",
            "event_data": {
                "resources": resources,
                "repository": {"namespace": namespace, "repo_full_name": format!("{namespace}/{name}")},
            },
        });
        let parsed = harbor::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        let expected: Vec<PushedImage> = tags
            .iter()
            .map(|tag| PushedImage {
                image: ImageRef::new(namespace.clone(), name.clone(), tag.clone()),
                digest: None,
                registry_host: Some("reg.example".into()),
            })
            .collect();
        prop_assert_eq!(parsed.images, expected);
        prop_assert!(parsed.ignored.is_empty());
    }
}

/// A digest as registries write them (sha256, sometimes sha512).
fn digest() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{64}".prop_map(|hex| format!("sha256:{hex}")),
        "[0-9a-f]{128}".prop_map(|hex| format!("sha512:{hex}")),
    ]
}

/// What a resource or target may say about its tag: nothing, an empty
/// string, a digest (Harbor's push by digest), or a real tag.
#[derive(Debug, Clone)]
enum TagField {
    Absent,
    Empty,
    Digest(String),
    Tag(String),
}

fn tag_field() -> impl Strategy<Value = TagField> {
    prop_oneof![
        Just(TagField::Absent),
        Just(TagField::Empty),
        digest().prop_map(TagField::Digest),
        "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}".prop_map(TagField::Tag),
    ]
}

impl TagField {
    fn write(&self, object: &mut serde_json::Map<String, Value>) {
        match self {
            TagField::Absent => {}
            TagField::Empty => {
                object.insert("tag".into(), Value::from(""));
            }
            TagField::Digest(value) | TagField::Tag(value) => {
                object.insert("tag".into(), Value::from(value.as_str()));
            }
        }
    }

    /// True when this resource names its manifest by digest alone.
    fn is_digest_only(&self, digest: Option<&String>) -> bool {
        match self {
            TagField::Digest(_) => true,
            TagField::Absent | TagField::Empty => digest.is_some(),
            TagField::Tag(_) => false,
        }
    }
}

/// Every digest-only resource comes out as a digest-only push, never as an
/// image tagged with a digest, and tagged ones keep their digest.
fn digest_only_pushes_are_kept_apart(
    parsed: &ParsedWebhook,
    resources: &[(TagField, Option<String>)],
) -> Result<(), TestCaseError> {
    images_are_valid(parsed)?;
    let expected_digests: Vec<&str> = resources
        .iter()
        .filter(|(tag, digest)| tag.is_digest_only(digest.as_ref()))
        .map(|(tag, digest)| match (tag, digest) {
            (_, Some(digest)) => digest.as_str(),
            (TagField::Digest(in_tag), None) => in_tag.as_str(),
            _ => unreachable!("digest-only without a digest"),
        })
        .collect();
    let digests: Vec<&str> = parsed
        .digest_only
        .iter()
        .map(|pushed| pushed.digest.as_str())
        .collect();
    prop_assert_eq!(digests, expected_digests);
    let expected_images: Vec<(&str, Option<&str>)> = resources
        .iter()
        .filter_map(|(tag, digest)| match tag {
            TagField::Tag(tag) => Some((tag.as_str(), digest.as_deref())),
            _ => None,
        })
        .collect();
    let images: Vec<(&str, Option<&str>)> = parsed
        .images
        .iter()
        .map(|pushed| (pushed.image.tag.as_str(), pushed.digest.as_deref()))
        .collect();
    prop_assert_eq!(images, expected_images);
    Ok(())
}

proptest! {
    #[test]
    fn harbor_digest_only_resources_never_become_images(
        resources in prop::collection::vec((tag_field(), prop::option::of(digest())), 1..6),
    ) {
        let json_resources: Vec<Value> = resources
            .iter()
            .map(|(tag, digest)| {
                let mut object = serde_json::Map::new();
                tag.write(&mut object);
                if let Some(digest) = digest {
                    object.insert("digest".into(), Value::from(digest.as_str()));
                }
                Value::Object(object)
            })
            .collect();
        let data = serde_json::json!({
            "resources": json_resources,
            "repository": {"namespace": "team-a", "repo_full_name": "team-a/payments/api"},
        });
        let harbor_body = serde_json::json!({"type": "PUSH_ARTIFACT", "event_data": data});
        let parsed = harbor::parse(&serde_json::to_vec(&harbor_body).unwrap()).unwrap();
        digest_only_pushes_are_kept_apart(&parsed, &resources)?;
        let cloudevent = serde_json::json!({"id": "e1", "type": "harbor.artifact.pushed", "data": data});
        let parsed = cloudevents::parse(&serde_json::to_vec(&cloudevent).unwrap()).unwrap();
        digest_only_pushes_are_kept_apart(&parsed, &resources)?;
    }

    #[test]
    fn distribution_targets_without_a_tag_never_become_images(
        targets in prop::collection::vec(
            (
                prop_oneof![
                    Just(TagField::Absent),
                    Just(TagField::Empty),
                    "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}".prop_map(TagField::Tag),
                ],
                prop::option::of(digest()),
            ),
            1..6,
        ),
    ) {
        let events: Vec<Value> = targets
            .iter()
            .map(|(tag, digest)| {
                let mut target = serde_json::Map::new();
                target.insert("repository".into(), Value::from("team-b/worker"));
                tag.write(&mut target);
                if let Some(digest) = digest {
                    target.insert("digest".into(), Value::from(digest.as_str()));
                }
                serde_json::json!({"action": "push", "target": target})
            })
            .collect();
        let body = serde_json::json!({"events": events});
        let parsed = distribution::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        digest_only_pushes_are_kept_apart(&parsed, &targets)?;
    }
}
