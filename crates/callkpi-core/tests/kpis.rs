//! Hand-computed event sequences, one or more per KPI, through the public engine.

use callkpi_core::event::*;
use callkpi_core::params::{GroupBy, SlFormula};
use callkpi_core::report::Kpis;
use callkpi_core::time::Interval;
use callkpi_core::{Engine, EngineConfig, KpiParams, Watermark};

const T0: i64 = 1_795_356_000; // 2026-11-22T13:20:00Z, a quarter-hour start

/// Builds events for one site with increasing sequence numbers.
struct Script {
    seq: u64,
    events: Vec<Event>,
}

impl Script {
    fn new() -> Self {
        Self { seq: 0, events: Vec::new() }
    }

    fn at(&mut self, secs: f64, call: &str, kind: EventKind) -> &mut Self {
        self.seq += 1;
        let t = ((T0 as f64 + secs) * 1e9) as i64;
        self.events.push(Event {
            id: EventId { agent_id: "test".into(), seq: self.seq },
            site: "hq".into(),
            source: SourceKind::Synthetic,
            call_id: call.into(),
            leg_id: String::new(),
            time: EventTime::from_source(t),
            kind,
        });
        self
    }

    fn join(&mut self, s: f64, call: &str, queue: &str, caller: &str) -> &mut Self {
        self.at(s, call, EventKind::QueueJoin { queue: queue.into(), caller: Some(caller.into()), position: None })
    }

    fn answer(&mut self, s: f64, call: &str, queue: &str, agent: &str) -> &mut Self {
        self.at(
            s,
            call,
            EventKind::Answered {
                queue: Some(queue.into()),
                agent: agent.into(),
                reported_wait_ms: None,
                reported_ring_ms: None,
            },
        )
    }

    fn hangup(&mut self, s: f64, call: &str, agent: &str) -> &mut Self {
        self.at(
            s,
            call,
            EventKind::Hangup {
                queue: None,
                agent: Some(agent.into()),
                by: HangupBy::Caller,
                cause: Some(16),
                reported_talk_ms: None,
            },
        )
    }

    fn leave(&mut self, s: f64, call: &str, queue: &str, reason: LeaveReason) -> &mut Self {
        self.at(s, call, EventKind::QueueLeave { queue: queue.into(), reason, reported_wait_ms: None })
    }

    fn survey(&mut self, s: f64, call: &str, metric: SurveyMetric, score: f64, min: f64, max: f64) -> &mut Self {
        self.at(
            s,
            call,
            EventKind::SurveyAnswer { metric, score, scale_min: min, scale_max: max, queue: None, agent: None },
        )
    }
}

type Group = std::collections::BTreeMap<String, Option<String>>;

fn run(events: &[Event], params: &KpiParams) -> Vec<(Group, Kpis, Vec<String>)> {
    let mut e = Engine::new(EngineConfig::default());
    for ev in events {
        e.ingest(ev.clone());
    }
    e.refresh(None, true);
    let wm = [Watermark { agent_id: "test".into(), delivered_until: e.clock().unwrap_or(0) }];
    e.report(params, &wm).unwrap().rows.into_iter().map(|r| (r.group, r.kpis, r.flags)).collect()
}

fn all(params_fn: impl FnOnce(&mut KpiParams)) -> KpiParams {
    let mut p = KpiParams { interval: Interval::All, ..KpiParams::default() };
    params_fn(&mut p);
    p
}

fn one(events: &[Event], params: &KpiParams) -> Kpis {
    let rows = run(events, params);
    assert_eq!(rows.len(), 1, "expected one row, got {rows:#?}");
    rows.into_iter().next().unwrap().1
}

fn close(a: Option<f64>, b: f64) {
    let a = a.unwrap_or_else(|| panic!("expected {b}, got null"));
    assert!((a - b).abs() < 1e-9, "expected {b}, got {a}");
}

#[test]
fn offered_answered_abandoned_short_and_service_level() {
    let mut s = Script::new();
    // c1 answered after 10 s, talks 60 s; c2 answered after 25 s, talks 30 s;
    // c3 abandons after 40 s; c4 abandons after 3 s (short); c5 times out after 120 s.
    s.join(0.0, "c1", "q", "0100000001").answer(10.0, "c1", "q", "A").hangup(70.0, "c1", "A");
    s.join(0.0, "c2", "q", "0100000002").answer(25.0, "c2", "q", "B").hangup(55.0, "c2", "B");
    s.join(0.0, "c3", "q", "0100000003").leave(40.0, "c3", "q", LeaveReason::Abandon);
    s.join(0.0, "c4", "q", "0100000004").leave(3.0, "c4", "q", LeaveReason::Abandon);
    s.join(0.0, "c5", "q", "0100000005").leave(120.0, "c5", "q", LeaveReason::Timeout);
    let k = one(&s.events, &all(|p| p.sl_thresholds_s = vec![20, 30]));
    assert_eq!(
        (k.entered, k.offered, k.answered, k.abandoned, k.short_abandoned, k.timed_out, k.other_exits),
        (5, 4, 2, 1, 1, 1, 1)
    );
    close(k.abandonment_rate_pct, 25.0);
    close(k.answer_rate_pct, 50.0);
    close(k.timeout_rate_pct, 25.0);
    close(k.asa_s, 17.5);
    close(k.avg_wait_s, (10.0 + 25.0 + 40.0 + 120.0) / 4.0);
    assert_eq!(k.max_wait_s, Some(120));
    close(k.service_level_pct["20"], 25.0); // 1 of 4 offered
    close(k.service_level_pct["30"], 50.0);
    close(k.aht_s, 45.0);
    close(k.talk_s, 45.0);
    assert_eq!(k.handled, 2);

    // Formula variants on the same data.
    let k = one(
        &s.events,
        &all(|p| {
            p.sl_thresholds_s = vec![20, 45];
            p.sl_formula = SlFormula::Answered;
        }),
    );
    close(k.service_level_pct["20"], 50.0);
    close(k.service_level_pct["45"], 100.0);
    let k = one(
        &s.events,
        &all(|p| {
            p.sl_thresholds_s = vec![45];
            p.sl_formula = SlFormula::AbandonsPositive;
        }),
    );
    close(k.service_level_pct["45"], 75.0); // (2 answered + 1 abandoned within 45 s) / 4
    let k = one(
        &s.events,
        &all(|p| {
            p.sl_thresholds_s = vec![45];
            p.sl_formula = SlFormula::AbandonsIgnored;
        }),
    );
    close(k.service_level_pct["45"], 2.0 * 100.0 / 3.0);
    // Short abandons disabled: the 3 s abandon counts.
    let k = one(&s.events, &all(|p| p.short_abandon_s = 0));
    assert_eq!((k.offered, k.abandoned, k.short_abandoned), (5, 2, 0));
}

#[test]
fn reported_durations_win_over_timestamps() {
    let mut s = Script::new();
    s.join(0.0, "c", "q", "0611").at(
        4.0,
        "c",
        EventKind::Answered {
            queue: Some("q".into()),
            agent: "A".into(),
            reported_wait_ms: Some(3000),
            reported_ring_ms: None,
        },
    );
    s.at(
        30.0,
        "c",
        EventKind::Hangup {
            queue: Some("q".into()),
            agent: Some("A".into()),
            by: HangupBy::Agent,
            cause: None,
            reported_talk_ms: Some(27_000),
        },
    );
    let k = one(&s.events, &all(|_| {}));
    close(k.asa_s, 3.0);
    close(k.talk_s, 27.0);
}

#[test]
fn hold_and_wrap_make_aht_and_flag_goes_away() {
    let mut s = Script::new();
    s.join(0.0, "c", "q", "0611").answer(5.0, "c", "q", "A");
    s.at(20.0, "c", EventKind::Hold { agent: Some("A".into()) });
    s.at(50.0, "c", EventKind::Resume { agent: None });
    s.hangup(105.0, "c", "A");
    s.at(105.0, "c", EventKind::WrapUpStart { agent: "A".into(), queue: Some("q".into()) });
    s.at(125.0, "c", EventKind::WrapUpEnd { agent: "A".into(), queue: Some("q".into()) });
    let rows = run(&s.events, &all(|_| {}));
    let (_, k, flags) = &rows[0];
    close(k.talk_s, 70.0);
    close(k.hold_s, 30.0);
    close(k.wrap_s, 20.0);
    close(k.aht_s, 120.0);
    assert_eq!(k.holds, 1);
    assert!(!flags.contains(&"aht_talk_only".to_string()), "{flags:?}");

    let mut s = Script::new();
    s.join(0.0, "c", "q", "0611").answer(5.0, "c", "q", "A").hangup(15.0, "c", "A");
    let rows = run(&s.events, &all(|_| {}));
    assert!(rows[0].2.contains(&"aht_talk_only".to_string()));
}

#[test]
fn transfer_counts_the_queue_call_once_and_each_agent_segment() {
    let mut s = Script::new();
    s.join(0.0, "c", "q", "0611").answer(10.0, "c", "q", "A");
    s.at(
        40.0,
        "c",
        EventKind::Transfer {
            kind: TransferKind::Attended,
            queue: Some("q".into()),
            agent: Some("A".into()),
            target: "B".into(),
            reported_talk_ms: None,
        },
    );
    s.at(
        40.0,
        "c",
        EventKind::Answered {
            queue: Some("q".into()),
            agent: "B".into(),
            reported_wait_ms: None,
            reported_ring_ms: None,
        },
    );
    s.hangup(100.0, "c", "B");
    let k = one(&s.events, &all(|_| {}));
    assert_eq!((k.answered, k.handled, k.transfers), (1, 1, 1));
    close(k.aht_s, 90.0); // the whole call, counted once for the queue
    let rows = run(&s.events, &all(|p| p.group_by = vec![GroupBy::Agent]));
    let by: std::collections::BTreeMap<_, _> =
        rows.into_iter().map(|(g, k, _)| (g["agent"].clone().unwrap_or_default(), k)).collect();
    assert_eq!(by["A"].handled, 1);
    close(by["A"].aht_s, 30.0);
    assert_eq!(by["A"].transfers, 1);
    close(by["B"].aht_s, 60.0);
    // A transfer to another agent breaks FCR by default, not in the variant.
    close(one(&s.events, &all(|_| {})).fcr_pct, 0.0);
    close(one(&s.events, &all(|p| p.fcr_transfer_breaks = false)).fcr_pct, 100.0);
}

#[test]
fn fcr_repeat_window_and_cases() {
    let mut s = Script::new();
    // Same caller: c1 at 0, c2 at 2 h; another caller once; a withheld caller.
    s.join(0.0, "c1", "q", "+33 6 11 22 33 44").answer(5.0, "c1", "q", "A").hangup(65.0, "c1", "A");
    s.join(7200.0, "c2", "q", "+33611223344").answer(7210.0, "c2", "q", "A").hangup(7250.0, "c2", "A");
    s.join(100.0, "c3", "q", "0499").answer(110.0, "c3", "q", "B").hangup(130.0, "c3", "B");
    s.join(200.0, "c4", "q", "anonymous").answer(205.0, "c4", "q", "B").hangup(215.0, "c4", "B");
    // Window 1 h: c1 and c2 are separate cases, each resolved.
    let k = one(&s.events, &all(|p| p.fcr_window_s = 3600));
    assert_eq!(k.fcr_contacts, 3);
    close(k.fcr_pct, 100.0);
    assert_eq!(k.cases, 3);
    // Window 24 h: c1 is followed by a repeat -> not resolved; one case of two contacts.
    let k = one(&s.events, &all(|p| p.fcr_window_s = 86_400));
    close(k.fcr_pct, 2.0 * 100.0 / 3.0);
    assert_eq!(k.cases, 2);
    close(k.contacts_per_case, 1.5);
    // Treatment: 60 + 40 + 20 = 120 s over 2 cases.
    close(k.dmtt_s, 60.0);
    // Case ages: (7200 + 50) for the repeat case, 30 for c3.
    close(k.case_age_s, (7250.0 + 30.0) / 2.0);
    // An explicit disposition wins over the repeat rule.
    s.at(70.0, "c1", EventKind::Disposition { resolved: true, code: "solved".into(), agent: Some("A".into()) });
    close(one(&s.events, &all(|p| p.fcr_window_s = 86_400)).fcr_pct, 100.0);
}

#[test]
fn survey_seeds_csat_72_and_nps_60() {
    let mut s = Script::new();
    // 100 surveyed on 1-5: 43 satisfied (4), 29 very satisfied (5), 28 others.
    for i in 0..100 {
        let score = if i < 43 {
            4.0
        } else if i < 72 {
            5.0
        } else {
            1.0 + f64::from(i % 3)
        };
        s.survey(f64::from(i), &format!("s{i}"), SurveyMetric::Csat, score, 1.0, 5.0);
    }
    // 100 NPS answers: 70 promoters, 20 passives, 10 detractors.
    for i in 0..100 {
        let score = if i < 70 {
            9.0 + f64::from(i % 2)
        } else if i < 90 {
            7.0 + f64::from(i % 2)
        } else {
            f64::from(i % 7)
        };
        s.survey(f64::from(i), &format!("n{i}"), SurveyMetric::Nps, score, 0.0, 10.0);
    }
    // CES 1-7: 2, 4, 6 -> mean 4.
    for (i, v) in [2.0, 4.0, 6.0].into_iter().enumerate() {
        s.survey(i as f64, &format!("e{i}"), SurveyMetric::Ces, v, 1.0, 7.0);
    }
    let k = one(&s.events, &all(|_| {}));
    close(k.csat_pct, 72.0);
    close(k.nps, 60.0);
    close(k.ces, 4.0);
    assert_eq!(k.surveys, 203);
}

#[test]
fn missed_offers_are_agent_kpis_not_queue_outcomes() {
    let mut s = Script::new();
    s.join(0.0, "c", "q", "0611");
    s.at(0.0, "c", EventKind::Ringing { queue: Some("q".into()), agent: "A".into() });
    s.at(
        15.0,
        "c",
        EventKind::OfferMissed {
            queue: Some("q".into()),
            agent: "A".into(),
            reason: MissReason::NoAnswer,
            reported_ring_ms: None,
        },
    );
    s.at(
        16.0,
        "c",
        EventKind::OfferMissed {
            queue: Some("q".into()),
            agent: "C".into(),
            reason: MissReason::Canceled,
            reported_ring_ms: Some(500),
        },
    );
    s.answer(20.0, "c", "q", "B").hangup(50.0, "c", "B");
    let k = one(&s.events, &all(|_| {}));
    assert_eq!((k.offered, k.answered, k.missed_offers), (1, 1, 1));
    close(Some(k.missed_offer_ring_s), 15.0);
}

#[test]
fn occupancy_utilisation_productivity() {
    let mut s = Script::new();
    let state = |st: AgentState| EventKind::AgentState { agent: "A".into(), queue: Some("q".into()), state: st };
    s.at(0.0, "", state(AgentState::Login));
    s.join(100.0, "c1", "q", "0611").answer(100.0, "c1", "q", "A").hangup(400.0, "c1", "A");
    s.at(400.0, "", state(AgentState::Paused { reason: "break".into() }));
    s.at(600.0, "", state(AgentState::Available));
    s.join(700.0, "c2", "q", "0612").answer(700.0, "c2", "q", "A").hangup(800.0, "c2", "A");
    s.at(1000.0, "", state(AgentState::Logout));
    let k = one(&s.events, &all(|p| p.group_by = vec![GroupBy::Agent]));
    close(Some(k.logged_in_s), 1000.0);
    close(Some(k.paused_s), 200.0);
    close(k.occupancy_pct, 400.0 * 100.0 / 800.0);
    close(k.utilisation_pct, 40.0);
    close(k.productivity_per_hour, 2.0 / (1000.0 / 3600.0));
    assert_eq!(k.agents, 1);
    // Per queue the membership time is used: same figures here.
    let k = one(&s.events, &all(|p| p.group_by = vec![GroupBy::Queue]));
    close(k.occupancy_pct, 50.0);
}

#[test]
fn outbound_asr_ner() {
    let mut s = Script::new();
    let dial = |o: DialOutcome| EventKind::DialResult {
        agent: Some("A".into()),
        dialled: "0611".into(),
        trunk: Some("pstn".into()),
        outcome: o,
        cause: None,
    };
    for (i, o) in [
        DialOutcome::Answered,
        DialOutcome::Answered,
        DialOutcome::Busy,
        DialOutcome::NoAnswer,
        DialOutcome::Congestion,
    ]
    .into_iter()
    .enumerate()
    {
        s.at(i as f64, &format!("o{i}"), dial(o));
    }
    let rows = run(&s.events, &all(|p| p.group_by = vec![GroupBy::Trunk]));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0["trunk"].as_deref(), Some("pstn"));
    let k = &rows[0].1;
    assert_eq!((k.outbound_attempts, k.outbound_connected, k.outbound_unreached), (5, 2, 3));
    close(k.asr_pct, 40.0);
    close(k.ner_pct, 80.0);
}

#[test]
fn call_without_exit_is_unknown_end_not_dropped() {
    let mut s = Script::new();
    s.join(0.0, "c", "q", "0611");
    let mut e = Engine::new(EngineConfig { unknown_end_timeout: 3600 * NANOS_PER_SEC, ..EngineConfig::default() });
    for ev in &s.events {
        e.ingest(ev.clone());
    }
    e.refresh(None, false);
    assert_eq!(e.open_calls(), 1);
    // An hour later the call is closed as unknown end, and counted.
    e.refresh(Some((T0 + 3600) * NANOS_PER_SEC), false);
    assert_eq!(e.open_calls(), 0);
    let r = e.report(&all(|_| {}), &[]).unwrap();
    assert_eq!(r.rows[0].kpis.entered, 1);
    assert_eq!(r.rows[0].kpis.other_exits, 1);
    assert!(r.rows[0].flags.contains(&"unknown_end".to_string()));
}

/// Asterisk logs QUEUESTART when app_queue starts: a call still open from
/// before it will never get its end, so it is closed at once (live, not only
/// after the timeout), as unknown end, and its unknown talk time is not a
/// handled call's.
#[test]
fn a_queue_start_closes_the_calls_open_before_it() {
    let mut s = Script::new();
    s.join(0.0, "waiting", "q", "0611").join(5.0, "talking", "q", "0622").answer(10.0, "talking", "q", "A");
    s.join(20.0, "done", "q", "0633").answer(25.0, "done", "q", "B").hangup(85.0, "done", "B");
    s.at(300.0, "", EventKind::QueueStart);
    // A second PBX of the same site, with its own agent: its call, open
    // across the first PBX's restart, stays open.
    let mut other = Script::new();
    other.join(10.0, "other-pbx", "q", "0644");
    let mut e = Engine::new(EngineConfig::default());
    for mut ev in other.events {
        ev.id.agent_id = "pbx-2".into();
        e.ingest(ev);
    }
    for ev in &s.events[..s.events.len() - 1] {
        e.ingest(ev.clone());
    }
    e.refresh(None, false);
    assert_eq!(e.open_calls(), 3);
    e.ingest(s.events[s.events.len() - 1].clone());
    e.refresh(None, false);
    assert_eq!(e.open_calls(), 1, "only the restarted PBX's calls are closed");
    e.refresh(None, true);
    let r = e.report(&all(|_| {}), &[]).unwrap();
    let k = &r.rows[0].kpis;
    assert_eq!((k.entered, k.answered), (4, 2));
    assert_eq!(k.handled, 1);
    close(k.aht_s, 60.0);
    assert!(r.rows[0].flags.contains(&"unknown_end".to_string()));
}

#[test]
fn duplicates_are_counted_once_and_late_events_correct_the_past() {
    let mut s = Script::new();
    s.join(0.0, "c", "q", "0611").answer(30.0, "c", "q", "A").hangup(90.0, "c", "A");
    let mut e = Engine::new(EngineConfig::default());
    // The answer and hang-up arrive first; the join (from an office that was
    // offline) comes late, twice.
    e.ingest(s.events[1].clone());
    e.ingest(s.events[2].clone());
    e.refresh(None, false);
    let before = e.report(&all(|_| {}), &[]).unwrap();
    assert_eq!(before.rows[0].kpis.entered, 0);
    assert!(e.ingest(s.events[0].clone()));
    assert!(!e.ingest(s.events[0].clone()));
    e.refresh(None, false);
    let after = e.report(&all(|_| {}), &[]).unwrap();
    assert_eq!(after.rows[0].kpis.answered, 1);
    close(after.rows[0].kpis.asa_s, 30.0);
    assert_eq!(e.duplicates(), 1);
}

#[test]
fn completeness_names_agents_behind() {
    let mut s = Script::new();
    s.join(0.0, "c", "q", "0611").answer(30.0, "c", "q", "A").hangup(90.0, "c", "A");
    s.join(1800.0, "d", "q", "0612").answer(1830.0, "d", "q", "A").hangup(1890.0, "d", "A");
    let mut e = Engine::new(EngineConfig::default());
    for ev in &s.events {
        e.ingest(ev.clone());
    }
    e.refresh(None, false);
    let wm = [
        Watermark { agent_id: "a".into(), delivered_until: (T0 + 1890) * NANOS_PER_SEC },
        Watermark { agent_id: "b".into(), delivered_until: (T0 + 1000) * NANOS_PER_SEC },
    ];
    let p = KpiParams { interval: Interval::Min15, ..KpiParams::default() };
    let mut r = e.report(&p, &wm).unwrap();
    // The middle quarter hour has no call but the (inferred) logged-in agent.
    assert_eq!(r.rows.len(), 3);
    assert!(r.rows[1].kpis.logged_in_s > 0.0 && r.rows[1].kpis.entered == 0);
    assert!(r.rows[0].complete, "{:?}", r.rows[0].behind);
    assert!(!r.rows[1].complete, "b delivered only up to T0+1000");
    r.rows.swap(1, 2);
    assert!(!r.rows[1].complete);
    assert_eq!(r.rows[1].behind.len(), 1, "{:?}", r.rows[1].behind);
    assert_eq!(r.rows[1].behind[0].agent_id, "b");
    assert!((r.rows[1].behind[0].lag_s - 890.0).abs() < 1e-9);
    assert!(r.rows[1].flags.contains(&"interval_in_progress".to_string()));
}

#[test]
fn live_view_shows_waiting_callers_and_agent_activity() {
    use callkpi_core::live::Activity;
    let mut s = Script::new();
    let state =
        |agent: &str, st: AgentState| EventKind::AgentState { agent: agent.into(), queue: Some("q".into()), state: st };
    s.at(0.0, "", state("A", AgentState::Login));
    s.at(0.0, "", state("B", AgentState::Login));
    s.at(0.0, "", state("C", AgentState::Login));
    s.at(10.0, "", state("C", AgentState::Paused { reason: "lunch".into() }));
    s.join(20.0, "c1", "q", "0611").answer(25.0, "c1", "q", "A");
    s.join(40.0, "c2", "q", "0612");
    s.join(50.0, "c3", "q", "0613");
    let mut e = Engine::new(EngineConfig::default());
    for ev in &s.events {
        e.ingest(ev.clone());
    }
    e.refresh(Some((T0 + 70) * NANOS_PER_SEC), false);
    let (queues, agents) = e.live();
    assert_eq!(queues.len(), 1);
    let q = &queues[0];
    assert_eq!((q.waiting, q.available, q.busy, q.paused), (2, 1, 1, 1));
    assert_eq!(q.longest_wait_ns, 30 * NANOS_PER_SEC);
    let by: std::collections::BTreeMap<_, _> = agents.iter().map(|a| (a.agent.as_str(), &a.activity)).collect();
    assert_eq!(by["A"], &Activity::Talking { call_id: "c1".into() });
    assert_eq!(by["B"], &Activity::Available);
    assert_eq!(by["C"], &Activity::Paused { reason: "lunch".into() });
}

/// A static member (no login event, inferred from QUEUESTART and the calls
/// it answered) is logged in up to the last event seen from its PBX's site,
/// not up to the report's "now": a recording of days ago, or a PBX gone
/// silent, does not make its agents logged in until today.
#[test]
fn inferred_logins_end_at_the_sites_last_event_not_at_now() {
    let mut s = Script::new();
    s.at(0.0, "", EventKind::QueueStart);
    s.join(60.0, "c", "q", "0611").answer(70.0, "c", "q", "A").hangup(300.0, "c", "A");
    let mut e = Engine::new(EngineConfig::default());
    for ev in &s.events {
        e.ingest(ev.clone());
    }
    // Ten days later, live.
    e.refresh(Some((T0 + 10 * 86_400) * NANOS_PER_SEC), false);
    let p = KpiParams {
        from: Some(T0 * NANOS_PER_SEC),
        to: Some((T0 + 11 * 86_400) * NANOS_PER_SEC),
        interval: callkpi_core::time::Interval::All,
        group_by: vec![GroupBy::Agent],
        ..KpiParams::default()
    };
    let r = e.report(&p, &[]).unwrap();
    let a = r.rows.iter().find(|r| r.group.get("agent").cloned().flatten().as_deref() == Some("A")).unwrap();
    close(Some(a.kpis.logged_in_s), 300.0);
}
