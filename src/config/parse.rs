//! Parsing steps several sections share, each failing with the key path.

use std::num::NonZeroUsize;

use reqwest::Url;

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

/// An `http://` or `https://` URL with a host and neither query nor fragment,
/// trailing slashes dropped: a base that API paths are appended to.
pub fn base_url(key: &str, value: &str) -> Result<Url, ConfigError> {
    if !(value.starts_with("https://") || value.starts_with("http://")) {
        return Err(ConfigError::invalid(
            key,
            "must be an http:// or https:// URL",
        ));
    }
    let unusable = |reason: &str| {
        ConfigError::invalid(key, format!("\"{value}\" is not a usable URL: {reason}"))
    };
    let url = Url::parse(value.trim_end_matches('/')).map_err(|e| unusable(&e.to_string()))?;
    if url.host_str().is_none() {
        return Err(unusable("has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(unusable("must not carry a query or fragment"));
    }
    Ok(url)
}
