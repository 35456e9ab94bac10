//! The one integration-test binary: shared fakes and helpers, then one module per area.

mod fake_hss;
mod fake_issuers;
mod helpers;
mod postgres_support;
mod process;

mod batching;
mod config;
mod crash;
mod hss_client;
mod replicas;
mod webhooks;
