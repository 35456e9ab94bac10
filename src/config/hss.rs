//! `[hss]`: where HSS is, which project, and how calls authenticate.

use std::time::Duration;

use super::endpoint::{ApiEndpoint, regional_endpoint};
use super::error::ConfigError;
use super::raw::{HssAuthKind, RawHss};
use crate::hss::api::HssApi;
use crate::hss::scan_tasks::ScanScope;
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct HssSettings {
    pub region: String,
    /// `hss.endpoint`, or the regional endpoint; http(s), a host, no query.
    pub endpoint: ApiEndpoint,
    pub project_id: String,
    /// Sent as `?enterprise_project_id=`; the default of every source.
    pub enterprise_project_id: Option<String>,
    /// Send header `region: <region>`.
    pub send_region_header: bool,
    pub auth: HssAuth,
    /// Positive.
    pub request_timeout: Duration,
    /// Which HSS API carries the batches.
    pub api: HssApi,
    /// What scan-tasks asks HSS to scan for (never empty).
    pub scan_scope: ScanScope,
}

/// How HSS calls authenticate (`hss.auth`), with the settings of that way only.
#[derive(Debug, Clone)]
pub enum HssAuth {
    /// A static AK/SK; `security_token` makes it a temporary one.
    Aksk {
        ak: Secret,
        sk: Secret,
        security_token: Option<Secret>,
    },
    /// An IAM token for a password user, project-scoped; renewed by the bridge.
    Token {
        iam_endpoint: ApiEndpoint,
        domain_name: String,
        user_name: String,
        password: Secret,
    },
    /// Temporary AK/SK from the ECS/CCE metadata service at `url`.
    Metadata { url: ApiEndpoint },
}

impl HssAuth {
    /// The `hss.auth` value, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            HssAuth::Aksk { .. } => "aksk",
            HssAuth::Token { .. } => "token",
            HssAuth::Metadata { .. } => "metadata",
        }
    }
}

impl HssSettings {
    pub fn parse(raw: &RawHss) -> Result<Self, ConfigError> {
        if raw.region.is_empty() {
            return Err(ConfigError::invalid("hss.region", "must not be empty"));
        }
        if raw.project_id.is_empty() {
            return Err(ConfigError::invalid("hss.project_id", "must not be empty"));
        }
        let endpoint = match &raw.endpoint {
            Some(endpoint) => ApiEndpoint::parse("hss.endpoint", endpoint)?,
            None => ApiEndpoint::parse("hss.endpoint", &regional_endpoint("hss", &raw.region))?,
        };
        if raw.request_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "hss.request_timeout_ms",
                "must be greater than 0",
            ));
        }
        Ok(Self {
            region: raw.region.clone(),
            endpoint,
            project_id: raw.project_id.clone(),
            enterprise_project_id: raw.enterprise_project_id.clone(),
            send_region_header: raw.send_region_header,
            auth: HssAuth::parse(raw)?,
            request_timeout: Duration::from_millis(raw.request_timeout_ms),
            api: raw.api,
            scan_scope: raw.scan_scope.clone(),
        })
    }
}

impl HssAuth {
    fn parse(raw: &RawHss) -> Result<Self, ConfigError> {
        let required = |key: &str| {
            ConfigError::invalid(
                key,
                format!("required when hss.auth = \"{}\"", auth_name(raw.auth)),
            )
        };
        Ok(match raw.auth {
            HssAuthKind::Aksk => HssAuth::Aksk {
                ak: raw.ak.clone().ok_or_else(|| required("hss.ak"))?,
                sk: raw.sk.clone().ok_or_else(|| required("hss.sk"))?,
                security_token: raw.security_token.clone(),
            },
            HssAuthKind::Token => {
                let domain_name = raw
                    .domain_name
                    .clone()
                    .ok_or_else(|| required("hss.domain_name"))?;
                let user_name = raw
                    .user_name
                    .clone()
                    .ok_or_else(|| required("hss.user_name"))?;
                let password = raw
                    .password
                    .clone()
                    .ok_or_else(|| required("hss.password"))?;
                let iam_endpoint = match &raw.iam_endpoint {
                    Some(endpoint) => endpoint.clone(),
                    None => regional_endpoint("iam", &raw.region),
                };
                HssAuth::Token {
                    iam_endpoint: ApiEndpoint::parse("hss.iam_endpoint", &iam_endpoint)?,
                    domain_name,
                    user_name,
                    password,
                }
            }
            HssAuthKind::Metadata => HssAuth::Metadata {
                url: ApiEndpoint::parse("hss.metadata_url", &raw.metadata_url)?,
            },
        })
    }
}

fn auth_name(kind: HssAuthKind) -> &'static str {
    match kind {
        HssAuthKind::Aksk => "aksk",
        HssAuthKind::Token => "token",
        HssAuthKind::Metadata => "metadata",
    }
}
