//! Call records as lists and timelines show them: outcomes, summary figures,
//! and the engine's call queries (by start time, by id across sites).

use callkpi_core::call::{CallOutcome, CallRecord};
use callkpi_core::event::*;
use callkpi_core::{Engine, EngineConfig};

const T0: i64 = 1_795_356_000; // 2026-11-22T13:20:00Z

fn ev(seq: u64, site: &str, call: &str, secs: i64, kind: EventKind) -> Event {
    Event {
        id: EventId { agent_id: format!("agent-{site}"), seq },
        site: site.into(),
        source: SourceKind::Synthetic,
        call_id: call.into(),
        leg_id: String::new(),
        time: EventTime::from_source((T0 + secs) * NANOS_PER_SEC),
        kind,
    }
}

fn join(queue: &str, caller: &str) -> EventKind {
    EventKind::QueueJoin { queue: queue.into(), caller: Some(caller.into()), position: Some(1) }
}

fn answer(queue: &str, agent: &str, ring_ms: Option<u64>) -> EventKind {
    EventKind::Answered {
        queue: Some(queue.into()),
        agent: agent.into(),
        reported_wait_ms: None,
        reported_ring_ms: ring_ms,
    }
}

fn hangup(agent: &str, by: HangupBy) -> EventKind {
    EventKind::Hangup { queue: None, agent: Some(agent.into()), by, cause: None, reported_talk_ms: None }
}

fn leave(queue: &str, reason: LeaveReason) -> EventKind {
    EventKind::QueueLeave { queue: queue.into(), reason, reported_wait_ms: None }
}

fn record(events: &[(i64, EventKind)], closed: bool) -> CallRecord {
    let mut evs: Vec<Event> =
        events.iter().enumerate().map(|(i, (s, k))| ev(i as u64 + 1, "hq", "c", *s, k.clone())).collect();
    CallRecord::build(&mut evs, closed)
}

#[test]
fn answered_call_summary_figures() {
    let r = record(
        &[
            (0, join("support", "0611223344")),
            (3, EventKind::Ringing { queue: Some("support".into()), agent: "Alice".into() }),
            (10, answer("support", "Alice", None)),
            (20, EventKind::Hold { agent: Some("Alice".into()) }),
            (25, EventKind::Resume { agent: Some("Alice".into()) }),
            (
                40,
                EventKind::Transfer {
                    kind: TransferKind::Blind,
                    queue: Some("support".into()),
                    agent: Some("Alice".into()),
                    target: "700".into(),
                    reported_talk_ms: None,
                },
            ),
            (41, join("sales", "0611223344")),
            (45, answer("sales", "Bob", Some(2_000))),
            (105, hangup("Bob", HangupBy::Caller)),
        ],
        true,
    );
    assert_eq!(r.outcome(5), CallOutcome::Answered);
    assert_eq!(r.end(), Some((T0 + 105) * NANOS_PER_SEC));
    assert_eq!(r.wait_ms(), 10_000 + 4_000);
    // Alice: 30 s on the line, 5 of them on hold; Bob: 60 s.
    assert_eq!(r.talk_ms(), 25_000 + 60_000);
    assert_eq!(r.agents(), vec!["Alice", "Bob"]);
    assert_eq!(r.transfers(), 1);
    assert_eq!(r.segments[0].ring_ms, 7_000, "from Ringing to the answer");
    assert_eq!(r.segments[1].ring_ms, 2_000, "the PBX's own figure wins");
    assert!(r.segments[0].transferred());
    assert_eq!(r.segments[1].ended_by(), HangupBy::Caller);
    assert!(r.visited("sales") && !r.visited("billing"));
    assert!(r.involves_agent("Bob") && !r.involves_agent("Carla"));
    assert_eq!(r.direction_or_inferred(), Direction::Inbound);
}

#[test]
fn outcome_follows_the_last_visit_and_the_short_abandon_rule() {
    // Answered in support, transferred, then abandoned in sales after 30 s.
    let r = record(
        &[
            (0, join("support", "0611")),
            (5, answer("support", "Alice", None)),
            (
                20,
                EventKind::Transfer {
                    kind: TransferKind::Blind,
                    queue: None,
                    agent: Some("Alice".into()),
                    target: "sales".into(),
                    reported_talk_ms: None,
                },
            ),
            (21, join("sales", "0611")),
            (51, leave("sales", LeaveReason::Abandon)),
        ],
        true,
    );
    assert_eq!(r.outcome(5), CallOutcome::Abandoned);
    assert_eq!(r.visits[0].call_outcome(5), CallOutcome::Answered);

    // 5 s of waiting is a short abandon at 5 s, not at 4 s, and never with 0.
    let short = record(&[(0, join("q", "0611")), (5, leave("q", LeaveReason::Abandon))], true);
    assert_eq!(short.outcome(5), CallOutcome::ShortAbandoned);
    assert_eq!(short.outcome(4), CallOutcome::Abandoned);
    assert_eq!(short.outcome(0), CallOutcome::Abandoned);

    for (reason, outcome) in [
        (LeaveReason::Timeout, CallOutcome::Timeout),
        (LeaveReason::ExitWithKey, CallOutcome::ExitWithKey),
        (LeaveReason::LeaveEmpty, CallOutcome::LeaveEmpty),
        (LeaveReason::Full, CallOutcome::Full),
        (LeaveReason::JoinEmpty, CallOutcome::JoinEmpty),
        (LeaveReason::Transfer, CallOutcome::Transferred),
    ] {
        let r = record(&[(0, join("q", "0611")), (30, leave("q", reason))], true);
        assert_eq!(r.outcome(5), outcome, "{reason:?}");
    }
    // A bare leave with no answer after it: the source never said why.
    let r = record(&[(0, join("q", "0611")), (30, leave("q", LeaveReason::Unspecified))], true);
    assert_eq!(r.outcome(5), CallOutcome::LeftUnspecified);
    // No exit at all, closed at the end of input.
    let r = record(&[(0, join("q", "0611")), (30, EventKind::Ringing { queue: None, agent: "A".into() })], true);
    assert_eq!(r.outcome(5), CallOutcome::UnknownEnd);
}

#[test]
fn open_unqueued_and_outbound_calls() {
    let open = record(&[(0, join("q", "0611"))], false);
    assert_eq!(open.outcome(5), CallOutcome::InProgress);
    assert_eq!(open.end(), None);
    assert_eq!(open.visits[0].call_outcome(5), CallOutcome::InProgress);

    let offered = EventKind::CallOffered {
        direction: Direction::Internal,
        caller: "1001".into(),
        called: "1002".into(),
        trunk: None,
    };
    let unanswered = record(&[(0, offered), (20, hangup("x", HangupBy::Caller))], true);
    assert_eq!(unanswered.outcome(5), CallOutcome::Unanswered);
    assert_eq!(unanswered.direction_or_inferred(), Direction::Internal);
    assert_eq!(unanswered.called.as_deref(), Some("1002"));

    let dial = |outcome| EventKind::DialResult {
        agent: Some("Alice".into()),
        dialled: "0611111119".into(),
        trunk: None,
        outcome,
        cause: None,
    };
    for (d, want) in [
        (DialOutcome::Answered, CallOutcome::OutboundConnected),
        (DialOutcome::NoAnswer, CallOutcome::OutboundUnreached),
        (DialOutcome::Congestion, CallOutcome::OutboundUnreached),
        (DialOutcome::AgentAbandoned, CallOutcome::OutboundAgentAbandoned),
    ] {
        let r = record(&[(0, dial(d))], true);
        assert_eq!(r.outcome(5), want, "{d:?}");
        assert_eq!(r.direction_or_inferred(), Direction::Outbound);
        assert_eq!(r.called.as_deref(), Some("0611111119"));
    }
}

#[test]
fn outcome_names_are_distinct_snake_case() {
    let names: std::collections::BTreeSet<&str> = CallOutcome::ALL.iter().map(|o| o.as_str()).collect();
    assert_eq!(names.len(), CallOutcome::ALL.len());
    for name in names {
        assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
    }
}

#[test]
fn engine_finds_calls_by_start_and_by_id_across_sites() {
    let mut e = Engine::new(EngineConfig::default());
    let mut seq = 0;
    let mut add = |e: &mut Engine, site: &str, call: &str, s: i64, kind: EventKind| {
        seq += 1;
        e.ingest(ev(seq, site, call, s, kind));
    };
    // c1 at 0 s and c3 at 200 s in paris; c2 at 100 s in lyon; "dup" at 300 s in both.
    add(&mut e, "paris", "c1", 0, join("q", "0601"));
    add(&mut e, "paris", "c1", 30, leave("q", LeaveReason::Abandon));
    add(&mut e, "lyon", "c2", 100, join("q", "0602"));
    add(&mut e, "paris", "c3", 200, join("q", "0603"));
    add(&mut e, "lyon", "dup", 300, join("q", "0604"));
    add(&mut e, "paris", "dup", 300, join("q", "0605"));
    e.refresh(None, false);

    let ids = |it: &mut dyn Iterator<Item = &CallRecord>| -> Vec<(String, String)> {
        it.map(|r| (r.site.clone(), r.call_id.clone())).collect()
    };
    let t = |s: i64| (T0 + s) * NANOS_PER_SEC;
    let all = ids(&mut e.calls_started(i64::MIN, i64::MAX, None));
    assert_eq!(
        all,
        [("paris", "c1"), ("lyon", "c2"), ("paris", "c3"), ("lyon", "dup"), ("paris", "dup")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    // Newest first, and the range is [from, to).
    let newest = ids(&mut e.calls_started(t(0), t(300), None).rev());
    assert_eq!(newest, [("paris", "c3"), ("lyon", "c2"), ("paris", "c1")].map(|(a, b)| (a.to_owned(), b.to_owned())));
    // Paging backwards from a key excludes it and everything after it.
    let page = ids(&mut e.calls_started(i64::MIN, i64::MAX, Some((t(300), "paris", "dup"))).rev());
    assert_eq!(page.first(), Some(&("lyon".to_owned(), "dup".to_owned())));
    assert_eq!(page.len(), 4);
    let page = ids(&mut e.calls_started(i64::MIN, i64::MAX, Some((t(100), "lyon", "c2"))).rev());
    assert_eq!(page, [("paris".to_owned(), "c1".to_owned())]);
    // An inverted range is empty, not a panic.
    assert_eq!(e.calls_started(t(10), t(5), None).count(), 0);

    assert_eq!(e.call_sites("dup"), ["lyon".to_owned(), "paris".to_owned()]);
    assert_eq!(e.call_sites("c1"), ["paris".to_owned()]);
    assert!(e.call_sites("nope").is_empty());
    let evs = e.call_events("paris", "c1").expect("c1 events");
    assert_eq!(evs.len(), 2);
    assert!(evs.windows(2).all(|w| w[0].kpi_time() <= w[1].kpi_time()));

    // A late event from before a call's start moves it in the index.
    add(&mut e, "lyon", "c2", -50, EventKind::Ringing { queue: None, agent: "A".into() });
    e.refresh(None, false);
    let all = ids(&mut e.calls_started(i64::MIN, i64::MAX, None));
    assert_eq!(all.first(), Some(&("lyon".to_owned(), "c2".to_owned())));
    assert_eq!(all.len(), 5, "moved, not duplicated");
    assert_eq!(e.call("lyon", "c2").map(|r| r.first), Some(t(-50)));
}

/// Events of the same instant arrive in any order from a whole-second source
/// exported by time (a realtime queue_log table): the call is rebuilt in the
/// order a call goes through, entry before exit, answer before hang-up.
#[test]
fn same_instant_events_replay_in_call_order() {
    // Delivered exit first, then entry, both at second 0.
    let r = record(&[(0, leave("q", LeaveReason::LeaveEmpty)), (0, join("q", "0611223344"))], true);
    assert_eq!(r.visits.len(), 1);
    assert_eq!(r.outcome(5), CallOutcome::LeaveEmpty);
    // Hang-up, answer, entry, all at second 7.
    let r =
        record(&[(7, hangup("A", HangupBy::Caller)), (7, answer("q", "A", None)), (7, join("q", "0611223344"))], true);
    assert_eq!(r.outcome(5), CallOutcome::Answered);
    assert_eq!(r.segments.len(), 1);
    assert!(r.segments[0].known_end());
}

/// The same step delivered twice under two ids (a line read twice) is one
/// step; a survey answered twice alike in one second is two answers.
#[test]
fn repeated_events_of_one_instant_count_once() {
    let survey = EventKind::SurveyAnswer {
        metric: SurveyMetric::Csat,
        score: 4.0,
        scale_min: 1.0,
        scale_max: 5.0,
        queue: None,
        agent: None,
    };
    let r = record(
        &[
            (0, join("q", "0611223344")),
            (0, join("q", "0611223344")),
            (9, answer("q", "A", None)),
            (9, answer("q", "A", None)),
            (69, hangup("A", HangupBy::Agent)),
            (69, hangup("A", HangupBy::Agent)),
            (80, survey.clone()),
            (80, survey),
        ],
        true,
    );
    assert_eq!(r.visits.len(), 1);
    assert_eq!(r.visits[0].wait_ms, 9_000);
    assert_eq!(r.outcome(5), CallOutcome::Answered);
    assert_eq!(r.segments.len(), 1);
    assert_eq!(r.talk_ms(), 60_000);
    assert_eq!(r.surveys.len(), 2);
    // A second entry into the same queue at another second is a new visit.
    let r = record(&[(0, join("q", "0611223344")), (1, join("q", "0611223344"))], true);
    assert_eq!(r.visits.len(), 2);
}
