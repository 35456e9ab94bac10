//! `[batch]`: when a partition is sent, and how failed sends are retried.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use super::error::ConfigError;
use super::parse::{non_zero, positive_millis};
use super::raw::RawBatch;
use crate::domain::PositiveMillis;

#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// A partition is sent when its oldest image has waited this long …
    pub window: PositiveMillis,
    /// … or when it holds this many images, whichever comes first.
    pub max_images: NonZeroUsize,
    /// First retry delay ceiling (positive, at most `retry_max`); doubles per
    /// attempt, with full jitter below it.
    pub retry_base: Duration,
    /// Upper bound of any retry delay.
    pub retry_max: Duration,
    /// Digest resolution: how often SWR is asked for an untagged digest's tags …
    pub resolve_attempts: NonZeroU32,
    /// … and how far apart (`batch.resolve_delay_ms`, default the window).
    pub resolve_delay: PositiveMillis,
}

impl BatchSettings {
    pub fn parse(raw: &RawBatch) -> Result<Self, ConfigError> {
        let window = positive_millis("batch.window_ms", raw.window_ms)?;
        let max_images = non_zero("batch.max_images", raw.max_images)?;
        if raw.retry_base_ms == 0 || raw.retry_base_ms > raw.retry_max_ms {
            return Err(ConfigError::invalid(
                "batch.retry_base_ms",
                "must be greater than 0 and at most batch.retry_max_ms",
            ));
        }
        let resolve_attempts = NonZeroU32::new(raw.resolve_attempts).ok_or_else(|| {
            ConfigError::invalid(
                "batch.resolve_attempts",
                "must be at least 1 (SWR is asked at least once per digest)",
            )
        })?;
        let resolve_delay = match raw.resolve_delay_ms {
            None => window,
            Some(millis) => positive_millis("batch.resolve_delay_ms", millis)?,
        };
        Ok(Self {
            window,
            resolve_attempts,
            resolve_delay,
            max_images,
            retry_base: Duration::from_millis(raw.retry_base_ms),
            retry_max: Duration::from_millis(raw.retry_max_ms),
        })
    }
}
