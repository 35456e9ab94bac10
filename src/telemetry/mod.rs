//! Logging set-up and request ids.
//!
//! Logs are `tracing` events with fields: JSON lines when stdout is not a
//! terminal (log collectors) or when configured, human-readable otherwise.
//! Every HTTP request gets an id (see [`request_id`]), echoed in the response
//! and in its log line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

mod json_lines;
mod request_id;

pub use json_lines::JsonLines;
pub use request_id::{REQUEST_ID_HEADER, RequestId, request_id};

/// Installs the global subscriber. A second call (tests) is a no-op.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        settings
            .directives
            .iter()
            .cloned()
            .fold(EnvFilter::default(), EnvFilter::add_directive)
    });
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json {
        builder.event_format(JsonLines).try_init()
    } else {
        builder.try_init()
    };
}
