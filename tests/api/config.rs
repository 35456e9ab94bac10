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

/// A minimal valid config with `hss_lines` added to its `[hss]` table.
fn check_hss_lines(hss_lines: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bridge.toml");
    std::fs::write(
        &path,
        format!(
            "[hss]\nregion = \"cn-north-4\"\nproject_id = \"p\"\nak = \"a\"\nsk = \"s\"\n{hss_lines}\n"
        ),
    )
    .expect("write");
    bridge(
        &["check-config", "--config", path.to_str().expect("utf-8")],
        &[],
    )
}

#[test]
fn hss_api_and_scan_scope_are_read_and_printed() {
    let hss_of = |stdout: &str| -> toml::Value {
        let printed: toml::Table = toml::from_str(stdout).expect("check-config prints TOML");
        printed["hss"].clone()
    };
    let (code, stdout, stderr) = check_hss_lines("");
    assert_eq!(code, 0, "{stderr}");
    let hss = hss_of(&stdout);
    assert_eq!(hss["api"].as_str(), Some("batch-scan"), "{stdout}");
    assert_eq!(
        hss["scan_scope"],
        toml::Value::Array(vec!["all".into()]),
        "the effective config shows the default scope: {stdout}"
    );

    // The contract's own example sets both; batch-scan simply scans for everything.
    let (code, _, stderr) = check_hss_lines("api = \"batch-scan\"\nscan_scope = [\"all\"]");
    assert_eq!(code, 0, "{stderr}");

    let (code, stdout, stderr) =
        check_hss_lines("api = \"scan-tasks\"\nscan_scope = [\"malware\", \"vulnerability\"]");
    assert_eq!(code, 0, "{stderr}");
    let hss = hss_of(&stdout);
    assert_eq!(hss["api"].as_str(), Some("scan-tasks"), "{stdout}");
    assert_eq!(
        hss["scan_scope"],
        toml::Value::Array(vec!["vulnerability".into(), "malware".into()]),
        "{stdout}"
    );
}

#[test]
fn hss_api_and_scan_scope_mistakes_name_the_key() {
    for (lines, key, detail) in [
        ("api = \"scan_tasks\"", "hss.api", "scan_tasks"),
        (
            "api = \"scan-tasks\"\nscan_scope = [\"viruses\"]",
            "hss.scan_scope",
            "viruses",
        ),
        (
            "api = \"scan-tasks\"\nscan_scope = []",
            "hss.scan_scope",
            "at least one risk class",
        ),
    ] {
        let (code, _, stderr) = check_hss_lines(lines);
        assert_eq!(code, 2, "{lines}: {stderr}");
        assert!(
            stderr.contains(key),
            "{key} not named for {lines}: {stderr}"
        );
        assert!(
            stderr.contains(detail),
            "{detail} missing for {lines}: {stderr}"
        );
    }
}
