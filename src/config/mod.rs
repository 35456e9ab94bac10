//! Settings, typed once at load time: built-in defaults, then the TOML file,
//! then `SWR_SCAN_BRIDGE__…` environment overrides ([`raw`]), then each section
//! parsed into the types the rest of the bridge takes (socket addresses, store
//! locations, positive spans, HSS auth with its own fields, prepared verifiers
//! and compiled filters). Nothing downstream checks a setting again; an
//! invalid one is refused here, named by its key path.
//!
//! One file per section; a new key goes into [`raw`] (file format and default)
//! and the section file that parses it.

pub mod batch;
pub mod endpoint;
pub mod error;
pub mod hss;
pub mod log;
mod parse;
pub mod raw;
pub mod server;
pub mod sources;
pub mod store;
pub mod swr;
pub mod verify;

use std::path::Path;

pub use batch::BatchSettings;
pub use endpoint::ApiEndpoint;
pub use error::ConfigError;
pub use hss::{HssAuth, HssSettings};
pub use log::LogSettings;
pub use raw::{ENV_PREFIX, LogFormat, PayloadFormat, RawSettings, SourceFormat, VerifyScheme};
pub use server::ServerSettings;
pub use sources::{PollSettings, SourceKind, SourceSettings, WebhookSettings};
pub use store::{StoreLocation, StoreSettings};
pub use swr::SwrSettings;
pub use verify::VerifySettings;

/// Names the config file when `--config` is omitted.
pub const CONFIG_PATH_ENV: &str = "SWR_SCAN_BRIDGE_CONFIG";

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub batch: BatchSettings,
    pub hss: HssSettings,
    pub swr: SwrSettings,
    pub sources: Vec<SourceSettings>,
    pub log: LogSettings,
}

impl Settings {
    /// Loads `path` (TOML) with environment overrides on top, then types it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&RawSettings::load(path)?)
    }

    /// Loads a TOML document given as text (tests, the demo), no environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(&RawSettings::from_toml(text)?)
    }

    /// Types every section. The first broken rule wins, named by its key path.
    pub fn parse(raw: &RawSettings) -> Result<Self, ConfigError> {
        let server = ServerSettings::parse(&raw.server)?;
        let store = StoreSettings::parse(&raw.store, raw.hss.request_timeout_ms)?;
        let batch = BatchSettings::parse(&raw.batch)?;
        let hss = HssSettings::parse(&raw.hss)?;
        let swr = SwrSettings::parse(&raw.swr, &hss.region)?;
        let sources =
            SourceSettings::parse_all(&raw.sources, hss.enterprise_project_id.as_deref())?;
        let log = LogSettings::parse(&raw.log)?;
        Ok(Self {
            server,
            store,
            batch,
            hss,
            swr,
            sources,
            log,
        })
    }

    pub fn source(&self, name: &str) -> Option<&SourceSettings> {
        self.sources.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests;
