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
//! | `callkpi_kpi_open_calls` | gauge | | calls in the KPI engine's open window (not sealed) |
//! | `callkpi_kpi_open_events` | gauge | | events of those calls |
//! | `callkpi_kpi_contacts` | gauge | | callers' contacts kept for FCR |
//! | `callkpi_kpi_agent_changes` | gauge | | agent state changes since their last folded quarter hour |
//! | `callkpi_kpi_calls_sealed` | gauge | | calls sealed into rollups since start |
//! | `callkpi_kpi_calls_reopened` | gauge | | sealed calls reopened by a late event since start |
//! | `callkpi_kpi_late_beyond_retention` | gauge | | late events not applied: their call's raw events were deleted |
//! | `callkpi_store_tree_bytes` | gauge | tree | keys and values per store tree (each retention pass) |
//! | `callkpi_store_oldest_event_timestamp_seconds` | gauge | | oldest raw event kept (each retention pass) |
//! | `callkpi_retention_events_deleted_total` | counter | | raw events deleted by `[retention]` |
//! | `callkpi_retention_calls_deleted_total` | counter | | sealed calls removed from the index by `[retention]` |
//! | `callkpi_agent_hwm` | gauge | agent | highest contiguous seq durably held |
//! | `callkpi_agent_delivery_lag_seconds` | gauge | agent | age of the data the agent holds unacknowledged; 0 while connected and caught up |
//! | `callkpi_agent_since_contact_seconds` | gauge | agent | now - the last message received from the agent |
//! | `callkpi_agent_since_event_seconds` | gauge | agent | now - `captured_at` of the last event stored (grows while the PBX is quiet) |
//! | `callkpi_agent_clock_offset_seconds` | gauge | agent | agent clock - aggregator clock |
//! | `callkpi_agent_spool_bytes` | gauge | agent | agent's spool size, from its last Hello/Heartbeat |
//! | `callkpi_agent_connected` | gauge | agent | 1 while the agent has a live stream |
//! | `callkpi_agents_connected` | gauge | | live streams |
//! | `callkpi_queue_waiting` | gauge | queue | callers waiting now |
//! | `callkpi_queue_longest_wait_seconds` | gauge | queue | wait of the longest-waiting caller now (0 when none) |
//! | `callkpi_queue_service_level_today_ratio` | gauge | queue, threshold | today's service level, 0 to 1 (absent while nothing was offered) |
//! | `callkpi_queue_abandon_today_ratio` | gauge | queue | today's abandoned / offered, 0 to 1 (absent while nothing was offered) |
//! | `callkpi_queue_offered_today` | gauge | queue | calls offered today (short abandons excluded) |
//! | `callkpi_queue_answered_today` | gauge | queue | calls answered today |
//! | `callkpi_queue_agents` | gauge | queue, state | members `available`, `busy` (on a call), `wrapup`, `paused` |
//!
//! The `callkpi_queue_*` gauges are the live figures of `WatchKpis` and the
//! wallboard, computed at scrape time: "today" starts at midnight in
//! `[live].time_zone`, and `threshold` takes each of `[live].sl_thresholds_s`
//! (seconds). A queue appears once it has had a caller or a member, and
//! its series vanish when it has neither today. Queue names come from the
//! PBXs of configured agents only. The live view merges a queue's callers
//! across sites, so there is no `site` label.

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

use callkpi_proto::pb;

use crate::liveness::Presence;
use crate::reports::agent_liveness;
use crate::store::Store;
use crate::wallboard::Wallboard;

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

/// `queue` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct QueueLabel {
    pub(crate) queue: String,
}

/// `queue` and service-level `threshold` (seconds) labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct QueueThresholdLabel {
    pub(crate) queue: String,
    pub(crate) threshold: String,
}

/// `queue` and agent `state` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct QueueStateLabel {
    pub(crate) queue: String,
    pub(crate) state: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The KPI engine's open window, sealing totals and late events past retention.
type KpiWindow = (callkpi_core::engine::Window, u64, u64, u64);

/// `tree` label of the store's size.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct TreeLabel {
    pub(crate) tree: &'static str,
}

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
    kpi_open_calls: Gauge,
    kpi_open_events: Gauge,
    kpi_contacts: Gauge,
    kpi_agent_changes: Gauge,
    kpi_sealed: Gauge,
    kpi_reopened: Gauge,
    kpi_late_beyond_retention: Gauge,
    tree_bytes: Family<TreeLabel, Gauge>,
    oldest_event: FloatGauge,
    retention_events: Counter,
    retention_calls: Counter,
    hwm: Family<AgentLabel, Gauge>,
    delivery_lag: Family<AgentLabel, FloatGauge>,
    since_contact: Family<AgentLabel, FloatGauge>,
    since_event: Family<AgentLabel, FloatGauge>,
    clock_offset: Family<AgentLabel, FloatGauge>,
    pub(crate) spool_bytes: Family<AgentLabel, Gauge>,
    pub(crate) agent_connected: Family<AgentLabel, Gauge>,
    pub(crate) connected: Gauge,
    queue_waiting: Family<QueueLabel, Gauge>,
    queue_longest_wait: Family<QueueLabel, FloatGauge>,
    queue_service_level: Family<QueueThresholdLabel, FloatGauge>,
    queue_abandon: Family<QueueLabel, FloatGauge>,
    queue_offered: Family<QueueLabel, Gauge>,
    queue_answered: Family<QueueLabel, Gauge>,
    queue_agents: Family<QueueStateLabel, Gauge>,
    /// Serialises scrapes: the queue families are cleared and refilled.
    render_lock: std::sync::Mutex<()>,
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
            kpi_open_calls: Gauge::default(),
            kpi_open_events: Gauge::default(),
            kpi_contacts: Gauge::default(),
            kpi_agent_changes: Gauge::default(),
            kpi_sealed: Gauge::default(),
            kpi_reopened: Gauge::default(),
            kpi_late_beyond_retention: Gauge::default(),
            tree_bytes: Family::default(),
            oldest_event: FloatGauge::default(),
            retention_events: Counter::default(),
            retention_calls: Counter::default(),
            hwm: Family::default(),
            delivery_lag: Family::default(),
            since_contact: Family::default(),
            since_event: Family::default(),
            clock_offset: Family::default(),
            spool_bytes: Family::default(),
            agent_connected: Family::default(),
            connected: Gauge::default(),
            queue_waiting: Family::default(),
            queue_longest_wait: Family::default(),
            queue_service_level: Family::default(),
            queue_abandon: Family::default(),
            queue_offered: Family::default(),
            queue_answered: Family::default(),
            queue_agents: Family::default(),
            render_lock: std::sync::Mutex::new(()),
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
        let kpi = [
            ("kpi_open_calls", "Calls in the KPI engine's open window (not yet sealed)", &m.kpi_open_calls),
            ("kpi_open_events", "Events of the calls in the open window", &m.kpi_open_events),
            ("kpi_contacts", "Callers' contacts kept for FCR (inside the largest FCR window)", &m.kpi_contacts),
            ("kpi_agent_changes", "Agent state changes since their last folded quarter hour", &m.kpi_agent_changes),
            ("kpi_calls_sealed", "Calls sealed into rollups since start", &m.kpi_sealed),
            ("kpi_calls_reopened", "Sealed calls reopened by a late event since start", &m.kpi_reopened),
            (
                "kpi_late_beyond_retention",
                "Late events not applied since start: their call's raw events were deleted by retention",
                &m.kpi_late_beyond_retention,
            ),
        ];
        for (name, help, gauge) in kpi {
            registry.register(name, help, gauge.clone());
        }
        registry.register_with_unit(
            "store_tree",
            "Bytes of keys and values per store tree (measured by each retention pass)",
            Unit::Bytes,
            m.tree_bytes.clone(),
        );
        registry.register_with_unit(
            "store_oldest_event_timestamp",
            "Time of the oldest raw event kept, Unix seconds (measured by each retention pass)",
            Unit::Seconds,
            m.oldest_event.clone(),
        );
        registry.register("retention_events_deleted", "Raw events deleted by retention", m.retention_events.clone());
        registry.register(
            "retention_calls_deleted",
            "Sealed calls removed from the index by retention",
            m.retention_calls.clone(),
        );
        registry.register("agent_hwm", "Highest contiguous seq durably held per agent", m.hwm.clone());
        let lags = [
            (
                "agent_delivery_lag",
                "Age of the data the agent holds unacknowledged; 0 while connected and caught up",
                &m.delivery_lag,
            ),
            ("agent_since_contact", "Time since the last message received from the agent", &m.since_contact),
            ("agent_since_event", "Time since the capture of the agent's last stored event", &m.since_event),
        ];
        for (name, help, family) in lags {
            registry.register_with_unit(name, help, Unit::Seconds, family.clone());
        }
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
        registry.register("queue_waiting", "Callers waiting in the queue now", m.queue_waiting.clone());
        registry.register_with_unit(
            "queue_longest_wait",
            "Wait of the queue's longest-waiting caller now",
            Unit::Seconds,
            m.queue_longest_wait.clone(),
        );
        let ratio = || Unit::Other("ratio".to_owned());
        registry.register_with_unit(
            "queue_service_level_today",
            "Today's service level (answered within threshold / offered), 0 to 1",
            ratio(),
            m.queue_service_level.clone(),
        );
        registry.register_with_unit(
            "queue_abandon_today",
            "Today's abandonment (abandoned / offered), 0 to 1",
            ratio(),
            m.queue_abandon.clone(),
        );
        registry.register("queue_offered_today", "Calls offered to the queue today", m.queue_offered.clone());
        registry.register("queue_answered_today", "Calls answered in the queue today", m.queue_answered.clone());
        registry.register("queue_agents", "Queue members by state now", m.queue_agents.clone());

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

    /// Replaces the per-queue gauges with `snap`'s figures.
    fn set_queues(&self, snap: &pb::LiveSnapshot) {
        for family in [&self.queue_waiting, &self.queue_offered, &self.queue_answered] {
            family.clear();
        }
        self.queue_longest_wait.clear();
        self.queue_service_level.clear();
        self.queue_abandon.clear();
        self.queue_agents.clear();
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for q in &snap.queues {
            let label = QueueLabel { queue: q.queue.clone() };
            self.queue_waiting.get_or_create(&label).set(i64::from(q.calls_waiting));
            self.queue_longest_wait.get_or_create(&label).set(q.longest_wait_s);
            self.queue_offered.get_or_create(&label).set(int(q.offered_today));
            self.queue_answered.get_or_create(&label).set(int(q.answered_today));
            if let Some(pct) = q.abandonment_today_pct {
                self.queue_abandon.get_or_create(&label).set(pct / 100.0);
            }
            for (threshold, pct) in &q.service_level_today_pct {
                let label = QueueThresholdLabel { queue: q.queue.clone(), threshold: threshold.to_string() };
                self.queue_service_level.get_or_create(&label).set(pct / 100.0);
            }
            for (state, n) in [
                ("available", q.agents_available),
                ("busy", q.agents_busy),
                ("wrapup", q.agents_wrapup),
                ("paused", q.agents_paused),
            ] {
                self.queue_agents.get_or_create(&QueueStateLabel { queue: q.queue.clone(), state }).set(i64::from(n));
            }
        }
    }

    /// Refreshes the gauges read from the store and the live view, then
    /// encodes everything.
    /// Counts what a retention pass deleted and measures the store.
    pub(crate) fn record_retention(&self, store: &Store, done: crate::retention::Pass) {
        self.retention_events.inc_by(done.events);
        self.retention_calls.inc_by(done.calls);
        for (tree, bytes) in store.tree_bytes() {
            self.tree_bytes.get_or_create(&TreeLabel { tree }).set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let oldest = store
            .agents()
            .unwrap_or_default()
            .iter()
            .filter_map(|a| store.oldest_event_ns(&a.agent_id).ok().flatten())
            .min();
        if let Some(t) = oldest {
            self.oldest_event.set(t as f64 / 1e9);
        }
    }

    fn render(
        &self,
        store: &Store,
        presence: &Presence,
        live: Option<&pb::LiveSnapshot>,
        kpi: KpiWindow,
        now_ns: i64,
    ) -> String {
        let _serial = self.render_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(snap) = live {
            self.set_queues(snap);
        }
        let (w, sealed, reopened, late) = kpi;
        self.kpi_late_beyond_retention.set(i64::try_from(late).unwrap_or(i64::MAX));
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.kpi_open_calls.set(n(w.calls));
        self.kpi_open_events.set(n(w.events));
        self.kpi_contacts.set(n(w.contacts));
        self.kpi_agent_changes.set(n(w.agent_changes));
        self.kpi_sealed.set(i64::try_from(sealed).unwrap_or(i64::MAX));
        self.kpi_reopened.set(i64::try_from(reopened).unwrap_or(i64::MAX));
        self.store_bytes.set(i64::try_from(store.size_on_disk()).unwrap_or(i64::MAX));
        match store.agents() {
            Ok(records) => {
                for r in records {
                    let label = AgentLabel { agent: r.agent_id.clone() };
                    // Records exist only for agents that passed authentication
                    // (configured ones), but a store can outlive its config:
                    // only label agents that already have series.
                    if self.hwm.get(&label).is_none() {
                        continue;
                    }
                    self.hwm.get_or_create(&label).set(i64::try_from(r.hwm).unwrap_or(i64::MAX));
                    let l = agent_liveness(&r, presence.since(&r.agent_id).is_some(), now_ns);
                    self.delivery_lag.get_or_create(&label).set(l.delivery_lag_s);
                    if let Some(s) = l.since_contact_s {
                        self.since_contact.get_or_create(&label).set(s);
                    }
                    if let Some(s) = l.since_event_s {
                        self.since_event.get_or_create(&label).set(s);
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
    /// Live per-queue figures (and the wallboard routes when enabled).
    pub(crate) wallboard: Arc<Wallboard>,
    /// Which agents are connected.
    pub(crate) presence: Arc<Presence>,
    /// The gRPC address, for whoever knocks on the wrong port.
    pub(crate) grpc_listen: String,
}

/// `/metrics` and `/healthz`, and the wallboard's routes when it is enabled;
/// `/` says what is where, and a gRPC call on this port is told the right one.
pub(crate) fn router(state: HttpState) -> axum::Router {
    let wallboard = Arc::clone(&state.wallboard);
    let index = index_text(wallboard.enabled(), &state.grpc_listen);
    let grpc_listen = state.grpc_listen.clone();
    let router = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/", get(move || async move { index }))
        .fallback(move |req: axum::extract::Request| wrong_port(req, grpc_listen.clone()))
        .with_state(state);
    if wallboard.enabled() { router.merge(crate::wallboard::router(wallboard)) } else { router }
}

fn index_text(wallboard: bool, grpc_listen: &str) -> String {
    let board = if wallboard { "/wallboard/  the wall-screen page (a reader token: ?token=...)\n" } else { "" };
    format!(
        "callkpi aggregator, HTTP port.\n{board}/metrics     Prometheus metrics\n/healthz     liveness\n\
         gRPC (agents, callkpi report/watch/agents) is on {grpc_listen}.\n"
    )
}

/// 404, except for a gRPC call: a gRPC error saying where gRPC is, which
/// `callkpi report --server` pointed here prints.
async fn wrong_port(req: axum::extract::Request, grpc_listen: String) -> axum::response::Response {
    let grpc = req.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        return StatusCode::NOT_FOUND.into_response();
    }
    let message = format!("this is the aggregator's HTTP port (metrics, wallboard); gRPC is on {grpc_listen}");
    // A trailers-only gRPC response: status in the headers, no body.
    let mut r = StatusCode::OK.into_response();
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", header::HeaderValue::from_static("14"));
    if let Ok(v) = header::HeaderValue::from_str(&message) {
        headers.insert("grpc-message", v);
    }
    r
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let now = crate::now_ns();
    let render = move || {
        let live = state.wallboard.metrics_snapshot(now);
        if let Err(error) = &live {
            tracing::warn!(%error, "Cannot compute the live queue figures for metrics.");
        }
        let f = state.wallboard.follower();
        let (w, sealed, reopened) = f.window();
        let kpi = (w, sealed, reopened, f.late_beyond_retention());
        state.metrics.render(&state.store, &state.presence, live.as_ref().ok(), kpi, now)
    };
    match tokio::task::spawn_blocking(render).await {
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
