//! The one integration-test binary: shared fakes and helpers, then one module per area.

mod fake_hss;
mod fake_issuers;
mod helpers;
mod prometheus_text;

mod batching;
mod hss_client;
mod operations;
mod process;
mod webhooks;
