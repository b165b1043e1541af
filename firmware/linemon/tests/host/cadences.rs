//! Every cadence, ring frequency and rectification: recognised within one
//! cycle, with the right id, and reported abandoned when the ringing stops.

use linemon::line::{LineConfig, LineMonitor};
use linemon::{Cadence, Event, LineState};

use crate::sim::{RingWave, Rng, Timeline, near};

/// When ringing starts in the simulations (ms after the monitor starts).
pub(crate) const START: u32 = 1_000;

/// One ringing scenario.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ringing {
    pub(crate) cadence: Cadence,
    pub(crate) config: LineConfig,
    pub(crate) wave: RingWave,
    pub(crate) seed: u64,
    pub(crate) cycles: u32,
    /// Ring-input noise spikes per second.
    pub(crate) noise: f64,
    /// First tick given to the monitor (to cross the u32 wrap).
    pub(crate) t0: u32,
    /// Sampling period (1 or 2 ms).
    pub(crate) step_ms: usize,
    /// Cadence segment jitter (fraction).
    pub(crate) jitter: f64,
}

impl Ringing {
    pub(crate) fn new(cadence: Cadence, wave: RingWave, seed: u64) -> Self {
        Self {
            cadence,
            config: LineConfig::for_cadence(cadence),
            wave,
            seed,
            cycles: 2,
            noise: 0.0,
            t0: 0,
            step_ms: 1,
            jitter: 0.08,
        }
    }

    /// Simulates, then checks: exactly `Ringing` (right id, tick at the
    /// first burst, reported before one cycle is over) then `Abandoned`
    /// (every burst counted, tick at the end of the last burst).
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut rng = Rng::new(self.seed);
        let cycle = f64::from(self.cadence.cycle_ms()) * (1.0 + self.jitter);
        let len = START + (cycle * f64::from(self.cycles)) as u32 + self.config.ring_timeout_ms() + 2_000;
        let mut tl = Timeline::new(len as usize);
        let bursts = tl.ring_cadence(&mut rng, self.wave, self.cadence.segments(), START, self.cycles, self.jitter);
        if self.noise > 0.0 {
            tl.ring_noise(&mut rng, self.noise, 3);
        }
        let mut mon = LineMonitor::new(self.config);
        let events = tl.run(&mut mon, self.t0, self.step_ms);
        let period = self.wave.pulse_period_ms() as u32;
        // Burst edges are known to about one pulse period. Noise spikes
        // just outside a burst that happen to look like ring pulses (spaced
        // less than 1.6 periods) cannot be told apart and stretch it, by at
        // most one pulse gap each: allow two.
        let gap = u32::from(self.config.ring.max_pulse_gap_ms);
        let slack = if self.noise > 0.0 { period + 2 * gap + 10 } else { period + 10 };
        let ctx = || format!("{self:?}: events {events:?}");

        let [(seen_at, ringing), (_, abandoned)] = events[..] else {
            return Err(format!("expected Ringing + Abandoned; {}", ctx()));
        };
        if ringing.event != (Event::Ringing { cadence: self.cadence.id() }) {
            return Err(format!("wrong first event; {}", ctx()));
        }
        if !near(ringing.tick, START, slack) {
            return Err(format!("Ringing tick off; {}", ctx()));
        }
        if seen_at > START + self.cadence.cycle_ms() {
            return Err(format!("not recognised within one cycle (at {seen_at}); {}", ctx()));
        }
        // ... and in fact as soon as the last burst of the first cycle is
        // over (burst end detection: max_pulse_gap_ms after the last pulse).
        let first_cycle_end = bursts[self.cadence.bursts_per_cycle() - 1].1;
        if seen_at > first_cycle_end + gap + slack {
            return Err(format!("recognised late (at {seen_at}, cycle's bursts over at {first_cycle_end}); {}", ctx()));
        }
        let last_end = bursts.last().map_or(0, |b| b.1);
        let rings = self.cycles as usize * self.cadence.bursts_per_cycle();
        match abandoned.event {
            Event::Abandoned { rings: r, ring_ms } if usize::from(r) == rings => {
                if !near(abandoned.tick, last_end, slack) || ring_ms != abandoned.tick.wrapping_sub(ringing.tick) {
                    return Err(format!("Abandoned timing off (last burst ended {last_end}); {}", ctx()));
                }
            }
            _ => return Err(format!("expected Abandoned with {rings} rings; {}", ctx())),
        }
        if mon.state() != LineState::Idle {
            return Err(format!("ends in {:?}; {}", mon.state(), ctx()));
        }
        Ok(())
    }
}

const FREQS: [f64; 4] = [20.0, 25.0, 33.3, 50.0];

fn grid(config: impl Fn(Cadence) -> LineConfig) {
    for cadence in Cadence::BUILTIN {
        for freq in FREQS {
            for full_wave in [false, true] {
                for seed in 0..2 {
                    let mut r = Ringing::new(cadence, RingWave::new(freq, full_wave), seed);
                    r.config = config(cadence);
                    r.check().unwrap();
                }
            }
        }
    }
}

#[test]
fn builtin_cadences_single_profile() {
    grid(LineConfig::for_cadence);
}

#[test]
fn builtin_cadences_all_profiles_enabled() {
    grid(|_| LineConfig::default());
}

#[test]
fn sampled_every_2_ms_with_noise_across_tick_wrap() {
    for (i, cadence) in Cadence::BUILTIN.into_iter().enumerate() {
        let mut r = Ringing::new(cadence, RingWave::new(25.0, false), 40 + i as u64);
        r.step_ms = 2;
        r.noise = 0.3;
        r.t0 = u32::MAX - 3_000;
        r.cycles = 3;
        r.check().unwrap();
    }
}

#[test]
fn single_cycle_is_enough() {
    for cadence in Cadence::BUILTIN {
        let mut r = Ringing::new(cadence, RingWave::new(50.0, true), 7);
        r.cycles = 1;
        r.check().unwrap();
    }
}

#[test]
fn custom_cadence() {
    // North American distinctive ring 2: 0.8 on, 0.4 off, 0.8 on, 4.0 off.
    let distinctive = Cadence::new(0x80, &[800, 400, 800, 4000]);
    let mut r = Ringing::new(distinctive, RingWave::new(20.0, false), 3);
    r.config = LineConfig::with_cadences([Some(Cadence::US), Some(distinctive), None, None]);
    r.check().unwrap();
}

#[test]
fn wrong_country_is_not_ringing() {
    // A UK double ring on a line configured for France, and the reverse.
    for (ring, line) in [(Cadence::UK, Cadence::FR), (Cadence::FR, Cadence::UK), (Cadence::DE, Cadence::US)] {
        let mut rng = Rng::new(5);
        let mut tl = Timeline::new(30_000);
        tl.ring_cadence(&mut rng, RingWave::new(25.0, false), ring.segments(), START, 3, 0.02);
        let mut mon = LineMonitor::new(LineConfig::for_cadence(line));
        let events = tl.run(&mut mon, 0, 1);
        assert!(events.is_empty(), "{ring:?} on a {line:?} line: {events:?}");
        assert!(mon.stats().rejected_bursts > 0);
    }
}

#[test]
fn uk_ring_starting_mid_cycle_is_confirmed_one_cycle_later() {
    let mut rng = Rng::new(9);
    let mut tl = Timeline::new(20_000);
    let wave = RingWave::new(25.0, false);
    // the exchange's first burst is the second half of the double ring
    tl.ring_burst(&mut rng, wave, START, 400);
    tl.ring_cadence(&mut rng, wave, Cadence::UK.segments(), START + 2_400, 2, 0.0);
    let mut mon = LineMonitor::new(LineConfig::for_cadence(Cadence::UK));
    let events = tl.run(&mut mon, 0, 1);
    let (_, first) = events[0];
    assert_eq!(first.event, Event::Ringing { cadence: Cadence::UK.id() });
    assert!(near(first.tick, START + 2_400, 45), "{events:?}");
    assert!(matches!(events[1].1.event, Event::Abandoned { rings: 4, .. }), "{events:?}");
}
