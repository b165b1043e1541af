//! Analogue line monitor: reads the event frames of the `firmware/` board
//! from a serial port, turns each line's ring / answer / hang-up into call
//! events and spools them.
//!
//! Branch offices without an IP PBX still have analogue lines; the board
//! watches their ring, loop-current and polarity signals and reports one
//! frame per line event. This source is the agent's side of that link.
//!
//! # Wire
//!
//! The format is the firmware's own (`linemon` crate docs, "Frame format"),
//! and so is the decoder: [`linemon::frame::Deframer`] splits the byte
//! stream at `0x00` delimiters, COBS-decodes, checks length, CRC-16 and
//! version. Garbage on the line costs at most the frame it touches: the
//! next `0x00` resynchronises. Rejected frames are counted
//! (`callkpi_source_malformed_records_total`); the first of each device
//! session is logged at WARN, later ones at DEBUG. The bytes before the first
//! delimiter after an open are usually the tail of a frame and are skipped
//! silently.
//!
//! # Device
//!
//! The device is opened with `serialport` (8N1, no flow control, exclusive)
//! and its kernel input buffer is cleared, so no stale frame gets a fresh
//! timestamp. A dedicated thread does the blocking reads (a 200 ms poll
//! timeout lets it notice a stop) and timestamps each chunk as it arrives.
//! When the device vanishes (USB adapter unplugged: the read fails), cannot
//! be opened, or sends nothing for `silence_timeout_ms` (the board sends a
//! heartbeat every 10 s), the source logs it at WARN and reopens with
//! jittered exponential backoff. `callkpi_source_connected` is 1 while the
//! device is open; `callkpi_source_reconnects_total` counts reopens.
//!
//! # Board time → wall clock
//!
//! A frame's tick is the board's millisecond counter when the event
//! happened (not when it was sent). The first frame after each open anchors
//! it: `wall = arrival - tick`. Later ticks are extended across the 32-bit
//! wrap by their signed difference to the newest tick seen. Each
//! `Heartbeat` (sent at its own tick) checks the anchor: when the mapped
//! time is off the arrival by more than `clock_tolerance_ms`, the anchor
//! moves to the heartbeat. That corrects both the crystal's drift and a
//! first frame that was reported late (a hang-up is only certain 800 ms
//! after the on-hook). The mapped time is the event's `source_time`, which
//! KPIs use.
//!
//! # Sequence numbers: gaps and reboots
//!
//! `seq` counts every frame the board made, dropped ones included.
//! - A `seq` ahead of the expected one is a gap: the missing frames are
//!   counted (`callkpi_source_lost_records_total`) and logged at WARN. This
//!   includes frames sent while the device was unplugged.
//! - A `Boot` frame, a `seq` that goes back, or a tick more than a minute
//!   before the newest one (a restart whose `Boot` was lost) is a reboot:
//!   counted (`callkpi_source_device_restarts_total`), logged at WARN, the
//!   tick re-anchored at that frame, and calls in progress forgotten: the
//!   board lost them too, and the aggregator closes them as "unknown end".
//!
//! # From line events to call events
//!
//! Each configured line (`[[sources.linemon.lines]]`) has a queue, an
//! optional DID and an agent name (default `<source>-line<N>`). Call ids
//! are `<source>-line<N>-<start ms since the epoch>`, the leg id is
//! `<source>-line<N>`: the same frames always give the same ids, and no
//! two calls of a line share one. An analogue line has no caller id.
//!
//! | board event | call events (at the frame's mapped tick) |
//! |---|---|
//! | `Ringing` | `CallOffered` (inbound, called = DID), `QueueJoin`, `Ringing` (the line's agent) |
//! | `Answered { ring_ms }` | `Answered`, wait and ring time = `ring_ms` |
//! | `HungUp` (incoming) | `Hangup`, talk = the board's off-hook duration (none when a polarity clear ended the call before) |
//! | `Abandoned { ring_ms }` (missed ring) | `QueueLeave { abandon }` with wait = `ring_ms`, `OfferMissed { canceled }` |
//! | `OffHook` | `CallOffered` (outbound, caller = DID) |
//! | `HungUp` (outgoing) | `Hangup`; with `polarity`, unanswered: `DialResult { no_answer }` first |
//! | `Polarity` (line with `polarity = true`) | outgoing, first reversal: `DialResult { answered }` + `Answered`; a later one, or one during an answered incoming call: `Hangup { by: caller }` (an on-hook the board then reports as earlier than that clear adds `Hangup { by: agent }`, which the engine, ordering by time, keeps) |
//! | `Boot`, `Heartbeat` | none: clock, sequence and board status |
//! | `Flash`, unknown kinds, lines not configured, `Polarity` elsewhere | none; counted in `callkpi_source_unmapped_records_total` |
//!
//! Lost frames are bridged where the next frame says enough: an `Answered`
//! or `Abandoned` without its `Ringing` still opens the call at `tick -
//! ring_ms`; an incoming `HungUp` after a lost `Answered` places the answer
//! at `tick - duration`; an outgoing `HungUp` without its `OffHook` starts
//! the call at `tick - duration`. A call whose end was lost stays open and
//! is closed by the aggregator's unknown-end timeout.
//!
//! # Loss
//!
//! A serial line cannot replay: events are spooled with `replayable =
//! false` and, when the spool is at its byte cap, replace the oldest
//! events (counted in `callkpi_spool_dropped_events_total`). Frames sent
//! while the agent is stopped or the device is unplugged are never seen;
//! the sequence numbers tell how many.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use callkpi_core::event::{
    DialOutcome, Direction as CallDirection, EventKind, HangupBy, LeaveReason, MissReason, NANOS_PER_MS, SourceKind,
    UnixNanos,
};
use callkpi_feeds::{CaptureTime, FeedEvent};
use linemon::frame::{BOARD_LINE, Deframer, Direction, Event as BoardEvent, Frame};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info, info_span, warn};

use super::{Ended, EventSink, Reconnect, spool_lossy};
use crate::clock::Clock;
use crate::config::LinemonSourceConfig;
use crate::metrics::SourceMetrics;

/// How long one blocking read waits before checking for a stop.
const READ_POLL: Duration = Duration::from_millis(200);
/// Bytes read at once (the board sends at most ~11 KiB/s at 115200 baud).
const READ_BYTES: usize = 4096;
/// A tick this far (ms) before the newest one is a restart, not
/// reordering: events are reported late by at most a ring cycle plus the
/// ring timeout, a few seconds.
const REBOOT_TICK_BACK_MS: i64 = 60_000;

// === mapper ===

/// What [`LinemonMapper`] has seen, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinemonStats {
    /// Valid frames.
    pub frames: u64,
    /// Frames rejected by the decoder (COBS, length, CRC, version, payload).
    pub bad_frames: u64,
    /// Frames missing from the sequence numbers.
    pub lost_frames: u64,
    /// Board restarts detected while a session was known.
    pub reboots: u64,
    /// Valid frames that map to no call event (flash, unknown kinds, lines
    /// not configured, polarity on a line without `polarity`, a hang-up of a
    /// call whose start was never seen).
    pub unmapped: u64,
    /// Times a heartbeat moved the tick anchor.
    pub reanchors: u64,
}

/// Where a line's call is, as far as the agent knows.
#[derive(Debug, Clone, Default, PartialEq)]
enum CallState {
    #[default]
    Idle,
    /// Inbound, ringing since `start`.
    Ringing { call_id: String, start: UnixNanos },
    /// Inbound, answered at `at`; `cleared` when the caller's clear
    /// (polarity) ended the conversation.
    Talking { call_id: String, at: UnixNanos, cleared: Option<UnixNanos> },
    /// Outbound, off-hook; `connected` at the far end's answer and
    /// `cleared` at its clear (polarity).
    Outgoing { call_id: String, connected: Option<UnixNanos>, cleared: Option<UnixNanos> },
}

impl CallState {
    fn call_id(&self) -> Option<&str> {
        match self {
            Self::Idle => None,
            Self::Ringing { call_id, .. } | Self::Talking { call_id, .. } | Self::Outgoing { call_id, .. } => {
                Some(call_id)
            }
        }
    }
}

/// One configured line.
#[derive(Debug)]
struct Line {
    index: u8,
    queue: String,
    did: Option<String>,
    agent: String,
    polarity: bool,
    /// `<source>-line<N>`: leg id, trunk, call id prefix.
    label: String,
    call: CallState,
}

impl Line {
    fn event(&self, call_id: &str, at: UnixNanos, kind: EventKind) -> FeedEvent {
        FeedEvent { call_id: call_id.to_owned(), leg_id: self.label.clone(), source_time: Some(at), kind }
    }

    fn call_id(&self, start: UnixNanos) -> String {
        format!("{}-{}", self.label, start.div_euclid(NANOS_PER_MS))
    }

    /// Opens an inbound call ringing since `start`; returns its id.
    fn offer(&self, start: UnixNanos, out: &mut Vec<FeedEvent>) -> String {
        let id = self.call_id(start);
        let queue = self.queue.clone();
        out.push(self.event(
            &id,
            start,
            EventKind::CallOffered {
                direction: CallDirection::Inbound,
                caller: String::new(),
                called: self.did.clone().unwrap_or_default(),
                trunk: Some(self.label.clone()),
            },
        ));
        out.push(self.event(&id, start, EventKind::QueueJoin { queue: queue.clone(), caller: None, position: None }));
        out.push(self.event(&id, start, EventKind::Ringing { queue: Some(queue), agent: self.agent.clone() }));
        id
    }

    /// Opens an outbound call off-hook since `start`; returns its id.
    fn dial(&self, start: UnixNanos, out: &mut Vec<FeedEvent>) -> String {
        let id = self.call_id(start);
        out.push(self.event(
            &id,
            start,
            EventKind::CallOffered {
                direction: CallDirection::Outbound,
                caller: self.did.clone().unwrap_or_default(),
                called: String::new(),
                trunk: Some(self.label.clone()),
            },
        ));
        id
    }

    fn answered(&self, id: &str, at: UnixNanos, wait_ms: u64, out: &mut Vec<FeedEvent>) {
        out.push(self.event(
            id,
            at,
            EventKind::Answered {
                queue: Some(self.queue.clone()),
                agent: self.agent.clone(),
                reported_wait_ms: Some(wait_ms),
                reported_ring_ms: Some(wait_ms),
            },
        ));
    }

    fn hangup(&self, id: &str, at: UnixNanos, inbound: bool, by: HangupBy, talk_ms: Option<u64>) -> FeedEvent {
        self.event(
            id,
            at,
            EventKind::Hangup {
                queue: inbound.then(|| self.queue.clone()),
                agent: Some(self.agent.clone()),
                by,
                cause: None,
                reported_talk_ms: talk_ms,
            },
        )
    }

    fn dial_result(&self, id: &str, at: UnixNanos, outcome: DialOutcome) -> FeedEvent {
        self.event(
            id,
            at,
            EventKind::DialResult {
                agent: Some(self.agent.clone()),
                dialled: String::new(),
                trunk: Some(self.label.clone()),
                outcome,
                cause: None,
            },
        )
    }

    /// The call in progress, leaving the line idle.
    fn take(&mut self) -> CallState {
        std::mem::take(&mut self.call)
    }

    /// `call` will get no more events: the frame that would have ended it
    /// was lost (counted as a gap). The aggregator closes it as "unknown
    /// end" after its timeout.
    fn abandon(&self, call: &CallState) {
        if let Some(id) = call.call_id() {
            debug!(line = self.index, call_id = id, "Call left without its end.");
        }
    }
}

/// Board time of the current session.
#[derive(Debug, Clone, Copy)]
struct Session {
    /// Wall clock of extended tick 0, ns.
    offset: UnixNanos,
    /// Newest tick seen, and its extended value (ms, no wrap).
    newest_tick: u32,
    newest_ext: i64,
    /// The `seq` the next frame should carry.
    next_seq: u32,
    /// The device was reopened: anchor again at the next frame.
    reanchor: bool,
}

/// Who ended a conversation that the board reports on-hook at `at`:
/// unknown without a polarity clear; the local phone when its on-hook came
/// before the clear (the HungUp frame is sent 800 ms after the on-hook, so
/// it can arrive after the clear-back it caused: the engine keeps the
/// earlier hang-up); `None` when the far end's clear came first.
fn local_end(cleared: Option<UnixNanos>, at: UnixNanos) -> Option<HangupBy> {
    match cleared {
        None => Some(HangupBy::Unknown),
        Some(c) if at < c => Some(HangupBy::Agent),
        Some(_) => None,
    }
}

/// Duration in ms between two wall times, 0 when negative.
fn ms_between(from: UnixNanos, to: UnixNanos) -> u64 {
    u64::try_from((to - from).max(0) / NANOS_PER_MS).unwrap_or(0)
}

/// Board frames in, call events out: the sans-IO part of the source, with
/// the clock anchoring, sequence checks and per-line call state described
/// in the module docs. Arrival times are arguments, so it is tested without
/// a device.
#[derive(Debug)]
pub struct LinemonMapper {
    lines: BTreeMap<u8, Line>,
    tolerance_ns: i64,
    session: Option<Session>,
    stats: LinemonStats,
    /// Unconfigured lines already warned about.
    warned: BTreeSet<u8>,
    /// The board's own drop count, from its last heartbeat.
    board_dropped: u16,
}

impl LinemonMapper {
    /// A mapper for the lines of `config`.
    pub fn new(config: &LinemonSourceConfig) -> Self {
        let lines = config
            .lines
            .iter()
            .map(|l| {
                let line = Line {
                    index: l.line,
                    queue: l.queue.clone(),
                    did: l.did.clone(),
                    agent: config.agent_of(l),
                    polarity: l.polarity,
                    label: format!("{}-line{}", config.name, l.line),
                    call: CallState::Idle,
                };
                (l.line, line)
            })
            .collect();
        let tolerance_ns = i64::try_from(config.clock_tolerance_ms).unwrap_or(i64::MAX / NANOS_PER_MS) * NANOS_PER_MS;
        Self {
            lines,
            tolerance_ns,
            session: None,
            stats: LinemonStats::default(),
            warned: BTreeSet::new(),
            board_dropped: 0,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> LinemonStats {
        self.stats
    }

    /// Lines with a call in progress.
    pub fn calls_in_progress(&self) -> usize {
        self.lines.values().filter(|l| l.call != CallState::Idle).count()
    }

    /// The device was (re)opened: the next frame anchors the tick again.
    /// Calls in progress are kept, since the board may have gone on without
    /// a restart (an unplugged USB adapter); the next `seq` tells.
    pub fn reopened(&mut self) {
        if let Some(s) = &mut self.session {
            s.reanchor = true;
        }
    }

    /// Counts a frame the decoder rejected.
    pub fn bad_frame(&mut self) {
        self.stats.bad_frames += 1;
    }

    /// Maps one valid frame that arrived at `arrival` (wall clock, ns),
    /// appending its call events to `out`.
    pub fn push(&mut self, frame: &Frame, arrival: UnixNanos, out: &mut Vec<FeedEvent>) {
        self.stats.frames += 1;
        let ext = self.place(frame, arrival);
        match frame.event {
            BoardEvent::Boot { firmware: [major, minor, patch], lines, reset_cause } => {
                info!(firmware = %format_args!("{major}.{minor}.{patch}"), lines, reset_cause, "Line monitor booted.");
                for l in self.lines.keys().filter(|l| **l >= lines) {
                    warn!(line = l, board_lines = lines, "Configured line is not monitored by this board.");
                }
            }
            BoardEvent::Heartbeat { dropped, .. } => {
                self.heartbeat(ext, arrival);
                if dropped > self.board_dropped {
                    warn!(
                        dropped = dropped - self.board_dropped,
                        total = dropped,
                        "Line monitor dropped frames (its serial queue was full)."
                    );
                }
                self.board_dropped = dropped;
            }
            event => {
                let at = self.wall(ext);
                self.map_line(frame.line, event, at, out);
            }
        }
    }

    fn wall(&self, ext_ms: i64) -> UnixNanos {
        let offset = self.session.map_or(0, |s| s.offset);
        offset.saturating_add(ext_ms.saturating_mul(NANOS_PER_MS))
    }

    /// Checks `seq` and tick against the session, detects gaps and reboots,
    /// anchors when needed; returns the frame's extended tick (ms).
    fn place(&mut self, f: &Frame, arrival: UnixNanos) -> i64 {
        let boot = matches!(f.event, BoardEvent::Boot { .. });
        let Some(s) = &mut self.session else {
            if !boot && f.seq != 0 {
                info!(seq = f.seq, "Joined the line monitor mid-session.");
            }
            self.anchor(f, arrival);
            return i64::from(f.tick);
        };
        let dt = i64::from(f.tick.wrapping_sub(s.newest_tick) as i32);
        let ahead = f.seq.wrapping_sub(s.next_seq);
        let seq_back = ahead > u32::MAX / 2;
        if boot || seq_back || dt < -REBOOT_TICK_BACK_MS {
            let why = if boot {
                "boot frame"
            } else if seq_back {
                "sequence number went back"
            } else {
                "tick went back"
            };
            let open = self.lines.values_mut().map(|l| std::mem::take(&mut l.call)).filter(|c| c.call_id().is_some());
            let open = open.count();
            self.stats.reboots += 1;
            // A restarted board numbers from 0 (its Boot frame): a later
            // first frame means the ones before it were lost.
            self.stats.lost_frames += u64::from(f.seq);
            warn!(
                reason = why,
                seq = f.seq,
                calls_in_progress = open,
                "Line monitor restarted; calls in progress will end as unknown."
            );
            self.board_dropped = 0;
            self.anchor(f, arrival);
            return i64::from(f.tick);
        }
        if ahead > 0 {
            self.stats.lost_frames += u64::from(ahead);
            warn!(expected = s.next_seq, got = f.seq, lost = ahead, "Frames from the line monitor were lost.");
        }
        s.next_seq = f.seq.wrapping_add(1);
        let ext = s.newest_ext + dt;
        if dt > 0 {
            s.newest_tick = f.tick;
            s.newest_ext = ext;
        }
        if s.reanchor {
            s.reanchor = false;
            s.offset = arrival - ext * NANOS_PER_MS;
            debug!(seq = f.seq, "Board tick anchored again after reopening the device.");
        }
        ext
    }

    fn anchor(&mut self, f: &Frame, arrival: UnixNanos) {
        let ext = i64::from(f.tick);
        self.session = Some(Session {
            offset: arrival - ext * NANOS_PER_MS,
            newest_tick: f.tick,
            newest_ext: ext,
            next_seq: f.seq.wrapping_add(1),
            reanchor: false,
        });
    }

    /// A heartbeat is sent at its own tick: it measures the anchor's error.
    fn heartbeat(&mut self, ext: i64, arrival: UnixNanos) {
        let tolerance = self.tolerance_ns;
        let Some(s) = &mut self.session else { return };
        let sample = arrival - ext * NANOS_PER_MS;
        let error = sample - s.offset;
        if error.abs() > tolerance {
            s.offset = sample;
            self.stats.reanchors += 1;
            info!(moved_ms = error / NANOS_PER_MS, "Board tick re-anchored to the wall clock.");
        }
    }

    fn map_line(&mut self, index: u8, event: BoardEvent, at: UnixNanos, out: &mut Vec<FeedEvent>) {
        let Some(line) = self.lines.get_mut(&index) else {
            self.stats.unmapped += 1;
            if index != BOARD_LINE && self.warned.insert(index) {
                warn!(line = index, "Frames for a line that is not in [[sources.linemon.lines]] are ignored.");
            }
            return;
        };
        let mapped = match event {
            BoardEvent::Ringing { .. } => {
                line.abandon(&line.call);
                let call_id = line.offer(at, out);
                line.call = CallState::Ringing { call_id, start: at };
                true
            }
            BoardEvent::Answered { ring_ms, .. } => {
                let call_id = match line.take() {
                    CallState::Ringing { call_id, .. } => call_id,
                    other => {
                        line.abandon(&other);
                        line.offer(at - i64::from(ring_ms) * NANOS_PER_MS, out)
                    }
                };
                line.answered(&call_id, at, u64::from(ring_ms), out);
                line.call = CallState::Talking { call_id, at, cleared: None };
                true
            }
            BoardEvent::Abandoned { ring_ms, .. } => {
                let call_id = match line.take() {
                    CallState::Ringing { call_id, .. } => call_id,
                    other => {
                        line.abandon(&other);
                        line.offer(at - i64::from(ring_ms) * NANOS_PER_MS, out)
                    }
                };
                let (queue, wait) = (line.queue.clone(), u64::from(ring_ms));
                out.push(line.event(
                    &call_id,
                    at,
                    EventKind::QueueLeave {
                        queue: queue.clone(),
                        reason: LeaveReason::Abandon,
                        reported_wait_ms: Some(wait),
                    },
                ));
                out.push(line.event(
                    &call_id,
                    at,
                    EventKind::OfferMissed {
                        queue: Some(queue),
                        agent: line.agent.clone(),
                        reason: MissReason::Canceled,
                        reported_ring_ms: Some(wait),
                    },
                ));
                true
            }
            BoardEvent::HungUp { duration_ms, direction } => Self::hung_up(line, duration_ms, direction, at, out),
            BoardEvent::OffHook => {
                line.abandon(&line.call);
                let call_id = line.dial(at, out);
                line.call = CallState::Outgoing { call_id, connected: None, cleared: None };
                true
            }
            BoardEvent::Polarity { .. } if line.polarity => Self::polarity(line, at, out),
            BoardEvent::Polarity { .. }
            | BoardEvent::Flash { .. }
            | BoardEvent::Unknown { .. }
            | BoardEvent::Boot { .. }
            | BoardEvent::Heartbeat { .. } => false,
        };
        if !mapped {
            self.stats.unmapped += 1;
            debug!(line = index, kind = event.kind(), "Line event without a call mapping.");
        }
    }

    fn hung_up(
        line: &mut Line,
        duration_ms: u32,
        direction: Direction,
        at: UnixNanos,
        out: &mut Vec<FeedEvent>,
    ) -> bool {
        let start = at - i64::from(duration_ms) * NANOS_PER_MS;
        let talk = Some(u64::from(duration_ms));
        match (direction, line.take()) {
            (Direction::Incoming, CallState::Talking { call_id, cleared, .. }) => {
                if let Some(by) = local_end(cleared, at) {
                    out.push(line.hangup(&call_id, at, true, by, talk));
                }
                true
            }
            (Direction::Incoming, CallState::Ringing { call_id, start: ring_start }) => {
                // The Answered frame was lost: the off-hook was `duration` ago.
                line.answered(&call_id, start, ms_between(ring_start, start), out);
                out.push(line.hangup(&call_id, at, true, HangupBy::Unknown, talk));
                true
            }
            (Direction::Outgoing, CallState::Outgoing { call_id, connected, cleared }) => {
                Self::end_outgoing(line, &call_id, connected, cleared, at, out);
                true
            }
            (Direction::Outgoing, other) => {
                line.abandon(&other);
                let call_id = line.dial(start, out);
                Self::end_outgoing(line, &call_id, None, None, at, out);
                true
            }
            // An incoming call whose ringing was never seen (the agent
            // started during it), or one the board found off-hook at boot.
            (Direction::Incoming | Direction::Unknown, other) => {
                line.abandon(&other);
                false
            }
        }
    }

    fn end_outgoing(
        line: &Line,
        call_id: &str,
        connected: Option<UnixNanos>,
        cleared: Option<UnixNanos>,
        at: UnixNanos,
        out: &mut Vec<FeedEvent>,
    ) {
        match connected {
            Some(c) => {
                if let Some(by) = local_end(cleared, at) {
                    out.push(line.hangup(call_id, at, false, by, Some(ms_between(c, at))));
                }
            }
            None => {
                if line.polarity {
                    // No answer signalled: busy and no answer look the same
                    // on an analogue line.
                    out.push(line.dial_result(call_id, at, DialOutcome::NoAnswer));
                }
                out.push(line.hangup(call_id, at, false, HangupBy::Agent, None));
            }
        }
    }

    fn polarity(line: &mut Line, at: UnixNanos, out: &mut Vec<FeedEvent>) -> bool {
        line.call = match std::mem::take(&mut line.call) {
            CallState::Outgoing { call_id, connected: None, cleared } => {
                // The far end answered.
                out.push(line.dial_result(&call_id, at, DialOutcome::Answered));
                let answered = EventKind::Answered {
                    queue: None,
                    agent: line.agent.clone(),
                    reported_wait_ms: None,
                    reported_ring_ms: None,
                };
                out.push(line.event(&call_id, at, answered));
                CallState::Outgoing { call_id, connected: Some(at), cleared }
            }
            CallState::Outgoing { call_id, connected: Some(c), cleared: None } => {
                // The far end cleared.
                out.push(line.hangup(&call_id, at, false, HangupBy::Caller, Some(ms_between(c, at))));
                CallState::Outgoing { call_id, connected: Some(c), cleared: Some(at) }
            }
            CallState::Talking { call_id, at: answered, cleared: None } => {
                // The caller cleared; the local on-hook follows later.
                out.push(line.hangup(&call_id, at, true, HangupBy::Caller, Some(ms_between(answered, at))));
                CallState::Talking { call_id, at: answered, cleared: Some(at) }
            }
            other => {
                line.call = other;
                return false;
            }
        };
        true
    }
}

// === device ===

/// What the reader thread hands over.
#[derive(Debug)]
enum Chunk {
    /// Bytes, timestamped as they arrived.
    Bytes(Vec<u8>, CaptureTime),
    /// The read failed (device gone); the thread has ended.
    Failed(io::Error),
}

/// An open device and its reader thread.
#[derive(Debug)]
struct Device {
    rx: mpsc::Receiver<Chunk>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Device {
    async fn open(config: &LinemonSourceConfig, clock: Clock) -> io::Result<Device> {
        let path = config.device.to_string_lossy().into_owned();
        let baud = config.baud;
        let port = tokio::task::spawn_blocking(move || -> io::Result<Box<dyn serialport::SerialPort>> {
            let port = serialport::new(path, baud)
                .data_bits(serialport::DataBits::Eight)
                .parity(serialport::Parity::None)
                .stop_bits(serialport::StopBits::One)
                .flow_control(serialport::FlowControl::None)
                .timeout(READ_POLL)
                .open()?;
            // Bytes buffered before this open would get a fresh timestamp.
            port.clear(serialport::ClearBuffer::Input)?;
            Ok(port)
        })
        .await
        .map_err(io::Error::other)??;
        let (tx, rx) = mpsc::channel(64);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("linemon-read".to_owned())
            .spawn(move || read_thread(port, &tx, &thread_stop, clock))?;
        Ok(Device { rx, stop, thread: Some(thread) })
    }

    /// Stops the reader and waits (bounded) until it has closed the port,
    /// so a reopen does not find it still locked.
    async fn close(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.rx.close();
        if let Some(thread) = self.thread.take() {
            let join = tokio::task::spawn_blocking(move || thread.join());
            if tokio::time::timeout(READ_POLL * 5, join).await.is_err() {
                warn!("Line monitor reader thread did not stop in time.");
            }
        }
    }
}

/// Blocking reads until a failure, a stop, or the receiver going away.
fn read_thread(mut port: Box<dyn serialport::SerialPort>, tx: &mpsc::Sender<Chunk>, stop: &AtomicBool, clock: Clock) {
    let mut buf = vec![0u8; READ_BYTES];
    while !stop.load(Ordering::Relaxed) {
        match port.read(&mut buf) {
            Ok(0) => {
                let _ = tx.blocking_send(Chunk::Failed(io::Error::new(io::ErrorKind::UnexpectedEof, "device closed")));
                return;
            }
            Ok(n) => {
                let captured = clock.capture();
                if tx.blocking_send(Chunk::Bytes(buf[..n].to_vec(), captured)).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {}
            Err(e) => {
                let _ = tx.blocking_send(Chunk::Failed(e));
                return;
            }
        }
    }
}

// === source ===

/// Why a device session ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    /// The agent is shutting down.
    #[error("shutdown")]
    Shutdown,
    /// The device could not be opened.
    #[error("cannot open: {0}")]
    Open(#[source] io::Error),
    /// Reading failed: unplugged, or the port closed under us.
    #[error("read failed: {0}")]
    Lost(#[source] io::Error),
    /// Nothing at all for the silence timeout; `heard` when something came
    /// before it in this session.
    #[error("no byte for {ms} ms")]
    Silent { ms: u64, heard: bool },
}

/// One configured line monitor board.
#[derive(Debug)]
pub struct LinemonSource<S> {
    config: LinemonSourceConfig,
    sink: S,
    clock: Clock,
    metrics: SourceMetrics,
    mapper: LinemonMapper,
    /// Mapper counters already added to the metrics.
    reported: LinemonStats,
    /// Bad frames logged at WARN in this device session.
    warned_bad: bool,
}

impl<S: EventSink> LinemonSource<S> {
    /// A reader of `config`'s device, spooling into `sink`.
    pub fn new(config: LinemonSourceConfig, sink: S, clock: Clock, metrics: SourceMetrics) -> Self {
        let mapper = LinemonMapper::new(&config);
        Self { config, sink, clock, metrics, mapper, reported: LinemonStats::default(), warned_bad: false }
    }

    /// Opens, reads and reopens the device until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = info_span!(
            "source",
            kind = "linemon",
            name = %self.config.name,
            device = %self.config.device.display()
        );
        self.run_inner(shutdown).instrument(span).await;
    }

    async fn run_inner(mut self, shutdown: CancellationToken) {
        info!(lines = self.config.lines.len(), "Line monitor source started.");
        let mut reconnect =
            Reconnect::new(SourceKind::LineMonitor, self.config.backoff_initial_ms, self.config.backoff_max_ms);
        let mut open_failures = 0u64;
        // The last session heard nothing at all: a dead or unpowered board
        // is logged once, not at every reopen.
        let mut mute = false;
        loop {
            let opened = tokio::select! {
                r = Device::open(&self.config, self.clock) => r,
                () = shutdown.cancelled() => break,
            };
            let end = match opened {
                Ok(device) => {
                    info!(baud = self.config.baud, "Line monitor device opened.");
                    open_failures = 0;
                    reconnect.started(&self.metrics);
                    self.mapper.reopened();
                    self.warned_bad = false;
                    let end = self.session(device, &shutdown).await;
                    self.metrics.connected.set(0);
                    end
                }
                Err(e) => SessionEnd::Open(e),
            };
            match &end {
                SessionEnd::Shutdown => break,
                SessionEnd::Open(_) => {
                    open_failures += 1;
                    // Logged once per outage; the retries in between at DEBUG.
                    if open_failures == 1 {
                        warn!(error = %end, "Line monitor device unavailable; retrying.");
                    } else {
                        debug!(error = %end, attempts = open_failures, "Line monitor device still unavailable.");
                    }
                }
                SessionEnd::Lost(_) => {
                    warn!(
                        error = %end,
                        calls_in_progress = self.mapper.calls_in_progress(),
                        "Line monitor device lost; reopening (frames until then are not seen)."
                    );
                }
                SessionEnd::Silent { heard, .. } => {
                    if *heard || !mute {
                        warn!(error = %end, "Line monitor silent (no heartbeat); reopening the device. Is the board powered?");
                    } else {
                        debug!(error = %end, "Line monitor still silent.");
                    }
                }
            }
            mute = matches!(end, SessionEnd::Silent { heard: false, .. });
            // The device's own messages above say more than a generic line.
            if !reconnect.retry(Ended::Failed, &shutdown).await {
                break;
            }
        }
        info!("Line monitor source stopped.");
    }

    /// Reads one open device until it fails, falls silent or shutdown.
    async fn session(&mut self, mut device: Device, shutdown: &CancellationToken) -> SessionEnd {
        let mut deframer = Deframer::new();
        // Bytes before the first delimiter are usually a frame's tail.
        let mut synced = false;
        let silence =
            (self.config.silence_timeout_ms > 0).then(|| Duration::from_millis(self.config.silence_timeout_ms));
        let mut last_byte = Instant::now();
        let mut heard = false;
        let end = loop {
            let silent = async {
                match silence {
                    Some(d) => tokio::time::sleep_until(last_byte + d).await,
                    None => std::future::pending().await,
                }
            };
            let chunk = tokio::select! {
                c = device.rx.recv() => c,
                () = silent => break SessionEnd::Silent { ms: self.config.silence_timeout_ms, heard },
                () = shutdown.cancelled() => break SessionEnd::Shutdown,
            };
            match chunk {
                Some(Chunk::Bytes(bytes, captured)) => {
                    last_byte = Instant::now();
                    heard = true;
                    self.metrics.read_bytes.inc_by(bytes.len() as u64);
                    let events = self.deframe(&mut deframer, &mut synced, &bytes, captured.wall);
                    self.report_stats();
                    if !events.is_empty() {
                        self.spool(events, captured).await;
                    }
                }
                Some(Chunk::Failed(e)) => break SessionEnd::Lost(e),
                None => break SessionEnd::Lost(io::Error::other("reader thread ended")),
            }
        };
        device.close().await;
        end
    }

    fn deframe(&mut self, deframer: &mut Deframer, synced: &mut bool, bytes: &[u8], wall: UnixNanos) -> Vec<FeedEvent> {
        let mut events = Vec::new();
        for &b in bytes {
            match deframer.push(b) {
                None => {}
                Some(Ok(frame)) => self.mapper.push(&frame, wall, &mut events),
                Some(Err(e)) if !*synced => debug!(error = %e, "Partial frame at open skipped."),
                Some(Err(e)) => {
                    self.mapper.bad_frame();
                    if self.warned_bad {
                        debug!(error = %e, "Bad frame from the line monitor skipped.");
                    } else {
                        self.warned_bad = true;
                        warn!(
                            error = %e,
                            "Bad frame from the line monitor skipped (noise on the serial line, or a baud rate or firmware mismatch); further ones are logged at DEBUG."
                        );
                    }
                }
            }
            *synced |= b == 0;
        }
        events
    }

    fn report_stats(&mut self) {
        let now = self.mapper.stats();
        let was = self.reported;
        self.metrics.malformed.inc_by(now.bad_frames - was.bad_frames);
        self.metrics.unmapped.inc_by(now.unmapped - was.unmapped);
        self.metrics.lost.inc_by(now.lost_frames - was.lost_frames);
        self.metrics.device_restarts.inc_by(now.reboots - was.reboots);
        self.reported = now;
    }

    async fn spool(&mut self, events: Vec<FeedEvent>, captured: CaptureTime) {
        spool_lossy(&self.sink, &self.metrics, SourceKind::LineMonitor, events, captured).await;
    }
}
