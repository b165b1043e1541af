//! Line monitor source: the mapper on hand-made frames (anchoring, the tick
//! wrap, heartbeats, gaps, reboots, lost frames, polarity), then the whole
//! source reading a pseudo-terminal that a simulated board writes to:
//! events, KPIs through the core engine, metrics, and a device that is
//! absent, unplugged and plugged again.

#[path = "linemon_sim.rs"]
mod sim;

use std::path::Path;
use std::time::Duration;

use callkpi_agent::clock::Clock;
use callkpi_agent::config::{LinemonLineConfig, LinemonSourceConfig};
use callkpi_agent::metrics::{Metrics, SourceMetrics};
use callkpi_agent::sources::linemon::{LinemonMapper, LinemonSource};
use callkpi_core::event::{
    DialOutcome, Direction as CallDirection, EventId, EventKind, HangupBy, LeaveReason, NANOS_PER_MS, SourceKind,
};
use callkpi_core::{Engine, EngineConfig};
use callkpi_feeds::{CaptureTime, FeedEvent};
use linemon::frame::{BOARD_LINE, Direction, Event, Frame, RawPayload};
use tokio_util::sync::CancellationToken;

use super::{TestSpool, eventually, spool_config, trace};
use sim::{DID_0, DID_1, FakeSerial, QUEUE_0, QUEUE_1};

const PATIENCE: Duration = Duration::from_secs(20);
/// An arbitrary wall clock (2027-01-15), ns.
const T0: i64 = 1_800_000_000 * 1_000_000_000;

fn config(device: &Path) -> LinemonSourceConfig {
    LinemonSourceConfig {
        device: device.to_owned(),
        backoff_initial_ms: 50,
        backoff_max_ms: 200,
        lines: vec![
            LinemonLineConfig {
                line: 0,
                queue: QUEUE_0.to_owned(),
                did: Some(DID_0.to_owned()),
                agent: None,
                polarity: false,
            },
            LinemonLineConfig {
                line: 1,
                queue: QUEUE_1.to_owned(),
                did: Some(DID_1.to_owned()),
                agent: Some(sim::AGENT_1.to_owned()),
                polarity: true,
            },
        ],
        ..LinemonSourceConfig::default()
    }
}

fn mapper() -> LinemonMapper {
    LinemonMapper::new(&config(Path::new("/dev/null")))
}

fn frame(seq: u32, line: u8, tick: u32, event: Event) -> Frame {
    Frame { seq, line, tick, event }
}

fn boot(seq: u32, tick: u32) -> Frame {
    frame(seq, BOARD_LINE, tick, Event::Boot { firmware: [1, 0, 0], lines: 2, reset_cause: 1 })
}

fn heartbeat(seq: u32, tick: u32) -> Frame {
    frame(seq, BOARD_LINE, tick, Event::Heartbeat { dropped: 0, rejected_bursts: 0, states: 0xFFFF_FF11 })
}

/// Maps `f` as arriving `arrival_ms` after [`T0`].
fn push(m: &mut LinemonMapper, f: Frame, arrival_ms: i64) -> Vec<FeedEvent> {
    let mut out = Vec::new();
    m.push(&f, T0 + arrival_ms * NANOS_PER_MS, &mut out);
    out
}

fn kinds(evs: &[FeedEvent]) -> Vec<&'static str> {
    evs.iter()
        .map(|e| match &e.kind {
            EventKind::CallOffered { direction: CallDirection::Inbound, .. } => "offered",
            EventKind::CallOffered { .. } => "offered-out",
            EventKind::QueueJoin { .. } => "join",
            EventKind::QueueLeave { .. } => "leave",
            EventKind::Ringing { .. } => "ringing",
            EventKind::OfferMissed { .. } => "missed",
            EventKind::Answered { .. } => "answered",
            EventKind::Hangup { .. } => "hangup",
            EventKind::DialResult { .. } => "dial",
            _ => "other",
        })
        .collect()
}

/// Milliseconds after [`T0`] of each event.
fn times(evs: &[FeedEvent]) -> Vec<i64> {
    evs.iter().map(|e| (e.source_time.expect("source time") - T0) / NANOS_PER_MS).collect()
}

fn talk(e: &FeedEvent) -> Option<(HangupBy, Option<u64>)> {
    match &e.kind {
        EventKind::Hangup { by, reported_talk_ms, .. } => Some((*by, *reported_talk_ms)),
        _ => None,
    }
}

fn wait(e: &FeedEvent) -> Option<u64> {
    match &e.kind {
        EventKind::Answered { reported_wait_ms, .. } | EventKind::QueueLeave { reported_wait_ms, .. } => {
            *reported_wait_ms
        }
        _ => None,
    }
}

#[test]
fn ticks_map_to_the_wall_clock_through_the_anchor_and_across_the_wrap() {
    let mut m = mapper();
    let base = u32::MAX - 999;
    assert!(push(&mut m, boot(0, base), 0).is_empty());
    // Ringing is reported at the end of the first burst, late: the tick
    // decides the time, not the arrival.
    let ring = push(&mut m, frame(1, 0, base + 500, Event::Ringing { cadence: 1 }), 2_000);
    assert_eq!(kinds(&ring), ["offered", "join", "ringing"]);
    assert_eq!(times(&ring), [500, 500, 500]);
    let call_id = format!("linemon-line0-{}", T0 / NANOS_PER_MS + 500);
    assert!(ring.iter().all(|e| e.call_id == call_id && e.leg_id == "linemon-line0"), "{ring:#?}");
    match &ring[0].kind {
        EventKind::CallOffered { called, caller, trunk, .. } => {
            assert_eq!((called.as_str(), caller.as_str(), trunk.as_deref()), (DID_0, "", Some("linemon-line0")));
        }
        other => panic!("{other:?}"),
    }
    // 7.5 s after the anchor: the 32-bit tick has wrapped.
    let answered =
        push(&mut m, frame(2, 0, base.wrapping_add(7_500), Event::Answered { rings: 2, ring_ms: 7_000 }), 7_600);
    assert!(base.wrapping_add(7_500) < base);
    assert_eq!((kinds(&answered), times(&answered)), (vec!["answered"], vec![7_500]));
    assert_eq!((answered[0].call_id.as_str(), wait(&answered[0])), (call_id.as_str(), Some(7_000)));
    // A later frame first (an outgoing call on line 1), then the hang-up,
    // whose tick is earlier: it is only certain 800 ms after the on-hook.
    let off = push(&mut m, frame(3, 1, base.wrapping_add(37_700), Event::OffHook), 37_710);
    assert_eq!((kinds(&off), times(&off)), (vec!["offered-out"], vec![37_700]));
    let hung = push(
        &mut m,
        frame(4, 0, base.wrapping_add(37_500), Event::HungUp { duration_ms: 30_000, direction: Direction::Incoming }),
        38_300,
    );
    assert_eq!((kinds(&hung), times(&hung)), (vec!["hangup"], vec![37_500]));
    assert_eq!(talk(&hung[0]), Some((HangupBy::Unknown, Some(30_000))));
    assert_eq!(hung[0].call_id, call_id);
    let stats = m.stats();
    assert_eq!((stats.frames, stats.lost_frames, stats.reboots, stats.unmapped, stats.reanchors), (5, 0, 0, 0, 0));
}

#[test]
fn heartbeats_re_anchor_a_late_first_frame_and_follow_drift() {
    let mut m = mapper();
    // The first frame after opening is an abandon, reported ~4.4 s after
    // the end of the last burst: the anchor is 4.5 s late.
    let abandoned = push(&mut m, frame(40, 1, 10_000, Event::Abandoned { rings: 2, ring_ms: 6_500 }), 4_500);
    assert_eq!(kinds(&abandoned), ["offered", "join", "ringing", "leave", "missed"]);
    assert_eq!(times(&abandoned), [-2_000, -2_000, -2_000, 4_500, 4_500]);
    // A heartbeat is sent at its tick: 3 ms on the wire. It moves the anchor.
    assert!(push(&mut m, heartbeat(41, 15_000), 5_003).is_empty());
    assert_eq!(m.stats().reanchors, 1);
    let ring = push(&mut m, frame(42, 0, 20_000, Event::Ringing { cadence: 1 }), 11_600);
    assert_eq!(times(&ring)[0], 10_003);
    // An hour later the board's crystal is 600 ms behind: within tolerance.
    push(&mut m, heartbeat(43, 3_615_000), 3_605_603);
    assert_eq!(m.stats().reanchors, 1);
    let off = push(&mut m, frame(44, 1, 3_616_000, Event::OffHook), 3_606_610);
    assert_eq!(times(&off)[0], 3_606_003);
    // Another hour: 1.2 s behind, beyond the 1 s tolerance.
    push(&mut m, heartbeat(45, 7_215_000), 7_206_203);
    assert_eq!(m.stats().reanchors, 2);
    let hung = push(
        &mut m,
        frame(46, 1, 7_216_000, Event::HungUp { duration_ms: 3_600_000, direction: Direction::Outgoing }),
        7_207_900,
    );
    assert_eq!(kinds(&hung), ["dial", "hangup"]);
    assert_eq!(times(&hung), [7_207_203, 7_207_203]);
    assert_eq!(m.stats().lost_frames, 0);
}

#[test]
fn gaps_are_counted_and_reboots_detected_three_ways() {
    let mut m = mapper();
    push(&mut m, boot(0, 0), 0);
    assert_eq!(m.stats().reboots, 0, "the first boot seen is no restart");
    push(&mut m, frame(1, 0, 1_000, Event::Ringing { cadence: 1 }), 2_500);
    // seq 2 and 3 never arrive.
    let answered = push(&mut m, frame(4, 0, 8_000, Event::Answered { rings: 2, ring_ms: 7_000 }), 8_010);
    assert_eq!(kinds(&answered), ["answered"]);
    assert_eq!((m.stats().lost_frames, m.calls_in_progress()), (2, 1));

    // 1. A Boot frame: the call in progress is forgotten.
    push(&mut m, boot(0, 5), 50_000);
    assert_eq!((m.stats().reboots, m.calls_in_progress()), (1, 0));
    // Its hang-up belongs to a call whose start this board session never saw.
    let orphan = push(
        &mut m,
        frame(1, 0, 20_000, Event::HungUp { duration_ms: 12_000, direction: Direction::Incoming }),
        70_000,
    );
    assert!(orphan.is_empty());
    assert_eq!(m.stats().unmapped, 1);
    // The new anchor: tick 5 arrived at 50 s.
    let ring = push(&mut m, frame(2, 1, 25_005, Event::Ringing { cadence: 1 }), 75_100);
    assert_eq!(times(&ring)[0], 75_000);

    // 2. The sequence goes back without a Boot frame (it was lost).
    let ring = push(&mut m, frame(1, 0, 900, Event::Ringing { cadence: 1 }), 80_000);
    assert_eq!((m.stats().reboots, m.stats().lost_frames), (2, 3), "seq 0 of the new boot is missing");
    assert_eq!((times(&ring)[0], m.calls_in_progress()), (80_000, 1));

    // 3. The tick goes back by more than a minute while seq goes on: the
    // board restarted and its first frames were lost.
    push(&mut m, frame(2, 1, 200_000, Event::OffHook), 279_200);
    assert_eq!(m.stats().reboots, 2);
    push(&mut m, frame(9, 0, 1_000, Event::OffHook), 280_000);
    assert_eq!((m.stats().reboots, m.stats().lost_frames), (3, 12));

    // Reordering within a minute is not a restart.
    push(&mut m, frame(10, 1, 50_000, Event::OffHook), 329_000);
    push(&mut m, frame(11, 0, 45_000, Event::Flash { duration_ms: 300 }), 329_010);
    let s = m.stats();
    assert_eq!((s.reboots, s.lost_frames, s.frames), (3, 12, 11));
}

#[test]
fn lost_frames_are_bridged_from_the_next_frame() {
    let mut m = mapper();
    push(&mut m, boot(0, 0), 0);
    // Ringing (seq 1) lost: the answer's ring time places the offer.
    let a = push(&mut m, frame(2, 0, 20_000, Event::Answered { rings: 2, ring_ms: 7_000 }), 20_010);
    assert_eq!(kinds(&a), ["offered", "join", "ringing", "answered"]);
    assert_eq!(times(&a), [13_000, 13_000, 13_000, 20_000]);
    assert_eq!(wait(&a[3]), Some(7_000));
    let h = push(
        &mut m,
        frame(3, 0, 50_000, Event::HungUp { duration_ms: 30_000, direction: Direction::Incoming }),
        50_800,
    );
    assert_eq!((kinds(&h), h[0].call_id.as_str()), (vec!["hangup"], a[0].call_id.as_str()));
    // Answered (seq 5) lost: the hang-up's duration places the answer.
    let r = push(&mut m, frame(4, 1, 60_000, Event::Ringing { cadence: 1 }), 61_500);
    let h = push(
        &mut m,
        frame(6, 1, 100_000, Event::HungUp { duration_ms: 30_000, direction: Direction::Incoming }),
        100_800,
    );
    assert_eq!((kinds(&h), times(&h)), (vec!["answered", "hangup"], vec![70_000, 100_000]));
    assert_eq!((wait(&h[0]), talk(&h[1])), (Some(10_000), Some((HangupBy::Unknown, Some(30_000)))));
    assert!(h.iter().all(|e| e.call_id == r[0].call_id));
    // OffHook (seq 7) lost: the outgoing hang-up places the start; line 1
    // has polarity, so no reversal means no answer.
    let o = push(
        &mut m,
        frame(8, 1, 130_000, Event::HungUp { duration_ms: 20_000, direction: Direction::Outgoing }),
        130_800,
    );
    assert_eq!((kinds(&o), times(&o)), (vec!["offered-out", "dial", "hangup"], vec![110_000, 130_000, 130_000]));
    assert!(matches!(o[1].kind, EventKind::DialResult { outcome: DialOutcome::NoAnswer, .. }));
    assert_eq!(talk(&o[2]), Some((HangupBy::Agent, None)));
    // Line 0 has no polarity: an outgoing call gets no outcome.
    let o = push(
        &mut m,
        frame(10, 0, 140_000, Event::HungUp { duration_ms: 5_000, direction: Direction::Outgoing }),
        140_800,
    );
    assert_eq!(kinds(&o), ["offered-out", "hangup"]);
    // An incoming hang-up with nothing known before it gives nothing.
    let n = push(
        &mut m,
        frame(11, 0, 150_000, Event::HungUp { duration_ms: 5_000, direction: Direction::Incoming }),
        150_800,
    );
    assert!(n.is_empty());
    // An abandon without its ringing.
    let b = push(&mut m, frame(12, 1, 170_000, Event::Abandoned { rings: 2, ring_ms: 6_500 }), 174_400);
    assert_eq!(times(&b), [163_500, 163_500, 163_500, 170_000, 170_000]);
    assert!(matches!(
        b[3].kind,
        EventKind::QueueLeave { reason: LeaveReason::Abandon, reported_wait_ms: Some(6_500), .. }
    ));
    let s = m.stats();
    assert_eq!((s.lost_frames, s.unmapped, s.reboots), (4, 1, 0));
}

#[test]
fn polarity_gives_outcomes_and_clears_only_where_wired() {
    let mut m = mapper();
    let mut all = Vec::new();
    let go = |m: &mut LinemonMapper, all: &mut Vec<FeedEvent>, f: Frame| {
        let evs = push(m, f, i64::from(f.tick) + 5);
        all.extend(evs.iter().cloned());
        evs
    };
    go(&mut m, &mut all, boot(0, 0));
    // Line 1, outgoing: the far end answers, then clears; on-hook after.
    go(&mut m, &mut all, frame(1, 1, 1_000, Event::OffHook));
    let ans = go(&mut m, &mut all, frame(2, 1, 7_000, Event::Polarity { reversed: true }));
    assert_eq!(kinds(&ans), ["dial", "answered"]);
    assert!(matches!(ans[0].kind, EventKind::DialResult { outcome: DialOutcome::Answered, .. }));
    let clr = go(&mut m, &mut all, frame(3, 1, 27_000, Event::Polarity { reversed: false }));
    assert_eq!(talk(&clr[0]), Some((HangupBy::Caller, Some(20_000))));
    let end = go(
        &mut m,
        &mut all,
        frame(4, 1, 29_000, Event::HungUp { duration_ms: 28_000, direction: Direction::Outgoing }),
    );
    assert!(end.is_empty(), "the clear already ended it: {end:#?}");
    // Line 1, incoming: the agent hangs up first; the exchange's clear-back
    // (300 ms later) arrives before the HungUp frame (800 ms later).
    go(&mut m, &mut all, frame(5, 1, 40_000, Event::Ringing { cadence: 1 }));
    let answered = go(&mut m, &mut all, frame(6, 1, 45_000, Event::Answered { rings: 1, ring_ms: 5_000 }));
    let clr = go(&mut m, &mut all, frame(7, 1, 60_300, Event::Polarity { reversed: true }));
    assert_eq!(talk(&clr[0]), Some((HangupBy::Caller, Some(15_300))));
    let end = go(
        &mut m,
        &mut all,
        frame(8, 1, 60_000, Event::HungUp { duration_ms: 15_000, direction: Direction::Incoming }),
    );
    assert_eq!(talk(&end[0]), Some((HangupBy::Agent, Some(15_000))));
    // Line 1, outgoing, no reversal: no answer.
    go(&mut m, &mut all, frame(9, 1, 70_000, Event::OffHook));
    let end = go(
        &mut m,
        &mut all,
        frame(10, 1, 80_000, Event::HungUp { duration_ms: 10_000, direction: Direction::Outgoing }),
    );
    assert_eq!(kinds(&end), ["dial", "hangup"]);
    assert!(matches!(end[0].kind, EventKind::DialResult { outcome: DialOutcome::NoAnswer, .. }));
    // Line 0 has no polarity input; flash, unknown kinds and unconfigured
    // lines map to nothing.
    let before = all.len();
    go(&mut m, &mut all, frame(11, 0, 90_000, Event::Polarity { reversed: true }));
    go(&mut m, &mut all, frame(12, 0, 91_000, Event::Flash { duration_ms: 300 }));
    go(&mut m, &mut all, frame(13, 7, 92_000, Event::Ringing { cadence: 1 }));
    go(&mut m, &mut all, frame(14, 0, 93_000, Event::Unknown { kind: 0x42, payload: RawPayload::new(&[1, 2]) }));
    assert_eq!((all.len(), m.stats().unmapped), (before, 4));

    // The engine orders by time: the agent's earlier hang-up ends the
    // incoming conversation after 15 s, not the clear-back's 15.3 s.
    let mut engine = Engine::new(EngineConfig::default());
    for (seq, e) in all.into_iter().enumerate() {
        let captured = CaptureTime { wall: T0, monotonic: 0, clock_synced: true };
        let id = EventId { agent_id: "a".to_owned(), seq: seq as u64 + 1 };
        engine.ingest(e.into_event(id, "paris", SourceKind::LineMonitor, captured));
    }
    engine.refresh(None, true);
    let call = engine.call("paris", &answered[0].call_id).expect("the incoming call");
    assert_eq!(call.segments.len(), 1);
    assert_eq!((call.segments[0].talk_ms(), call.segments[0].agent.as_str()), (15_000, sim::AGENT_1));
}

/// Starts the source with its own metrics.
fn start(
    config: LinemonSourceConfig,
    spool: &TestSpool,
) -> (SourceMetrics, CancellationToken, tokio::task::JoinHandle<()>) {
    let metrics = Metrics::new().source("linemon");
    let source = LinemonSource::new(config, spool.sink.clone(), Clock::new(), metrics.clone());
    let stop = CancellationToken::new();
    let task = tokio::spawn(source.run(stop.clone()));
    (metrics, stop, task)
}

/// How many events `frames` map to (arrival times do not change that).
fn expected_events(frames: &[Frame]) -> u64 {
    let mut m = mapper();
    let mut out = Vec::new();
    for f in frames {
        m.push(f, T0, &mut out);
    }
    out.len() as u64
}

/// Writes `pieces` to the pty from a blocking thread; gives the pty back.
async fn send(mut serial: FakeSerial, pieces: Vec<Vec<u8>>) -> FakeSerial {
    tokio::task::spawn_blocking(move || {
        for p in &pieces {
            serial.send(p);
        }
        serial
    })
    .await
    .expect("writer thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_through_a_pty_become_the_right_events_and_kpis() {
    let _trace = trace();
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = TestSpool::open(&spool_config(dir.path()));
    let serial = FakeSerial::plugged(&dir.path().join("ttyLINEMON"));
    let (metrics, stop, task) = start(config(serial.path()), &spool);
    eventually(PATIENCE, "the device is open", || metrics.connected.get() == 1).await;

    let scenario = sim::scenario();
    let expected = expected_events(&scenario.delivered);
    assert_eq!(expected, sim::scenario_event_count() as u64);
    let bytes: u64 = scenario.wire.iter().map(|p| p.len() as u64).sum();
    let _serial = send(serial, scenario.wire.clone()).await;
    eventually(PATIENCE, "every event spooled", || metrics.spooled.get() == expected).await;
    stop.cancel();
    task.await.expect("source task");
    assert_eq!(metrics.connected.get(), 0);

    let events = spool.events();
    spool.close().await;
    assert_eq!(events.len() as u64, expected);
    sim::assert_scenario_events(&events);
    sim::assert_scenario_kpis(&events);
    assert_eq!(metrics.malformed.get(), scenario.bad_frames, "garbage, the corrupt frame and the version 2 frame");
    assert_eq!(metrics.lost.get(), scenario.lost_frames, "B's Ringing and F's corrupt Answered");
    assert_eq!(metrics.device_restarts.get(), 1, "the reboot between the sessions");
    assert_eq!((metrics.unmapped.get(), metrics.reconnects.get()), (0, 0));
    assert_eq!(metrics.read_bytes.get(), bytes);
    assert_eq!(metrics.events.get(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_can_be_absent_unplugged_and_plugged_again() {
    let _trace = trace();
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = TestSpool::open(&spool_config(dir.path()));
    let mut serial = FakeSerial::unplugged(&dir.path().join("ttyLINEMON"));
    let (metrics, stop, task) = start(config(serial.path()), &spool);
    // Absent at start: the source keeps retrying.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metrics.connected.get(), 0);
    serial.plug();
    eventually(PATIENCE, "the device is open", || metrics.connected.get() == 1).await;

    let frames = sim::run_board(2, &sim::SESSION_1, sim::SESSION_1_MS);
    let answered = sim::find(&frames, 0, 0, |e| matches!(e, Event::Answered { .. }));
    let hung_up = sim::find(&frames, 0, 0, |e| matches!(e, Event::HungUp { .. }));
    assert!(hung_up > answered + 1, "frames of other calls between A's answer and hang-up");
    let before: Vec<Frame> = frames[..=answered].to_vec();
    let n = expected_events(&before);
    serial = send(serial, before.iter().map(sim::encode).collect()).await;
    eventually(PATIENCE, "call A answered", || metrics.spooled.get() == n).await;

    // Unplugged during A's conversation; what the board sends meanwhile is lost.
    serial.unplug();
    eventually(PATIENCE, "the loss noticed", || metrics.connected.get() == 0).await;
    serial.plug();
    eventually(PATIENCE, "the device reopened", || metrics.connected.get() == 1).await;
    assert_eq!(metrics.reconnects.get(), 1);
    let after: Vec<Frame> = frames[hung_up..].to_vec();
    let delivered: Vec<Frame> = before.iter().chain(&after).copied().collect();
    let total = expected_events(&delivered);
    let _serial = send(serial, after.iter().map(sim::encode).collect()).await;
    eventually(PATIENCE, "the rest spooled", || metrics.spooled.get() == total).await;
    stop.cancel();
    task.await.expect("source task");

    let events = spool.events();
    spool.close().await;
    assert_eq!(metrics.lost.get(), (hung_up - answered - 1) as u64, "frames sent while unplugged");
    assert_eq!((metrics.device_restarts.get(), metrics.malformed.get()), (0, 0));
    // A's hang-up, after the re-plug, closes the call opened before it.
    let a: Vec<_> = events.iter().filter(|e| e.call_id == events[0].call_id).collect();
    let kinds: Vec<String> = a.iter().map(|e| super::kind_name(&e.kind)).collect();
    assert_eq!(kinds, ["CallOffered", "QueueJoin", "Ringing", "Answered", "Hangup"]);
    assert!(matches!(a[4].kind, EventKind::Hangup { reported_talk_ms: Some(30_000), .. }), "{:?}", a[4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_board_gets_its_device_reopened() {
    let _trace = trace();
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = TestSpool::open(&spool_config(dir.path()));
    let serial = FakeSerial::plugged(&dir.path().join("ttyLINEMON"));
    let (metrics, stop, task) =
        start(LinemonSourceConfig { silence_timeout_ms: 1_500, ..config(serial.path()) }, &spool);
    eventually(PATIENCE, "the device is open", || metrics.connected.get() == 1).await;
    // No heartbeat for 1.5 s: closed and opened again.
    eventually(PATIENCE, "a reopen", || metrics.reconnects.get() >= 1).await;
    eventually(PATIENCE, "the device is open again", || metrics.connected.get() == 1).await;
    let frames = [sim::encode(&boot(0, 0)), sim::encode(&frame(1, 0, 1_000, Event::Ringing { cadence: 1 }))];
    let _serial = send(serial, frames.to_vec()).await;
    eventually(PATIENCE, "the ringing spooled", || metrics.spooled.get() == 3).await;
    stop.cancel();
    task.await.expect("source task");
    spool.close().await;
}
