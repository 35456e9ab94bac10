//! `demo`, run as the real binary, for each HSS API: it exits 0 only when the
//! stand-in HSS found every request correctly signed and shaped.

use std::process::Command;

fn demo(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_swr-scan-bridge"))
        .arg("demo")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn demo_shows_batch_scan_by_default_and_scan_tasks_on_request() {
    let mut scan_tasks_output = String::new();
    for (args, path, api) in [
        (&[][..], "/image/batch-scan", "batch-scan"),
        (
            &["--api", "scan-tasks"][..],
            "/image/image-scan/tasks?enterprise_project_id=0&global_image_type=registry",
            "scan-tasks",
        ),
    ] {
        let (code, stdout, stderr) = demo(args);
        assert_eq!(code, 0, "{api}: {stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("{api} requests the bridge made (3)")),
            "{stdout}"
        );
        assert_eq!(stdout.matches(path).count(), 3, "{stdout}");
        assert_eq!(
            stdout.matches("body check by the stand-in: valid").count(),
            3,
            "{stdout}"
        );
        assert!(!stdout.contains("INVALID"), "{stdout}");
        scan_tasks_output = stdout;
    }
    let stdout = scan_tasks_output;
    assert!(stdout.contains("scan_scope: 0x000f0f00"), "{stdout}");
    assert!(
        stdout.contains("\"registry_type\": \"SwrEnterprise\""),
        "{stdout}"
    );

    let (code, _, stderr) = demo(&["--api", "scan_tasks"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("batch-scan or scan-tasks"), "{stderr}");
}
