//! Debouncing of slow contact-like inputs (hook / loop current, polarity).

use crate::time::elapsed;

/// What a [`Debouncer`] reports when its stable level is first known or changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Debounced {
    /// The first stable level after start-up: a state to adopt, not an event.
    Initial(bool),
    /// The stable level changed.
    Changed {
        /// The new level.
        level: bool,
        /// Tick of the first sample of the new level's stable run, i.e. when
        /// the input really settled, not when the debouncer noticed.
        at: u32,
    },
}

/// Accepts a level only once it has held for `hold_ms` without a change.
///
/// Contact bounce (a hook switch bounces for up to ~20 ms) restarts the
/// hold time at every transition, so a bouncing switch is reported once,
/// with the tick at which it settled; a blip shorter than `hold_ms` that
/// returns to the previous level is not reported at all.
///
/// The input must be sampled several times per `hold_ms` (every 1-2 ms is
/// the intended rate): a level seen on a single sample that happens to be
/// `hold_ms` after the previous one would be accepted.
#[derive(Clone, Debug)]
pub struct Debouncer {
    hold_ms: u16,
    stable: Option<bool>,
    candidate: bool,
    since: u32,
    started: bool,
}

impl Debouncer {
    /// A debouncer that needs `hold_ms` of a steady level.
    #[must_use]
    pub const fn new(hold_ms: u16) -> Self {
        Self { hold_ms, stable: None, candidate: false, since: 0, started: false }
    }

    /// The accepted level, once one is known.
    #[must_use]
    pub const fn level(&self) -> Option<bool> {
        self.stable
    }

    /// Feeds one sample taken at `now`.
    pub fn update(&mut self, now: u32, level: bool) -> Option<Debounced> {
        if !self.started || level != self.candidate {
            self.started = true;
            self.candidate = level;
            self.since = now;
        }
        if self.stable == Some(self.candidate) || elapsed(now, self.since) < u32::from(self.hold_ms) {
            return None;
        }
        let previous = self.stable.replace(self.candidate);
        Some(match previous {
            None => Debounced::Initial(self.candidate),
            Some(_) => Debounced::Changed { level: self.candidate, at: self.since },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d: &mut Debouncer, from: u32, to: u32, level: bool) -> Option<Debounced> {
        let mut out = None;
        for t in from..to {
            if let Some(e) = d.update(t, level) {
                assert!(out.is_none(), "two reports in one steady run");
                out = Some(e);
            }
        }
        out
    }

    #[test]
    fn initial_then_change_backdated() {
        let mut d = Debouncer::new(30);
        assert_eq!(run(&mut d, 0, 100, false), Some(Debounced::Initial(false)));
        // bounce 100..115, settles high at 115
        for t in 100..115 {
            assert_eq!(d.update(t, t % 3 == 1), None);
        }
        assert_eq!(run(&mut d, 115, 200, true), Some(Debounced::Changed { level: true, at: 115 }));
        assert_eq!(d.level(), Some(true));
    }

    #[test]
    fn short_blip_ignored() {
        let mut d = Debouncer::new(30);
        run(&mut d, 0, 50, false);
        assert_eq!(run(&mut d, 50, 79, true), None);
        assert_eq!(run(&mut d, 79, 500, false), None);
    }
}
