//! What operators see: metrics (registry and `/metrics`), health and
//! readiness, the admin API.

pub mod admin;
pub mod health;
pub mod metrics;

use std::time::Duration;

/// A store that takes longer than this to answer counts as not ready, and a
/// scrape stops waiting for its queue gauges (a stuck store is exactly when
/// operators need `/metrics` to answer).
const STORE_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
