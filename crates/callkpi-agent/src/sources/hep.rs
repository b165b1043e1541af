//! HEP listener: receives the SIP traffic a proxy or SBC mirrors (Kamailio
//! `siptrace`, OpenSIPS `proto_hep`, heplify, captagent), tracks calls with
//! [`SipTracker`] and spools the events.
//!
//! # Input
//!
//! - UDP (`listen_udp`): one datagram is one HEP packet (v3, or v1/v2),
//!   received into one reused 64 KiB buffer (the largest UDP payload).
//! - TCP (`listen_tcp`, optional): HEPv3 packets back to back, framed by
//!   their length field. Each connection keeps at most one packet (64 KiB,
//!   HEPv3's length is a u16) plus one read; bytes that are not HEPv3 close
//!   the connection (a stream cannot be resynchronised) and count as
//!   malformed. At most `max_tcp_connections` senders at once; a sender
//!   silent for `tcp_idle_timeout_ms` is disconnected.
//!
//! One task owns the tracker; TCP connections hand it their packets through
//! a bounded channel (a slow tracker slows the senders, not memory), and a
//! second task spools, so the socket is read again while the spool syncs.
//!
//! # Time and expiry
//!
//! The tracker's time is the packets' own (HEP timestamps), as when a
//! capture is read offline. Calls end by their messages, but some end only
//! by a timeout (a CANCEL whose final was lost, an idle call): every
//! `expire_interval_ms` the tracker is told the time, estimated as the
//! latest packet time plus the (monotonic) time elapsed since it arrived, so
//! a skewed capture-node clock does not shorten or stretch timeouts.
//!
//! # Counting and loss
//!
//! Datagrams that are not HEP, SIP payloads that do not parse, and broken
//! TCP streams are counted in `callkpi_source_malformed_records_total`;
//! HEP packets that are not SIP and SIP messages without call meaning
//! (REGISTER, OPTIONS...) in `callkpi_source_unmapped_records_total`. HEP
//! cannot replay: events are submitted with `replayable = false`, and
//! datagrams sent while the agent is down are lost.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callkpi_core::event::{SourceKind, UnixNanos};
use callkpi_feeds::hep::{HEP3_MAGIC, HepPacket};
use callkpi_feeds::sip::SipTracker;
use callkpi_feeds::{CaptureTime, FeedEvent, Status};
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use super::{EventSink, UnparsedCounts, spool_lossy};
use crate::clock::Clock;
use crate::config::HepSourceConfig;
use crate::metrics::SourceMetrics;

/// The largest UDP payload, and the largest HEPv3 packet (u16 length).
const MAX_PACKET: usize = 64 * 1024;

/// Datagrams handled before their events are handed to the spooling task.
const BATCH_DATAGRAMS: usize = 256;

/// Packets from TCP connections waiting for the tracker.
const PACKET_QUEUE: usize = 1024;

/// Batches of events waiting for the spool.
const SPOOL_QUEUE: usize = 64;

/// The bound sockets of one listener: bound before anything starts, so a
/// taken port fails the agent's start.
#[derive(Debug)]
pub struct HepSockets {
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
}

impl HepSockets {
    /// Binds `config`'s `listen_udp` and `listen_tcp`.
    ///
    /// # Errors
    /// When an address is invalid or cannot be bound (in use, no permission).
    pub async fn bind(config: &HepSourceConfig) -> io::Result<Self> {
        let bad = |e: crate::config::ConfigError| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        let key = format!("sources.hep ({})", config.name);
        let udp = match config.udp_addr(&key).map_err(bad)? {
            Some(addr) => Some(bind_udp(addr, config.recv_buffer_bytes)?),
            None => None,
        };
        let tcp = match config.tcp_addr(&key).map_err(bad)? {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Self { udp, tcp })
    }

    /// The UDP socket's kernel receive buffer as Linux reports it (twice
    /// the size set, bookkeeping included), when listening on UDP.
    pub fn udp_recv_buffer(&self) -> Option<usize> {
        self.udp.as_ref().and_then(|s| socket2::SockRef::from(s).recv_buffer_size().ok())
    }

    /// The bound UDP address, when listening on UDP.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// The bound TCP address, when listening on TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|s| s.local_addr().ok())
    }
}

/// Binds a UDP socket, with `SO_RCVBUF` set first when `recv_buffer` is not
/// 0: a SIP burst (a proxy restart re-registering every phone, a
/// campaign's start) arrives faster than the tracker's pace for a moment,
/// and what does not fit the kernel's buffer is dropped unseen.
fn bind_udp(addr: SocketAddr, recv_buffer: u64) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
    if recv_buffer > 0 {
        let wanted = usize::try_from(recv_buffer).unwrap_or(usize::MAX);
        socket.set_recv_buffer_size(wanted)?;
        // Linux reports twice what it grants (bookkeeping overhead included).
        let got = socket.recv_buffer_size()? / 2;
        if got < wanted {
            warn!(
                wanted,
                got, "HEP UDP receive buffer capped by net.core.rmem_max; raise that sysctl for the size asked."
            );
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// One configured HEP listener.
#[derive(Debug)]
pub struct HepSource<S> {
    config: HepSourceConfig,
    sockets: HepSockets,
    sink: S,
    clock: Clock,
    metrics: SourceMetrics,
}

/// The tracker and what it needs to know of time and counters.
struct Tracking {
    tracker: SipTracker,
    metrics: SourceMetrics,
    /// Latest packet time seen, and when it arrived.
    latest: Option<(UnixNanos, Instant)>,
    unparsed: UnparsedCounts,
    /// Whether the log said once that the default placed a call in a queue.
    told_default_queue: bool,
}

impl Tracking {
    fn push(&mut self, packet: &[u8], captured: CaptureTime, out: &mut Vec<FeedEvent>) {
        self.metrics.read_bytes.inc_by(packet.len() as u64);
        match HepPacket::decode(packet) {
            Ok(p) => {
                let time = p.timestamp().unwrap_or(captured.wall);
                if self.latest.is_none_or(|(t, _)| time > t) {
                    self.latest = Some((time, Instant::now()));
                }
                self.tracker.push_hep(&p, Some(captured.wall), out);
            }
            Err(e) => {
                self.metrics.malformed.inc();
                debug!(error = %e, bytes = packet.len(), "Datagram is not HEP; skipped.");
            }
        }
    }

    fn expire(&mut self, out: &mut Vec<FeedEvent>) {
        if let Some((time, at)) = self.latest {
            let elapsed = i64::try_from(at.elapsed().as_nanos()).unwrap_or(i64::MAX);
            self.tracker.expire(time.saturating_add(elapsed), out);
        }
    }

    /// Moves the tracker's counters into the metrics.
    fn report(&mut self) {
        let unparsed = self.tracker.unparsed();
        let malformed = unparsed.malformed;
        // Every malformed message is also counted under its kind (`sip/error`...).
        let unmapped = unparsed.by_name.values().sum::<u64>().saturating_sub(malformed);
        self.unparsed.report(SourceKind::SipHep, malformed, unmapped, &self.metrics);
        let by_number = self.tracker.placements().by_dialled_number;
        if by_number > 0 && !self.told_default_queue {
            self.told_default_queue = true;
            info!(
                "An inbound call no queue rule places joined a queue named after its dialled number (sip.queue_by_dialled_number); the count per rule is logged at stop."
            );
        }
    }
}

impl<S: EventSink> HepSource<S> {
    /// A listener on `sockets`, spooling into `sink`.
    pub fn new(config: HepSourceConfig, sockets: HepSockets, sink: S, clock: Clock, metrics: SourceMetrics) -> Self {
        Self { config, sockets, sink, clock, metrics }
    }

    /// Receives, tracks and spools until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = info_span!(
            "source",
            kind = "hep",
            name = %self.config.name,
            udp = ?self.sockets.udp_addr(),
            tcp = ?self.sockets.tcp_addr(),
        );
        self.run_inner(shutdown).instrument(span).await;
    }

    async fn run_inner(self, shutdown: CancellationToken) {
        info!(udp_recv_buffer_bytes = ?self.sockets.udp_recv_buffer().map(|b| b / 2), "HEP source listening.");
        let Self { config, sockets: HepSockets { udp, tcp }, sink, clock, metrics } = self;
        metrics.connected.set(1);
        let (spool_tx, spool_rx) = mpsc::channel(SPOOL_QUEUE);
        let spooler = tokio::spawn(spool_task(sink, metrics.clone(), spool_rx).in_current_span());
        let (packet_tx, mut packet_rx) = mpsc::channel::<(Vec<u8>, CaptureTime)>(PACKET_QUEUE);
        let connections = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(config.max_tcp_connections));
        let mut tracking = Tracking {
            tracker: SipTracker::new(config.sip.clone()),
            metrics: metrics.clone(),
            latest: None,
            unparsed: UnparsedCounts::default(),
            told_default_queue: false,
        };
        let mut expiry = tokio::time::interval(Duration::from_millis(config.expire_interval_ms));
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; MAX_PACKET];
        loop {
            let mut events = Vec::new();
            let captured;
            tokio::select! {
                r = recv(udp.as_ref(), &mut buf) => {
                    captured = clock.capture();
                    match r {
                        Ok(n) => {
                            tracking.push(&buf[..n], captured, &mut events);
                            // Whatever else is queued already, in one spool batch.
                            if let Some(socket) = udp.as_ref() {
                                for _ in 1..BATCH_DATAGRAMS {
                                    match socket.try_recv(&mut buf) {
                                        Ok(n) => tracking.push(&buf[..n], captured, &mut events),
                                        Err(_) => break,
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "HEP UDP receive failed.");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                Some((packet, at)) = packet_rx.recv() => {
                    captured = at;
                    tracking.push(&packet, at, &mut events);
                }
                r = accept(tcp.as_ref()) => {
                    captured = clock.capture();
                    match r {
                        Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                            Ok(slot) => {
                                let conn = read_stream(
                                    stream,
                                    packet_tx.clone(),
                                    clock,
                                    metrics.clone(),
                                    Duration::from_millis(config.tcp_idle_timeout_ms),
                                    shutdown.clone(),
                                );
                                connections.spawn(
                                    async move {
                                        conn.await;
                                        drop(slot);
                                    }
                                    .instrument(info_span!("tcp", %peer)),
                                );
                            }
                            Err(_) => warn!(%peer, limit = config.max_tcp_connections, "Too many HEP TCP senders; connection refused."),
                        },
                        Err(e) => {
                            warn!(error = %e, "HEP TCP accept failed.");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                _ = expiry.tick() => {
                    captured = clock.capture();
                    tracking.expire(&mut events);
                }
                () = shutdown.cancelled() => break,
            }
            tracking.report();
            if !events.is_empty() && spool_tx.send((events, captured)).await.is_err() {
                error!("HEP spooling task ended; stopping.");
                break;
            }
        }
        // Senders blocked on a full queue see it closed and end.
        drop(packet_rx);
        connections.close();
        connections.wait().await;
        drop(spool_tx);
        if let Err(e) = spooler.await {
            error!(error = %e, "HEP spooling task failed.");
        }
        metrics.connected.set(0);
        let placements = tracking.tracker.placements();
        info!(active_calls = tracking.tracker.active_calls(), queues = %placements, "HEP source stopped.");
    }
}

/// A datagram from `socket`, or never when there is none.
async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<usize> {
    match socket {
        Some(s) => s.recv(buf).await,
        None => std::future::pending().await,
    }
}

/// A connection from `listener`, or never when there is none.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Frames one TCP sender's HEPv3 stream into packets for the tracker.
async fn read_stream(
    mut stream: TcpStream,
    packets: mpsc::Sender<(Vec<u8>, CaptureTime)>,
    clock: Clock,
    metrics: SourceMetrics,
    idle: Duration,
    shutdown: CancellationToken,
) {
    debug!("HEP TCP sender connected.");
    let mut buf: Vec<u8> = Vec::with_capacity(2 * MAX_PACKET);
    let mut chunk = vec![0u8; MAX_PACKET];
    loop {
        let read = async {
            if idle.is_zero() {
                Some(stream.read(&mut chunk).await)
            } else {
                tokio::time::timeout(idle, stream.read(&mut chunk)).await.ok()
            }
        };
        let n = tokio::select! {
            r = read => match r {
                Some(Ok(0)) => {
                    if !buf.is_empty() {
                        metrics.malformed.inc();
                        warn!(bytes = buf.len(), "HEP TCP sender closed mid-packet.");
                    }
                    debug!("HEP TCP sender disconnected.");
                    return;
                }
                Some(Ok(n)) => n,
                Some(Err(e)) => {
                    debug!(error = %e, "HEP TCP read failed.");
                    return;
                }
                None => {
                    info!("HEP TCP sender idle; disconnected.");
                    return;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let captured = clock.capture();
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            if rest.is_empty() {
                break;
            }
            // Only HEPv3 says where a packet ends; v1/v2 run to the datagram's end.
            if !HEP3_MAGIC.starts_with(&rest[..rest.len().min(4)]) {
                metrics.malformed.inc();
                warn!("HEP TCP stream holds something else than HEPv3; disconnected.");
                return;
            }
            match HepPacket::parse(rest) {
                Ok(Status::Complete { consumed, .. }) => {
                    let packet = rest[..consumed].to_vec();
                    pos += consumed;
                    if packets.send((packet, captured)).await.is_err() {
                        return;
                    }
                }
                Ok(Status::Partial) => break,
                Err(e) => {
                    metrics.malformed.inc();
                    warn!(error = %e, "Broken HEP TCP stream; disconnected.");
                    return;
                }
            }
        }
        buf.drain(..pos);
    }
}

/// Submits event batches as they come, so receiving never waits for a sync.
async fn spool_task<S: EventSink>(
    sink: S,
    metrics: SourceMetrics,
    mut batches: mpsc::Receiver<(Vec<FeedEvent>, CaptureTime)>,
) {
    while let Some((events, captured)) = batches.recv().await {
        spool_lossy(&sink, &metrics, SourceKind::SipHep, events, captured).await;
    }
}
