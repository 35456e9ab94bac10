//! The CLI commands besides `serve`.

pub mod check_config;
pub mod demo;
pub mod sign;
