//! The uplink: one long-lived `Ingest.Stream` per agent, delivering the
//! spool to the aggregator with the handshake and ack semantics of
//! `proto/callkpi/v1/ingest.proto`.
//!
//! # One stream
//!
//! 1. Connect a tonic `Channel` (connect timeout, HTTP/2 keep-alive, TLS
//!    when configured), open `Stream` with `authorization: Bearer <token>`
//!    and send `Hello` (identity, version, clocks, spool range and bytes,
//!    [`callkpi_proto::CONTRACT_REVISION`]).
//! 2. Wait for `Welcome` (or `Reject`). `Welcome.resume_after_seq` S acts as
//!    an ack: [`Spool::ack`]`(S)` (which also raises numbering above S when
//!    the aggregator holds more than this spool). The effective limits are the
//!    smaller of the config's and the Welcome's.
//! 3. Send Batches from S + 1, each the next contiguous range from
//!    [`Spool::read_range`] (events the spool no longer holds inside the
//!    range are thereby declared lost), with at most
//!    `Welcome.max_in_flight_batches` not yet acked.
//! 4. On `Ack{up_to_seq}`, [`Spool::ack`]: the events are deleted.
//! 5. Idle for `heartbeat_interval_ms`: send `Heartbeat`; nothing received for
//!    three intervals: the stream is dead.
//!
//! **Byte-identical re-sends.** A Batch is built only from the bytes the
//! spool stored: the `AgentMessage` is encoded by hand around them
//! ([`encode_batch`]), never decoded and re-encoded, and `crc32c` is
//! [`callkpi_proto::encoded_events_crc32c`] over those same bytes. The
//! encoding is exactly prost's (fields in number order, zero scalars
//! omitted); a test checks it against prost.
//!
//! # Errors and retries
//!
//! [`classify`] is the one place deciding what a `tonic::Status` means:
//! transient codes reconnect with jittered exponential backoff
//! (`backoff_initial_ms`..`backoff_max_ms`); codes that need an operator
//! (`UNAUTHENTICATED`, `PERMISSION_DENIED`, and a non-retryable `Reject`,
//! which ends the call with `FAILED_PRECONDITION`) are logged at ERROR and
//! retried only at the longest backoff, while the spool keeps filling.
//!
//! # Clock offset
//!
//! `Welcome` and `HeartbeatAck` echo our monotonic send time, so the round
//! trip is measured on the monotonic clock, and the offset is (agent wall
//! clock at the midpoint of the round trip) - `server_clock_ns`. It is
//! exported (`callkpi_uplink_clock_offset_seconds`) and reported in every
//! Heartbeat.
//!
//! # Shutdown
//!
//! When stopped, the uplink sends no new Batch, waits (at most
//! [`DRAIN_TIMEOUT`]) for the acks of the Batches in flight, then closes the
//! stream. Anything not acked stays in the spool for the next start.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use callkpi_proto::pb;
use callkpi_proto::pb::agent_message::Msg as OutMsg;
use callkpi_proto::pb::aggregator_message::Msg as InMsg;
use prost::Message as _;
use prost::bytes::BufMut as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use crate::clock::Clock;
use crate::config::{ConfigError, Secret, UplinkConfig, read_file};
use crate::metrics::Metrics;
use crate::spool::{ReadRange, Spool, SpoolError};

/// Longest wait for the acks of in-flight Batches at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message accepted from the aggregator.
const MAX_DECODING_BYTES: usize = 4 << 20;
/// Bytes an `AgentMessage` adds around a Batch's event encodings, besides
/// the per-event overhead: tags, lengths, seqs and the CRC.
const BATCH_OVERHEAD: usize = 64;
/// Per-event overhead inside a Batch: field tag plus length varint.
const EVENT_OVERHEAD: usize = 6;
/// In-flight Batches allowed when Welcome says 0.
const DEFAULT_IN_FLIGHT: u32 = 4;
/// Re-checks the spool for new events even without a notification.
const POLL_FALLBACK: Duration = Duration::from_millis(50);
/// gRPC path of `Ingest.Stream`.
const STREAM_PATH: &str = "/callkpi.v1.Ingest/Stream";

// === retry policy ===

/// What to do after a stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Transient: reconnect with jittered exponential backoff.
    Backoff,
    /// An operator must act (credentials, identity, disabled agent): log at
    /// ERROR and retry only at the longest backoff.
    Operator,
}

/// The one place deciding which gRPC status codes are transient.
pub fn classify(code: Code) -> Retry {
    match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled
        | Code::Ok => Retry::Backoff,
        Code::Unauthenticated
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::Unimplemented
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::DataLoss => Retry::Operator,
    }
}

/// Why a stream ended.
#[derive(Debug)]
enum StreamEnd {
    /// Stopped on purpose.
    Shutdown,
    /// Ended; retry per the policy.
    Failed { retry: Retry, reason: String },
}

impl StreamEnd {
    fn status(status: &Status) -> Self {
        Self::Failed { retry: classify(status.code()), reason: format!("{:?}: {}", status.code(), status.message()) }
    }

    fn transient(reason: impl Into<String>) -> Self {
        Self::Failed { retry: Retry::Backoff, reason: reason.into() }
    }
}

// === wire encoding ===

/// What the agent sends: a prost message, or a Batch already encoded from
/// the spool's bytes.
#[derive(Debug)]
pub enum Outgoing {
    /// Hello or Heartbeat.
    Message(pb::AgentMessage),
    /// A whole `AgentMessage` carrying a Batch, encoded by [`encode_batch`].
    Encoded(Vec<u8>),
}

/// Encodes `AgentMessage { batch: Batch { first_seq, last_seq, events, crc32c } }`
/// around the stored event encodings, exactly as prost would; returns the
/// bytes and the CRC.
pub fn encode_batch(range: &ReadRange) -> (Vec<u8>, u32) {
    use prost::encoding::{bytes, fixed32, uint64};
    let crc = callkpi_proto::encoded_events_crc32c(range.events.iter().map(|(_, e)| e.as_slice()));
    let payload: usize = range.events.iter().map(|(_, e)| e.len() + EVENT_OVERHEAD).sum();
    let mut batch = Vec::with_capacity(payload + 32);
    if range.first_seq != 0 {
        uint64::encode(1, &range.first_seq, &mut batch);
    }
    if range.last_seq != 0 {
        uint64::encode(2, &range.last_seq, &mut batch);
    }
    for (_, event) in &range.events {
        // An embedded message is encoded like a bytes field: tag, length, bytes.
        bytes::encode(3, event, &mut batch);
    }
    if crc != 0 {
        fixed32::encode(4, &crc, &mut batch);
    }
    let mut out = Vec::with_capacity(batch.len() + 8);
    bytes::encode(2, &batch, &mut out);
    (out, crc)
}

/// Codec of the stream: [`Outgoing`] out, `AggregatorMessage` in.
#[derive(Debug, Clone, Copy, Default)]
struct IngestCodec;

#[derive(Debug, Clone, Copy, Default)]
struct OutgoingEncoder;

#[derive(Debug, Clone, Copy, Default)]
struct IncomingDecoder;

impl Codec for IngestCodec {
    type Encode = Outgoing;
    type Decode = pb::AggregatorMessage;
    type Encoder = OutgoingEncoder;
    type Decoder = IncomingDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        OutgoingEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        IncomingDecoder
    }
}

impl Encoder for OutgoingEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Outgoing::Message(msg) => msg.encode(buf).map_err(|e| Status::internal(e.to_string())),
            Outgoing::Encoded(bytes) => {
                buf.put_slice(&bytes);
                Ok(())
            }
        }
    }
}

impl Decoder for IncomingDecoder {
    type Item = pb::AggregatorMessage;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<pb::AggregatorMessage>, Status> {
        pb::AggregatorMessage::decode(buf).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

// === impl Uplink ===

/// Errors building the uplink.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// A config value or file could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// tonic refused the endpoint or TLS settings.
    #[error("uplink endpoint {url}: {source}")]
    Endpoint {
        /// The configured URL.
        url: String,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
}

/// The delivery task.
#[derive(Debug)]
pub struct Uplink {
    config: UplinkConfig,
    endpoint: Endpoint,
    token: Option<Secret>,
    agent_id: String,
    site: String,
    spool: Spool,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// Last clock estimate: offset and rtt, ns.
    clock_estimate: Option<(i64, u64)>,
}

impl Uplink {
    /// An uplink for `config`, reading token and TLS files now.
    ///
    /// # Errors
    /// An unreadable token or TLS file, or a URL tonic refuses.
    pub fn new(
        config: &UplinkConfig,
        agent_id: &str,
        site: &str,
        spool: Spool,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Self, UplinkError> {
        let url = config.url.clone();
        let endpoint_err = |source| UplinkError::Endpoint { url: url.clone(), source };
        let mut endpoint = Endpoint::from_shared(config.url.clone())
            .map_err(endpoint_err)?
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .http2_keep_alive_interval(Duration::from_millis(config.keepalive_interval_ms))
            .keep_alive_timeout(Duration::from_millis(config.keepalive_timeout_ms))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
            .user_agent(format!("callkpi-agent/{}", env!("CARGO_PKG_VERSION")))
            .map_err(endpoint_err)?;
        if let Some(tls) = &config.tls {
            let mut t = ClientTlsConfig::new();
            if let Some(ca) = &tls.ca {
                t = t.ca_certificate(Certificate::from_pem(read_file("uplink.tls.ca", ca)?));
            }
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                t = t.identity(Identity::from_pem(
                    read_file("uplink.tls.cert", cert)?,
                    read_file("uplink.tls.key", key)?,
                ));
            }
            if let Some(domain) = &tls.domain {
                t = t.domain_name(domain.clone());
            }
            endpoint = endpoint.tls_config(t).map_err(endpoint_err)?;
        }
        Ok(Self {
            token: config.token()?,
            config: config.clone(),
            endpoint,
            agent_id: agent_id.to_owned(),
            site: site.to_owned(),
            spool,
            clock,
            metrics,
            clock_estimate: None,
        })
    }

    /// Delivers until `stop` is cancelled (then drains in-flight Batches).
    pub async fn run(self, stop: CancellationToken) {
        let span = info_span!("uplink", url = %self.config.url);
        self.run_inner(stop).instrument(span).await;
    }

    async fn run_inner(mut self, stop: CancellationToken) {
        info!("Uplink started.");
        let mut backoff = self.config.backoff();
        let mut failures: u64 = 0;
        loop {
            let mut welcomed = false;
            let end = self.stream_once(&stop, &mut welcomed).await;
            self.metrics.uplink_connected.set(0);
            if welcomed {
                backoff.reset();
                failures = 0;
            }
            failures += 1;
            let delay = match end {
                StreamEnd::Shutdown => break,
                StreamEnd::Failed { retry: Retry::Backoff, reason } => {
                    let delay = backoff.next_delay();
                    // Logged at WARN on the 1st, 2nd, 4th, 8th... failure in a row.
                    if failures.is_power_of_two() {
                        warn!(
                            reason,
                            failures,
                            retry_in_ms = delay.as_millis() as u64,
                            "Uplink stream ended; reconnecting."
                        );
                    } else {
                        debug!(reason, failures, retry_in_ms = delay.as_millis() as u64, "Uplink reconnect failed.");
                    }
                    delay
                }
                StreamEnd::Failed { retry: Retry::Operator, reason } => {
                    let delay = backoff.max_delay();
                    error!(
                        reason,
                        retry_in_ms = delay.as_millis() as u64,
                        "Uplink refused; an operator must act. Events keep being spooled."
                    );
                    delay
                }
            };
            self.metrics.uplink_reconnects.inc();
            if stop.is_cancelled() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => break,
            }
        }
        info!("Uplink stopped.");
    }

    async fn spool_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Spool) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || f(&spool)).await {
            Ok(r) => r,
            Err(_) => Err(SpoolError::WriterPanicked),
        }
    }

    async fn stream_once(&mut self, stop: &CancellationToken, welcomed: &mut bool) -> StreamEnd {
        let channel = tokio::select! {
            r = self.endpoint.connect() => match r {
                Ok(c) => c,
                Err(e) => return StreamEnd::transient(format!("connect: {}", error_chain(&e))),
            },
            () = stop.cancelled() => return StreamEnd::Shutdown,
        };
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(MAX_DECODING_BYTES)
            .max_encoding_message_size(self.config.batch_max_bytes.saturating_add(BATCH_OVERHEAD * 2));
        if self.config.compression {
            grpc = grpc.send_compressed(CompressionEncoding::Zstd).accept_compressed(CompressionEncoding::Zstd);
        }
        let (tx, rx) = mpsc::channel::<Outgoing>(8);
        let hello_mono = self.clock.monotonic_ns();
        let stats = self.spool.stats();
        let hello = pb::Hello {
            agent_id: self.agent_id.clone(),
            site: self.site.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            wall_clock_ns: self.clock.wall_ns(),
            monotonic_ns: hello_mono,
            clock_synced: self.clock.synced(),
            spool_first_seq: stats.first_seq,
            spool_last_seq: stats.last_seq,
            spool_first_captured_ns: stats.oldest_captured_at_ns,
            spool_bytes: stats.bytes,
            contract_revision: callkpi_proto::CONTRACT_REVISION,
        };
        let _ = tx.send(Outgoing::Message(pb::AgentMessage { msg: Some(OutMsg::Hello(hello)) })).await;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = &self.token {
            match format!("Bearer {}", token.expose()).parse() {
                Ok(value) => {
                    request.metadata_mut().insert("authorization", value);
                }
                Err(_) => {
                    return StreamEnd::Failed {
                        retry: Retry::Operator,
                        reason: "token is not valid in a header".to_owned(),
                    };
                }
            }
        }
        let ready = tokio::select! {
            r = grpc.ready() => r,
            () = stop.cancelled() => return StreamEnd::Shutdown,
        };
        if let Err(e) = ready {
            return StreamEnd::transient(format!("channel not ready: {e}"));
        }
        let path = PathAndQuery::from_static(STREAM_PATH);
        let response = tokio::select! {
            r = grpc.streaming(request, path, IngestCodec) => r,
            () = stop.cancelled() => return StreamEnd::Shutdown,
        };
        let mut inbound = match response {
            Ok(r) => r.into_inner(),
            Err(status) => return StreamEnd::status(&status),
        };

        // Handshake.
        let handshake_timeout = Duration::from_millis(self.config.heartbeat_interval_ms * 3)
            .max(Duration::from_millis(self.config.connect_timeout_ms));
        let first = tokio::select! {
            r = tokio::time::timeout(handshake_timeout, inbound.message()) => r,
            () = stop.cancelled() => return StreamEnd::Shutdown,
        };
        let welcome = match first {
            Err(_) => return StreamEnd::transient("no Welcome in time"),
            Ok(Err(status)) => return StreamEnd::status(&status),
            Ok(Ok(None)) => return StreamEnd::transient("stream closed before Welcome"),
            Ok(Ok(Some(pb::AggregatorMessage { msg: Some(InMsg::Welcome(w)) }))) => w,
            Ok(Ok(Some(pb::AggregatorMessage { msg: Some(InMsg::Reject(r)) }))) => return reject_end(&r),
            Ok(Ok(Some(other))) => {
                return StreamEnd::transient(format!("expected Welcome, got {other:?}"));
            }
        };
        self.estimate_clock(welcome.echo_monotonic_ns, welcome.server_clock_ns);
        let resume = welcome.resume_after_seq;
        let acked_before = self.spool.acked_seq();
        if let Err(e) = self.spool_blocking(move |s| s.ack(resume)).await {
            error!(error = %e, resume, "Cannot apply the Welcome's ack to the spool.");
        }
        if resume > acked_before {
            self.metrics.uplink_acked_events.inc_by(resume - acked_before);
        }
        *welcomed = true;
        self.metrics.uplink_connected.set(1);
        let limits = Limits::new(&self.config, &welcome);
        info!(
            resume_after_seq = resume,
            spool_last_seq = self.spool.last_seq(),
            server_version = %welcome.server_version,
            max_batch_events = limits.max_events,
            max_in_flight = limits.max_in_flight,
            "Uplink connected."
        );
        self.deliver(tx, inbound, resume, limits, stop).await
    }

    /// The established stream: send batches, handle acks, heartbeats.
    async fn deliver(
        &mut self,
        tx: mpsc::Sender<Outgoing>,
        mut inbound: tonic::Streaming<pb::AggregatorMessage>,
        resume: u64,
        limits: Limits,
        stop: &CancellationToken,
    ) -> StreamEnd {
        let mut notify = self.spool.notify();
        let mut sent_up_to = resume;
        let mut acked = resume;
        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let mut last_sent = Instant::now();
        let mut last_received = Instant::now();
        let mut draining: Option<Instant> = None;
        let mut fallback = tokio::time::interval(POLL_FALLBACK);
        fallback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Send while allowed and there is something to send.
            while draining.is_none() && in_flight.len() < limits.max_in_flight && sent_up_to < self.spool.last_seq() {
                let (after, max_events, max_bytes) = (sent_up_to, limits.max_events, limits.event_bytes);
                let range = match self.spool_blocking(move |s| s.read_range(after, max_events, max_bytes)).await {
                    Ok(Some(range)) => range,
                    Ok(None) => break,
                    Err(e) => {
                        error!(error = %e, "Cannot read the spool.");
                        return StreamEnd::transient("spool read failed");
                    }
                };
                let (bytes, crc) = encode_batch(&range);
                debug!(
                    first_seq = range.first_seq,
                    last_seq = range.last_seq,
                    events = range.events.len(),
                    bytes = bytes.len(),
                    crc,
                    "Batch sent."
                );
                if tx.send(Outgoing::Encoded(bytes)).await.is_err() {
                    return StreamEnd::transient("stream closed while sending");
                }
                self.metrics.uplink_batches_sent.inc();
                sent_up_to = range.last_seq;
                in_flight.push_back(range.last_seq);
                last_sent = Instant::now();
            }
            if draining.is_some() && in_flight.is_empty() {
                info!(acked_seq = acked, "Uplink drained: every Batch in flight was acknowledged.");
                return StreamEnd::Shutdown;
            }
            let heartbeat_at = last_sent + limits.heartbeat;
            let dead_at = last_received + limits.heartbeat * 3;
            let drain_deadline = draining.map_or(dead_at, |t| t + DRAIN_TIMEOUT);
            tokio::select! {
                msg = inbound.message() => {
                    last_received = Instant::now();
                    match msg {
                        Ok(Some(m)) => match m.msg {
                            Some(InMsg::Ack(ack)) => {
                                if ack.up_to_seq > acked {
                                    let up_to = ack.up_to_seq;
                                    if let Err(e) = self.spool_blocking(move |s| s.ack(up_to)).await {
                                        error!(error = %e, up_to, "Cannot apply an ack to the spool; events will be sent again.");
                                    }
                                    self.metrics.uplink_acked_events.inc_by(up_to - acked);
                                    acked = up_to;
                                    while in_flight.front().is_some_and(|&last| last <= acked) {
                                        in_flight.pop_front();
                                    }
                                    debug!(acked_seq = acked, "Batch acked.");
                                }
                            }
                            Some(InMsg::HeartbeatAck(h)) => self.estimate_clock(h.echo_monotonic_ns, h.server_clock_ns),
                            Some(InMsg::Reject(r)) => return reject_end(&r),
                            Some(InMsg::Welcome(_)) => return StreamEnd::transient("second Welcome"),
                            None => debug!("Empty AggregatorMessage ignored."),
                        },
                        Ok(None) => return StreamEnd::transient("stream closed by the aggregator"),
                        Err(status) => return StreamEnd::status(&status),
                    }
                }
                () = tokio::time::sleep_until(heartbeat_at), if draining.is_none() => {
                    let hb = self.heartbeat().await;
                    if tx.send(Outgoing::Message(pb::AgentMessage { msg: Some(OutMsg::Heartbeat(hb)) })).await.is_err() {
                        return StreamEnd::transient("stream closed while sending");
                    }
                    last_sent = Instant::now();
                }
                () = tokio::time::sleep_until(drain_deadline) => {
                    if draining.is_some() {
                        warn!(in_flight = in_flight.len(), acked_seq = acked, "Uplink drain timed out; unacked events stay spooled.");
                        return StreamEnd::Shutdown;
                    }
                    return StreamEnd::transient("nothing received for three heartbeat intervals");
                }
                r = notify.changed(), if draining.is_none() => {
                    if r.is_err() {
                        // The spool is gone; keep polling via the fallback tick.
                        notify = self.spool.notify();
                    }
                }
                _ = fallback.tick(), if draining.is_none() => {}
                () = stop.cancelled(), if draining.is_none() => {
                    info!(in_flight = in_flight.len(), "Uplink stopping; waiting for the acks of Batches in flight.");
                    draining = Some(Instant::now());
                }
            }
        }
    }

    async fn heartbeat(&self) -> pb::Heartbeat {
        let spool = self.spool.clone();
        let stats = tokio::task::spawn_blocking(move || spool.stats()).await.unwrap_or_default();
        pb::Heartbeat {
            monotonic_ns: self.clock.monotonic_ns(),
            wall_clock_ns: self.clock.wall_ns(),
            clock_synced: self.clock.synced(),
            clock_offset_ns: self.clock_estimate.map(|(o, _)| o),
            rtt_ns: self.clock_estimate.map(|(_, r)| r),
            spool_first_seq: stats.first_seq,
            spool_last_seq: stats.last_seq,
            spool_first_captured_ns: stats.oldest_captured_at_ns,
            spool_bytes: stats.bytes,
            spool_dropped_total: stats.dropped_total,
        }
    }

    /// Offset = agent wall clock at the midpoint of the round trip - server clock.
    fn estimate_clock(&mut self, echo_monotonic_ns: u64, server_clock_ns: i64) {
        let now_mono = self.clock.monotonic_ns();
        if echo_monotonic_ns == 0 || echo_monotonic_ns > now_mono || server_clock_ns == 0 {
            return;
        }
        let rtt = now_mono - echo_monotonic_ns;
        let mid_wall = self.clock.wall_ns() - i64::try_from(rtt / 2).unwrap_or(i64::MAX);
        let offset = mid_wall - server_clock_ns;
        self.clock_estimate = Some((offset, rtt));
        self.metrics.clock_offset_seconds.set(offset as f64 / 1e9);
        self.metrics.rtt_seconds.set(rtt as f64 / 1e9);
        debug!(offset_ns = offset, rtt_ns = rtt, "Clock offset estimated.");
    }
}

/// Effective limits of a stream.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_events: usize,
    /// Budget of event encodings per Batch.
    event_bytes: usize,
    max_in_flight: usize,
    heartbeat: Duration,
}

impl Limits {
    fn new(config: &UplinkConfig, w: &pb::Welcome) -> Self {
        let pick = |ours: usize, theirs: u32| if theirs == 0 { ours } else { ours.min(theirs as usize) };
        let max_events = pick(config.batch_max_events, w.max_batch_events).max(1);
        let max_bytes = pick(config.batch_max_bytes, w.max_batch_bytes);
        let event_bytes = max_bytes.saturating_sub(BATCH_OVERHEAD + max_events * EVENT_OVERHEAD).max(1);
        let max_in_flight =
            if w.max_in_flight_batches == 0 { DEFAULT_IN_FLIGHT } else { w.max_in_flight_batches } as usize;
        let heartbeat = Duration::from_millis(if w.heartbeat_interval_ms == 0 {
            config.heartbeat_interval_ms
        } else {
            u64::from(w.heartbeat_interval_ms)
        });
        Self { max_events, event_bytes, max_in_flight, heartbeat }
    }
}

fn reject_end(r: &pb::Reject) -> StreamEnd {
    let code =
        pb::RejectCode::try_from(r.code).map_or_else(|_| format!("code {}", r.code), |c| c.as_str_name().to_owned());
    StreamEnd::Failed {
        retry: if r.retryable { Retry::Backoff } else { Retry::Operator },
        reason: format!("rejected {code}: {}", r.reason),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> pb::Event {
        pb::Event {
            agent_id: "a".into(),
            seq,
            site: "s".into(),
            source: pb::SourceKind::AsteriskAmi.into(),
            call_id: format!("call-{seq}"),
            captured_at_ns: 1_700_000_000_000_000_000 + seq as i64,
            kind: Some(pb::event::Kind::QueueStart(pb::event::QueueStart {})),
            ..Default::default()
        }
    }

    #[test]
    fn hand_encoded_batch_is_exactly_prosts() {
        for events in [vec![], vec![event(3)], vec![event(3), event(5), event(6)]] {
            let range = ReadRange {
                first_seq: 3,
                last_seq: 7,
                events: events.iter().map(|e| (e.seq, e.encode_to_vec())).collect(),
            };
            let (bytes, crc) = encode_batch(&range);
            let expected = pb::AgentMessage {
                msg: Some(OutMsg::Batch(pb::Batch {
                    first_seq: 3,
                    last_seq: 7,
                    crc32c: callkpi_proto::events_crc32c(&events),
                    events: events.clone(),
                })),
            };
            assert_eq!(bytes, expected.encode_to_vec());
            assert_eq!(crc, callkpi_proto::events_crc32c(&events));
        }
    }

    #[test]
    fn retry_policy() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Internal,
            Code::Unknown,
        ] {
            assert_eq!(classify(code), Retry::Backoff, "{code:?}");
        }
        for code in [Code::Unauthenticated, Code::PermissionDenied, Code::FailedPrecondition] {
            assert_eq!(classify(code), Retry::Operator, "{code:?}");
        }
        let retryable =
            pb::Reject { code: pb::RejectCode::ChecksumMismatch.into(), reason: "x".into(), retryable: true };
        assert!(matches!(reject_end(&retryable), StreamEnd::Failed { retry: Retry::Backoff, .. }));
        let fatal = pb::Reject { code: pb::RejectCode::AgentDisabled.into(), reason: "x".into(), retryable: false };
        assert!(matches!(reject_end(&fatal), StreamEnd::Failed { retry: Retry::Operator, .. }));
    }

    #[test]
    fn limits_take_the_smaller_of_config_and_welcome() {
        let config = UplinkConfig::default();
        let w = pb::Welcome {
            max_batch_events: 100,
            max_batch_bytes: 0,
            max_in_flight_batches: 2,
            heartbeat_interval_ms: 500,
            ..Default::default()
        };
        let l = Limits::new(&config, &w);
        assert_eq!(l.max_events, 100);
        assert_eq!(l.max_in_flight, 2);
        assert_eq!(l.heartbeat, Duration::from_millis(500));
        assert!(l.event_bytes < config.batch_max_bytes);
    }
}
