//! The per-line state machine.
//!
//! [`LineMonitor::step`] takes one [`Sample`] of the three inputs with its
//! tick and returns the [`Events`] it completes. It owns a
//! [`RingDetector`], a [`CadenceMatcher`] and two [`Debouncer`]s:
//!
//! ```text
//!              cadence confirmed                 off-hook
//!   Idle ───────────────────────────► Ringing ─────────────► Answered
//!    │ ▲   no burst for the longest      │                       │
//!    │ └──────── pause + tolerance ──────┘ (Abandoned)           │ on-hook
//!    │ off-hook, no ring (OffHook)                               │ > hangup_ms
//!    └───────────────────────────────► OffHook ──────────────► HungUp ──► Idle
//!                                        on-hook > hangup_ms        guard
//! ```
//!
//! * Going off-hook while a ring burst is in progress or just heard (before
//!   the cadence could be confirmed) is still an incoming call: `Ringing`
//!   with cadence [`UNCONFIRMED`] is reported, then `Answered`.
//! * An on-hook break shorter than [`LineConfig::hangup_ms`] is a hook flash
//!   if it lasted at least [`LineConfig::flash_min_ms`], else (dial pulses,
//!   glitches) nothing.
//! * Ring pulses while off-hook are ignored; while ringing, a burst shorter
//!   than the confirmed cadence allows (a run of noise spikes) is not
//!   counted as a ring.
//! * At start-up the state stays `Starting` until the hook input has been
//!   stable for the debounce time; a line already off-hook then is a call
//!   of [`Direction::Unknown`] and reports nothing until it hangs up.
//!
//! Every event carries the tick at which it happened, which may be earlier
//! than the `step` that reports it (debounce time, burst-end detection,
//! cadence confirmation).

use crate::cadence::{Cadence, CadenceMatcher, MAX_CADENCES, MatchOutcome, Tolerance, UNCONFIRMED};
use crate::debounce::{Debounced, Debouncer};
use crate::frame::{Direction, Event};
use crate::ring::{BurstEvent, RingDetector, RingTiming};
use crate::time::{elapsed, gap};

/// Logical levels of the inputs at one instant (active = `true`; pin
/// polarity is handled by [`crate::pins`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Sample {
    /// The ring-detect opto conducts.
    pub ring: bool,
    /// Loop current flows (a phone is off-hook).
    pub off_hook: bool,
    /// Line polarity is reversed.
    pub reversed: bool,
}

/// Settings of one line. `Default` follows every built-in cadence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LineConfig {
    /// Cadences to recognise, tried in order.
    pub cadences: [Option<Cadence>; MAX_CADENCES],
    /// Tolerance of cadence matching.
    pub tolerance: Tolerance,
    /// Pulse integration.
    pub ring: RingTiming,
    /// Hook input must be steady this long (ms); above switch bounce (20 ms). Default 30.
    pub hook_debounce_ms: u16,
    /// Whether a polarity-reversal input is wired.
    pub polarity: bool,
    /// Polarity input must be steady this long (ms); above half a ring
    /// cycle, so ring voltage does not toggle it. Default 40.
    pub polarity_debounce_ms: u16,
    /// Shortest on-hook break reported as a flash (ms); dial pulses (about
    /// 60-67 ms) are shorter. Default 90.
    pub flash_min_ms: u16,
    /// On-hook for this long (ms) is a hang-up; shorter is a flash. Default 800.
    pub hangup_ms: u16,
    /// Time spent in `HungUp` before `Idle` (ms). Default 1000.
    pub hung_up_guard_ms: u16,
    /// A burst (in progress or just heard) at least this long (ms) makes an
    /// off-hook an answer rather than an outgoing call. Default 150.
    pub answer_evidence_ms: u16,
}

impl LineConfig {
    /// Defaults with the given cadences.
    #[must_use]
    pub const fn with_cadences(cadences: [Option<Cadence>; MAX_CADENCES]) -> Self {
        Self {
            cadences,
            tolerance: Tolerance::DEFAULT,
            ring: RingTiming::DEFAULT,
            hook_debounce_ms: 30,
            polarity: false,
            polarity_debounce_ms: 40,
            flash_min_ms: 90,
            hangup_ms: 800,
            hung_up_guard_ms: 1000,
            answer_evidence_ms: 150,
        }
    }

    /// Defaults with one cadence (the line's country).
    #[must_use]
    pub const fn for_cadence(cadence: Cadence) -> Self {
        Self::with_cadences([Some(cadence), None, None, None])
    }

    /// How long after the end of a burst, with no new pulse, ringing is
    /// over: the longest pause accepted by any cadence, plus the pulse gap.
    #[must_use]
    pub fn ring_timeout_ms(&self) -> u32 {
        let longest = self.cadences.iter().flatten().map(|c| self.tolerance.max(c.longest_off_ms())).max();
        longest.unwrap_or(0) + u32::from(self.ring.max_pulse_gap_ms)
    }
}

impl Default for LineConfig {
    fn default() -> Self {
        let [fr, us, uk, de] = Cadence::BUILTIN;
        Self::with_cadences([Some(fr), Some(us), Some(uk), Some(de)])
    }
}

/// Where a line is, as reported in heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LineState {
    /// Hook level not known yet (first `hook_debounce_ms` after start).
    Starting,
    /// On-hook, quiet.
    Idle,
    /// A recognised cadence is ringing.
    Ringing,
    /// Off-hook after ringing: an incoming call in progress.
    Answered,
    /// Off-hook without ringing: an outgoing call (or unknown at boot).
    OffHook,
    /// Just hung up (for [`LineConfig::hung_up_guard_ms`]).
    HungUp,
}

impl LineState {
    /// 4-bit code used in heartbeat frames.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::Starting => 0,
            Self::Idle => 1,
            Self::Ringing => 2,
            Self::Answered => 3,
            Self::OffHook => 4,
            Self::HungUp => 5,
        }
    }
}

/// An event with the tick at which it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LineEvent {
    /// When it happened.
    pub tick: u32,
    /// What happened.
    pub event: Event,
}

/// Most events one `step` can return.
pub const MAX_EVENTS_PER_STEP: usize = 4;

/// The events of one `step`, in order (a tiny fixed-capacity list).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    items: [Option<LineEvent>; MAX_EVENTS_PER_STEP],
    len: usize,
}

impl Events {
    fn push(&mut self, tick: u32, event: Event) {
        // Capacity is sized for the worst case of one step; see the tests.
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some(LineEvent { tick, event });
            self.len += 1;
        }
    }

    /// Number of events.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// True when nothing happened.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The events, oldest report first.
    pub fn iter(&self) -> impl Iterator<Item = LineEvent> + '_ {
        self.items[..self.len].iter().flatten().copied()
    }
}

impl IntoIterator for Events {
    type Item = LineEvent;
    type IntoIter = core::iter::Flatten<core::array::IntoIter<Option<LineEvent>, MAX_EVENTS_PER_STEP>>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter().flatten()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Starting,
    Idle,
    /// `min_on`: shortest burst that counts as a ring of the confirmed
    /// cadence; shorter ones (noise) are not counted.
    Ringing {
        since: u32,
        rings: u16,
        last_end: u32,
        min_on: u32,
    },
    Connected {
        since: u32,
        direction: Direction,
        on_hook_at: Option<u32>,
    },
    HungUp {
        at: u32,
    },
}

/// Ring bursts heard while idle, not (yet) a confirmed cadence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Heard {
    since: u32,
    last_end: u32,
    bursts: u16,
}

/// Counters for diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LineStats {
    /// Bursts that matched no configured cadence (noise, wrong country).
    pub rejected_bursts: u16,
}

/// One line's state machine. See the module docs.
#[derive(Clone, Debug)]
pub struct LineMonitor {
    config: LineConfig,
    ring: RingDetector,
    matcher: CadenceMatcher,
    hook: Debouncer,
    polarity: Debouncer,
    state: State,
    heard: Option<Heard>,
    ring_timeout_ms: u32,
    stats: LineStats,
}

impl LineMonitor {
    /// A monitor in the `Starting` state.
    #[must_use]
    pub fn new(config: LineConfig) -> Self {
        Self {
            ring: RingDetector::new(config.ring),
            matcher: CadenceMatcher::new(),
            hook: Debouncer::new(config.hook_debounce_ms),
            polarity: Debouncer::new(config.polarity_debounce_ms),
            state: State::Starting,
            heard: None,
            ring_timeout_ms: config.ring_timeout_ms(),
            stats: LineStats::default(),
            config,
        }
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &LineConfig {
        &self.config
    }

    /// Diagnostic counters.
    #[must_use]
    pub const fn stats(&self) -> LineStats {
        self.stats
    }

    /// The current state.
    #[must_use]
    pub const fn state(&self) -> LineState {
        match self.state {
            State::Starting => LineState::Starting,
            State::Idle => LineState::Idle,
            State::Ringing { .. } => LineState::Ringing,
            State::Connected { direction: Direction::Incoming, .. } => LineState::Answered,
            State::Connected { .. } => LineState::OffHook,
            State::HungUp { .. } => LineState::HungUp,
        }
    }

    /// Feeds the inputs sampled at `now` (every 1-2 ms); returns what happened.
    pub fn step(&mut self, now: u32, sample: Sample) -> Events {
        let mut events = Events::default();
        let burst = self.ring.update(now, sample.ring);
        if self.config.polarity
            && let Some(Debounced::Changed { level, at }) = self.polarity.update(now, sample.reversed)
        {
            events.push(at, Event::Polarity { reversed: level });
        }
        match self.hook.update(now, sample.off_hook) {
            Some(Debounced::Initial(off_hook)) => {
                self.state = if off_hook {
                    State::Connected { since: now, direction: Direction::Unknown, on_hook_at: None }
                } else {
                    State::Idle
                };
            }
            Some(Debounced::Changed { level: true, at }) => self.off_hook(at, &mut events),
            Some(Debounced::Changed { level: false, at }) => {
                if let State::Connected { on_hook_at, .. } = &mut self.state {
                    *on_hook_at = Some(at);
                }
            }
            None => {}
        }
        if let Some(BurstEvent::Ended(b)) = burst {
            self.burst_ended(b.start, b.end, &mut events);
        }
        self.timers(now, &mut events);
        events
    }

    fn off_hook(&mut self, at: u32, events: &mut Events) {
        match self.state {
            State::Starting => {}
            State::Idle | State::HungUp { .. } => {
                if let Some((since, rings)) = self.ring_evidence(at) {
                    events.push(since, Event::Ringing { cadence: UNCONFIRMED });
                    events.push(at, Event::Answered { rings, ring_ms: gap(since, at) });
                    self.state = State::Connected { since: at, direction: Direction::Incoming, on_hook_at: None };
                } else {
                    events.push(at, Event::OffHook);
                    self.state = State::Connected { since: at, direction: Direction::Outgoing, on_hook_at: None };
                }
            }
            State::Ringing { since, rings, .. } => {
                // A burst cut short by the answer counts as a ring too.
                let rings = rings.saturating_add(u16::from(self.ring.current_burst().is_some()));
                events.push(at, Event::Answered { rings, ring_ms: gap(since, at) });
                self.state = State::Connected { since: at, direction: Direction::Incoming, on_hook_at: None };
            }
            State::Connected { ref mut on_hook_at, .. } => {
                if let Some(t0) = on_hook_at.take() {
                    let d = gap(t0, at);
                    if d >= u32::from(self.config.flash_min_ms) {
                        events.push(t0, Event::Flash { duration_ms: d.min(u32::from(u16::MAX)) as u16 });
                    }
                }
            }
        }
        self.forget_ring();
    }

    /// Ringing heard recently enough to call an off-hook at `at` an answer:
    /// (start of ringing, bursts).
    fn ring_evidence(&self, at: u32) -> Option<(u32, u16)> {
        let min = u32::from(self.config.answer_evidence_ms);
        let heard = self.heard.filter(|h| gap(h.last_end, at) <= self.ring_timeout_ms);
        match (heard, self.ring.current_burst()) {
            (Some(h), Some(_)) => Some((h.since, h.bursts.saturating_add(1))),
            (Some(h), None) => Some((h.since, h.bursts)),
            (None, Some((first, last))) if elapsed(last, first) >= min => Some((first, 1)),
            (None, _) => None,
        }
    }

    fn burst_ended(&mut self, start: u32, end: u32, events: &mut Events) {
        match &mut self.state {
            State::Starting | State::Connected { .. } => {}
            State::Ringing { rings, last_end, min_on, .. } => {
                if gap(start, end) >= *min_on {
                    *rings = rings.saturating_add(1);
                    *last_end = end;
                } else {
                    self.stats.rejected_bursts = self.stats.rejected_bursts.wrapping_add(1);
                }
            }
            State::Idle | State::HungUp { .. } => {
                if gap(start, end) >= u32::from(self.config.answer_evidence_ms) {
                    self.heard = Some(match self.heard {
                        Some(h) if gap(h.last_end, start) <= self.ring_timeout_ms => {
                            Heard { last_end: end, bursts: h.bursts.saturating_add(1), ..h }
                        }
                        _ => Heard { since: start, last_end: end, bursts: 1 },
                    });
                }
                match self.matcher.on_burst(&self.config.cadences, self.config.tolerance, start, end) {
                    MatchOutcome::Confirmed { cadence, since, bursts } => {
                        events.push(since, Event::Ringing { cadence });
                        let min_on = self
                            .config
                            .cadences
                            .iter()
                            .flatten()
                            .find(|c| c.id() == cadence)
                            .map_or(0, |c| self.config.tolerance.min(c.shortest_on_ms()));
                        self.state = State::Ringing { since, rings: bursts, last_end: end, min_on };
                        self.heard = None;
                    }
                    MatchOutcome::Partial => {}
                    MatchOutcome::Rejected => {
                        self.stats.rejected_bursts = self.stats.rejected_bursts.wrapping_add(1);
                    }
                }
            }
        }
    }

    fn timers(&mut self, now: u32, events: &mut Events) {
        match self.state {
            State::Ringing { since, rings, last_end, .. } => {
                if !self.ring.pulses_present() && gap(last_end, now) > self.ring_timeout_ms {
                    events.push(last_end, Event::Abandoned { rings, ring_ms: gap(since, last_end) });
                    self.state = State::Idle;
                    self.forget_ring();
                }
            }
            State::Connected { since, direction, on_hook_at: Some(t0) } => {
                if elapsed(now, t0) >= u32::from(self.config.hangup_ms) {
                    events.push(t0, Event::HungUp { duration_ms: gap(since, t0), direction });
                    self.state = State::HungUp { at: t0 };
                    self.forget_ring();
                }
            }
            State::HungUp { at } => {
                if elapsed(now, at) >= u32::from(self.config.hung_up_guard_ms) {
                    self.state = State::Idle;
                }
            }
            State::Starting | State::Idle | State::Connected { on_hook_at: None, .. } => {}
        }
        if let Some(h) = self.heard
            && !self.ring.pulses_present()
            && gap(h.last_end, now) > self.ring_timeout_ms
        {
            self.heard = None;
        }
    }

    fn forget_ring(&mut self) {
        self.matcher.reset();
        self.heard = None;
    }
}
