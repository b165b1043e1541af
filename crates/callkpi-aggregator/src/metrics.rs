//! Prometheus metrics (prometheus-client) and the HTTP server for them.
//!
//! `GET /metrics` (OpenMetrics text) and `GET /healthz` (`ok`). Every
//! per-agent series is labelled `agent` with a configured agent id only:
//! nothing is recorded for a stream before its credential and its Hello
//! match a configured agent, so an attacker cannot grow the label set.
//! Series of every configured agent exist from start (at zero).
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `callkpi_ingest_batches_received_total` | counter | agent | Batches received (valid or not) |
//! | `callkpi_ingest_batches_stored_total` | counter | agent | Batches stored durably and acked |
//! | `callkpi_ingest_events_received_total` | counter | agent | events in received Batches |
//! | `callkpi_ingest_events_stored_total` | counter | agent | new events stored |
//! | `callkpi_ingest_events_duplicate_total` | counter | agent | re-sent events already held, ignored |
//! | `callkpi_ingest_events_quarantined_total` | counter | agent | events stored in quarantine (uninterpretable) |
//! | `callkpi_ingest_events_lost_total` | counter | agent | seqs the agent declared absent (spool cap) |
//! | `callkpi_ingest_rejects_total` | counter | reason | Rejects sent, by RejectCode (`checksum_mismatch`, ...) |
//! | `callkpi_ingest_auth_failures_total` | counter | code | streams refused `unauthenticated` / `permission_denied` |
//! | `callkpi_ingest_ack_latency_seconds` | histogram | | Batch fully received to Ack sent (includes the fsync) |
//! | `callkpi_store_size_bytes` | gauge | | store size on disk |
//! | `callkpi_agent_hwm` | gauge | agent | highest contiguous seq durably held |
//! | `callkpi_agent_lag_seconds` | gauge | agent | now - `captured_at` of the last event stored |
//! | `callkpi_agent_clock_offset_seconds` | gauge | agent | agent clock - aggregator clock |
//! | `callkpi_agent_spool_bytes` | gauge | agent | agent's spool size, from its last Hello/Heartbeat |
//! | `callkpi_agent_connected` | gauge | agent | 1 while the agent has a live stream |
//! | `callkpi_agents_connected` | gauge | | live streams |

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::store::Store;

/// `agent` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct AgentLabel {
    pub(crate) agent: String,
}

/// `reason` label of rejects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

/// `code` label of authentication failures.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct CodeLabel {
    pub(crate) code: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric of the aggregator, registered in its own registry (no globals).
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) batches_received: Family<AgentLabel, Counter>,
    pub(crate) batches_stored: Family<AgentLabel, Counter>,
    pub(crate) events_received: Family<AgentLabel, Counter>,
    pub(crate) events_stored: Family<AgentLabel, Counter>,
    pub(crate) events_duplicate: Family<AgentLabel, Counter>,
    pub(crate) events_quarantined: Family<AgentLabel, Counter>,
    pub(crate) events_lost: Family<AgentLabel, Counter>,
    pub(crate) rejects: Family<ReasonLabel, Counter>,
    pub(crate) auth_failures: Family<CodeLabel, Counter>,
    pub(crate) ack_latency: Histogram,
    store_bytes: Gauge,
    hwm: Family<AgentLabel, Gauge>,
    lag: Family<AgentLabel, FloatGauge>,
    clock_offset: Family<AgentLabel, FloatGauge>,
    pub(crate) spool_bytes: Family<AgentLabel, Gauge>,
    pub(crate) agent_connected: Family<AgentLabel, Gauge>,
    pub(crate) connected: Gauge,
}

impl Metrics {
    /// Registers every metric, with zero series for each configured agent.
    pub(crate) fn new<'a>(agents: impl IntoIterator<Item = &'a str>) -> Self {
        let mut registry = Registry::with_prefix("callkpi");
        let m = Self {
            registry: Registry::default(),
            batches_received: Family::default(),
            batches_stored: Family::default(),
            events_received: Family::default(),
            events_stored: Family::default(),
            events_duplicate: Family::default(),
            events_quarantined: Family::default(),
            events_lost: Family::default(),
            rejects: Family::default(),
            auth_failures: Family::default(),
            ack_latency: Histogram::new(exponential_buckets(0.000_5, 2.0, 14)),
            store_bytes: Gauge::default(),
            hwm: Family::default(),
            lag: Family::default(),
            clock_offset: Family::default(),
            spool_bytes: Family::default(),
            agent_connected: Family::default(),
            connected: Gauge::default(),
        };
        let counters = [
            ("ingest_batches_received", "Batches received", &m.batches_received),
            ("ingest_batches_stored", "Batches stored durably and acked", &m.batches_stored),
            ("ingest_events_received", "Events in received Batches", &m.events_received),
            ("ingest_events_stored", "New events stored", &m.events_stored),
            ("ingest_events_duplicate", "Re-sent events already held, ignored", &m.events_duplicate),
            ("ingest_events_quarantined", "Uninterpretable events stored in quarantine", &m.events_quarantined),
            ("ingest_events_lost", "Seqs declared absent by the agent (dropped by its spool)", &m.events_lost),
        ];
        for (name, help, family) in counters {
            registry.register(name, help, family.clone());
        }
        registry.register("ingest_rejects", "Rejects sent to agents, by reason", m.rejects.clone());
        registry.register("ingest_auth_failures", "Streams refused for their credential", m.auth_failures.clone());
        registry.register_with_unit(
            "ingest_ack_latency",
            "Time from a Batch received to its Ack sent, including the fsync",
            Unit::Seconds,
            m.ack_latency.clone(),
        );
        registry.register_with_unit("store_size", "Store size on disk", Unit::Bytes, m.store_bytes.clone());
        registry.register("agent_hwm", "Highest contiguous seq durably held per agent", m.hwm.clone());
        registry.register_with_unit(
            "agent_lag",
            "Now minus captured_at of the agent's last stored event",
            Unit::Seconds,
            m.lag.clone(),
        );
        registry.register_with_unit(
            "agent_clock_offset",
            "Agent wall clock minus aggregator wall clock",
            Unit::Seconds,
            m.clock_offset.clone(),
        );
        registry.register_with_unit(
            "agent_spool",
            "Agent spool size from its last Hello or Heartbeat",
            Unit::Bytes,
            m.spool_bytes.clone(),
        );
        registry.register("agent_connected", "1 while the agent has a live stream", m.agent_connected.clone());
        registry.register("agents_connected", "Agents with a live stream", m.connected.clone());

        for agent in agents {
            let label = AgentLabel { agent: agent.to_owned() };
            for family in [
                &m.batches_received,
                &m.batches_stored,
                &m.events_received,
                &m.events_stored,
                &m.events_duplicate,
                &m.events_quarantined,
                &m.events_lost,
            ] {
                drop(family.get_or_create(&label));
            }
            drop(m.hwm.get_or_create(&label));
            drop(m.agent_connected.get_or_create(&label));
        }
        Self { registry, ..m }
    }

    /// Refreshes the gauges read from the store, then encodes everything.
    fn render(&self, store: &Store, now_ns: i64) -> String {
        self.store_bytes.set(i64::try_from(store.size_on_disk()).unwrap_or(i64::MAX));
        match store.agents() {
            Ok(records) => {
                for r in records {
                    let label = AgentLabel { agent: r.agent_id };
                    // Records exist only for agents that passed authentication
                    // (configured ones), but a store can outlive its config:
                    // only label agents that already have series.
                    if self.hwm.get(&label).is_none() {
                        continue;
                    }
                    self.hwm.get_or_create(&label).set(i64::try_from(r.hwm).unwrap_or(i64::MAX));
                    if let Some(captured) = r.last_captured_ns {
                        self.lag.get_or_create(&label).set((now_ns.saturating_sub(captured)) as f64 / 1e9);
                    }
                    if let Some(offset) = r.clock_offset_ns {
                        self.clock_offset.get_or_create(&label).set(offset as f64 / 1e9);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "Cannot read agent records for metrics."),
        }
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%error, "Cannot encode metrics.");
        }
        out
    }
}

/// State of the HTTP server.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) store: Store,
}

/// `/metrics` and `/healthz`.
pub(crate) fn router(state: HttpState) -> axum::Router {
    axum::Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).with_state(state)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let now = crate::now_ns();
    match tokio::task::spawn_blocking(move || state.metrics.render(&state.store, now)).await {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}
