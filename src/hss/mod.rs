//! The only component that talks to HSS: `POST /v5/{project_id}/image/batch-scan`,
//! or its successor `POST /v5/{project_id}/image/image-scan/tasks` (`hss.api`).
//!
//! - [`api`]: which of the two APIs carries the batches.
//! - [`batch_scan`], [`scan_tasks`]: the request body of each API.
//! - [`signer`]: SDK-HMAC-SHA256, byte for byte as the official SDKs sign.
//! - [`credentials`]: what authenticates a call: static AK/SK, temporary AK/SK
//!   from the ECS/CCE metadata service, or an IAM token; cached and renewed.
//! - [`client`]: builds, signs, sends and classifies one call per batch.

use std::time::Duration;

pub mod api;
pub mod batch_scan;
pub mod client;
pub mod credentials;
pub mod scan_tasks;
pub mod signer;

pub use api::HssApi;
pub use client::HssClient;

use serde::Serialize;

/// Why an [`HssClient`] cannot be built from the settings. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum HssError {
    #[error("config key `{key}`: \"{value}\" is not a usable URL: {reason}")]
    InvalidUrl {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("config key `{key}`: required when hss.auth = \"{auth}\"")]
    MissingSetting {
        key: &'static str,
        auth: &'static str,
    },
    #[error("cannot build the HTTP client for HSS: {0}")]
    HttpClient(String),
}

/// How one HSS call ended, as the batcher needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ScanOutcome {
    /// 2xx: HSS took the batch.
    Accepted {
        status: u16,
        request_id: Option<String>,
    },
    /// Worth another try later: connection error, timeout, 429, 500, 502, 503, 504.
    Retryable {
        status: Option<u16>,
        /// What went wrong, for logs; never contains a secret.
        reason: String,
        /// The server's `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
        request_id: Option<String>,
    },
    /// Any other 4xx (and credential failures that config must fix): the
    /// batch goes to dead letters.
    Permanent {
        status: Option<u16>,
        error_code: Option<String>,
        error_msg: String,
        request_id: Option<String>,
    },
}

/// Sends one batch to HSS. `HssClient` is the real one; the batcher's unit
/// tests script their own.
#[async_trait::async_trait]
pub trait ScanSender: Send + Sync + 'static {
    /// The HSS API the batches go to (a metrics label). Senders that speak
    /// only batch-scan keep this default.
    fn api(&self) -> HssApi {
        HssApi::BatchScan
    }

    async fn batch_scan(
        &self,
        partition: &crate::domain::Partition,
        images: &[crate::store::BatchImage],
    ) -> ScanOutcome;
}
