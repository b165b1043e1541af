//! From line events to bytes for the UART, without blocking.
//!
//! [`Reporter`] numbers events into frames ([`Sequencer`]), encodes them
//! into a fixed byte queue ([`TxQueue`]), adds the `Boot` frame and the
//! periodic `Heartbeat`, and hands bytes out one at a time so the main loop
//! can feed a UART whenever it is ready, never waiting for it. When the
//! queue is full a frame is dropped whole (never truncated), its sequence
//! number is still used (the agent sees a gap) and the drop is counted in
//! the next heartbeat.

use crate::frame::{BOARD_LINE, Event, Frame, MAX_FRAME_LEN, Sequencer};
use crate::line::{LineEvent, LineState};
use crate::time::elapsed;

/// The queue had no room for a whole frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QueueFull;

/// A byte FIFO of `N` bytes that only ever holds whole frames.
#[derive(Clone, Debug)]
pub struct TxQueue<const N: usize> {
    buf: [u8; N],
    head: usize,
    len: usize,
}

impl<const N: usize> Default for TxQueue<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> TxQueue<N> {
    /// An empty queue.
    #[must_use]
    pub const fn new() -> Self {
        Self { buf: [0; N], head: 0, len: 0 }
    }

    /// Bytes waiting.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Nothing waiting.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Encodes `frame` and appends it entirely, or not at all.
    ///
    /// # Errors
    ///
    /// [`QueueFull`] when the encoded frame does not fit.
    pub fn push_frame(&mut self, frame: &Frame) -> Result<(), QueueFull> {
        let mut tmp = [0u8; MAX_FRAME_LEN];
        let n = frame.encode(&mut tmp).map_err(|_| QueueFull)?;
        if N - self.len < n {
            return Err(QueueFull);
        }
        for &b in &tmp[..n] {
            self.buf[(self.head + self.len) % N] = b;
            self.len += 1;
        }
        Ok(())
    }

    /// The next byte to send, left in the queue.
    #[must_use]
    pub fn peek(&self) -> Option<u8> {
        (self.len > 0).then(|| self.buf[self.head])
    }

    /// Removes and returns the next byte.
    pub fn pop(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.head = (self.head + 1) % N;
        self.len -= 1;
        Some(b)
    }
}

/// Packs line states into the heartbeat's `states` word: 4 bits per line,
/// line 0 in the low nibble, `0xF` for lines that do not exist (at most 8).
#[must_use]
pub fn pack_states(states: impl IntoIterator<Item = LineState>) -> u32 {
    let mut word = u32::MAX;
    for (i, s) in states.into_iter().take(8).enumerate() {
        word &= !(0xF << (4 * i));
        word |= u32::from(s.code()) << (4 * i);
    }
    word
}

/// Frames events and queues them for the UART. See the module docs.
#[derive(Clone, Debug)]
pub struct Reporter<const N: usize> {
    seq: Sequencer,
    queue: TxQueue<N>,
    dropped: u16,
    heartbeat_ms: u32,
    last_heartbeat: u32,
}

impl<const N: usize> Reporter<N> {
    /// A reporter sending a heartbeat every `heartbeat_ms` (0 = never).
    #[must_use]
    pub const fn new(heartbeat_ms: u32) -> Self {
        Self { seq: Sequencer::new(), queue: TxQueue::new(), dropped: 0, heartbeat_ms, last_heartbeat: 0 }
    }

    /// Queues the `Boot` frame (seq 0); call once, first.
    pub fn boot(&mut self, now: u32, firmware: [u8; 3], lines: u8, reset_cause: u8) {
        self.last_heartbeat = now;
        self.send(BOARD_LINE, now, Event::Boot { firmware, lines, reset_cause });
    }

    /// Queues one event of line `line`.
    pub fn report(&mut self, line: u8, event: LineEvent) {
        self.send(line, event.tick, event.event);
    }

    /// Queues a heartbeat if one is due at `now`.
    pub fn heartbeat(&mut self, now: u32, states: u32, rejected_bursts: u16) {
        if self.heartbeat_ms == 0 || elapsed(now, self.last_heartbeat) < self.heartbeat_ms {
            return;
        }
        self.last_heartbeat = now;
        let dropped = self.dropped;
        self.send(BOARD_LINE, now, Event::Heartbeat { dropped, rejected_bursts, states });
    }

    fn send(&mut self, line: u8, tick: u32, event: Event) {
        let frame = self.seq.frame(line, tick, event);
        if self.queue.push_frame(&frame).is_err() {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// Frames dropped so far because the queue was full.
    #[must_use]
    pub const fn dropped(&self) -> u16 {
        self.dropped
    }

    /// The next byte for the UART, left queued until [`Reporter::pop`].
    #[must_use]
    pub fn peek(&self) -> Option<u8> {
        self.queue.peek()
    }

    /// Consumes the byte the UART accepted.
    pub fn pop(&mut self) -> Option<u8> {
        self.queue.pop()
    }

    /// The queue.
    #[must_use]
    pub const fn queue(&self) -> &TxQueue<N> {
        &self.queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Deframer;

    #[test]
    fn full_queue_drops_whole_frames_and_counts() {
        let mut r = Reporter::<40>::new(1000);
        r.boot(0, [0, 1, 0], 2, 1);
        for i in 0..5 {
            r.report(0, LineEvent { tick: i, event: Event::OffHook });
        }
        assert!(r.dropped() > 0);
        let mut d = Deframer::new();
        let mut seqs = std::vec::Vec::new();
        while let Some(b) = r.pop() {
            if let Some(f) = d.push(b) {
                seqs.push(f.unwrap().seq);
            }
        }
        assert_eq!(seqs[0], 0);
        assert_eq!(seqs.len() + usize::from(r.dropped()), 6);
        r.heartbeat(1000, pack_states([LineState::Idle, LineState::Ringing]), 3);
        let mut hb = None;
        while let Some(b) = r.pop() {
            if let Some(f) = d.push(b) {
                hb = Some(f.unwrap());
            }
        }
        let hb = hb.unwrap();
        assert_eq!(hb.seq, 6);
        assert_eq!(hb.event, Event::Heartbeat { dropped: r.dropped(), rejected_bursts: 3, states: 0xFFFF_FF21 });
    }
}
