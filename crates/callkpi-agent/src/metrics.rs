//! Prometheus metrics of the agent, served at `http://<[metrics].listen>/metrics`.
//!
//! Names follow `callkpi_<name>_<unit>_total` for counters (the `_total`
//! suffix is added by the encoder) and `callkpi_<name>_<unit>` for gauges.
//! The only label is `source`, the configured source name: a handful of
//! values per agent, never a call id.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `callkpi_source_events_total` | counter | source | events mapped from the feed (captured) |
//! | `callkpi_source_spooled_events_total` | counter | source | of those, durably stored in the spool |
//! | `callkpi_source_malformed_records_total` | counter | source | records that could not be parsed (parse errors; HEP: datagrams that are not HEP, unparsable SIP, broken TCP streams) |
//! | `callkpi_source_unmapped_records_total` | counter | source | well-formed records with no mapping rule (by design: `VarSet`, `PENALTY`...) |
//! | `callkpi_source_read_bytes_total` | counter | source | bytes read from the file or socket |
//! | `callkpi_source_rotations_total` | counter | source | queue_log rotations followed |
//! | `callkpi_source_truncations_total` | counter | source | queue_log truncations (restarted at 0) |
//! | `callkpi_source_reconnects_total` | counter | source | AMI and ESL connections lost and reopened |
//! | `callkpi_source_spool_full_waits_total` | counter | source | queue_log chunks refused by a full spool (read paused, retried) |
//! | `callkpi_source_connected` | gauge | source | 1 while an AMI or ESL session is logged in (line monitor: while its device is open; HEP: while listening) |
//! | `callkpi_source_lost_records_total` | counter | source | records the feed numbered but never delivered (line monitor sequence gaps) |
//! | `callkpi_source_device_restarts_total` | counter | source | restarts of the device feeding the source (line monitor reboots) |
//! | `callkpi_uplink_reconnects_total` | counter | | uplink streams ended and retried |
//! | `callkpi_uplink_batches_sent_total` | counter | | Batches sent |
//! | `callkpi_uplink_acked_events_total` | counter | | seqs newly acknowledged by the aggregator |
//! | `callkpi_uplink_connected` | gauge | | 1 while a stream is past its Welcome |
//! | `callkpi_uplink_clock_offset_seconds` | gauge | | agent wall clock minus aggregator wall clock (last estimate) |
//! | `callkpi_uplink_rtt_seconds` | gauge | | round trip of that estimate |
//! | `callkpi_spool_bytes` | gauge | | bytes held by the spool |
//! | `callkpi_spool_depth_events` | gauge | | events held (not yet acked) |
//! | `callkpi_spool_last_seq` / `callkpi_spool_acked_seq` | gauge | | highest seq assigned / acknowledged |
//! | `callkpi_spool_oldest_unacked_age_seconds` | gauge | | now minus capture time of the oldest event held; 0 when empty |
//! | `callkpi_spool_dropped_events_total` | counter | | events dropped by the byte cap (data lost) |
//! | `callkpi_spool_full_refusals_total` | counter | | replayable inputs refused by the byte cap (not lost) |
//!
//! The spool's values are read at scrape time ([`SpoolCollector`]), so they
//! are never stale.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::spool::Spool;

/// The one label: the configured source name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// Source name from the config.
    pub source: String,
}

/// Per-source counters, resolved once per source so the hot path does not
/// hash label sets.
#[derive(Debug, Clone)]
pub struct SourceMetrics {
    /// Events mapped from the feed.
    pub events: Counter,
    /// Events durably spooled.
    pub spooled: Counter,
    /// Records that could not be parsed.
    pub malformed: Counter,
    /// Well-formed records without a mapping rule.
    pub unmapped: Counter,
    /// Bytes read.
    pub read_bytes: Counter,
    /// queue_log rotations.
    pub rotations: Counter,
    /// queue_log truncations.
    pub truncations: Counter,
    /// AMI reconnects.
    pub reconnects: Counter,
    /// Chunks refused by a full spool.
    pub full_waits: Counter,
    /// 1 while connected (AMI) or open (line monitor).
    pub connected: Gauge,
    /// Records missing from the feed's own numbering (line monitor).
    pub lost: Counter,
    /// Restarts of the feeding device (line monitor reboots).
    pub device_restarts: Counter,
}

/// Every metric of one agent run. No global registry: each [`crate::run`]
/// has its own, so tests in one process do not share counters.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events: Family<SourceLabels, Counter>,
    spooled: Family<SourceLabels, Counter>,
    malformed: Family<SourceLabels, Counter>,
    unmapped: Family<SourceLabels, Counter>,
    read_bytes: Family<SourceLabels, Counter>,
    rotations: Family<SourceLabels, Counter>,
    truncations: Family<SourceLabels, Counter>,
    reconnects: Family<SourceLabels, Counter>,
    full_waits: Family<SourceLabels, Counter>,
    connected: Family<SourceLabels, Gauge>,
    lost: Family<SourceLabels, Counter>,
    device_restarts: Family<SourceLabels, Counter>,
    /// Uplink streams ended and retried.
    pub uplink_reconnects: Counter,
    /// Batches sent.
    pub uplink_batches_sent: Counter,
    /// Seqs newly acknowledged.
    pub uplink_acked_events: Counter,
    /// 1 while a stream is past its Welcome.
    pub uplink_connected: Gauge,
    /// Last clock offset estimate, seconds.
    pub clock_offset_seconds: Gauge<f64, AtomicU64>,
    /// Round trip of that estimate, seconds.
    pub rtt_seconds: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric but the spool's.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("callkpi");
        let m = Self {
            events: Family::default(),
            spooled: Family::default(),
            malformed: Family::default(),
            unmapped: Family::default(),
            read_bytes: Family::default(),
            rotations: Family::default(),
            truncations: Family::default(),
            reconnects: Family::default(),
            full_waits: Family::default(),
            connected: Family::default(),
            lost: Family::default(),
            device_restarts: Family::default(),
            uplink_reconnects: Counter::default(),
            uplink_batches_sent: Counter::default(),
            uplink_acked_events: Counter::default(),
            uplink_connected: Gauge::default(),
            clock_offset_seconds: Gauge::default(),
            rtt_seconds: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("source_events", "Events mapped from the feed", m.events.clone());
        registry.register("source_spooled_events", "Events durably stored in the spool", m.spooled.clone());
        registry.register("source_malformed_records", "Records that could not be parsed", m.malformed.clone());
        registry.register("source_unmapped_records", "Well-formed records with no mapping rule", m.unmapped.clone());
        registry.register("source_read_bytes", "Bytes read from the feed", m.read_bytes.clone());
        registry.register("source_rotations", "queue_log rotations followed", m.rotations.clone());
        registry.register("source_truncations", "queue_log truncations, restarted at 0", m.truncations.clone());
        registry.register("source_reconnects", "Feed connections lost and reopened", m.reconnects.clone());
        registry.register(
            "source_spool_full_waits",
            "Chunks refused by a full spool (reading paused, retried)",
            m.full_waits.clone(),
        );
        registry.register("source_connected", "1 while the feed's session is up", m.connected.clone());
        registry.register("source_lost_records", "Records numbered by the feed but never received", m.lost.clone());
        registry.register(
            "source_device_restarts",
            "Restarts of the device feeding the source",
            m.device_restarts.clone(),
        );
        registry.register("uplink_reconnects", "Uplink streams ended and retried", m.uplink_reconnects.clone());
        registry.register("uplink_batches_sent", "Batches sent to the aggregator", m.uplink_batches_sent.clone());
        registry.register(
            "uplink_acked_events",
            "Seqs newly acknowledged by the aggregator",
            m.uplink_acked_events.clone(),
        );
        registry.register("uplink_connected", "1 while an uplink stream is established", m.uplink_connected.clone());
        registry.register(
            "uplink_clock_offset_seconds",
            "Agent wall clock minus aggregator wall clock, last estimate",
            m.clock_offset_seconds.clone(),
        );
        registry.register("uplink_rtt_seconds", "Round trip of the last clock estimate", m.rtt_seconds.clone());
        Self { registry, ..m }
    }

    /// The counters of one source (created at 0 so they appear before the
    /// first event).
    pub fn source(&self, name: &str) -> SourceMetrics {
        let l = SourceLabels { source: name.to_owned() };
        SourceMetrics {
            events: self.events.get_or_create(&l).clone(),
            spooled: self.spooled.get_or_create(&l).clone(),
            malformed: self.malformed.get_or_create(&l).clone(),
            unmapped: self.unmapped.get_or_create(&l).clone(),
            read_bytes: self.read_bytes.get_or_create(&l).clone(),
            rotations: self.rotations.get_or_create(&l).clone(),
            truncations: self.truncations.get_or_create(&l).clone(),
            reconnects: self.reconnects.get_or_create(&l).clone(),
            full_waits: self.full_waits.get_or_create(&l).clone(),
            connected: self.connected.get_or_create(&l).clone(),
            lost: self.lost.get_or_create(&l).clone(),
            device_restarts: self.device_restarts.get_or_create(&l).clone(),
        }
    }

    /// Adds the spool's gauges and counters, read at scrape time.
    pub fn register_spool(&mut self, spool: Spool, clock: Clock) {
        self.registry.register_collector(Box::new(SpoolCollector { spool, clock }));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Reads [`Spool::stats`] at each scrape.
#[derive(Debug)]
pub struct SpoolCollector {
    spool: Spool,
    clock: Clock,
}

impl Collector for SpoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.spool.stats();
        let age = if s.depth == 0 || s.oldest_captured_at_ns <= 0 {
            0.0
        } else {
            (self.clock.wall_ns() - s.oldest_captured_at_ns).max(0) as f64 / 1e9
        };
        let gauges: [(&str, &str, f64); 5] = [
            ("spool_bytes", "Bytes held by the spool", s.bytes as f64),
            ("spool_depth_events", "Events held by the spool, not yet acked", s.depth as f64),
            ("spool_last_seq", "Highest seq assigned", s.last_seq as f64),
            ("spool_acked_seq", "Highest seq acknowledged by the aggregator", s.acked_seq as f64),
            ("spool_oldest_unacked_age_seconds", "Age of the oldest event held, 0 when empty", age),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let counters: [(&str, &str, u64); 2] = [
            ("spool_dropped_events", "Events dropped by the spool's byte cap (lost)", s.dropped_total),
            ("spool_full_refusals", "Replayable inputs refused by the byte cap (not lost)", s.full_refusals_total),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        Ok(())
    }
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        metrics.encode(),
    )
        .into_response()
}

/// Binds `addr` and returns the bound address (port 0 picks one) and the
/// server future, which ends when `shutdown` is cancelled.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>> + Send + 'static)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new().route("/metrics", get(serve_metrics)).with_state(metrics);
    let server = async move { axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await };
    Ok((local, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention() {
        let m = Metrics::new();
        let s = m.source("ql");
        s.events.inc_by(3);
        m.uplink_reconnects.inc();
        m.clock_offset_seconds.set(-0.25);
        let text = m.encode();
        assert!(text.contains("callkpi_source_events_total{source=\"ql\"} 3"), "{text}");
        assert!(text.contains("callkpi_uplink_reconnects_total 1"), "{text}");
        assert!(text.contains("callkpi_uplink_clock_offset_seconds -0.25"), "{text}");
        assert!(text.contains("callkpi_source_rotations_total{source=\"ql\"} 0"), "{text}");
    }
}
