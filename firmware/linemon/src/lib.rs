//! `linemon`: the logic of the callkpi analogue line monitor.
//!
//! Small branch offices without an IP PBX still run analogue lines. A small
//! board sits on the line interface, with per line an opto-isolated
//! ring-detect input, a loop-current (hook) input and optionally a
//! polarity-reversal input. This crate turns samples of those inputs into
//! timestamped call events (ringing, answered, hung up, abandoned, ...) and
//! encodes them as frames for a serial link to the callkpi agent.
//!
//! It is `no_std`, allocates nothing, contains no `unsafe`, and knows no
//! board: pins come in as embedded-hal 1.0 [`InputPin`]s and time as a
//! millisecond tick passed to every call. It builds and is tested on the
//! host, and the agent uses the same crate (with `std`) to decode frames.
//!
//! [`InputPin`]: embedded_hal::digital::InputPin
//!
//! # Layout
//!
//! * [`time`]: wrapping millisecond ticks.
//! * [`ring`]: opto pulses of the 20-50 Hz ring signal → ring bursts.
//! * [`cadence`]: country cadences (FR, US, UK, DE, custom) and matching.
//! * [`debounce`]: hook and polarity debouncing.
//! * [`line`](mod@line): the per-line state machine, a pure function of
//!   `(now_ms, Sample)`; this is where the events come from.
//! * [`pins`]: embedded-hal adapters: [`pins::Line`] reads the pins and
//!   steps the state machine; [`pins::DelayTicker`] is a tick from a
//!   `DelayNs`.
//! * [`frame`]: the wire format below: encode, decode, stream deframing.
//! * [`report`]: events → frames → a byte queue the UART drains without
//!   blocking; boot and heartbeat frames, drop counting.
//!
//! # Using it on a board
//!
//! ```no_run
//! # use embedded_hal::digital::InputPin;
//! use linemon::frame::{Frame, Sequencer, MAX_FRAME_LEN};
//! use linemon::line::LineConfig;
//! use linemon::cadence::Cadence;
//! use linemon::pins::{ActiveLevels, Line};
//!
//! # fn demo<P: InputPin<Error = core::convert::Infallible>>(ring: P, hook: P, now_ms: impl Fn() -> u32, mut send: impl FnMut(&[u8])) {
//! let mut line = Line::new(ring, hook, ActiveLevels::default(), LineConfig::for_cadence(Cadence::FR));
//! let mut seq = Sequencer::new();
//! let mut buf = [0u8; MAX_FRAME_LEN];
//! loop {
//!     // every 1 ms
//!     let Ok(events) = line.poll(now_ms());
//!     for e in events {
//!         let frame = seq.frame(0, e.tick, e.event);
//!         if let Ok(n) = frame.encode(&mut buf) {
//!             send(&buf[..n]);
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! # Frame format (version 1)
//!
//! Each event is one frame. Multi-byte integers are little-endian.
//!
//! | offset | size | field | meaning |
//! |---:|---:|---|---|
//! | 0 | 1 | version | `0x01`; a decoder rejects other versions |
//! | 1 | 1 | kind | event kind, table below |
//! | 2 | 1 | line | line index from 0; `0xFF` = the board itself |
//! | 3 | 4 | seq | `u32`, +1 per frame across all lines, 0 at boot |
//! | 7 | 4 | tick | `u32` ms since boot at which the event happened (wraps after 49.7 days) |
//! | 11 | n | payload | 0-8 bytes, per kind |
//! | 11+n | 2 | crc | CRC-16/CCITT-FALSE (a.k.a. CRC-16/IBM-3740: poly `0x1021`, init `0xFFFF`, not reflected, no final XOR; check `0x29B1`) over bytes `0..11+n`, little-endian |
//!
//! Those 13-21 bytes are then COBS-encoded (no `0x00` left in them, at most
//! one byte longer) and followed by a single `0x00` delimiter: at most 23
//! bytes on the wire ([`frame::MAX_FRAME_LEN`]). The receiver splits on
//! `0x00`, COBS-decodes, checks the length, the CRC and the version.
//!
//! | kind | name | payload |
//! |---|---|---|
//! | `0x00` | Boot | `fw_major u8, fw_minor u8, fw_patch u8, lines u8, reset_cause u8` (5) |
//! | `0x01` | Ringing | `cadence u8` (1): 1 FR, 2 US, 3 UK, 4 DE, custom ids, 0 = answered before confirmation; tick = first burst |
//! | `0x02` | Answered | `rings u16, ring_ms u32` (6); tick = off-hook |
//! | `0x03` | HungUp | `duration_ms u32, direction u8` (5): 0 incoming, 1 outgoing, 2 unknown; tick = on-hook |
//! | `0x04` | Abandoned | `rings u16, ring_ms u32` (6); tick = end of the last burst |
//! | `0x05` | OffHook | none (outgoing call); tick = off-hook |
//! | `0x06` | Polarity | `reversed u8` (1): 0 normal, 1 reversed |
//! | `0x07` | Heartbeat | `dropped u16, rejected_bursts u16, states u32` (8): line states 4 bits each, line 0 lowest ([`line::LineState::code`]), `0xF` = absent |
//! | `0x08` | Flash | `duration_ms u16` (2); tick = start of the break |
//!
//! Compatibility rules: a new *kind* may be added within version 1 (old
//! decoders return [`frame::Event::Unknown`] and go on); fields may be
//! appended to a payload (decoders ignore extra bytes); anything else bumps
//! the version byte.
//!
//! Sequence numbers let the agent see loss and reboots: a gap in `seq` is
//! lost frames (the board also counts frames it had to drop, in
//! Heartbeat); `seq` back to 0 with a Boot frame is a reboot, and the tick
//! origin changed with it. The tick is when the event happened, not when
//! it was sent, so frames can be slightly out of tick order (a hang-up is
//! only certain `hangup_ms` after the on-hook, a ring cadence at the end of
//! its first cycle): order a line's events by tick, not by `seq`.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cadence;
pub mod debounce;
pub mod frame;
pub mod line;
pub mod pins;
pub mod report;
pub mod ring;
pub mod time;

pub use cadence::Cadence;
pub use frame::{Event, Frame};
pub use line::{LineConfig, LineMonitor, LineState, Sample};
