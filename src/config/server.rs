//! `[server]`: the HTTP listener and how it shuts down.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use super::error::ConfigError;
use super::parse::{non_zero, optional_non_zero};
use super::raw::RawServer;
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Larger bodies are answered 413.
    pub max_body_bytes: NonZeroUsize,
    /// `/admin/*` is disabled when absent.
    pub admin_token: Option<Secret>,
    pub shutdown_grace: Duration,
    /// On shutdown, how long readiness answers 503 before the listener closes,
    /// so load balancers stop sending first. Capped by `shutdown_grace`.
    pub drain_linger: Duration,
    /// actix worker threads; `None`: one per core.
    pub workers: Option<NonZeroUsize>,
}

impl ServerSettings {
    pub fn parse(raw: &RawServer) -> Result<Self, ConfigError> {
        let listen = raw.listen.parse().map_err(|_| {
            ConfigError::invalid(
                "server.listen",
                format!(
                    "\"{}\" is not a socket address like 0.0.0.0:8080",
                    raw.listen
                ),
            )
        })?;
        let workers = optional_non_zero("server.workers", raw.workers, "for one per core")?;
        Ok(Self {
            listen,
            max_body_bytes: non_zero("server.max_body_bytes", raw.max_body_bytes)?,
            admin_token: raw.admin_token.clone(),
            shutdown_grace: Duration::from_millis(raw.shutdown_grace_ms),
            drain_linger: Duration::from_millis(raw.drain_linger_ms),
            workers,
        })
    }
}
