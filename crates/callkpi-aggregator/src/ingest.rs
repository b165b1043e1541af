//! The `callkpi.v1.Ingest` service: the agent's delivery stream, as
//! specified in `proto/callkpi/v1/ingest.proto`.
//!
//! # Raw events
//!
//! The service is written by hand instead of through the generated
//! `IngestServer`, for one reason: it decodes `AgentMessage` into
//! [`RawAgentMessage`], a wire-compatible twin whose `Batch.events` are the
//! events' **bytes**. So the CRC is checked over exactly the bytes received
//! (for any `contract_revision`, not only those this build can re-encode),
//! and the store keeps each event exactly as the agent sent it, unknown
//! fields included. Each event is still decoded as `pb::Event` to check its
//! seq and agent id.
//!
//! # One stream per agent
//!
//! A new stream whose Hello is accepted **replaces** the agent's live one:
//! the old stream finishes the Batch it is storing, then gets
//! `Reject{SUPERSEDED, retryable}`. Replacing rather than refusing lets an
//! agent reconnect at once after a half-open TCP connection, which the old
//! stream would otherwise hold until its heartbeat timeout. The store
//! serialises the two streams' writes and drops the overlap, so nothing is
//! stored twice.
//!
//! # Ending a stream
//!
//! | cause | last message | status |
//! |---|---|---|
//! | no/unknown credential | none | UNAUTHENTICATED |
//! | Hello.agent_id not bound to the credential | Reject IDENTITY_MISMATCH | PERMISSION_DENIED |
//! | other non-retryable Reject | Reject | FAILED_PRECONDITION |
//! | retryable Reject (checksum, too large, superseded, shutting down, storage) | Reject | UNAVAILABLE |
//! | message above `max_message_bytes` | none | OUT_OF_RANGE, or RESOURCE_EXHAUSTED when it was compressed (from tonic) |
//! | nothing received for 3 heartbeat intervals | none | UNAVAILABLE |
//! | agent closed its side | none | OK |
//!
//! Each stream runs in its own task under an `ingest_stream` span (peer
//! address, then agent id once the Hello is accepted).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callkpi_proto::pb;
use callkpi_proto::pb::RejectCode;
use callkpi_proto::pb::aggregator_message::Msg as OutMsg;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::codegen::{Body, BoxFuture, CompressionEncoding, EnabledCompressionEncodings, StdError, http};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::auth::{Authenticator, Identity};
use crate::liveness::Presence;
use crate::metrics::{AgentLabel, CodeLabel, Metrics, ReasonLabel};
use crate::store::{BatchToStore, EventToStore, Store, StoreError};

/// gRPC path of the stream method.
const STREAM_PATH: &str = "/callkpi.v1.Ingest/Stream";

// === Raw wire twin ===

/// `callkpi.v1.AgentMessage` with the Batch's events kept as bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RawAgentMessage {
    /// The oneof.
    #[prost(oneof = "RawMsg", tags = "1, 2, 3")]
    pub(crate) msg: Option<RawMsg>,
}

/// `AgentMessage.msg`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum RawMsg {
    /// `Hello hello = 1`.
    #[prost(message, tag = "1")]
    Hello(pb::Hello),
    /// `Batch batch = 2`, raw.
    #[prost(message, tag = "2")]
    Batch(RawBatch),
    /// `Heartbeat heartbeat = 3`.
    #[prost(message, tag = "3")]
    Heartbeat(pb::Heartbeat),
}

/// `callkpi.v1.Batch` with `repeated Event events = 3` as `repeated bytes`
/// (the same wire type: length-delimited).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RawBatch {
    /// `first_seq = 1`.
    #[prost(uint64, tag = "1")]
    pub(crate) first_seq: u64,
    /// `last_seq = 2`.
    #[prost(uint64, tag = "2")]
    pub(crate) last_seq: u64,
    /// `events = 3`, each an encoded `pb::Event`.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub(crate) events: Vec<Vec<u8>>,
    /// `crc32c = 4`.
    #[prost(fixed32, tag = "4")]
    pub(crate) crc32c: u32,
}

// === Service state ===

/// Limits announced in Welcome and enforced on Batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_batch_events: u32,
    pub(crate) max_batch_bytes: u32,
    pub(crate) max_in_flight_batches: u32,
    pub(crate) heartbeat_interval_ms: u32,
    pub(crate) max_message_bytes: usize,
}

/// Everything the streams share.
pub(crate) struct IngestState {
    pub(crate) limits: Limits,
    pub(crate) auth: Authenticator,
    /// Configured site per agent id.
    pub(crate) sites: HashMap<String, Option<String>>,
    pub(crate) store: Store,
    pub(crate) metrics: Arc<Metrics>,
    /// Ends every stream (after its in-flight Batch) at shutdown.
    pub(crate) shutdown: CancellationToken,
    /// Stream tasks, awaited at shutdown.
    pub(crate) tracker: TaskTracker,
    /// Which agents have a live stream, for `ListAgents` and metrics.
    pub(crate) presence: Arc<Presence>,
    sessions: Mutex<HashMap<String, Session>>,
    next_session: AtomicU64,
}

/// The live stream of one agent.
struct Session {
    id: u64,
    superseded: CancellationToken,
}

impl IngestState {
    pub(crate) fn new(
        limits: Limits,
        auth: Authenticator,
        sites: HashMap<String, Option<String>>,
        store: Store,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        Self {
            limits,
            auth,
            sites,
            store,
            metrics,
            shutdown,
            tracker,
            presence: Arc::default(),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
        }
    }

    /// Makes a stream the agent's live one, superseding the previous.
    fn register(self: &Arc<Self>, agent_id: &str) -> SessionGuard {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let superseded = CancellationToken::new();
        let previous = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(agent_id.to_owned(), Session { id, superseded: superseded.clone() });
        let label = AgentLabel { agent: agent_id.to_owned() };
        match previous {
            Some(old) => {
                tracing::info!("A new stream replaces the agent's previous one.");
                old.superseded.cancel();
            }
            None => {
                self.metrics.connected.inc();
            }
        }
        self.metrics.agent_connected.get_or_create(&label).set(1);
        self.presence.connected(agent_id, crate::now_ns());
        SessionGuard { state: Arc::clone(self), agent_id: agent_id.to_owned(), id, superseded }
    }
}

/// Unregisters a stream when it ends, unless a newer one replaced it.
struct SessionGuard {
    state: Arc<IngestState>,
    agent_id: String,
    id: u64,
    superseded: CancellationToken,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut sessions = self.state.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if sessions.get(&self.agent_id).is_some_and(|s| s.id == self.id) {
            sessions.remove(&self.agent_id);
            self.state.presence.disconnected(&self.agent_id);
            self.state.metrics.connected.dec();
            self.state.metrics.agent_connected.get_or_create(&AgentLabel { agent: self.agent_id.clone() }).set(0);
        }
    }
}

// === Service plumbing ===

/// The tower service for `callkpi.v1.Ingest`: zstd accepted and sent,
/// message sizes capped both ways at `max_message_bytes`.
#[derive(Clone)]
pub(crate) struct IngestService {
    state: Arc<IngestState>,
}

impl IngestService {
    pub(crate) fn new(state: Arc<IngestState>) -> Self {
        Self { state }
    }
}

impl tonic::server::NamedService for IngestService {
    const NAME: &'static str = "callkpi.v1.Ingest";
}

impl<B> tonic::codegen::Service<http::Request<B>> for IngestService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != STREAM_PATH {
            return Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let max = state.limits.max_message_bytes;
            let mut zstd = EnabledCompressionEncodings::default();
            zstd.enable(CompressionEncoding::Zstd);
            let codec = tonic_prost::ProstCodec::<pb::AggregatorMessage, RawAgentMessage>::default();
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_compression_config(zstd, zstd)
                .apply_max_message_size_config(Some(max), Some(max));
            Ok(grpc.streaming(StreamMethod(state), req).await)
        })
    }
}

/// `Ingest.Stream`.
struct StreamMethod(Arc<IngestState>);

/// What the service returns to tonic.
type Outbound = ReceiverStream<Result<pb::AggregatorMessage, Status>>;

impl tonic::server::StreamingService<RawAgentMessage> for StreamMethod {
    type Response = pb::AggregatorMessage;
    type ResponseStream = Outbound;
    type Future = BoxFuture<Response<Outbound>, Status>;

    fn call(&mut self, request: Request<Streaming<RawAgentMessage>>) -> Self::Future {
        let state = Arc::clone(&self.0);
        Box::pin(async move { open_stream(state, request) })
    }
}

/// Authenticates, then runs the stream in its own task.
fn open_stream(
    state: Arc<IngestState>,
    request: Request<Streaming<RawAgentMessage>>,
) -> Result<Response<Outbound>, Status> {
    // Logged as an address, not `Some(...)`.
    let peer = request.remote_addr().map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let authorization = request.metadata().get("authorization").map(|v| v.as_bytes().to_vec());
    let peer_cert = request.peer_certs().and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()));
    let identity = match state.auth.authenticate(authorization.as_deref(), peer_cert.as_deref()) {
        Ok(identity) => identity,
        Err(status) => {
            state.metrics.auth_failures.get_or_create(&CodeLabel { code: "unauthenticated" }).inc();
            tracing::warn!(%peer, reason = status.message(), "Stream refused: not authenticated.");
            return Err(status);
        }
    };
    if state.shutdown.is_cancelled() {
        return Err(Status::unavailable("the aggregator is shutting down"));
    }
    let (tx, rx) = mpsc::channel(16);
    let span = tracing::info_span!("ingest_stream", %peer, agent = tracing::field::Empty);
    let task_state = Arc::clone(&state);
    state.tracker.spawn(
        async move {
            run_stream(task_state, identity, request.into_inner(), Sender { tx }).await;
        }
        .instrument(span),
    );
    Ok(Response::new(ReceiverStream::new(rx)))
}

// === The stream ===

/// The response side of a stream.
struct Sender {
    tx: mpsc::Sender<Result<pb::AggregatorMessage, Status>>,
}

impl Sender {
    /// Sends a message; false when the agent is gone.
    async fn send(&self, msg: OutMsg) -> bool {
        self.tx.send(Ok(pb::AggregatorMessage { msg: Some(msg) })).await.is_ok()
    }

    /// Ends the stream with `status`.
    async fn end(&self, status: Status) {
        let _ = self.tx.send(Err(status)).await;
    }
}

/// A refusal: sent as Reject, then the call ends with the matching status.
#[derive(Debug)]
struct Refusal {
    code: RejectCode,
    reason: String,
}

impl Refusal {
    fn new(code: RejectCode, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into() }
    }

    /// Whether reconnecting can succeed without an operator (ingest.proto).
    fn retryable(&self) -> bool {
        matches!(
            self.code,
            RejectCode::ChecksumMismatch
                | RejectCode::BatchTooLarge
                | RejectCode::Superseded
                | RejectCode::Unavailable
                | RejectCode::ShuttingDown
        )
    }

    /// UNAVAILABLE when retryable, else FAILED_PRECONDITION, except
    /// IDENTITY_MISMATCH: PERMISSION_DENIED.
    fn status(&self) -> Status {
        let message = format!("{}: {}", self.code.as_str_name(), self.reason);
        match self.code {
            RejectCode::IdentityMismatch => Status::permission_denied(message),
            _ if self.retryable() => Status::unavailable(message),
            _ => Status::failed_precondition(message),
        }
    }

    /// Metric label.
    fn label(&self) -> &'static str {
        match self.code {
            RejectCode::Unspecified => "unspecified",
            RejectCode::IdentityMismatch => "identity_mismatch",
            RejectCode::ProtocolViolation => "protocol_violation",
            RejectCode::ChecksumMismatch => "checksum_mismatch",
            RejectCode::BatchTooLarge => "batch_too_large",
            RejectCode::UnsupportedVersion => "unsupported_version",
            RejectCode::Superseded => "superseded",
            RejectCode::Unavailable => "unavailable",
            RejectCode::ShuttingDown => "shutting_down",
            RejectCode::AgentDisabled => "agent_disabled",
        }
    }

    async fn send(self, state: &IngestState, out: &Sender) {
        state.metrics.rejects.get_or_create(&ReasonLabel { reason: self.label() }).inc();
        let retryable = self.retryable();
        match self.code {
            RejectCode::Superseded | RejectCode::ShuttingDown => {
                tracing::info!(code = self.code.as_str_name(), "Stream ended: {}.", self.reason);
            }
            _ if retryable => {
                tracing::warn!(code = self.code.as_str_name(), reason = %self.reason, "Stream rejected, retryable.")
            }
            _ => {
                tracing::warn!(code = self.code.as_str_name(), reason = %self.reason, "Stream rejected; the agent needs an operator.")
            }
        }
        let status = self.status();
        let reject = pb::Reject { code: self.code.into(), reason: self.reason, retryable };
        if out.send(OutMsg::Reject(reject)).await {
            out.end(status).await;
        }
    }
}

/// What waiting for the next message gave.
enum Incoming {
    Msg(RawMsg),
    Empty,
    Closed,
    Failed(Status),
    Idle,
    Shutdown,
    Superseded,
}

/// The next message, or why there is none.
///
/// # Cancel safety
/// Every branch is cancel safe (`Streaming` keeps partial frames).
async fn next(
    inbound: &mut Streaming<RawAgentMessage>,
    dead_after: Duration,
    shutdown: &CancellationToken,
    superseded: &CancellationToken,
) -> Incoming {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => Incoming::Shutdown,
        () = superseded.cancelled() => Incoming::Superseded,
        r = tokio::time::timeout(dead_after, inbound.next()) => match r {
            Err(_) => Incoming::Idle,
            Ok(None) => Incoming::Closed,
            Ok(Some(Err(status))) => Incoming::Failed(status),
            Ok(Some(Ok(RawAgentMessage { msg: Some(msg) }))) => Incoming::Msg(msg),
            Ok(Some(Ok(RawAgentMessage { msg: None }))) => Incoming::Empty,
        },
    }
}

/// Handles the end of a stream that is not a message.
async fn finish(incoming: Incoming, state: &IngestState, out: &Sender, dead_after: Duration) {
    match incoming {
        Incoming::Msg(_) => {}
        Incoming::Empty => {
            Refusal::new(RejectCode::ProtocolViolation, "AgentMessage without a message").send(state, out).await;
        }
        Incoming::Closed => tracing::debug!("Agent closed the stream."),
        Incoming::Failed(status) => {
            tracing::warn!(code = ?status.code(), reason = status.message(), "Stream failed.");
            out.end(status).await;
        }
        Incoming::Idle => {
            tracing::warn!(idle = ?dead_after, "No message for three heartbeat intervals; closing the stream.");
            out.end(Status::unavailable("no message for three heartbeat intervals")).await;
        }
        Incoming::Shutdown => {
            Refusal::new(RejectCode::ShuttingDown, "the aggregator is shutting down").send(state, out).await;
        }
        Incoming::Superseded => {
            Refusal::new(RejectCode::Superseded, "a newer stream of this agent replaced this one")
                .send(state, out)
                .await;
        }
    }
}

/// One stream, Hello to end.
async fn run_stream(state: Arc<IngestState>, identity: Identity, mut inbound: Streaming<RawAgentMessage>, out: Sender) {
    let dead_after = Duration::from_millis(u64::from(state.limits.heartbeat_interval_ms) * 3);
    let never = CancellationToken::new();

    // 1. Hello, first and once.
    let hello = match next(&mut inbound, dead_after, &state.shutdown, &never).await {
        Incoming::Msg(RawMsg::Hello(hello)) => hello,
        Incoming::Msg(_) => {
            Refusal::new(RejectCode::ProtocolViolation, "the first message must be Hello").send(&state, &out).await;
            return;
        }
        other => return finish(other, &state, &out, dead_after).await,
    };
    let received_ns = crate::now_ns();
    if !identity.allows(&hello.agent_id) {
        state.metrics.auth_failures.get_or_create(&CodeLabel { code: "permission_denied" }).inc();
        let bound = identity.agent_ids.join(", ");
        let reason = format!("Hello.agent_id {:?} is not the agent bound to this credential ({bound})", hello.agent_id);
        Refusal::new(RejectCode::IdentityMismatch, reason).send(&state, &out).await;
        return;
    }
    let agent_id = hello.agent_id.clone();
    tracing::Span::current().record("agent", agent_id.as_str());
    if hello.contract_revision == 0 {
        let reason = "Hello.contract_revision is 0 (unset); agents must send their callkpi-proto CONTRACT_REVISION";
        Refusal::new(RejectCode::UnsupportedVersion, reason).send(&state, &out).await;
        return;
    }
    let session = state.register(&agent_id);
    let label = AgentLabel { agent: agent_id.clone() };

    // Presence, site and the coarse clock offset (agent - aggregator; the
    // agent's own midpoint estimate replaces it at its first Heartbeat).
    let configured_site = state.sites.get(&agent_id).cloned().flatten();
    if let Some(site) = &configured_site
        && !hello.site.is_empty()
        && *site != hello.site
    {
        tracing::warn!(configured = %site, hello = %hello.site, "Hello.site differs from the configured site; using the configured one.");
    }
    let site = configured_site.unwrap_or_else(|| hello.site.clone());
    let offset = (hello.wall_clock_ns != 0).then(|| hello.wall_clock_ns.saturating_sub(received_ns));
    if let Err(error) = state.store.update_agent(&agent_id, |r| {
        r.site = site;
        r.version = hello.version.clone();
        r.last_seen_ns = received_ns;
        r.spool_last_seq = hello.spool_last_seq;
        r.spool_first_seq = hello.spool_first_seq;
        r.spool_first_captured_ns = hello.spool_first_captured_ns;
        r.spool_bytes = hello.spool_bytes;
        r.clock_synced = hello.clock_synced;
        if offset.is_some() {
            r.clock_offset_ns = offset;
            r.clock_rtt_ns = None;
        }
    }) {
        return storage_failure(&state, &out, &error).await;
    }
    state.metrics.spool_bytes.get_or_create(&label).set(i64::try_from(hello.spool_bytes).unwrap_or(i64::MAX));

    // 2. Welcome, with a durable resume point.
    let resume = match state.store.resume_point(&agent_id).await {
        Ok(hwm) => hwm,
        Err(error) => return storage_failure(&state, &out, &error).await,
    };
    if hello.spool_last_seq < resume {
        tracing::warn!(
            spool_last_seq = hello.spool_last_seq,
            resume_after_seq = resume,
            "The agent's spool is behind what the aggregator holds (spool lost?); it must number above resume_after_seq."
        );
    }
    tracing::info!(
        version = %hello.version,
        resume_after_seq = resume,
        spool_first_seq = hello.spool_first_seq,
        spool_last_seq = hello.spool_last_seq,
        "Agent connected."
    );
    let limits = state.limits;
    let welcome = pb::Welcome {
        resume_after_seq: resume,
        server_clock_ns: crate::now_ns(),
        echo_monotonic_ns: hello.monotonic_ns,
        max_batch_events: limits.max_batch_events,
        max_batch_bytes: limits.max_batch_bytes,
        max_in_flight_batches: limits.max_in_flight_batches,
        heartbeat_interval_ms: limits.heartbeat_interval_ms,
        server_version: env!("CARGO_PKG_VERSION").into(),
        contract_revision: callkpi_proto::CONTRACT_REVISION,
    };
    if !out.send(OutMsg::Welcome(welcome)).await {
        return;
    }

    // 3-5. Batches and Heartbeats.
    let mut expected = resume.saturating_add(1);
    loop {
        match next(&mut inbound, dead_after, &state.shutdown, &session.superseded).await {
            Incoming::Msg(RawMsg::Batch(batch)) => {
                let started = Instant::now();
                match store_batch(&state, &agent_id, &label, expected, batch).await {
                    Ok((last_seq, up_to_seq)) => {
                        expected = last_seq.saturating_add(1);
                        // A busy agent sends Batches, not Heartbeats: each one
                        // is contact, and proves its spool reached last_seq.
                        let now = crate::now_ns();
                        let seen = state.store.update_agent(&agent_id, |r| {
                            r.last_seen_ns = now;
                            r.spool_last_seq = r.spool_last_seq.max(last_seq);
                        });
                        if let Err(error) = seen {
                            return storage_failure(&state, &out, &error).await;
                        }
                        if !out.send(OutMsg::Ack(pb::Ack { up_to_seq })).await {
                            return;
                        }
                        state.metrics.ack_latency.observe(started.elapsed().as_secs_f64());
                    }
                    Err(refusal) => return refusal.send(&state, &out).await,
                }
            }
            Incoming::Msg(RawMsg::Heartbeat(hb)) => {
                let now = crate::now_ns();
                let updated = state.store.update_agent(&agent_id, |r| {
                    r.last_seen_ns = now;
                    r.spool_last_seq = hb.spool_last_seq;
                    r.spool_first_seq = hb.spool_first_seq;
                    r.spool_first_captured_ns = hb.spool_first_captured_ns;
                    r.spool_bytes = hb.spool_bytes;
                    r.clock_synced = hb.clock_synced;
                    if hb.clock_offset_ns.is_some() {
                        r.clock_offset_ns = hb.clock_offset_ns;
                        r.clock_rtt_ns = hb.rtt_ns;
                    }
                });
                if let Err(error) = updated {
                    return storage_failure(&state, &out, &error).await;
                }
                state.metrics.spool_bytes.get_or_create(&label).set(i64::try_from(hb.spool_bytes).unwrap_or(i64::MAX));
                let ack = pb::HeartbeatAck { echo_monotonic_ns: hb.monotonic_ns, server_clock_ns: crate::now_ns() };
                if !out.send(OutMsg::HeartbeatAck(ack)).await {
                    return;
                }
            }
            Incoming::Msg(RawMsg::Hello(_)) => {
                return Refusal::new(RejectCode::ProtocolViolation, "a second Hello").send(&state, &out).await;
            }
            other => return finish(other, &state, &out, dead_after).await,
        }
    }
}

/// Rejects with UNAVAILABLE after a store failure.
async fn storage_failure(state: &IngestState, out: &Sender, error: &StoreError) {
    tracing::error!(%error, "Cannot write the store; refusing the stream.");
    Refusal::new(RejectCode::Unavailable, "the aggregator cannot store events now").send(state, out).await;
}

/// Checks a Batch against the contract and stores it. Returns its last seq
/// and the seq to ack.
async fn store_batch(
    state: &IngestState,
    agent_id: &str,
    label: &AgentLabel,
    expected: u64,
    batch: RawBatch,
) -> Result<(u64, u64), Refusal> {
    let m = &state.metrics;
    m.batches_received.get_or_create(label).inc();
    m.events_received.get_or_create(label).inc_by(batch.events.len() as u64);
    let limits = state.limits;
    let violation = |reason: String| Refusal::new(RejectCode::ProtocolViolation, reason);

    if batch.events.len() > limits.max_batch_events as usize {
        let reason = format!("{} events, Welcome.max_batch_events is {}", batch.events.len(), limits.max_batch_events);
        return Err(Refusal::new(RejectCode::BatchTooLarge, reason));
    }
    let size = prost::encoding::message::encoded_len(2, &batch);
    if size > limits.max_batch_bytes as usize {
        let reason = format!("{size} bytes, Welcome.max_batch_bytes is {}", limits.max_batch_bytes);
        return Err(Refusal::new(RejectCode::BatchTooLarge, reason));
    }
    // Over the bytes as received, so it holds for any contract revision.
    let crc = callkpi_proto::encoded_events_crc32c(batch.events.iter().map(Vec::as_slice));
    if crc != batch.crc32c {
        let reason = format!(
            "Batch {}..={}: crc32c is {:#010x}, the events give {crc:#010x}",
            batch.first_seq, batch.last_seq, batch.crc32c
        );
        return Err(Refusal::new(RejectCode::ChecksumMismatch, reason));
    }
    if batch.first_seq != expected {
        return Err(violation(format!(
            "Batch.first_seq is {}, expected {expected} (Welcome.resume_after_seq + 1, then the previous last_seq + 1)",
            batch.first_seq
        )));
    }
    if batch.last_seq < batch.first_seq {
        return Err(violation(format!("Batch.last_seq {} is below first_seq {}", batch.last_seq, batch.first_seq)));
    }

    let (first_seq, last_seq) = (batch.first_seq, batch.last_seq);
    let mut events = Vec::with_capacity(batch.events.len());
    let mut previous = first_seq - 1;
    let mut uninterpretable = None;
    for (i, bytes) in batch.events.into_iter().enumerate() {
        let event = pb::Event::decode(bytes.as_slice())
            .map_err(|e| violation(format!("event #{i} of Batch {first_seq}..={last_seq} does not decode: {e}")))?;
        if event.agent_id != agent_id {
            return Err(violation(format!("event seq {} has agent_id {:?}", event.seq, event.agent_id)));
        }
        if event.seq <= previous || event.seq > last_seq {
            return Err(violation(format!(
                "event seq {} is out of order or outside Batch {first_seq}..={last_seq}",
                event.seq
            )));
        }
        previous = event.seq;
        let (seq, captured_at_ns) = (event.seq, event.captured_at_ns);
        let interpretable = match callkpi_core::event::Event::try_from(event) {
            Ok(_) => true,
            Err(e) => {
                uninterpretable.get_or_insert((seq, e));
                false
            }
        };
        events.push(EventToStore { seq, bytes, captured_at_ns, interpretable });
    }

    let outcome =
        state.store.ingest(agent_id, BatchToStore { first_seq, last_seq, events }).await.map_err(|e| match e {
            StoreError::Conflict { .. } | StoreError::Gap { .. } | StoreError::InvalidBatch { .. } => {
                violation(e.to_string())
            }
            other => {
                tracing::error!(error = %other, "Cannot store a Batch; refusing the stream.");
                Refusal::new(RejectCode::Unavailable, "the aggregator cannot store events now")
            }
        })?;
    if let Some((seq, error)) = uninterpretable {
        tracing::warn!(
            count = outcome.quarantined,
            first_seq = seq,
            %error,
            "Events this aggregator cannot interpret were quarantined and acked."
        );
    }
    if outcome.lost > 0 {
        tracing::warn!(count = outcome.lost, first_seq, last_seq, "The agent declared events lost (spool cap).");
    }
    if outcome.late > 0 {
        tracing::warn!(count = outcome.late, "Events arrived for seqs already declared lost; ignored.");
    }
    tracing::debug!(first_seq, last_seq, up_to_seq = outcome.up_to_seq, stored = outcome.stored, "Batch stored.");
    m.batches_stored.get_or_create(label).inc();
    m.events_stored.get_or_create(label).inc_by(outcome.stored);
    m.events_duplicate.get_or_create(label).inc_by(outcome.duplicates);
    m.events_quarantined.get_or_create(label).inc_by(outcome.quarantined);
    m.events_lost.get_or_create(label).inc_by(outcome.lost);
    Ok((last_seq, outcome.up_to_seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_twin_is_wire_compatible() {
        let event = pb::Event { agent_id: "a".into(), seq: 7, captured_at_ns: 5, ..Default::default() };
        let batch = pb::Batch {
            first_seq: 7,
            last_seq: 9,
            events: vec![event.clone()],
            crc32c: callkpi_proto::events_crc32c(std::slice::from_ref(&event)),
        };
        let msg = pb::AgentMessage { msg: Some(pb::agent_message::Msg::Batch(batch.clone())) };
        let raw = RawAgentMessage::decode(msg.encode_to_vec().as_slice()).expect("decodes");
        let Some(RawMsg::Batch(raw_batch)) = &raw.msg else { panic!("not a batch: {raw:?}") };
        assert_eq!((raw_batch.first_seq, raw_batch.last_seq, raw_batch.crc32c), (7, 9, batch.crc32c));
        assert_eq!(raw_batch.events, [event.encode_to_vec()]);
        // And back: the same bytes.
        assert_eq!(raw.encode_to_vec(), msg.encode_to_vec());
        assert_eq!(prost::encoding::message::encoded_len(2, raw_batch), msg.encoded_len());

        let hello = pb::AgentMessage { msg: Some(pb::agent_message::Msg::Hello(pb::Hello::default())) };
        let raw = RawAgentMessage::decode(hello.encode_to_vec().as_slice()).unwrap();
        assert!(matches!(raw.msg, Some(RawMsg::Hello(_))));
    }

    #[test]
    fn refusals_map_to_the_contract_status() {
        let status = |code| Refusal::new(code, "x").status().code();
        assert_eq!(status(RejectCode::IdentityMismatch), tonic::Code::PermissionDenied);
        assert_eq!(status(RejectCode::ProtocolViolation), tonic::Code::FailedPrecondition);
        assert_eq!(status(RejectCode::UnsupportedVersion), tonic::Code::FailedPrecondition);
        assert_eq!(status(RejectCode::AgentDisabled), tonic::Code::FailedPrecondition);
        for code in [
            RejectCode::ChecksumMismatch,
            RejectCode::BatchTooLarge,
            RejectCode::Superseded,
            RejectCode::Unavailable,
            RejectCode::ShuttingDown,
        ] {
            assert_eq!(status(code), tonic::Code::Unavailable, "{code:?}");
        }
    }
}
