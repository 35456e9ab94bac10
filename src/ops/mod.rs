//! What operators see: metrics, health and readiness, the admin API.

pub mod admin;
pub mod health;
pub mod metrics;
