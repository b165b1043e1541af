//! Sealing changes nothing: an engine that seals calls, folds presence and
//! drops old contacts as its data clock moves, and is handed a sealed call
//! back when a late event of it arrives, gives exactly the counters of an
//! engine that keeps everything.

mod common;

use std::collections::HashMap;

use callkpi_core::counters::CounterSet;
use callkpi_core::engine::{Neighbours, SealConfig};
use callkpi_core::event::*;
use callkpi_core::params::GroupBy;
use callkpi_core::time::Interval;
use callkpi_core::{Engine, EngineConfig, KpiParams};
use common::*;
use proptest::prelude::*;

/// Explicit logins (and a pause) for every agent before the first call, so
/// that presence does not depend on which calls were seen when.
fn presence_events(seq: &mut u64, span_s: u32) -> Vec<Event> {
    let mut out = Vec::new();
    let mut push = |secs: i64, agent: &str, state: AgentState| {
        *seq += 1;
        out.push(Event {
            id: EventId { agent_id: "p".into(), seq: *seq },
            site: "hq".into(),
            source: SourceKind::Synthetic,
            call_id: String::new(),
            leg_id: String::new(),
            time: EventTime::from_source((T0 + secs) * NANOS_PER_SEC),
            kind: EventKind::AgentState { agent: agent.into(), queue: None, state },
        });
    };
    for (i, a) in AGENTS.iter().enumerate() {
        push(-60, a, AgentState::Login);
        let pause = 900 * (i as i64 + 1);
        push(pause, a, AgentState::Paused { reason: "break".into() });
        push(pause + 300, a, AgentState::Available);
        push(i64::from(span_s) + 600, a, AgentState::Logout);
    }
    out
}

fn config(horizon_s: i64, window_s: i64) -> EngineConfig {
    EngineConfig {
        unknown_end_timeout: 3600 * NANOS_PER_SEC,
        seal: Some(SealConfig {
            horizon: horizon_s.saturating_mul(NANOS_PER_SEC),
            fcr_max_window: window_s * NANOS_PER_SEC,
            rollups_in_memory: true,
        }),
    }
}

/// The host's side of sealing: sealed calls' events by (site, call id),
/// as an aggregator keeps them in its store.
#[derive(Default)]
struct Host {
    sealed: HashMap<(String, String), Vec<Event>>,
    evicted: HashMap<(String, String), Neighbours>,
    unsealed: usize,
    sealed_count: usize,
}

impl Host {
    fn deliver(&mut self, e: &mut Engine, ev: Event) {
        let key = (ev.site.clone(), ev.call_id.clone());
        if !e.has_call(&key.0, &key.1)
            && let Some(events) = self.sealed.remove(&key)
        {
            if events.iter().any(|x| x.id == ev.id) {
                // Delivered again: already in the sealed call.
                self.sealed.insert(key, events);
                return;
            }
            let evicted = self.evicted.remove(&key);
            assert!(e.unseal(events, evicted));
            self.unsealed += 1;
        }
        e.ingest(ev);
    }

    fn drain(&mut self, e: &mut Engine) {
        let s = e.take_sealed();
        for c in s.calls {
            self.sealed_count += 1;
            let key = (c.record.site.clone(), c.record.call_id.clone());
            assert!(self.sealed.insert(key, c.events).is_none());
        }
        for c in s.evicted {
            self.evicted.insert((c.site, c.call_id), c.neighbours);
        }
    }
}

/// The cells where two counter sets differ, and how (for a readable failure).
fn differences(a: &CounterSet, b: &CounterSet) -> Vec<String> {
    let mut out = Vec::new();
    for (k, va) in &a.0 {
        match b.0.get(k) {
            Some(vb) if vb == va => {}
            Some(vb) => {
                let mut d = va.clone();
                d.add(vb, -1);
                out.push(format!("{k:?}: sealed minus never = {d:?}"));
            }
            None => out.push(format!("{k:?}: only when sealed: {va:?}")),
        }
    }
    for (k, vb) in &b.0 {
        if !a.0.contains_key(k) {
            out.push(format!("{k:?}: only never sealed: {vb:?}"));
        }
    }
    out
}

fn total(e: &Engine) -> CounterSet {
    let mut t = e.rollups().clone();
    t.add(e.counters(), 1);
    t
}

type RowKey = (i64, Vec<(String, Option<String>)>, String);

fn rows(e: &Engine, by: Vec<GroupBy>, interval: Interval, window_s: u64) -> Vec<RowKey> {
    let p = KpiParams {
        interval,
        group_by: by,
        sl_thresholds_s: vec![10, 20, 60],
        fcr_window_s: window_s,
        ..KpiParams::default()
    };
    e.report(&p, &[])
        .unwrap()
        .rows
        .into_iter()
        .map(|r| (r.start_ns, r.group.into_iter().collect(), format!("{:?}", r.kpis)))
        .collect()
}

/// Delivers `events` in arrival order: some events of calls arrive
/// `late[..]` thousandths of `late_span_s` after their own time (an office that reconnects, a
/// collector that re-reads), the rest on time; some events a second time
/// at the end. Refreshes as a live aggregator does, sealing as it goes.
/// How a sealed run goes: lateness, repeats, and how often it refreshes
/// and stores what was sealed.
struct Run<'a> {
    late: &'a [u32],
    late_span_s: i64,
    again: &'a [bool],
    horizon_s: i64,
    window_s: i64,
    refresh_every: usize,
    drain_every: usize,
}

fn sealed_run(events: &[Event], run: &Run<'_>) -> (Engine, Host) {
    let Run { late, late_span_s, again, horizon_s, window_s, refresh_every, drain_every } = *run;
    let mut arrivals: Vec<(i64, u64, Event)> = events
        .iter()
        .map(|ev| {
            let i: Option<usize> = ev.call_id.strip_prefix("call-").and_then(|n| n.parse().ok());
            let delay = i.map_or(0, |i| i64::from(late[(i + ev.id.seq as usize) % late.len()]) * late_span_s / 1000);
            (ev.kpi_time() + delay * NANOS_PER_SEC, ev.id.seq, ev.clone())
        })
        .collect();
    arrivals.sort_by_key(|a| (a.0, a.1));
    let mut e = Engine::new(config(horizon_s, window_s));
    let mut host = Host::default();
    for (n, (at, _, ev)) in arrivals.iter().enumerate() {
        host.deliver(&mut e, ev.clone());
        if n % refresh_every == 0 {
            e.refresh(Some(*at), false);
            // The host stores what was sealed now and then, not at every refresh.
            if n % (refresh_every * drain_every) == 0 {
                host.drain(&mut e);
            }
        }
    }
    host.drain(&mut e);
    for (i, (_, _, ev)) in arrivals.iter().enumerate() {
        if again[i % again.len()] && !ev.call_id.is_empty() {
            host.deliver(&mut e, ev.clone());
        }
    }
    e.refresh(None, true);
    host.drain(&mut e);
    (e, host)
}

fn all(calls: &[CallSpec]) -> Vec<Event> {
    let mut seq = 0;
    let mut events: Vec<Event> = calls.iter().enumerate().flat_map(|(i, c)| events_of(i, c, &mut seq)).collect();
    events.extend(presence_events(&mut seq, 7200 + 1200));
    events
}

fn never_sealed(events: &[Event], window_s: i64) -> Engine {
    let mut never = Engine::new(config(i64::MAX, window_s));
    for ev in events {
        never.ingest(ev.clone());
    }
    never.refresh(None, true);
    assert!(never.take_sealed().calls.is_empty());
    never
}

/// Case cells (FCR, cases) and withheld contacts: a contact's facts once it
/// has left its caller's window.
fn without_cases(set: &CounterSet) -> CounterSet {
    let mut out = CounterSet::default();
    for (k, v) in &set.0 {
        let mut v = v.clone();
        v.cases.clear();
        v.withheld_contacts = 0;
        let mut one = CounterSet::default();
        *one.cell(k.clone()) = v;
        out.add(&one, 1);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Late data within the horizon: every counter and every KPI equal,
    /// though calls were sealed and unsealed on the way.
    #[test]
    fn seal_then_late_equals_never_sealed(
        calls in proptest::collection::vec(call_spec(), 1..40),
        late in proptest::collection::vec(prop_oneof![2 => Just(0u32), 1 => 0u32..=1000], 1..50),
        again in proptest::collection::vec(any::<bool>(), 1..40),
        horizon_s in 0i64..1800,
        window_s in 60i64..4000,
        refresh_every in 1usize..12,
        drain_every in 1usize..4,
    ) {
        let events = all(&calls);
        let never = never_sealed(&events, window_s);
        let (e, host) = sealed_run(&events, &Run { late: &late, late_span_s: horizon_s, again: &again, horizon_s, window_s, refresh_every, drain_every });
        let diff = differences(&total(&e), never.counters());
        prop_assert!(diff.is_empty(), "sealed vs never sealed ({} sealed, {} unsealed): {:#?}", host.sealed_count, host.unsealed, diff);
        let w = u64::try_from(window_s).unwrap();
        for (by, interval) in [
            (vec![GroupBy::Queue, GroupBy::Agent], Interval::Min15),
            (vec![GroupBy::Queue], Interval::Hour),
            (vec![], Interval::All),
        ] {
            prop_assert_eq!(rows(&e, by.clone(), interval, w), rows(&never, by, interval, w));
        }
    }

    /// Late data of any age: everything but the case facts of contacts that
    /// had already left their caller's window is equal.
    #[test]
    fn very_late_data_changes_only_case_facts_of_dropped_contacts(
        calls in proptest::collection::vec(call_spec(), 1..40),
        late in proptest::collection::vec(prop_oneof![2 => Just(0u32), 1 => 0u32..=1000], 1..50),
        again in proptest::collection::vec(any::<bool>(), 1..40),
        horizon_s in 0i64..1800,
        window_s in 60i64..4000,
        refresh_every in 1usize..12,
        drain_every in 1usize..4,
    ) {
        let events = all(&calls);
        let never = never_sealed(&events, window_s);
        let (e, _) = sealed_run(&events, &Run { late: &late, late_span_s: 20_000, again: &again, horizon_s, window_s, refresh_every, drain_every });
        let diff = differences(&without_cases(&total(&e)), &without_cases(never.counters()));
        prop_assert!(diff.is_empty(), "{:#?}", diff);
        // Contacts are neither lost nor counted twice.
        let contacts = |s: &CounterSet| s.0.values().map(|c| c.cases.values().map(|v| v.contacts).sum::<i64>() + c.withheld_contacts).sum::<i64>();
        prop_assert_eq!(contacts(&total(&e)), contacts(never.counters()));
    }
}

#[test]
fn the_open_window_stays_bounded_as_history_grows() {
    // Ten days of calls, one every 3 minutes, callers repeating within the
    // day: the window holds the last hours, not the days.
    let mut e = Engine::new(config(3600, 24 * 3600));
    let mut host = Host::default();
    let mut seq = 0;
    let mut peak = 0;
    let per_day = 480;
    for i in 0..(10 * per_day) {
        let spec = CallSpec {
            enter: 0,
            queue: (i % 2) as u8,
            caller: (i % 6) as u8,
            agent: (i % 3) as u8,
            outcome: Outcome::Answered { wait: 10, talk: 60, hold: None, transfer_to: None, survey: None },
        };
        for mut ev in events_of(i, &spec, &mut seq) {
            let t = ev.kpi_time() + i as i64 * 180 * NANOS_PER_SEC;
            ev.time = EventTime::from_source(t);
            host.deliver(&mut e, ev);
        }
        if i % 20 == 0 {
            e.refresh(None, false);
            host.drain(&mut e);
            if i >= 2 * per_day {
                peak = peak.max(e.window().calls);
            }
        }
    }
    e.refresh(None, false);
    host.drain(&mut e);
    let w = e.window();
    // 1 h horizon at one call per 3 min: about 20 calls, never the 4 800.
    assert!(peak <= 60, "peak open calls {peak}");
    assert!(w.calls <= 60, "{w:?}");
    // Six callers, one day of contacts each at most.
    assert!(w.contacts <= 6 * per_day / 6 + 6 * 40, "{w:?}");
    assert!(host.sealed_count >= 10 * per_day - 60);
    // Nothing was lost on the way: every call is counted once.
    let p = KpiParams { interval: Interval::All, fcr_window_s: 3600, ..KpiParams::default() };
    let rows = e.report(&p, &[]).unwrap().rows;
    assert_eq!(rows.iter().map(|r| r.kpis.entered).sum::<u64>(), 10 * per_day as u64);
    assert_eq!(host.unsealed, 0);
}

#[test]
fn a_late_survey_reopens_its_sealed_call_and_counts_once() {
    let calls = vec![
        CallSpec {
            enter: 0,
            queue: 0,
            caller: 1,
            agent: 0,
            outcome: Outcome::Answered { wait: 5, talk: 60, hold: None, transfer_to: None, survey: Some(5) },
        },
        CallSpec { enter: 4000, queue: 0, caller: 1, agent: 1, outcome: Outcome::Abandon { wait: 30 } },
    ];
    let events = all(&calls);
    let never = never_sealed(&events, 3600);
    // The survey (70 s after the hang-up) arrives 1 000 s late: by then the
    // call has been sealed with a 60 s horizon.
    let survey_seq = events.iter().find(|e| matches!(e.kind, EventKind::SurveyAnswer { .. })).unwrap().id.seq;
    let mut e = Engine::new(config(60, 3600));
    let mut host = Host::default();
    let mut ordered: Vec<Event> = events.clone();
    ordered.sort_by_key(|ev| {
        let extra = if ev.id.seq == survey_seq { 1000 * NANOS_PER_SEC } else { 0 };
        ev.kpi_time() + extra
    });
    for ev in ordered {
        host.deliver(&mut e, ev.clone());
        e.refresh(Some(ev.kpi_time()), false);
        host.drain(&mut e);
    }
    e.refresh(None, true);
    host.drain(&mut e);
    assert_eq!(host.unsealed, 1, "the survey reopened the sealed call");
    assert!(host.sealed_count >= 3);
    assert!(differences(&total(&e), never.counters()).is_empty());
    let p = KpiParams { interval: Interval::All, fcr_window_s: 3600, ..KpiParams::default() };
    let k = &e.report(&p, &[]).unwrap().rows[0].kpis;
    assert_eq!((k.entered, k.answered, k.abandoned), (2, 1, 1));
    assert_eq!(k.csat_pct, Some(100.0));
}
