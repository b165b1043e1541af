//! FreeSWITCH event-socket client (`mod_event_socket`, inbound mode): logs
//! in, subscribes to the channel and mod_callcenter events, maps them with
//! [`EslMapper`] and spools them.
//!
//! # Session
//!
//! 1. TCP connect to `address` (`connect_timeout_ms`).
//! 2. The sans-IO [`EslClient`] drives the login: `auth/request` →
//!    `auth <password>`, `+OK` → `event plain ...`, `+OK` → ready. Login and
//!    subscription must finish within `connect_timeout_ms`. A refused
//!    password, a refused subscription or an ACL rejection means an operator
//!    must act: logged at ERROR and retried at the longest backoff.
//! 3. Every read gets one capture time; the events of one read are spooled
//!    in one submit. FreeSWITCH sends a `HEARTBEAT` every 20 s, so nothing
//!    at all for `silence_timeout_ms` means a dead connection.
//!
//! A `text/disconnect-notice` (FreeSWITCH stopping), EOF, a read error or a
//! silent connection end the session: logged at WARN, then the client
//! reconnects with jittered exponential backoff, logging the successful
//! login at INFO. Every event carries the switch's `Core-UUID`; when it
//! differs from the previous session's, FreeSWITCH was restarted: that is
//! logged and the mapper starts afresh (the old channels are gone).
//!
//! # Loss
//!
//! The event socket cannot replay: events emitted while the agent is
//! disconnected are never seen, and events are submitted with
//! `replayable = false`. When the spool is at its byte cap it drops its
//! oldest events to store new ones (`callkpi_spool_dropped_events_total`).

use std::io;
use std::time::Duration;

use callkpi_core::event::SourceKind;
use callkpi_feeds::esl::{ClientError, ClientState, EslClient, EslMapper, Subscription};
use callkpi_feeds::{CaptureTime, FeedEvent};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, info_span, warn};

use super::{Ended, EventSink, Reconnect, UnparsedCounts, spool_lossy};
use crate::clock::Clock;
use crate::config::{EslSourceConfig, Secret};
use crate::metrics::SourceMetrics;

/// Bytes read from the socket at once.
const READ_BYTES: usize = 64 * 1024;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    /// The agent is shutting down.
    #[error("shutdown")]
    Shutdown,
    /// Connect, read or write failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// No login in time, or nothing at all for `silence_timeout_ms`.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The peer closed the connection without a notice.
    #[error("connection closed by FreeSWITCH")]
    Closed,
    /// FreeSWITCH said goodbye (`text/disconnect-notice`).
    #[error("FreeSWITCH disconnected: {0}")]
    Disconnected(String),
    /// Refused login or subscription, ACL rejection, unframeable stream.
    #[error("{0}")]
    Client(ClientError),
}

impl SessionEnd {
    /// Whether retrying soon cannot help: an operator must change something.
    fn needs_operator(&self) -> bool {
        matches!(
            self,
            Self::Client(
                ClientError::AuthFailed { .. }
                    | ClientError::SubscriptionRefused { .. }
                    | ClientError::Rejected { .. }
                    | ClientError::InvalidPassword
                    | ClientError::InvalidSubscription
            )
        )
    }
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> SessionEnd {
    move |source| SessionEnd::Io { what, source }
}

/// One configured event-socket connection.
#[derive(Debug)]
pub struct EslSource<S> {
    config: EslSourceConfig,
    password: Secret,
    sink: S,
    clock: Clock,
    metrics: SourceMetrics,
    mapper: EslMapper,
    /// `Core-UUID` of the FreeSWITCH process last seen.
    core_uuid: Option<String>,
    unparsed: UnparsedCounts,
}

impl<S: EventSink> EslSource<S> {
    /// A client for `config`, spooling into `sink`.
    pub fn new(config: EslSourceConfig, password: Secret, sink: S, clock: Clock, metrics: SourceMetrics) -> Self {
        let mapper = EslMapper::new(config.mapper_config());
        Self { config, password, sink, clock, metrics, mapper, core_uuid: None, unparsed: UnparsedCounts::default() }
    }

    /// Connects, reads and reconnects until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = info_span!("source", kind = "esl", name = %self.config.name, address = %self.config.address);
        self.run_inner(shutdown).instrument(span).await;
    }

    async fn run_inner(mut self, shutdown: CancellationToken) {
        info!("ESL source started.");
        let mut reconnect =
            Reconnect::new(SourceKind::FreeswitchEsl, self.config.backoff_initial_ms, self.config.backoff_max_ms);
        loop {
            let mut ready = false;
            let end = self.session(&shutdown, &mut reconnect, &mut ready).await;
            let class = match &end {
                SessionEnd::Shutdown => Ended::Shutdown,
                e if e.needs_operator() => Ended::NeedsOperator("check the password and event_socket.conf.xml"),
                SessionEnd::Disconnected(_) | SessionEnd::Closed => Ended::PeerGone,
                _ => Ended::Failed,
            };
            if !reconnect.ended(&end, class, ready, &self.metrics, &shutdown).await {
                break;
            }
        }
        info!("ESL source stopped.");
    }

    /// One connection, from connect to its end.
    async fn session(
        &mut self,
        shutdown: &CancellationToken,
        reconnect: &mut Reconnect,
        ready: &mut bool,
    ) -> SessionEnd {
        let mut client = match EslClient::new(self.password.expose(), Subscription::default()) {
            Ok(c) => c.with_max_frame(self.config.max_frame_bytes),
            Err(e) => return SessionEnd::Client(e),
        };
        let connect_timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let connect = tokio::select! {
            r = timeout(connect_timeout, TcpStream::connect(&self.config.address)) => r,
            () = shutdown.cancelled() => return SessionEnd::Shutdown,
        };
        let mut stream = match connect {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return io_err("connect")(e),
            Err(_) => return SessionEnd::Timeout("connect"),
        };
        let _ = stream.set_nodelay(true);
        let login_deadline = Instant::now() + connect_timeout;
        let silence =
            (self.config.silence_timeout_ms > 0).then(|| Duration::from_millis(self.config.silence_timeout_ms));
        let mut chunk = vec![0; READ_BYTES];
        let mut last_traffic = Instant::now();
        loop {
            let deadline = if *ready { silence.map(|s| last_traffic + s) } else { Some(login_deadline) };
            let read = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, stream.read(&mut chunk)).await.ok(),
                    None => Some(stream.read(&mut chunk).await),
                }
            };
            let n = tokio::select! {
                r = read => match r {
                    None => return SessionEnd::Timeout(if *ready { "silence" } else { "login" }),
                    Some(Ok(0)) => return SessionEnd::Closed,
                    Some(Ok(n)) => n,
                    Some(Err(e)) => return io_err("read")(e),
                },
                () = shutdown.cancelled() => {
                    if *ready {
                        let _ = timeout(Duration::from_millis(500), stream.write_all(b"exit\n\n")).await;
                    }
                    return SessionEnd::Shutdown;
                }
            };
            last_traffic = Instant::now();
            self.metrics.read_bytes.inc_by(n as u64);
            let captured = self.clock.capture();
            let mut events = Vec::new();
            let bad_before = client.malformed_events();
            let fed = self.feed(&mut client, &chunk[..n], &mut events);
            // Event bodies the client could not parse never reach the mapper.
            self.metrics.malformed.inc_by(client.malformed_events() - bad_before);
            self.report_unparsed();
            if !events.is_empty() {
                self.spool(events, captured).await;
            }
            if let Err(e) = fed {
                if matches!(e, ClientError::Framing(_)) {
                    self.metrics.malformed.inc();
                }
                return SessionEnd::Client(e);
            }
            let out = client.take_output();
            if !out.is_empty()
                && let Err(e) = stream.write_all(&out).await
            {
                return io_err("write")(e);
            }
            // One read may hold the subscription's +OK, events and a
            // disconnect notice: events only flow once subscribed.
            if !*ready && (client.state() == ClientState::Ready || client.events() > 0) {
                *ready = true;
                reconnect.started(&self.metrics);
                info!("ESL logged in and subscribed.");
            }
            if client.state() == ClientState::Disconnected {
                let notice = client.disconnect_notice().unwrap_or_default().trim().replace('\n', " ");
                return SessionEnd::Disconnected(notice);
            }
        }
    }

    /// Feeds `bytes` to the client and maps its events; a new `Core-UUID`
    /// (FreeSWITCH restarted) resets the mapper first.
    fn feed(&mut self, client: &mut EslClient, bytes: &[u8], events: &mut Vec<FeedEvent>) -> Result<(), ClientError> {
        let Self { mapper, core_uuid, config, unparsed, .. } = self;
        client.feed(bytes, |ev| {
            if let Some(core) = ev.get_nonempty("Core-UUID")
                && core_uuid.as_deref() != Some(&*core)
            {
                if let Some(old) = core_uuid.as_deref() {
                    warn!(old_core_uuid = %old, core_uuid = %core, "FreeSWITCH was restarted; calls in progress before are forgotten.");
                    *mapper = EslMapper::new(config.mapper_config());
                    *unparsed = UnparsedCounts::default();
                } else {
                    info!(core_uuid = %core, "FreeSWITCH identified.");
                }
                *core_uuid = Some(core.into_owned());
            }
            mapper.map_event(ev, events);
        })
    }

    async fn spool(&mut self, events: Vec<FeedEvent>, captured: CaptureTime) {
        spool_lossy(&self.sink, &self.metrics, SourceKind::FreeswitchEsl, events, captured).await;
    }

    /// Moves the mapper's counters into the metrics.
    fn report_unparsed(&mut self) {
        let unparsed = self.mapper.unparsed();
        let unmapped: u64 = unparsed.by_name.values().sum();
        self.unparsed.report(SourceKind::FreeswitchEsl, unparsed.malformed, unmapped, &self.metrics);
    }
}
