//! Tests of the payload formats: every shared sample, and each way a payload
//! can be ignorable, malformed or of the wrong shape.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use super::json::{JsonPath, ROOT, quote};
use super::reference::{is_digest, is_valid_component, is_valid_name, is_valid_tag};
use super::*;
use crate::config::PayloadFormat;

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/../shared/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn image(namespace: &str, name: &str, tag: &str, host: Option<&str>) -> PushedImage {
    PushedImage {
        image: ImageRef::new(namespace, name, tag),
        digest: None,
        registry_host: host.map(str::to_string),
    }
}

const DIGEST_9F: &str = "sha256:9f3d7a2c1b0e4d5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f";

fn with_digest(image: PushedImage, digest: &str) -> PushedImage {
    PushedImage {
        digest: Some(digest.to_string()),
        ..image
    }
}

fn digest_only(namespace: &str, name: &str, digest: &str, host: Option<&str>) -> PushedDigest {
    PushedDigest {
        namespace: namespace.to_string(),
        name: name.to_string(),
        digest: digest.to_string(),
        registry_host: host.map(str::to_string),
    }
}

fn ignored(reason: IgnoreReason, subject: &str) -> Ignored {
    Ignored {
        reason,
        subject: subject.to_string(),
    }
}

fn shape(format: &'static str, detail: &str) -> PayloadError {
    PayloadError::Shape {
        format,
        detail: detail.to_string(),
    }
}

fn harbor_push(resources: &str, repository: &str) -> Vec<u8> {
    format!(
        r#"{{"type":"PUSH_ARTIFACT","event_data":{{"resources":{resources},"repository":{repository}}}}}"#
    )
    .into_bytes()
}

const OPENJDK: &str = r#"{"name":"openjdk","namespace":"test","repo_full_name":"test/openjdk"}"#;

// ---------------------------------------------------------------- samples

#[test]
fn swr_ee_push_artifact_yields_both_tags_of_the_nested_repository() {
    let parsed = harbor::parse(&sample("swr-ee-push-artifact.json")).unwrap();
    let host = Some("ee-demo.swr.cn-north-4.myhuaweicloud.com");
    assert_eq!(
        parsed,
        ParsedWebhook {
            delivery_id: None,
            images: vec![
                with_digest(image("team-a", "payments/api", "v1.4.2", host), DIGEST_9F),
                with_digest(image("team-a", "payments/api", "latest", host), DIGEST_9F),
            ],
            digest_only: vec![],
            ignored: vec![],
        }
    );
}

#[test]
fn harbor_minimal_push_yields_one_image_without_host() {
    let parsed = harbor::parse(&sample("harbor-push-minimal.json")).unwrap();
    assert_eq!(
        parsed,
        ParsedWebhook {
            delivery_id: None,
            images: vec![image("test", "openjdk", "8.8", None)],
            digest_only: vec![],
            ignored: vec![],
        }
    );
}

#[test]
fn harbor_push_by_digest_is_a_digest_only_push() {
    let parsed = harbor::parse(&sample("harbor-push-by-digest.json")).unwrap();
    assert_eq!(
        parsed,
        ParsedWebhook {
            delivery_id: None,
            images: vec![],
            digest_only: vec![digest_only(
                "test",
                "openjdk",
                "sha256:1111111111111111111111111111111111111111111111111111111111111111",
                Some("ee-demo.swr.cn-north-4.myhuaweicloud.com"),
            )],
            ignored: vec![],
        }
    );
}

#[test]
fn harbor_delete_is_not_a_push() {
    let parsed = harbor::parse(&sample("harbor-delete-artifact.json")).unwrap();
    assert_eq!(
        parsed,
        ParsedWebhook {
            delivery_id: None,
            images: vec![],
            digest_only: vec![],
            ignored: vec![ignored(IgnoreReason::NotAPush, "DELETE_ARTIFACT")],
        }
    );
}

#[test]
fn cloudevents_push_yields_the_image_and_its_delivery_id() {
    let parsed = cloudevents::parse(&sample("harbor-cloudevents-push.json")).unwrap();
    assert_eq!(
        parsed,
        ParsedWebhook {
            delivery_id: Some("6f1c1f6e-0d7b-4c6e-9b8f-3a2d1c0b9a87".into()),
            images: vec![with_digest(
                image("library", "nginx", "2.0.1", Some("harbor.example.internal")),
                "sha256:3333333333333333333333333333333333333333333333333333333333333333",
            )],
            digest_only: vec![],
            ignored: vec![],
        }
    );
}

#[test]
fn distribution_notification_yields_only_the_tagged_push() {
    let parsed = distribution::parse(&sample("distribution-notification.json")).unwrap();
    assert_eq!(
        parsed,
        ParsedWebhook {
            delivery_id: None,
            images: vec![with_digest(
                image(
                    "team-b",
                    "worker",
                    "2026.11.28",
                    Some("registry.example.internal")
                ),
                "sha256:4444444444444444444444444444444444444444444444444444444444444444",
            )],
            digest_only: vec![digest_only(
                "team-b",
                "worker",
                "sha256:5555555555555555555555555555555555555555555555555555555555555555",
                None,
            )],
            ignored: vec![ignored(IgnoreReason::NotAPush, "pull team-b/worker")],
        }
    );
}

#[test]
fn dispatch_by_format_reaches_each_parser() {
    let swr = sample("swr-ee-push-artifact.json");
    assert_eq!(
        parse(PayloadFormat::Harbor, &HeaderMap::new(), &swr),
        harbor::parse(&swr)
    );
    let ce = sample("harbor-cloudevents-push.json");
    assert_eq!(
        parse(PayloadFormat::Cloudevents, &HeaderMap::new(), &ce),
        cloudevents::parse(&ce)
    );
    let dist = sample("distribution-notification.json");
    assert_eq!(
        parse(PayloadFormat::Distribution, &HeaderMap::new(), &dist),
        distribution::parse(&dist)
    );
    // A sample in the wrong format is a shape error, not a panic or a silent 0.
    assert_eq!(
        parse(PayloadFormat::Distribution, &HeaderMap::new(), &swr),
        Err(shape("distribution", "events: missing; expected an array"))
    );
    assert_eq!(
        parse(PayloadFormat::Harbor, &HeaderMap::new(), &dist),
        Err(shape("harbor", "type: missing; expected a string"))
    );
}

// ------------------------------------------------------------ JSON errors

#[test]
fn bodies_that_are_not_json_are_json_errors() {
    for body in [
        &b""[..],
        b"{",
        b"{\"type\":",
        b"{} trailing",
        b"\xff\xfe",
        b"{\"type\":\"\xff\"}",
        b"{\"unread\":\"\xc3\x28\"}",
        b"not json",
    ] {
        for format in [
            PayloadFormat::Harbor,
            PayloadFormat::Cloudevents,
            PayloadFormat::Distribution,
        ] {
            assert!(
                matches!(
                    parse(format, &HeaderMap::new(), body),
                    Err(PayloadError::Json(_))
                ),
                "{format:?} {body:?}: {:?}",
                parse(format, &HeaderMap::new(), body)
            );
        }
    }
}

#[test]
fn deep_nesting_is_handled_without_overflowing_the_stack() {
    let depth = 100_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    // Where an object is expected, the nest is skipped iteratively and named.
    let body = format!(r#"{{"type":"PUSH_ARTIFACT","event_data":{nested}}}"#);
    assert_eq!(
        harbor::parse(body.as_bytes()),
        Err(shape(
            "harbor",
            "event_data: expected an object, found an array"
        ))
    );
    // Under a field no parser reads, it is skipped too.
    let body = format!(
        r#"{{"type":"PUSH_ARTIFACT","extra":{nested},"event_data":{{"resources":[{{"tag":"v1"}}],"repository":{OPENJDK}}}}}"#
    );
    assert_eq!(
        harbor::parse(body.as_bytes()).unwrap().images,
        vec![image("test", "openjdk", "v1", None)]
    );
    // Unbalanced, it is a JSON error.
    let body = format!(r#"{{"events":{}}}"#, "[".repeat(depth));
    assert!(matches!(
        distribution::parse(body.as_bytes()),
        Err(PayloadError::Json(_))
    ));
}

#[test]
fn json_of_the_wrong_kind_at_the_root_is_a_shape_error() {
    assert_eq!(
        harbor::parse(b"[]"),
        Err(shape(
            "harbor",
            "(body): expected an object, found an array"
        ))
    );
    assert_eq!(
        cloudevents::parse(b"null"),
        Err(shape(
            "cloudevents",
            "(body): expected an object, found null"
        ))
    );
    assert_eq!(
        distribution::parse(b" 42 "),
        Err(shape(
            "distribution",
            "(body): expected an object, found a number"
        ))
    );
}

#[test]
fn duplicated_keys_are_a_shape_error() {
    let result = harbor::parse(br#"{"type":"PUSH_ARTIFACT","type":"DELETE_ARTIFACT"}"#);
    assert!(
        matches!(&result, Err(PayloadError::Shape { format: "harbor", detail }) if detail.contains("duplicate field `type`")),
        "{result:?}"
    );
}

// ----------------------------------------------------------------- harbor

#[test]
fn harbor_wrong_shapes_name_the_json_path() {
    let cases: [(&[u8], &str); 12] = [
        (br#"{"type":5}"#, "type: expected a string, found a number"),
        (
            br#"{"type":"PUSH_ARTIFACT"}"#,
            "event_data: missing; expected an object",
        ),
        (
            br#"{"type":"PUSH_ARTIFACT","event_data":[]}"#,
            "event_data: expected an object, found an array",
        ),
        (
            &harbor_push("{}", OPENJDK),
            "event_data.resources: expected an array, found an object",
        ),
        (
            br#"{"type":"PUSH_ARTIFACT","event_data":{"resources":[]}}"#,
            "event_data.repository: missing; expected an object",
        ),
        (
            &harbor_push(r#"[{"tag":"a"},"b"]"#, OPENJDK),
            "event_data.resources[1]: expected an object, found a string",
        ),
        (
            &harbor_push(r#"[{"tag":"a"},{"tag":7}]"#, OPENJDK),
            "event_data.resources[1].tag: expected a string, found a number",
        ),
        (
            &harbor_push(r#"[{"tag":"a","digest":true}]"#, OPENJDK),
            "event_data.resources[0].digest: expected a string, found a boolean",
        ),
        (
            &harbor_push(r#"[{"tag":"a","resource_url":{}}]"#, OPENJDK),
            "event_data.resources[0].resource_url: expected a string, found an object",
        ),
        (
            &harbor_push(r#"[{"tag":"a"}]"#, r#"{"name":"openjdk"}"#),
            "event_data.repository.namespace: missing; expected a string",
        ),
        (
            &harbor_push(r#"[{"tag":"a"}]"#, r#"{"namespace":"test"}"#),
            "event_data.repository.name: missing; expected a string",
        ),
        (
            &harbor_push(
                r#"[{"tag":"a"}]"#,
                r#"{"namespace":"test","repo_full_name":"other/openjdk"}"#,
            ),
            r#"event_data.repository.repo_full_name: "other/openjdk" does not start with the namespace "test"/ and repository.name is missing"#,
        ),
    ];
    for (body, detail) in cases {
        assert_eq!(
            harbor::parse(body),
            Err(shape("harbor", detail)),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn harbor_values_that_cannot_be_images_are_shape_errors() {
    let cases = [
        (
            harbor_push(r#"[{"tag":"v1"},{"tag":"bad tag"}]"#, OPENJDK),
            r#"event_data.resources[1].tag: "bad tag" is not a valid tag: 1 to 128 of A-Z a-z 0-9 _ . -, not starting with '.' or '-'"#,
        ),
        (
            harbor_push(r#"[{"tag":".hidden"}]"#, OPENJDK),
            r#"event_data.resources[0].tag: ".hidden" is not a valid tag: 1 to 128 of A-Z a-z 0-9 _ . -, not starting with '.' or '-'"#,
        ),
        (
            harbor_push(
                r#"[{"tag":"v1"}]"#,
                r#"{"namespace":"Test","repo_full_name":"Test/openjdk"}"#,
            ),
            r#"event_data.repository.namespace: "Test" is not a valid namespace: lowercase letters and digits, separated by single '.', '_', '__' or runs of '-'"#,
        ),
        (
            harbor_push(
                r#"[{"tag":"v1"}]"#,
                r#"{"namespace":"test","repo_full_name":"test/Open..jdk"}"#,
            ),
            r#"event_data.repository.repo_full_name: "Open..jdk" is not a valid image name: '/'-separated components of lowercase letters and digits, separated by single '.', '_', '__' or runs of '-'"#,
        ),
        (
            harbor_push(
                r#"[{"tag":"v1"}]"#,
                r#"{"namespace":"test","repo_full_name":"test/"}"#,
            ),
            r#"event_data.repository.repo_full_name: "" is not a valid image name: '/'-separated components of lowercase letters and digits, separated by single '.', '_', '__' or runs of '-'"#,
        ),
        (
            harbor_push(
                r#"[{"tag":"v1","resource_url":"bad host/test/openjdk:v1"}]"#,
                OPENJDK,
            ),
            r#"event_data.resources[0].resource_url: "bad host" is not a valid registry host"#,
        ),
    ];
    for (body, detail) in cases {
        assert_eq!(
            harbor::parse(&body),
            Err(shape("harbor", detail)),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn harbor_overlong_names_and_tags_are_refused_at_the_limit() {
    let tag_128 = "t".repeat(128);
    let parsed = harbor::parse(&harbor_push(
        &format!(r#"[{{"tag":"{tag_128}"}}]"#),
        OPENJDK,
    ))
    .unwrap();
    assert_eq!(
        parsed.images,
        vec![image("test", "openjdk", &tag_128, None)]
    );
    let tag_129 = "t".repeat(129);
    assert!(
        harbor::parse(&harbor_push(
            &format!(r#"[{{"tag":"{tag_129}"}}]"#),
            OPENJDK
        ))
        .is_err()
    );

    // "test/" + name: 255 characters in all is the most Docker allows.
    let name_250 = "n".repeat(250);
    let repository =
        |name: &str| format!(r#"{{"namespace":"test","repo_full_name":"test/{name}"}}"#);
    assert!(harbor::parse(&harbor_push(r#"[{"tag":"v1"}]"#, &repository(&name_250))).is_ok());
    let name_251 = "n".repeat(251);
    assert_eq!(
        harbor::parse(&harbor_push(r#"[{"tag":"v1"}]"#, &repository(&name_251))),
        Err(shape(
            "harbor",
            "event_data.repository.repo_full_name: namespace/name is 256 characters long; at most 255 are allowed"
        ))
    );
}

#[test]
fn harbor_resources_without_a_usable_tag_are_digest_only_or_ignored() {
    let parsed = harbor::parse(&harbor_push(
        r#"[{"tag":"v1"},{"digest":"sha256:abcd"},{"tag":"","digest":"sha256:ef01"},{},{"tag":null},{"tag":"sha512:0a0b"},{"tag":"sha256:aa","digest":"sha256:bb"}]"#,
        OPENJDK,
    ))
    .unwrap();
    assert_eq!(parsed.images, vec![image("test", "openjdk", "v1", None)]);
    assert_eq!(
        parsed.digest_only,
        vec![
            digest_only("test", "openjdk", "sha256:abcd", None),
            digest_only("test", "openjdk", "sha256:ef01", None),
            digest_only("test", "openjdk", "sha512:0a0b", None),
            // The resource's own digest wins over the one Harbor wrote in `tag`.
            digest_only("test", "openjdk", "sha256:bb", None),
        ]
    );
    assert_eq!(
        parsed.ignored,
        vec![
            ignored(IgnoreReason::Untagged, "test/openjdk"),
            ignored(IgnoreReason::Untagged, "test/openjdk"),
        ]
    );
}

#[test]
fn a_digest_that_is_not_one_is_a_precise_error() {
    assert_eq!(
        harbor::parse(&harbor_push(
            r#"[{"tag":"v1","digest":"md5 abc"}]"#,
            OPENJDK
        )),
        Err(shape(
            "harbor",
            r#"event_data.resources[0].digest: "md5 abc" is not a valid digest: algorithm:encoded, e.g. sha256: and 64 hex digits"#
        ))
    );
    assert_eq!(
        distribution::parse(
            br#"{"events":[{"action":"push","target":{"repository":"a/b","digest":"nope"}}]}"#
        ),
        Err(shape(
            "distribution",
            r#"events[0].target.digest: "nope" is not a valid digest: algorithm:encoded, e.g. sha256: and 64 hex digits"#
        ))
    );
}

#[test]
fn harbor_image_name_comes_from_repo_full_name_then_name() {
    // repo_full_name wins and keeps nested paths.
    let parsed = harbor::parse(&harbor_push(
        r#"[{"tag":"v1"}]"#,
        r#"{"namespace":"ns","name":"ignored","repo_full_name":"ns/a/b/c"}"#,
    ))
    .unwrap();
    assert_eq!(parsed.images, vec![image("ns", "a/b/c", "v1", None)]);
    // Without it, or when it does not start with the namespace: repository.name.
    for repository in [
        r#"{"namespace":"ns","name":"a/b"}"#,
        r#"{"namespace":"ns","name":"a/b","repo_full_name":"nsx/a/b"}"#,
        r#"{"namespace":"ns","name":"a/b","repo_full_name":null}"#,
    ] {
        let parsed = harbor::parse(&harbor_push(r#"[{"tag":"v1"}]"#, repository)).unwrap();
        assert_eq!(
            parsed.images,
            vec![image("ns", "a/b", "v1", None)],
            "{repository}"
        );
    }
}

#[test]
fn harbor_registry_host_is_the_host_of_resource_url() {
    let parsed = harbor::parse(&harbor_push(
        r#"[{"tag":"a","resource_url":"https://reg.example:5000/test/openjdk:a"},{"tag":"b","resource_url":"reg.example"},{"tag":"c","resource_url":""},{"tag":"d","resource_url":"/test/openjdk:d"}]"#,
        OPENJDK,
    ))
    .unwrap();
    assert_eq!(
        parsed.images,
        vec![
            image("test", "openjdk", "a", Some("reg.example:5000")),
            image("test", "openjdk", "b", Some("reg.example")),
            image("test", "openjdk", "c", None),
            image("test", "openjdk", "d", None),
        ]
    );
}

#[test]
fn harbor_escaped_strings_and_unknown_fields_are_read() {
    let parsed = harbor::parse(
        br#"{"type":"PUSH_\u0041RTIFACT","extra":{"deep":[1,2,{"x":null}]},"event_data":{"custom_attributes":{},"resources":[{"tag":"v1\u002e0","scan_overview":{}}],"repository":{"namespace":"t\u0065st","repo_full_name":"test/openjdk"}}}"#,
    )
    .unwrap();
    assert_eq!(parsed.images, vec![image("test", "openjdk", "v1.0", None)]);
}

#[test]
fn harbor_other_events_are_ignored_whatever_their_data() {
    for body in [
        &br#"{"type":"SCANNING_COMPLETED","event_data":{"resources":[{"scan_overview":{}}]}}"#[..],
        br#"{"type":"DELETE_ARTIFACT","event_data":5}"#,
        br#"{"type":"REPLICATION"}"#,
        br#"{"type":"push_artifact","event_data":{"resources":[{"tag":"x"}]}}"#,
    ] {
        let parsed = harbor::parse(body).unwrap();
        assert!(parsed.images.is_empty());
        assert_eq!(parsed.ignored.len(), 1);
        assert_eq!(parsed.ignored[0].reason, IgnoreReason::NotAPush);
    }
}

#[test]
fn harbor_push_with_no_resources_yields_nothing() {
    assert_eq!(
        harbor::parse(&harbor_push("[]", OPENJDK)),
        Ok(ParsedWebhook::default())
    );
}

/// Harbor 1.x webhook body (`pushImage`): the same shape as `PUSH_ARTIFACT`.
const HARBOR_1_PUSH_IMAGE: &str = r#"{
  "type": "pushImage",
  "occur_at": 1586922308,
  "operator": "admin",
  "event_data": {
    "resources": [
      {"digest": "sha256:457f4aa83fc9a6663ab9d1b0a6e2dce25a12a943ed5bf2c1747c58d48bbb4917",
       "tag": "v1.0.0",
       "resource_url": "harbor.example.internal/library/nginx:v1.0.0"}
    ],
    "repository": {"date_created": 1586922308, "name": "nginx", "namespace": "library",
                   "repo_full_name": "library/nginx", "repo_type": "private"}
  }
}"#;

#[test]
fn harbor_1_push_image_is_a_push_like_push_artifact() {
    let parsed = harbor::parse(HARBOR_1_PUSH_IMAGE.as_bytes()).unwrap();
    assert_eq!(
        parsed,
        ParsedWebhook {
            delivery_id: None,
            images: vec![with_digest(
                image(
                    "library",
                    "nginx",
                    "v1.0.0",
                    Some("harbor.example.internal")
                ),
                "sha256:457f4aa83fc9a6663ab9d1b0a6e2dce25a12a943ed5bf2c1747c58d48bbb4917"
            )],
            digest_only: vec![],
            ignored: vec![],
        }
    );
    // Other Harbor 1.x events are not pushes.
    for other in ["pullImage", "deleteImage", "scanningCompleted", "pushimage"] {
        let body = HARBOR_1_PUSH_IMAGE.replace("\"pushImage\"", &format!("\"{other}\""));
        assert_eq!(
            harbor::parse(body.as_bytes()).unwrap().ignored,
            vec![ignored(IgnoreReason::NotAPush, other)],
            "{other}"
        );
    }
}

#[test]
fn every_resource_of_a_multi_resource_push_is_read() {
    let parsed = harbor::parse(&harbor_push(
        r#"[
            {"tag":"v1","resource_url":"ee.example/test/openjdk:v1"},
            {"tag":"","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222"},
            {"tag":"v2","resource_url":"ee.example/test/openjdk:v2"},
            {},
            {"tag":"latest","resource_url":"ee.example/test/openjdk:latest"}
        ]"#,
        OPENJDK,
    ))
    .unwrap();
    let host = Some("ee.example");
    assert_eq!(
        parsed.images,
        vec![
            image("test", "openjdk", "v1", host),
            image("test", "openjdk", "v2", host),
            image("test", "openjdk", "latest", host),
        ]
    );
    assert_eq!(
        parsed.digest_only,
        vec![digest_only(
            "test",
            "openjdk",
            "sha256:2222222222222222222222222222222222222222222222222222222222222222",
            None
        )]
    );
    assert_eq!(
        parsed.ignored,
        vec![ignored(IgnoreReason::Untagged, "test/openjdk")]
    );
    // A bad entry anywhere refuses the whole push, naming the entry.
    assert_eq!(
        harbor::parse(&harbor_push(
            r#"[{"tag":"v1"},{"tag":"v2"},{"tag":["v3"]}]"#,
            OPENJDK
        )),
        Err(shape(
            "harbor",
            "event_data.resources[2].tag: expected a string, found an array"
        ))
    );
}

// ------------------------------------------------------------ cloudevents

#[test]
fn cloudevents_need_a_non_empty_id_and_a_type() {
    assert_eq!(
        cloudevents::parse(br#"{"type":"harbor.artifact.pushed"}"#),
        Err(shape("cloudevents", "id: missing; expected a string"))
    );
    assert_eq!(
        cloudevents::parse(br#"{"id":"","type":"harbor.artifact.pushed"}"#),
        Err(shape(
            "cloudevents",
            "id: must not be empty (CloudEvents requires an id)"
        ))
    );
    assert_eq!(
        cloudevents::parse(br#"{"id":"e1"}"#),
        Err(shape("cloudevents", "type: missing; expected a string"))
    );
    assert_eq!(
        cloudevents::parse(br#"{"id":"e1","type":"harbor.artifact.pushed"}"#),
        Err(shape("cloudevents", "data: missing; expected an object"))
    );
}

#[test]
fn cloudevents_paths_are_under_data() {
    assert_eq!(
        cloudevents::parse(
            br#"{"id":"e1","type":"harbor.artifact.pushed","data":{"resources":[{"tag":"ok"},{"tag":"no way"}],"repository":{"namespace":"library","repo_full_name":"library/nginx"}}}"#
        ),
        Err(shape(
            "cloudevents",
            r#"data.resources[1].tag: "no way" is not a valid tag: 1 to 128 of A-Z a-z 0-9 _ . -, not starting with '.' or '-'"#
        ))
    );
}

#[test]
fn cloudevents_other_types_are_ignored_but_keep_their_id() {
    assert_eq!(
        cloudevents::parse(br#"{"id":"e2","type":"harbor.artifact.deleted","data":[]}"#),
        Ok(ParsedWebhook {
            delivery_id: Some("e2".into()),
            images: vec![],
            digest_only: vec![],
            ignored: vec![ignored(IgnoreReason::NotAPush, "harbor.artifact.deleted")],
        })
    );
}

/// Headers of a binary-mode CloudEvent: `(name, value)` pairs.
fn ce_headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

const BINARY_PUSH: [(&str, &str); 5] = [
    ("content-type", "application/json"),
    ("ce-specversion", "1.0"),
    ("ce-id", "6f1c1f6e-0d7b-4c6e-9b8f-3a2d1c0b9a87"),
    ("ce-source", "/projects/3/webhook/policies/12"),
    ("ce-type", "harbor.artifact.pushed"),
];

/// The `data` of the structured sample: what a binary-mode body carries.
fn sample_data() -> Vec<u8> {
    let event: serde_json::Value =
        serde_json::from_slice(&sample("harbor-cloudevents-push.json")).unwrap();
    serde_json::to_vec(&event["data"]).unwrap()
}

#[test]
fn binary_mode_cloudevents_read_like_the_structured_sample() {
    let structured = cloudevents::parse(&sample("harbor-cloudevents-push.json")).unwrap();
    let binary = parse(
        PayloadFormat::Cloudevents,
        &ce_headers(&BINARY_PUSH),
        &sample_data(),
    )
    .unwrap();
    assert_eq!(binary, structured);
    assert_eq!(
        binary.delivery_id.as_deref(),
        Some("6f1c1f6e-0d7b-4c6e-9b8f-3a2d1c0b9a87")
    );
    assert_eq!(binary.images.len(), 1);
}

#[test]
fn binary_mode_attributes_are_percent_decoded() {
    let mut pairs = BINARY_PUSH;
    pairs[2] = ("ce-id", "delivery%20one%2F%C3%A9");
    let parsed = parse(
        PayloadFormat::Cloudevents,
        &ce_headers(&pairs),
        &sample_data(),
    )
    .unwrap();
    assert_eq!(parsed.delivery_id.as_deref(), Some("delivery one/é"));
}

#[test]
fn structured_content_type_wins_over_ce_headers() {
    // The binding: application/cloudevents+json is structured mode, whatever the headers say.
    let mut pairs = BINARY_PUSH;
    pairs[0] = (
        "content-type",
        "application/cloudevents+json; charset=utf-8",
    );
    let body = sample("harbor-cloudevents-push.json");
    assert_eq!(
        parse(PayloadFormat::Cloudevents, &ce_headers(&pairs), &body),
        cloudevents::parse(&body)
    );
    // Without ce-specversion a plain JSON body is structured too.
    assert_eq!(
        parse(
            PayloadFormat::Cloudevents,
            &ce_headers(&[("content-type", "application/json")]),
            &body
        ),
        cloudevents::parse(&body)
    );
}

#[test]
fn binary_mode_other_event_types_are_not_pushes_whatever_their_data() {
    let mut pairs = BINARY_PUSH;
    pairs[4] = ("ce-type", "harbor.artifact.deleted");
    let parsed = parse(PayloadFormat::Cloudevents, &ce_headers(&pairs), b"[1,2]").unwrap();
    assert_eq!(
        parsed.ignored,
        vec![ignored(IgnoreReason::NotAPush, "harbor.artifact.deleted")]
    );
    assert!(parsed.images.is_empty());
}

#[test]
fn binary_mode_needs_every_required_attribute_once() {
    for (missing, (name, _)) in BINARY_PUSH.iter().enumerate().skip(1) {
        let pairs: Vec<(&'static str, &'static str)> = BINARY_PUSH
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != missing)
            .map(|(_, pair)| *pair)
            .collect();
        if *name == "ce-specversion" {
            // Without it the request is not binary mode at all: structured, and the data is no envelope.
            assert_eq!(
                parse(
                    PayloadFormat::Cloudevents,
                    &ce_headers(&pairs),
                    &sample_data()
                ),
                Err(shape("cloudevents", "id: missing; expected a string"))
            );
            continue;
        }
        assert_eq!(
            parse(
                PayloadFormat::Cloudevents,
                &ce_headers(&pairs),
                &sample_data()
            ),
            Err(shape(
                "cloudevents",
                &format!(
                    "header `{name}`: missing; a binary-mode CloudEvent carries ce-id, ce-source, ce-specversion and ce-type headers"
                )
            )),
            "{name}"
        );
    }
    let mut twice: Vec<_> = BINARY_PUSH.to_vec();
    twice.push(("ce-id", "another"));
    assert_eq!(
        parse(
            PayloadFormat::Cloudevents,
            &ce_headers(&twice),
            &sample_data()
        ),
        Err(shape("cloudevents", "header `ce-id`: sent more than once"))
    );
    let mut empty = BINARY_PUSH;
    empty[3] = ("ce-source", "");
    assert_eq!(
        parse(
            PayloadFormat::Cloudevents,
            &ce_headers(&empty),
            &sample_data()
        ),
        Err(shape(
            "cloudevents",
            "header `ce-source`: must not be empty"
        ))
    );
    let mut old = BINARY_PUSH;
    old[1] = ("ce-specversion", "0.3");
    assert_eq!(
        parse(
            PayloadFormat::Cloudevents,
            &ce_headers(&old),
            &sample_data()
        ),
        Err(shape(
            "cloudevents",
            "header `ce-specversion`: \"0.3\" is not a CloudEvents version this bridge reads; send 1.0"
        ))
    );
    let mut broken = BINARY_PUSH;
    broken[2] = ("ce-id", "bad%zz");
    assert_eq!(
        parse(
            PayloadFormat::Cloudevents,
            &ce_headers(&broken),
            &sample_data()
        ),
        Err(shape(
            "cloudevents",
            "header `ce-id`: is not percent-encoded UTF-8"
        ))
    );
}

#[test]
fn binary_mode_data_errors_name_the_path_inside_the_data() {
    assert_eq!(
        parse(
            PayloadFormat::Cloudevents,
            &ce_headers(&BINARY_PUSH),
            br#"{"repository":{"namespace":"library","name":"nginx"},"resources":[{"tag":1}]}"#
        ),
        Err(shape(
            "cloudevents",
            "resources[0].tag: expected a string, found a number"
        ))
    );
    assert!(matches!(
        parse(PayloadFormat::Cloudevents, &ce_headers(&BINARY_PUSH), b"{"),
        Err(PayloadError::Json(_))
    ));
}

// ----------------------------------------------------------- distribution

fn distribution_push(repository: &str, extra: &str) -> Vec<u8> {
    format!(r#"{{"events":[{{"action":"push","target":{{"repository":"{repository}"{extra}}}}}]}}"#)
        .into_bytes()
}

#[test]
fn distribution_repository_splits_into_namespace_and_name() {
    for (repository, namespace, name) in [
        ("nginx", "library", "nginx"),
        ("team/app", "team", "app"),
        ("a/b/c", "a", "b/c"),
    ] {
        let parsed =
            distribution::parse(&distribution_push(repository, r#","tag":"1.0""#)).unwrap();
        assert_eq!(
            parsed.images,
            vec![image(namespace, name, "1.0", None)],
            "{repository}"
        );
    }
}

#[test]
fn distribution_wrong_shapes_name_the_json_path() {
    let cases: [(Vec<u8>, &str); 9] = [
        (b"{}".to_vec(), "events: missing; expected an array"),
        (br#"{"events":{}}"#.to_vec(), "events: expected an array, found an object"),
        (br#"{"events":[7]}"#.to_vec(), "events[0]: expected an object, found a number"),
        (br#"{"events":[{"target":{}}]}"#.to_vec(), "events[0].action: missing; expected a string"),
        (br#"{"events":[{"action":"push"}]}"#.to_vec(), "events[0].target: missing; expected an object"),
        (
            br#"{"events":[{"action":"pull"},{"action":"push","target":{"tag":"x"}}]}"#.to_vec(),
            "events[1].target.repository: missing; expected a string",
        ),
        (
            distribution_push("Team/app", r#","tag":"1""#),
            r#"events[0].target.repository: "Team" is not a valid namespace: lowercase letters and digits, separated by single '.', '_', '__' or runs of '-'"#,
        ),
        (
            distribution_push("team/app", r#","tag":"-1""#),
            r#"events[0].target.tag: "-1" is not a valid tag: 1 to 128 of A-Z a-z 0-9 _ . -, not starting with '.' or '-'"#,
        ),
        (
            br#"{"events":[{"action":"push","target":{"repository":"a/b","tag":"1"},"request":{"host":"a b"}}]}"#.to_vec(),
            r#"events[0].request.host: "a b" is not a valid registry host"#,
        ),
    ];
    for (body, detail) in cases {
        assert_eq!(
            distribution::parse(&body),
            Err(shape("distribution", detail)),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn distribution_non_push_events_are_ignored_even_when_odd() {
    let parsed = distribution::parse(
        br#"{"events":[{"action":"pull","target":"weird"},{"action":"delete","target":{"repository":"a/b"}},{"action":"mount"}]}"#,
    )
    .unwrap();
    assert!(parsed.images.is_empty());
    assert_eq!(
        parsed.ignored,
        vec![
            ignored(IgnoreReason::NotAPush, "pull"),
            ignored(IgnoreReason::NotAPush, "delete a/b"),
            ignored(IgnoreReason::NotAPush, "mount"),
        ]
    );
}

#[test]
fn distribution_push_without_tag_or_digest_is_untagged() {
    let parsed = distribution::parse(&distribution_push("a/b", r#","tag":"""#)).unwrap();
    assert_eq!(parsed.ignored, vec![ignored(IgnoreReason::Untagged, "a/b")]);
    assert_eq!(
        distribution::parse(br#"{"events":[]}"#),
        Ok(ParsedWebhook::default())
    );
}

// ------------------------------------------------------------- grammar

#[test]
fn name_components_follow_dockers_grammar() {
    for valid in [
        "a",
        "0",
        "abc",
        "a.b",
        "a_b",
        "a__b",
        "a-b",
        "a---b",
        "a1.b2-c3__d4",
        "ubuntu",
    ] {
        assert!(is_valid_component(valid), "{valid}");
    }
    for invalid in [
        "", "A", "a..b", "a___b", "a_.b", "._a", "a.", "-a", "a-", "a b", "a/b", "é", "a:b",
    ] {
        assert!(!is_valid_component(invalid), "{invalid}");
    }
    assert!(is_valid_name("a/b/c"));
    assert!(!is_valid_name("a//b"));
    assert!(!is_valid_name("/a"));
}

#[test]
fn tags_follow_dockers_grammar() {
    for valid in ["latest", "v1.4.2", "_x", "X", "1", "a-b_c.D"] {
        assert!(is_valid_tag(valid), "{valid}");
    }
    for invalid in ["", ".a", "-a", "a b", "a:b", "a/b", "ä"] {
        assert!(!is_valid_tag(invalid), "{invalid}");
    }
    assert!(is_valid_tag(&"a".repeat(128)));
    assert!(!is_valid_tag(&"a".repeat(129)));
}

#[test]
fn digests_are_recognised() {
    for digest in [
        "sha256:abc",
        "sha512:0A=_-",
        "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
    ] {
        assert!(is_digest(digest), "{digest}");
    }
    for not in [
        "sha256",
        "sha256:",
        ":abc",
        "SHA256:abc",
        "sha256:ab/c",
        "latest",
    ] {
        assert!(!is_digest(not), "{not}");
    }
}

#[test]
fn quoted_values_are_escaped_and_cut_on_a_char_boundary() {
    assert_eq!(quote("a\"b\n"), r#""a\"b\n""#);
    let long = "é".repeat(100);
    assert_eq!(quote(&long), format!("{:?}…", "é".repeat(64)));
}

#[test]
fn json_paths_render_like_jq_without_the_dot() {
    let data = ROOT.key("event_data");
    let resources = data.key("resources");
    let third = resources.index(2);
    assert_eq!(third.key("tag").to_string(), "event_data.resources[2].tag");
    assert_eq!(ROOT.to_string(), "(body)");
    assert_eq!(JsonPath::Root.index(0).to_string(), "[0]");
}

#[test]
fn payload_errors_read_well() {
    let error = harbor::parse(&harbor_push(r#"[{"tag":7}]"#, OPENJDK)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "payload does not have the harbor shape: event_data.resources[0].tag: expected a string, found a number"
    );
}
