//! AK/SK: the request as HSS expects it, signed anew on every attempt.

use super::*;

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
    let settings = aksk_settings_with(&hss.uri(), "security_token = \"static-security-token+/==\"");
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
