//! The resolver: claims digest-only pushes from the store, asks SWR EE which
//! tags name each (`ShowInstanceArtifact`), and settles it: its tags enter the
//! pending images (through the source's filter) and the batcher takes over.
//!
//! Like the batcher, it is woken by the intake after a digest was stored and
//! otherwise sleeps until the store's next due digest (bounded by one resolve
//! delay, to notice digests other replicas stored). Up to [`MAX_IN_FLIGHT`]
//! digests are asked about at once, so one slow answer does not hold back the
//! rest; a lease in the store keeps two replicas (or two asks) from resolving
//! the same digest at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::batcher::work_loop::{STORE_ERROR_PAUSE, WakeHandle, lease_budget, pause_until};
use crate::batcher::{Backoff, BatcherHandle};
use crate::clock::Clock;
use crate::domain::ScanTarget;
use crate::intake::formats::reference;
use crate::intake::source::Sources;
use crate::ops::metrics::Metrics;
use crate::store::{ClaimedDigest, DeadLetterCause, DigestSettlement, Store, StoreError};
use crate::swr::SwrClient;
use crate::swr::enterprise::ArtifactAddress;

pub mod decide;

pub use decide::ResolvePolicy;
use decide::{Answer, Outcome, Plan};

/// How many digests one replica asks SWR about at once.
pub const MAX_IN_FLIGHT: usize = 4;

/// Lets the intake and the admin routes wake the resolver.
pub type ResolverHandle = WakeHandle;

pub struct Resolver {
    pub store: Arc<dyn Store>,
    pub swr: Arc<SwrClient>,
    pub sources: Sources,
    pub policy: ResolvePolicy,
    pub backoff: Backoff,
    pub clock: Clock,
    /// This replica's name in digest leases.
    pub owner: String,
    /// What wakes this resolver (a fresh `ResolverHandle::default()`).
    pub handle: ResolverHandle,
    pub batcher: BatcherHandle,
    pub metrics: Metrics,
}

/// How one pass over the due digests ended.
enum Pass {
    AllDue,
    StoreFailed,
    Stopped,
}

impl Resolver {
    pub fn handle(&self) -> ResolverHandle {
        self.handle.clone()
    }

    /// Runs until `stop` turns true (or its sender is gone), then returns at
    /// once: a resolution cut short keeps its lease and is asked again after
    /// it, by [`Resolver::drain`] or the next start (at least once).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                break;
            }
            let pass = tokio::select! {
                (pass, _) = self.resolve_due() => pass,
                _ = stop.changed() => Pass::Stopped,
            };
            let pause = match pass {
                Pass::AllDue => self.sleep_until_next_due().await,
                Pass::StoreFailed => STORE_ERROR_PAUSE,
                Pass::Stopped => break,
            };
            if !self.handle.pause(pause, &mut stop).await {
                break;
            }
        }
    }

    /// Resolves every digest due now, until none is or `deadline` passes
    /// (shutdown). Returns how many were asked about.
    pub async fn drain(self: &Arc<Self>, deadline: tokio::time::Instant) -> usize {
        match tokio::time::timeout_at(deadline, self.resolve_due()).await {
            Ok((_, asked)) => asked,
            Err(_) => {
                tracing::warn!("drain deadline reached; unresolved digests stay in the store");
                0
            }
        }
    }

    /// Claims and resolves digests, [`MAX_IN_FLIGHT`] at once, until none is
    /// due or the store fails; returns how that ended and how many were asked.
    /// Each resolution is its own task, so it makes progress (and gives its
    /// store connection back) while this one waits for a claim. Dropping this
    /// future aborts them: their digests keep their leases (at least once).
    async fn resolve_due(self: &Arc<Self>) -> (Pass, usize) {
        let mut asking = JoinSet::new();
        let mut ended = None;
        let mut asked = 0;
        loop {
            while ended.is_none() && asking.len() < MAX_IN_FLIGHT {
                match self.claim().await {
                    Ok(Some(claimed)) => {
                        let resolver = Arc::clone(self);
                        asking.spawn(async move { resolver.resolve(claimed).await });
                    }
                    Ok(None) => ended = Some(Pass::AllDue),
                    Err(()) => ended = Some(Pass::StoreFailed),
                }
            }
            match asking.join_next().await {
                Some(_) => asked += 1,
                None => return (ended.unwrap_or(Pass::AllDue), asked),
            }
        }
    }

    async fn claim(&self) -> Result<Option<ClaimedDigest>, ()> {
        self.store
            .claim_digest(&self.owner, self.clock.now_ms(), self.policy.lease_ms)
            .await
            .map_err(|error| self.store_error("claim_digest", &error))
    }

    async fn sleep_until_next_due(&self) -> Duration {
        let idle = self.policy.delay.max(Duration::from_millis(1));
        let now = self.clock.now_ms();
        match self.store.next_digest_due().await {
            Ok(next_due) => pause_until(next_due, now, idle),
            Err(error) => {
                self.store_error("next_digest_due", &error);
                STORE_ERROR_PAUSE
            }
        }
    }

    /// One SWR ask for one claimed digest, then settle it in the store.
    async fn resolve(&self, claimed: ClaimedDigest) {
        let started = std::time::Instant::now();
        let source = self.sources.get(&claimed.digest.source).cloned();
        let (outcome, plan) = match (&source, claimed.digest.partition.instance_id.as_deref()) {
            (Some(_), Some(instance_id)) => {
                let answer = self.ask(&claimed, instance_id).await;
                decide::decide(
                    &claimed,
                    answer,
                    &self.policy,
                    &self.backoff,
                    self.clock.now_ms(),
                )
            }
            // Stored under a source since removed from the configuration (or
            // without an instance): only an operator can say where it belongs.
            _ => (
                Outcome::DeadLetter,
                Plan::DeadLetter(DeadLetterCause {
                    http_status: None,
                    error_code: None,
                    error_msg: format!(
                        "source {:?} is not configured as an instance_image source any more; \
                         configure it again and retry this dead letter",
                        claimed.digest.source
                    ),
                    request_id: None,
                }),
            ),
        };
        let mut scanned = 0;
        let settlement = plan.map_resolved(|tags| {
            let targets = match &source {
                Some(source) => self.targets(source, &claimed, &tags),
                None => Vec::new(),
            };
            scanned = targets.len();
            targets
        });
        let detail = match &settlement {
            DigestSettlement::AskAgain(next) => next.last_error.clone(),
            DigestSettlement::DeadLetter(cause) => cause.error_msg.clone(),
            _ => String::new(),
        };
        let now = self.clock.now_ms();
        match self.store.settle_digest(&claimed, settlement, now).await {
            Ok(true) => {
                self.metrics
                    .digest_resolutions
                    .with_label_values(&[outcome.as_str()])
                    .inc();
                let fields = (
                    claimed.digest.source.as_str(),
                    claimed.digest.subject(),
                    outcome.as_str(),
                );
                let duration_ms = started.elapsed().as_millis() as u64;
                match outcome {
                    Outcome::Retry | Outcome::DeadLetter => tracing::warn!(
                        source = fields.0,
                        digest = %fields.1,
                        outcome = fields.2,
                        claim = claimed.claim,
                        duration_ms,
                        detail = %detail,
                        "digest resolution"
                    ),
                    _ => tracing::info!(
                        source = fields.0,
                        digest = %fields.1,
                        outcome = fields.2,
                        images = scanned,
                        claim = claimed.claim,
                        duration_ms,
                        detail = %detail,
                        "digest resolution"
                    ),
                }
                if scanned > 0 {
                    self.batcher.wake();
                }
            }
            Ok(false) => tracing::warn!(
                digest = %claimed.digest.subject(),
                "digest was taken over by another resolver; its outcome is theirs"
            ),
            Err(error) => self.store_error("settle_digest", &error),
        }
    }

    /// Asks SWR, within the claim's lease.
    async fn ask(&self, claimed: &ClaimedDigest, instance_id: &str) -> Answer {
        let budget = lease_budget(
            self.policy.lease_ms,
            claimed.lease_until,
            self.clock.now_ms(),
        );
        let address = ArtifactAddress {
            instance_id,
            namespace: &claimed.digest.namespace,
            repository: &claimed.digest.name,
            digest: &claimed.digest.digest,
        };
        match tokio::time::timeout(budget, self.swr.show_instance_artifact(address)).await {
            Ok(Ok(answer)) => Answer::Tags(
                answer
                    .body
                    .tag_names()
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            ),
            Ok(Err(error)) => Answer::Failed(error),
            Err(_) => Answer::TimedOut { budget },
        }
    }

    /// The images a resolved digest's tags name, through the source's filter
    /// as if each had been pushed by tag.
    fn targets(
        &self,
        source: &crate::intake::source::Source,
        claimed: &ClaimedDigest,
        tags: &[String],
    ) -> Vec<ScanTarget> {
        let mut targets = Vec::with_capacity(tags.len());
        for tag in tags {
            if !reference::is_valid_tag(tag) {
                tracing::warn!(
                    digest = %claimed.digest.subject(),
                    tag = %tag.escape_debug(),
                    "SWR named a tag that is not a valid Docker tag; skipped"
                );
                continue;
            }
            let target = source.resolved_target(&claimed.digest, tag);
            if source.settings.filter.admits(&target.image) {
                targets.push(target);
            } else {
                self.metrics
                    .images
                    .with_label_values(&[source.name(), "ignored", "filtered_out"])
                    .inc();
                tracing::info!(
                    source = source.name(),
                    image = %target.image,
                    digest = %claimed.digest.digest,
                    "resolved tag filtered out"
                );
            }
        }
        targets
    }

    fn store_error(&self, operation: &str, error: &StoreError) {
        self.metrics
            .store_errors
            .with_label_values(&[operation])
            .inc();
        tracing::error!(operation, error = %error, "store operation failed in the resolver");
    }
}
