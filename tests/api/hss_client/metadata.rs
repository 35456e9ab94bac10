//! Temporary AK/SK from the ECS/CCE metadata service: cached, shared, renewed.

use super::*;

#[tokio::test]
async fn metadata_credentials_are_cached_then_refreshed_under_forty_minutes() {
    let Rig {
        hss,
        clock,
        issuer: metadata,
        client,
    } = metadata_rig(Duration::from_secs(2 * 3600)).await;
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
    let Rig {
        hss: _hss,
        clock: _clock,
        issuer: metadata,
        client,
    } = metadata_rig(Duration::from_secs(3600)).await;
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
    let Rig {
        hss: _hss,
        clock,
        issuer: metadata,
        client,
    } = metadata_rig(Duration::from_secs(3600)).await;
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
    let Rig {
        hss,
        clock: _clock,
        issuer: metadata,
        client,
    } = metadata_rig(Duration::from_secs(3600)).await;
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
    let Rig {
        hss,
        clock: _clock,
        issuer: metadata,
        client,
    } = metadata_rig(Duration::from_secs(3600)).await;
    metadata.script_security_key(vec![
        ResponseTemplate::new(404).set_body_string("Please configure Cloud Service Agency first"),
        ResponseTemplate::new(503),
    ]);
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
    let port = free_port();
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
