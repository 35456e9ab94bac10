//! The real `swr-scan-bridge` binary as a child process, for tests that kill,
//! signal or restart it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::helpers::wait_until;

pub struct BridgeProcess {
    pub child: Child,
    pub address: String,
    pub log_path: PathBuf,
}

/// A port that was free a moment ago (the child binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

impl BridgeProcess {
    /// Starts `serve --config <dir>/config.toml` with `config` written there,
    /// logging to `<dir>/<log_name>`, and waits until it answers /healthz.
    pub async fn start(dir: &Path, config: &str, port: u16, log_name: &str) -> BridgeProcess {
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log_path = dir.join(log_name);
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_swr-scan-bridge"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("bridge starts");
        let process = BridgeProcess {
            child,
            address: format!("http://127.0.0.1:{port}"),
            log_path,
        };
        let client = reqwest::Client::new();
        let health = format!("{}/healthz", process.address);
        wait_until(Duration::from_secs(20), "bridge answers /healthz", || {
            let request = client.get(&health).send();
            async move { request.await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        process
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// SIGKILL: no drain, no flush, nothing but what the store already holds.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
