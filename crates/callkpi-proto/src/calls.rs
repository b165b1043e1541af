//! Calls between the core engine's records and the wire (`reports.proto`):
//! `CallSummary`, `CallTimeline`, `Segment` and `QueueVisit`.
//!
//! The aggregator answers `ListCalls` with [`summary_to_pb`] and `GetCall`
//! with [`timeline_to_pb`], both from the [`CallRecord`] the KPI engine
//! counts, so a call's list entry, its timeline and its share of the KPIs
//! never disagree. Records are derived from events and the timeline carries
//! the events themselves, so the record is not rebuilt from the wire; the
//! enums are, for printing: [`call_outcome_from_pb`], [`hangup_by_from_pb`],
//! [`direction_from_pb`].
//!
//! Units as the proto says: instants in ns, summary durations in double
//! seconds (exact: they are whole ms), timeline durations in integer ms. A
//! call's outcome depends on the short-abandon threshold, so both builders
//! take it (the aggregator passes its configured default, as for KPIs).

use callkpi_core::call::{CallOutcome, CallRecord, Segment, Visit};
use callkpi_core::event::{Direction, Event, HangupBy};

use crate::ConvertError;
use crate::convert::enum_field;
use crate::pb;

/// Seconds from ms, for the summary's `*_s` fields.
fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The list entry of a call.
pub fn summary_to_pb(r: &CallRecord, short_abandon_s: u32) -> pb::CallSummary {
    pb::CallSummary {
        call_id: r.call_id.clone(),
        site: r.site.clone(),
        caller: r.caller.clone().unwrap_or_default(),
        first_queue: r.visits.first().map(|v| v.queue.clone()).unwrap_or_default(),
        outcome: pb::CallOutcome::from(r.outcome(short_abandon_s)).into(),
        start_ns: r.first,
        end_ns: r.end(),
        wait_s: secs(r.wait_ms()),
        talk_s: secs(r.talk_ms()),
        agents: r.agents().into_iter().map(str::to_owned).collect(),
        transfers: u32::try_from(r.transfers()).unwrap_or(u32::MAX),
        direction: pb::Direction::from(r.direction_or_inferred()).into(),
        called: r.called.clone().unwrap_or_default(),
    }
}

/// A call's whole timeline: its summary, its `events` (re-sorted by KPI
/// time then event id, the order the record was built in), its agent
/// segments and its queue visits.
pub fn timeline_to_pb(r: &CallRecord, events: &[Event], short_abandon_s: u32) -> pb::CallTimeline {
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by(|a, b| a.kpi_time().cmp(&b.kpi_time()).then_with(|| a.id.cmp(&b.id)));
    pb::CallTimeline {
        summary: Some(summary_to_pb(r, short_abandon_s)),
        events: sorted.into_iter().map(|e| pb::Event::from(e.clone())).collect(),
        segments: r.segments.iter().map(segment_to_pb).collect(),
        visits: r.visits.iter().map(|v| visit_to_pb(v, short_abandon_s)).collect(),
    }
}

/// One agent's part of a call.
pub fn segment_to_pb(s: &Segment) -> pb::Segment {
    pb::Segment {
        agent: s.agent.clone(),
        queue: s.queue.clone().unwrap_or_default(),
        start_ns: s.start,
        end_ns: s.end_with_wrap(),
        talk_ms: s.talk_ms(),
        hold_ms: s.hold_ms(),
        wrap_ms: s.wrap_ms(),
        ring_ms: s.ring_ms,
        transferred: s.transferred(),
        ended_by: pb::HangupBy::from(s.ended_by()).into(),
    }
}

/// One queue visit of a call.
pub fn visit_to_pb(v: &Visit, short_abandon_s: u32) -> pb::QueueVisit {
    pb::QueueVisit {
        queue: v.queue.clone(),
        enter_ns: v.enter,
        exit_ns: v.exit,
        outcome: pb::CallOutcome::from(v.call_outcome(short_abandon_s)).into(),
        wait_ms: v.wait_ms,
    }
}

/// The core outcome of a wire `CallOutcome`.
///
/// # Errors
/// On `CALL_OUTCOME_UNSPECIFIED` or a value this schema does not know.
pub fn call_outcome_from_pb(value: i32) -> Result<CallOutcome, ConvertError> {
    enum_field(value, "CallSummary.outcome")
}

/// The core value of a wire `HangupBy` (`Segment.ended_by`).
///
/// # Errors
/// On `HANGUP_BY_UNSPECIFIED` or an unknown value.
pub fn hangup_by_from_pb(value: i32) -> Result<HangupBy, ConvertError> {
    enum_field(value, "Segment.ended_by")
}

/// The core value of a wire `Direction` (`CallSummary.direction`).
///
/// # Errors
/// On `DIRECTION_UNSPECIFIED` or an unknown value.
pub fn direction_from_pb(value: i32) -> Result<Direction, ConvertError> {
    enum_field(value, "CallSummary.direction")
}

#[cfg(test)]
mod tests {
    use callkpi_core::event::*;
    use prost::Message as _;

    use super::*;

    const T0: i64 = 1_795_356_000;

    fn ev(seq: u64, secs: i64, kind: EventKind) -> Event {
        Event {
            id: EventId { agent_id: "agent-a".into(), seq },
            site: "paris".into(),
            source: SourceKind::AsteriskQueueLog,
            call_id: "1795356686.1".into(),
            leg_id: String::new(),
            time: EventTime::from_source((T0 + secs) * NANOS_PER_SEC),
            kind,
        }
    }

    fn ns(secs: i64) -> i64 {
        (T0 + secs) * NANOS_PER_SEC
    }

    /// A blind transfer from support to sales, with hold, wrap-up and a survey.
    fn events() -> Vec<Event> {
        let support = Some("support".to_owned());
        vec![
            ev(
                1,
                0,
                EventKind::CallOffered {
                    direction: Direction::Inbound,
                    caller: "0639987952".into(),
                    called: "0140000000".into(),
                    trunk: None,
                },
            ),
            ev(
                2,
                1,
                EventKind::QueueJoin { queue: "support".into(), caller: Some("0639987952".into()), position: Some(1) },
            ),
            ev(
                3,
                5,
                EventKind::Answered {
                    queue: support.clone(),
                    agent: "Alice Martin".into(),
                    reported_wait_ms: Some(4_000),
                    reported_ring_ms: Some(3_000),
                },
            ),
            ev(4, 10, EventKind::Hold { agent: Some("Alice Martin".into()) }),
            ev(5, 16, EventKind::Resume { agent: Some("Alice Martin".into()) }),
            ev(
                6,
                30,
                EventKind::Transfer {
                    kind: TransferKind::Blind,
                    queue: support.clone(),
                    agent: Some("Alice Martin".into()),
                    target: "700@transfers".into(),
                    reported_talk_ms: Some(25_000),
                },
            ),
            ev(7, 31, EventKind::WrapUpStart { agent: "Alice Martin".into(), queue: support.clone() }),
            ev(8, 34, EventKind::WrapUpEnd { agent: "Alice Martin".into(), queue: support }),
            ev(
                9,
                31,
                EventKind::QueueJoin { queue: "sales".into(), caller: Some("0639987952".into()), position: Some(1) },
            ),
            ev(
                10,
                40,
                EventKind::Answered {
                    queue: Some("sales".into()),
                    agent: "Dmitri Petrov".into(),
                    reported_wait_ms: Some(9_000),
                    reported_ring_ms: Some(2_000),
                },
            ),
            ev(
                11,
                100,
                EventKind::Hangup {
                    queue: Some("sales".into()),
                    agent: Some("Dmitri Petrov".into()),
                    by: HangupBy::Caller,
                    cause: Some(16),
                    reported_talk_ms: Some(60_000),
                },
            ),
            ev(
                12,
                110,
                EventKind::SurveyAnswer {
                    metric: SurveyMetric::Csat,
                    score: 4.0,
                    scale_min: 1.0,
                    scale_max: 5.0,
                    queue: None,
                    agent: None,
                },
            ),
        ]
    }

    #[test]
    fn timeline_fields_through_the_wire_bytes() {
        let mut evs = events();
        // Arrival order must not matter: shuffle by reversing.
        evs.reverse();
        let record = CallRecord::build(&mut evs.clone(), true);
        let bytes = timeline_to_pb(&record, &evs, 5).encode_to_vec();
        let t = pb::CallTimeline::decode(&bytes[..]).expect("decodes");

        let s = t.summary.expect("summary");
        assert_eq!(s.call_id, "1795356686.1");
        assert_eq!(s.site, "paris");
        assert_eq!(s.caller, "0639987952");
        assert_eq!(s.called, "0140000000");
        assert_eq!(s.first_queue, "support");
        assert_eq!(call_outcome_from_pb(s.outcome), Ok(CallOutcome::Answered));
        assert_eq!(direction_from_pb(s.direction), Ok(Direction::Inbound));
        assert_eq!((s.start_ns, s.end_ns), (ns(0), Some(ns(110))));
        assert_eq!(s.wait_s, 13.0, "4 s in support + 9 s in sales, as the PBX measured them");
        assert_eq!(s.talk_s, 19.0 + 60.0, "25 s reported minus 6 s of hold, then 60 s");
        assert_eq!(s.agents, ["Alice Martin", "Dmitri Petrov"]);
        assert_eq!(s.transfers, 1);

        // Events: all of them, in KPI-time order, converting back to the originals.
        let back: Vec<Event> = t.events.into_iter().map(|e| Event::try_from(e).expect("converts")).collect();
        let mut want = events();
        want.sort_by(|a, b| a.kpi_time().cmp(&b.kpi_time()).then_with(|| a.id.cmp(&b.id)));
        assert_eq!(back, want);

        assert_eq!(t.segments.len(), 2);
        let (a, d) = (&t.segments[0], &t.segments[1]);
        assert_eq!((a.agent.as_str(), a.queue.as_str()), ("Alice Martin", "support"));
        assert_eq!((a.start_ns, a.end_ns), (ns(5), Some(ns(34))), "ends with its wrap-up");
        assert_eq!((a.talk_ms, a.hold_ms, a.wrap_ms, a.ring_ms), (19_000, 6_000, 3_000, 3_000));
        assert!(a.transferred);
        assert_eq!(hangup_by_from_pb(a.ended_by), Ok(HangupBy::Unknown));
        assert_eq!((d.agent.as_str(), d.queue.as_str()), ("Dmitri Petrov", "sales"));
        assert_eq!((d.start_ns, d.end_ns), (ns(40), Some(ns(100))));
        assert_eq!((d.talk_ms, d.hold_ms, d.wrap_ms, d.ring_ms), (60_000, 0, 0, 2_000));
        assert!(!d.transferred);
        assert_eq!(hangup_by_from_pb(d.ended_by), Ok(HangupBy::Caller));

        assert_eq!(t.visits.len(), 2);
        let (v1, v2) = (&t.visits[0], &t.visits[1]);
        assert_eq!((v1.queue.as_str(), v1.enter_ns, v1.exit_ns, v1.wait_ms), ("support", ns(1), Some(ns(5)), 4_000));
        assert_eq!((v2.queue.as_str(), v2.enter_ns, v2.exit_ns, v2.wait_ms), ("sales", ns(31), Some(ns(40)), 9_000));
        for v in [v1, v2] {
            assert_eq!(call_outcome_from_pb(v.outcome), Ok(CallOutcome::Answered));
        }
    }

    #[test]
    fn open_calls_have_no_end_and_are_in_progress() {
        let mut evs = events();
        evs.truncate(3);
        let record = CallRecord::build(&mut evs.clone(), false);
        let t = timeline_to_pb(&record, &evs, 5);
        let s = t.summary.expect("summary");
        assert_eq!(call_outcome_from_pb(s.outcome), Ok(CallOutcome::InProgress));
        assert_eq!(s.end_ns, None);
        assert_eq!(t.segments[0].end_ns, None);
        assert_eq!(t.visits[0].exit_ns, Some(ns(5)));
    }

    #[test]
    fn outcomes_round_trip_and_bad_wire_values_are_errors() {
        for o in CallOutcome::ALL {
            let wire: i32 = pb::CallOutcome::from(o).into();
            assert_ne!(wire, 0, "{o:?} must not be the wire's unspecified");
            assert_eq!(call_outcome_from_pb(wire), Ok(o));
        }
        assert_eq!(call_outcome_from_pb(0), Err(ConvertError::Unspecified { field: "CallSummary.outcome" }));
        assert!(matches!(call_outcome_from_pb(999), Err(ConvertError::UnknownEnumValue { value: 999, .. })));
        assert!(hangup_by_from_pb(0).is_err());
        assert!(direction_from_pb(77).is_err());
    }
}
