//! Tests of the verification schemes: known-answer vectors from independent
//! implementations, each failure mode, and properties over arbitrary input.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::*;
use crate::config::raw::RawVerify;
use crate::config::verify::standard_webhooks_key;
use crate::config::{ConfigError, VerifyScheme, VerifySettings};
use crate::secret::Secret;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/vectors/standard-webhooks.json"
);

/// The worked example of the Standard Webhooks specification, read from the
/// shared vector file.
struct Vector {
    secret: String,
    id: String,
    timestamp: String,
    body: String,
    signature: String,
}

fn vector() -> Vector {
    let text = std::fs::read_to_string(VECTORS).expect("shared vector file");
    let json: serde_json::Value = serde_json::from_str(&text).expect("vector JSON");
    let case = &json["cases"][0];
    let field = |name: &str| case[name].as_str().expect(name).to_string();
    Vector {
        secret: field("secret"),
        id: field("webhook-id"),
        timestamp: field("webhook-timestamp"),
        body: field("body"),
        signature: field("webhook-signature"),
    }
}

/// A `[sources.verify]` table as the file writes it.
fn settings(scheme: VerifyScheme, secrets: &[&str]) -> RawVerify {
    RawVerify {
        scheme,
        header: None,
        secrets: secrets.iter().map(|s| Secret::literal(*s)).collect(),
        tolerance_s: 300,
    }
}

/// The table parsed as config parses it; the error as `key: reason`.
fn parsed(raw: &RawVerify) -> Result<VerifySettings, String> {
    VerifySettings::parse(raw).map_err(|error| match error {
        ConfigError::Invalid { key, reason } => format!("{key}: {reason}"),
        other => other.to_string(),
    })
}

fn typed(raw: &RawVerify) -> VerifySettings {
    parsed(raw).expect("valid settings")
}

/// A verifier as a source gets one: parsed settings, then built.
fn compile(raw: &RawVerify) -> Result<Verifier, String> {
    parsed(raw).map(|settings| Verifier::new(&settings))
}

fn verifier(scheme: VerifyScheme, secrets: &[&str]) -> Verifier {
    compile(&settings(scheme, secrets)).expect("valid settings")
}

fn headers<K: AsRef<str>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::try_from(name.as_ref()).expect("header name"),
            HeaderValue::from_bytes(value.as_ref()).expect("header value"),
        );
    }
    map
}

/// `None` when a value cannot be sent as an HTTP header at all.
fn try_headers(pairs: &[(&str, &[u8])]) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::try_from(*name).ok()?,
            HeaderValue::from_bytes(value).ok()?,
        );
    }
    Some(map)
}

fn vector_headers(v: &Vector) -> HeaderMap {
    headers(&[
        (WEBHOOK_ID, v.id.as_bytes()),
        (WEBHOOK_TIMESTAMP, v.timestamp.as_bytes()),
        (WEBHOOK_SIGNATURE, v.signature.as_bytes()),
    ])
}

fn vector_now(v: &Vector) -> i64 {
    v.timestamp.parse().expect("vector timestamp")
}

// ------------------------------------------------------- before the body

#[test]
fn only_the_token_scheme_decides_before_the_body() {
    let token = verifier(VerifyScheme::Token, &["t"]);
    assert_eq!(
        token.verify_before_body(&headers(&[("authorization", "t")]), 0),
        Ok(Some(Verified { delivery_id: None }))
    );
    assert_eq!(
        token
            .verify_before_body(&headers(&[("authorization", "x")]), 0)
            .map_err(|e| e.code()),
        Err("bad_token")
    );
    let hmac = verifier(VerifyScheme::HmacSha256, &["k"]);
    let well_formed = format!("sha256={}", "0".repeat(64));
    assert_eq!(
        hmac.verify_before_body(&headers(&[("x-hub-signature-256", well_formed)]), 0),
        Ok(None)
    );
    assert_eq!(
        hmac.verify_before_body(&HeaderMap::new(), 0)
            .map_err(|e| e.code()),
        Err("missing_header")
    );
    let v = vector();
    let standard = verifier(VerifyScheme::StandardWebhooks, &[&v.secret]);
    assert_eq!(
        standard.verify_before_body(&vector_headers(&v), vector_now(&v)),
        Ok(None)
    );
    assert_eq!(
        standard
            .verify_before_body(&vector_headers(&v), vector_now(&v) + 301)
            .map_err(|e| e.code()),
        Err("stale_timestamp")
    );
}

// ---------------------------------------------------------------- token

#[test]
fn token_equal_to_a_secret_verifies_without_delivery_id() {
    let verifier = verifier(VerifyScheme::Token, &["old-token", "new-token"]);
    for token in ["old-token", "new-token"] {
        let result = verifier.verify(&headers(&[("authorization", token)]), b"{}", 0);
        assert_eq!(result, Ok(Verified { delivery_id: None }), "{token}");
    }
}

#[test]
fn token_that_differs_in_any_way_is_rejected() {
    let verifier = verifier(VerifyScheme::Token, &["s3cret-token"]);
    for token in [
        "s3cret-toke",
        "s3cret-token2",
        "S3cret-token",
        "Bearer s3cret-token",
        "x",
    ] {
        let error = verifier
            .verify(&headers(&[("Authorization", token)]), b"{}", 0)
            .unwrap_err();
        assert_eq!(
            error,
            VerifyError::BadToken {
                header: "authorization".into()
            },
            "{token}"
        );
        assert_eq!(error.code(), "bad_token");
        assert!(!error.to_string().contains("s3cret"));
    }
}

#[test]
fn token_header_is_configurable_and_case_insensitive() {
    let mut settings = settings(VerifyScheme::Token, &["t0k"]);
    settings.header = Some("X-Webhook-Token".into());
    let verifier = compile(&settings).unwrap();
    assert!(
        verifier
            .verify(&headers(&[("x-webhook-token", "t0k")]), b"", 0)
            .is_ok()
    );
    let error = verifier
        .verify(&headers(&[("authorization", "t0k")]), b"", 0)
        .unwrap_err();
    assert_eq!(
        error,
        VerifyError::MissingHeader {
            header: "x-webhook-token".into()
        }
    );
    assert_eq!(error.code(), "missing_header");
}

#[test]
fn token_sent_twice_is_malformed() {
    let verifier = verifier(VerifyScheme::Token, &["t0k"]);
    let error = verifier
        .verify(
            &headers(&[("authorization", "t0k"), ("authorization", "t0k")]),
            b"",
            0,
        )
        .unwrap_err();
    assert_eq!(error.code(), "malformed_header");
    assert_eq!(
        error.to_string(),
        "header `authorization` is malformed: sent more than once; send it exactly once"
    );
}

#[test]
fn token_sign_headers_name_the_header_and_first_secret() {
    let settings = settings(VerifyScheme::Token, &["first", "second"]);
    assert_eq!(
        sign_headers(&typed(&settings), b"{}", 0, "ignored"),
        vec![("Authorization".to_string(), "first".to_string())]
    );
}

// ---------------------------------------------------- standard-webhooks

#[test]
fn standard_webhooks_worked_example_verifies() {
    let v = vector();
    let verifier = verifier(VerifyScheme::StandardWebhooks, &[&v.secret]);
    let result = verifier.verify(&vector_headers(&v), v.body.as_bytes(), vector_now(&v));
    assert_eq!(
        result,
        Ok(Verified {
            delivery_id: Some("msg_p5jXN8AQM9LWM0D4loKWxJek".into())
        })
    );
}

#[test]
fn standard_webhooks_sign_headers_reproduce_the_worked_example() {
    let v = vector();
    let settings = settings(VerifyScheme::StandardWebhooks, &[&v.secret]);
    assert_eq!(
        sign_headers(&typed(&settings), v.body.as_bytes(), vector_now(&v), &v.id),
        vec![
            ("webhook-id".to_string(), v.id.clone()),
            ("webhook-timestamp".to_string(), v.timestamp.clone()),
            ("webhook-signature".to_string(), v.signature.clone()),
        ]
    );
}

#[test]
fn standard_webhooks_any_one_byte_change_fails() {
    let v = vector();
    let now = vector_now(&v);
    let verifier = verifier(VerifyScheme::StandardWebhooks, &[&v.secret]);
    let mut checked = 0;
    for mask in [0x01u8, 0x20, 0x80] {
        // id: a changed id is a different signed content.
        for i in 0..v.id.len() {
            let mut id = v.id.clone().into_bytes();
            id[i] ^= mask;
            checked += 1;
            let Some(sent) = try_headers(&[
                (WEBHOOK_ID, id.as_slice()),
                (WEBHOOK_TIMESTAMP, v.timestamp.as_bytes()),
                (WEBHOOK_SIGNATURE, v.signature.as_bytes()),
            ]) else {
                continue; // not sendable as a header: cannot be accepted either
            };
            let result = verifier.verify(&sent, v.body.as_bytes(), now);
            assert!(
                matches!(
                    result,
                    Err(VerifyError::BadSignature { .. } | VerifyError::MalformedHeader { .. })
                ),
                "id byte {i} ^ {mask:#x}: {result:?}"
            );
        }
        // timestamp: with `now` at the changed time the tolerance passes, so
        // only the signature can reject it.
        for i in 0..v.timestamp.len() {
            let mut timestamp = v.timestamp.clone().into_bytes();
            timestamp[i] ^= mask;
            checked += 1;
            let Some(sent) = try_headers(&[
                (WEBHOOK_ID, v.id.as_bytes()),
                (WEBHOOK_TIMESTAMP, timestamp.as_slice()),
                (WEBHOOK_SIGNATURE, v.signature.as_bytes()),
            ]) else {
                continue;
            };
            let result = verifier.verify(&sent, v.body.as_bytes(), now);
            assert!(
                result.is_err(),
                "timestamp byte {i} ^ {mask:#x}: {result:?}"
            );
            if let Some(changed_now) = std::str::from_utf8(&timestamp)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .filter(|_| timestamp.iter().all(u8::is_ascii_digit))
            {
                assert_eq!(
                    verifier.verify(&sent, v.body.as_bytes(), changed_now),
                    Err(VerifyError::BadSignature {
                        scheme: "standard-webhooks"
                    }),
                    "timestamp byte {i} ^ {mask:#x}"
                );
            }
        }
        // body
        for i in 0..v.body.len() {
            let mut body = v.body.clone().into_bytes();
            body[i] ^= mask;
            assert_eq!(
                verifier.verify(&vector_headers(&v), &body, now),
                Err(VerifyError::BadSignature {
                    scheme: "standard-webhooks"
                }),
                "body byte {i} ^ {mask:#x}"
            );
            checked += 1;
        }
        // secret: either no longer whsec_<base64>, or a different key.
        for i in 0..v.secret.len() {
            let mut secret = v.secret.clone().into_bytes();
            secret[i] ^= mask;
            let Ok(secret) = String::from_utf8(secret) else {
                checked += 1;
                continue;
            };
            match compile(&settings(VerifyScheme::StandardWebhooks, &[&secret])) {
                Err(reason) => assert!(reason.starts_with("verify.secrets[0]"), "{reason}"),
                Ok(changed) => assert_eq!(
                    changed.verify(&vector_headers(&v), v.body.as_bytes(), now),
                    Err(VerifyError::BadSignature {
                        scheme: "standard-webhooks"
                    }),
                    "secret byte {i} ^ {mask:#x}"
                ),
            }
            checked += 1;
        }
    }
    let bytes = v.id.len() + v.timestamp.len() + v.body.len() + v.secret.len();
    assert_eq!(checked, 3 * bytes);
}

#[test]
fn standard_webhooks_rotation_accepts_any_configured_secret() {
    let v = vector();
    let verifier = verifier(
        VerifyScheme::StandardWebhooks,
        &["whsec_c2Vjb25kLXNlY3JldC1rZXktYnl0ZXM=", &v.secret],
    );
    assert!(
        verifier
            .verify(&vector_headers(&v), v.body.as_bytes(), vector_now(&v))
            .is_ok()
    );
}

#[test]
fn standard_webhooks_header_may_hold_several_signatures() {
    let v = vector();
    let verifier = verifier(VerifyScheme::StandardWebhooks, &[&v.secret]);
    let wrong = format!("v1,{}", BASE64.encode([7u8; 32]));
    let good_b64 = v.signature.trim_start_matches("v1,");
    for signature in [
        format!("{wrong} {}", v.signature),
        format!("{} {wrong}", v.signature),
        format!("v1a,{good_b64} v2,abc {}", v.signature),
        format!("v1,not-base64  {}", v.signature),
    ] {
        let sent = headers(&[
            (WEBHOOK_ID, v.id.as_str()),
            (WEBHOOK_TIMESTAMP, v.timestamp.as_str()),
            (WEBHOOK_SIGNATURE, signature.as_str()),
        ]);
        assert!(
            verifier
                .verify(&sent, v.body.as_bytes(), vector_now(&v))
                .is_ok(),
            "{signature}"
        );
    }

    let only_wrong = headers(&[
        (WEBHOOK_ID, v.id.as_str()),
        (WEBHOOK_TIMESTAMP, v.timestamp.as_str()),
        (WEBHOOK_SIGNATURE, format!("{wrong} {wrong}").as_str()),
    ]);
    let error = verifier
        .verify(&only_wrong, v.body.as_bytes(), vector_now(&v))
        .unwrap_err();
    assert_eq!(error.code(), "bad_signature");
}

#[test]
fn standard_webhooks_signature_of_other_versions_only_is_malformed() {
    let v = vector();
    let verifier = verifier(VerifyScheme::StandardWebhooks, &[&v.secret]);
    let good_b64 = v.signature.trim_start_matches("v1,");
    for signature in [
        format!("v2,{good_b64}"),
        format!("v1a,{good_b64}"),
        good_b64.to_string(),
        "v1,".to_string(),
        "v1,AAAA".to_string(),
        " ".to_string(),
    ] {
        let sent = headers(&[
            (WEBHOOK_ID, v.id.as_str()),
            (WEBHOOK_TIMESTAMP, v.timestamp.as_str()),
            (WEBHOOK_SIGNATURE, signature.as_str()),
        ]);
        let error = verifier
            .verify(&sent, v.body.as_bytes(), vector_now(&v))
            .unwrap_err();
        assert_eq!(
            error,
            VerifyError::MalformedHeader {
                header: "webhook-signature".into(),
                reason: "must hold space-separated `v1,<base64 of 32 bytes>` entries"
            },
            "{signature:?}"
        );
    }
}

#[test]
fn standard_webhooks_timestamps_outside_tolerance_are_rejected() {
    let v = vector();
    let verifier = verifier(VerifyScheme::StandardWebhooks, &[&v.secret]);
    let sent_at = vector_now(&v);
    let at = |now| verifier.verify(&vector_headers(&v), v.body.as_bytes(), now);

    assert!(at(sent_at + 300).is_ok());
    assert!(at(sent_at - 300).is_ok());
    let stale = at(sent_at + 301).unwrap_err();
    assert_eq!(
        stale,
        VerifyError::StaleTimestamp {
            age_s: 301,
            tolerance_s: 300
        }
    );
    assert_eq!(stale.code(), "stale_timestamp");
    assert_eq!(
        stale.to_string(),
        "`webhook-timestamp` is 301 s in the past; at most 300 s of clock skew is accepted"
    );
    let future = at(sent_at - 301).unwrap_err();
    assert_eq!(
        future,
        VerifyError::FutureTimestamp {
            ahead_s: 301,
            tolerance_s: 300
        }
    );
    assert_eq!(future.code(), "stale_timestamp");
    assert!(matches!(
        at(i64::MAX),
        Err(VerifyError::StaleTimestamp { .. })
    ));
    assert!(matches!(
        at(i64::MIN),
        Err(VerifyError::FutureTimestamp { .. })
    ));
}

#[test]
fn standard_webhooks_huge_tolerance_does_not_overflow() {
    let v = vector();
    let mut settings = settings(VerifyScheme::StandardWebhooks, &[&v.secret]);
    settings.tolerance_s = u64::MAX;
    let verifier = compile(&settings).unwrap();
    for now in [i64::MIN, 0, i64::MAX] {
        assert!(
            verifier
                .verify(&vector_headers(&v), v.body.as_bytes(), now)
                .is_ok()
        );
    }
}

#[test]
fn standard_webhooks_missing_headers_are_named() {
    let v = vector();
    let verifier = verifier(VerifyScheme::StandardWebhooks, &[&v.secret]);
    let all = [
        (WEBHOOK_ID, v.id.as_str()),
        (WEBHOOK_TIMESTAMP, v.timestamp.as_str()),
        (WEBHOOK_SIGNATURE, v.signature.as_str()),
    ];
    for missing in [WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE] {
        let sent: Vec<_> = all.iter().filter(|(name, _)| *name != missing).collect();
        let sent = headers(&sent.iter().map(|(n, v)| (*n, *v)).collect::<Vec<_>>());
        assert_eq!(
            verifier.verify(&sent, v.body.as_bytes(), vector_now(&v)),
            Err(VerifyError::MissingHeader {
                header: missing.into()
            })
        );
    }
}

#[test]
fn standard_webhooks_malformed_id_and_timestamp_are_rejected() {
    let v = vector();
    let verifier = verifier(VerifyScheme::StandardWebhooks, &[&v.secret]);
    for timestamp in [
        "",
        "abc",
        "+1614265330",
        "-1614265330",
        "1614265330.0",
        " 1614265330x",
        "99999999999999999999",
    ] {
        let sent = headers(&[
            (WEBHOOK_ID, v.id.as_str()),
            (WEBHOOK_TIMESTAMP, timestamp),
            (WEBHOOK_SIGNATURE, v.signature.as_str()),
        ]);
        assert_eq!(
            verifier.verify(&sent, v.body.as_bytes(), vector_now(&v)),
            Err(VerifyError::MalformedHeader {
                header: "webhook-timestamp".into(),
                reason: "must be whole seconds since the Unix epoch"
            }),
            "{timestamp:?}"
        );
    }
    let empty_id = headers(&[
        (WEBHOOK_ID, ""),
        (WEBHOOK_TIMESTAMP, v.timestamp.as_str()),
        (WEBHOOK_SIGNATURE, v.signature.as_str()),
    ]);
    assert_eq!(
        verifier.verify(&empty_id, v.body.as_bytes(), vector_now(&v)),
        Err(VerifyError::MalformedHeader {
            header: "webhook-id".into(),
            reason: "must not be empty"
        })
    );
}

#[test]
fn standard_webhooks_secrets_must_be_whsec_base64() {
    for bad in ["whsec_", "whsec_not base64!", "plain-text secret"] {
        let error = compile(&settings(
            VerifyScheme::StandardWebhooks,
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", bad],
        ))
        .unwrap_err();
        assert_eq!(
            error,
            "verify.secrets[1]: a standard-webhooks secret must be whsec_ followed by non-empty base64"
        );
    }
    assert_eq!(standard_webhooks_key(&Secret::literal("whsec_")), None);
    assert_eq!(
        standard_webhooks_key(&Secret::literal("whsec_c2Vjb25k")),
        Some(b"second".to_vec())
    );
    let error = compile(&settings(VerifyScheme::StandardWebhooks, &[])).unwrap_err();
    assert!(error.starts_with("verify.secrets: needs at least one secret"));
    // Settings that could only sign without a key never come to exist.
    assert!(parsed(&settings(VerifyScheme::StandardWebhooks, &["whsec_"])).is_err());
}

// ----------------------------------------------------------- hmac-sha256

/// GitHub's published example for `X-Hub-Signature-256`.
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITHUB_BODY: &[u8] = b"Hello, World!";
const GITHUB_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn hmac_sha256_github_example_verifies_in_either_hex_case() {
    let verifier = verifier(VerifyScheme::HmacSha256, &[GITHUB_SECRET]);
    let upper = format!(
        "sha256={}",
        GITHUB_SIGNATURE["sha256=".len()..].to_uppercase()
    );
    for signature in [GITHUB_SIGNATURE, upper.as_str()] {
        assert_eq!(
            verifier.verify(
                &headers(&[("X-Hub-Signature-256", signature)]),
                GITHUB_BODY,
                0
            ),
            Ok(Verified { delivery_id: None }),
            "{signature}"
        );
    }
    assert_eq!(
        sign_headers(
            &typed(&settings(VerifyScheme::HmacSha256, &[GITHUB_SECRET])),
            GITHUB_BODY,
            0,
            "m"
        ),
        vec![(
            "X-Hub-Signature-256".to_string(),
            GITHUB_SIGNATURE.to_string()
        )]
    );
}

#[test]
fn hmac_sha256_rotation_and_wrong_signatures() {
    let verifier = verifier(VerifyScheme::HmacSha256, &["other secret", GITHUB_SECRET]);
    let sent = headers(&[("x-hub-signature-256", GITHUB_SIGNATURE)]);
    assert!(verifier.verify(&sent, GITHUB_BODY, 0).is_ok());

    let error = verifier.verify(&sent, b"Hello, World?", 0).unwrap_err();
    assert_eq!(
        error,
        VerifyError::BadSignature {
            scheme: "hmac-sha256"
        }
    );
    assert_eq!(error.code(), "bad_signature");
    assert_eq!(
        error.to_string(),
        "the hmac-sha256 signature matches no configured secret"
    );

    let only_other = self::verifier(VerifyScheme::HmacSha256, &["other secret"]);
    assert!(only_other.verify(&sent, GITHUB_BODY, 0).is_err());
}

#[test]
fn hmac_sha256_malformed_values_are_named() {
    let verifier = verifier(VerifyScheme::HmacSha256, &[GITHUB_SECRET]);
    let hex = &GITHUB_SIGNATURE["sha256=".len()..];
    for value in [
        hex.to_string(),
        format!("sha1={hex}"),
        format!("SHA256={hex}"),
        format!("sha256={}", &hex[..62]),
        format!("sha256={hex}00"),
        format!("sha256={}zz", &hex[..62]),
        "sha256=".to_string(),
    ] {
        assert_eq!(
            verifier.verify(
                &headers(&[("x-hub-signature-256", value.as_str())]),
                GITHUB_BODY,
                0
            ),
            Err(VerifyError::MalformedHeader {
                header: "x-hub-signature-256".into(),
                reason: "must be `sha256=` followed by 64 hex digits"
            }),
            "{value}"
        );
    }
    assert_eq!(
        verifier.verify(&HeaderMap::new(), GITHUB_BODY, 0),
        Err(VerifyError::MissingHeader {
            header: "x-hub-signature-256".into()
        })
    );
}

#[test]
fn verifier_debug_shows_no_key_material() {
    let verifier = verifier(VerifyScheme::Token, &["very-secret-token"]);
    assert_eq!(
        format!("{verifier:?}"),
        "Verifier { scheme: \"token\", secrets: 1, .. }"
    );
}

// ------------------------------------------------------------- properties

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        "[ -~]{0,80}".prop_map(String::into_bytes),
        "(v1,[A-Za-z0-9+/=]{0,48} ?){0,3}".prop_map(String::into_bytes),
        "sha256=[0-9a-fA-F]{0,66}".prop_map(String::into_bytes),
        "[0-9]{0,20}".prop_map(String::into_bytes),
    ]
}

fn header_set() -> impl Strategy<Value = HeaderMap> {
    let name = prop_oneof![
        Just("authorization".to_string()),
        Just(WEBHOOK_ID.to_string()),
        Just(WEBHOOK_TIMESTAMP.to_string()),
        Just(WEBHOOK_SIGNATURE.to_string()),
        Just("x-hub-signature-256".to_string()),
        "[a-z][a-z0-9-]{0,20}",
    ];
    proptest::collection::vec((name, header_value()), 0..6).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::from_bytes(&value),
            ) {
                map.append(name, value);
            }
        }
        map
    })
}

fn all_schemes() -> Vec<(RawVerify, Verifier)> {
    let v = vector();
    [
        settings(VerifyScheme::Token, &["token-a", "token-b"]),
        settings(
            VerifyScheme::StandardWebhooks,
            &[&v.secret, "whsec_c2Vjb25k"],
        ),
        settings(VerifyScheme::HmacSha256, &["key-a", "key-b"]),
    ]
    .into_iter()
    .map(|settings| {
        let verifier = compile(&settings).expect("valid settings");
        (settings, verifier)
    })
    .collect()
}

proptest! {
    #[test]
    fn arbitrary_requests_never_panic_and_fail_with_a_known_code(
        headers in header_set(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        now in any::<i64>(),
    ) {
        for (_, verifier) in all_schemes() {
            match verifier.verify(&headers, &body, now) {
                Ok(_) => {}
                Err(error) => prop_assert!(matches!(
                    error.code(),
                    "missing_header" | "malformed_header" | "bad_token" | "bad_signature" | "stale_timestamp"
                )),
            }
        }
    }

    /// The check made before the body is read agrees with the full one: it
    /// refuses exactly with the error the full check would give, and a
    /// final verdict (token) is the full check's verdict.
    #[test]
    fn checking_before_the_body_agrees_with_the_full_check(
        headers in header_set(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        now in any::<i64>(),
    ) {
        for (settings, verifier) in all_schemes() {
            let full = verifier.verify(&headers, &body, now);
            match verifier.verify_before_body(&headers, now) {
                Err(error) => prop_assert_eq!(full, Err(error)),
                Ok(Some(verified)) => {
                    prop_assert_eq!(settings.scheme, VerifyScheme::Token);
                    prop_assert_eq!(full, Ok(verified));
                }
                Ok(None) => prop_assert_ne!(settings.scheme, VerifyScheme::Token),
            }
        }
    }

    #[test]
    fn signed_requests_verify_and_any_changed_body_byte_fails(
        body in proptest::collection::vec(any::<u8>(), 1..512),
        message_id in "[!-~]{1,40}",
        now in 0i64..1_000_000_000_000,
        flip_at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        for (settings, verifier) in all_schemes() {
            let sent = headers(&sign_headers(&typed(&settings), &body, now, &message_id));
            prop_assert!(verifier.verify_before_body(&sent, now).is_ok());
            let verified = verifier.verify(&sent, &body, now);
            let expected_id = (settings.scheme == VerifyScheme::StandardWebhooks)
                .then(|| message_id.clone());
            prop_assert_eq!(verified, Ok(Verified { delivery_id: expected_id }));

            let mut changed = body.clone();
            changed[flip_at.index(body.len())] ^= mask;
            let result = verifier.verify(&sent, &changed, now);
            if settings.scheme == VerifyScheme::Token {
                // A token does not cover the body; that is the scheme's nature.
                prop_assert!(result.is_ok());
            } else {
                prop_assert_eq!(result.map_err(|e| e.code()), Err("bad_signature"));
            }
        }
    }
}
