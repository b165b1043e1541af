//! Sans-IO parsers of PBX feeds: bytes in, normalised [`callkpi_core::event`] kinds out.
//!
//! Every parser follows the same contract, after httparse and mini-redis:
//! the caller owns the buffer and the read loop; a parser looks at `&[u8]`
//! and answers [`Status::Complete`] with the number of bytes it consumed,
//! [`Status::Partial`] when it needs more bytes (never an error), or a small
//! `Copy` error with the byte offset. Parsers never panic on any input.
//!
//! Mappers sit on top of parsers: they keep the little per-feed state a
//! protocol needs (open calls, channel to call maps) and turn parsed records
//! into [`FeedEvent`]s. Anything they do not understand is counted in
//! [`Unparsed`], never fatal.
//!
//! # Layout
//! - [`queue_log`]: Asterisk queue_log, pipe-separated file and DB-export CSV.
//! - [`ami`]: Asterisk Manager Interface framing and call-centre event mapping.
//! - [`esl`]: FreeSWITCH event socket framing, login client and call-centre event mapping.
//! - [`hep`]: HEPv3 (and v1/v2) decoding, and pcap/pcapng/raw capture files of it.
//! - [`sip`]: SIP message parser and the dialog tracker mapping calls seen in HEP.

pub mod ami;
pub mod esl;
pub mod hep;
pub mod queue_log;
pub mod sip;

use std::collections::BTreeMap;

use callkpi_core::event::{Event, EventId, EventKind, EventTime, SourceKind, UnixNanos};

/// Result of looking at a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status<T> {
    /// A whole item, and how many bytes of the buffer it used.
    Complete {
        /// The parsed item.
        value: T,
        /// Bytes consumed from the start of the buffer.
        consumed: usize,
    },
    /// Not enough bytes yet: read more and call again with the longer buffer.
    Partial,
}

/// An event as a feed sees it, before the spool gives it an identity.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    /// PBX call identity (see [`Event::call_id`]).
    pub call_id: String,
    /// Leg identity (see [`Event::leg_id`]).
    pub leg_id: String,
    /// The source's own timestamp, when it has one.
    pub source_time: Option<UnixNanos>,
    /// What happened.
    pub kind: EventKind,
}

impl FeedEvent {
    /// Gives the event its identity and capture metadata.
    pub fn into_event(self, id: EventId, site: &str, source: SourceKind, time: CaptureTime) -> Event {
        Event {
            id,
            site: site.to_owned(),
            source,
            call_id: self.call_id,
            leg_id: self.leg_id,
            time: EventTime {
                captured_at: time.wall,
                monotonic: time.monotonic,
                source_time: self.source_time,
                clock_synced: time.clock_synced,
            },
            kind: self.kind,
        }
    }
}

/// The capturing host's clocks when bytes were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureTime {
    /// Wall clock, ns since the epoch.
    pub wall: UnixNanos,
    /// Monotonic clock, ns.
    pub monotonic: u64,
    /// Whether the wall clock was synchronised.
    pub clock_synced: bool,
}

/// Counts of input a mapper did not turn into events, by verb or event name.
///
/// Reported by `callkpi analyze` under `"unparsed"` and by the agent as a metric.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unparsed {
    /// Recognised records whose verb/event is not mapped, by name.
    pub by_name: BTreeMap<String, u64>,
    /// Records that could not be parsed at all.
    pub malformed: u64,
}

impl Unparsed {
    /// Counts one record named `name` that was not mapped.
    pub fn count(&mut self, name: &str) {
        *self.by_name.entry(name.to_owned()).or_insert(0) += 1;
    }
}
