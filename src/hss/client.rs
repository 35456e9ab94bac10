//! PLACEHOLDER until the hss branch lands (replaced on merge).
use async_trait::async_trait;

use super::{ScanOutcome, ScanSender};
use crate::config::HssSettings;
use crate::domain::Partition;
use crate::store::BatchImage;

#[derive(Debug, thiserror::Error)]
#[error("hss client: {0}")]
pub struct HssError(String);

pub struct HssClient;

impl HssClient {
    pub fn new(_settings: &HssSettings) -> Result<Self, HssError> {
        Ok(HssClient)
    }
}

#[async_trait]
impl ScanSender for HssClient {
    async fn batch_scan(&self, _partition: &Partition, _images: &[BatchImage]) -> ScanOutcome {
        ScanOutcome::Retryable {
            status: None,
            reason: "placeholder".into(),
            retry_after: None,
            request_id: None,
        }
    }
}
