//! The configuration file as written: TOML sections mirrored by serde structs
//! (unknown keys refused, defaults filled), layered from built-in defaults, the
//! file and `SWR_SCAN_BRIDGE__…` environment overrides. The only place that
//! knows the file format; the section modules turn these into typed settings.
//!
//! `check-config` prints this view (defaults applied, secrets redacted), so
//! what it shows is exactly what was typed, under the names the file uses.
//!
//! A new key is a field here (with its default) and its parsing in the
//! section module that owns it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use crate::domain::ImageType;
use crate::hss::api::HssApi;
use crate::hss::scan_tasks::ScanScope;
use crate::secret::Secret;

/// Prefix of environment overrides: `SWR_SCAN_BRIDGE__BATCH__WINDOW_MS=500`.
pub const ENV_PREFIX: &str = "SWR_SCAN_BRIDGE";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub batch: RawBatch,
    pub hss: RawHss,
    #[serde(default)]
    pub swr: RawSwr,
    #[serde(default)]
    pub sources: Vec<RawSource>,
    #[serde(default)]
    pub log: RawLog,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServer {
    pub listen: String,
    pub max_body_bytes: usize,
    /// `/admin/*` is disabled when absent.
    pub admin_token: Option<Secret>,
    pub shutdown_grace_ms: u64,
    /// On shutdown, how long readiness answers 503 before the listener closes,
    /// so load balancers stop sending first. Capped by `shutdown_grace_ms`.
    pub drain_linger_ms: u64,
    /// actix worker threads; default: one per core.
    pub workers: Option<usize>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            max_body_bytes: 1024 * 1024,
            admin_token: None,
            shutdown_grace_ms: 10_000,
            drain_linger_ms: 1_000,
            workers: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawStore {
    /// `sqlite://relative.db`, `sqlite:///abs/path.db` or `postgres://…`.
    pub url: Secret,
    pub pool_size: usize,
    /// How long a claimed batch belongs to its worker before another may take it.
    pub lease_ms: u64,
    /// How long delivery ids are remembered to answer redeliveries as duplicates.
    pub delivery_retention_s: u64,
    /// How long each image's history is kept (`/admin/history`); 0 records none.
    pub history_retention_s: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            url: Secret::literal("sqlite://./data/bridge.db"),
            pool_size: 8,
            lease_ms: 60_000,
            delivery_retention_s: 24 * 3600,
            history_retention_s: 30 * 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawBatch {
    /// A partition is sent when its oldest image has waited this long …
    pub window_ms: u64,
    /// … or when it holds this many images, whichever comes first.
    pub max_images: usize,
    /// First retry delay ceiling; doubles per attempt (full jitter below it).
    pub retry_base_ms: u64,
    /// Upper bound of any retry delay.
    pub retry_max_ms: u64,
    /// Digest resolution: how often SWR is asked for an untagged digest's tags …
    pub resolve_attempts: u32,
    /// … and how far apart; default `window_ms`.
    pub resolve_delay_ms: Option<u64>,
}

impl Default for RawBatch {
    fn default() -> Self {
        Self {
            window_ms: 2_000,
            max_images: 100,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
            resolve_attempts: 5,
            resolve_delay_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HssAuthKind {
    Aksk,
    Token,
    Metadata,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHss {
    pub region: String,
    /// Default: derived from `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    pub project_id: String,
    #[serde(default)]
    pub enterprise_project_id: Option<String>,
    #[serde(default)]
    pub send_region_header: bool,
    #[serde(default = "default_auth")]
    pub auth: HssAuthKind,
    #[serde(default)]
    pub ak: Option<Secret>,
    #[serde(default)]
    pub sk: Option<Secret>,
    #[serde(default)]
    pub security_token: Option<Secret>,
    /// `auth = "token"`: default `https://iam.{region}.myhuaweicloud.com`.
    #[serde(default)]
    pub iam_endpoint: Option<String>,
    #[serde(default)]
    pub domain_name: Option<String>,
    #[serde(default)]
    pub user_name: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// `auth = "metadata"`: base URL of the ECS/CCE metadata service.
    #[serde(default = "default_metadata_url")]
    pub metadata_url: String,
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// `batch-scan` (default) or `scan-tasks`, HSS's successor API.
    #[serde(default)]
    pub api: HssApi,
    /// Risk classes scan-tasks asks for; default `["all"]`. Batch-scan always
    /// scans for everything and ignores it.
    #[serde(default)]
    pub scan_scope: ScanScope,
}

/// `[swr]`: the SWR API, with the `[hss]` credentials.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSwr {
    /// Default: derived from `hss.region`.
    pub endpoint: Option<String>,
}

fn default_auth() -> HssAuthKind {
    HssAuthKind::Aksk
}

fn default_metadata_url() -> String {
    "http://169.254.169.254".into()
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    Harbor,
    Cloudevents,
    Distribution,
}

/// `sources[].format`: a webhook sender's payload format, or `swr-poll` for
/// SWR basic edition, which sends no webhooks and is polled by the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Harbor,
    Cloudevents,
    Distribution,
    #[serde(rename = "swr-poll")]
    SwrPoll,
}

impl SourceFormat {
    /// The payload format of a webhook source; `None` for a poll source.
    pub fn payload(self) -> Option<PayloadFormat> {
        match self {
            SourceFormat::Harbor => Some(PayloadFormat::Harbor),
            SourceFormat::Cloudevents => Some(PayloadFormat::Cloudevents),
            SourceFormat::Distribution => Some(PayloadFormat::Distribution),
            SourceFormat::SwrPoll => None,
        }
    }
}

/// `[sources.poll]` of a `format = "swr-poll"` source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPoll {
    /// How often SWR is asked for what changed.
    pub interval_ms: u64,
    /// Namespaces to watch; absent: every namespace the credentials can list.
    pub namespaces: Option<Vec<String>>,
    /// True: the very first poll enqueues every tag it finds; false: it only
    /// records them, and later polls enqueue what is new.
    pub scan_existing: bool,
}

impl Default for RawPoll {
    fn default() -> Self {
        Self {
            interval_ms: 30_000,
            namespaces: None,
            scan_existing: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyScheme {
    Token,
    StandardWebhooks,
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// Path segment of `POST /webhooks/{name}` (webhook sources); a poll
    /// source's name labels its logs, metrics and poll state.
    pub name: String,
    pub format: SourceFormat,
    pub image_type: ImageType,
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Default: host of each resource's `resource_url`.
    #[serde(default)]
    pub instance_url: Option<String>,
    /// Default: `hss.enterprise_project_id`.
    #[serde(default)]
    pub enterprise_project_id: Option<String>,
    /// Webhook sources only (required there); poll sources receive no webhooks.
    #[serde(default)]
    pub verify: Option<RawVerify>,
    /// `format = "swr-poll"` only; absent means every default.
    #[serde(default)]
    pub poll: Option<RawPoll>,
    #[serde(default)]
    pub filter: RawFilter,
    /// Requests per second accepted from this source; excess gets 429. None: unlimited.
    #[serde(default)]
    pub rate_limit_per_s: Option<u32>,
    /// Digest-only pushes are resolved to their tags through SWR EE
    /// (instance_image sources only); when false they are ignored.
    #[serde(default)]
    pub resolve_digests: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub scheme: VerifyScheme,
    /// token and hmac-sha256: the header carrying the value.
    #[serde(default)]
    pub header: Option<String>,
    /// Several secrets allow rotation: any one that matches is enough.
    pub secrets: Vec<Secret>,
    #[serde(default = "default_tolerance_s")]
    pub tolerance_s: u64,
}

fn default_tolerance_s() -> u64 {
    300
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawFilter {
    /// Globs over `namespace/name:tag`; empty means every image.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, human-readable when it is.
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

impl RawSettings {
    /// Reads `path` (TOML) with environment overrides on top.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let load_error = |reason: String| ConfigError::Load {
            path: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(load_error(
                "no such file; pass --config FILE or set SWR_SCAN_BRIDGE_CONFIG".into(),
            ));
        }
        config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| load_error(e.to_string()))?
            .try_deserialize()
            .map_err(|e| load_error(tidy_key_paths(&e.to_string())))
    }

    /// Reads a TOML document given as text (tests, the demo), no environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let load_error = |reason: String| ConfigError::Load {
            path: "<inline>".into(),
            reason,
        };
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| load_error(e.to_string()))?
            .try_deserialize()
            .map_err(|e| load_error(e.to_string()))
    }
}

/// The config crate writes nested keys as `sources[0]verify`; make them `sources[0].verify`.
fn tidy_key_paths(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut previous = ' ';
    for c in message.chars() {
        if previous == ']' && (c.is_ascii_alphabetic() || c == '_') {
            out.push('.');
        }
        out.push(c);
        previous = c;
    }
    out
}
