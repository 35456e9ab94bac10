//! Wiring: builds the store, HSS client, batcher, pollers and HTTP server
//! from [`Settings`], runs them, and drains on SIGTERM/SIGINT.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use futures_util::future::join_all;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::app_state::{AppState, DrainFlag};
use crate::batcher::{Backoff, Batcher};
use crate::clock::Clock;
use crate::config::Settings;
use crate::hss::{HssClient, HssError, ScanSender};
use crate::intake::routes::receive_webhook;
use crate::intake::source::build_sources;
use crate::ops::metrics::{self, Metrics};
use crate::ops::{admin, health};
use crate::poll::{Poller, build_poll_sources};
use crate::resolver::{ResolvePolicy, Resolver, ResolverHandle};
use crate::store::retention::{Retention, prune_old_records};
use crate::store::{self, Store, StoreError};
use crate::swr::SwrClient;
use crate::telemetry;

/// Shutdown finishes this long before `server.shutdown_grace_ms` ends, so
/// the process is gone before a supervisor's kill at exactly the grace.
const EXIT_MARGIN: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot build the HSS client: {0}")]
    Hss(#[from] HssError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("server failed: {0}")]
    Server(#[from] std::io::Error),
}

/// A built, listening bridge. `run_until_stopped` serves until a signal or
/// [`Application::stopper`] asks it to drain.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    batcher_task: JoinHandle<()>,
    resolver: Arc<Resolver>,
    resolver_task: JoinHandle<()>,
    poller_tasks: Vec<JoinHandle<()>>,
    stop_batcher: watch::Sender<bool>,
    stop_requested: Arc<Notify>,
    signals: ShutdownSignals,
    grace: Duration,
    drain_linger: Duration,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let sender: Arc<dyn ScanSender> = Arc::new(HssClient::new(&settings.hss)?);
        Self::build_with_sender(settings, sender).await
    }

    /// Like [`Application::build`] with another HSS sender (tests, benchmarks).
    pub async fn build_with_sender(
        settings: Settings,
        sender: Arc<dyn ScanSender>,
    ) -> Result<Self, StartupError> {
        let store = open_store_with_retry(&settings).await?;
        Self::build_with_parts(settings, sender, store).await
    }

    /// Like [`Application::build_with_sender`] on a store opened by the
    /// caller, whatever `store.url` says: how tests and benchmarks run the
    /// bridge on the in-memory store, which no configuration can name.
    pub async fn build_with_parts(
        settings: Settings,
        sender: Arc<dyn ScanSender>,
        store: Arc<dyn Store>,
    ) -> Result<Self, StartupError> {
        let address = settings.server.listen;
        let listener = TcpListener::bind(address).map_err(|source| StartupError::Listen {
            address: address.to_string(),
            source,
        })?;
        let port = listener.local_addr()?.port();
        let poll_sources = build_poll_sources(&settings.sources);
        let metrics = Metrics::new()?;
        let sources = build_sources(&settings.sources, &metrics);
        let source_names: Vec<&str> = settings.sources.iter().map(|s| s.name.as_str()).collect();
        let poll_source_names: Vec<&str> = settings
            .sources
            .iter()
            .filter(|source| source.poll().is_some())
            .map(|source| source.name.as_str())
            .collect();
        metrics.export_from_start(
            &source_names,
            &poll_source_names,
            settings.batch.window.as_duration(),
        );
        let clock = Clock::new();
        let owner = lease_owner();
        let batcher = Arc::new(Batcher::new(
            Arc::clone(&store),
            sender,
            &settings.batch,
            settings.store.lease,
            clock,
            owner.clone(),
            metrics.clone(),
        ));
        // Always running, even when no source resolves digests any more:
        // digests acknowledged before a configuration change are still owed.
        let swr = Arc::new(SwrClient::new(
            &settings.hss,
            &settings.swr,
            metrics.clone(),
        )?);
        let resolver = Arc::new(Resolver {
            store: Arc::clone(&store),
            swr: Arc::clone(&swr),
            sources: sources.clone(),
            policy: ResolvePolicy {
                attempts: settings.batch.resolve_attempts.get(),
                delay: settings.batch.resolve_delay.as_duration(),
                lease_ms: settings.store.lease.get(),
            },
            backoff: Backoff::from_settings(&settings.batch),
            clock,
            owner: owner.clone(),
            handle: ResolverHandle::default(),
            batcher: batcher.handle(),
            metrics: metrics.clone(),
        });
        let policy = batcher.policy();
        let (stop_batcher, stop_rx) = watch::channel(false);
        let batcher_task = tokio::spawn(Arc::clone(&batcher).run(stop_rx.clone()));
        let resolver_task = tokio::spawn(Arc::clone(&resolver).run(stop_rx.clone()));
        let poller_tasks = poll_sources
            .into_iter()
            .map(|source| {
                let poller = Poller {
                    lease_length: source.lease_length(settings.hss.request_timeout),
                    source,
                    swr: Arc::clone(&swr),
                    store: Arc::clone(&store),
                    clock,
                    metrics: metrics.clone(),
                    wake_batcher: batcher.handle(),
                    owner: owner.clone(),
                };
                tokio::spawn(poller.run(stop_rx.clone()))
            })
            .collect();
        tokio::spawn(prune_old_records(
            Arc::clone(&store),
            clock,
            Retention {
                deliveries: settings.store.delivery_retention,
                history: settings.store.history_retention,
            },
            stop_rx,
        ));

        let scraped_store = web::Data::from(Arc::clone(&store));
        let scraped_metrics = web::Data::new(metrics.clone());
        let scraped_clock = web::Data::new(clock);
        let state = web::Data::new(AppState {
            sources,
            store,
            wake_batcher: batcher.handle(),
            wake_resolver: resolver.handle(),
            batcher,
            policy,
            metrics,
            clock,
            max_body_bytes: settings.server.max_body_bytes.get(),
            admin_token: settings.server.admin_token.clone(),
            drain: DrainFlag::default(),
        });
        let grace = settings.server.shutdown_grace;
        let server_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(telemetry::request_id))
                .app_data(server_state.clone())
                .app_data(scraped_metrics.clone())
                .app_data(scraped_store.clone())
                .app_data(scraped_clock.clone())
                .route("/webhooks/{source}", web::post().to(receive_webhook))
                .route("/healthz", web::get().to(health::healthz))
                .route("/readyz", web::get().to(health::readyz))
                .route("/metrics", web::get().to(metrics::serve))
                .route("/admin/pending", web::get().to(admin::pending))
                .route("/admin/dead-letters", web::get().to(admin::dead_letters))
                .route(
                    "/admin/dead-letters/{id}/retry",
                    web::post().to(admin::retry_dead_letter),
                )
                .route("/admin/flush", web::post().to(admin::flush))
                .route("/admin/history", web::get().to(admin::history))
        })
        .disable_signals()
        .shutdown_timeout(grace.as_secs().max(1))
        // Slow clients must not hold workers: a request's headers arrive in time or the
        // connection is closed (slowloris).
        .client_request_timeout(Duration::from_secs(10))
        .client_disconnect_timeout(Duration::from_secs(2));
        if let Some(workers) = settings.server.workers {
            server = server.workers(workers.get());
        }
        let signals = ShutdownSignals::install();
        let server = server.listen(listener)?.run();
        tracing::info!(
            %address,
            port,
            sources = settings.sources.len(),
            window_ms = settings.batch.window.get(),
            max_images = settings.batch.max_images.get(),
            "swr-scan-bridge listening"
        );
        Ok(Self {
            port,
            server,
            state,
            batcher_task,
            resolver,
            resolver_task,
            poller_tasks,
            stop_batcher,
            stop_requested: Arc::new(Notify::new()),
            signals,
            grace,
            drain_linger: settings.server.drain_linger,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Triggers the same drain as SIGTERM (tests, the demo).
    pub fn stopper(&self) -> Arc<Notify> {
        Arc::clone(&self.stop_requested)
    }

    /// Serves until SIGTERM/SIGINT (or the stopper), then drains: readiness
    /// and new webhooks answer 503 at once, due batches are flushed and
    /// in-flight requests finish within `server.shutdown_grace_ms`.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        let mut signals = self.signals;
        tokio::select! {
            _ = signals.recv() => {}
            _ = self.stop_requested.notified() => {}
        }
        let started = tokio::time::Instant::now();
        // Everything below ends by this instant, a little before the grace runs
        // out: orchestrators often kill at exactly the grace they gave.
        let deadline = started + self.grace.saturating_sub(EXIT_MARGIN);
        tracing::info!(grace_ms = self.grace.as_millis() as u64, "draining");
        self.state.drain.start();
        let _ = self.stop_batcher.send(true);
        // Load balancers need a moment to see readiness fail before the listener closes.
        let linger = tokio::time::sleep_until((started + self.drain_linger).min(deadline));
        let state = self.state.clone();
        let mut server = server;
        let resolver = self.resolver;
        let resolver_task = self.resolver_task;
        let pollers = self.poller_tasks;
        let drained = tokio::time::timeout_at(deadline, async {
            // Pollers stop at once (their state is in the store); what they
            // enqueued before is flushed with the rest below.
            join_all(pollers).await;
            let _ = self.batcher_task.await;
            // Digests due now first, so the tags they resolve to leave with the
            // flush; but a slow SWR gets at most half the time left, never the
            // batches' share.
            let _ = resolver_task.await;
            let now = tokio::time::Instant::now();
            resolver
                .drain(now + deadline.saturating_duration_since(now) / 2)
                .await;
            let sent = state.batcher.drain(state.policy, deadline).await;
            linger.await;
            // Graceful: requests in flight finish; the listener closes now.
            stop_server(handle, deadline).await;
            let _ = (&mut server).await;
            sent
        })
        .await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match drained {
            Ok(sent) => tracing::info!(
                batches_flushed = sent,
                elapsed_ms,
                "drained; what is left stays in the store for the next start"
            ),
            Err(_) => {
                server.abort();
                tracing::warn!(
                    elapsed_ms,
                    "grace period over with work unfinished; what is left stays in the store for the next start"
                );
            }
        }
        Ok(())
    }
}

/// Lets requests in flight finish, but not past the grace deadline.
async fn stop_server(handle: ServerHandle, deadline: tokio::time::Instant) {
    if tokio::time::timeout_at(deadline, handle.stop(true))
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the connections still open");
        handle.stop(false).await;
    }
}

/// The store may start after the bridge (compose, Kubernetes): try for a while.
async fn open_store_with_retry(settings: &Settings) -> Result<Arc<dyn Store>, StoreError> {
    let mut attempt = 0;
    loop {
        match store::configured::open(&settings.store).await {
            Ok(store) => return Ok(store),
            Err(StoreError::Unavailable(reason)) if attempt < 10 => {
                attempt += 1;
                tracing::warn!(attempt, %reason, "store not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Unique per process: hostname, pid and a random suffix.
fn lease_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bridge".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

/// SIGTERM and SIGINT, caught from [`Application::build`] on: a signal that
/// arrives before `run_until_stopped` waits for it still drains instead of
/// killing the process (the default action) after it began serving.
struct ShutdownSignals {
    terminate: Option<Signal>,
    interrupt: Option<Signal>,
}

impl ShutdownSignals {
    fn install() -> Self {
        let catch = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::error!(%error, signal = name, "cannot catch the signal; it will not drain");
                None
            }
        };
        Self {
            terminate: catch(SignalKind::terminate(), "SIGTERM"),
            interrupt: catch(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Waits for the first of them; never returns when neither could be caught.
    async fn recv(&mut self) {
        async fn next(stream: &mut Option<Signal>) {
            match stream {
                Some(stream) => {
                    stream.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.terminate) => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = next(&mut self.interrupt) => tracing::info!(signal = "SIGINT", "shutdown requested"),
        }
    }
}
