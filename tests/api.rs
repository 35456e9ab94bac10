//! The one integration-test binary: shared fakes and helpers (`tests/common/`),
//! then one module per area (`tests/api/`).

mod common;

mod api {
    mod admin;
    mod batching;
    mod config;
    mod crash;
    mod demo;
    mod digests;
    mod fixtures;
    mod health;
    mod history;
    mod hss_client;
    mod logging;
    mod metrics;
    mod poll;

    mod replicas;
    mod shutdown;
    mod sign_command;
    mod swr_client;
    mod webhooks;
}
