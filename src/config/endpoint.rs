//! Base URLs of the APIs the bridge calls (HSS, IAM, the metadata service,
//! and any further Huawei Cloud API), parsed once with the `Host` value their
//! signatures cover.

use reqwest::Url;

use super::error::ConfigError;

/// An `http://` or `https://` URL with a host and neither query nor fragment,
/// trailing slashes dropped: a base that API paths are appended to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiEndpoint {
    url: Url,
    /// `host[:port]`, as the `Host` header and the signature carry it.
    host: String,
}

impl ApiEndpoint {
    pub fn parse(key: &str, value: &str) -> Result<Self, ConfigError> {
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
        if url.query().is_some() || url.fragment().is_some() {
            return Err(unusable("must not carry a query or fragment"));
        }
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err(unusable("has no host")),
        };
        Ok(Self { url, host })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn host(&self) -> &str {
        &self.host
    }
}

/// `https://{service}.{region}.myhuaweicloud.com`, the default endpoint of a
/// service; eu-west-101 lives under `.eu`.
pub fn regional_endpoint(service: &str, region: &str) -> String {
    let domain = if region == "eu-west-101" {
        "myhuaweicloud.eu"
    } else {
        "myhuaweicloud.com"
    };
    format!("https://{service}.{region}.{domain}")
}
