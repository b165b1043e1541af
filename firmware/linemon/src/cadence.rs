//! Ring cadences by country, and matching measured bursts against them.
//!
//! A cadence is a cycle of `on, off[, on, off ...]` durations, at most
//! [`MAX_SEGMENTS`] of them, always starting with "on". The built-in ones:
//!
//! | constant | id | cycle (s) | where |
//! |---|---|---|---|
//! | [`Cadence::FR`] | 1 | 1.5 on, 3.5 off | France |
//! | [`Cadence::US`] | 2 | 2.0 on, 4.0 off | USA / Canada (NANP) |
//! | [`Cadence::UK`] | 3 | 0.4 on, 0.2 off, 0.4 on, 2.0 off | UK (BT double ring) |
//! | [`Cadence::DE`] | 4 | 1.0 on, 4.0 off | Germany |
//!
//! Others are built with [`Cadence::new`]/[`Cadence::try_new`] and any id
//! other than [`UNCONFIRMED`] (ids >= 0x80 are suggested for local ones).
//!
//! A measured duration matches a nominal one when
//! `|measured - nominal| <= nominal * percent / 100 + slack_ms`
//! ([`Tolerance`]). The percentage covers the exchange's own tolerance; the
//! absolute slack covers the measurement, which is only good to about one
//! ring period (up to 50 ms) at each end of a burst.
//!
//! [`CadenceMatcher`] follows every configured cadence at once. A cadence
//! is *confirmed* when a chain of consecutive bursts matches all the "on"
//! segments of one cycle and the pauses between them, i.e. at the end of
//! the last burst of the first cycle: well within one cycle, before its
//! final pause. When several cadences confirm on the same burst, the one
//! whose nominal length is closest (relative to its tolerance) wins. A
//! burst that does not fit restarts the chain (so a ring
//! that starts in the middle of a double-ring cycle is confirmed one cycle
//! later).

use crate::time::gap;

/// Most segments (on + off) in one cadence cycle.
pub const MAX_SEGMENTS: usize = 8;
/// Most cadences a line follows at once.
pub const MAX_CADENCES: usize = 4;
/// Cadence id reported when a call was answered before its cadence could be
/// confirmed (picked up during the first burst).
pub const UNCONFIRMED: u8 = 0;

/// A ring cadence: a cycle of on/off durations in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Cadence {
    id: u8,
    segments: [u16; MAX_SEGMENTS],
    len: u8,
}

/// Why [`Cadence::try_new`] refused a cadence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CadenceError {
    /// Not 2, 4, 6 or 8 segments.
    SegmentCount,
    /// A segment of 0 ms.
    ZeroSegment,
    /// Id 0 is reserved for [`UNCONFIRMED`].
    ReservedId,
}

impl Cadence {
    /// France: 1.5 s on, 3.5 s off.
    pub const FR: Self = Self::new(1, &[1500, 3500]);
    /// North America: 2 s on, 4 s off.
    pub const US: Self = Self::new(2, &[2000, 4000]);
    /// United Kingdom: 0.4 s on, 0.2 s off, 0.4 s on, 2 s off.
    pub const UK: Self = Self::new(3, &[400, 200, 400, 2000]);
    /// Germany: 1 s on, 4 s off.
    pub const DE: Self = Self::new(4, &[1000, 4000]);
    /// The built-in cadences, in the order they are tried.
    pub const BUILTIN: [Self; 4] = [Self::FR, Self::US, Self::UK, Self::DE];

    /// A cadence from its id and `on, off, ...` durations in ms.
    ///
    /// # Panics
    ///
    /// When [`Cadence::try_new`] would fail; in a `const` this is a compile
    /// error.
    #[must_use]
    pub const fn new(id: u8, segments: &[u16]) -> Self {
        match Self::try_new(id, segments) {
            Ok(c) => c,
            Err(_) => panic!("invalid cadence"),
        }
    }

    /// A cadence from its id and `on, off, ...` durations in ms.
    ///
    /// # Errors
    ///
    /// An odd, empty or too long list of segments, a 0 ms segment, or id 0.
    pub const fn try_new(id: u8, segments: &[u16]) -> Result<Self, CadenceError> {
        if id == UNCONFIRMED {
            return Err(CadenceError::ReservedId);
        }
        let len = segments.len();
        if len == 0 || !len.is_multiple_of(2) || len > MAX_SEGMENTS {
            return Err(CadenceError::SegmentCount);
        }
        let mut out = [0u16; MAX_SEGMENTS];
        let mut i = 0;
        while i < len {
            if segments[i] == 0 {
                return Err(CadenceError::ZeroSegment);
            }
            out[i] = segments[i];
            i += 1;
        }
        Ok(Self { id, segments: out, len: len as u8 })
    }

    /// The id reported in `Ringing` frames.
    #[must_use]
    pub const fn id(&self) -> u8 {
        self.id
    }

    /// `on, off, ...` in ms.
    #[must_use]
    pub fn segments(&self) -> &[u16] {
        &self.segments[..usize::from(self.len)]
    }

    /// Number of bursts per cycle.
    #[must_use]
    pub const fn bursts_per_cycle(&self) -> usize {
        self.len as usize / 2
    }

    /// Length of burst `i` of the cycle (ms).
    #[must_use]
    pub const fn on_ms(&self, i: usize) -> u16 {
        self.segments[2 * (i % self.bursts_per_cycle())]
    }

    /// Length of the pause after burst `i` of the cycle (ms).
    #[must_use]
    pub const fn off_ms(&self, i: usize) -> u16 {
        self.segments[2 * (i % self.bursts_per_cycle()) + 1]
    }

    /// Longest pause of the cycle (ms).
    #[must_use]
    pub fn longest_off_ms(&self) -> u16 {
        self.segments().iter().skip(1).step_by(2).copied().max().unwrap_or(0)
    }

    /// Shortest burst of the cycle (ms).
    #[must_use]
    pub fn shortest_on_ms(&self) -> u16 {
        self.segments().iter().step_by(2).copied().min().unwrap_or(0)
    }

    /// Length of one cycle (ms).
    #[must_use]
    pub fn cycle_ms(&self) -> u32 {
        self.segments().iter().map(|&s| u32::from(s)).sum()
    }
}

/// How far a measured duration may be from the nominal one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Tolerance {
    /// Relative part, in percent of the nominal duration. Default 20.
    pub percent: u8,
    /// Absolute part (ms), for the measurement error. Default 60.
    pub slack_ms: u16,
}

impl Tolerance {
    /// ±20 % + 60 ms.
    pub const DEFAULT: Self = Self { percent: 20, slack_ms: 60 };

    fn margin(&self, nominal: u16) -> u32 {
        u32::from(nominal) * u32::from(self.percent) / 100 + u32::from(self.slack_ms)
    }

    /// Whether `measured` is close enough to `nominal`.
    #[must_use]
    pub fn accepts(&self, nominal: u16, measured: u32) -> bool {
        measured.abs_diff(u32::from(nominal)) <= self.margin(nominal)
    }

    /// How far `measured` is from `nominal`, in thousandths of the margin
    /// (0 = exact, 1000 = at the edge of acceptance).
    #[must_use]
    pub fn score(&self, nominal: u16, measured: u32) -> u32 {
        let margin = self.margin(nominal).max(1);
        (measured.abs_diff(u32::from(nominal)).min(u32::MAX / 1000) * 1000) / margin
    }

    /// The shortest duration accepted for `nominal`.
    #[must_use]
    pub fn min(&self, nominal: u16) -> u32 {
        u32::from(nominal).saturating_sub(self.margin(nominal))
    }

    /// The longest duration accepted for `nominal`.
    #[must_use]
    pub fn max(&self, nominal: u16) -> u32 {
        u32::from(nominal) + self.margin(nominal)
    }
}

impl Default for Tolerance {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Result of feeding one burst to a [`CadenceMatcher`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MatchOutcome {
    /// A cadence just completed one cycle.
    Confirmed {
        /// Its id.
        cadence: u8,
        /// Start of the first burst of the matching chain.
        since: u32,
        /// Bursts in the chain.
        bursts: u16,
    },
    /// The burst fits a cadence, which is not confirmed yet.
    Partial,
    /// The burst fits no configured cadence.
    Rejected,
}

#[derive(Clone, Copy, Debug, Default)]
struct Track {
    next_on: u8,
    chain: u16,
    since: u32,
}

/// Follows several cadences over a stream of bursts. See the module docs.
#[derive(Clone, Debug)]
pub struct CadenceMatcher {
    tracks: [Track; MAX_CADENCES],
    prev_end: Option<u32>,
}

impl Default for CadenceMatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl CadenceMatcher {
    /// A matcher with no history.
    #[must_use]
    pub const fn new() -> Self {
        Self { tracks: [Track { next_on: 0, chain: 0, since: 0 }; MAX_CADENCES], prev_end: None }
    }

    /// Forgets every chain.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Feeds a completed burst.
    pub fn on_burst(
        &mut self,
        cadences: &[Option<Cadence>; MAX_CADENCES],
        tolerance: Tolerance,
        start: u32,
        end: u32,
    ) -> MatchOutcome {
        let on = gap(start, end);
        let off = self.prev_end.map(|p| gap(p, start));
        self.prev_end = Some(end);
        let mut confirmed = None;
        let mut partial = false;
        for (track, cadence) in self.tracks.iter_mut().zip(cadences) {
            let Some(c) = cadence else { continue };
            let n = c.bursts_per_cycle();
            let k = usize::from(track.next_on);
            let off_ok = |o: Option<u32>, i: usize| o.is_some_and(|o| tolerance.accepts(c.off_ms(i), o));
            let extends = track.chain > 0 && tolerance.accepts(c.on_ms(k), on) && off_ok(off, k + n - 1);
            let matched = if extends {
                track.chain = track.chain.saturating_add(1);
                track.next_on = ((k + 1) % n) as u8;
                k
            } else if tolerance.accepts(c.on_ms(0), on) {
                track.chain = 1;
                track.since = start;
                track.next_on = (1 % n) as u8;
                0
            } else {
                *track = Track::default();
                continue;
            };
            partial = true;
            if usize::from(track.chain) == n {
                // Several cadences may confirm on the same burst (US 2.0 s
                // and FR 1.5 s overlap at the edges of their tolerances):
                // keep the closest.
                let score = tolerance.score(c.on_ms(matched), on);
                if confirmed.is_none_or(|(best, _)| score < best) {
                    let outcome = MatchOutcome::Confirmed { cadence: c.id(), since: track.since, bursts: track.chain };
                    confirmed = Some((score, outcome));
                }
            }
        }
        match (confirmed, partial) {
            (Some((_, c)), _) => c,
            (None, true) => MatchOutcome::Partial,
            (None, false) => MatchOutcome::Rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(c: &[Cadence]) -> [Option<Cadence>; MAX_CADENCES] {
        let mut out = [None; MAX_CADENCES];
        for (o, c) in out.iter_mut().zip(c) {
            *o = Some(*c);
        }
        out
    }

    #[test]
    fn builtin_shapes() {
        assert_eq!(Cadence::UK.bursts_per_cycle(), 2);
        assert_eq!(Cadence::UK.longest_off_ms(), 2000);
        assert_eq!(Cadence::UK.shortest_on_ms(), 400);
        assert_eq!(Cadence::FR.cycle_ms(), 5000);
        assert_eq!(Cadence::try_new(9, &[100]), Err(CadenceError::SegmentCount));
        assert_eq!(Cadence::try_new(0, &[100, 100]), Err(CadenceError::ReservedId));
        assert_eq!(Cadence::try_new(9, &[100, 0]), Err(CadenceError::ZeroSegment));
    }

    #[test]
    fn tolerance() {
        let t = Tolerance::DEFAULT;
        assert!(t.accepts(1000, 1260));
        assert!(!t.accepts(1000, 1261));
        assert!(t.accepts(200, 120));
        assert!(!t.accepts(200, 99));
        assert_eq!(t.max(2000), 2460);
        assert_eq!(t.min(2000), 1540);
        assert_eq!(t.min(100), 20);
        assert_eq!(t.min(50), 0);
    }

    #[test]
    fn uk_confirmed_on_second_burst_even_mid_cycle() {
        let cs = set(&[Cadence::UK]);
        let t = Tolerance::DEFAULT;
        let mut m = CadenceMatcher::new();
        // ring starts with the second burst of a cycle
        assert_eq!(m.on_burst(&cs, t, 0, 400), MatchOutcome::Partial);
        assert_eq!(m.on_burst(&cs, t, 2400, 2800), MatchOutcome::Partial);
        assert_eq!(m.on_burst(&cs, t, 3000, 3400), MatchOutcome::Confirmed { cadence: 3, since: 2400, bursts: 2 });
    }

    #[test]
    fn closest_wins() {
        let cs = set(&Cadence::BUILTIN);
        let t = Tolerance::DEFAULT;
        let mut m = CadenceMatcher::new();
        // 1.82 s is within both FR (1.5 s) and US (2 s) tolerances
        assert_eq!(m.on_burst(&cs, t, 0, 1820), MatchOutcome::Confirmed { cadence: 2, since: 0, bursts: 1 });
        m.reset();
        assert_eq!(m.on_burst(&cs, t, 0, 1700), MatchOutcome::Confirmed { cadence: 1, since: 0, bursts: 1 });
    }

    #[test]
    fn fr_vs_de() {
        let cs = set(&Cadence::BUILTIN);
        let t = Tolerance::DEFAULT;
        let mut m = CadenceMatcher::new();
        assert_eq!(m.on_burst(&cs, t, 0, 1000), MatchOutcome::Confirmed { cadence: 4, since: 0, bursts: 1 });
        m.reset();
        assert_eq!(m.on_burst(&cs, t, 0, 1520), MatchOutcome::Confirmed { cadence: 1, since: 0, bursts: 1 });
        m.reset();
        assert_eq!(m.on_burst(&cs, t, 0, 150), MatchOutcome::Rejected);
    }
}
