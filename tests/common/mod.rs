//! Fakes and helpers shared by the test binaries (`api`, `reliability`):
//! the fake HSS and credential issuers, `spawn_app`, the real binary as a
//! child process, PostgreSQL databases and a Prometheus text reader.

// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

pub mod fake_hss;
pub mod fake_issuers;
pub mod fake_swr;
pub mod fake_swr_basic;
pub mod helpers;
pub mod ops;
pub mod postgres_support;
pub mod process;
pub mod prometheus_text;
