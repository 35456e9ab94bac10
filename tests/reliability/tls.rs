//! TLS verification is on by default for HSS: an https endpoint on 127.0.0.1
//! presenting a self-signed certificate is refused, while a client told to
//! trust that very certificate talks to the same server fine (so the refusal
//! is the verification, not a broken server).
//!
//! The fixture certificate (`fixtures/self-signed-cert.der`, P-256, valid
//! 2020–2120, SAN 127.0.0.1 and localhost) and its key are test-only.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use swr_scan_bridge::config::Settings;
use swr_scan_bridge::domain::{ImageRef, ImageType, Partition};
use swr_scan_bridge::hss::{HssClient, ScanOutcome, ScanSender};
use swr_scan_bridge::store::BatchImage;

use crate::helpers::*;
use crate::support::Summary;

const CERT: &[u8] = include_bytes!("fixtures/self-signed-cert.der");
const KEY: &[u8] = include_bytes!("fixtures/self-signed-key.der");

/// An https server answering every request `200 {}`; counts the requests it
/// served and the handshakes that failed.
struct TlsServer {
    port: u16,
    served: Arc<AtomicUsize>,
    failed_handshakes: Arc<AtomicUsize>,
}

async fn start_tls_server() -> TlsServer {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(CERT.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(KEY.to_vec())),
        )
        .expect("certificate and key");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let served = Arc::new(AtomicUsize::new(0));
    let failed_handshakes = Arc::new(AtomicUsize::new(0));
    let (served_count, failed_count) = (served.clone(), failed_handshakes.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let (served, failed) = (served_count.clone(), failed_count.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    failed.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let mut head = [0u8; 16 * 1024];
                if tls.read(&mut head).await.unwrap_or(0) > 0 {
                    served.fetch_add(1, Ordering::SeqCst);
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    TlsServer {
        port,
        served,
        failed_handshakes,
    }
}

fn one_image() -> (Partition, Vec<BatchImage>) {
    (
        Partition {
            image_type: ImageType::PrivateImage,
            instance_id: None,
            enterprise_project_id: None,
        },
        vec![BatchImage {
            image: ImageRef::new("team-a", "api", "tls"),
            instance_url: None,
            digest: None,
        }],
    )
}

#[tokio::test]
async fn hss_with_a_self_signed_certificate_is_refused() {
    let mut summary = Summary::start("security_tls_verification");
    let server = start_tls_server().await;
    let endpoint = format!("https://127.0.0.1:{}", server.port);
    let settings = Settings::from_toml(&base_config(&endpoint, "memory://")).expect("config");
    let client = HssClient::new(&settings.hss).expect("client");
    let (partition, images) = one_image();
    let outcome = client.batch_scan(&partition, &images).await;
    let ScanOutcome::Retryable { status, reason, .. } = &outcome else {
        panic!("an untrusted certificate must fail the call: {outcome:?}");
    };
    assert_eq!(*status, None, "no HTTP answer was read");
    assert!(
        reason.to_lowercase().contains("certificate"),
        "the reason names the certificate: {reason}"
    );
    assert_eq!(
        server.served.load(Ordering::SeqCst),
        0,
        "no request got through"
    );
    let failed = server.failed_handshakes.clone();
    wait_until(
        std::time::Duration::from_secs(5),
        "the server saw the handshake fail",
        || {
            let failed = failed.load(Ordering::SeqCst);
            async move { failed >= 1 }
        },
    )
    .await;

    // Control: trusting this certificate, a client is served by the same server.
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(CERT).expect("der"))
        .build()
        .expect("client");
    let answer = trusting
        .post(format!("{endpoint}/v5/{PROJECT_ID}/image/batch-scan"))
        .body("{}")
        .send()
        .await
        .expect("the trusting client completes the handshake");
    assert_eq!(answer.status(), 200);
    assert_eq!(server.served.load(Ordering::SeqCst), 1);
    summary
        .count("bridge_outcome", "retryable_no_status")
        .count(
            "failed_handshakes",
            server.failed_handshakes.load(Ordering::SeqCst),
        )
        .count(
            "served_to_trusting_client",
            server.served.load(Ordering::SeqCst),
        )
        .print();
}
