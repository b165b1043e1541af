//! Unit tests of the queue_log parser and mapper.

use std::collections::BTreeMap;
use std::str::FromStr;

use callkpi_core::event::{
    AgentState, DialOutcome, Direction, EventKind, HangupBy, LeaveReason, MissReason, NANOS_PER_MS, NANOS_PER_SEC,
    SurveyMetric, TransferKind,
};
use proptest::prelude::*;

use super::*;
use crate::Status;

const T0: i64 = 1_795_356_691;

fn mapper() -> QueueLogMapper {
    QueueLogMapper::new(QueueLogConfig::default())
}

fn map(input: &str) -> (Vec<FeedEvent>, QueueLogMapper) {
    let mut m = mapper();
    let events = m.map_all(input.as_bytes());
    (events, m)
}

/// The one event a single line maps to.
fn one(line: &str) -> FeedEvent {
    let (mut events, m) = map(line);
    assert_eq!(m.unparsed(), &Unparsed::default(), "{line}");
    assert_eq!(events.len(), 1, "{line}");
    events.remove(0)
}

fn kind(line: &str) -> EventKind {
    one(line).kind
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

// --- record parser ---

#[test]
fn parse_line_borrows_fields_and_reports_consumed() {
    let buf = b"1795356691|1795356686.1|support|Alice Martin|CONNECT|4|1795356687.2|4\nnext";
    let Ok(Status::Complete { value, consumed }) = parse_line(buf) else { panic!("not complete") };
    assert_eq!(consumed, 70);
    assert_eq!(value.time, T0 * NANOS_PER_SEC);
    assert_eq!(value.call_id, "1795356686.1");
    assert_eq!(value.queue, "support");
    assert_eq!(value.agent, "Alice Martin");
    assert_eq!(value.verb, "CONNECT");
    assert_eq!(value.data.iter().collect::<Vec<_>>(), ["4", "1795356687.2", "4"]);
    assert_eq!(value.data.get(1), "1795356687.2");
    assert_eq!(value.data.get(7), "");
    assert_eq!(parse_line(b"1795356691|x|q|a|CONN"), Ok(Status::Partial));
    assert_eq!(parse_line(b""), Ok(Status::Partial));
}

#[test]
fn parse_record_handles_absent_data_crlf_and_fractional_epochs() {
    let rec = parse_record(b"1795356677.25|NONE|NONE|NONE|QUEUESTART\r").expect("record");
    assert_eq!(rec.time, 1_795_356_677 * NANOS_PER_SEC + 250 * NANOS_PER_MS);
    assert_eq!(rec.verb, "QUEUESTART");
    assert!(rec.data.is_empty());
    assert_eq!(rec.data.len(), 0);
    let rec = parse_record(b"1795356677.123456789999|NONE|NONE|NONE|QUEUESTART|").expect("record");
    assert_eq!(rec.time, 1_795_356_677_123_456_789);
    assert!(rec.data.is_empty());
}

#[test]
fn parse_errors_carry_kind_and_offset() {
    let err = |line: &[u8]| parse_record(line).expect_err("malformed");
    assert_eq!(err(b"17953x|a|b|c|CONNECT").kind, ParseErrorKind::BadTime);
    assert_eq!(err(b"|a|b|c|CONNECT").kind, ParseErrorKind::BadTime);
    assert_eq!(err(b"-5|a|b|c|CONNECT").kind, ParseErrorKind::BadTime);
    assert_eq!(err(b"99999999999999999999|a|b|c|CONNECT").kind, ParseErrorKind::BadTime);
    assert_eq!(err(b"1795356691|a|b|c"), ParseError { kind: ParseErrorKind::TooFewFields, offset: 16 });
    assert_eq!(err(b"1795356691|a|b|\xff|X"), ParseError { kind: ParseErrorKind::InvalidUtf8, offset: 15 });
    assert_eq!(err(b"1795356691|a|b|c||x"), ParseError { kind: ParseErrorKind::BadVerb, offset: 17 });
    assert_eq!(err(b"1795356691|a|b|c|NOT A VERB|x").kind, ParseErrorKind::BadVerb);
    assert_eq!(err(b"  \r").kind, ParseErrorKind::Blank);
    assert_eq!(parse_line(b"bad\n").expect_err("malformed").to_string(), "queue_log: fewer than five fields at byte 3");
}

// --- verb mapping, Asterisk's own verbs ---

#[test]
fn enterqueue_maps_to_queue_join() {
    let ev = one("1795356687|1795356686.1|support|NONE|ENTERQUEUE||0639987952|1\n");
    assert_eq!(ev.call_id, "1795356686.1");
    assert_eq!(ev.leg_id, "");
    assert_eq!(ev.source_time, Some(1_795_356_687 * NANOS_PER_SEC));
    assert_eq!(ev.kind, EventKind::QueueJoin { queue: "support".into(), caller: s("0639987952"), position: Some(1) });
    assert_eq!(
        kind("1|c|sales|NONE|ENTERQUEUE|||3"),
        EventKind::QueueJoin { queue: "sales".into(), caller: None, position: Some(3) }
    );
    // log_cidname = yes appends the caller's name after the position.
    assert_eq!(
        kind("1|c|sales|NONE|ENTERQUEUE||0612345678|2|Jean Dupont"),
        EventKind::QueueJoin { queue: "sales".into(), caller: s("0612345678"), position: Some(2) }
    );
    assert_eq!(
        kind("1|c|sales|NONE|ENTERQUEUE||0612345678|2|Dupont|Jean"),
        EventKind::QueueJoin { queue: "sales".into(), caller: s("0612345678"), position: Some(2) }
    );
    // A caller id with a pipe keeps its pieces; the position is the last field.
    assert_eq!(
        kind("1|c|sales|NONE|ENTERQUEUE||Pat|Pipe|2"),
        EventKind::QueueJoin { queue: "sales".into(), caller: s("Pat|Pipe"), position: Some(2) }
    );
}

#[test]
fn connect_maps_to_answered_with_the_member_leg() {
    let ev = one("1795356691|1795356686.1|support|Alice Martin|CONNECT|4|1795356687.2|3");
    assert_eq!(ev.call_id, "1795356686.1");
    assert_eq!(ev.leg_id, "1795356687.2");
    assert_eq!(
        ev.kind,
        EventKind::Answered {
            queue: s("support"),
            agent: "Alice Martin".into(),
            reported_wait_ms: Some(4000),
            reported_ring_ms: Some(3000),
        }
    );
}

#[test]
fn completes_map_to_hangups() {
    let hangup = |by, talk| EventKind::Hangup {
        queue: s("sales"),
        agent: s("Dmitri Petrov"),
        by,
        cause: None,
        reported_talk_ms: talk,
    };
    assert_eq!(kind("1|c|sales|Dmitri Petrov|COMPLETEAGENT|4|24|1"), hangup(HangupBy::Agent, Some(24_000)));
    assert_eq!(kind("1|c|sales|Dmitri Petrov|COMPLETECALLER|16|11|1"), hangup(HangupBy::Caller, Some(11_000)));
    assert_eq!(kind("1|c|sales|Dmitri Petrov|COMPLETECALLER|16|-1|1"), hangup(HangupBy::Caller, None));
}

#[test]
fn exits_map_to_queue_leaves_with_asterisk_data_layouts() {
    let leave = |reason, wait| EventKind::QueueLeave { queue: "support".into(), reason, reported_wait_ms: wait };
    let cases = [
        ("ABANDON|1|4|23", leave(LeaveReason::Abandon, Some(23_000))),
        ("EXITWITHTIMEOUT|2|5|30", leave(LeaveReason::Timeout, Some(30_000))),
        ("EXITWITHTIMEOUT|2", leave(LeaveReason::Timeout, None)),
        ("EXITWITHKEY|5|1|3|17", leave(LeaveReason::ExitWithKey, Some(17_000))),
        ("EXITWITHKEY|5|1", leave(LeaveReason::ExitWithKey, None)),
        ("EXITEMPTY|1|2|9", leave(LeaveReason::LeaveEmpty, Some(9_000))),
        ("LEAVEEMPTY|1|2|8", leave(LeaveReason::LeaveEmpty, Some(8_000))),
        ("LEAVEEMPTY", leave(LeaveReason::LeaveEmpty, None)),
        ("FULL||0611|1", leave(LeaveReason::Full, None)),
        ("JOINEMPTY||0611|1", leave(LeaveReason::JoinEmpty, None)),
    ];
    for (tail, want) in cases {
        let ev = one(&format!("1795356732|1795356708.23|support|NONE|{tail}\n"));
        assert_eq!(ev.kind, want, "{tail}");
        assert_eq!(ev.call_id, "1795356708.23");
    }
}

#[test]
fn ring_verbs_map_to_missed_offers_in_milliseconds() {
    let missed = |reason, ring| EventKind::OfferMissed {
        queue: s("support"),
        agent: "Carla Jiménez".into(),
        reason,
        reported_ring_ms: ring,
    };
    assert_eq!(kind("1|c|support|Carla Jiménez|RINGNOANSWER|10000"), missed(MissReason::NoAnswer, Some(10_000)));
    assert_eq!(kind("1|c|support|Carla Jiménez|RINGCANCELED|528"), missed(MissReason::Canceled, Some(528)));
    assert_eq!(kind("1|c|support|Carla Jiménez|AGENTDUMP"), missed(MissReason::Rejected, None));
    // Ring time 0: the device refused within the second (busy, congestion).
    assert_eq!(kind("1|c|support|Carla Jiménez|RINGNOANSWER|0"), missed(MissReason::Rejected, Some(0)));
}

#[test]
fn transfers_map_with_their_targets() {
    let blind = |talk| EventKind::Transfer {
        kind: TransferKind::Blind,
        queue: s("support"),
        agent: s("Alice Martin"),
        target: "700@transfer".into(),
        reported_talk_ms: talk,
    };
    assert_eq!(kind("1|c|support|Alice Martin|BLINDTRANSFER|700|transfer|34|17|3"), blind(Some(17_000)));
    assert_eq!(kind("1|c|support|Alice Martin|TRANSFER|700|transfer|34|17|3"), blind(Some(17_000)));
    let attended = |target: &str, talk| EventKind::Transfer {
        kind: TransferKind::Attended,
        queue: s("support"),
        agent: s("Bob Nguyen"),
        target: target.into(),
        reported_talk_ms: talk,
    };
    assert_eq!(
        kind("1|c|support|Bob Nguyen|ATTENDEDTRANSFER|BRIDGE|431e145d-3d0e-40d4-88c0-4f9b38092371|3|28|2"),
        attended("BRIDGE:431e145d-3d0e-40d4-88c0-4f9b38092371", Some(28_000))
    );
    assert_eq!(
        kind("1|c|support|Bob Nguyen|ATTENDEDTRANSFER|APP|Voicemail|5|40|1"),
        attended("APP:Voicemail", Some(40_000))
    );
    assert_eq!(
        kind("1|c|support|Bob Nguyen|ATTENDEDTRANSFER|LINK|Local/1@a-1;1|Local/2@a-2;2|5|41|1"),
        attended("LINK:Local/1@a-1;1|Local/2@a-2;2", Some(41_000))
    );
    assert_eq!(kind("1|c|support|Bob Nguyen|ATTENDEDTRANSFER|BRIDGE|x"), attended("BRIDGE:x", None));
}

#[test]
fn member_verbs_map_to_agent_states_without_a_call() {
    let state = |line: &str| {
        let ev = one(line);
        assert_eq!(ev.call_id, "", "{line}");
        ev.kind
    };
    let agent_state = |queue: Option<&str>, state| EventKind::AgentState {
        agent: "Carla Jiménez".into(),
        queue: queue.map(str::to_owned),
        state,
    };
    let paused = |reason: &str| AgentState::Paused { reason: reason.into() };
    let cases = [
        ("MANAGER|support|Carla Jiménez|ADDMEMBER|", agent_state(Some("support"), AgentState::Login)),
        ("MANAGER|support|Carla Jiménez|ADDMEMBER|PAUSED", agent_state(Some("support"), paused(""))),
        ("MANAGER|support|Carla Jiménez|REMOVEMEMBER|", agent_state(Some("support"), AgentState::Logout)),
        ("NONE|NONE|Carla Jiménez|AGENTLOGIN|Local/1003@agents", agent_state(None, AgentState::Login)),
        ("NONE|support|Carla Jiménez|AGENTLOGIN|Local/1003@agents", agent_state(Some("support"), AgentState::Login)),
        ("NONE|NONE|Carla Jiménez|AGENTLOGOFF|Local/1003@agents|240", agent_state(None, AgentState::Logout)),
        ("NONE|NONE|Carla Jiménez|AGENTCALLBACKLOGIN|1003@agents", agent_state(None, AgentState::Login)),
        ("NONE|support|Carla Jiménez|PAUSE|lunch", agent_state(Some("support"), paused("lunch"))),
        ("NONE|support|Carla Jiménez|PAUSE|", agent_state(Some("support"), paused(""))),
        ("NONE|NONE|Carla Jiménez|PAUSEALL|break", agent_state(None, paused("break"))),
        ("NONE|support|Carla Jiménez|UNPAUSE|", agent_state(Some("support"), AgentState::Available)),
        ("NONE|support|Carla Jiménez|UNPAUSEALL|", agent_state(None, AgentState::Available)),
    ];
    for (tail, want) in cases {
        assert_eq!(state(&format!("1795356684|{tail}")), want, "{tail}");
    }
    // An agent-state verb without agent cannot say whose state changed.
    let (events, m) = map("1|NONE|support|NONE|PAUSE|x\n");
    assert!(events.is_empty());
    assert_eq!(m.unparsed().malformed, 1);
}

fn aliases(pairs: &[(&str, &str)]) -> Result<AgentAliases, AgentAliasError> {
    AgentAliases::new(pairs.iter().map(|&(a, b)| (a.to_owned(), b.to_owned())))
}

/// The agent field of each event, in order (`None`: the event has none).
fn agents_of(events: &[FeedEvent]) -> Vec<Option<String>> {
    events
        .iter()
        .map(|e| match &e.kind {
            EventKind::AgentState { agent, .. }
            | EventKind::Answered { agent, .. }
            | EventKind::OfferMissed { agent, .. }
            | EventKind::WrapUpStart { agent, .. }
            | EventKind::WrapUpEnd { agent, .. } => Some(agent.clone()),
            EventKind::Hangup { agent, .. }
            | EventKind::Transfer { agent, .. }
            | EventKind::SurveyAnswer { agent, .. }
            | EventKind::Disposition { agent, .. }
            | EventKind::DialResult { agent, .. } => agent.clone(),
            EventKind::CallOffered { caller, .. } => Some(caller.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn agent_aliases_rename_the_agent_of_every_verb_exactly() {
    let input = "\
1|MANAGER|support|PJSIP/1001|ADDMEMBER|
2|NONE|support|Alice|PAUSE|lunch
3|NONE|NONE|PJSIP/1001|PAUSEALL|
4|c1|support|PJSIP/1001|RINGNOANSWER|15000
5|c1|support|PJSIP/1001|CONNECT|4|c2|3
6|c1|support|PJSIP/1001|COMPLETECALLER|4|60|1
7|c1|support|PJSIP/1001|SURVEY|5|csat
8|c1|support|PJSIP/1001|DISPOSITION|sale|1
9|c1|support|PJSIP/1001|WRAPUPSTART|
10|c3|NONE|PJSIP/1001|OUTDIAL|0612345678|trunk1
11|c3|NONE|PJSIP/1001|OUTRESULT|BUSY|17
12|c1|support|pjsip/1001|CONNECT|4|c2|3
13|MANAGER|support|PJSIP/1001|REMOVEMEMBER|
";
    let plain = QueueLogMapper::new(QueueLogConfig::default()).map_all(input.as_bytes());
    let config =
        QueueLogConfig { agent_aliases: aliases(&[("PJSIP/1001", "Alice")]).expect("valid"), ..Default::default() };
    let mut m = QueueLogMapper::new(config);
    let aliased = m.map_all(input.as_bytes());
    assert_eq!(m.unparsed(), &Unparsed::default());
    let a = || Some("Alice".to_owned());
    // Exact and case-sensitive: `pjsip/1001` is another logged name.
    let expected = [a(), a(), a(), a(), a(), a(), a(), a(), a(), a(), a(), s("pjsip/1001"), a()];
    assert_eq!(agents_of(&aliased), expected);
    // Only the agent changes: same events otherwise.
    assert_eq!(plain.len(), aliased.len());
    assert_eq!(agents_of(&plain)[0], s("PJSIP/1001"));
    assert_eq!(agents_of(&plain)[1], a());
    for (p, q) in plain.iter().zip(&aliased) {
        assert_eq!((&p.call_id, &p.leg_id, p.source_time), (&q.call_id, &q.leg_id, q.source_time));
    }
    // The CSV form goes through the same path.
    let csv = "time,callid,queuename,agent,event,data1\n1,MANAGER,support,PJSIP/1001,ADDMEMBER,\n";
    let config =
        QueueLogConfig { agent_aliases: aliases(&[("PJSIP/1001", "Alice")]).expect("valid"), ..Default::default() };
    assert_eq!(agents_of(&QueueLogMapper::new(config).map_all(csv.as_bytes())), [a()]);
}

#[test]
fn agent_alias_maps_are_checked() {
    let ok = aliases(&[("PJSIP/1001", "Alice"), ("Local/1002@agents/n", "Bob"), ("PJSIP/1003", "Alice")])
        .expect("two interfaces may name one person");
    assert_eq!((ok.len(), ok.resolve("PJSIP/1003"), ok.resolve("Bob")), (3, "Alice", "Bob"));
    assert!(AgentAliases::default().is_empty());
    assert_eq!(aliases(&[("", "Alice")]), Err(AgentAliasError::EmptyName { logged: String::new() }));
    assert_eq!(aliases(&[("PJSIP/1001", "")]), Err(AgentAliasError::EmptyName { logged: "PJSIP/1001".into() }));
    assert_eq!(aliases(&[("NONE", "Alice")]), Err(AgentAliasError::NoneName { logged: "NONE".into() }));
    let chain = aliases(&[("PJSIP/1001", "Alice"), ("Alice", "Alice Martin")]).expect_err("chain");
    assert_eq!(chain, AgentAliasError::Chain { logged: "PJSIP/1001".into(), reported: "Alice".into() });
    assert_eq!(chain.logged(), "PJSIP/1001");
    assert!(chain.to_string().contains("itself aliased"), "{chain}");
    let own = aliases(&[("Alice", "Alice")]).expect_err("self");
    assert_eq!(own.to_string(), "agent alias \"Alice\" maps to itself");
}

#[test]
fn queuestart_did_and_informational_verbs() {
    let ev = one("1795356677|NONE|NONE|NONE|QUEUESTART|");
    assert_eq!((ev.kind, ev.call_id.as_str()), (EventKind::QueueStart, ""));
    let ev = one("1|1795356686.1|support|NONE|DID|0155501234");
    assert_eq!(ev.call_id, "1795356686.1");
    assert_eq!(
        ev.kind,
        EventKind::CallOffered {
            direction: Direction::Inbound,
            caller: String::new(),
            called: "0155501234".into(),
            trunk: None,
        }
    );
    let (events, m) = map("1|NONE|NONE|NONE|CONFIGRELOAD|\n2|c|q|NONE|INFO|x|y\n");
    assert!(events.is_empty());
    assert_eq!(m.unparsed(), &Unparsed::default());
    assert_eq!(
        kind("3|c|q|NONE|WITHDRAW|1|2|14|moved"),
        EventKind::QueueLeave { queue: "q".into(), reason: LeaveReason::Unspecified, reported_wait_ms: Some(14_000) }
    );
    // SYSCOMPAT: the call was dropped; the caller's stay in the queue ends.
    assert_eq!(
        kind("3|c|q|a|SYSCOMPAT"),
        EventKind::QueueLeave { queue: "q".into(), reason: LeaveReason::Unspecified, reported_wait_ms: None }
    );
}

#[test]
fn unknown_verbs_are_counted_by_name() {
    let (events, m) = map("1|NONE|q|a|PENALTY|3\n2|NONE|q|a|PENALTY|4\n3|c|q|a|MYVERB\n4|c|q|NONE|ABANDON|1|1|5\n");
    assert_eq!(events.len(), 1);
    let want: BTreeMap<String, u64> = [("MYVERB".to_owned(), 1), ("PENALTY".to_owned(), 2)].into();
    assert_eq!(m.unparsed().by_name, want);
    assert_eq!(m.unparsed().malformed, 0);
}

// --- callkpi's custom verbs ---

#[test]
fn survey_scores_with_metric_and_scale() {
    let survey = |metric, score, min, max| EventKind::SurveyAnswer {
        metric,
        score,
        scale_min: min,
        scale_max: max,
        queue: s("support"),
        agent: s("Alice Martin"),
    };
    let line = |data: &str| format!("1795356719|1795356686.1|support|Alice Martin|SURVEY|{data}");
    assert_eq!(kind(&line("2")), survey(SurveyMetric::Csat, 2.0, 1.0, 5.0));
    assert_eq!(kind(&line("4|csat")), survey(SurveyMetric::Csat, 4.0, 1.0, 5.0));
    assert_eq!(kind(&line("9|NPS")), survey(SurveyMetric::Nps, 9.0, 0.0, 10.0));
    assert_eq!(kind(&line("0|nps")), survey(SurveyMetric::Nps, 0.0, 0.0, 10.0));
    assert_eq!(kind(&line("6|ces")), survey(SurveyMetric::Ces, 6.0, 1.0, 7.0));
    assert_eq!(kind(&line("8|csat|1|10")), survey(SurveyMetric::Csat, 8.0, 1.0, 10.0));
    assert_eq!(kind(&line("4.5|ces||5")), survey(SurveyMetric::Ces, 4.5, 1.0, 5.0));
    assert_eq!(one(&line("3")).call_id, "1795356686.1");
    for bad in ["", "x", "6", "0", "3|foo", "3|csat|5|1", "NaN", "inf|nps"] {
        let (events, m) = map(&line(bad));
        assert!(events.is_empty(), "{bad}");
        assert_eq!(m.unparsed().malformed, 1, "{bad}");
        assert_eq!(m.last_malformed().map(|e| e.error.kind), Some(ParseErrorKind::BadData));
    }
}

#[test]
fn disposition_codes() {
    let disposition = |resolved, agent: Option<&str>| EventKind::Disposition {
        resolved,
        code: "BILLING".into(),
        agent: agent.map(str::to_owned),
    };
    for (flag, resolved) in [("1", true), ("yes", true), ("TRUE", true), ("0", false), ("No", false), ("false", false)]
    {
        let line = format!("1|c|support|Bob Nguyen|DISPOSITION|BILLING|{flag}");
        assert_eq!(kind(&line), disposition(resolved, Some("Bob Nguyen")), "{flag}");
    }
    assert_eq!(kind("1|c|NONE|NONE|DISPOSITION|BILLING|1"), disposition(true, None));
    let (events, m) = map("1|c|q|a|DISPOSITION|BILLING|maybe\n1|c|q|a|DISPOSITION|BILLING\n");
    assert!(events.is_empty());
    assert_eq!(m.unparsed().malformed, 2);
}

#[test]
fn outbound_dial_and_its_result() {
    let input = "\
1|1795356900.1|NONE|Alice Martin|OUTDIAL|0611111119|trunk-a
16|1795356900.1|NONE|Alice Martin|OUTRESULT|NOANSWER|19
20|1795356950.2|NONE|Dmitri Petrov|OUTDIAL|0622222222
25|1795356950.2|NONE|Dmitri Petrov|OUTANSWER
30|1795356960.3|NONE|NONE|OUTRESULT|BUSY|17|0633333333
40|1795356970.4|NONE|NONE|OUTRESULT|CHANUNAVAIL
";
    let (events, m) = map(input);
    assert_eq!(m.unparsed(), &Unparsed::default());
    let kinds: Vec<EventKind> = events.into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::CallOffered {
                direction: Direction::Outbound,
                caller: "Alice Martin".into(),
                called: "0611111119".into(),
                trunk: s("trunk-a"),
            },
            EventKind::DialResult {
                agent: s("Alice Martin"),
                dialled: "0611111119".into(),
                trunk: s("trunk-a"),
                outcome: DialOutcome::NoAnswer,
                cause: Some(19),
            },
            EventKind::CallOffered {
                direction: Direction::Outbound,
                caller: "Dmitri Petrov".into(),
                called: "0622222222".into(),
                trunk: None,
            },
            EventKind::DialResult {
                agent: s("Dmitri Petrov"),
                dialled: "0622222222".into(),
                trunk: None,
                outcome: DialOutcome::Answered,
                cause: None,
            },
            EventKind::DialResult {
                agent: None,
                dialled: "0633333333".into(),
                trunk: None,
                outcome: DialOutcome::Busy,
                cause: Some(17),
            },
            EventKind::DialResult {
                agent: None,
                dialled: String::new(),
                trunk: None,
                outcome: DialOutcome::Unavailable,
                cause: None,
            },
        ]
    );
    for (status, outcome) in [
        ("ANSWER", DialOutcome::Answered),
        ("CONGESTION", DialOutcome::Congestion),
        ("CANCEL", DialOutcome::AgentAbandoned),
        ("FAILED", DialOutcome::Failed),
        ("INVALIDARGS", DialOutcome::Failed),
    ] {
        let got = kind(&format!("1|c|NONE|a|OUTRESULT|{status}||0611"));
        assert!(matches!(got, EventKind::DialResult { outcome: o, .. } if o == outcome), "{status}");
    }
    let (events, m) = map("1|c|NONE|a|OUTRESULT|WHATEVER\n1|c|NONE|a|OUTDIAL|\n");
    assert!(events.is_empty());
    assert_eq!(m.unparsed().malformed, 2);
}

#[test]
fn wrap_up_verbs() {
    assert_eq!(
        kind("1|c|support|Alice Martin|WRAPUPSTART"),
        EventKind::WrapUpStart { agent: "Alice Martin".into(), queue: s("support") }
    );
    assert_eq!(
        kind("1|c|NONE|Alice Martin|WRAPUPEND|"),
        EventKind::WrapUpEnd { agent: "Alice Martin".into(), queue: None }
    );
    let (events, m) = map("1|c|support|NONE|WRAPUPSTART\n");
    assert!(events.is_empty());
    assert_eq!(m.unparsed().malformed, 1);
}

// --- streaming ---

#[test]
fn crlf_lines_map_like_lf_lines() {
    let lf = "1|c|q|NONE|ABANDON|1|4|23\n2|NONE|q|Bob|PAUSE|lunch\n";
    let crlf = lf.replace('\n', "\r\n");
    let (a, ma) = map(lf);
    let (b, mb) = map(&crlf);
    assert_eq!(a.len(), 2);
    assert_eq!(a, b);
    assert_eq!(ma.unparsed(), mb.unparsed());
    assert_eq!(mb.offset(), crlf.len() as u64);
}

#[test]
fn a_record_split_across_two_pushes() {
    let line = b"1795356691|1795356686.1|support|Alice Martin|CONNECT|4|1795356687.2|4\n";
    let mut m = mapper();
    let mut events = Vec::new();
    let (head, tail) = line.split_at(30);
    assert_eq!(parse_line(head), Ok(Status::Partial));
    assert_eq!(m.push(head, &mut events), 0);
    assert!(events.is_empty());
    assert_eq!(m.offset(), 0);
    let mut pending = head.to_vec();
    pending.extend_from_slice(tail);
    assert_eq!(m.push(&pending, &mut events), line.len());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].leg_id, "1795356687.2");
    assert_eq!(m.offset(), line.len() as u64);
}

#[test]
fn a_final_line_without_newline_waits_for_finish() {
    let input = b"1|c|q|NONE|ENTERQUEUE||0611|1\n2|c|q|NONE|ABANDON|1|1|7";
    let mut m = mapper();
    let mut events = Vec::new();
    let consumed = m.push(input, &mut events);
    assert_eq!(consumed, 30);
    assert_eq!(events.len(), 1);
    assert_eq!(m.finish(&input[consumed..], &mut events), input.len() - 30);
    assert_eq!(events.len(), 2);
    assert!(matches!(events[1].kind, EventKind::QueueLeave { reported_wait_ms: Some(7000), .. }));
    assert_eq!(m.offset(), input.len() as u64);
    assert_eq!(m.form(), Some(InputForm::File));
}

#[test]
fn malformed_lines_are_counted_and_skipped() {
    let input = b"\xef\xbb\xbf1|c|q|NONE|ENTERQUEUE||0611|1\n\
abc|c|q|NONE|ABANDON|1|1|7\n\
2|c|q\n\
\n\
3|c|q|Jos\xe9|CONNECT|1|l|1\r\n\
4|c|q|NONE|ABANDON|1|1|7\n";
    let mut m = mapper();
    let events = m.map_all(input);
    // The Latin-1 line is a record, read as ISO-8859-1.
    assert_eq!(events.len(), 3);
    assert!(matches!(&events[1].kind, EventKind::Answered { agent, .. } if agent == "Jos\u{e9}"));
    assert_eq!(m.unparsed().malformed, 2);
    assert!(m.unparsed().by_name.is_empty());
    let last = m.last_malformed().expect("malformed");
    assert_eq!(last.error.kind, ParseErrorKind::TooFewFields);
    assert_eq!(last.at, 33 + 27);
    assert_eq!(last.error.offset, 5);
    assert_eq!(m.offset(), input.len() as u64);
    // Resumed at a checkpoint: offsets stay absolute, and no BOM is expected.
    let mut m = mapper().starting_at(1000);
    let events = m.map_all(&input[33..]);
    assert_eq!((events.len(), m.unparsed().malformed), (2, 2));
    assert_eq!(m.last_malformed().map(|e| e.at), Some(1000 + 27));
    assert_eq!(m.offset(), 1000 + input.len() as u64 - 33);
}

// --- CSV form ---

#[test]
fn csv_with_quoted_fields_and_datetimes() {
    let input = "\
time,callid,queuename,agent,event,data1,data2,data3,data4,data5
2026-11-22 10:04:47.250000,1795356686.1,support,NONE,ENTERQUEUE,,\"0639987952\",1,,
2026-11-22 10:04:51,1795356686.1,support,\"Martin, Alice \"\"Al\"\"\",CONNECT,4,1795356687.2,4,,
1795356720,1795356689.9,support,Bob Nguyen,ATTENDEDTRANSFER,BRIDGE,431e,3,28,2
1795356720,1795356689.9,\"sup
port\",Bob,ABANDON,1,2,\"12\",,
";
    let (events, m) = map(input);
    assert_eq!(m.form(), Some(InputForm::Csv));
    assert_eq!(m.unparsed(), &Unparsed::default());
    assert_eq!(events.len(), 4);
    let base = jiff::Timestamp::from_str("2026-11-22T10:04:47.25Z").expect("ts").as_nanosecond() as i64;
    assert_eq!(events[0].source_time, Some(base));
    assert_eq!(
        events[0].kind,
        EventKind::QueueJoin { queue: "support".into(), caller: s("0639987952"), position: Some(1) }
    );
    assert_eq!(events[1].source_time, Some(base + 3750 * NANOS_PER_MS));
    assert_eq!(events[1].leg_id, "1795356687.2");
    assert_eq!(
        events[1].kind,
        EventKind::Answered {
            queue: s("support"),
            agent: "Martin, Alice \"Al\"".into(),
            reported_wait_ms: Some(4000),
            reported_ring_ms: Some(4000),
        }
    );
    assert_eq!(events[2].source_time, Some(1_795_356_720 * NANOS_PER_SEC));
    assert!(
        matches!(&events[2].kind, EventKind::Transfer { target, reported_talk_ms: Some(28_000), .. } if target == "BRIDGE:431e")
    );
    assert_eq!(
        events[3].kind,
        EventKind::QueueLeave {
            queue: "sup\nport".into(),
            reason: LeaveReason::Abandon,
            reported_wait_ms: Some(12_000)
        }
    );
}

#[test]
fn csv_header_in_another_order_with_crlf() {
    let input = "id,\"event\",agent,time,queuename,callid,data3,data1,data2\r\n\
7,COMPLETEAGENT,Alice Martin,1795356717,support,1795356686.1,1,4,26\r\n\
8,ENTERQUEUE,NONE,1795356717,support,1795356717.31,6,,0565373532\r\n";
    let (events, m) = map(input);
    assert_eq!(m.unparsed(), &Unparsed::default());
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].call_id, "1795356686.1");
    assert_eq!(
        events[0].kind,
        EventKind::Hangup {
            queue: s("support"),
            agent: s("Alice Martin"),
            by: HangupBy::Agent,
            cause: None,
            reported_talk_ms: Some(26_000),
        }
    );
    assert_eq!(
        events[1].kind,
        EventKind::QueueJoin { queue: "support".into(), caller: s("0565373532"), position: Some(6) }
    );
}

#[test]
fn csv_with_a_single_data_column() {
    let input = "time,callid,queuename,agent,event,data\n\
1795356720,1795356689.9,support,Bob Nguyen,ATTENDEDTRANSFER,BRIDGE|431e|3|28|2\n\
1795356743,NONE,support,Bob Nguyen,PAUSE,lunch\n\
1795356743,\\N,\\N,Bob Nguyen,UNPAUSEALL,\\N\n";
    let (events, m) = map(input);
    assert_eq!(m.unparsed(), &Unparsed::default());
    assert_eq!(events.len(), 3);
    assert!(
        matches!(&events[0].kind, EventKind::Transfer { target, reported_talk_ms: Some(28_000), .. } if target == "BRIDGE:431e")
    );
    assert_eq!(
        events[1].kind,
        EventKind::AgentState {
            agent: "Bob Nguyen".into(),
            queue: s("support"),
            state: AgentState::Paused { reason: "lunch".into() },
        }
    );
    assert_eq!(
        events[2].kind,
        EventKind::AgentState { agent: "Bob Nguyen".into(), queue: None, state: AgentState::Available }
    );
}

#[test]
fn csv_datetimes_in_europe_paris() {
    let tz = TimeZone::get("Europe/Paris").expect("tzdb");
    let config = QueueLogConfig { time_zone: tz, ..QueueLogConfig::default() };
    let input = "time,callid,queuename,agent,event,data1,data2,data3\n\
2026-01-15 09:00:00,a,q,NONE,ABANDON,1,1,5\n\
2026-07-15 09:00:00.5,b,q,NONE,ABANDON,1,1,5\n\
2026-07-15T09:00:00+00:00,c,q,NONE,ABANDON,1,1,5\n\
2026-10-25 02:30:00,d,q,NONE,ABANDON,1,1,5\n\
2026-13-45 09:00:00,e,q,NONE,ABANDON,1,1,5\n";
    let mut m = QueueLogMapper::new(config);
    let events = m.map_all(input.as_bytes());
    let utc = |s: &str| jiff::Timestamp::from_str(s).expect("ts").as_nanosecond() as i64;
    let times: Vec<_> = events.iter().map(|e| e.source_time).collect();
    assert_eq!(
        times,
        [
            Some(utc("2026-01-15T08:00:00Z")),
            Some(utc("2026-07-15T07:00:00.5Z")),
            Some(utc("2026-07-15T09:00:00Z")),
            // The repeated hour of the DST change: the earlier instant.
            Some(utc("2026-10-25T00:30:00Z")),
        ]
    );
    assert_eq!(m.unparsed().malformed, 1);
    assert_eq!(m.last_malformed().map(|e| e.error.kind), Some(ParseErrorKind::BadTime));
}

#[test]
fn csv_record_split_across_pushes_and_forced_csv_without_header() {
    let input = b"time,callid,queuename,agent,event,data1,data2,data3\n1,c,q,NONE,ABANDON,1,\"1\n\",5\n";
    let mut m = mapper();
    let mut events = Vec::new();
    assert_eq!(m.push(&input[..20], &mut events), 0);
    assert_eq!(m.push(&input[..70], &mut events), 52);
    assert!(events.is_empty());
    assert_eq!(m.push(&input[52..], &mut events), input.len() - 52);
    assert_eq!(events.len(), 1);
    assert_eq!(m.offset(), input.len() as u64);

    let mut m = QueueLogMapper::new(QueueLogConfig { form: Some(InputForm::Csv), ..QueueLogConfig::default() });
    let events = m.map_all(b"2026-11-22 10:00:00,c,q,NONE,ABANDON,1,1,5");
    assert_eq!(events.len(), 1);
    assert!(matches!(events[0].kind, EventKind::QueueLeave { reported_wait_ms: Some(5000), .. }));
}

#[test]
fn form_detection() {
    assert_eq!(detect_form(b"time,callid,queuename,agent,event,data1"), InputForm::Csv);
    assert_eq!(detect_form(b"\xef\xbb\xbf\"TIME\",\"Event\",data\r"), InputForm::Csv);
    assert_eq!(detect_form(b"1795356677|NONE|NONE|NONE|QUEUESTART|"), InputForm::File);
    assert_eq!(detect_form(b"callid,queuename"), InputForm::File);
    assert_eq!(detect_form(b""), InputForm::File);
    assert_eq!(
        csv_header_line(b"time_id,call_id,queue,agent,verb\r\n1,", None),
        Some(&b"time_id,call_id,queue,agent,verb\r\n"[..])
    );
    assert_eq!(csv_header_line(b"time,callid,queue,agent,event\n", Some(InputForm::File)), None);
    assert_eq!(csv_header_line(b"1795356677|NONE|NONE|NONE|QUEUESTART|\n", None), None);
    assert_eq!(csv_header_line(b"time,callid", None), None, "an incomplete line");
    // A header of an unknown layout is still a CSV header (to be refused).
    assert_eq!(detect_form(b"timestamp,uniqueid,queue_name,member,action,d1"), InputForm::Csv);
    // Not a header: a headerless row starting with a time.
    assert_eq!(detect_form(b"1795356677,NONE,NONE,NONE,QUEUESTART"), InputForm::File);
    let mut m = mapper();
    assert_eq!(m.push(b"time,callid,qu", &mut Vec::new()), 0);
    assert_eq!(m.form(), None);
}

/// Issue 17: a DB export whose header is no known layout used to be read as
/// garbage (every line malformed, or worse). It is refused as a whole, with
/// the columns it has.
#[test]
fn csv_with_an_unknown_header_is_refused() {
    let input = "timestamp,uniqueid,queue_name,member,action,d1,d2,d3\n\
                 2026-11-22 10:00:00,1.1,support,NONE,ENTERQUEUE,,0612,1\n\
                 2026-11-22 10:00:05,1.1,support,Alice,CONNECT,5,1.2,2\n";
    let (events, m) = map(input);
    assert!(events.is_empty());
    assert_eq!(m.unparsed(), &Unparsed::default(), "refused, not counted as malformed");
    let e = m.csv_header_error().expect("header error");
    assert_eq!(e.found, ["timestamp", "uniqueid", "queue_name", "member", "action", "d1", "d2", "d3"]);
    let text = e.to_string();
    for want in ["timestamp, uniqueid", "time_id, call_id, queue, agent, verb", "callid, queuename", "--csv-columns"] {
        assert!(text.contains(want), "{text}");
    }
    // The same input read with its columns mapped.
    let columns: CsvColumns =
        "time=timestamp,callid=uniqueid,queue=queue_name,agent=member,verb=action,data=d1;d2;d3".parse().expect("spec");
    let mut m = QueueLogMapper::new(QueueLogConfig { csv_columns: Some(columns), ..QueueLogConfig::default() });
    let events = m.map_all(input.as_bytes());
    assert!(m.csv_header_error().is_none());
    let kinds: Vec<EventKind> = events.into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::QueueJoin { queue: "support".into(), caller: Some("0612".into()), position: Some(1) },
            EventKind::Answered {
                queue: Some("support".into()),
                agent: "Alice".into(),
                reported_wait_ms: Some(5000),
                reported_ring_ms: Some(2000),
            },
        ]
    );
    // A configured layout the header lacks: refused, naming what is missing.
    let mut m = QueueLogMapper::new(QueueLogConfig {
        csv_columns: Some(CsvColumns::queuemetrics()),
        ..QueueLogConfig::default()
    });
    assert!(m.map_all(input.as_bytes()).is_empty());
    assert_eq!(
        m.csv_header_error().expect("error").missing,
        ["time_id", "verb", "call_id", "queue", "agent", "data1", "data2", "data3", "data4", "data5"]
    );
}

/// QueueMetrics' table is recognised without configuration; its extra
/// columns are not read. Named per-verb columns (hold and talk time of a
/// COMPLETE) are read by listing them in queue_log's order.
#[test]
fn csv_presets_and_named_columns() {
    let qm = "partition,time_id,call_id,queue,agent,verb,data1,data2,data3,data4,data5,serverid,unique_row_count\n\
              P001,1795356691,1.1,support,Alice,COMPLETEAGENT,4,60,1,,,1,7\n";
    for config in [
        QueueLogConfig::default(),
        QueueLogConfig { csv_columns: Some(CsvColumns::queuemetrics()), ..QueueLogConfig::default() },
    ] {
        let mut m = QueueLogMapper::new(config);
        let events = m.map_all(qm.as_bytes());
        assert!(m.csv_header_error().is_none());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].source_time, Some(1_795_356_691 * NANOS_PER_SEC));
        assert!(matches!(events[0].kind, EventKind::Hangup { reported_talk_ms: Some(60_000), .. }), "{events:?}");
    }
    let named = "ts,id,q,who,what,holdtime,talktime,pos\n1795356691,1.1,support,Alice,COMPLETECALLER,4,61,1\n";
    let columns = "time=ts,callid=id,queue=q,agent=who,verb=what,data=holdtime;talktime;pos".parse().expect("spec");
    let events = QueueLogMapper::new(QueueLogConfig { csv_columns: Some(columns), ..QueueLogConfig::default() })
        .map_all(named.as_bytes());
    assert!(matches!(events[0].kind, EventKind::Hangup { by: HangupBy::Caller, reported_talk_ms: Some(61_000), .. }));
    assert_eq!("asterisk".parse::<CsvColumns>(), Ok(CsvColumns::asterisk()));
    for bad in ["time=a", "verb=b", "time=a,verb=b,colour=c", "time=a,verb", "time=,verb=b"] {
        assert!(bad.parse::<CsvColumns>().is_err(), "{bad}");
    }
}

// --- the real recording ---

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../../tests/fixtures/asterisk/run-a/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Asterisk verb an event of the recording came from.
fn verb_of(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::QueueJoin { .. } => "ENTERQUEUE",
        EventKind::Answered { .. } => "CONNECT",
        EventKind::Hangup { by: HangupBy::Agent, .. } => "COMPLETEAGENT",
        EventKind::Hangup { .. } => "COMPLETECALLER",
        EventKind::SurveyAnswer { .. } => "SURVEY",
        EventKind::QueueLeave { reason: LeaveReason::Abandon, .. } => "ABANDON",
        EventKind::QueueLeave { .. } => "other exit",
        EventKind::OfferMissed { reason: MissReason::NoAnswer, .. } => "RINGNOANSWER",
        EventKind::OfferMissed { .. } => "RINGCANCELED",
        EventKind::Transfer { kind: TransferKind::Attended, .. } => "ATTENDEDTRANSFER",
        EventKind::Transfer { .. } => "BLINDTRANSFER",
        EventKind::QueueStart => "QUEUESTART",
        EventKind::AgentState { state: AgentState::Login, .. } => "ADDMEMBER",
        EventKind::AgentState { state: AgentState::Logout, .. } => "REMOVEMEMBER",
        EventKind::AgentState { state: AgentState::Paused { .. }, .. } => "PAUSE",
        EventKind::AgentState { .. } => "UNPAUSE",
        _ => "other",
    }
}

#[test]
fn real_recording_matches_truth_verb_counts() {
    let truth: serde_json::Value = serde_json::from_slice(&fixture("truth.json")).expect("truth.json");
    let want: BTreeMap<String, u64> = truth["queue_log_verb_counts"]
        .as_object()
        .expect("queue_log_verb_counts")
        .iter()
        .map(|(verb, n)| (verb.clone(), n.as_u64().expect("count")))
        .collect();
    let input = fixture("queue_log");
    let mut m = mapper();
    let events = m.map_all(&input);
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for ev in &events {
        *got.entry(verb_of(&ev.kind).to_owned()).or_default() += 1;
    }
    assert_eq!(got, want);
    assert_eq!(want["ENTERQUEUE"], 51);
    assert_eq!(m.unparsed(), &Unparsed::default());
    assert_eq!(m.offset(), input.len() as u64);
    // Durations as Asterisk measured them.
    let talk: u64 = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Hangup { queue, reported_talk_ms, .. } | EventKind::Transfer { queue, reported_talk_ms, .. }
                if queue.as_deref() == Some("sales") =>
            {
                *reported_talk_ms
            }
            _ => None,
        })
        .sum();
    assert_eq!(talk, truth["queues"]["sales"]["total_talk_s"].as_u64().expect("total_talk_s") * 1000);
    // The same bytes fed in small chunks, as the agent tails them.
    let (chunked, unparsed, offset) = tail(&input, &[7, 300, 1, 64]);
    assert_eq!(chunked, events);
    assert_eq!(unparsed, Unparsed::default());
    assert_eq!(offset, input.len() as u64);
}

// --- properties ---

/// Feeds `input` the way the agent does, in chunks of the given sizes
/// (cycled), keeping unconsumed bytes; checks the checkpoint on the way.
fn tail(input: &[u8], chunk_sizes: &[usize]) -> (Vec<FeedEvent>, Unparsed, u64) {
    let mut m = mapper();
    let mut pending = Vec::new();
    let mut events = Vec::new();
    let mut fed = 0;
    for &size in chunk_sizes.iter().cycle() {
        if fed == input.len() {
            break;
        }
        let end = (fed + size.max(1)).min(input.len());
        pending.extend_from_slice(&input[fed..end]);
        fed = end;
        let consumed = m.push(&pending, &mut events);
        pending.drain(..consumed);
        assert_eq!(m.offset(), (fed - pending.len()) as u64);
    }
    m.finish(&pending, &mut events);
    (events, m.unparsed().clone(), m.offset())
}

const FILE_LINES: &[&str] = &[
    "1795356677|NONE|NONE|NONE|QUEUESTART|\n",
    "1795356687|1795356686.1|support|NONE|ENTERQUEUE||0639987952|1\r\n",
    "1795356691.5|1795356686.1|support|Alice Martin|CONNECT|4|1795356687.2|4\n",
    "1795356720|1795356689.9|support|Bob Nguyen|ATTENDEDTRANSFER|BRIDGE|431e|3|28|2\n",
    "1795356732|1795356708.23|support|Carla Jiménez|RINGCANCELED|528\n",
    "1795356743|NONE|support|Bob Nguyen|PAUSE|lunch\n",
    "1795356719|1795356686.1|support|Alice Martin|SURVEY|2\n",
    "1|c|q|a|PENALTY|3\n",
    "bad line\n",
    "\n",
];

const CSV_ROWS: &[&str] = &[
    "1795356687,1795356686.1,support,NONE,ENTERQUEUE,,0639987952,1,,\n",
    "2026-11-22 10:04:51,1795356686.1,support,\"Martin, Alice\",CONNECT,4,x,4,,\r\n",
    "1795356732,c,\"sup\nport\",NONE,ABANDON,1,4,23,,\n",
    "x,c,q,a,ABANDON\n",
    "1,c,q,a,MYVERB\n",
];

fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![any::<u8>(), Just(b'|'), Just(b'\n'), Just(b','), Just(b'"'), Just(b'\r'), b'0'..=b'9']
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        head in prop::sample::select(vec!["", "time,event,data\n", "time,callid,queuename,agent,event,data1,data2\n"]),
        body in prop::collection::vec(byte(), 0..400),
        forced in prop::sample::select(vec![None, Some(InputForm::File), Some(InputForm::Csv)]),
        sizes in prop::collection::vec(1usize..64, 1..4),
    ) {
        let mut input = head.as_bytes().to_vec();
        input.extend_from_slice(&body);
        let mut m = QueueLogMapper::new(QueueLogConfig { form: forced, ..QueueLogConfig::default() });
        let _ = m.map_all(&input);
        prop_assert_eq!(m.offset(), input.len() as u64);
        let _ = parse_line(&input);
        let _ = tail(&input, &sizes);
    }

    #[test]
    fn any_split_of_file_input_gives_the_same_events(
        lines in prop::collection::vec(prop::sample::select(FILE_LINES.to_vec()), 1..12),
        sizes in prop::collection::vec(1usize..80, 1..5),
        last_newline in any::<bool>(),
    ) {
        let mut input = lines.concat().into_bytes();
        if !last_newline && input.last() == Some(&b'\n') {
            input.pop();
        }
        let mut whole = mapper();
        let events = whole.map_all(&input);
        let (chunked, unparsed, offset) = tail(&input, &sizes);
        prop_assert_eq!(&chunked, &events);
        prop_assert_eq!(&unparsed, whole.unparsed());
        prop_assert_eq!(offset, input.len() as u64);
    }

    #[test]
    fn any_split_of_csv_input_gives_the_same_events(
        rows in prop::collection::vec(prop::sample::select(CSV_ROWS.to_vec()), 1..10),
        sizes in prop::collection::vec(1usize..80, 1..5),
    ) {
        let input = format!("time,callid,queuename,agent,event,data1,data2,data3,data4,data5\n{}", rows.concat());
        let input = input.as_bytes();
        let mut whole = mapper();
        let events = whole.map_all(input);
        prop_assert_eq!(whole.form(), Some(InputForm::Csv));
        let (chunked, unparsed, offset) = tail(input, &sizes);
        prop_assert_eq!(&chunked, &events);
        prop_assert_eq!(&unparsed, whole.unparsed());
        prop_assert_eq!(offset, input.len() as u64);
    }
}
