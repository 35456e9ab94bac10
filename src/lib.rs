//! swr-scan-bridge: SWR push webhooks in, batched HSS image scans out.
//!
//! # Layout
//!
//! The modules follow one image from push to scan:
//!
//! - [`config`]: settings typed once at load time. [`config::raw`] is the file
//!   format (TOML, defaults, `SWR_SCAN_BRIDGE__…` overrides); one file per
//!   section turns its table into types (addresses, store location, positive
//!   spans, HSS auth, prepared verifier keys, compiled filters). Nothing
//!   downstream re-checks a setting. [`secret`]: secrets that never leak.
//! - [`domain`]: images, partitions, scan targets, batch images, milliseconds:
//!   the vocabulary every layer shares. [`error_chain`]: an error with its causes.
//! - [`filter`]: SWR glob filters over `namespace/name:tag`, compiled by config.
//! - [`intake`]: `POST /webhooks/{source}`: verify → parse → filter → store → 202.
//! - [`store`]: the durable queue (SQLite or PostgreSQL) behind one trait;
//!   [`store::configured`] opens the one `[store]` names. Each image's
//!   history ([`store::history`]) is written in the same transactions.
//! - [`resolver`]: asks SWR EE for the tags of digest-only pushes; they join the queue.
//! - [`batcher`]: claims due partitions, sends each as one HSS request, settles.
//! - [`hss`]: the only HSS client: endpoint, signing, credentials, outcomes;
//!   [`hss::errors`] reads failures for every client.
//! - [`swr`]: the SWR API (digest resolution, polling SWR basic), signed like HSS calls.
//! - [`poll`]: poll sources: SWR basic edition polled for new tags, which then
//!   enter the store like pushed images.
//! - [`clock`]: one notion of "now" for stores and batcher.
//!
//! Around the flow:
//!
//! - [`startup`]: builds store, HSS client, batcher and HTTP server; drains on SIGTERM.
//! - [`app_state`]: what every handler shares; [`api_error`]: every HTTP error
//!   and its status, mapped in one place.
//! - [`ops`]: `/metrics` (with its registry, in [`ops::metrics`]), `/healthz`,
//!   `/readyz`, `/admin/*`; [`telemetry`]: logs and request ids.
//! - [`commands`]: `check-config`, `sign`, `demo` and `history` (`serve` is
//!   [`startup`]); [`commands::hss_rules`]: what HSS accepts in a scan
//!   request, for the demo's stand-in HSS and the tests' fake one.
//!
//! Imports run one way: `config` and `filter` sit below `intake`, `hss` and
//! `store` (config borrows only leaf parsers from them: `hss::api`,
//! `hss::scan_tasks`, `store::postgres::connect_config`); `domain` and `secret`
//! below everything. No two modules import each other, directly or around a
//! loop; inside a module, children may name what their `mod.rs` re-exports.

pub mod api_error;
pub mod app_state;
pub mod batcher;
pub mod clock;
pub mod commands;
pub mod config;
pub mod domain;
pub mod error_chain;
pub mod filter;
pub mod hss;
pub mod intake;
pub mod ops;
pub mod poll;
pub mod resolver;
pub mod secret;
pub mod startup;
pub mod store;
pub mod swr;
pub mod telemetry;
