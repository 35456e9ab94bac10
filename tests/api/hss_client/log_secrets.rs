//! No secret of any auth mode reaches the logs.

use super::*;

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
    // tracing caches each callsite's interest once, process-wide. While this
    // test's scoped subscriber is the only dispatcher, a callsite first reached
    // by a concurrent test (a thread without a subscriber) is cached as
    // "never" and its events would not reach this test. A global subscriber
    // that records nothing makes every registration ask all dispatchers,
    // this one included. (Another test may have installed one first: fine.)
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
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
    let settings = aksk_settings_with(
        &hss.uri(),
        "security_token = \"static-security-token-value\"",
    );
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
    assert_eq!(text.matches("HSS call partition=").count(), 8, "{text}");
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
