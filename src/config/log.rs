//! `[log]`: format and filter of the service's own logs.

use tracing_subscriber::filter::Directive;

use super::error::ConfigError;
use super::raw::{LogFormat, RawLog};

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// The `EnvFilter` directives of `log.level`; `RUST_LOG` wins when set.
    pub directives: Vec<Directive>,
}

impl LogSettings {
    pub fn parse(raw: &RawLog) -> Result<Self, ConfigError> {
        let directives = raw
            .level
            .split(',')
            .map(str::trim)
            .filter(|directive| !directive.is_empty())
            .map(|directive| {
                directive.parse().map_err(|e| {
                    ConfigError::invalid(
                        "log.level",
                        format!("\"{directive}\" is not a log filter directive like info or swr_scan_bridge=debug: {e}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            format: raw.format,
            directives,
        })
    }
}
