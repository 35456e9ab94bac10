//! Parsing steps several sections share, each failing with the key path.

use std::num::NonZeroUsize;

use super::error::ConfigError;
use crate::domain::PositiveMillis;

pub fn positive_millis(key: &str, millis: u64) -> Result<PositiveMillis, ConfigError> {
    PositiveMillis::new(millis).ok_or_else(|| {
        ConfigError::invalid(
            key,
            if millis == 0 {
                "must be greater than 0".to_string()
            } else {
                format!("must be at most {}", i64::MAX)
            },
        )
    })
}

pub fn non_zero(key: &str, value: usize) -> Result<NonZeroUsize, ConfigError> {
    NonZeroUsize::new(value).ok_or_else(|| ConfigError::invalid(key, "must be greater than 0"))
}

/// A count that may be left out, but is not 0 when given; `when_absent` says
/// what leaving it out means ("for no limit").
pub fn optional_non_zero<T, N: TryFrom<T>>(
    key: &str,
    value: Option<T>,
    when_absent: &str,
) -> Result<Option<N>, ConfigError> {
    value
        .map(|value| {
            N::try_from(value).map_err(|_| {
                ConfigError::invalid(
                    key,
                    format!("must be greater than 0, or absent {when_absent}"),
                )
            })
        })
        .transpose()
}
