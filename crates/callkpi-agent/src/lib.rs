//! The callkpi agent: runs on the PBX/SBC, reads its feeds, spools events
//! durably and streams them to the aggregator.
//!
//! ```text
//! sources (queue_log tail, AMI) ──submit──▶ spool writer ──▶ sled spool ──read──▶ uplink ──gRPC──▶ aggregator
//!                                  (events + checkpoint,        ▲                      │
//!                                   one batch, fsync'd)         └──────── ack ─────────┘
//! ```
//!
//! [`run`] (or [`start`] then [`RunningAgent::wait`]) wires everything from a
//! [`Config`] and one [`CancellationToken`]. Shutdown goes downstream, as
//! the delivery guarantees need: sources stop first (each finishes its
//! current submit), then the spool writer drains its queue and syncs, then
//! the uplink sends nothing new and waits (bounded) for the acks of the
//! Batches in flight, then the metrics server stops. Each step is logged.
//!
//! # Layout
//! - [`config`]: the TOML configuration and its validation.
//! - [`spool`]: the durable sled spool (sequence numbers, group commit, cap, acks).
//! - [`sources`]: feed readers ([`sources::queue_log`], [`sources::ami`],
//!   [`sources::linemon`], [`sources::esl`], [`sources::hep`]).
//! - [`uplink`]: the `Ingest.Stream` client (handshake, batches, acks, retries).
//! - [`metrics`]: Prometheus registry and `/metrics` server.
//! - [`clock`], [`backoff`]: capture clocks and jittered exponential backoff.

pub mod backoff;
pub mod clock;
pub mod config;
pub mod metrics;
pub mod sources;
pub mod spool;
pub mod uplink;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, error, info, info_span, warn};

use crate::clock::Clock;
pub use crate::config::Config;
use crate::metrics::Metrics;
use crate::sources::SpoolSink;
use crate::sources::ami::AmiSource;
use crate::sources::esl::EslSource;
use crate::sources::hep::{HepSockets, HepSource};
use crate::sources::linemon::LinemonSource;
use crate::sources::queue_log::QueueLogSource;
use crate::spool::{Spool, spawn_writer};
use crate::uplink::Uplink;

/// A started agent.
#[derive(Debug)]
pub struct RunningAgent {
    /// Where `/metrics` is served (the bound port when the config said 0);
    /// `None` when disabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The spool, for inspection (tests, status).
    pub spool: Spool,
    supervisor: JoinHandle<()>,
}

impl RunningAgent {
    /// Waits until the agent has stopped (after the shutdown token was
    /// cancelled and every step of the shutdown ran).
    ///
    /// # Errors
    /// When the supervisor task panicked.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.supervisor.await.context("agent supervisor task failed")
    }
}

/// Runs the agent until `shutdown` is cancelled and the orderly shutdown
/// has completed.
///
/// # Errors
/// An invalid configuration, a spool that cannot be opened, a metrics
/// address that cannot be bound; nothing after start-up is fatal.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(cfg, shutdown).await?.wait().await
}

/// Starts every task and returns once they run.
///
/// # Errors
/// As [`run`].
pub async fn start(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<RunningAgent> {
    cfg.validate()?;
    let clock = Clock::new();
    let (spool_cfg, agent_id, site) = (cfg.spool.clone(), cfg.agent_id.clone(), cfg.site.clone());
    let opened = tokio::task::spawn_blocking(move || Spool::open(&spool_cfg, &agent_id, &site))
        .await
        .context("spool open task failed")?
        .with_context(|| format!("cannot open the spool at {}", cfg.spool.path.display()))?;
    if let Some(path) = &opened.quarantined {
        error!(
            quarantined = %path.display(),
            "Spool was corrupt and has been moved aside; its events will not be delivered. An operator should inspect it."
        );
    }
    let spool = opened.spool;
    let stats = spool.stats();
    info!(
        agent_id = %cfg.agent_id,
        site = %cfg.site,
        path = %cfg.spool.path.display(),
        depth = stats.depth,
        last_seq = stats.last_seq,
        acked_seq = stats.acked_seq,
        "Spool opened."
    );

    let mut metrics = Metrics::new();
    metrics.register_spool(spool.clone(), clock);
    let metrics = Arc::new(metrics);
    let tracker = TaskTracker::new();

    // Metrics server: bound first, so a taken port fails the start.
    let metrics_stop = CancellationToken::new();
    let mut metrics_addr = None;
    let mut metrics_task = None;
    if let Some(addr) = cfg.metrics.listen_addr()? {
        let (bound, server) = metrics::bind(addr, metrics.clone(), metrics_stop.clone())
            .await
            .with_context(|| format!("cannot listen on metrics address {addr}"))?;
        info!(addr = %bound, "Metrics served at /metrics.");
        metrics_addr = Some(bound);
        metrics_task = Some(
            tracker.spawn(
                async move {
                    if let Err(e) = server.await {
                        error!(error = %e, "Metrics server failed.");
                    }
                }
                .instrument(info_span!("metrics")),
            ),
        );
    }

    let uplink = Uplink::new(&cfg.uplink, &cfg.agent_id, &cfg.site, spool.clone(), clock, metrics.clone())?;
    // HEP sockets bound before anything runs, so a taken port fails the start.
    let mut hep_sockets = Vec::new();
    for h in &cfg.sources.hep {
        let sockets = HepSockets::bind(h)
            .await
            .with_context(|| format!("HEP source {}: cannot listen on {} / {}", h.name, h.listen_udp, h.listen_tcp))?;
        hep_sockets.push(sockets);
    }

    // Spool writer, then sources.
    let writer_stop = CancellationToken::new();
    let (handle, writer_task) = spawn_writer(spool.clone(), &cfg.spool, writer_stop.clone());
    let sink = SpoolSink::new(spool.clone(), handle);
    let sources = TaskTracker::new();
    let sources_stop = shutdown.child_token();
    for q in &cfg.sources.queue_log {
        let source = QueueLogSource::new(q, sink.clone(), clock, metrics.source(&q.name))?;
        sources.spawn(source.run(sources_stop.clone()));
    }
    for (i, a) in cfg.sources.ami.iter().enumerate() {
        let secret = a.secret(&format!("sources.ami[{i}]"))?;
        let source = AmiSource::new(a.clone(), secret, sink.clone(), clock, metrics.source(&a.name));
        sources.spawn(source.run(sources_stop.clone()));
    }
    for l in &cfg.sources.linemon {
        let source = LinemonSource::new(l.clone(), sink.clone(), clock, metrics.source(&l.name));
        sources.spawn(source.run(sources_stop.clone()));
    }
    for (i, e) in cfg.sources.esl.iter().enumerate() {
        let password = e.password(&format!("sources.esl[{i}]"))?;
        let source = EslSource::new(e.clone(), password, sink.clone(), clock, metrics.source(&e.name));
        sources.spawn(source.run(sources_stop.clone()));
    }
    for (h, sockets) in cfg.sources.hep.iter().zip(hep_sockets) {
        let source = HepSource::new(h.clone(), sockets, sink.clone(), clock, metrics.source(&h.name));
        sources.spawn(source.run(sources_stop.clone()));
    }
    sources.close();

    let uplink_stop = CancellationToken::new();
    let uplink_task = tracker.spawn(uplink.run(uplink_stop.clone()));
    tracker.close();

    let supervisor = tokio::spawn(
        async move {
            shutdown.cancelled().await;
            info!("Shutdown: stopping sources.");
            sources_stop.cancel();
            sources.wait().await;
            drop(sink);
            info!("Sources stopped; draining the spool writer.");
            writer_stop.cancel();
            if let Err(e) = writer_task.await {
                error!(error = %e, "Spool writer task failed; the last events may not be durable.");
            }
            info!("Spool writer drained and synced; uplink finishing its Batches in flight.");
            uplink_stop.cancel();
            if let Err(e) = uplink_task.await {
                warn!(error = %e, "Uplink task failed.");
            }
            metrics_stop.cancel();
            if let Some(task) = metrics_task {
                let _ = task.await;
            }
            tracker.wait().await;
            info!("Agent stopped.");
        }
        .instrument(info_span!("shutdown")),
    );
    Ok(RunningAgent { metrics_addr, spool, supervisor })
}
