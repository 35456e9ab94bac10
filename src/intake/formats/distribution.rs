//! TODO(intake helper): the distribution payload format.

use super::{ParsedWebhook, PayloadError};

pub fn parse(_body: &[u8]) -> Result<ParsedWebhook, PayloadError> {
    Err(PayloadError::Json("not implemented yet".into()))
}
