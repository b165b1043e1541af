//! The callkpi aggregator: agents on PBXs stream their call events to it
//! over gRPC (`callkpi.v1.Ingest`); it stores each batch durably and
//! idempotently, keyed by (agent id, seq), acks it, and lets the KPI engine
//! read and follow the stored events. Metrics and health are served over
//! HTTP.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use callkpi_aggregator::{Config, serve};
//! let cfg = Config::load(std::path::Path::new("/etc/callkpi/aggregator.toml"))?;
//! let grpc = tokio::net::TcpListener::bind(cfg.listen).await?;
//! let http = tokio::net::TcpListener::bind(cfg.metrics_listen).await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! serve(cfg, grpc, http, shutdown).await
//! # }
//! ```
//!
//! # Layout
//! - [`config`]: the TOML file, its defaults and its validation (credentials
//!   resolved there).
//! - [`auth`]: bearer token digests and mTLS certificate names, bound to
//!   configured agent ids.
//! - [`store`]: the sled store (via `callkpi-durable`): key layout, the
//!   durability point, idempotence, and the read API for reports
//!   ([`Store::events_after`], [`Store::agents`], [`Store::subscribe`]).
//! - `ingest`: the `Ingest` stream (handshake, batches, acks, heartbeats,
//!   rejects), as specified in `proto/callkpi/v1/ingest.proto`.
//! - `liveness`: which agents are connected, and their delivery lag, time
//!   since contact and time since their last event.
//! - [`reports`]: the KPI engine following the store, and the `Reports`
//!   service (`GetKpis`, `WatchKpis`, `ListCalls`, `GetCall`, `ListAgents`)
//!   for authenticated readers.
//! - `metrics`: prometheus-client metrics (live per-queue gauges included)
//!   and the `/metrics` + `/healthz` HTTP router.
//! - `wallboard`: the wall-TV page at `/wallboard/`, its JSON and its
//!   Server-Sent Events, fed by the same live view as `WatchKpis`.
//! - this file: [`Aggregator`] and [`serve`], which wire the gRPC server
//!   (Ingest, health, reflection), the HTTP server and shutdown.
//! - `main.rs`: CLI (`run`, `validate`, `hash-token`), tracing, signals.
//!
//! # Shutdown
//! When the token is cancelled: the gRPC port stops accepting and health
//! turns NOT_SERVING; each stream finishes the Batch it is storing (store,
//! sync, ack), then ends with `Reject{SHUTTING_DOWN, retryable}`; the store
//! is synced once more. All of it is bounded by the shutdown grace (default
//! 10 s, [`Aggregator::with_shutdown_grace`]); past it, `serve` returns and
//! says so. Nothing acked can be lost either way: acks follow syncs.

pub mod auth;
pub mod config;
mod ingest;
mod kpi_store;
mod liveness;
mod metrics;
pub mod reports;
mod retention;
pub mod store;
mod wallboard;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity as TlsIdentity, ServerTlsConfig};

pub use auth::token_sha256_hex;
pub use config::{Config, ConfigError};
pub use store::{AgentRecord, Ingested, Store, StoreError};

use callkpi_proto::pb;

use crate::auth::{Authenticator, ReaderAuth};
use crate::config::Resolved;
use crate::ingest::{IngestService, IngestState, Limits};
use crate::metrics::{HttpState, Metrics};

/// Default bound on a graceful shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Name under which health reports the Ingest service.
pub const INGEST_SERVICE_NAME: &str = "callkpi.v1.Ingest";

/// Wall clock, Unix ns.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A validated configuration with its store open, ready to serve.
pub struct Aggregator {
    cfg: Config,
    resolved: Resolved,
    store: Store,
    grace: Duration,
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator").field("store", &self.store).field("grace", &self.grace).finish_non_exhaustive()
    }
}

impl Aggregator {
    /// Validates `cfg` and opens the store. Blocking (sled open).
    ///
    /// # Errors
    /// On an invalid config ([`ConfigError`]) or a store that cannot be opened.
    pub fn open(cfg: Config) -> anyhow::Result<Self> {
        let resolved = cfg.validate()?;
        let store = Store::open(&cfg.store_path, cfg.store_cache_bytes)
            .with_context(|| format!("opening the store {}", cfg.store_path.display()))?;
        if let Some(aside) = store.quarantined() {
            tracing::error!(quarantine = %aside.display(), "The store was unreadable and moved aside; agents will re-send what they still hold.");
        }
        Ok(Self { cfg, resolved, store, grace: DEFAULT_SHUTDOWN_GRACE })
    }

    /// Sets how long a graceful shutdown may take.
    #[must_use]
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The store, for readers (reports, KPI engine) and tests.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves gRPC on `grpc` and HTTP on `http` until `shutdown` is
    /// cancelled, then shuts down gracefully (see the crate doc).
    ///
    /// # Errors
    /// When TLS material is invalid, or a server fails.
    pub async fn serve(self, grpc: TcpListener, http: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { cfg, resolved, store, grace } = self;
        let stop = shutdown.child_token();
        let tracker = TaskTracker::new();
        let metrics = Arc::new(Metrics::new(resolved.agents.iter().map(|a| a.id.as_str())));
        let mtls = resolved.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some());
        let sites: HashMap<String, Option<String>> =
            resolved.agents.iter().map(|a| (a.id.clone(), a.site.clone())).collect();
        let limits = Limits {
            max_batch_events: cfg.max_batch_events,
            max_batch_bytes: cfg.max_batch_bytes,
            max_in_flight_batches: cfg.max_in_flight_batches,
            heartbeat_interval_ms: cfg.heartbeat_interval_ms,
            max_message_bytes: cfg.max_message_bytes,
        };
        let configured: Vec<(String, Option<String>)> =
            resolved.agents.iter().map(|a| (a.id.clone(), a.site.clone())).collect();
        let state = Arc::new(IngestState::new(
            limits,
            Authenticator::new(resolved.agents.clone(), mtls),
            sites,
            store.clone(),
            Arc::clone(&metrics),
            stop.clone(),
            tracker.clone(),
        ));
        let presence = Arc::clone(&state.presence);

        let follower = reports::KpiFollower::with_config(store.clone(), follower_config(&cfg.kpi));
        tracker.spawn(Arc::clone(&follower).run(stop.clone()));
        tracker.spawn(retention::run(
            store.clone(),
            Arc::clone(&follower),
            cfg.retention.clone(),
            Arc::clone(&metrics),
            stop.clone(),
        ));
        let wallboard = Arc::new(wallboard::Wallboard::new(
            Arc::clone(&follower),
            store.clone(),
            (!resolved.readers.is_empty()).then(|| ReaderAuth::new(resolved.readers.clone())),
            cfg.live.clone(),
            cfg.wallboard.clone(),
            configured,
            stop.clone(),
        ));
        let reports_service =
            reports::ReportsService::new(follower, ReaderAuth::new(resolved.readers.clone()), stop.clone())
                .with_presence(Arc::clone(&presence))
                .into_server(cfg.max_message_bytes);

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<IngestService>().await;
        health.set_serving::<pb::reports_server::ReportsServer<reports::ReportsService>>().await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(callkpi_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building the reflection service")?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(callkpi_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .context("building the reflection service")?;

        let keepalive =
            (cfg.http2_keepalive_interval_secs > 0).then(|| Duration::from_secs(cfg.http2_keepalive_interval_secs));
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(keepalive)
            .http2_keepalive_timeout(keepalive.map(|_| Duration::from_secs(cfg.http2_keepalive_timeout_secs)));
        if let Some(tls) = &resolved.tls {
            let mut tls_config = ServerTlsConfig::new().identity(TlsIdentity::from_pem(&tls.cert_pem, &tls.key_pem));
            if let Some(ca) = &tls.client_ca_pem {
                tls_config = tls_config.client_ca_root(Certificate::from_pem(ca));
            }
            builder = builder.tls_config(tls_config).context("configuring TLS")?;
        }
        let grpc_addr = grpc.local_addr().ok();
        // Logged as addresses, not `Some(...)`.
        let text = |a: Option<std::net::SocketAddr>| a.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let (grpc_text, http_text) = (text(grpc_addr), text(http.local_addr().ok()));
        let grpc_server = builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(IngestService::new(state))
            .add_service(reports_service)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(grpc).with_nodelay(Some(true)),
                stop.clone().cancelled_owned(),
            );
        if wallboard.enabled() && !wallboard.protected() {
            tracing::warn!(http = %http_text, "No [[readers]] configured: the wallboard is open to anyone who reaches the HTTP port.");
        }
        let http_server = axum::serve(
            http,
            metrics::router(HttpState {
                metrics,
                store: store.clone(),
                wallboard,
                presence,
                grpc_listen: grpc_addr.map_or_else(|| "its `listen` address".to_owned(), |a| a.to_string()),
            }),
        )
        .with_graceful_shutdown(stop.clone().cancelled_owned());
        let mut grpc_task = tokio::spawn(grpc_server);
        let mut http_task = tokio::spawn(async move { http_server.await });
        tracing::info!(grpc = %grpc_text, http = %http_text, tls = resolved.tls.is_some(), mtls, "Aggregator serving.");

        // A server that ends before the shutdown signal is a failure.
        let failure: Option<anyhow::Error> = tokio::select! {
            biased;
            () = stop.cancelled() => None,
            r = &mut grpc_task => unexpected_end("gRPC server", r.map(|r| r.map_err(anyhow::Error::new)), &stop),
            r = &mut http_task => unexpected_end("HTTP server", r.map(|r| r.map_err(anyhow::Error::new)), &stop),
        };
        stop.cancel();
        health.set_not_serving::<IngestService>().await;
        tracing::info!(grace = ?grace, "Shutting down: finishing in-flight batches.");

        tracker.close();
        let drained = tokio::time::timeout(grace, async {
            tracker.wait().await;
            if !grpc_task.is_finished() {
                let _ = (&mut grpc_task).await;
            }
            if !http_task.is_finished() {
                let _ = (&mut http_task).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(grace = ?grace, "Shutdown grace elapsed with connections still open; stopping anyway.");
            grpc_task.abort();
            http_task.abort();
        }
        if let Err(error) = store.sync().await {
            tracing::error!(%error, "Final store sync failed; unacked batches will be re-sent by agents.");
        }
        match failure {
            Some(e) => Err(e),
            None => {
                tracing::info!(graceful = drained.is_ok(), "Aggregator stopped.");
                Ok(())
            }
        }
    }
}

/// Why a server task ended before the shutdown signal, if it is a failure.
fn unexpected_end(
    what: &str,
    result: Result<anyhow::Result<()>, tokio::task::JoinError>,
    stop: &CancellationToken,
) -> Option<anyhow::Error> {
    match result {
        // It saw the signal first.
        Ok(Ok(())) if stop.is_cancelled() => None,
        Ok(Ok(())) => Some(anyhow::anyhow!("the {what} stopped unexpectedly")),
        Ok(Err(e)) => Some(e.context(what.to_owned())),
        Err(e) => Some(anyhow::Error::new(e).context(format!("{what} task"))),
    }
}

/// Validates `cfg`, opens its store and serves until `shutdown` is
/// cancelled: [`Aggregator::open`] then [`Aggregator::serve`]. Tests bind
/// `127.0.0.1:0` themselves and pass the listeners.
///
/// # Errors
/// On an invalid config, a store that cannot be opened, or a server failure.
pub async fn serve(
    cfg: Config,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let aggregator = tokio::task::spawn_blocking(move || Aggregator::open(cfg)).await??;
    aggregator.serve(grpc, http, shutdown).await
}

/// The follower's settings from `[kpi]`.
fn follower_config(k: &config::KpiConfig) -> reports::FollowerConfig {
    use callkpi_core::event::NANOS_PER_SEC;
    let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX / NANOS_PER_SEC).saturating_mul(NANOS_PER_SEC);
    reports::FollowerConfig {
        seal: Some(callkpi_core::engine::SealConfig {
            horizon: secs(k.seal_horizon_s),
            fcr_max_window: secs(k.fcr_max_window_s),
            rollups_in_memory: false,
        }),
        unknown_end_timeout: secs(k.unknown_end_timeout_s),
        checkpoint_every: std::time::Duration::from_millis(k.checkpoint_interval_ms.max(100)),
    }
}
