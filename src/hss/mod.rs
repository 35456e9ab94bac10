//! The only component that talks to HSS: `POST /v5/{project_id}/image/batch-scan`,
//! or its successor `POST /v5/{project_id}/image/image-scan/tasks` (`hss.api`).
//!
//! - [`sender`]: what the batcher needs: [`ScanSender`] and its [`ScanOutcome`].
//! - [`api`]: which of the two APIs carries the batches.
//! - [`batch_scan`], [`scan_tasks`]: the request body of each API; `image_info`:
//!   how both name an image.
//! - [`signer`]: SDK-HMAC-SHA256, byte for byte as the official SDKs sign.
//! - [`auth_headers`]: the headers that authenticate any Huawei Cloud call
//!   (HSS and SWR alike).
//! - [`credentials`]: what authenticates a call: static AK/SK, temporary AK/SK
//!   from the ECS/CCE metadata service, or an IAM token; cached and renewed.
//! - [`http`]: the HTTP client and credentials every Huawei Cloud client builds.
//! - [`client`]: builds, signs, sends and classifies one call per batch.
//! - [`errors`]: reading failures (error bodies, `Retry-After`, transport
//!   errors), shared by every client.
//!
//! Dependencies run one way: client → credentials → errors, signer.

pub mod api;
pub mod auth_headers;
pub mod batch_scan;
pub mod client;
pub mod credentials;
pub mod errors;
pub mod http;
mod image_info;
pub mod scan_tasks;
pub mod sender;
pub mod signer;

pub use api::HssApi;
pub use client::HssClient;
pub use errors::HssError;
pub use sender::{ScanOutcome, ScanSender};
