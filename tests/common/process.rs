//! The real `swr-scan-bridge` binary as a child process, as operators run it
//! (`serve --config` from a file), for tests that kill, signal or restart it.
//! Its output is captured line by line; its address is the port it logs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::common::helpers::{base_config, wait_until};

pub const BINARY: &str = env!("CARGO_BIN_EXE_swr-scan-bridge");

/// A port that was free a moment ago (the child binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// The shared test configuration for a process: embedded store in its directory.
pub fn process_config(hss_endpoint: &str) -> String {
    base_config(hss_endpoint, "sqlite://{dir}/bridge.db")
}

/// Every line the process wrote, per stream.
#[derive(Default)]
struct Captured {
    stdout: Vec<String>,
    stderr: Vec<String>,
}

fn lock(captured: &Mutex<Captured>) -> MutexGuard<'_, Captured> {
    captured.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running bridge process with its directory and captured output; killed
/// when dropped.
pub struct BridgeProcess {
    child: Child,
    pub address: String,
    /// Holds `config.toml` (and the SQLite file of [`process_config`]).
    pub dir: PathBuf,
    /// The directory when the process owns it ([`BridgeProcess::start`]).
    _owned_dir: Option<TempDir>,
    output: Arc<Mutex<Captured>>,
    readers: Vec<JoinHandle<()>>,
}

impl BridgeProcess {
    /// [`BridgeProcess::start_in`] a fresh temp dir, removed with the process.
    pub async fn start(config: &str, env: &[(&str, String)]) -> BridgeProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut process = Self::start_in(dir.path(), config, env).await;
        process._owned_dir = Some(dir);
        process
    }

    /// Writes `config` to `<dir>/config.toml` (where `{dir}` in it names that
    /// dir), runs `serve --config` with `env`, and waits until it logs its
    /// port. `dir` outlives the process, so a restart finds the same files.
    pub async fn start_in(dir: &Path, config: &str, env: &[(&str, String)]) -> BridgeProcess {
        let config = config.replace("{dir}", &dir.display().to_string());
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut command = Command::new(BINARY);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .env_remove("SWR_SCAN_BRIDGE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn the bridge");
        let output = Arc::new(Mutex::new(Captured::default()));
        let (port_tx, mut port_rx) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let readers = vec![
            tokio::spawn(collect_lines(stdout, output.clone(), false, Some(port_tx))),
            tokio::spawn(collect_lines(stderr, output.clone(), true, None)),
        ];
        let port = tokio::time::timeout(Duration::from_secs(30), port_rx.recv())
            .await
            .ok()
            .flatten();
        let Some(port) = port else {
            let exit = child.try_wait();
            let captured = lock(&output);
            panic!(
                "the bridge did not log its port (exit: {exit:?}); stdout: {:?} stderr: {:?}",
                captured.stdout, captured.stderr
            )
        };
        BridgeProcess {
            child,
            address: format!("http://127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            _owned_dir: None,
            output,
            readers,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn port(&self) -> u16 {
        self.address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("bridge.db")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    pub fn sigterm(&self) {
        let pid = self.pid().expect("the bridge still runs");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// SIGKILL: no drain, no flush, nothing but what the store already holds.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL");
        self.finish_output().await;
    }

    /// Waits for the process to end (at most `limit`) and for its output.
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the bridge still runs after {limit:?}"))
            .expect("wait for the bridge");
        self.finish_output().await;
        status
    }

    async fn finish_output(&mut self) {
        for reader in self.readers.drain(..) {
            reader.await.expect("output reader");
        }
    }

    pub fn stdout(&self) -> Vec<String> {
        lock(&self.output).stdout.clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        lock(&self.output).stderr.clone()
    }

    /// Everything it wrote so far, stdout then stderr, one line each.
    pub fn logs(&self) -> String {
        let captured = lock(&self.output);
        let mut text = captured.stdout.join("\n");
        text.push('\n');
        text.push_str(&captured.stderr.join("\n"));
        text
    }
}

async fn collect_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    output: Arc<Mutex<Captured>>,
    is_stderr: bool,
    port_tx: Option<tokio::sync::mpsc::UnboundedSender<u16>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(tx) = &port_tx
            && let Ok(event) = serde_json::from_str::<Value>(&line)
            && event["message"] == "swr-scan-bridge listening"
            && let Some(port) = event["port"].as_u64()
        {
            let _ = tx.send(port as u16);
        }
        let mut captured = lock(&output);
        if is_stderr {
            captured.stderr.push(line);
        } else {
            captured.stdout.push(line);
        }
    }
}

/// Waits until the bridge answers `/readyz` with 200.
pub async fn wait_ready(client: &reqwest::Client, bridge: &BridgeProcess) {
    wait_until(Duration::from_secs(10), "bridge ready", || async {
        matches!(client.get(bridge.url("/readyz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
}
