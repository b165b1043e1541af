//! Whole calls through the state machine: answer, hang-up, outgoing calls,
//! flash, dial pulses, polarity, and noise or bounce that must stay silent.

use linemon::frame::Direction;
use linemon::line::{LineConfig, LineMonitor};
use linemon::{Cadence, Event, LineState};

use crate::sim::{RingWave, Rng, Timeline, near};

const WAVE: RingWave = RingWave::new(25.0, false);
/// Worst hook bounce in the simulations.
const BOUNCE: u32 = 20;

fn fr() -> LineMonitor {
    LineMonitor::new(LineConfig::for_cadence(Cadence::FR))
}

fn kinds(events: &[(u32, linemon::line::LineEvent)]) -> Vec<u8> {
    events.iter().map(|(_, e)| e.event.kind()).collect()
}

#[test]
fn answered_in_the_pause_then_hung_up() {
    for seed in 0..8 {
        let mut rng = Rng::new(seed);
        let mut tl = Timeline::new(60_000);
        tl.ring_cadence(&mut rng, WAVE, Cadence::FR.segments(), 1_000, 2, 0.0);
        // answered in the pause after the second burst; the exchange stops ringing
        tl.ring[8_000..].fill(false);
        let answer = tl.hook_switch(&mut rng, 8_000, true, BOUNCE);
        let hang_up = tl.hook_switch(&mut rng, 38_000, false, BOUNCE);
        let mut mon = fr();
        let events = tl.run(&mut mon, 1_234_567, 1);
        assert_eq!(kinds(&events), [0x01, 0x02, 0x03], "{events:?}");
        let ringing = events[0].1;
        assert!(near(ringing.tick, 1_000, 45));
        let (_, answered) = events[1];
        assert_eq!(answered.tick, answer);
        assert_eq!(answered.event, Event::Answered { rings: 2, ring_ms: answer - ringing.tick });
        let (_, hung_up) = events[2];
        assert_eq!(hung_up.tick, hang_up);
        assert_eq!(hung_up.event, Event::HungUp { duration_ms: hang_up - answer, direction: Direction::Incoming });
        assert_eq!(mon.state(), LineState::Idle);
    }
}

#[test]
fn answered_during_a_burst_counts_that_burst() {
    let mut rng = Rng::new(1);
    let mut tl = Timeline::new(20_000);
    tl.ring_cadence(&mut rng, WAVE, Cadence::FR.segments(), 1_000, 2, 0.0);
    tl.ring[6_700..].fill(false); // ring trip
    tl.hook_switch(&mut rng, 6_700, true, BOUNCE);
    let mut mon = fr();
    let events = tl.run(&mut mon, 0, 1);
    assert_eq!(kinds(&events), [0x01, 0x02], "{events:?}");
    assert!(matches!(events[1].1.event, Event::Answered { rings: 2, .. }), "{events:?}");
    assert_eq!(mon.state(), LineState::Answered);
}

#[test]
fn answered_before_the_cadence_is_confirmed() {
    let mut rng = Rng::new(2);
    let mut tl = Timeline::new(10_000);
    tl.ring_cadence(&mut rng, WAVE, Cadence::FR.segments(), 1_000, 1, 0.0);
    tl.ring[1_600..].fill(false);
    let answer = tl.hook_switch(&mut rng, 1_600, true, BOUNCE);
    let mut mon = fr();
    let events = tl.run(&mut mon, 0, 1);
    assert_eq!(kinds(&events), [0x01, 0x02], "{events:?}");
    assert_eq!(events[0].1.event, Event::Ringing { cadence: linemon::cadence::UNCONFIRMED });
    assert!(near(events[0].1.tick, 1_000, 45));
    assert!(matches!(events[1].1.event, Event::Answered { rings: 1, ring_ms } if near(ring_ms, answer - 1_000, 45)));
}

#[test]
fn outgoing_call_with_dial_pulses_flash_and_polarity() {
    let mut rng = Rng::new(3);
    let mut tl = Timeline::new(40_000);
    let off = tl.hook_switch(&mut rng, 1_000, true, BOUNCE);
    // pulse dialling "3": 62 ms breaks, 38 ms makes (10 pps), from 3 s
    for i in 0..3 {
        let t = 3_000 + i * 100;
        tl.hook_switch(&mut rng, t, false, 2);
        tl.hook_switch(&mut rng, t + 62, true, 2);
    }
    // far end answers: polarity reversal
    tl.polarity_switch(&mut rng, 8_000, true, 5);
    // register recall: 300 ms flash
    let flash = tl.hook_switch(&mut rng, 15_000, false, BOUNCE);
    let back = tl.hook_switch(&mut rng, 15_300, true, BOUNCE);
    let on = tl.hook_switch(&mut rng, 30_000, false, BOUNCE);
    tl.polarity_switch(&mut rng, 30_500, false, 5);
    let mut config = LineConfig::for_cadence(Cadence::FR);
    config.polarity = true;
    let mut mon = LineMonitor::new(config);
    let events = tl.run(&mut mon, 0, 1);
    // HungUp is only known hangup_ms after the on-hook, so it is reported
    // after the later polarity change: compare in tick order.
    let mut evs: Vec<_> = events.iter().map(|(_, e)| (e.tick, e.event)).collect();
    evs.sort_by_key(|e| e.0);
    assert_eq!(evs.len(), 5, "{evs:?}");
    assert_eq!(evs[0], (off, Event::OffHook));
    assert!(matches!(evs[1], (t, Event::Polarity { reversed: true }) if near(t, 8_000, 5)));
    assert_eq!(evs[2], (flash, Event::Flash { duration_ms: (back - flash) as u16 }));
    assert_eq!(evs[3], (on, Event::HungUp { duration_ms: on - off, direction: Direction::Outgoing }));
    assert!(matches!(evs[4], (t, Event::Polarity { reversed: false }) if near(t, 30_500, 5)));
}

#[test]
fn off_hook_at_boot_is_a_call_of_unknown_direction() {
    let mut rng = Rng::new(4);
    let mut tl = Timeline::new(10_000);
    tl.hook[..].fill(true);
    let on = tl.hook_switch(&mut rng, 5_000, false, BOUNCE);
    let mut mon = fr();
    let events = tl.run(&mut mon, 0, 1);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1.tick, on);
    assert!(matches!(events[0].1.event, Event::HungUp { direction: Direction::Unknown, .. }));
}

#[test]
fn noise_and_bounce_alone_report_nothing() {
    for seed in 0..6 {
        let mut rng = Rng::new(100 + seed);
        let mut tl = Timeline::new(120_000);
        tl.ring_noise(&mut rng, 2.0, 3);
        tl.hook_noise(&mut rng, 2.0, 25);
        // a knock on the handset: bounces, then settles back on-hook
        for t in (10_000..110_000).step_by(10_000) {
            for i in 0..rng.int(1, BOUNCE) {
                tl.hook[(t + i) as usize] = rng.unit() < 0.5;
            }
        }
        let mut mon = LineMonitor::new(LineConfig::default());
        let events = tl.run(&mut mon, u32::MAX - 60_000, 1);
        assert!(events.is_empty(), "seed {seed}: {events:?}");
        assert_eq!(mon.state(), LineState::Idle);
    }
}

#[test]
fn ring_while_off_hook_is_ignored_and_next_call_is_seen() {
    let mut rng = Rng::new(6);
    let mut tl = Timeline::new(40_000);
    tl.hook_switch(&mut rng, 500, true, BOUNCE);
    tl.ring_cadence(&mut rng, WAVE, Cadence::FR.segments(), 1_000, 2, 0.0);
    tl.hook_switch(&mut rng, 12_000, false, BOUNCE);
    // a new call rings right after the hang-up, inside the guard time
    tl.ring_cadence(&mut rng, WAVE, Cadence::FR.segments(), 12_900, 1, 0.0);
    let mut mon = fr();
    let events = tl.run(&mut mon, 0, 1);
    assert_eq!(kinds(&events), [0x05, 0x03, 0x01, 0x04], "{events:?}");
    assert!(near(events[2].1.tick, 12_900, 45));
}

#[test]
fn noise_burst_in_a_pause_is_not_a_ring() {
    let mut rng = Rng::new(8);
    let mut tl = Timeline::new(20_000);
    tl.ring_cadence(&mut rng, WAVE, Cadence::FR.segments(), 1_000, 2, 0.0);
    // four spikes 40 ms apart in the first pause: a pulse run, but 160 ms long
    for t in [3_100, 3_140, 3_180, 3_220] {
        tl.ring[t] = true;
    }
    let mut mon = fr();
    let events = tl.run(&mut mon, 0, 1);
    assert_eq!(kinds(&events), [0x01, 0x04], "{events:?}");
    assert!(matches!(events[1].1.event, Event::Abandoned { rings: 2, .. }), "{events:?}");
    assert_eq!(mon.stats().rejected_bursts, 1);
}
