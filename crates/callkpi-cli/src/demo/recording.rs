//! The bundled recording, replayed as a live PBX would send it.
//!
//! `tests/fixtures/asterisk/run-a/ami.log` is what a real Asterisk 22 sent
//! to an AMI client during a 6-minute call-centre run (49 calls, 4 agents,
//! transfers, a pause, surveys). It is embedded in the binary, so the demo
//! needs no file at run time.
//!
//! # Time
//!
//! Every time field the mapper reads (`Timestamp`, and `LoginTime`,
//! `LastPause` of the `QueueStatus` reply; `LastCall` too, for consistency)
//! is shifted by one whole number of seconds, so that the recording's last
//! event lands when the replay ends. Only the offset changes: durations and
//! gaps stay as recorded, so the KPIs equal those of `callkpi analyze` on
//! the file. The replay is faster than real time (`speed`), so while it
//! runs the data lag the wall clock: every event is in the past when sent
//! (never in the future, which the live views would ignore), and
//! [`ReplayClock::lag_ns`] tells how far behind the recording's own "now"
//! is, so that a waiting time can be shown in recording time.

use std::time::Duration;

use callkpi_core::event::NANOS_PER_SEC;
use callkpi_feeds::ami::{Frame, MessageKind, frames};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{FeedStatus, Phase, now_ns};

/// The AMI transcript of run-a.
pub(crate) static TRANSCRIPT: &[u8] = include_bytes!("../../../../tests/fixtures/asterisk/run-a/ami.log");

/// Headers holding epoch seconds that are shifted.
const TIME_HEADERS: [&[u8]; 4] = [b"Timestamp: ", b"LoginTime: ", b"LastPause: ", b"LastCall: "];

/// One message of the recording, as received.
#[derive(Debug)]
pub(crate) struct Message {
    /// When to send it: its `Timestamp`, or the latest one before it if
    /// later (or if it has none), ns.
    pub(crate) at_ns: i64,
    /// The bytes, empty line included.
    pub(crate) bytes: &'static [u8],
}

/// The recording without what belongs to the recorder's own session.
#[derive(Debug)]
pub(crate) struct Recording {
    /// The messages to send, in order.
    pub(crate) messages: Vec<Message>,
}

impl Recording {
    /// Splits the transcript into messages and drops the banner, the reply
    /// to the recorder's login (the demo PBX answers the agent's own) and
    /// the final `Shutdown` (the demo PBX does not stop; the event maps to
    /// nothing, and it would make the agent reconnect).
    pub(crate) fn parse(transcript: &'static [u8]) -> Self {
        let mut messages = Vec::new();
        let mut it = frames(transcript);
        let mut last_at = None;
        let mut seen_message = false;
        loop {
            let start = it.position();
            let Some(frame) = it.next() else { break };
            let bytes = &transcript[start..it.position()];
            let Ok(Frame::Message(msg)) = frame else { continue };
            let first = !seen_message;
            seen_message = true;
            if first && msg.kind() == MessageKind::Response {
                continue;
            }
            if msg.event().is_some_and(|e| e == "Shutdown") {
                continue;
            }
            // Asterisk's threads stamp events a little out of order; the
            // order received is kept, paced by the latest time so far.
            let at = match (msg.get_bytes("Timestamp").and_then(timestamp_ns), last_at) {
                (Some(t), Some(l)) => Some(t.max(l)),
                (t, l) => t.or(l),
            };
            last_at = at;
            messages.push(Message { at_ns: at.unwrap_or(0), bytes });
        }
        // Messages before the first Timestamp (the QueueStatus reply) go first.
        let first = messages.iter().find(|m| m.at_ns != 0).map_or(0, |m| m.at_ns);
        for m in messages.iter_mut().take_while(|m| m.at_ns == 0) {
            m.at_ns = first;
        }
        Self { messages }
    }

    /// Time of the first and last timestamped messages, ns.
    pub(crate) fn span(&self) -> (i64, i64) {
        let first = self.messages.first().map_or(0, |m| m.at_ns);
        let last = self.messages.last().map_or(first, |m| m.at_ns);
        (first, last)
    }
}

/// `1795356686.635456` → ns.
fn timestamp_ns(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits = frac.get(..frac.len().min(9))?;
    let frac_ns = if digits.is_empty() { 0 } else { digits.parse::<i64>().ok()? * 10_i64.pow(9 - digits.len() as u32) };
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(frac_ns)
}

/// A copy of `raw` with every time header moved by `offset_s` seconds.
/// Zero (Asterisk's "never") stays zero; the fraction is kept as written.
pub(crate) fn shift_times(raw: &[u8], offset_s: i64, out: &mut Vec<u8>) {
    for line in raw.split_inclusive(|b| *b == b'\n') {
        let shifted = TIME_HEADERS.iter().find_map(|h| {
            let value = line.strip_prefix(*h)?;
            let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
            let secs: i64 = std::str::from_utf8(&value[..digits]).ok()?.parse().ok()?;
            (secs > 0).then(|| (h, secs + offset_s, &value[digits..]))
        });
        match shifted {
            Some((header, secs, rest)) => {
                out.extend_from_slice(header);
                out.extend_from_slice(secs.to_string().as_bytes());
                out.extend_from_slice(rest);
            }
            None => out.extend_from_slice(line),
        }
    }
}

/// How the replay maps wall time to recording time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ReplayClock {
    /// Wall time the replay started, Unix ns.
    pub(crate) start_ns: i64,
    /// Wall time the replay ends, Unix ns: the recording's last event has
    /// this time, shifted.
    pub(crate) end_ns: i64,
    /// Recording seconds per wall second.
    pub(crate) speed: f64,
}

impl ReplayClock {
    /// How far the recording's "now" is behind the wall clock at `at_ns`:
    /// at the end they meet; before, the recording runs `speed` times faster.
    pub(crate) fn lag_ns(&self, at_ns: i64) -> i64 {
        let left = (self.end_ns - at_ns).max(0) as f64;
        (left * (self.speed - 1.0)) as i64
    }
}

/// Sends the recording to `tx`, `speed` times faster than recorded, each
/// message when its time comes. Returns false when stopped before the end.
pub(crate) async fn replay(
    speed: f64,
    tx: &mpsc::Sender<Vec<u8>>,
    status: &FeedStatus,
    stop: &CancellationToken,
) -> bool {
    let rec = Recording::parse(TRANSCRIPT);
    let (first, last) = rec.span();
    let started = Instant::now();
    let start_ns = now_ns();
    let end_ns = start_ns + ((last - first) as f64 / speed) as i64;
    // Whole seconds, rounded down: the last event is never in the future.
    let offset_s = (end_ns - last).div_euclid(NANOS_PER_SEC);
    let clock = ReplayClock { start_ns, end_ns, speed };
    let total_s = (last - first) as f64 / 1e9;
    status.set(Phase::Replaying { clock, played_s: 0.0, total_s });
    let due = |m: &Message| Duration::from_nanos(((m.at_ns - first).max(0) as f64 / speed) as u64);
    let mut next = 0;
    while let Some(m) = rec.messages.get(next) {
        tokio::select! {
            () = tokio::time::sleep_until(started + due(m)) => {}
            () = stop.cancelled() => return false,
        }
        let elapsed = started.elapsed();
        let mut chunk = Vec::new();
        while let Some(m) = rec.messages.get(next).filter(|m| due(m) <= elapsed) {
            shift_times(m.bytes, offset_s, &mut chunk);
            next += 1;
        }
        let played_s = (rec.messages[next - 1].at_ns - first) as f64 / 1e9;
        tokio::select! {
            r = tx.send(chunk) => if r.is_err() { return false },
            () = stop.cancelled() => return false,
        }
        status.set(Phase::Replaying { clock, played_s, total_s });
    }
    status.set(Phase::Replayed { clock, total_s });
    true
}

#[cfg(test)]
mod tests {
    use callkpi_feeds::FeedEvent;
    use callkpi_feeds::ami::AmiMapper;

    use super::*;

    fn map(bytes: &[u8]) -> Vec<FeedEvent> {
        let mut out = Vec::new();
        AmiMapper::default().map_bytes(bytes, &mut out);
        out
    }

    #[test]
    fn the_prepared_recording_maps_to_every_event_of_the_transcript() {
        let rec = Recording::parse(TRANSCRIPT);
        let served: Vec<u8> = rec.messages.iter().flat_map(|m| m.bytes.iter().copied()).collect();
        let whole = map(TRANSCRIPT);
        assert!(whole.len() > 400, "the recording maps to hundreds of events: {}", whole.len());
        assert_eq!(map(&served), whole, "nothing mapped is lost by dropping the banner, login reply and Shutdown");
        assert!(!served.starts_with(b"Asterisk Call Manager"), "no banner: the demo PBX sends its own");
        let times: Vec<i64> = rec.messages.iter().map(|m| m.at_ns).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "pacing times never go back");
        let (first, last) = rec.span();
        let mapped: Vec<i64> = whole.iter().filter_map(|e| e.source_time).collect();
        assert!(mapped.iter().all(|t| (first - 60 * NANOS_PER_SEC..=last).contains(t)), "events lie within the span");
    }

    #[test]
    fn shifting_moves_every_mapped_time_by_the_offset_and_nothing_else() {
        let rec = Recording::parse(TRANSCRIPT);
        let offset_s = 3 * 86_400 + 17;
        let mut shifted = Vec::new();
        let mut original = Vec::new();
        for m in &rec.messages {
            shift_times(m.bytes, offset_s, &mut shifted);
            original.extend_from_slice(m.bytes);
        }
        let (a, b) = (map(&original), map(&shifted));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.call_id, &x.leg_id, &x.kind), (&y.call_id, &y.leg_id, &y.kind));
            assert_eq!(y.source_time, x.source_time.map(|t| t + offset_s * NANOS_PER_SEC), "{x:?}");
        }
        // Fractions and zero values are kept.
        let mut out = Vec::new();
        shift_times(b"Timestamp: 1795356686.000123\r\nLastPause: 0\r\nQueue: support\r\n\r\n", 10, &mut out);
        assert_eq!(out, b"Timestamp: 1795356696.000123\r\nLastPause: 0\r\nQueue: support\r\n\r\n");
    }

    #[test]
    fn the_replay_clock_meets_the_wall_clock_at_the_end() {
        let c = ReplayClock { start_ns: 0, end_ns: 20 * NANOS_PER_SEC, speed: 15.0 };
        // At the start the recording's whole span (300 s) is still to come.
        assert_eq!(c.lag_ns(0), 280 * NANOS_PER_SEC);
        assert_eq!(c.lag_ns(c.end_ns), 0);
        assert_eq!(c.lag_ns(c.end_ns + NANOS_PER_SEC), 0);
    }
}
