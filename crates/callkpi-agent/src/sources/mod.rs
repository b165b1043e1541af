//! Source tasks: each reads one PBX feed, maps it with a sans-IO mapper from
//! `callkpi-feeds`, and hands the events to the spool.
//!
//! A source never talks to the spool directly but through [`EventSink`], a
//! two-method trait the spool implements ([`SpoolSink`]) and tests replace
//! with an in-memory twin.
//!
//! Replay and the spool's byte cap:
//! - [`queue_log`] can replay (the file is still there): it submits events
//!   with `replayable = true` together with its checkpoint, and on
//!   [`AppendOutcome::Full`] it waits and retries the same chunk, never
//!   advancing its checkpoint. Nothing is lost; reading pauses.
//! - [`ami`] cannot replay (a socket): it submits with `replayable = false`;
//!   when the spool is full it drops its oldest events to make room and
//!   counts them (`callkpi_spool_dropped_events_total`). [`linemon`] (a
//!   serial line), [`esl`] and [`hep`] (sockets) do the same.
//!
//! # Shared plumbing
//!
//! What every feed that cannot replay does alike lives here, once:
//! [`spool_lossy`] (submit, count, log what the spool did not take),
//! [`UnparsedCounts`] (the mapper's running totals of malformed and unmapped
//! records turned into counter increments) and [`Reconnect`] (jittered
//! backoff between sessions, and what an ended session means). Their
//! metrics and log lines go through one set of typed [`InternalEvent`]s, in
//! the style of vector's internal events: a struct per thing that happened,
//! whose `emit` is the only place that knows its counters and its message.
//!
//! # Layout
//! - [`queue_log`]: tails an Asterisk queue_log file with byte-offset checkpoints.
//! - [`ami`]: an Asterisk Manager Interface client.
//! - [`linemon`]: the analogue line monitor board on a serial port.
//! - [`esl`]: a FreeSWITCH event-socket client (channel and mod_callcenter events).
//! - [`hep`]: a HEP listener (UDP, TCP) tracking the SIP calls a proxy mirrors.

pub mod ami;
pub mod esl;
pub mod hep;
pub mod linemon;
pub mod queue_log;

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use callkpi_core::event::SourceKind;
use callkpi_feeds::{CaptureTime, FeedEvent};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::backoff::Backoff;
use crate::metrics::SourceMetrics;
use crate::spool::{AppendOutcome, Spool, SpoolError, SpoolHandle, SpoolInput};

/// Where sources put their events: the spool, or a twin in tests.
pub trait EventSink: Clone + Send + Sync + 'static {
    /// The checkpoint stored under `key` (written by a previous
    /// [`submit`](Self::submit)), if any.
    ///
    /// # Errors
    /// When the spool cannot be read.
    fn checkpoint(&self, key: &str) -> Result<Option<Vec<u8>>, SpoolError>;

    /// Stores `inputs` and `checkpoint` atomically (one sled batch) and
    /// returns once they are durable.
    ///
    /// # Errors
    /// When the spool cannot be written.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future may or may not have stored the
    /// inputs. Sources only drop it at shutdown and replay from their last
    /// confirmed checkpoint.
    fn submit(
        &self,
        inputs: Vec<SpoolInput>,
        checkpoint: Option<(String, Vec<u8>)>,
    ) -> impl Future<Output = Result<AppendOutcome, SpoolError>> + Send;
}

/// The real sink: reads checkpoints from the [`Spool`], writes through the
/// group-commit writer's [`SpoolHandle`].
#[derive(Clone)]
pub struct SpoolSink {
    spool: Spool,
    handle: SpoolHandle,
}

impl std::fmt::Debug for SpoolSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolSink").finish_non_exhaustive()
    }
}

impl SpoolSink {
    /// A sink over `spool` and its writer.
    pub fn new(spool: Spool, handle: SpoolHandle) -> Self {
        Self { spool, handle }
    }
}

impl EventSink for SpoolSink {
    fn checkpoint(&self, key: &str) -> Result<Option<Vec<u8>>, SpoolError> {
        self.spool.checkpoint(key)
    }

    async fn submit(
        &self,
        inputs: Vec<SpoolInput>,
        checkpoint: Option<(String, Vec<u8>)>,
    ) -> Result<AppendOutcome, SpoolError> {
        self.handle.submit(inputs, checkpoint).await
    }
}

// === internal events ===

/// Something that happened in a source. `emit` updates the source's
/// counters and writes its log line: the one place for both.
pub(crate) trait InternalEvent {
    /// Records the event in `metrics` and the log.
    fn emit(self, metrics: &SourceMetrics);
}

/// The feed's name in log lines.
pub(crate) fn feed_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::AsteriskQueueLog => "queue_log",
        SourceKind::AsteriskAmi => "AMI",
        SourceKind::FreeswitchEsl => "ESL",
        SourceKind::SipHep => "HEP",
        SourceKind::LineMonitor => "line monitor",
        _ => "feed",
    }
}

/// Events mapped from the feed, before the spool.
pub(crate) struct EventsCaptured {
    pub(crate) count: u64,
}

impl InternalEvent for EventsCaptured {
    fn emit(self, metrics: &SourceMetrics) {
        metrics.events.inc_by(self.count);
    }
}

/// Events durably stored in the spool.
pub(crate) struct EventsSpooled {
    pub(crate) count: u64,
}

impl InternalEvent for EventsSpooled {
    fn emit(self, metrics: &SourceMetrics) {
        metrics.spooled.inc_by(self.count);
    }
}

/// Events of a feed that cannot replay which the spool did not store.
pub(crate) struct EventsLost<'a> {
    pub(crate) kind: SourceKind,
    pub(crate) count: u64,
    /// `None`: refused as full (not expected: the spool drops its oldest
    /// events for such feeds instead).
    pub(crate) error: Option<&'a SpoolError>,
}

impl InternalEvent for EventsLost<'_> {
    fn emit(self, _metrics: &SourceMetrics) {
        let feed = feed_name(self.kind);
        match self.error {
            None => warn!(feed, events = self.count, "Spool refused events; they are lost."),
            Some(e) => error!(feed, error = %e, events = self.count, "Cannot store events; they are lost."),
        }
    }
}

/// Records the mapper could not parse, or has no rule for, since the last
/// report.
pub(crate) struct RecordsUnparsed {
    pub(crate) kind: SourceKind,
    pub(crate) malformed: u64,
    pub(crate) unmapped: u64,
    pub(crate) malformed_total: u64,
}

impl InternalEvent for RecordsUnparsed {
    fn emit(self, metrics: &SourceMetrics) {
        if self.malformed > 0 {
            metrics.malformed.inc_by(self.malformed);
            debug!(
                feed = feed_name(self.kind),
                new = self.malformed,
                total = self.malformed_total,
                "Malformed records."
            );
        }
        metrics.unmapped.inc_by(self.unmapped);
    }
}

/// A session began: connected and logged in, or a device opened.
pub(crate) struct SessionStarted {
    /// Not the first session of this run.
    pub(crate) again: bool,
}

impl InternalEvent for SessionStarted {
    fn emit(self, metrics: &SourceMetrics) {
        metrics.connected.set(1);
        if self.again {
            metrics.reconnects.inc();
        }
    }
}

/// A session ended, with what the reconnect loop makes of it.
pub(crate) struct SessionEnded<'a> {
    pub(crate) kind: SourceKind,
    pub(crate) error: &'a (dyn Display + Sync),
    pub(crate) class: Ended,
    /// The session got as far as [`SessionStarted`].
    pub(crate) was_up: bool,
    /// A session of this run did (read only when this one did not).
    pub(crate) ever_up: bool,
    /// Say a failed attempt out loud: the first of a run of failures, then
    /// at most once per longest backoff (a peer that stays away must not
    /// fill the log every few seconds).
    pub(crate) loud: bool,
}

impl InternalEvent for SessionEnded<'_> {
    fn emit(self, metrics: &SourceMetrics) {
        metrics.connected.set(0);
        let (feed, error) = (feed_name(self.kind), self.error);
        match self.class {
            Ended::Shutdown => {}
            Ended::NeedsOperator(hint) => {
                error!(feed, error = %error, hint, "Login refused; an operator must act. Retrying slowly.");
            }
            Ended::PeerGone if self.was_up => {
                warn!(feed, error = %error, "Connection lost; reconnecting (events until then are not seen).");
            }
            _ if self.loud && (self.was_up || !self.ever_up) => {
                warn!(feed, error = %error, "Connection failed; reconnecting (said again at most once per longest backoff).");
            }
            _ => debug!(feed, error = %error, "Reconnect failed."),
        }
    }
}

/// Whether a failed attempt is said out loud: the first since the last
/// session came up (`since_loud` none), then once the longest backoff has
/// passed since the last one said.
fn loud_again(since_loud: Option<Duration>, longest: Duration) -> bool {
    since_loud.is_none_or(|d| d >= longest)
}

// === shared plumbing ===

/// Submits the events of a feed that cannot replay (`replayable = false`:
/// at the byte cap the spool drops its oldest events instead) with one
/// capture time; what is not stored is lost and logged.
pub(crate) async fn spool_lossy<S: EventSink>(
    sink: &S,
    metrics: &SourceMetrics,
    kind: SourceKind,
    events: Vec<FeedEvent>,
    captured: CaptureTime,
) {
    let count = events.len() as u64;
    EventsCaptured { count }.emit(metrics);
    let inputs =
        events.into_iter().map(|event| SpoolInput { source: kind, replayable: false, event, captured }).collect();
    match sink.submit(inputs, None).await {
        Ok(AppendOutcome::Stored { .. }) => EventsSpooled { count }.emit(metrics),
        Ok(AppendOutcome::Full) => EventsLost { kind, count, error: None }.emit(metrics),
        Err(e) => EventsLost { kind, count, error: Some(&e) }.emit(metrics),
    }
}

/// A mapper's running totals already turned into counter increments.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct UnparsedCounts {
    malformed: u64,
    unmapped: u64,
}

impl UnparsedCounts {
    /// Emits what `malformed` and `unmapped` (the mapper's totals) add to
    /// the last report; returns the new malformed records. Totals below the
    /// last ones (a new mapper) restart the count.
    pub(crate) fn report(&mut self, kind: SourceKind, malformed: u64, unmapped: u64, metrics: &SourceMetrics) -> u64 {
        let new_malformed = malformed.saturating_sub(self.malformed);
        let new_unmapped = unmapped.saturating_sub(self.unmapped);
        if new_malformed > 0 || new_unmapped > 0 {
            RecordsUnparsed { kind, malformed: new_malformed, unmapped: new_unmapped, malformed_total: malformed }
                .emit(metrics);
        }
        *self = Self { malformed, unmapped };
        new_malformed
    }
}

/// What an ended session means for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The agent is stopping: no next session.
    Shutdown,
    /// Credentials or permissions: retrying soon cannot help, so retries use
    /// the longest backoff. The hint says what to check.
    NeedsOperator(&'static str),
    /// The peer closed or announced its restart.
    PeerGone,
    /// Anything else: connect, read or timeout failures.
    Failed,
}

/// The reconnect loop's state: backoff between sessions (reset after one
/// that came up) and whether any did.
#[derive(Debug)]
pub(crate) struct Reconnect {
    kind: SourceKind,
    backoff: Backoff,
    ever_up: bool,
    /// When a failed attempt was last said out loud (`None`: since the last session came up).
    last_loud: Option<std::time::Instant>,
}

impl Reconnect {
    /// Backoff from `initial_ms`, doubling up to `max_ms`, jittered.
    pub(crate) fn new(kind: SourceKind, initial_ms: u64, max_ms: u64) -> Self {
        Self {
            kind,
            backoff: Backoff::new(Duration::from_millis(initial_ms), Duration::from_millis(max_ms)),
            ever_up: false,
            last_loud: None,
        }
    }

    /// A session came up.
    pub(crate) fn started(&mut self, metrics: &SourceMetrics) {
        SessionStarted { again: self.ever_up }.emit(metrics);
        self.ever_up = true;
        self.last_loud = None;
        self.backoff.reset();
    }

    /// A session ended (`was_up`: it had [`started`](Self::started)): logs
    /// it, then waits the backoff. `false` when the source must stop.
    pub(crate) async fn ended(
        &mut self,
        error: &(dyn Display + Sync),
        class: Ended,
        was_up: bool,
        metrics: &SourceMetrics,
        shutdown: &CancellationToken,
    ) -> bool {
        // When this session was not up, `ever_up` is about earlier ones.
        let loud = loud_again(self.last_loud.map(|t| t.elapsed()), self.backoff.max_delay());
        if loud {
            self.last_loud = Some(std::time::Instant::now());
        }
        SessionEnded { kind: self.kind, error, class, was_up, ever_up: self.ever_up, loud: loud || was_up }
            .emit(metrics);
        self.retry(class, shutdown).await
    }

    /// Waits the backoff `class` calls for (none: [`Ended::Shutdown`]).
    /// `false` when the source must stop. For a source that logs its
    /// sessions' ends itself.
    pub(crate) async fn retry(&mut self, class: Ended, shutdown: &CancellationToken) -> bool {
        let delay = match class {
            Ended::Shutdown => return false,
            Ended::NeedsOperator(_) => self.backoff.max_delay(),
            Ended::PeerGone | Ended::Failed => self.backoff.next_delay(),
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = shutdown.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_peer_that_stays_away_is_said_once_per_longest_backoff() {
        use super::loud_again;
        use std::time::Duration;
        let longest = Duration::from_secs(30);
        assert!(loud_again(None, longest), "the first failure is said");
        assert!(!loud_again(Some(Duration::from_secs(2)), longest), "not again a few seconds later");
        assert!(loud_again(Some(Duration::from_secs(30)), longest), "again once the longest backoff passed");
    }
}
