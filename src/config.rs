//! Settings: built-in defaults, then the TOML file, then `SWR_SCAN_BRIDGE__…`
//! environment overrides; then validation that names the offending key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::{ImageType, Partition};
use crate::secret::Secret;

/// Prefix of environment overrides: `SWR_SCAN_BRIDGE__BATCH__WINDOW_MS=500`.
pub const ENV_PREFIX: &str = "SWR_SCAN_BRIDGE";
/// Names the config file when `--config` is omitted.
pub const CONFIG_PATH_ENV: &str = "SWR_SCAN_BRIDGE_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration from {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub batch: BatchSettings,
    pub hss: HssSettings,
    #[serde(default)]
    pub swr: SwrSettings,
    #[serde(default)]
    pub sources: Vec<SourceSettings>,
    #[serde(default)]
    pub log: LogSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
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

impl Default for ServerSettings {
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

impl ServerSettings {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite://relative.db`, `sqlite:///abs/path.db`, `postgres://…` or
    /// `memory://` (not durable: tests only).
    pub url: Secret,
    pub pool_size: usize,
    /// How long a claimed batch belongs to its worker before another may take it.
    pub lease_ms: u64,
    /// How long delivery ids are remembered to answer redeliveries as duplicates.
    pub delivery_retention_s: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: Secret::literal("sqlite://./data/bridge.db"),
            pool_size: 8,
            lease_ms: 60_000,
            delivery_retention_s: 24 * 3600,
        }
    }
}

/// Which backend `store.url` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres,
    Memory,
}

impl StoreSettings {
    pub fn location(&self) -> Result<StoreLocation, ConfigError> {
        let url = self.url.expose();
        if let Some(rest) = url.strip_prefix("sqlite://") {
            if rest.is_empty() {
                return Err(ConfigError::invalid(
                    "store.url",
                    "sqlite:// needs a file path, e.g. sqlite://./data/bridge.db",
                ));
            }
            Ok(StoreLocation::Sqlite(PathBuf::from(rest)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(StoreLocation::Postgres)
        } else if url == "memory://" {
            Ok(StoreLocation::Memory)
        } else {
            Err(ConfigError::invalid(
                "store.url",
                "must start with sqlite://, postgres:// or postgresql:// (or be memory:// for tests)",
            ))
        }
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSettings {
    /// A partition is sent when its oldest image has waited this long …
    pub window_ms: u64,
    /// … or when it holds this many images, whichever comes first.
    pub max_images: usize,
    /// First retry delay ceiling; doubles per attempt (full jitter below it).
    pub retry_base_ms: u64,
    /// Upper bound of any retry delay.
    pub retry_max_ms: u64,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            window_ms: 2_000,
            max_images: 100,
            retry_base_ms: 1_000,
            retry_max_ms: 300_000,
        }
    }
}

impl BatchSettings {
    pub fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }
}

/// The SWR API, asked for digest resolution and by poll sources, with the
/// `[hss]` credentials.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwrSettings {
    /// Default: derived from `hss.region`.
    pub endpoint: Option<String>,
}

impl SwrSettings {
    pub fn effective_endpoint(&self, region: &str) -> String {
        match &self.endpoint {
            Some(endpoint) => endpoint.trim_end_matches('/').to_string(),
            None if region == "eu-west-101" => {
                "https://swr-api.eu-west-101.myhuaweicloud.eu".to_string()
            }
            None => format!("https://swr-api.{region}.myhuaweicloud.com"),
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
pub struct HssSettings {
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

impl HssSettings {
    /// `hss.endpoint`, or the regional endpoint (eu-west-101 lives under `.eu`).
    pub fn effective_endpoint(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => endpoint.trim_end_matches('/').to_string(),
            None if self.region == "eu-west-101" => {
                "https://hss.eu-west-101.myhuaweicloud.eu".to_string()
            }
            None => format!("https://hss.{}.myhuaweicloud.com", self.region),
        }
    }

    pub fn effective_iam_endpoint(&self) -> String {
        match &self.iam_endpoint {
            Some(endpoint) => endpoint.trim_end_matches('/').to_string(),
            None if self.region == "eu-west-101" => {
                "https://iam.eu-west-101.myhuaweicloud.eu".to_string()
            }
            None => format!("https://iam.{}.myhuaweicloud.com", self.region),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    Harbor,
    Cloudevents,
    Distribution,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyScheme {
    Token,
    StandardWebhooks,
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

/// What a source is: a webhook sender in one of the payload formats, or SWR
/// basic edition polled by the bridge (it sends no webhooks).
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
pub struct PollSettings {
    /// How often SWR is asked for what changed.
    pub interval_ms: u64,
    /// Namespaces to watch; absent: every namespace the credentials can list.
    pub namespaces: Option<Vec<String>>,
    /// True: the very first poll enqueues every tag it finds; false: it only
    /// records them, and later polls enqueue what is new.
    pub scan_existing: bool,
}

/// Polling more often than this buys little (SWR's own update times are
/// coarse) and spends the account's SWR API quota.
pub const MIN_POLL_INTERVAL_MS: u64 = 1_000;

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            interval_ms: 30_000,
            namespaces: None,
            scan_existing: false,
        }
    }
}

impl PollSettings {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
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
    pub verify: Option<VerifySettings>,
    /// `format = "swr-poll"` only; absent means every default.
    #[serde(default)]
    pub poll: Option<PollSettings>,
    #[serde(default)]
    pub filter: FilterSettings,
    /// Requests per second accepted from this source; excess gets 429. None: unlimited.
    #[serde(default)]
    pub rate_limit_per_s: Option<u32>,
}

impl SourceSettings {
    /// The HSS request this source's images travel in.
    pub fn partition(&self, hss: &HssSettings) -> Partition {
        Partition {
            image_type: self.image_type,
            instance_id: match self.image_type {
                ImageType::InstanceImage => self.instance_id.clone(),
                _ => None,
            },
            enterprise_project_id: self
                .enterprise_project_id
                .clone()
                .or_else(|| hss.enterprise_project_id.clone()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySettings {
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

impl VerifySettings {
    pub fn effective_header(&self) -> &str {
        match (&self.header, self.scheme) {
            (Some(header), _) => header,
            (None, VerifyScheme::HmacSha256) => "X-Hub-Signature-256",
            (None, _) => "Authorization",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterSettings {
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
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info".into(),
        }
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

impl Settings {
    /// Loads `path` (TOML) with environment overrides on top, then validates.
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
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| load_error(e.to_string()))?;
        let settings: Settings = raw
            .try_deserialize()
            .map_err(|e| load_error(tidy_key_paths(&e.to_string())))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Loads a TOML document given as text (tests, the demo), no environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::Load {
                path: "<inline>".into(),
                reason: e.to_string(),
            })?;
        let settings: Settings = raw.try_deserialize().map_err(|e| ConfigError::Load {
            path: "<inline>".into(),
            reason: e.to_string(),
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Cross-field rules that serde cannot express. The first broken rule wins,
    /// named by its key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::invalid(
                "server.max_body_bytes",
                "must be greater than 0",
            ));
        }
        self.store.location()?;
        if self.store.pool_size == 0 {
            return Err(ConfigError::invalid(
                "store.pool_size",
                "must be greater than 0",
            ));
        }
        if self.store.lease_ms <= self.hss.request_timeout_ms {
            return Err(ConfigError::invalid(
                "store.lease_ms",
                format!(
                    "must exceed hss.request_timeout_ms ({}), or a slow request would lose its lease mid-flight",
                    self.hss.request_timeout_ms
                ),
            ));
        }
        if self.batch.window_ms == 0 {
            return Err(ConfigError::invalid(
                "batch.window_ms",
                "must be greater than 0",
            ));
        }
        if self.batch.max_images == 0 {
            return Err(ConfigError::invalid(
                "batch.max_images",
                "must be greater than 0",
            ));
        }
        if self.batch.retry_base_ms == 0 || self.batch.retry_base_ms > self.batch.retry_max_ms {
            return Err(ConfigError::invalid(
                "batch.retry_base_ms",
                "must be greater than 0 and at most batch.retry_max_ms",
            ));
        }
        self.validate_hss()?;
        self.validate_sources()
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            ConfigError::invalid(
                "server.listen",
                format!(
                    "\"{}\" is not a socket address like 0.0.0.0:8080",
                    self.server.listen
                ),
            )
        })
    }

    fn validate_hss(&self) -> Result<(), ConfigError> {
        let hss = &self.hss;
        if hss.region.is_empty() {
            return Err(ConfigError::invalid("hss.region", "must not be empty"));
        }
        if hss.project_id.is_empty() {
            return Err(ConfigError::invalid("hss.project_id", "must not be empty"));
        }
        if let Some(endpoint) = &hss.endpoint
            && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        {
            return Err(ConfigError::invalid(
                "hss.endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        if hss.request_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "hss.request_timeout_ms",
                "must be greater than 0",
            ));
        }
        match hss.auth {
            HssAuthKind::Aksk => {
                if hss.ak.is_none() {
                    return Err(ConfigError::invalid(
                        "hss.ak",
                        "required when hss.auth = \"aksk\"",
                    ));
                }
                if hss.sk.is_none() {
                    return Err(ConfigError::invalid(
                        "hss.sk",
                        "required when hss.auth = \"aksk\"",
                    ));
                }
            }
            HssAuthKind::Token => {
                for (key, present) in [
                    ("hss.domain_name", hss.domain_name.is_some()),
                    ("hss.user_name", hss.user_name.is_some()),
                    ("hss.password", hss.password.is_some()),
                ] {
                    if !present {
                        return Err(ConfigError::invalid(
                            key,
                            "required when hss.auth = \"token\"",
                        ));
                    }
                }
            }
            HssAuthKind::Metadata => {
                if !hss.metadata_url.starts_with("http://")
                    && !hss.metadata_url.starts_with("https://")
                {
                    return Err(ConfigError::invalid(
                        "hss.metadata_url",
                        "must be an http:// or https:// URL",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_sources(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (index, source) in self.sources.iter().enumerate() {
            let key = |field: &str| format!("sources[{index}].{field}");
            if source.name.is_empty()
                || !source
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
                || source.name.starts_with('.')
            {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!(
                        "\"{}\" must be non-empty and use only letters, digits, '-', '_' and '.' (it is a URL path segment)",
                        source.name
                    ),
                ));
            }
            if !seen.insert(source.name.as_str()) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!("\"{}\" is used by two sources", source.name),
                ));
            }
            if source.format == SourceFormat::SwrPoll {
                validate_poll_source(source, &key)?;
            } else {
                self.validate_webhook_source(source, &key)?;
            }
            for (list, globs) in [
                ("filter.include", &source.filter.include),
                ("filter.exclude", &source.filter.exclude),
            ] {
                for (i, glob) in globs.iter().enumerate() {
                    if let Err(reason) = crate::intake::filter::compile_glob(glob) {
                        return Err(ConfigError::invalid(key(&format!("{list}[{i}]")), reason));
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_webhook_source(
        &self,
        source: &SourceSettings,
        key: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        if source.image_type == ImageType::InstanceImage
            && source.instance_id.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError::invalid(
                key("instance_id"),
                "required when image_type = \"instance_image\"",
            ));
        }
        if source.poll.is_some() {
            return Err(ConfigError::invalid(
                key("poll"),
                "only a format = \"swr-poll\" source polls; remove [sources.poll] or change the format",
            ));
        }
        let Some(verify) = &source.verify else {
            return Err(ConfigError::invalid(
                key("verify"),
                "required for a webhook source: add [sources.verify] with a scheme and secrets",
            ));
        };
        if verify.secrets.is_empty() {
            return Err(ConfigError::invalid(
                key("verify.secrets"),
                "needs at least one secret; unauthenticated webhooks are not accepted",
            ));
        }
        if verify.scheme == VerifyScheme::StandardWebhooks {
            for (i, secret) in verify.secrets.iter().enumerate() {
                if crate::intake::verify::standard_webhooks_key(secret).is_none() {
                    return Err(ConfigError::invalid(
                        key(&format!("verify.secrets[{i}]")),
                        "a standard-webhooks secret must be whsec_ followed by base64",
                    ));
                }
            }
        }
        if verify.effective_header().is_empty()
            || actix_web::http::header::HeaderName::try_from(verify.effective_header()).is_err()
        {
            return Err(ConfigError::invalid(
                key("verify.header"),
                "must be a valid HTTP header name",
            ));
        }
        if let Err(reason) = crate::intake::verify::Verifier::new(verify) {
            return Err(ConfigError::invalid(key("verify"), reason));
        }
        if source.rate_limit_per_s == Some(0) {
            return Err(ConfigError::invalid(
                key("rate_limit_per_s"),
                "must be greater than 0, or absent for no limit",
            ));
        }
        Ok(())
    }

    pub fn source(&self, name: &str) -> Option<&SourceSettings> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// A poll source: no webhook settings, an SWR basic image type, a sane interval.
fn validate_poll_source(
    source: &SourceSettings,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    if source.verify.is_some() {
        return Err(ConfigError::invalid(
            key("verify"),
            "a swr-poll source receives no webhooks (the bridge polls SWR); remove [sources.verify]",
        ));
    }
    if !matches!(
        source.image_type,
        ImageType::PrivateImage | ImageType::SharedImage
    ) {
        return Err(ConfigError::invalid(
            key("image_type"),
            "a swr-poll source watches SWR basic edition: private_image or shared_image \
             (SWR Enterprise Edition sends webhooks; use format = \"harbor\")",
        ));
    }
    for (field, present) in [
        ("instance_id", source.instance_id.is_some()),
        ("instance_url", source.instance_url.is_some()),
        ("rate_limit_per_s", source.rate_limit_per_s.is_some()),
    ] {
        if present {
            return Err(ConfigError::invalid(
                key(field),
                "not used by a swr-poll source; remove it",
            ));
        }
    }
    let poll = source.poll.clone().unwrap_or_default();
    if poll.interval_ms < MIN_POLL_INTERVAL_MS {
        return Err(ConfigError::invalid(
            key("poll.interval_ms"),
            format!(
                "{} is too often; poll at most once a second (at least {MIN_POLL_INTERVAL_MS})",
                poll.interval_ms
            ),
        ));
    }
    if let Some(namespaces) = &poll.namespaces {
        if namespaces.is_empty() {
            return Err(ConfigError::invalid(
                key("poll.namespaces"),
                "an empty list watches nothing; remove the key to watch every namespace",
            ));
        }
        for (i, namespace) in namespaces.iter().enumerate() {
            if namespace.is_empty() || namespace.contains('/') {
                return Err(ConfigError::invalid(
                    key(&format!("poll.namespaces[{i}]")),
                    format!("\"{namespace}\" is not an SWR namespace (organization) name"),
                ));
            }
        }
    }
    Ok(())
}
