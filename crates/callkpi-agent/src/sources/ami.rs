//! Asterisk Manager Interface client: logs in, receives every event, maps
//! the call-centre ones with [`AmiMapper`] and spools them.
//!
//! # Session
//!
//! 1. TCP connect (`connect_timeout_ms`), read the banner
//!    (`Asterisk Call Manager/x.y.z`).
//! 2. `Action: Login` with `Username`, `Secret`, `Events: on`; the reply
//!    with our `ActionID` must be `Response: Success`. A refused login means
//!    bad credentials: logged at ERROR (an operator must act) and retried at
//!    the longest backoff.
//! 3. Optionally `Action: QueueStatus`, so static members' state arrives as
//!    `QueueMember` events (the mapper turns them into logins and pauses).
//! 4. Read frames with [`parse_frame`] and a size limit; a message over the
//!    limit is skipped up to the next empty line and counted as malformed.
//!    Every read gets one capture time; the events of one read are spooled
//!    in one submit.
//! 5. `Action: Ping` every `ping_interval_ms`; when nothing at all arrives
//!    for twice that, the connection is declared dead.
//!
//! EOF, a read error, a dead connection, or `Event: Shutdown` (Asterisk
//! stopping or restarting) end the session: logged at WARN, then the client
//! reconnects with jittered exponential backoff, logging the successful
//! login at INFO. The mapper's state (member names, open calls) is kept
//! across reconnects; Asterisk's `Shutdown` event clears the calls.
//!
//! # Loss
//!
//! AMI cannot replay: events emitted while the agent is disconnected are
//! never seen, and events are submitted with `replayable = false`. When the
//! spool is at its byte cap it drops its oldest events to store new ones
//! (counted in `callkpi_spool_dropped_events_total`).

use std::io;
use std::time::Duration;

use callkpi_core::event::SourceKind;
use callkpi_feeds::ami::{AmiMapper, Frame, MessageKind, ParseErrorKind, parse_frame, skip_message};
use callkpi_feeds::{FeedEvent, Status};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, info_span, warn};

use super::{Ended, EventSink, Reconnect, UnparsedCounts, spool_lossy};
use crate::clock::Clock;
use crate::config::{AmiSourceConfig, Secret};
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
    /// No banner, no login reply, or nothing at all for twice the ping interval.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The peer closed the connection.
    #[error("connection closed by Asterisk")]
    Closed,
    /// Asterisk announced its shutdown (`Event: Shutdown`).
    #[error("Asterisk is shutting down")]
    AsteriskShutdown,
    /// The first bytes are not an AMI banner.
    #[error("not an AMI banner: {0}")]
    BadBanner(String),
    /// Login refused: credentials or permissions.
    #[error("login refused: {0}")]
    LoginRefused(String),
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> SessionEnd {
    move |source| SessionEnd::Io { what, source }
}

/// One configured AMI connection.
#[derive(Debug)]
pub struct AmiSource<S> {
    config: AmiSourceConfig,
    secret: Secret,
    sink: S,
    clock: Clock,
    metrics: SourceMetrics,
    mapper: AmiMapper,
    unparsed: UnparsedCounts,
    action_id: u64,
}

impl<S: EventSink> AmiSource<S> {
    /// A client for `config`, spooling into `sink`.
    pub fn new(config: AmiSourceConfig, secret: Secret, sink: S, clock: Clock, metrics: SourceMetrics) -> Self {
        let mapper = AmiMapper::new(config.mapper_config());
        Self { config, secret, sink, clock, metrics, mapper, unparsed: UnparsedCounts::default(), action_id: 0 }
    }

    /// Connects, reads and reconnects until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = info_span!("source", kind = "ami", name = %self.config.name, address = %self.config.address);
        self.run_inner(shutdown).instrument(span).await;
    }

    async fn run_inner(mut self, shutdown: CancellationToken) {
        info!("AMI source started.");
        let mut reconnect =
            Reconnect::new(SourceKind::AsteriskAmi, self.config.backoff_initial_ms, self.config.backoff_max_ms);
        loop {
            let mut logged_in = false;
            let end = self.session(&shutdown, &mut reconnect, &mut logged_in).await;
            let class = match &end {
                SessionEnd::Shutdown => Ended::Shutdown,
                SessionEnd::LoginRefused(_) => Ended::NeedsOperator("check the AMI username and secret"),
                SessionEnd::AsteriskShutdown | SessionEnd::Closed => Ended::PeerGone,
                _ => Ended::Failed,
            };
            if !reconnect.ended(&end, class, logged_in, &self.metrics, &shutdown).await {
                break;
            }
        }
        info!("AMI source stopped.");
    }

    fn next_action_id(&mut self, what: &str) -> String {
        self.action_id += 1;
        format!("callkpi-{what}-{}", self.action_id)
    }

    /// One connection, from connect to its end.
    async fn session(
        &mut self,
        shutdown: &CancellationToken,
        reconnect: &mut Reconnect,
        logged_in: &mut bool,
    ) -> SessionEnd {
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
        let mut buf: Vec<u8> = Vec::with_capacity(READ_BYTES);
        match tokio::select! {
            r = timeout(connect_timeout, self.login(&mut stream, &mut buf)) => r.unwrap_or(Err(SessionEnd::Timeout("login"))),
            () = shutdown.cancelled() => Err(SessionEnd::Shutdown),
        } {
            Ok(version) => {
                *logged_in = true;
                reconnect.started(&self.metrics);
                info!(ami_version = %version, "AMI logged in.");
            }
            Err(end) => return end,
        }
        if self.config.queue_status_on_connect {
            let id = self.next_action_id("queuestatus");
            if let Err(e) = send_action(&mut stream, &[("Action", "QueueStatus"), ("ActionID", &id)]).await {
                return io_err("write")(e);
            }
        }
        let end = self.read_loop(&mut stream, buf, shutdown).await;
        if matches!(end, SessionEnd::Shutdown) {
            let id = self.next_action_id("logoff");
            let _ = timeout(
                Duration::from_millis(500),
                send_action(&mut stream, &[("Action", "Logoff"), ("ActionID", &id)]),
            )
            .await;
        }
        end
    }

    /// Reads the banner, logs in; returns the AMI version. Bytes after the
    /// login reply stay in `buf`.
    async fn login(&mut self, stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<String, SessionEnd> {
        let max = self.config.max_message_bytes;
        let version = loop {
            match parse_frame(buf, max) {
                Ok(Status::Complete { value: Frame::Banner(b), consumed }) => {
                    let v = b.version.to_owned();
                    buf.drain(..consumed);
                    break v;
                }
                Ok(Status::Complete { .. }) | Err(_) => {
                    let head = String::from_utf8_lossy(&buf[..buf.len().min(64)]).into_owned();
                    return Err(SessionEnd::BadBanner(head));
                }
                Ok(Status::Partial) => read_more(stream, buf).await?,
            }
        };
        let id = self.next_action_id("login");
        let secret = self.secret.clone();
        let username = self.config.username.clone();
        send_action(
            stream,
            &[
                ("Action", "Login"),
                ("ActionID", &id),
                ("Username", &username),
                ("Secret", secret.expose()),
                ("Events", "on"),
            ],
        )
        .await
        .map_err(io_err("write"))?;
        loop {
            match parse_frame(buf, max) {
                Ok(Status::Complete { value: Frame::Message(msg), consumed }) => {
                    let reply = msg.kind() == MessageKind::Response
                        && msg.action_id().is_none_or(|a| a == id.as_str())
                        && msg.response().is_some();
                    let outcome = reply.then(|| {
                        let ok = msg.response().is_some_and(|r| r.eq_ignore_ascii_case("Success"));
                        (ok, msg.get("Message").unwrap_or_default().into_owned())
                    });
                    buf.drain(..consumed);
                    match outcome {
                        Some((true, _)) => return Ok(version),
                        Some((false, message)) => return Err(SessionEnd::LoginRefused(message)),
                        None => {}
                    }
                }
                Ok(Status::Complete { consumed, .. }) => {
                    buf.drain(..consumed);
                }
                Ok(Status::Partial) => read_more(stream, buf).await?,
                Err(_) => return Err(SessionEnd::LoginRefused("unreadable login reply".to_owned())),
            }
        }
    }

    /// Reads, maps and spools until the session ends.
    async fn read_loop(
        &mut self,
        stream: &mut TcpStream,
        mut buf: Vec<u8>,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let ping_every = Duration::from_millis(self.config.ping_interval_ms);
        let dead_after = ping_every * 2;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_traffic = Instant::now();
        let mut skipping = false;
        let mut chunk = vec![0; READ_BYTES];
        // Bytes already buffered (after the login reply) are processed first.
        let mut fresh = !buf.is_empty();
        loop {
            if !fresh {
                let deadline = last_traffic + dead_after;
                let n = tokio::select! {
                    r = stream.read(&mut chunk) => match r {
                        Ok(0) => return SessionEnd::Closed,
                        Ok(n) => n,
                        Err(e) => return io_err("read")(e),
                    },
                    _ = ping.tick() => {
                        let id = self.next_action_id("ping");
                        if let Err(e) = send_action(stream, &[("Action", "Ping"), ("ActionID", &id)]).await {
                            return io_err("write")(e);
                        }
                        continue;
                    }
                    () = tokio::time::sleep_until(deadline) => return SessionEnd::Timeout("keep-alive"),
                    () = shutdown.cancelled() => return SessionEnd::Shutdown,
                };
                last_traffic = Instant::now();
                self.metrics.read_bytes.inc_by(n as u64);
                buf.extend_from_slice(&chunk[..n]);
            }
            fresh = false;
            let captured = self.clock.capture();
            let mut events = Vec::new();
            let asterisk_shutdown = self.frame_all(&mut buf, &mut skipping, &mut events);
            self.report_unparsed();
            if !events.is_empty() {
                self.spool(events, captured).await;
            }
            if asterisk_shutdown {
                return SessionEnd::AsteriskShutdown;
            }
        }
    }

    /// Frames and maps every complete message in `buf`, removing them.
    /// Returns whether `Event: Shutdown` was seen.
    fn frame_all(&mut self, buf: &mut Vec<u8>, skipping: &mut bool, events: &mut Vec<FeedEvent>) -> bool {
        let max = self.config.max_message_bytes;
        let mut pos = 0;
        let mut shutdown = false;
        loop {
            let rest = &buf[pos..];
            if *skipping {
                match skip_message(rest) {
                    Status::Complete { consumed, .. } => {
                        pos += consumed;
                        *skipping = false;
                        continue;
                    }
                    Status::Partial => {
                        // Keep the last byte: a line end may be split across reads.
                        pos += rest.len().saturating_sub(1);
                        break;
                    }
                }
            }
            match parse_frame(rest, max) {
                Ok(Status::Complete { value, consumed }) => {
                    if let Frame::Message(msg) = &value
                        && msg.event().is_some_and(|e| e == "Shutdown")
                    {
                        shutdown = true;
                    }
                    self.mapper.map_frame(&value, events);
                    pos += consumed.max(1);
                }
                Ok(Status::Partial) => break,
                Err(e) => {
                    self.mapper.count_malformed();
                    if e.kind == ParseErrorKind::TooLarge {
                        warn!(limit = max, "AMI message over the size limit skipped.");
                    } else {
                        warn!(error = %e, "Unframeable AMI input skipped.");
                    }
                    *skipping = true;
                }
            }
        }
        buf.drain(..pos);
        shutdown
    }

    async fn spool(&mut self, events: Vec<FeedEvent>, captured: callkpi_feeds::CaptureTime) {
        spool_lossy(&self.sink, &self.metrics, SourceKind::AsteriskAmi, events, captured).await;
    }

    fn report_unparsed(&mut self) {
        let unparsed = self.mapper.unparsed();
        let unmapped: u64 = unparsed.by_name.values().sum();
        self.unparsed.report(SourceKind::AsteriskAmi, unparsed.malformed, unmapped, &self.metrics);
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), SessionEnd> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) => Err(SessionEnd::Closed),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(io_err("read")(e)),
    }
}

/// Writes one action: `Key: Value` lines and the empty line.
async fn send_action(stream: &mut TcpStream, headers: &[(&str, &str)]) -> io::Result<()> {
    let mut out = String::new();
    for (k, v) in headers {
        // A value cannot carry a line break: it would inject headers.
        let v: String = v.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        out.push_str(k);
        out.push_str(": ");
        out.push_str(&v);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes()).await
}
