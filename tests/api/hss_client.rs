//! `HssClient` against a fake HSS that verifies every signature: request
//! shape, the three auth modes with renewal, and outcome classification.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use swr_scan_bridge::config::{HssSettings, Settings};
use swr_scan_bridge::domain::{ImageRef, ImageType, Partition};
use swr_scan_bridge::hss::credentials::ManualClock;
use swr_scan_bridge::hss::{HssClient, ScanOutcome, ScanSender};
use swr_scan_bridge::store::BatchImage;
use wiremock::ResponseTemplate;

use crate::fake_hss::{FakeHss, Reply, Verdict};
use crate::fake_issuers::{FakeIam, FakeMetadata, IamUser};

const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const AK: &str = "HPUAEXAMPLEAKID0EXAM";
const SK: &str = "ExampleSecretKeyDoNotUse0123456789abcdef";
const START: &str = "2026-11-28T09:30:15Z";
const PASSWORD: &str = "iam-password-do-not-log";

fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(START)
        .unwrap()
        .with_timezone(&Utc)
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(start_time()))
}

/// `[hss]` settings through the real config loader, plus `extra` lines.
fn settings(extra: &str) -> HssSettings {
    let toml = format!(
        "[hss]\nregion = \"cn-north-4\"\nproject_id = \"{PROJECT}\"\nrequest_timeout_ms = 5000\n{extra}"
    );
    Settings::from_toml(&toml).unwrap().hss
}

fn aksk_settings(endpoint: &str) -> HssSettings {
    settings(&format!(
        "endpoint = \"{endpoint}\"\nauth = \"aksk\"\nak = \"{AK}\"\nsk = \"{SK}\""
    ))
}

fn metadata_settings(endpoint: &str, metadata_url: &str) -> HssSettings {
    settings(&format!(
        "endpoint = \"{endpoint}\"\nauth = \"metadata\"\nmetadata_url = \"{metadata_url}\""
    ))
}

fn iam_user() -> IamUser {
    IamUser {
        domain_name: "example-domain".into(),
        user_name: "bridge-user".into(),
        password: PASSWORD.into(),
        project_id: PROJECT.into(),
    }
}

fn token_settings(endpoint: &str, iam_endpoint: &str, password: &str) -> HssSettings {
    settings(&format!(
        "endpoint = \"{endpoint}\"\nauth = \"token\"\niam_endpoint = \"{iam_endpoint}\"\n\
         domain_name = \"example-domain\"\nuser_name = \"bridge-user\"\npassword = \"{password}\""
    ))
}

fn private_partition(enterprise_project_id: Option<&str>) -> Partition {
    Partition {
        image_type: ImageType::PrivateImage,
        instance_id: None,
        enterprise_project_id: enterprise_project_id.map(str::to_string),
    }
}

fn images() -> Vec<BatchImage> {
    vec![
        BatchImage {
            image: ImageRef::new("test", "openjdk", "v8.8"),
            instance_url: None,
            digest: None,
        },
        BatchImage {
            image: ImageRef::new("test", "nginx", "1.27"),
            instance_url: None,
            digest: None,
        },
    ]
}

fn expected_private_body() -> serde_json::Value {
    json!({
        "image_type": "private_image",
        "image_info_list": [
            {"namespace": "test", "image_name": "openjdk", "image_version": "v8.8"},
            {"namespace": "test", "image_name": "nginx", "image_version": "1.27"}
        ]
    })
}

fn accepted(request_id: &str) -> ScanOutcome {
    ScanOutcome::Accepted {
        status: 200,
        request_id: Some(request_id.into()),
    }
}

// ---- aksk: request shape and signing ----

#[tokio::test]
async fn aksk_request_is_signed_and_shaped_as_hss_expects() {
    let hss = FakeHss::start(AK, SK).await;
    let mut settings = aksk_settings(&hss.uri());
    settings.send_region_header = true;
    let client = HssClient::with_clock(&settings, clock()).unwrap();

    let outcome = client
        .batch_scan(&private_partition(Some("0")), &images())
        .await;

    assert_eq!(outcome, accepted("fake-req-1"));
    assert_eq!(hss.received_batches(), vec![expected_private_body()]);
    let requests = hss.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        request.verdict,
        Verdict::Signed {
            access_key: AK.into()
        }
    );
    assert_eq!(request.path, format!("/v5/{PROJECT}/image/batch-scan"));
    assert_eq!(request.project_id(), PROJECT);
    assert_eq!(
        request.query,
        vec![("enterprise_project_id".to_string(), "0".to_string())]
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-project-id"), Some(PROJECT));
    assert_eq!(request.header("region"), Some("cn-north-4"));
    assert_eq!(request.header("x-sdk-date"), Some("20261128T093015Z"));
    assert_eq!(request.header("x-security-token"), None);
    assert_eq!(request.header("x-auth-token"), None);
    assert_eq!(
        request
            .header("authorization")
            .unwrap()
            .split(", Signature=")
            .next(),
        Some(
            "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAKID0EXAM, SignedHeaders=content-type;host;region;x-project-id;x-sdk-date"
        )
    );
}

#[tokio::test]
async fn without_enterprise_project_or_region_header_neither_is_sent() {
    let hss = FakeHss::start(AK, SK).await;
    let client = HssClient::with_clock(&aksk_settings(&hss.uri()), clock()).unwrap();

    let outcome = client.batch_scan(&private_partition(None), &images()).await;

    assert_eq!(outcome, accepted("fake-req-1"));
    let request = &hss.requests()[0];
    assert_eq!(request.query, vec![]);
    assert_eq!(request.header("region"), None);
    assert!(
        request
            .header("authorization")
            .unwrap()
            .contains("SignedHeaders=content-type;host;x-project-id;x-sdk-date,")
    );
}

#[tokio::test]
async fn instance_images_carry_instance_fields_and_odd_query_values_verify() {
    let hss = FakeHss::start(AK, SK).await;
    let client = HssClient::with_clock(&aksk_settings(&hss.uri()), clock()).unwrap();
    let partition = Partition {
        image_type: ImageType::InstanceImage,
        instance_id: Some("4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6".into()),
        enterprise_project_id: Some("all granted/eps*".into()),
    };
    let images = vec![BatchImage {
        image: ImageRef::new("team-a", "svc/api", "1.2.3"),
        instance_url: Some("ee-demo.swr.cn-north-4.myhuaweicloud.com".into()),
        digest: None,
    }];

    let outcome = client.batch_scan(&partition, &images).await;

    assert_eq!(outcome, accepted("fake-req-1"));
    assert_eq!(
        hss.received_batches(),
        vec![json!({
            "image_type": "instance_image",
            "image_info_list": [{
                "namespace": "team-a",
                "image_name": "svc/api",
                "image_version": "1.2.3",
                "instance_id": "4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6",
                "instance_url": "ee-demo.swr.cn-north-4.myhuaweicloud.com"
            }]
        })]
    );
    assert_eq!(
        hss.requests()[0].query,
        vec![(
            "enterprise_project_id".to_string(),
            "all granted/eps*".to_string()
        )]
    );
}

#[tokio::test]
async fn static_security_token_is_sent_and_signed() {
    let hss = FakeHss::start_without_credentials().await;
    hss.allow_access_key(AK, SK, Some("static-security-token+/=="));
    let mut settings = aksk_settings(&hss.uri());
    settings.security_token = Some(swr_scan_bridge::secret::Secret::literal(
        "static-security-token+/==",
    ));
    let client = HssClient::with_clock(&settings, clock()).unwrap();

    let outcome = client.batch_scan(&private_partition(None), &images()).await;

    assert_eq!(outcome, accepted("fake-req-1"));
    let request = &hss.requests()[0];
    assert_eq!(
        request.header("x-security-token"),
        Some("static-security-token+/==")
    );
    assert!(
        request
            .header("authorization")
            .unwrap()
            .contains(";x-security-token,")
    );
}

#[tokio::test]
async fn a_wrong_secret_key_is_refused_by_the_verifier_and_is_permanent() {
    let hss = FakeHss::start(AK, "another-secret-key").await;
    let client = HssClient::with_clock(&aksk_settings(&hss.uri()), clock()).unwrap();

    let outcome = client.batch_scan(&private_partition(None), &images()).await;

    assert_eq!(
        outcome,
        ScanOutcome::Permanent {
            status: Some(401),
            error_code: Some("APIGW.0301".into()),
            error_msg: "Incorrect IAM authentication information: signature mismatch".into(),
            request_id: Some("fake-req-1".into()),
        }
    );
    // A static key cannot be renewed, so there is no second attempt.
    assert_eq!(hss.requests().len(), 1);
    assert_eq!(hss.requests_with_bad_signature().len(), 1);
    assert!(hss.received_batches().is_empty());
}

#[tokio::test]
async fn every_attempt_is_signed_anew_with_a_fresh_date() {
    let hss = FakeHss::start(AK, SK).await;
    hss.respond_with_sequence(vec![Reply::status(503)]);
    let clock = clock();
    let client = HssClient::with_clock(&aksk_settings(&hss.uri()), clock.clone()).unwrap();

    let first = client.batch_scan(&private_partition(None), &images()).await;
    clock.advance(Duration::from_secs(61));
    let second = client.batch_scan(&private_partition(None), &images()).await;

    assert!(matches!(first, ScanOutcome::Retryable { .. }));
    assert_eq!(second, accepted("fake-req-2"));
    let requests = hss.requests();
    assert_eq!(requests[0].header("x-sdk-date"), Some("20261128T093015Z"));
    assert_eq!(requests[1].header("x-sdk-date"), Some("20261128T093116Z"));
    assert_ne!(
        requests[0].header("authorization"),
        requests[1].header("authorization")
    );
    assert!(hss.requests_with_bad_signature().is_empty());
}

// ---- classification ----

#[tokio::test]
async fn a_503_503_200_sequence_is_retryable_twice_then_accepted() {
    let hss = FakeHss::start(AK, SK).await;
    hss.respond_with_sequence(vec![
        Reply::status(503),
        Reply::error(503, "HSS.0004", "busy"),
        Reply::accepted(),
    ]);
    let client = HssClient::with_clock(&aksk_settings(&hss.uri()), clock()).unwrap();
    let partition = private_partition(None);

    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(client.batch_scan(&partition, &images()).await);
    }

    assert_eq!(
        outcomes,
        vec![
            ScanOutcome::Retryable {
                status: Some(503),
                reason: "HSS answered HTTP 503".into(),
                retry_after: None,
                request_id: Some("fake-req-1".into()),
            },
            ScanOutcome::Retryable {
                status: Some(503),
                reason: "HSS answered HTTP 503: HSS.0004: busy".into(),
                retry_after: None,
                request_id: Some("fake-req-2".into()),
            },
            accepted("fake-req-3"),
        ]
    );
    assert_eq!(hss.received_batches().len(), 1);
}

#[tokio::test]
async fn every_retryable_status_is_retryable() {
    let hss = FakeHss::start(AK, SK).await;
    let statuses = [429, 500, 502, 503, 504];
    hss.respond_with_sequence(statuses.iter().map(|s| Reply::status(*s)).collect());
    let client = HssClient::with_clock(&aksk_settings(&hss.uri()), clock()).unwrap();

    for (i, status) in statuses.into_iter().enumerate() {
        let outcome = client.batch_scan(&private_partition(None), &images()).await;
        assert_eq!(
            outcome,
            ScanOutcome::Retryable {
                status: Some(status),
                reason: format!("HSS answered HTTP {status}"),
                retry_after: None,
                request_id: Some(format!("fake-req-{}", i + 1)),
            }
        );
    }
}

#[tokio::test]
async fn retry_after_is_read_as_seconds_and_as_http_date() {
    let hss = FakeHss::start(AK, SK).await;
    hss.respond_with_sequence(vec![
        Reply::throttled("30"),
        // The client's clock reads 09:30:15.
        Reply::throttled("Sat, 28 Nov 2026 09:31:45 GMT"),
        Reply::status(503).with_header("Retry-After", "7"),
    ]);
    let client = HssClient::with_clock(&aksk_settings(&hss.uri()), clock()).unwrap();
    let partition = private_partition(None);

    let first = client.batch_scan(&partition, &images()).await;
    let second = client.batch_scan(&partition, &images()).await;
    let third = client.batch_scan(&partition, &images()).await;

    assert_eq!(
        first,
        ScanOutcome::Retryable {
            status: Some(429),
            reason: "HSS answered HTTP 429: APIG.0308: The request is throttled.".into(),
            retry_after: Some(Duration::from_secs(30)),
            request_id: Some("fake-req-1".into()),
        }
    );
    assert!(matches!(
        second,
        ScanOutcome::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(90)
    ));
    assert!(matches!(
        third,
        ScanOutcome::Retryable { status: Some(503), retry_after: Some(d), .. } if d == Duration::from_secs(7)
    ));
}

#[tokio::test]
async fn other_client_errors_are_permanent_with_error_code_and_request_id() {
    let hss = FakeHss::start(AK, SK).await;
    hss.respond_with_sequence(vec![
        Reply::error(400, "HSS.1059", "Invalid image_type"),
        Reply::status(404),
        Reply::error(403, "HSS.0002", "No permission"),
    ]);
    let client = HssClient::with_clock(&aksk_settings(&hss.uri()), clock()).unwrap();
    let partition = private_partition(None);

    let bad_request = client.batch_scan(&partition, &images()).await;
    let not_found = client.batch_scan(&partition, &images()).await;
    let forbidden = client.batch_scan(&partition, &images()).await;

    assert_eq!(
        bad_request,
        ScanOutcome::Permanent {
            status: Some(400),
            error_code: Some("HSS.1059".into()),
            error_msg: "Invalid image_type".into(),
            request_id: Some("fake-req-1".into()),
        }
    );
    assert_eq!(
        not_found,
        ScanOutcome::Permanent {
            status: Some(404),
            error_code: None,
            error_msg: "HSS answered HTTP 404".into(),
            request_id: Some("fake-req-2".into()),
        }
    );
    assert_eq!(
        forbidden,
        ScanOutcome::Permanent {
            status: Some(403),
            error_code: Some("HSS.0002".into()),
            error_msg: "No permission".into(),
            request_id: Some("fake-req-3".into()),
        }
    );
    assert!(hss.received_batches().is_empty());
}

#[tokio::test]
async fn a_slow_hss_is_a_retryable_timeout() {
    let hss = FakeHss::start(AK, SK).await;
    hss.respond_with_sequence(vec![Reply::accepted().delayed(Duration::from_secs(5))]);
    let mut settings = aksk_settings(&hss.uri());
    settings.request_timeout_ms = 200;
    let client = HssClient::with_clock(&settings, clock()).unwrap();

    let outcome = client.batch_scan(&private_partition(None), &images()).await;

    assert_eq!(
        outcome,
        ScanOutcome::Retryable {
            status: None,
            reason: "HSS did not answer within 200 ms".into(),
            retry_after: None,
            request_id: None,
        }
    );
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client =
        HssClient::with_clock(&aksk_settings(&format!("http://127.0.0.1:{port}")), clock())
            .unwrap();

    let outcome = client.batch_scan(&private_partition(None), &images()).await;

    let ScanOutcome::Retryable {
        status,
        reason,
        retry_after,
        request_id,
    } = outcome
    else {
        panic!("expected Retryable, got {outcome:?}");
    };
    assert_eq!((status, retry_after, request_id), (None, None, None));
    assert!(reason.starts_with("HSS unreachable: "), "{reason}");
    assert!(reason.to_lowercase().contains("refused"), "{reason}");
}

#[test]
fn a_bad_endpoint_is_a_construction_error() {
    let mut settings = aksk_settings("http://127.0.0.1:1");
    settings.endpoint = Some("http://exa mple".into());
    let error = HssClient::new(&settings).unwrap_err();
    assert!(
        error.to_string().starts_with("config key `hss.endpoint`"),
        "{error}"
    );
}

// ---- metadata: temporary AK/SK ----

#[tokio::test]
async fn metadata_credentials_are_cached_then_refreshed_under_forty_minutes() {
    let hss = FakeHss::start_without_credentials().await;
    let clock = clock();
    let metadata = FakeMetadata::start(
        hss.credentials(),
        clock.clone(),
        Duration::from_secs(2 * 3600),
    )
    .await;
    let client = HssClient::with_clock(
        &metadata_settings(&hss.uri(), &metadata.uri()),
        clock.clone(),
    )
    .unwrap();
    let partition = private_partition(None);

    assert_eq!(
        client.batch_scan(&partition, &images()).await,
        accepted("fake-req-1")
    );
    clock.advance(Duration::from_secs(80 * 60)); // 40 min left: still good
    assert_eq!(
        client.batch_scan(&partition, &images()).await,
        accepted("fake-req-2")
    );
    assert_eq!(metadata.issued_keys().len(), 1);
    clock.advance(Duration::from_secs(1)); // under 40 min left: refresh
    assert_eq!(
        client.batch_scan(&partition, &images()).await,
        accepted("fake-req-3")
    );

    let keys = metadata.issued_keys();
    assert_eq!(keys.len(), 2);
    assert_eq!(metadata.sessions().len(), 1);
    let requests = hss.requests();
    let access_of = |i: usize| Verdict::Signed {
        access_key: keys[i].access.clone(),
    };
    assert_eq!(requests[0].verdict, access_of(0));
    assert_eq!(requests[1].verdict, access_of(0));
    assert_eq!(requests[2].verdict, access_of(1));
    assert_eq!(
        requests[2].header("x-security-token"),
        Some(keys[1].security_token.as_str())
    );
    assert!(hss.requests_with_bad_signature().is_empty());
}

#[tokio::test]
async fn concurrent_calls_share_one_metadata_fetch() {
    let hss = FakeHss::start_without_credentials().await;
    let clock = clock();
    let metadata =
        FakeMetadata::start(hss.credentials(), clock.clone(), Duration::from_secs(3600)).await;
    let client =
        HssClient::with_clock(&metadata_settings(&hss.uri(), &metadata.uri()), clock).unwrap();
    let partition = private_partition(None);
    let images = images();

    let (a, b) = tokio::join!(
        client.batch_scan(&partition, &images),
        client.batch_scan(&partition, &images)
    );

    assert!(matches!(a, ScanOutcome::Accepted { .. }));
    assert!(matches!(b, ScanOutcome::Accepted { .. }));
    assert_eq!(metadata.issued_keys().len(), 1);
}

#[tokio::test]
async fn a_forgotten_metadata_session_is_replaced_once() {
    let hss = FakeHss::start_without_credentials().await;
    let clock = clock();
    let metadata =
        FakeMetadata::start(hss.credentials(), clock.clone(), Duration::from_secs(3600)).await;
    let client = HssClient::with_clock(
        &metadata_settings(&hss.uri(), &metadata.uri()),
        clock.clone(),
    )
    .unwrap();
    let partition = private_partition(None);

    client.batch_scan(&partition, &images()).await;
    metadata.forget_sessions();
    clock.advance(Duration::from_secs(30 * 60));
    let outcome = client.batch_scan(&partition, &images()).await;

    assert_eq!(outcome, accepted("fake-req-2"));
    assert_eq!(metadata.sessions().len(), 2);
    assert_eq!(metadata.issued_keys().len(), 2);
}

#[tokio::test]
async fn a_401_with_temporary_credentials_fetches_new_ones_and_retries_once() {
    let hss = FakeHss::start_without_credentials().await;
    let clock = clock();
    let metadata =
        FakeMetadata::start(hss.credentials(), clock.clone(), Duration::from_secs(3600)).await;
    let client =
        HssClient::with_clock(&metadata_settings(&hss.uri(), &metadata.uri()), clock).unwrap();
    let partition = private_partition(None);

    client.batch_scan(&partition, &images()).await;
    hss.revoke_access_key(&metadata.issued_keys()[0].access);
    let outcome = client.batch_scan(&partition, &images()).await;

    assert_eq!(outcome, accepted("fake-req-3"));
    assert_eq!(metadata.issued_keys().len(), 2);
    assert_eq!(hss.requests()[1].status, 401);
}

#[tokio::test]
async fn metadata_refusal_is_permanent_and_outage_is_retryable() {
    let hss = FakeHss::start_without_credentials().await;
    let clock = clock();
    let metadata =
        FakeMetadata::start(hss.credentials(), clock.clone(), Duration::from_secs(3600)).await;
    metadata.script_security_key(vec![
        ResponseTemplate::new(404).set_body_string("Please configure Cloud Service Agency first"),
        ResponseTemplate::new(503),
    ]);
    let client =
        HssClient::with_clock(&metadata_settings(&hss.uri(), &metadata.uri()), clock).unwrap();
    let partition = private_partition(None);

    let refused = client.batch_scan(&partition, &images()).await;
    let unavailable = client.batch_scan(&partition, &images()).await;

    assert_eq!(
        refused,
        ScanOutcome::Permanent {
            status: None,
            error_code: None,
            error_msg: "no credentials for HSS: ECS metadata service refused to issue credentials (HTTP 404): Please configure Cloud Service Agency first; check the hss settings".into(),
            request_id: None,
        }
    );
    assert_eq!(
        unavailable,
        ScanOutcome::Retryable {
            status: None,
            reason: "no credentials for HSS: ECS metadata service unavailable (HTTP 503)".into(),
            retry_after: None,
            request_id: None,
        }
    );
    assert!(hss.requests().is_empty());
}

#[tokio::test]
async fn an_unreachable_metadata_service_is_retryable() {
    let hss = FakeHss::start_without_credentials().await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = HssClient::with_clock(
        &metadata_settings(&hss.uri(), &format!("http://127.0.0.1:{port}")),
        clock(),
    )
    .unwrap();

    let outcome = client.batch_scan(&private_partition(None), &images()).await;

    let ScanOutcome::Retryable { status, reason, .. } = outcome else {
        panic!("expected Retryable, got {outcome:?}");
    };
    assert_eq!(status, None);
    assert!(
        reason.starts_with("no credentials for HSS: ECS metadata service unreachable: "),
        "{reason}"
    );
}

// ---- token: IAM ----

#[tokio::test]
async fn iam_token_is_sent_cached_and_renewed_before_expiry() {
    let hss = FakeHss::start_without_credentials().await;
    let clock = clock();
    let iam = FakeIam::start(
        hss.credentials(),
        clock.clone(),
        iam_user(),
        Duration::from_secs(24 * 3600),
    )
    .await;
    let client = HssClient::with_clock(
        &token_settings(&hss.uri(), &iam.uri(), PASSWORD),
        clock.clone(),
    )
    .unwrap();
    let partition = private_partition(None);

    assert_eq!(
        client.batch_scan(&partition, &images()).await,
        accepted("fake-req-1")
    );
    clock.advance(Duration::from_secs(23 * 3600)); // one hour left: still good
    assert_eq!(
        client.batch_scan(&partition, &images()).await,
        accepted("fake-req-2")
    );
    assert_eq!(iam.tokens().len(), 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        client.batch_scan(&partition, &images()).await,
        accepted("fake-req-3")
    );

    let tokens = iam.tokens();
    assert_eq!(tokens.len(), 2);
    let requests = hss.requests();
    assert_eq!(requests[0].header("x-auth-token"), Some(tokens[0].as_str()));
    assert_eq!(requests[1].header("x-auth-token"), Some(tokens[0].as_str()));
    assert_eq!(requests[2].header("x-auth-token"), Some(tokens[1].as_str()));
    assert_eq!(requests[2].header("authorization"), None);
    assert_eq!(requests[2].header("x-project-id"), Some(PROJECT));
    assert_eq!(requests[2].verdict, Verdict::Token);
}

#[tokio::test]
async fn a_401_renews_the_token_once() {
    let hss = FakeHss::start_without_credentials().await;
    let clock = clock();
    let iam = FakeIam::start(
        hss.credentials(),
        clock.clone(),
        iam_user(),
        Duration::from_secs(24 * 3600),
    )
    .await;
    let client =
        HssClient::with_clock(&token_settings(&hss.uri(), &iam.uri(), PASSWORD), clock).unwrap();
    let partition = private_partition(None);

    client.batch_scan(&partition, &images()).await;
    hss.revoke_token(&iam.tokens()[0]);
    let renewed = client.batch_scan(&partition, &images()).await;

    assert_eq!(renewed, accepted("fake-req-3"));
    assert_eq!(iam.tokens().len(), 2);
    assert_eq!(hss.requests()[1].status, 401);

    // A fresh token that HSS still refuses: one renewal, then Permanent.
    iam.register_with_hss(false);
    hss.revoke_token(&iam.tokens()[1]);
    let refused = client.batch_scan(&partition, &images()).await;

    assert_eq!(
        refused,
        ScanOutcome::Permanent {
            status: Some(401),
            error_code: Some("APIGW.0301".into()),
            error_msg: "Incorrect IAM authentication information: unknown or revoked X-Auth-Token"
                .into(),
            request_id: Some("fake-req-5".into()),
        }
    );
    assert_eq!(iam.tokens().len(), 3);
    assert_eq!(hss.requests().len(), 5);
}

#[tokio::test]
async fn a_wrong_password_is_permanent_and_an_iam_outage_retryable() {
    let hss = FakeHss::start_without_credentials().await;
    let clock = clock();
    let iam = FakeIam::start(
        hss.credentials(),
        clock.clone(),
        iam_user(),
        Duration::from_secs(24 * 3600),
    )
    .await;
    let wrong = HssClient::with_clock(
        &token_settings(&hss.uri(), &iam.uri(), "not-the-password"),
        clock.clone(),
    )
    .unwrap();
    let right =
        HssClient::with_clock(&token_settings(&hss.uri(), &iam.uri(), PASSWORD), clock).unwrap();
    iam.script(vec![ResponseTemplate::new(502)]);

    let refused = wrong.batch_scan(&private_partition(None), &images()).await;
    let unavailable = right.batch_scan(&private_partition(None), &images()).await;

    assert_eq!(
        refused,
        ScanOutcome::Permanent {
            status: None,
            error_code: None,
            error_msg: "no credentials for HSS: IAM refused to issue credentials (HTTP 401): 401: The username or password is wrong.; check the hss settings".into(),
            request_id: None,
        }
    );
    assert_eq!(
        unavailable,
        ScanOutcome::Retryable {
            status: None,
            reason: "no credentials for HSS: IAM unavailable (HTTP 502)".into(),
            retry_after: None,
            request_id: None,
        }
    );
    assert!(hss.requests().is_empty());
}

// ---- secrets stay out of logs ----

/// Collects everything the fmt subscriber writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

// current_thread runtime: every event of the client is emitted on this thread,
// where the thread-local subscriber below sees it.
#[tokio::test(flavor = "current_thread")]
async fn no_secret_reaches_the_logs_in_any_auth_mode() {
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let partition = private_partition(Some("0"));
    let clock = clock();

    // aksk with a security token, including a refused signature.
    let hss = FakeHss::start_without_credentials().await;
    hss.allow_access_key(AK, SK, Some("static-security-token-value"));
    let mut settings = aksk_settings(&hss.uri());
    settings.security_token = Some(swr_scan_bridge::secret::Secret::literal(
        "static-security-token-value",
    ));
    let aksk = HssClient::with_clock(&settings, clock.clone()).unwrap();
    hss.respond_with_sequence(vec![Reply::error(400, "HSS.1059", "bad")]);
    aksk.batch_scan(&partition, &images()).await;
    aksk.batch_scan(&partition, &images()).await;

    // metadata, with a refresh and a 401 renewal.
    let metadata =
        FakeMetadata::start(hss.credentials(), clock.clone(), Duration::from_secs(3600)).await;
    let temporary = HssClient::with_clock(
        &metadata_settings(&hss.uri(), &metadata.uri()),
        clock.clone(),
    )
    .unwrap();
    temporary.batch_scan(&partition, &images()).await;
    hss.revoke_access_key(&metadata.issued_keys()[0].access);
    temporary.batch_scan(&partition, &images()).await;

    // token, with a 401 renewal and a refused password.
    let iam = FakeIam::start(
        hss.credentials(),
        clock.clone(),
        iam_user(),
        Duration::from_secs(24 * 3600),
    )
    .await;
    let token = HssClient::with_clock(
        &token_settings(&hss.uri(), &iam.uri(), PASSWORD),
        clock.clone(),
    )
    .unwrap();
    token.batch_scan(&partition, &images()).await;
    hss.revoke_token(&iam.tokens()[0]);
    token.batch_scan(&partition, &images()).await;
    let wrong = HssClient::with_clock(
        &token_settings(&hss.uri(), &iam.uri(), "wrong-password-do-not-log"),
        clock.clone(),
    )
    .unwrap();
    wrong.batch_scan(&partition, &images()).await;

    let text = logs.text();
    // The calls were logged at all (else "no secret" would prove nothing).
    assert_eq!(text.matches("HSS batch-scan call").count(), 8, "{text}");
    assert!(text.contains("hss_request_id=\"fake-req-1\""), "{text}");
    assert!(text.contains("partition=private_image||0"), "{text}");
    let mut secrets = vec![
        SK.to_string(),
        "static-security-token-value".to_string(),
        PASSWORD.to_string(),
        "wrong-password-do-not-log".to_string(),
    ];
    for key in metadata.issued_keys() {
        secrets.push(key.secret);
        secrets.push(key.security_token);
    }
    secrets.extend(iam.tokens());
    secrets.extend(metadata.sessions());
    // Two temporary keys, two IAM tokens, one metadata session.
    assert_eq!(secrets.len(), 4 + 2 * 2 + 2 + 1);
    let debug = format!("{aksk:?} {temporary:?} {token:?}");
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a secret leaked into the logs"
        );
        assert!(
            !debug.contains(secret.as_str()),
            "a secret leaked into Debug"
        );
    }
    assert!(
        !text.contains("Signature="),
        "an Authorization header was logged"
    );
}
