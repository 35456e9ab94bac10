//! What the batcher asks of HSS: send one batch, say how it ended.

use std::time::Duration;

use serde::Serialize;

use crate::domain::{BatchImage, Partition};

/// How one batch-scan call ended, as the batcher needs to know it.
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
    fn api(&self) -> super::api::HssApi {
        super::api::HssApi::BatchScan
    }

    async fn batch_scan(&self, partition: &Partition, images: &[BatchImage]) -> ScanOutcome;
}
