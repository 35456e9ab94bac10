//! The CLI commands besides `serve`.

pub mod check_config;
pub mod demo;
mod demo_hss;
pub mod history;
pub mod hss_rules;
pub mod sign;
