//! The SWR API: what the bridge asks the registry itself, with the `[hss]`
//! credentials.
//!
//! - [`client`]: signed `GET` calls and what SWR's answers mean.
//! - [`basic`]: SWR basic edition's repository and tag lists (poll sources).
//! - [`enterprise`]: SWR Enterprise Edition operations (`ShowInstanceArtifact`).

pub mod basic;
pub mod client;
pub mod enterprise;

pub use client::{SwrAnswer, SwrClient, SwrError, SwrErrorKind};
