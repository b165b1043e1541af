//! Line monitor firmware for the WeAct STM32F411CEU6 "Black Pill".
//!
//! All the logic lives in `linemon`; this file only wires the board:
//! clocks, a 1 kHz free-running timer for the tick, the line input pins,
//! USART1 for the frames, the watchdog and the LED. See ../README.md for
//! the pin map.
//!
//! Main loop, no interrupts: on every new millisecond tick, sample every
//! line and queue the resulting frames; then push queued bytes into the
//! UART while it accepts them (never waiting), and feed the watchdog.

#![no_std]
#![no_main]

#[cfg(feature = "defmt")]
use {defmt_rtt as _, panic_probe as _};

#[cfg(not(feature = "defmt"))]
use panic_halt as _;

use cortex_m_rt::entry;
use linemon::cadence::Cadence;
use linemon::line::LineConfig;
use linemon::pins::{ActiveLevels, Line};
use linemon::report::{Reporter, pack_states};
use stm32f4xx_hal::gpio::{AnyPin, Input};
use stm32f4xx_hal::pac;
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Config;
use stm32f4xx_hal::watchdog::IndependentWatchdog;

/// Ring cadence of this site's exchange. Change for another country (or use
/// `LineConfig::default()` to accept every built-in cadence).
const CADENCE: Cadence = Cadence::FR;
/// Frames queued for the UART (about 22 frames of up to 23 bytes).
const TX_QUEUE_BYTES: usize = 512;
/// Heartbeat period (ms).
const HEARTBEAT_MS: u32 = 10_000;
/// Serial link to the agent: 115200 8N1.
const BAUD: u32 = 115_200;

type Pin = AnyPin<Input>;

fn firmware_version() -> [u8; 3] {
    let v = |s: &str| s.parse().unwrap_or(0);
    [v(env!("CARGO_PKG_VERSION_MAJOR")), v(env!("CARGO_PKG_VERSION_MINOR")), v(env!("CARGO_PKG_VERSION_PATCH"))]
}

/// Reset cause for the Boot frame (then clears the flags):
/// 1 power-on/brown-out, 2 reset pin, 3 independent watchdog,
/// 4 window watchdog, 5 software, 6 low-power, 0 unknown.
fn reset_cause(rcc: &pac::RCC) -> u8 {
    let csr = rcc.csr().read();
    let cause = if csr.wdgrstf().bit_is_set() {
        3
    } else if csr.wwdgrstf().bit_is_set() {
        4
    } else if csr.sftrstf().bit_is_set() {
        5
    } else if csr.lpwrrstf().bit_is_set() {
        6
    } else if csr.porrstf().bit_is_set() || csr.borrstf().bit_is_set() {
        1
    } else if csr.padrstf().bit_is_set() {
        2
    } else {
        0
    };
    rcc.csr().modify(|_, w| w.rmvf().set_bit());
    cause
}

#[entry]
fn main() -> ! {
    let Some(dp) = pac::Peripherals::take() else { panic!("peripherals taken twice") };
    let cause = reset_cause(&dp.RCC);
    let mut rcc = dp.RCC.freeze(Config::hse(25.MHz()).sysclk(48.MHz()));

    let mut watchdog = IndependentWatchdog::new(dp.IWDG);
    watchdog.start(1_000.millis());

    let gpioa = dp.GPIOA.split(&mut rcc);
    let gpiob = dp.GPIOB.split(&mut rcc);
    let gpioc = dp.GPIOC.split(&mut rcc);
    let mut led = gpioc.pc13.into_push_pull_output(); // active low
    led.set_high();

    let Ok(mut tx) = dp.USART1.tx(gpioa.pa9, BAUD.bps(), &mut rcc) else { panic!("USART1 config") };

    // 32-bit TIM2 counting milliseconds, free-running: the tick.
    let mut clock = dp.TIM2.counter_ms(&mut rcc);
    if clock.start(u32::MAX.millis()).is_err() {
        panic!("TIM2 config");
    }

    let levels = ActiveLevels::default(); // opto outputs pull low
    let config = LineConfig::for_cadence(CADENCE);
    let mut lines: [Line<Pin, Pin, Pin>; 2] = [
        Line::with_polarity(
            gpiob.pb12.into_pull_up_input().erase(),
            gpiob.pb13.into_pull_up_input().erase(),
            gpiob.pb14.into_pull_up_input().erase(),
            levels,
            config,
        ),
        Line::with_polarity(
            gpiob.pb6.into_pull_up_input().erase(),
            gpiob.pb7.into_pull_up_input().erase(),
            gpiob.pb8.into_pull_up_input().erase(),
            levels,
            config,
        ),
    ];

    let mut reporter = Reporter::<TX_QUEUE_BYTES>::new(HEARTBEAT_MS);
    let mut last = clock.now().ticks();
    reporter.boot(last, firmware_version(), lines.len() as u8, cause);
    #[cfg(feature = "defmt")]
    defmt::info!("linemon up, reset cause {}", cause);

    loop {
        let now = clock.now().ticks();
        if now != last {
            last = now;
            let mut ringing = false;
            let mut rejected = 0u16;
            for (i, line) in lines.iter_mut().enumerate() {
                // GPIO reads on this HAL are infallible.
                let Ok(events) = line.poll(now);
                for event in events {
                    #[cfg(feature = "defmt")]
                    defmt::info!("line {}: {}", i, event);
                    reporter.report(i as u8, event);
                }
                ringing |= line.state() == linemon::LineState::Ringing;
                rejected = rejected.wrapping_add(line.monitor().stats().rejected_bursts);
            }
            reporter.heartbeat(now, pack_states(lines.iter().map(Line::state)), rejected);
            if ringing { led.set_low() } else { led.set_high() }
        }
        while let Some(byte) = reporter.peek() {
            if tx.write(byte).is_err() {
                break; // UART busy (nb::WouldBlock): next time round
            }
            reporter.pop();
        }
        watchdog.feed();
    }
}
