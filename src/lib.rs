//! swr-scan-bridge: SWR push webhooks in, batched HSS image scans out.
//!
//! # Layout
//!
//! The modules follow one image from push to scan:
//!
//! - [`config`], [`secret`]: layered settings and secrets that never leak.
//! - [`domain`]: images, partitions, scan targets: the shared vocabulary.
//! - [`intake`]: `POST /webhooks/{source}`: verify → parse → filter → store → 202.
//! - [`store`]: the durable queue (SQLite or PostgreSQL) behind one trait.
//! - [`batcher`]: claims due partitions, sends each as one HSS request, settles.
//! - [`hss`]: the only HSS client: endpoint, signing, credentials, outcomes.
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
//! - [`ops`]: `/metrics`, `/healthz`, `/readyz`, `/admin/*`; [`telemetry`]: logs
//!   and request ids.
//! - [`commands`]: `check-config`, `sign` and `demo` (`serve` is [`startup`]).

pub mod api_error;
pub mod app_state;
pub mod batcher;
pub mod clock;
pub mod commands;
pub mod config;
pub mod domain;
pub mod hss;
pub mod intake;
pub mod ops;
pub mod poll;
pub mod secret;
pub mod startup;
pub mod store;
pub mod swr;
pub mod telemetry;
