//! The SWR API: what the bridge asks the registry itself, with the `[hss]`
//! credentials.
//!
//! - [`client`]: signed `GET` calls and what SWR's answers mean.
//! - [`enterprise`]: SWR Enterprise Edition operations (`ShowInstanceArtifact`).

pub mod client;
pub mod enterprise;

pub use client::{SwrAnswer, SwrClient, SwrError, SwrErrorKind};
