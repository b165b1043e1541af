//! A host-side line monitor board for tests: simulated line signals go
//! through the firmware's own state machine (`linemon::line::LineMonitor`,
//! one per line, stepped every millisecond) and framer
//! (`linemon::report::Reporter`), so the frames are the ones a real board
//! would send for those calls. Also: wire faults (garbage, a corrupt frame,
//! a frame of another version) and a pseudo-terminal standing in for the
//! USB serial adapter.
//!
//! Shared by the agent's integration tests and the workspace end-to-end
//! test (`tests/tests/linemon.rs` includes this file by path); each uses
//! part of it.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use callkpi_core::event::{
    Direction as CallDirection, Event as CallEvent, EventKind, HangupBy, LeaveReason, MissReason,
};
use linemon::frame::{CRC, Deframer, Frame, MAX_FRAME_LEN};
use linemon::line::{LineConfig, LineMonitor, Sample};
use linemon::report::Reporter;
use linemon::{Cadence, Event};
use serialport::SerialPort as _;

/// French cadence: 1.5 s of ring, 3.5 s of pause.
pub(crate) const RING_ON_MS: u32 = 1_500;
/// One cadence cycle.
pub(crate) const RING_CYCLE_MS: u32 = 5_000;
/// The board's ring-start estimate is within this of the first burst (ms).
pub(crate) const RING_TOLERANCE_MS: i64 = 60;

/// What happens on one line, in board milliseconds since boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    /// Rings (FR cadence) from `start`, picked up at `answer` (ringing
    /// stops), put down at `hangup`.
    Answered { line: u8, start: u32, answer: u32, hangup: u32 },
    /// Rings `bursts` bursts from `start`, then the caller gives up.
    Abandoned { line: u8, start: u32, bursts: u32 },
    /// Off-hook at `start`, the far end answers (polarity reversal) at
    /// `connect` and hangs up (polarity back to normal) at `clear`, then
    /// the local phone goes on-hook at `hangup`.
    Outgoing { line: u8, start: u32, connect: u32, clear: u32, hangup: u32 },
}

impl Call {
    /// The line.
    pub(crate) fn line(&self) -> u8 {
        match *self {
            Call::Answered { line, .. } | Call::Abandoned { line, .. } | Call::Outgoing { line, .. } => line,
        }
    }

    /// When the call starts (first ring or off-hook).
    pub(crate) fn start(&self) -> u32 {
        match *self {
            Call::Answered { start, .. } | Call::Abandoned { start, .. } | Call::Outgoing { start, .. } => start,
        }
    }

    /// The caller's wait: start of ringing to answer, or to the end of the
    /// last burst for an abandon (the board's estimate of when they gave up).
    pub(crate) fn wait_ms(&self) -> Option<u32> {
        match *self {
            Call::Answered { start, answer, .. } => Some(answer - start),
            Call::Abandoned { bursts, .. } => Some((bursts - 1) * RING_CYCLE_MS + RING_ON_MS),
            Call::Outgoing { .. } => None,
        }
    }

    /// Talk time.
    pub(crate) fn talk_ms(&self) -> Option<u32> {
        match *self {
            Call::Answered { answer, hangup, .. } => Some(hangup - answer),
            Call::Outgoing { connect, clear, .. } => Some(clear - connect),
            Call::Abandoned { .. } => None,
        }
    }

    /// Whether ringing is on at `t` (before an answer).
    fn ringing(start: u32, bursts: u32, until: u32, t: u32) -> bool {
        if t < start || t >= until {
            return false;
        }
        let since = t - start;
        since / RING_CYCLE_MS < bursts && since % RING_CYCLE_MS < RING_ON_MS
    }

    /// This call's contribution to its line's inputs at `t`.
    fn inputs(&self, t: u32, s: &mut Sample) {
        let ring_on = match *self {
            Call::Answered { start, answer, .. } => Call::ringing(start, u32::MAX, answer, t),
            Call::Abandoned { start, bursts, .. } => Call::ringing(start, bursts, u32::MAX, t),
            Call::Outgoing { .. } => false,
        };
        // 25 Hz ring voltage through a half-wave opto: a 14 ms pulse every 40 ms.
        if ring_on && (t - self.start()) % 40 < 14 {
            s.ring = true;
        }
        match *self {
            Call::Answered { answer, hangup, .. } if (answer..hangup).contains(&t) => s.off_hook = true,
            Call::Outgoing { start, connect, clear, hangup, .. } => {
                s.off_hook |= (start..hangup).contains(&t);
                s.reversed |= (connect..clear).contains(&t);
            }
            _ => {}
        }
    }
}

/// Boots a board with `lines` lines (every line follows the FR cadence and
/// has its polarity input wired), runs it for `until_ms` and returns the
/// frames it sends, in order: `Boot` (seq 0), then the line events.
pub(crate) fn run_board(lines: u8, calls: &[Call], until_ms: u32) -> Vec<Frame> {
    let mut config = LineConfig::for_cadence(Cadence::FR);
    config.polarity = true;
    let mut monitors: Vec<LineMonitor> = (0..lines).map(|_| LineMonitor::new(config)).collect();
    // No heartbeats: the tests send board time faster than real time.
    let mut reporter = Reporter::<8192>::new(0);
    reporter.boot(0, [1, 0, 0], lines, 1);
    let mut deframer = Deframer::new();
    let mut frames = Vec::new();
    for t in 0..until_ms {
        for (i, monitor) in monitors.iter_mut().enumerate() {
            let line = u8::try_from(i).expect("few lines");
            let mut sample = Sample::default();
            for c in calls.iter().filter(|c| c.line() == line) {
                c.inputs(t, &mut sample);
            }
            for event in monitor.step(t, sample) {
                reporter.report(line, event);
            }
        }
        while let Some(b) = reporter.pop() {
            if let Some(frame) = deframer.push(b) {
                frames.push(frame.expect("the board's own frames decode"));
            }
        }
    }
    assert_eq!(reporter.dropped(), 0, "the simulated board dropped frames");
    frames
}

/// The frames of one line, by kind byte.
pub(crate) fn kinds_of_line(frames: &[Frame], line: u8) -> Vec<u8> {
    frames.iter().filter(|f| f.line == line).map(|f| f.event.kind()).collect()
}

/// Index of the first frame of `line` whose event satisfies `pred`, at or after tick `from`.
pub(crate) fn find(frames: &[Frame], line: u8, from: u32, pred: impl Fn(&Event) -> bool) -> usize {
    frames
        .iter()
        .position(|f| f.line == line && f.tick >= from && pred(&f.event))
        .unwrap_or_else(|| panic!("no such frame on line {line} after {from}: {frames:?}"))
}

/// One frame on the wire: COBS bytes and the `0x00` delimiter.
pub(crate) fn encode(frame: &Frame) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME_LEN];
    let n = frame.encode(&mut buf).expect("frame fits");
    buf[..n].to_vec()
}

/// The frame with one byte of its middle altered (never into `0x00`), so
/// its CRC no longer matches.
pub(crate) fn corrupt(frame: &Frame) -> Vec<u8> {
    let mut bytes = encode(frame);
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == 0x80 { 0x81 } else { bytes[i] ^ 0x80 };
    bytes
}

/// A well-formed frame (valid COBS and CRC) of protocol version 2, which
/// this version of the agent must refuse.
pub(crate) fn version_2_frame(seq: u32, tick: u32) -> Vec<u8> {
    let mut raw = vec![2, 0x05, 0];
    raw.extend_from_slice(&seq.to_le_bytes());
    raw.extend_from_slice(&tick.to_le_bytes());
    let crc = CRC.checksum(&raw).to_le_bytes();
    raw.extend_from_slice(&crc);
    let mut out = cobs_encode(&raw);
    out.push(0);
    out
}

/// COBS, for the hand-made frame above (the firmware's encoder only
/// writes version 1).
fn cobs_encode(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    let mut code_at = 0;
    for &b in raw {
        if b == 0 {
            out[code_at] = u8::try_from(out.len() - code_at).expect("short block");
            code_at = out.len();
            out.push(0);
        } else {
            out.push(b);
            if out.len() - code_at == 0xFF {
                out[code_at] = 0xFF;
                code_at = out.len();
                out.push(0);
            }
        }
    }
    out[code_at] = u8::try_from(out.len() - code_at).expect("short block");
    out
}

/// Line noise: bytes that are no frame, ending with a delimiter so the
/// next real frame is intact (noise inside a frame is [`corrupt`]).
pub(crate) fn garbage() -> Vec<u8> {
    let mut g = vec![0x13, 0x37, 0xFF, 0x00, 0x42, 0x00, 0x00];
    g.extend((0..40u8).map(|i| i.wrapping_mul(37) | 1));
    g.push(0);
    g
}

/// A pseudo-terminal standing in for the board's USB serial adapter, with
/// a stable path (a symlink, like `/dev/serial/by-id/...`) that can be
/// unplugged and plugged again.
pub(crate) struct FakeSerial {
    link: PathBuf,
    pty: Option<(serialport::TTYPort, serialport::TTYPort)>,
}

impl FakeSerial {
    /// A link at `link`, with nothing behind it yet.
    pub(crate) fn unplugged(link: &Path) -> FakeSerial {
        FakeSerial { link: link.to_owned(), pty: None }
    }

    /// A link at `link` to a fresh pseudo-terminal.
    pub(crate) fn plugged(link: &Path) -> FakeSerial {
        let mut s = FakeSerial::unplugged(link);
        s.plug();
        s
    }

    /// The device path to configure.
    pub(crate) fn path(&self) -> &Path {
        &self.link
    }

    /// Creates a pseudo-terminal and points the link at its device side.
    pub(crate) fn plug(&mut self) {
        let (mut master, slave) = serialport::TTYPort::pair().expect("a pseudo-terminal");
        master.set_timeout(Duration::from_secs(5)).expect("timeout");
        let target = slave.name().expect("pty path");
        let tmp = self.link.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).expect("symlink");
        std::fs::rename(&tmp, &self.link).expect("replace the link");
        // The test keeps the device side open too, so the pty lives while
        // the agent reopens it.
        self.pty = Some((master, slave));
    }

    /// Closes the pseudo-terminal: the agent's reads fail, as when a USB
    /// adapter is pulled out.
    pub(crate) fn unplug(&mut self) {
        self.pty = None;
    }

    /// Writes bytes as the board would, in small chunks with short pauses
    /// (at 115200 baud a frame takes about 2 ms).
    pub(crate) fn send(&mut self, bytes: &[u8]) {
        let (master, _) = self.pty.as_mut().expect("plugged");
        for chunk in bytes.chunks(64) {
            master.write_all(chunk).expect("write to the pty");
            std::thread::sleep(Duration::from_millis(2));
        }
        master.flush().expect("flush");
    }
}

// === the scenario of the end-to-end tests ===

/// Line 0: queue, number; its agent takes the default name.
pub(crate) const QUEUE_0: &str = "accueil";
/// Line 0's DID.
pub(crate) const DID_0: &str = "+33140000000";
/// Line 1: queue, number, agent; its polarity input is wired.
pub(crate) const QUEUE_1: &str = "sav";
/// Line 1's DID.
pub(crate) const DID_1: &str = "+33140000001";
/// Line 1's agent.
pub(crate) const AGENT_1: &str = "sav-poste";
/// Line 0's agent: the default `<source>-line0`.
pub(crate) const AGENT_0: &str = "linemon-line0";

/// The `[[sources.linemon.lines]]` of the scenario.
pub(crate) fn lines_toml() -> String {
    format!(
        "[[sources.linemon.lines]]\nline = 0\nqueue = \"{QUEUE_0}\"\ndid = \"{DID_0}\"\n\
         [[sources.linemon.lines]]\nline = 1\nqueue = \"{QUEUE_1}\"\ndid = \"{DID_1}\"\nagent = \"{AGENT_1}\"\npolarity = true\n"
    )
}

/// The first board session: calls A to F.
pub(crate) const SESSION_1: [Call; 6] = [
    // A: answered in the pause after two bursts, 30 s of talk.
    Call::Answered { line: 0, start: 1_000, answer: 8_000, hangup: 38_000 },
    // B: three bursts, then the caller gives up (its Ringing frame is lost).
    Call::Abandoned { line: 1, start: 3_000, bursts: 3 },
    // D: an outgoing call, answered by the far end, which hangs up first.
    Call::Outgoing { line: 1, start: 22_000, connect: 28_000, clear: 48_000, hangup: 50_000 },
    // C: picked up during the first burst.
    Call::Answered { line: 0, start: 45_000, answer: 46_000, hangup: 56_000 },
    // E: one burst only: a short abandon.
    Call::Abandoned { line: 0, start: 60_000, bursts: 1 },
    // F: answered after two bursts (its Answered frame arrives corrupt).
    Call::Answered { line: 1, start: 62_000, answer: 71_000, hangup: 80_000 },
];
/// Board time the first session runs for.
pub(crate) const SESSION_1_MS: u32 = 85_000;
/// After the board rebooted: calls G and H.
pub(crate) const SESSION_2: [Call; 2] = [
    Call::Answered { line: 0, start: 2_000, answer: 5_000, hangup: 20_000 },
    Call::Abandoned { line: 1, start: 4_000, bursts: 2 },
];
/// Board time the second session runs for.
pub(crate) const SESSION_2_MS: u32 = 25_000;

/// The scenario's bytes: session 1 with line noise, a frame of protocol
/// version 2, B's Ringing frame lost and F's Answered frame corrupt; then
/// the board reboots and session 2 follows.
#[derive(Debug)]
pub(crate) struct Scenario {
    /// What goes on the wire, piece by piece.
    pub(crate) wire: Vec<Vec<u8>>,
    /// The valid frames among them, in order.
    pub(crate) delivered: Vec<Frame>,
    /// Frames the agent must reject.
    pub(crate) bad_frames: u64,
    /// Frames missing from the sequence numbers.
    pub(crate) lost_frames: u64,
}

pub(crate) fn scenario() -> Scenario {
    let s1 = run_board(2, &SESSION_1, SESSION_1_MS);
    let s2 = run_board(2, &SESSION_2, SESSION_2_MS);
    let lost = find(&s1, 1, 0, |e| matches!(e, Event::Ringing { .. }));
    let corrupted = find(&s1, 1, 60_000, |e| matches!(e, Event::Answered { .. }));
    let mut wire = Vec::new();
    let mut delivered = Vec::new();
    for (i, f) in s1.iter().enumerate() {
        if i == 3 {
            wire.push(garbage()); // three bad frames
        }
        if i == 5 {
            wire.push(version_2_frame(f.seq, f.tick));
        }
        if i == lost {
            continue;
        }
        if i == corrupted {
            wire.push(corrupt(f));
            continue;
        }
        wire.push(encode(f));
        delivered.push(*f);
    }
    for f in &s2 {
        wire.push(encode(f));
        delivered.push(*f);
    }
    Scenario { wire, delivered, bad_frames: 3 + 1 + 1, lost_frames: 2 }
}

/// Short name of an event kind.
fn kind(e: &CallEvent) -> &'static str {
    match &e.kind {
        EventKind::CallOffered { .. } => "offered",
        EventKind::QueueJoin { .. } => "join",
        EventKind::QueueLeave { .. } => "leave",
        EventKind::Ringing { .. } => "ringing",
        EventKind::OfferMissed { .. } => "missed",
        EventKind::Answered { .. } => "answered",
        EventKind::Hangup { .. } => "hangup",
        EventKind::DialResult { .. } => "dial",
        _ => "other",
    }
}

fn ms(ns: i64) -> i64 {
    ns / 1_000_000
}

/// The reported wait of a stored call (answer or abandon), ms.
fn reported_wait(events: &[&CallEvent]) -> Option<i64> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::Answered { reported_wait_ms: Some(w), .. }
        | EventKind::QueueLeave { reported_wait_ms: Some(w), .. } => i64::try_from(*w).ok(),
        _ => None,
    })
}

/// Checks the call events the scenario must give, as spooled by the agent
/// or stored by the aggregator: every call, its events in time order, its
/// queue, DID and agent, its wait and talk against the simulation's truth,
/// and the time between calls of one board session.
pub(crate) fn assert_scenario_events(events: &[CallEvent]) {
    let mut by_call: std::collections::BTreeMap<&str, Vec<&CallEvent>> = std::collections::BTreeMap::new();
    for e in events {
        assert_eq!(e.source, callkpi_core::event::SourceKind::LineMonitor);
        assert!(e.time.source_time.is_some(), "{e:?}");
        by_call.entry(e.call_id.as_str()).or_default().push(e);
    }
    for evs in by_call.values_mut() {
        evs.sort_by_key(|e| (e.kpi_time(), e.id.seq));
    }
    assert_eq!(by_call.len(), SESSION_1.len() + SESSION_2.len(), "one call id per call: {:#?}", by_call.keys());
    let expected: Vec<(u8, Call)> =
        SESSION_1.iter().map(|c| (1, *c)).chain(SESSION_2.iter().map(|c| (2, *c))).collect();
    // Session anchors: each session's first call gives its board tick 0.
    let mut anchor: [Option<i64>; 3] = [None; 3];
    for (session, call) in &expected {
        let line = call.line();
        let leg = format!("linemon-line{line}");
        let (queue, did, agent) = if line == 0 { (QUEUE_0, DID_0, AGENT_0) } else { (QUEUE_1, DID_1, AGENT_1) };
        let candidates: Vec<&Vec<&CallEvent>> = by_call
            .values()
            .filter(|evs| evs[0].leg_id == leg)
            .filter(|evs| match call.wait_ms() {
                Some(w) => reported_wait(evs).is_some_and(|got| (got - i64::from(w)).abs() <= RING_TOLERANCE_MS),
                None => evs
                    .iter()
                    .any(|e| matches!(e.kind, EventKind::CallOffered { direction: CallDirection::Outbound, .. })),
            })
            .collect();
        assert_eq!(candidates.len(), 1, "exactly one stored call for {call:?}: {candidates:#?}");
        let evs = candidates[0];
        assert!(evs.iter().all(|e| e.call_id.starts_with(&format!("{leg}-"))), "{evs:#?}");
        let kinds: Vec<&str> = evs.iter().map(|e| kind(e)).collect();
        let at = |k: &str| evs.iter().find(|e| kind(e) == k).map(|e| e.kpi_time()).expect(k);
        match *call {
            Call::Answered { .. } => {
                assert_eq!(kinds, ["offered", "join", "ringing", "answered", "hangup"], "{call:?}");
                let wait = reported_wait(evs).expect("wait");
                assert_eq!(ms(at("answered") - at("offered")), wait, "{call:?}: answer time = offer + wait");
                for e in evs {
                    match &e.kind {
                        EventKind::CallOffered { direction, called, caller, .. } => {
                            assert_eq!(
                                (*direction, called.as_str(), caller.as_str()),
                                (CallDirection::Inbound, did, "")
                            );
                        }
                        EventKind::QueueJoin { queue: q, .. } => assert_eq!(q, queue),
                        EventKind::Ringing { queue: q, agent: a } => {
                            assert_eq!((q.as_deref(), a.as_str()), (Some(queue), agent));
                        }
                        EventKind::Answered { queue: q, agent: a, reported_ring_ms, .. } => {
                            assert_eq!((q.as_deref(), a.as_str()), (Some(queue), agent));
                            assert_eq!(reported_ring_ms.map(|r| r as i64), Some(wait));
                        }
                        EventKind::Hangup { queue: q, agent: a, by, reported_talk_ms, .. } => {
                            assert_eq!(
                                (q.as_deref(), a.as_deref(), *by),
                                (Some(queue), Some(agent), HangupBy::Unknown)
                            );
                            assert_eq!(*reported_talk_ms, call.talk_ms().map(u64::from), "{call:?}: talk");
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                assert_eq!(ms(at("hangup") - at("answered")), i64::from(call.talk_ms().unwrap_or(0)), "{call:?}");
            }
            Call::Abandoned { .. } => {
                assert_eq!(kinds, ["offered", "join", "ringing", "leave", "missed"], "{call:?}");
                let wait = reported_wait(evs).expect("wait");
                assert_eq!(ms(at("leave") - at("offered")), wait, "{call:?}: give-up time = offer + wait");
                for e in evs {
                    match &e.kind {
                        EventKind::QueueLeave { queue: q, reason, .. } => {
                            assert_eq!((q.as_str(), *reason), (queue, LeaveReason::Abandon));
                        }
                        EventKind::OfferMissed { agent: a, reason, reported_ring_ms, .. } => {
                            assert_eq!((a.as_str(), *reason), (agent, MissReason::Canceled));
                            assert_eq!(reported_ring_ms.map(|r| r as i64), Some(wait));
                        }
                        _ => {}
                    }
                }
            }
            Call::Outgoing { start, connect, .. } => {
                assert_eq!(kinds, ["offered", "dial", "answered", "hangup"], "{call:?}");
                let near = |a: i64, b: u32| (a - i64::from(b)).abs() <= RING_TOLERANCE_MS;
                assert!(near(ms(at("answered") - at("offered")), connect - start), "{call:?}: {evs:#?}");
                for e in evs {
                    match &e.kind {
                        EventKind::CallOffered { direction, caller, .. } => {
                            assert_eq!((*direction, caller.as_str()), (CallDirection::Outbound, did));
                        }
                        EventKind::DialResult { outcome, .. } => {
                            assert_eq!(*outcome, callkpi_core::event::DialOutcome::Answered);
                        }
                        EventKind::Hangup { by, reported_talk_ms, .. } => {
                            assert_eq!(*by, HangupBy::Caller, "the far end cleared first");
                            let talk = reported_talk_ms.map_or(-1, |t| t as i64);
                            assert!(near(talk, call.talk_ms().unwrap_or(0)), "{call:?}: talk {talk}");
                        }
                        _ => {}
                    }
                }
            }
        }
        // Calls of one session sit where the board's ticks put them.
        let offset = ms(at("offered")) - i64::from(call.start());
        let a = anchor[usize::from(*session)].get_or_insert(offset);
        assert!((offset - *a).abs() <= 2 * RING_TOLERANCE_MS, "{call:?}: {offset} vs session anchor {a}");
    }
}

/// KPIs per queue of the scenario's events, through the core engine (the
/// same code the aggregator runs).
pub(crate) fn kpis_by_queue(events: &[CallEvent]) -> std::collections::BTreeMap<String, callkpi_core::report::Kpis> {
    use callkpi_core::params::GroupBy;
    use callkpi_core::{Engine, EngineConfig, KpiParams, Watermark};
    let mut engine = Engine::new(EngineConfig::default());
    for e in events {
        engine.ingest(e.clone());
    }
    engine.refresh(None, true);
    let params = KpiParams {
        interval: callkpi_core::time::Interval::All,
        group_by: vec![GroupBy::Queue],
        ..KpiParams::default()
    };
    let agent_id = events.first().map(|e| e.id.agent_id.clone()).unwrap_or_default();
    let wm = [Watermark { agent_id, delivered_until: engine.clock().unwrap_or(0) }];
    let report = engine.report(&params, &wm).expect("report");
    report.rows.into_iter().map(|r| (r.group.get("queue").cloned().flatten().unwrap_or_default(), r.kpis)).collect()
}

/// The scenario's KPIs: offered, answered, abandoned (short ones apart),
/// ASA and talk time per queue, and the outgoing call, against the truth of
/// the simulation (waits within the board's ring-start tolerance).
pub(crate) fn assert_scenario_kpis(events: &[CallEvent]) {
    let rows = kpis_by_queue(events);
    let close = |got: Option<f64>, want_ms: f64, what: &str| {
        let got = got.unwrap_or_else(|| panic!("{what}: no value"));
        assert!(
            (got - want_ms / 1000.0).abs() <= RING_TOLERANCE_MS as f64 / 1000.0,
            "{what}: {got} s, want {want_ms} ms"
        );
    };
    let acc = rows.get(QUEUE_0).unwrap_or_else(|| panic!("no {QUEUE_0} row: {rows:#?}"));
    assert_eq!(
        (acc.offered, acc.answered, acc.abandoned, acc.short_abandoned, acc.handled),
        (3, 3, 0, 1, 3),
        "{QUEUE_0}: A, C and G answered, E a short abandon"
    );
    close(acc.asa_s, (7_000.0 + 1_000.0 + 3_000.0) / 3.0, "ASA accueil");
    close(acc.talk_s, (30_000.0 + 10_000.0 + 15_000.0) / 3.0, "talk accueil");
    let sav = rows.get(QUEUE_1).unwrap_or_else(|| panic!("no {QUEUE_1} row: {rows:#?}"));
    assert_eq!(
        (sav.offered, sav.answered, sav.abandoned, sav.short_abandoned),
        (3, 1, 2, 0),
        "{QUEUE_1}: F answered, B and H abandoned"
    );
    close(sav.asa_s, 9_000.0, "ASA sav");
    close(sav.avg_wait_s, (11_500.0 + 9_000.0 + 6_500.0) / 3.0, "average wait sav");
    let rate = sav.abandonment_rate_pct.expect("abandonment rate");
    assert!((rate - 200.0 / 3.0).abs() < 1e-6, "abandonment rate {rate}");
    let out = rows.get("").unwrap_or_else(|| panic!("no row without queue: {rows:#?}"));
    assert_eq!((out.outbound_attempts, out.outbound_connected), (1, 1), "D: one outgoing call, connected");
}

/// Events the scenario maps to: five per inbound call (offer, join, ring,
/// then answer and hang-up, or leave and missed offer), four for the
/// outgoing one (offer, dial result, answer, the far end's hang-up).
pub(crate) fn scenario_event_count() -> usize {
    SESSION_1.iter().chain(&SESSION_2).map(|c| if matches!(c, Call::Outgoing { .. }) { 4 } else { 5 }).sum()
}
