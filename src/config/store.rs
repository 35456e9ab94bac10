//! `[store]`: which durable queue, how many connections, how long a claim lasts.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use super::error::ConfigError;
use super::parse::{non_zero, positive_millis};
use super::raw::RawStore;
use crate::domain::PositiveMillis;
use crate::secret::Secret;
use crate::store::postgres::connect_config::{self, ConnectConfig};

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub location: StoreLocation,
    pub pool_size: NonZeroUsize,
    /// How long a claimed batch belongs to its worker before another may take it.
    pub lease: PositiveMillis,
    /// How long delivery ids are remembered to answer redeliveries as duplicates.
    pub delivery_retention: Duration,
    /// How long each image's history is kept; `None` (`history_retention_s =
    /// 0`): no history is recorded at all.
    pub history_retention: Option<PositiveMillis>,
}

/// The backend `store.url` selects. Only durable stores: the in-memory one is
/// for tests, which build it directly.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// `sqlite://relative.db` or `sqlite:///abs/path.db`.
    Sqlite(PathBuf),
    /// The `postgres://` URL, parsed: server, credentials (redacted in
    /// `Debug`), `sslmode` and `sslrootcert`.
    Postgres(Box<ConnectConfig>),
}

impl StoreSettings {
    /// `hss_request_timeout_ms`: a lease must outlast the slowest HSS call.
    pub fn parse(raw: &RawStore, hss_request_timeout_ms: u64) -> Result<Self, ConfigError> {
        let location = StoreLocation::parse(&raw.url)?;
        let pool_size = non_zero("store.pool_size", raw.pool_size)?;
        if raw.lease_ms <= hss_request_timeout_ms {
            return Err(ConfigError::invalid(
                "store.lease_ms",
                format!(
                    "must exceed hss.request_timeout_ms ({hss_request_timeout_ms}), or a slow request would lose its lease mid-flight"
                ),
            ));
        }
        Ok(Self {
            location,
            pool_size,
            lease: positive_millis("store.lease_ms", raw.lease_ms)?,
            delivery_retention: Duration::from_secs(raw.delivery_retention_s),
            history_retention: match raw.history_retention_s {
                0 => None,
                seconds => Some(positive_millis(
                    "store.history_retention_s",
                    seconds.saturating_mul(1_000),
                )?),
            },
        })
    }
}

impl StoreLocation {
    fn parse(url: &Secret) -> Result<Self, ConfigError> {
        let text = url.expose();
        if let Some(path) = text.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(ConfigError::invalid(
                    "store.url",
                    "sqlite:// needs a file path, e.g. sqlite://./data/bridge.db",
                ));
            }
            Ok(StoreLocation::Sqlite(PathBuf::from(path)))
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            // The error names the server and the part that is wrong, never the password.
            connect_config::parse(text)
                .map(|config| StoreLocation::Postgres(Box::new(config)))
                .map_err(|error| {
                    ConfigError::invalid(
                        "store.url",
                        error
                            .to_string()
                            .trim_start_matches("store.url: ")
                            .to_string(),
                    )
                })
        } else {
            Err(ConfigError::invalid(
                "store.url",
                "must start with sqlite://, postgres:// or postgresql://",
            ))
        }
    }
}
