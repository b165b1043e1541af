//! A line simulator: millisecond-resolution waveforms of the ring-detect,
//! hook and polarity inputs as the opto-couplers would show them, with
//! ring-frequency jitter, cadence jitter, noise spikes and contact bounce.

use linemon::line::{LineEvent, LineMonitor, Sample};

/// splitmix64: small, deterministic, good enough for test waveforms.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi]`.
    pub(crate) fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in `[lo, hi]`.
    pub(crate) fn int(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next_u64() % u64::from(hi - lo + 1)) as u32
    }
}

/// The ring voltage as the ring-detect opto shows it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingWave {
    /// Ring frequency, 20-50 Hz.
    pub(crate) freq_hz: f64,
    /// Bridge rectifier: two pulses per cycle instead of one.
    pub(crate) full_wave: bool,
    /// Fraction of each pulse period the opto is lit.
    pub(crate) duty: f64,
    /// Random shift of each pulse (ms, ±).
    pub(crate) jitter_ms: f64,
}

impl RingWave {
    pub(crate) const fn new(freq_hz: f64, full_wave: bool) -> Self {
        Self { freq_hz, full_wave, duty: 0.35, jitter_ms: 1.5 }
    }

    pub(crate) fn pulse_period_ms(&self) -> f64 {
        let p = 1000.0 / self.freq_hz;
        if self.full_wave { p / 2.0 } else { p }
    }
}

/// One line's inputs, one sample per millisecond (index = ms).
#[derive(Clone, Debug)]
pub(crate) struct Timeline {
    pub(crate) ring: Vec<bool>,
    pub(crate) hook: Vec<bool>,
    pub(crate) reversed: Vec<bool>,
}

impl Timeline {
    pub(crate) fn new(len_ms: usize) -> Self {
        Self { ring: vec![false; len_ms], hook: vec![false; len_ms], reversed: vec![false; len_ms] }
    }

    /// Ring voltage on during `[start, start + len)`: opto pulses.
    pub(crate) fn ring_burst(&mut self, rng: &mut Rng, wave: RingWave, start: u32, len: u32) {
        let period = wave.pulse_period_ms();
        let width = (period * wave.duty).max(1.0);
        // The voltage starts at a random phase of its cycle.
        let mut t = f64::from(start) + rng.between(0.0, period);
        while t < f64::from(start + len) {
            let s = (t + rng.between(-wave.jitter_ms, wave.jitter_ms)).max(f64::from(start));
            let w = (width * rng.between(0.8, 1.2)).round().max(1.0);
            let (a, b) = (s.round() as usize, (s + w).round() as usize);
            for i in a..b.min((start + len) as usize).min(self.ring.len()) {
                self.ring[i] = true;
            }
            t += period;
        }
    }

    /// Rings `cycles` cycles of `segments` (on, off, ...) from `start`,
    /// each segment stretched by up to ±`jitter` (fraction). Returns the
    /// true bursts `(start, end)`.
    pub(crate) fn ring_cadence(
        &mut self,
        rng: &mut Rng,
        wave: RingWave,
        segments: &[u16],
        start: u32,
        cycles: u32,
        jitter: f64,
    ) -> Vec<(u32, u32)> {
        let mut bursts = Vec::new();
        let mut t = start;
        for _ in 0..cycles {
            for pair in segments.chunks(2) {
                let on = (f64::from(pair[0]) * rng.between(1.0 - jitter, 1.0 + jitter)).round() as u32;
                let off = (f64::from(pair[1]) * rng.between(1.0 - jitter, 1.0 + jitter)).round() as u32;
                self.ring_burst(rng, wave, t, on);
                bursts.push((t, t + on));
                t += on + off;
            }
        }
        bursts
    }

    /// The hook input goes to `off_hook` at `at`, after bouncing for a
    /// random time up to `bounce_ms`. Returns when it settled.
    pub(crate) fn hook_switch(&mut self, rng: &mut Rng, at: u32, off_hook: bool, bounce_ms: u32) -> u32 {
        let settle = at + rng.int(0, bounce_ms);
        let mut t = at;
        let mut level = off_hook;
        while t < settle {
            let run = rng.int(1, 4).min(settle - t);
            for i in t..t + run {
                self.hook[i as usize] = level;
            }
            level = !level;
            t += run;
        }
        for v in &mut self.hook[settle as usize..] {
            *v = off_hook;
        }
        // The last bounce may already have had the final level.
        let mut settled = settle;
        while settled > at && self.hook[settled as usize - 1] == off_hook {
            settled -= 1;
        }
        settled
    }

    /// The polarity input reverses (or not) from `at` on, with bounce.
    pub(crate) fn polarity_switch(&mut self, rng: &mut Rng, at: u32, reversed: bool, bounce_ms: u32) {
        let settle = at + rng.int(0, bounce_ms);
        for t in at..settle {
            self.reversed[t as usize] = rng.unit() < 0.5;
        }
        for v in &mut self.reversed[settle as usize..] {
            *v = reversed;
        }
    }

    /// Ring-input noise: spikes of 1..=`max_width` ms at `rate_per_s` on
    /// average, anywhere.
    pub(crate) fn ring_noise(&mut self, rng: &mut Rng, rate_per_s: f64, max_width: u32) {
        let p = rate_per_s / 1000.0;
        let len = self.ring.len();
        for t in 0..len {
            if rng.unit() < p {
                let w = rng.int(1, max_width) as usize;
                for v in &mut self.ring[t..(t + w).min(len)] {
                    *v = true;
                }
            }
        }
    }

    /// Hook-input glitches: blips of the opposite level, 1..=`max_width` ms.
    pub(crate) fn hook_noise(&mut self, rng: &mut Rng, rate_per_s: f64, max_width: u32) {
        let p = rate_per_s / 1000.0;
        let len = self.hook.len();
        let mut t = 0;
        while t < len {
            if rng.unit() < p {
                let w = rng.int(1, max_width) as usize;
                let level = !self.hook[t];
                for v in &mut self.hook[t..(t + w).min(len)] {
                    *v = level;
                }
                t += w + 1;
            } else {
                t += 1;
            }
        }
    }

    /// Feeds the timeline to `monitor`, one sample every `step_ms`, ticks
    /// starting at `t0`. Returns `(index of the step that reported it, event)`.
    pub(crate) fn run(&self, monitor: &mut LineMonitor, t0: u32, step_ms: usize) -> Vec<(u32, LineEvent)> {
        let mut out = Vec::new();
        for i in (0..self.ring.len()).step_by(step_ms) {
            let sample = Sample { ring: self.ring[i], off_hook: self.hook[i], reversed: self.reversed[i] };
            for e in monitor.step(t0.wrapping_add(i as u32), sample) {
                out.push((i as u32, LineEvent { tick: e.tick.wrapping_sub(t0), event: e.event }));
            }
        }
        out
    }
}

/// `|a - b| <= tol`.
pub(crate) fn near(a: u32, b: u32, tol: u32) -> bool {
    a.abs_diff(b) <= tol
}
