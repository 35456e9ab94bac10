//! IAM tokens: sent, cached, renewed before expiry and after a 401.

use super::*;

#[tokio::test]
async fn iam_token_is_sent_cached_and_renewed_before_expiry() {
    let Rig {
        hss,
        clock,
        issuer: iam,
        client,
    } = iam_rig(PASSWORD).await;
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
    let Rig {
        hss,
        clock: _clock,
        issuer: iam,
        client,
    } = iam_rig(PASSWORD).await;
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
    let Rig {
        hss,
        clock,
        issuer: iam,
        client: wrong,
    } = iam_rig("not-the-password").await;
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
