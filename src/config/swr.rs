//! `[swr]`: where the SWR API is. Calls use the `[hss]` credentials.

use super::endpoint::{ApiEndpoint, regional_endpoint};
use super::error::ConfigError;
use super::raw::RawSwr;

#[derive(Debug, Clone)]
pub struct SwrSettings {
    /// `swr.endpoint`, or the regional SWR API endpoint of `hss.region`.
    pub endpoint: ApiEndpoint,
}

impl SwrSettings {
    pub fn parse(raw: &RawSwr, region: &str) -> Result<Self, ConfigError> {
        let endpoint = match &raw.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => regional_endpoint("swr-api", region),
        };
        Ok(Self {
            endpoint: ApiEndpoint::parse("swr.endpoint", &endpoint)?,
        })
    }
}
