//! The `sign` command: headers a person pastes into curl, accepted by a
//! running bridge for every scheme.

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::common::fake_hss::FakeHss;
use crate::common::helpers::*;
use crate::common::process::{BINARY, BridgeProcess, process_config, wait_ready};

/// Runs `sign` for a source; `body` goes through `--body FILE`, or stdin when `via_stdin`.
async fn sign(config: &Path, source: &str, body: &[u8], via_stdin: bool) -> Vec<(String, String)> {
    let mut command = Command::new(BINARY);
    command
        .args(["sign", "--config"])
        .arg(config)
        .args(["--source", source])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let body_file = tempfile::NamedTempFile::new().expect("body file");
    if via_stdin {
        command.stdin(Stdio::piped());
    } else {
        std::fs::write(body_file.path(), body).expect("write body");
        command
            .arg("--body")
            .arg(body_file.path())
            .stdin(Stdio::null());
    }
    let mut child = command.spawn().expect("spawn sign");
    if via_stdin {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(body).await.expect("write stdin");
        drop(stdin);
    }
    let output = child.wait_with_output().await.expect("sign output");
    assert!(
        output.status.success(),
        "sign failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let (name, value) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("not a header line: {line:?}"));
            (name.to_string(), value.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_prints_headers_that_a_running_bridge_accepts_for_every_scheme() {
    let hss = FakeHss::start(AK, SK).await;
    let bridge = BridgeProcess::start(&process_config(&hss.uri()), &[]).await;
    let config = bridge.config_path();
    let client = reqwest::Client::new();
    wait_ready(&client, &bridge).await;

    let cases: [(&str, Vec<u8>, bool, &[&str]); 4] = [
        (
            "swr-ee",
            sample("swr-ee-push-artifact.json"),
            false,
            &["Authorization"],
        ),
        (
            "harbor-ce",
            sample("harbor-cloudevents-push.json"),
            false,
            &["webhook-id", "webhook-timestamp", "webhook-signature"],
        ),
        (
            "registry",
            sample("distribution-notification.json"),
            false,
            &["X-Hub-Signature-256"],
        ),
        (
            "filtered",
            harbor_push("team-a", "api", "signed"),
            true,
            &["Authorization"],
        ),
    ];
    for (source, body, via_stdin, scheme_headers) in cases {
        let headers = sign(&config, source, &body, via_stdin).await;
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        let mut expected = vec!["Content-Type"];
        expected.extend_from_slice(scheme_headers);
        assert_eq!(names, expected, "{source}");
        assert_eq!(headers[0].1, "application/json");
        let mut request = client
            .post(bridge.url(&format!("/webhooks/{source}")))
            .body(body.clone());
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.send().await.expect("post");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.expect("json");
        assert_eq!(status, 202, "{source}: {answer}");
        assert_eq!(
            answer["accepted"],
            1 + u64::from(source == "swr-ee"),
            "{source}: {answer}"
        );

        // The same headers over a changed body are refused: they really sign this body.
        let mut tampered = body.clone();
        tampered.extend_from_slice(b" ");
        let mut request = client
            .post(bridge.url(&format!("/webhooks/{source}")))
            .body(tampered);
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let expected_status = match source {
            // A token does not depend on the body.
            "swr-ee" | "filtered" => 202,
            _ => 401,
        };
        let response = request.send().await.expect("post");
        assert_eq!(
            response.status().as_u16(),
            expected_status,
            "{source} tampered"
        );
    }

    let unknown = std::process::Command::new(BINARY)
        .args(["sign", "--config"])
        .arg(&config)
        .args(["--source", "nope", "--body"])
        .arg(&config)
        .output()
        .expect("sign");
    assert_eq!(unknown.status.code(), Some(2));
    let message = String::from_utf8_lossy(&unknown.stderr);
    assert!(message.contains("no source named \"nope\""), "{message}");
    assert!(
        message.contains("swr-ee, harbor-ce, registry, filtered"),
        "{message}"
    );
}
