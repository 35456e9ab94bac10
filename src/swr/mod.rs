//! The SWR API: what the bridge asks the registry itself, with the `[hss]`
//! credentials.
//!
//! - [`client`]: signed `GET` calls and what SWR's answers mean.

pub mod client;

pub use client::{SwrAnswer, SwrClient, SwrError, SwrErrorKind};
