//! The embedded-hal adapters against embedded-hal-mock pin and delay scripts.

use std::io::ErrorKind;

use embedded_hal_mock::eh1::MockError;
use embedded_hal_mock::eh1::delay::{CheckedDelay, Transaction as DelayTransaction};
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTransaction};
use linemon::line::LineConfig;
use linemon::pins::{ActiveLevels, DelayTicker, Error, Line};
use linemon::{Cadence, Event, LineState};

fn reads(levels: &[(State, usize)]) -> Vec<PinTransaction> {
    levels.iter().flat_map(|&(s, n)| std::iter::repeat_n(PinTransaction::get(s), n)).collect()
}

#[test]
fn off_hook_through_active_low_pins() {
    // Opto outputs idle high; the hook opto pulls low from poll 40 on
    // (after the 30 ms the monitor needs to learn the initial hook state).
    let ring = PinMock::new(&reads(&[(State::High, 80)]));
    let hook = PinMock::new(&reads(&[(State::High, 40), (State::Low, 40)]));
    let mut line = Line::new(ring, hook, ActiveLevels::default(), LineConfig::for_cadence(Cadence::FR));
    let mut events = Vec::new();
    for t in 0..80 {
        events.extend(line.poll(t).unwrap());
    }
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].tick, 40);
    assert_eq!(events[0].event, Event::OffHook);
    assert_eq!(line.state(), LineState::OffHook);
    let (mut ring, mut hook, polarity) = line.release();
    assert!(polarity.is_none());
    ring.done();
    hook.done();
}

#[test]
fn active_high_polarity_pin() {
    let n = 150;
    let ring = PinMock::new(&reads(&[(State::Low, n)]));
    let hook = PinMock::new(&reads(&[(State::Low, n)]));
    let pol = PinMock::new(&reads(&[(State::Low, 60), (State::High, n - 60)]));
    let levels = ActiveLevels { ring_low: false, hook_low: false, polarity_low: false };
    let mut line = Line::with_polarity(ring, hook, pol, levels, LineConfig::default());
    let mut events = Vec::new();
    for t in 0..n as u32 {
        events.extend(line.poll(t).unwrap());
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].tick, events[0].event), (60, Event::Polarity { reversed: true }));
    let (mut ring, mut hook, pol) = line.release();
    ring.done();
    hook.done();
    pol.unwrap().done();
}

#[test]
fn pin_error_is_reported_and_pins_handed_back() {
    let err = MockError::Io(ErrorKind::BrokenPipe);
    let ring = PinMock::new(&[PinTransaction::get(State::High)]);
    let hook = PinMock::new(&[PinTransaction::get(State::High).with_error(err.clone())]);
    let mut line = Line::new(ring, hook, ActiveLevels::default(), LineConfig::default());
    assert_eq!(line.poll(0).unwrap_err(), Error::Hook(err));
    assert_eq!(line.state(), LineState::Starting);
    let (mut ring, mut hook, _) = line.release();
    ring.done();
    hook.done();
}

#[test]
fn delay_ticker_advances_by_its_period() {
    let delay = CheckedDelay::new(&vec![DelayTransaction::delay_ms(2); 3]);
    let mut ticker = DelayTicker::new(delay, 2);
    assert_eq!(ticker.now(), 0);
    assert_eq!([ticker.wait(), ticker.wait(), ticker.wait()], [2, 4, 6]);
    ticker.release().done();
}
