//! What every HTTP handler shares: sources, store, batcher, resolver, metrics,
//! clock and the drain flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::batcher::{Batcher, BatcherHandle};
use crate::clock::Clock;
use crate::intake::source::Sources;
use crate::ops::metrics::Metrics;
use crate::resolver::ResolverHandle;
use crate::secret::Secret;
use crate::store::{BatchPolicy, Store};

pub struct AppState {
    pub sources: Sources,
    pub store: Arc<dyn Store>,
    pub batcher: Arc<Batcher>,
    pub wake_batcher: BatcherHandle,
    pub wake_resolver: ResolverHandle,
    pub policy: BatchPolicy,
    pub metrics: Metrics,
    pub clock: Clock,
    pub max_body_bytes: usize,
    pub admin_token: Option<Secret>,
    pub drain: DrainFlag,
}

/// Set once when shutdown begins; read by readiness and the webhook handler.
#[derive(Clone, Default)]
pub struct DrainFlag(Arc<AtomicBool>);

impl DrainFlag {
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
