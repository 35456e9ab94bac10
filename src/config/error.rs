//! The one error type of the settings layer: every message names the file or
//! the key path, and the reason.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration from {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The same error with its key placed under `prefix`: a section parser
    /// names keys relative to its table (`verify.header`), its caller knows
    /// where that table is (`sources[2]`).
    pub fn under(self, prefix: &str) -> Self {
        match self {
            ConfigError::Invalid { key, reason } => ConfigError::Invalid {
                key: format!("{prefix}.{key}"),
                reason,
            },
            load @ ConfigError::Load { .. } => load,
        }
    }
}
