//! How each HSS answer (or its absence) is classified: accepted, retryable, permanent.

use super::*;

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
    settings.request_timeout = Duration::from_millis(200);
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
    let port = free_port();
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
fn a_bad_endpoint_is_refused_when_settings_load() {
    let error = Settings::from_toml(&format!(
        "[hss]\nregion = \"cn-north-4\"\nproject_id = \"{PROJECT}\"\n\
         endpoint = \"http://exa mple\"\nak = \"{AK}\"\nsk = \"{SK}\""
    ))
    .unwrap_err();
    assert!(
        error.to_string().starts_with("config key `hss.endpoint`"),
        "{error}"
    );
}
