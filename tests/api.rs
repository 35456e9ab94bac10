//! The one integration-test binary: shared fakes and helpers (`tests/common/`),
//! then one module per area (`tests/api/`).

mod common;

mod api {
    mod batching;
    mod config;
    mod crash;
    mod fixtures;
    mod hss_client;
    mod operations;
    mod real_binary;
    mod replicas;
    mod webhooks;
}
