//! Limits an event stream must respect before it reaches the engine.
//!
//! The engine keeps per-interval storage (15-min buckets of presence, calls
//! and counters) from the earliest to the latest time it has seen, so its
//! memory grows with the *span* of the input, not with its size: one event
//! stamped 1970 among events of today (an AMI transcript without
//! `Timestamp:` headers whose `QueueMember` replies still carry absolute
//! `LoginTime`s, an appliance whose clock restarted at the epoch) asks for
//! 56 years of buckets, 18 GB. [`SpanCheck`] is a small, pure validator the
//! offline path runs over the stream first: a span beyond the configured
//! limit is an error naming the offending event, never an out-of-memory kill.
//!
//! It checks the time the KPIs use ([`EventTime::kpi_time`]), the same one
//! the engine buckets by.
//!
//! [`EventTime::kpi_time`]: crate::event::EventTime::kpi_time

use std::fmt;

use crate::event::{Event, NANOS_PER_SEC, UnixNanos};

/// Default most seconds between the earliest and the latest event of one
/// analysis: 400 days, a year of logs with room for the first and last
/// partial months. At most a few hundred MB of engine storage per year.
pub const DEFAULT_MAX_SPAN_S: u64 = 400 * 86_400;

/// Tracks the earliest and latest event time of a stream and refuses an
/// event that would widen the span beyond the limit.
#[derive(Debug, Clone)]
pub struct SpanCheck {
    max_span: i64,
    /// Earliest and latest times seen, with a description of their events.
    earliest: Option<(UnixNanos, String)>,
    latest: Option<(UnixNanos, String)>,
}

/// An event that would make the stream span more than the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanError {
    /// The refused event: identity, kind, call and time.
    pub event: String,
    /// Its time, ns since the epoch.
    pub time: UnixNanos,
    /// The event at the other end of the span.
    pub other: String,
    /// The span the event would make, s.
    pub span_s: u64,
    /// The limit, s.
    pub max_span_s: u64,
}

impl fmt::Display for SpanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event {} would make the input span {} days (from/to event {}), more than the limit of {} days; \
             a source without absolute timestamps or a clock far off does this (raise the limit only if the \
             input really covers that long)",
            self.event,
            self.span_s / 86_400,
            self.other,
            self.max_span_s / 86_400
        )
    }
}

impl std::error::Error for SpanError {}

impl SpanCheck {
    /// A check allowing at most `max_span_s` seconds between the earliest
    /// and the latest event.
    pub fn new(max_span_s: u64) -> Self {
        let max_span = i64::try_from(max_span_s).unwrap_or(i64::MAX).saturating_mul(NANOS_PER_SEC);
        Self { max_span, earliest: None, latest: None }
    }

    /// Checks `e` and widens the span to include it.
    ///
    /// # Errors
    /// [`SpanError`] when `e` is more than the limit away from the earliest
    /// or latest event seen; the span is then left as it was.
    pub fn check(&mut self, e: &Event) -> Result<(), SpanError> {
        let t = e.time.kpi_time();
        let too_far = |(other, what): &(UnixNanos, String)| {
            let span = t.abs_diff(*other);
            (span > self.max_span.unsigned_abs()).then(|| SpanError {
                event: describe(e),
                time: t,
                other: what.clone(),
                span_s: span / NANOS_PER_SEC.unsigned_abs(),
                max_span_s: self.max_span.unsigned_abs() / NANOS_PER_SEC.unsigned_abs(),
            })
        };
        if let Some(err) = self.earliest.as_ref().and_then(too_far).or_else(|| self.latest.as_ref().and_then(too_far)) {
            return Err(err);
        }
        if self.earliest.as_ref().is_none_or(|(x, _)| t < *x) {
            self.earliest = Some((t, describe(e)));
        }
        if self.latest.as_ref().is_none_or(|(x, _)| t > *x) {
            self.latest = Some((t, describe(e)));
        }
        Ok(())
    }

    /// Earliest and latest times accepted so far.
    pub fn span(&self) -> Option<(UnixNanos, UnixNanos)> {
        Some((self.earliest.as_ref()?.0, self.latest.as_ref()?.0))
    }
}

/// `file:0#17 (AgentState, call "", at 1970-01-01T00:00:00Z)`.
fn describe(e: &Event) -> String {
    let kind = format!("{:?}", e.kind);
    let name = kind.split([' ', '{', '(']).next().unwrap_or_default();
    let at = jiff::Timestamp::from_nanosecond(i128::from(e.time.kpi_time()))
        .map_or_else(|_| format!("{} ns", e.time.kpi_time()), |t| t.to_string());
    format!("{}#{} ({name}, call {:?}, at {at})", e.id.agent_id, e.id.seq, e.call_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AgentState, EventId, EventKind, EventTime, SourceKind};

    fn ev(seq: u64, t: UnixNanos) -> Event {
        Event {
            id: EventId { agent_id: "file:0".into(), seq },
            site: "s".into(),
            source: SourceKind::AsteriskAmi,
            call_id: String::new(),
            leg_id: String::new(),
            time: EventTime::from_source(t),
            kind: EventKind::AgentState { agent: "a".into(), queue: None, state: AgentState::Login },
        }
    }

    const DAY: i64 = 86_400 * NANOS_PER_SEC;

    #[test]
    fn a_span_within_the_limit_passes_either_way_round() {
        let mut c = SpanCheck::new(10 * 86_400);
        let base = 1_795_356_680 * NANOS_PER_SEC;
        for (i, t) in [base + DAY, base + 10 * DAY, base, base + 5 * DAY].into_iter().enumerate() {
            c.check(&ev(i as u64, t)).expect("within 10 days");
        }
        assert_eq!(c.span(), Some((base, base + 10 * DAY)));
        assert!(c.check(&ev(9, base - 1)).is_err(), "a ns beyond, backwards");
    }

    #[test]
    fn an_event_at_the_epoch_among_recent_ones_is_named() {
        let mut c = SpanCheck::new(DEFAULT_MAX_SPAN_S);
        let now = 1_795_356_680 * NANOS_PER_SEC;
        c.check(&ev(1, now)).expect("first");
        let err = c.check(&ev(2, 0)).expect_err("56 years");
        assert_eq!(err.time, 0);
        assert!(err.event.starts_with("file:0#2 (AgentState"), "{err}");
        assert!(err.event.contains("1970-01-01T00:00:00Z"), "{err}");
        assert!(err.other.starts_with("file:0#1"), "{err}");
        assert_eq!(err.max_span_s, DEFAULT_MAX_SPAN_S);
        assert!(err.to_string().contains("more than the limit of 400 days"), "{err}");
        // Refused events leave the span alone: the next good one passes.
        assert_eq!(c.span(), Some((now, now)));
        c.check(&ev(3, now + DAY)).expect("a day later");
        // Extremes do not overflow.
        assert!(c.check(&ev(4, i64::MAX)).is_err());
        assert!(c.check(&ev(5, i64::MIN)).is_err());
    }
}
