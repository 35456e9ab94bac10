//! The only component that talks to HSS: `POST /v5/{project_id}/image/batch-scan`.
//!
//! - [`sender`]: what the batcher needs: [`ScanSender`] and its [`ScanOutcome`].
//! - [`signer`]: SDK-HMAC-SHA256, byte for byte as the official SDKs sign.
//! - [`credentials`]: what authenticates a call: static AK/SK, temporary AK/SK
//!   from the ECS/CCE metadata service, or an IAM token; cached and renewed.
//! - [`client`]: builds, signs, sends and classifies one batch-scan call.
//! - [`errors`]: reading failures (error bodies, `Retry-After`, transport
//!   errors), shared by every client.
//!
//! Dependencies run one way: client → credentials → errors, signer.

pub mod auth_headers;
pub mod client;
pub mod credentials;
pub mod errors;
pub mod sender;
pub mod signer;

pub use client::HssClient;
pub use errors::HssError;
pub use sender::{ScanOutcome, ScanSender};
