//! The embedded-hal side: reading a line's input pins, and a tick source
//! built on a [`DelayNs`].
//!
//! Everything here is generic over embedded-hal 1.0 traits; nothing knows
//! the board. [`Line`] = [`LinePins`] + [`LineMonitor`]: call
//! [`Line::poll`] every 1-2 ms with the current tick.

use core::convert::Infallible;
use core::marker::PhantomData;

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{ErrorType, InputPin};

use crate::line::{Events, LineConfig, LineMonitor, LineState, Sample};

/// Which electrical level means "active" on each input. Opto-couplers
/// usually pull their output low when lit, hence the default: all active-low.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ActiveLevels {
    /// Ring-detect opto lit = low.
    pub ring_low: bool,
    /// Loop current flowing = low.
    pub hook_low: bool,
    /// Polarity reversed = low.
    pub polarity_low: bool,
}

impl Default for ActiveLevels {
    fn default() -> Self {
        Self { ring_low: true, hook_low: true, polarity_low: true }
    }
}

/// Reading a pin failed; the pins are kept (see [`Line::release`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error<E> {
    /// The ring-detect pin.
    Ring(E),
    /// The hook / loop-current pin.
    Hook(E),
    /// The polarity pin.
    Polarity(E),
}

/// Stands for an input that is not wired (no polarity detector). It is
/// never read.
#[derive(Debug)]
pub struct NoPin<E = Infallible>(PhantomData<E>);

impl<E> Default for NoPin<E> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<E: embedded_hal::digital::Error> ErrorType for NoPin<E> {
    type Error = E;
}

impl<E: embedded_hal::digital::Error> InputPin for NoPin<E> {
    fn is_high(&mut self) -> Result<bool, E> {
        Ok(false)
    }

    fn is_low(&mut self) -> Result<bool, E> {
        Ok(true)
    }
}

/// The input pins of one line.
#[derive(Debug)]
pub struct LinePins<R, H, P> {
    ring: R,
    hook: H,
    polarity: Option<P>,
    levels: ActiveLevels,
}

impl<R, H, P, E> LinePins<R, H, P>
where
    R: InputPin<Error = E>,
    H: InputPin<Error = E>,
    P: InputPin<Error = E>,
{
    /// Reads all wired inputs once.
    ///
    /// # Errors
    ///
    /// The first pin that failed, with the HAL's error.
    pub fn sample(&mut self) -> Result<Sample, Error<E>> {
        let ring = read(&mut self.ring, self.levels.ring_low).map_err(Error::Ring)?;
        let off_hook = read(&mut self.hook, self.levels.hook_low).map_err(Error::Hook)?;
        let reversed = match &mut self.polarity {
            Some(p) => read(p, self.levels.polarity_low).map_err(Error::Polarity)?,
            None => false,
        };
        Ok(Sample { ring, off_hook, reversed })
    }
}

fn read<P: InputPin>(pin: &mut P, active_low: bool) -> Result<bool, P::Error> {
    if active_low { pin.is_low() } else { pin.is_high() }
}

/// A line: its pins and its state machine.
#[derive(Debug)]
pub struct Line<R, H, P = NoPin> {
    pins: LinePins<R, H, P>,
    monitor: LineMonitor,
}

impl<R, H, E> Line<R, H, NoPin<E>>
where
    R: InputPin<Error = E>,
    H: InputPin<Error = E>,
    E: embedded_hal::digital::Error,
{
    /// A line with ring and hook inputs only (`config.polarity` is ignored).
    pub fn new(ring: R, hook: H, levels: ActiveLevels, mut config: LineConfig) -> Self {
        config.polarity = false;
        Self { pins: LinePins { ring, hook, polarity: None, levels }, monitor: LineMonitor::new(config) }
    }
}

impl<R, H, P, E> Line<R, H, P>
where
    R: InputPin<Error = E>,
    H: InputPin<Error = E>,
    P: InputPin<Error = E>,
{
    /// A line with a polarity-reversal input too.
    pub fn with_polarity(ring: R, hook: H, polarity: P, levels: ActiveLevels, mut config: LineConfig) -> Self {
        config.polarity = true;
        Self { pins: LinePins { ring, hook, polarity: Some(polarity), levels }, monitor: LineMonitor::new(config) }
    }

    /// Samples the pins and steps the state machine.
    ///
    /// # Errors
    ///
    /// A pin read failed; the state machine did not step.
    pub fn poll(&mut self, now_ms: u32) -> Result<Events, Error<E>> {
        let sample = self.pins.sample()?;
        Ok(self.monitor.step(now_ms, sample))
    }

    /// Current state.
    #[must_use]
    pub const fn state(&self) -> LineState {
        self.monitor.state()
    }

    /// The state machine (for its stats).
    #[must_use]
    pub const fn monitor(&self) -> &LineMonitor {
        &self.monitor
    }

    /// Gives the pins back: ring, hook, polarity.
    pub fn release(self) -> (R, H, Option<P>) {
        (self.pins.ring, self.pins.hook, self.pins.polarity)
    }
}

/// A millisecond tick made from a [`DelayNs`]: each [`DelayTicker::wait`]
/// sleeps one period and advances the tick by it.
///
/// For boards without a free-running timer. The tick drifts by the time
/// spent between waits (pin reads, frame encoding), which is fine for
/// cadence matching (a few %) but not for wall-clock accuracy: prefer a
/// hardware counter when there is one.
#[derive(Debug)]
pub struct DelayTicker<D> {
    delay: D,
    period_ms: u32,
    now: u32,
}

impl<D: DelayNs> DelayTicker<D> {
    /// Ticks every `period_ms` (at least 1), starting at 0.
    pub fn new(delay: D, period_ms: u32) -> Self {
        Self { delay, period_ms: period_ms.max(1), now: 0 }
    }

    /// The current tick.
    #[must_use]
    pub const fn now(&self) -> u32 {
        self.now
    }

    /// Sleeps one period; returns the new tick.
    pub fn wait(&mut self) -> u32 {
        self.delay.delay_ms(self.period_ms);
        self.now = self.now.wrapping_add(self.period_ms);
        self.now
    }

    /// Gives the delay back.
    pub fn release(self) -> D {
        self.delay
    }
}
