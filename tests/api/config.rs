//! The CLI's configuration commands, run as the real binary.

use std::process::Command;

fn bridge(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_swr-scan-bridge"));
    command.args(args).env_remove("SWR_SCAN_BRIDGE_CONFIG");
    for (name, value) in envs {
        command.env(name, value);
    }
    let output = command.output().expect("binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");

const EXAMPLE_SECRETS: [(&str, &str); 5] = [
    ("BRIDGE_ADMIN_TOKEN", "admin-secret-value"),
    ("HUAWEICLOUD_SDK_AK", "AK-secret-value"),
    ("HUAWEICLOUD_SDK_SK", "SK-secret-value"),
    ("SWR_WEBHOOK_TOKEN", "swr-secret-value"),
    (
        "HARBOR_WEBHOOK_SECRET",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ),
];

#[test]
fn check_config_prints_the_example_with_secrets_redacted() {
    let mut envs = EXAMPLE_SECRETS.to_vec();
    envs.push(("SWR_SCAN_BRIDGE__BATCH__WINDOW_MS", "750"));
    let (code, stdout, stderr) = bridge(&["check-config", "--config", EXAMPLE], &envs);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("window_ms = 750"),
        "environment overrides apply:\n{stdout}"
    );
    assert!(stdout.contains("[redacted]"));
    for (_, secret) in EXAMPLE_SECRETS {
        assert!(!stdout.contains(secret), "{secret} leaked:\n{stdout}");
    }
}

#[test]
fn config_path_may_come_from_the_environment() {
    let mut envs = EXAMPLE_SECRETS.to_vec();
    envs.push(("SWR_SCAN_BRIDGE_CONFIG", EXAMPLE));
    let (code, _, stderr) = bridge(&["check-config"], &envs);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn broken_configs_name_the_key_and_exit_2() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "SWR_WEBHOOK_TOKEN"),
        (
            &[("SWR_SCAN_BRIDGE__BATCH__WINDOW_MS", "soon")],
            "batch.window_ms",
        ),
        (
            &[("SWR_SCAN_BRIDGE__BATCH__MAX_IMAGES", "0")],
            "batch.max_images",
        ),
        (
            &[("SWR_SCAN_BRIDGE__SERVER__LISTEN", "everywhere")],
            "server.listen",
        ),
    ];
    for (overrides, expected) in cases {
        let mut envs: Vec<(&str, &str)> = if expected == "SWR_WEBHOOK_TOKEN" {
            EXAMPLE_SECRETS
                .iter()
                .copied()
                .filter(|(k, _)| *k != "SWR_WEBHOOK_TOKEN")
                .collect()
        } else {
            EXAMPLE_SECRETS.to_vec()
        };
        envs.extend_from_slice(overrides);
        let (code, _, stderr) = bridge(&["check-config", "--config", EXAMPLE], &envs);
        assert_eq!(code, 2, "{expected}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{expected} not named in: {stderr}"
        );
    }
    let (code, _, stderr) = bridge(&["check-config", "--config", "/nonexistent.toml"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent.toml"), "{stderr}");
}

#[test]
fn semantic_mistakes_are_explained() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[hss]
region = "cn-north-4"
project_id = "p"
ak = "a"
sk = "s"
[[sources]]
name = "ee"
format = "harbor"
image_type = "instance_image"
[sources.verify]
scheme = "token"
secrets = ["t"]
"#,
    )
    .expect("write");
    let (code, _, stderr) = bridge(
        &["check-config", "--config", path.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("sources[0].instance_id"), "{stderr}");
    assert!(stderr.contains("instance_image"), "{stderr}");
}
