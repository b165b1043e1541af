//! Ring-signal integration: opto pulses in, ring bursts out.
//!
//! A 20-50 Hz ring voltage seen through an opto-coupler gives one pulse per
//! cycle (half-wave) or two (full-wave bridge): a rising edge every 10-50 ms
//! while the bell rings, nothing in the silent part of the cadence. The
//! detector counts rising edges:
//!
//! * an edge closer than [`RingTiming::min_pulse_interval_ms`] to the last
//!   accepted one is chatter of the same pulse and ignored;
//! * edges no more than [`RingTiming::max_pulse_gap_ms`] apart belong to the
//!   same run (the gap tolerates one lost pulse at 25 Hz);
//! * a run becomes a ring *burst* once it has [`RingTiming::min_pulses`]
//!   pulses in a row at a steady rate (each interval within 25 % + 3 ms of
//!   the one before): a ring signal is periodic, random noise spikes are
//!   not, so neither isolated spikes nor a flurry of them make a burst;
//! * the burst ends when no pulse came for `max_pulse_gap_ms`. Its start is
//!   the first pulse; its end is estimated as the last pulse plus one mean
//!   pulse interval, so the measured length is right to within about one
//!   ring period. One or two pulses at either end separated from the rest
//!   by more than 1.6 mean intervals are taken for noise spikes next to the
//!   burst and left out of its length.
//!
//! A constantly active input (a stuck opto, DC on the line) has no edges and
//! so is never a ring.

use crate::time::elapsed;

/// Timing of the pulse integrator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RingTiming {
    /// Rising edges closer than this to the last accepted one are chatter (ms).
    /// Default 7: below the 10 ms of a 50 Hz full-wave signal.
    pub min_pulse_interval_ms: u16,
    /// Longest silence between two pulses of one burst (ms). Default 90:
    /// above the 50 ms period of a 20 Hz half-wave signal, and enough to
    /// bridge one missing pulse at 25 Hz; well below the shortest cadence
    /// pause (UK 200 ms).
    pub max_pulse_gap_ms: u16,
    /// Pulses at a steady rate needed before a run is a burst (at least 2).
    /// Default 4.
    pub min_pulses: u8,
}

impl RingTiming {
    /// Default timing, usable for any 20-50 Hz ring signal.
    pub const DEFAULT: Self = Self { min_pulse_interval_ms: 7, max_pulse_gap_ms: 90, min_pulses: 4 };
}

impl Default for RingTiming {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One ring burst (the "on" part of a cadence), in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Burst {
    /// First pulse.
    pub start: u32,
    /// Estimated end of the ring voltage (last pulse + mean pulse interval).
    pub end: u32,
}

impl Burst {
    /// Length of the burst in ms.
    #[must_use]
    pub const fn on_ms(&self) -> u32 {
        elapsed(self.end, self.start)
    }
}

/// What the detector reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BurstEvent {
    /// A run of pulses just qualified as a burst; `at` is its first pulse.
    Started {
        /// Tick of the first pulse.
        at: u32,
    },
    /// A burst ended (reported `max_pulse_gap_ms` after its last pulse).
    Ended(Burst),
}

/// Pulses of a run: only the first three and the last three are kept,
/// which is all the end-of-burst estimate needs.
#[derive(Clone, Copy, Debug)]
struct Run {
    head: [u32; 3],
    tail: [u32; 3],
    pulses: u16,
    /// Interval before the last pulse.
    interval: u32,
    /// Consecutive intervals, up to the last one, each close to the one
    /// before it.
    steady: u16,
    valid: bool,
}

impl Run {
    const fn new(now: u32) -> Self {
        Self { head: [now; 3], tail: [now; 3], pulses: 1, interval: 0, steady: 0, valid: false }
    }

    const fn first(&self) -> u32 {
        self.head[0]
    }

    const fn last(&self) -> u32 {
        self.tail[2]
    }

    fn pulse(&mut self, now: u32) {
        let interval = elapsed(now, self.last());
        let (a, b) = (interval.min(self.interval), interval.max(self.interval));
        self.steady = if b - a <= b / 4 + 3 { self.steady.saturating_add(1) } else { 1 };
        self.interval = interval;
        if let Some(slot) = self.head.get_mut(usize::from(self.pulses)) {
            *slot = now;
        }
        self.tail = [self.tail[1], self.tail[2], now];
        self.pulses = self.pulses.saturating_add(1);
    }

    fn burst(&self) -> Burst {
        let (first, last) = (self.first(), self.last());
        if self.pulses < 7 {
            let mean = elapsed(last, first) / u32::from(self.pulses.saturating_sub(1).max(1));
            return Burst { start: first, end: last.wrapping_add(mean) };
        }
        // Mean of the inner intervals (third pulse .. third from last), so
        // that up to two stray spikes just before or after the burst stand
        // out and are left out of its length.
        let [h0, h1, h2] = self.head;
        let [t0, t1, t2] = self.tail;
        let mean = elapsed(t0, h2) / u32::from(self.pulses - 5);
        let limit = mean + mean * 3 / 5 + 3;
        let outlier = |a: u32, b: u32| elapsed(b, a) > limit;
        let start = if outlier(h1, h2) {
            h2
        } else if outlier(h0, h1) {
            h1
        } else {
            h0
        };
        let end = if outlier(t0, t1) {
            t0
        } else if outlier(t1, t2) {
            t1
        } else {
            t2
        };
        Burst { start, end: end.wrapping_add(mean) }
    }
}

/// Turns ring-detect samples into ring bursts. See the module docs.
#[derive(Clone, Debug)]
pub struct RingDetector {
    timing: RingTiming,
    level: bool,
    run: Option<Run>,
}

impl RingDetector {
    /// A detector with the given timing.
    #[must_use]
    pub const fn new(timing: RingTiming) -> Self {
        Self { timing, level: false, run: None }
    }

    /// Feeds one sample (`active` = the opto conducts) taken at `now`.
    pub fn update(&mut self, now: u32, active: bool) -> Option<BurstEvent> {
        let rising = active && !self.level;
        self.level = active;
        let mut event = None;
        if let Some(run) = self.run
            && elapsed(now, run.last()) > u32::from(self.timing.max_pulse_gap_ms)
        {
            self.run = None;
            if run.valid {
                event = Some(BurstEvent::Ended(run.burst()));
            }
        }
        if rising {
            match &mut self.run {
                Some(run) => {
                    if elapsed(now, run.last()) >= u32::from(self.timing.min_pulse_interval_ms) {
                        run.pulse(now);
                        if !run.valid && run.steady + 1 >= u16::from(self.timing.min_pulses.max(2)) {
                            run.valid = true;
                            event = Some(BurstEvent::Started { at: run.first() });
                        }
                    }
                }
                None => self.run = Some(Run::new(now)),
            }
        }
        event
    }

    /// True while pulses are arriving (a run exists, qualified or not).
    #[must_use]
    pub const fn pulses_present(&self) -> bool {
        self.run.is_some()
    }

    /// The burst in progress, if the current run has qualified: its first
    /// pulse and its latest pulse.
    #[must_use]
    pub fn current_burst(&self) -> Option<(u32, u32)> {
        self.run.filter(|r| r.valid).map(|r| (r.first(), r.last()))
    }

    /// Forgets any run in progress (used when the line goes off-hook).
    pub fn reset(&mut self) {
        self.run = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Half-wave 25 Hz: 12 ms pulse every 40 ms.
    fn ring(det: &mut RingDetector, from: u32, to: u32, out: &mut [Option<BurstEvent>]) -> usize {
        let mut n = 0;
        for t in from..to {
            let active = (t - from) % 40 < 12;
            if let Some(e) = det.update(t, active) {
                out[n] = Some(e);
                n += 1;
            }
        }
        n
    }

    #[test]
    fn burst_measured() {
        let mut det = RingDetector::new(RingTiming::DEFAULT);
        let mut out = [None; 4];
        let n = ring(&mut det, 1000, 2500, &mut out);
        assert_eq!(n, 1);
        assert_eq!(out[0], Some(BurstEvent::Started { at: 1000 }));
        let mut ended = None;
        for t in 2500..3000 {
            if let Some(e) = det.update(t, false) {
                ended = Some(e);
            }
        }
        let Some(BurstEvent::Ended(b)) = ended else { panic!("no end: {ended:?}") };
        assert_eq!(b.start, 1000);
        // last pulse at 2480, + one 40 ms period
        assert_eq!(b.on_ms(), 1520);
        assert!(!det.pulses_present());
    }

    #[test]
    fn stuck_high_is_not_ring() {
        let mut det = RingDetector::new(RingTiming::DEFAULT);
        for t in 0..5000 {
            assert_eq!(det.update(t, true), None);
        }
    }

    #[test]
    fn chatter_is_one_pulse() {
        let mut det = RingDetector::new(RingTiming::DEFAULT);
        // three spikes with chatter, 200 ms apart: never a burst
        for t in 0..1000u32 {
            let phase = t % 200;
            let active = phase < 5 && phase % 2 == 0;
            assert_eq!(det.update(t, active), None);
        }
    }

    #[test]
    fn spike_next_to_burst_is_not_counted() {
        let mut det = RingDetector::new(RingTiming::DEFAULT);
        let mut ended = None;
        for t in 0..2000u32 {
            // spike at 920, burst 1000..1400 at 25 Hz, spike at 1450
            let burst = (1000..1400).contains(&t) && (t - 1000) % 40 < 12;
            let active = burst || t == 920 || t == 1450;
            if let Some(BurstEvent::Ended(b)) = det.update(t, active) {
                ended = Some(b);
            }
        }
        assert_eq!(ended, Some(Burst { start: 1000, end: 1400 }));
    }

    #[test]
    fn two_spikes_before_burst_are_not_counted() {
        let mut det = RingDetector::new(RingTiming::DEFAULT);
        let mut ended = None;
        for t in 0..2000u32 {
            let burst = (1000..1400).contains(&t) && (t - 1000) % 40 < 12;
            let active = burst || t == 850 || t == 920;
            if let Some(BurstEvent::Ended(b)) = det.update(t, active) {
                ended = Some(b);
            }
        }
        assert_eq!(ended, Some(Burst { start: 1000, end: 1400 }));
    }

    #[test]
    fn irregular_spikes_are_not_a_burst() {
        let mut det = RingDetector::new(RingTiming::DEFAULT);
        // spikes 10, 60, 25, 80, 15, 45, 70 ms apart: all within the pulse
        // gap, never three similar intervals in a row
        let mut t = 100;
        for dt in [10, 60, 25, 80, 15, 45, 70, 12, 50] {
            t += dt;
            assert_eq!(det.update(t, true), None);
            assert_eq!(det.update(t + 1, false), None);
        }
        for t in t + 2..t + 500 {
            assert_eq!(det.update(t, false), None);
        }
    }
}
