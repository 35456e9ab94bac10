//! Criterion benchmarks of the per-request hot functions: webhook signature
//! verification per scheme, payload parsing per format (every sample in
//! `fixtures/`), and AK/SK signing of a 100-image batch-scan body.
//!
//! `cargo bench --bench hot_paths` runs them all in well under two minutes;
//! measurement times are kept short on purpose (2-core machine, shared).

use std::hint::black_box;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use swr_scan_bridge::config::{PayloadFormat, VerifyScheme, VerifySettings};
use swr_scan_bridge::domain::{ImageRef, ImageType, Partition};
use swr_scan_bridge::hss::client::batch_scan_body;
use swr_scan_bridge::hss::signer::{self, SignableRequest};
use swr_scan_bridge::intake::formats;
use swr_scan_bridge::intake::verify::{Verifier, sign_headers};
use swr_scan_bridge::secret::Secret;
use swr_scan_bridge::store::BatchImage;

const SWR_EE_SAMPLE: &[u8] = include_bytes!("../fixtures/swr-ee-push-artifact.json");

/// Every sample in `fixtures/` with the format that reads it.
const FIXTURES: &[(&str, PayloadFormat, &[u8])] = &[
    ("swr-ee-push-artifact", PayloadFormat::Harbor, SWR_EE_SAMPLE),
    (
        "harbor-push-minimal",
        PayloadFormat::Harbor,
        include_bytes!("../fixtures/harbor-push-minimal.json"),
    ),
    (
        "harbor-push-by-digest",
        PayloadFormat::Harbor,
        include_bytes!("../fixtures/harbor-push-by-digest.json"),
    ),
    (
        "harbor-delete-artifact",
        PayloadFormat::Harbor,
        include_bytes!("../fixtures/harbor-delete-artifact.json"),
    ),
    (
        "harbor-cloudevents-push",
        PayloadFormat::Cloudevents,
        include_bytes!("../fixtures/harbor-cloudevents-push.json"),
    ),
    (
        "distribution-notification",
        PayloadFormat::Distribution,
        include_bytes!("../fixtures/distribution-notification.json"),
    ),
];

/// Fixed "now" for standard-webhooks, so the signed timestamp never goes stale.
const NOW_S: i64 = 1_795_859_400;

fn verify_settings(scheme: VerifyScheme, secrets: &[&str]) -> VerifySettings {
    VerifySettings {
        scheme,
        header: None,
        secrets: secrets.iter().map(|s| Secret::literal(*s)).collect(),
        tolerance_s: 300,
    }
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    map
}

/// Each scheme with two configured secrets (rotation), the request signed with
/// the second: the worst case, since every secret is tried in constant time anyway.
fn verification(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Bytes(SWR_EE_SAMPLE.len() as u64));
    let cases = [
        (
            "token",
            VerifyScheme::Token,
            ["swr-token-old", "swr-token-new"],
        ),
        (
            "standard-webhooks",
            VerifyScheme::StandardWebhooks,
            [
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=",
            ],
        ),
        (
            "hmac-sha256",
            VerifyScheme::HmacSha256,
            ["registry-hmac-secret-old", "registry-hmac-secret-new"],
        ),
    ];
    for (name, scheme, secrets) in cases {
        let verifier = Verifier::new(&verify_settings(scheme, &secrets)).expect("verifier");
        let signer_settings = verify_settings(scheme, &secrets[1..]);
        let headers = header_map(&sign_headers(
            &signer_settings,
            SWR_EE_SAMPLE,
            NOW_S,
            "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
        ));
        verifier
            .verify(&headers, SWR_EE_SAMPLE, NOW_S)
            .expect("the bench request verifies");
        group.bench_function(name, |b| {
            b.iter(|| verifier.verify(black_box(&headers), black_box(SWR_EE_SAMPLE), NOW_S))
        });
    }
    group.finish();
}

fn parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, format, body) in FIXTURES {
        formats::parse(*format, body).expect("the fixture parses");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| formats::parse(black_box(*format), black_box(body)))
        });
    }
    group.finish();
}

fn hundred_images() -> (Partition, Vec<BatchImage>) {
    let partition = Partition {
        image_type: ImageType::InstanceImage,
        instance_id: Some("4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6".into()),
        enterprise_project_id: Some("0".into()),
    };
    let images = (0..100)
        .map(|i| BatchImage {
            image: ImageRef::new("team-a", "payments/api", format!("v1.{i}.0")),
            instance_url: Some("ee-demo.swr.cn-north-4.myhuaweicloud.com".into()),
            digest: None,
        })
        .collect();
    (partition, images)
}

/// What one batch-scan attempt costs before it reaches the network: encode the
/// body, then sign it as the SDK does (the headers the client sends).
fn hss_signing(c: &mut Criterion) {
    let (partition, images) = hundred_images();
    let body = batch_scan_body(&partition, &images).expect("body");
    let secret_key = Secret::literal("ExampleSecretKeyDoNotUse0123456789abcdef");
    let query = vec![("enterprise_project_id".to_string(), "0".to_string())];
    let headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        (
            "X-Project-Id".to_string(),
            "0a1b2c3d4e5f60718293a4b5c6d7e8f9".to_string(),
        ),
        (
            "Host".to_string(),
            "hss.cn-north-4.myhuaweicloud.com".to_string(),
        ),
        ("X-Sdk-Date".to_string(), "20261128T093015Z".to_string()),
    ];
    let sign = |body: &[u8]| {
        let request = SignableRequest {
            method: "POST",
            path: "/v5/0a1b2c3d4e5f60718293a4b5c6d7e8f9/image/batch-scan",
            query: &query,
            headers: &headers,
            body,
        };
        signer::authorization("HPUAEXAMPLEAKID0EXAM", &secret_key, &request)
    };
    sign(&body).expect("signs");

    let mut group = c.benchmark_group("hss_batch_100_images");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("encode_body", |b| {
        b.iter(|| batch_scan_body(black_box(&partition), black_box(&images)))
    });
    group.bench_function("sign_aksk", |b| b.iter(|| sign(black_box(&body))));
    group.bench_function("encode_and_sign", |b| {
        b.iter(|| {
            let body = batch_scan_body(black_box(&partition), black_box(&images)).expect("body");
            sign(&body)
        })
    });
    group.finish();
}

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40)
        .configure_from_args()
}

criterion_group! {
    name = hot_paths;
    config = short();
    targets = verification, parsing, hss_signing
}
criterion_main!(hot_paths);
