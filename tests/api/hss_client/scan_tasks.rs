//! The successor API, `CreateManualImageScanTask`: same batches, its own path,
//! query and body.

use super::*;

const DIGEST: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
const INSTANCE: &str = "4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6";

fn scan_tasks_client(endpoint: &str, scope: &str) -> HssClient {
    let mut settings = aksk_settings(endpoint);
    settings.api = HssApi::ScanTasks;
    settings.scan_scope = serde_json::from_str(scope).unwrap();
    HssClient::with_clock(&settings, clock()).unwrap()
}

#[tokio::test]
async fn scan_tasks_calls_are_signed_with_the_registry_query_and_the_sdk_body() {
    let hss = FakeHss::start(AK, SK).await;
    let client = scan_tasks_client(&hss.uri(), r#"["vulnerability","sensitive"]"#);
    assert_eq!(client.api(), HssApi::ScanTasks);
    let partition = Partition {
        image_type: ImageType::InstanceImage,
        instance_id: Some(INSTANCE.into()),
        enterprise_project_id: Some("0".into()),
    };
    let images = vec![
        BatchImage {
            image: ImageRef::new("team-a", "svc/api", "1.2.3"),
            instance_url: Some("ee-demo.swr.cn-north-4.myhuaweicloud.com".into()),
            digest: Some(DIGEST.into()),
        },
        BatchImage {
            image: ImageRef::new("team-a", "svc/api", "latest"),
            instance_url: Some("ee-demo.swr.cn-north-4.myhuaweicloud.com".into()),
            digest: None,
        },
    ];

    let outcome = client.batch_scan(&partition, &images).await;

    assert_eq!(outcome, accepted("fake-req-1"));
    let requests = hss.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.api, Api::ScanTasks);
    assert_eq!(request.problems, Vec::<String>::new());
    assert_eq!(
        request.verdict,
        Verdict::Signed {
            access_key: AK.into()
        }
    );
    assert_eq!(
        request.path,
        format!("/v5/{PROJECT}/image/image-scan/tasks")
    );
    // On the wire the query is in canonical (sorted) order, as signed.
    assert_eq!(
        request.query,
        vec![
            ("enterprise_project_id".to_string(), "0".to_string()),
            ("global_image_type".to_string(), "registry".to_string())
        ]
    );
    assert_eq!(request.header("x-project-id"), Some(PROJECT));
    assert_eq!(
        request.json(),
        json!({
            "scan_scope": 0x000f_00f0,
            "rate_limit": 0,
            "is_all": false,
            "image_info": [
                {
                    "namespace": "team-a",
                    "image_name": "svc/api",
                    "image_version": "1.2.3",
                    "registry_type": "SwrEnterprise",
                    "image_digest": DIGEST,
                    "instance_id": INSTANCE,
                    "instance_url": "ee-demo.swr.cn-north-4.myhuaweicloud.com"
                },
                {
                    "namespace": "team-a",
                    "image_name": "svc/api",
                    "image_version": "latest",
                    "registry_type": "SwrEnterprise",
                    "instance_id": INSTANCE,
                    "instance_url": "ee-demo.swr.cn-north-4.myhuaweicloud.com"
                }
            ]
        })
    );
}

#[tokio::test]
async fn scan_tasks_without_enterprise_project_send_only_the_registry_query() {
    let hss = FakeHss::start(AK, SK).await;
    let client = scan_tasks_client(&hss.uri(), r#"["all"]"#);
    let shared = Partition {
        image_type: ImageType::SharedImage,
        instance_id: None,
        enterprise_project_id: None,
    };

    let outcome = client.batch_scan(&shared, &images()).await;

    assert_eq!(outcome, accepted("fake-req-1"));
    let request = &hss.requests()[0];
    assert_eq!(request.problems, Vec::<String>::new());
    assert_eq!(
        request.query,
        vec![("global_image_type".to_string(), "registry".to_string())]
    );
    let body = request.json();
    assert_eq!(body["scan_scope"], json!(0x7fff_ffff));
    assert_eq!(
        body["image_info"][1],
        json!({"namespace": "test", "image_name": "nginx", "image_version": "1.27", "registry_type": "SwrShared"})
    );
}

#[tokio::test]
async fn scan_tasks_answers_classify_like_batch_scan_ones() {
    let hss = FakeHss::start(AK, SK).await;
    hss.respond_with_sequence(vec![
        Reply::throttled("7"),
        Reply::error(400, "HSS.1059", "Invalid registry type"),
    ]);
    let client = scan_tasks_client(&hss.uri(), r#"["malware"]"#);
    let partition = private_partition(None);

    let throttled = client.batch_scan(&partition, &images()).await;
    let refused = client.batch_scan(&partition, &images()).await;

    assert!(
        matches!(
            &throttled,
            ScanOutcome::Retryable { status: Some(429), retry_after: Some(delay), .. }
                if *delay == Duration::from_secs(7)
        ),
        "{throttled:?}"
    );
    assert_eq!(
        refused,
        ScanOutcome::Permanent {
            status: Some(400),
            error_code: Some("HSS.1059".into()),
            error_msg: "Invalid registry type".into(),
            request_id: Some("fake-req-2".into()),
        }
    );
    assert!(hss.requests_with_bad_signature().is_empty());
}
