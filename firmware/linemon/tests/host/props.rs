//! Property tests: random frames and bytes through the codec, random
//! cadences, ring signals and hook timings through the state machine.

use linemon::frame::{Deframer, Direction, Event, Frame, RawPayload};
use linemon::line::{LineConfig, LineMonitor};
use linemon::{Cadence, LineState};
use proptest::prelude::*;

use crate::cadences::Ringing;
use crate::frames::encode;
use crate::sim::{RingWave, Rng, Timeline, near};

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (any::<[u8; 3]>(), any::<u8>(), any::<u8>()).prop_map(|(firmware, lines, reset_cause)| Event::Boot {
            firmware,
            lines,
            reset_cause
        }),
        any::<u8>().prop_map(|cadence| Event::Ringing { cadence }),
        (any::<u16>(), any::<u32>()).prop_map(|(rings, ring_ms)| Event::Answered { rings, ring_ms }),
        (any::<u32>(), 0u8..3).prop_map(|(duration_ms, d)| Event::HungUp {
            duration_ms,
            direction: [Direction::Incoming, Direction::Outgoing, Direction::Unknown][usize::from(d)],
        }),
        (any::<u16>(), any::<u32>()).prop_map(|(rings, ring_ms)| Event::Abandoned { rings, ring_ms }),
        Just(Event::OffHook),
        any::<bool>().prop_map(|reversed| Event::Polarity { reversed }),
        (any::<u16>(), any::<u16>(), any::<u32>()).prop_map(|(dropped, rejected_bursts, states)| Event::Heartbeat {
            dropped,
            rejected_bursts,
            states
        }),
        any::<u16>().prop_map(|duration_ms| Event::Flash { duration_ms }),
        (0x09u8.., proptest::collection::vec(any::<u8>(), 0..=8))
            .prop_map(|(kind, p)| Event::Unknown { kind, payload: RawPayload::new(&p) }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (any::<u32>(), any::<u8>(), any::<u32>(), event()).prop_map(|(seq, line, tick, event)| Frame {
        seq,
        line,
        tick,
        event,
    })
}

proptest! {
    #[test]
    fn frames_round_trip(f in frame()) {
        let bytes = encode(&f);
        prop_assert_eq!(Frame::decode(&bytes), Ok(f));
        let mut d = Deframer::new();
        let out: Vec<_> = bytes.iter().filter_map(|&b| d.push(b)).collect();
        prop_assert_eq!(out, vec![Ok(f)]);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = Frame::decode(&bytes);
        let mut d = Deframer::new();
        for b in bytes {
            let _ = d.push(b);
        }
    }

    #[test]
    fn deframer_recovers_after_garbage(
        garbage in proptest::collection::vec(any::<u8>(), 0..80),
        f in frame(),
    ) {
        let mut d = Deframer::new();
        for b in garbage {
            let _ = d.push(b);
        }
        let _ = d.push(0); // line idle / delimiter: back in sync
        let out: Vec<_> = encode(&f).iter().filter_map(|&b| d.push(b)).collect();
        prop_assert_eq!(out, vec![Ok(f)]);
    }

    #[test]
    fn truncated_frames_are_rejected(f in frame(), cut in any::<prop::sample::Index>()) {
        prop_assume!(!matches!(f.event, Event::Unknown { .. }));
        let bytes = encode(&f);
        let cut = cut.index(bytes.len() - 1);
        prop_assert!(Frame::decode(&bytes[..cut]).is_err());
    }

    #[test]
    fn damaged_frames_are_never_taken_for_the_original(
        f in frame(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let mut bytes = encode(&f);
        let i = at.index(bytes.len() - 1);
        bytes[i] ^= xor;
        prop_assert_ne!(Frame::decode(&bytes), Ok(f));
    }
}

/// Simulations are long: 48 cases unless PROPTEST_CASES asks for more (soak runs).
fn sim_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

fn cadence() -> impl Strategy<Value = Cadence> {
    // Like real cadences: bursts of 0.3-2.5 s, short pauses inside a
    // multi-burst cycle, a long pause (1.5-4.5 s) ending the cycle.
    let custom = (300u16..2_500, proptest::option::of((250u16..1_000, 300u16..2_500)), 1_500u16..4_500).prop_map(
        |(on, second, last_off)| match second {
            None => Cadence::new(0x80, &[on, last_off]),
            Some((inner_off, on2)) => Cadence::new(0x81, &[on, inner_off, on2, last_off]),
        },
    );
    prop_oneof![proptest::sample::select(Cadence::BUILTIN.to_vec()), custom]
}

proptest! {
    #![proptest_config(sim_config())]

    /// Any cadence, any 20-50 Hz ring, half- or full-wave, with jitter and
    /// noise, sampled every 1 or 2 ms, at any tick: recognised within one
    /// cycle, every burst counted, abandoned when it stops.
    #[test]
    fn any_valid_cadence_is_recognised_within_one_cycle(
        cadence in cadence(),
        freq in 20.0f64..50.0,
        full_wave in any::<bool>(),
        duty in 0.25f64..0.6,
        seed in any::<u64>(),
        cycles in 1u32..4,
        noise in 0.0f64..0.3,
        t0 in any::<u32>(),
        step_ms in 1usize..=2,
        all_builtin in any::<bool>(),
    ) {
        let mut wave = RingWave::new(freq, full_wave);
        wave.duty = duty;
        let mut r = Ringing::new(cadence, wave, seed);
        r.cycles = cycles;
        r.noise = noise;
        r.t0 = t0;
        r.step_ms = step_ms;
        if all_builtin && cadence.id() < 0x80 {
            r.config = LineConfig::default();
        }
        if let Err(e) = r.check() {
            prop_assert!(false, "{}", e);
        }
    }

    /// Random outgoing calls with bouncing hook switches, flashes and
    /// glitches: exactly the expected events, at the instants the switch
    /// settled (give or take a glitch). Flashes are at least 200 ms here: a
    /// 25 ms glitch inside a shorter break can legitimately cut it below
    /// the 90 ms flash minimum.
    #[test]
    fn hook_timings(
        seed in any::<u64>(),
        calls in proptest::collection::vec((200u32..8_000, proptest::option::of(200u32..600), 1_200u32..5_000), 1..4),
        glitches in prop_oneof![Just(0.0f64), 0.0f64..1.0],
        t0 in any::<u32>(),
    ) {
        let mut rng = Rng::new(seed);
        let len: u32 = 1_000 + calls.iter().map(|(off, _, on)| off + 700 + on).sum::<u32>();
        let mut tl = Timeline::new(len as usize);
        let mut expected = Vec::new();
        let mut t = 1_000;
        for &(off_ms, flash, on_ms) in &calls {
            let off = tl.hook_switch(&mut rng, t, true, 20);
            expected.push((off, Event::OffHook));
            if let Some(flash_ms) = flash {
                let start = tl.hook_switch(&mut rng, t + off_ms / 2, false, 20);
                let end = tl.hook_switch(&mut rng, t + off_ms / 2 + flash_ms, true, 20);
                expected.push((start, Event::Flash { duration_ms: (end - start) as u16 }));
            }
            let on = tl.hook_switch(&mut rng, t + off_ms + 700, false, 20);
            expected.push((on, Event::HungUp { duration_ms: on - off, direction: Direction::Outgoing }));
            t += off_ms + 700 + on_ms;
        }
        tl.hook_noise(&mut rng, glitches, 25);
        let mut mon = LineMonitor::new(LineConfig::default());
        let got: Vec<_> = tl.run(&mut mon, t0, 1).into_iter().map(|(_, e)| (e.tick, e.event)).collect();
        prop_assert_eq!(got.len(), expected.len(), "{:?} vs {:?}", got, expected);
        // Without glitches the ticks are exactly when the switch settled;
        // glitches (< 30 ms each, possibly chained) next to a transition
        // move it a little.
        let tol = if glitches == 0.0 { 0 } else { 120 };
        for (g, e) in got.iter().zip(&expected) {
            prop_assert!(near(g.0, e.0, tol), "{:?} vs {:?}", got, expected);
            let same_kind = g.1.kind() == e.1.kind();
            let close = match (g.1, e.1) {
                (Event::Flash { duration_ms: a }, Event::Flash { duration_ms: b }) => near(a.into(), b.into(), tol),
                (Event::HungUp { duration_ms: a, .. }, Event::HungUp { duration_ms: b, .. }) => near(a, b, tol),
                _ => g.1 == e.1,
            };
            prop_assert!(same_kind && close, "{:?} vs {:?}", got, expected);
        }
        prop_assert_eq!(mon.state(), LineState::Idle);
    }

    /// Noise spikes on the ring input and glitches or bounce on the hook
    /// input, with no real ring or hook change, report nothing.
    #[test]
    fn noise_alone_reports_nothing(
        seed in any::<u64>(),
        ring_rate in 0.0f64..3.0,
        ring_width in 1u32..=4,
        hook_rate in 0.0f64..3.0,
        t0 in any::<u32>(),
    ) {
        let mut rng = Rng::new(seed);
        let mut tl = Timeline::new(30_000);
        tl.ring_noise(&mut rng, ring_rate, ring_width);
        tl.hook_noise(&mut rng, hook_rate, 28);
        let mut mon = LineMonitor::new(LineConfig::default());
        let got = tl.run(&mut mon, t0, 1);
        prop_assert!(got.is_empty(), "{:?}", got);
    }
}
