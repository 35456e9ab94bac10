//! The one integration-test binary: shared fakes and helpers, then one module per area.

mod fake_hss;
mod fake_issuers;
mod fake_swr;
mod helpers;
mod postgres_support;
mod process;
mod prometheus_text;

mod batching;
mod config;
mod crash;
mod fixtures;
mod hss_client;
mod operations;
mod poll;
mod real_binary;
mod replicas;
mod webhooks;
