//! Properties of the engine over random call centres: conservation of calls,
//! bounded rates, independence of arrival order, and additivity of counters.

use callkpi_core::counters::CounterSet;
use callkpi_core::event::*;
use callkpi_core::params::GroupBy;
use callkpi_core::report::Kpis;
use callkpi_core::time::Interval;
use callkpi_core::{Engine, EngineConfig, KpiParams};
use proptest::prelude::*;

mod common;
use common::*;

fn engine_of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Engine {
    let mut e = Engine::new(EngineConfig::default());
    for ev in events {
        e.ingest(ev.clone());
    }
    e.refresh(None, true);
    e
}

fn all_events(calls: &[CallSpec]) -> Vec<Event> {
    let mut seq = 0;
    calls.iter().enumerate().flat_map(|(i, c)| events_of(i, c, &mut seq)).collect()
}

/// Agent presence is a per-agent timeline, not a per-call sum: leave it out
/// where calls are split between engines.
fn without_presence(set: &CounterSet) -> CounterSet {
    let mut out = CounterSet::default();
    for (k, v) in &set.0 {
        let mut v = v.clone();
        v.member_logged_in_ms = 0;
        v.member_paused_ms = 0;
        v.presence_logged_in_ms = 0;
        v.presence_paused_ms = 0;
        v.inferred_logged_in_ms = 0;
        let mut one = CounterSet::default();
        *one.cell(k.clone()) = v;
        out.add(&one, 1);
    }
    out
}

fn rows(e: &Engine, by: Vec<GroupBy>, interval: Interval) -> Vec<Kpis> {
    let p = KpiParams { interval, group_by: by, sl_thresholds_s: vec![10, 20, 60], ..KpiParams::default() };
    e.report(&p, &[]).unwrap().rows.into_iter().map(|r| r.kpis).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn exits_add_up_to_entries_and_rates_are_bounded(calls in proptest::collection::vec(call_spec(), 1..40)) {
        let e = engine_of(&all_events(&calls));
        for k in rows(&e, vec![GroupBy::Queue, GroupBy::Agent], Interval::Min15)
            .into_iter()
            .chain(rows(&e, vec![], Interval::All))
        {
            prop_assert_eq!(k.answered + k.abandoned + k.short_abandoned + k.other_exits, k.entered);
            prop_assert_eq!(k.offered + k.short_abandoned, k.entered);
            let rates = [k.abandonment_rate_pct, k.answer_rate_pct, k.timeout_rate_pct, k.fcr_pct, k.occupancy_pct,
                k.utilisation_pct, k.csat_pct, k.asr_pct, k.ner_pct];
            for r in rates.into_iter().flatten().chain(k.service_level_pct.values().flatten().copied()) {
                prop_assert!((0.0..=100.0).contains(&r), "rate {} out of range in {:?}", r, k);
            }
        }
        let total = rows(&e, vec![], Interval::All);
        let entered: u64 = calls.len() as u64;
        prop_assert_eq!(total[0].entered, entered);
    }

    #[test]
    fn arrival_order_of_events_does_not_matter(
        calls in proptest::collection::vec(call_spec(), 1..30),
        seed in any::<u64>(),
    ) {
        let events = all_events(&calls);
        let mut shuffled = events.clone();
        // Deterministic Fisher-Yates from the seed.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let a = engine_of(&events);
        let b = engine_of(&shuffled);
        prop_assert_eq!(a.counters(), b.counters());
    }

    #[test]
    fn split_input_merged_counters_equal_the_whole(
        calls in proptest::collection::vec(call_spec(), 1..30),
        split in 0u8..6,
    ) {
        // Split by caller, so that repeat-caller cases stay within one half.
        let (left, right): (Vec<_>, Vec<_>) = all_events(&calls).into_iter().partition(|ev| {
            let i: usize = ev.call_id.trim_start_matches("call-").parse().unwrap();
            calls[i].caller < split
        });
        let whole = engine_of(&left.iter().chain(right.iter()).cloned().collect::<Vec<_>>());
        let mut merged = without_presence(engine_of(&left).counters());
        merged.add(&without_presence(engine_of(&right).counters()), 1);
        prop_assert_eq!(without_presence(whole.counters()), merged);
    }
}

#[test]
fn dst_days_in_paris_give_23_and_25_hourly_rows() {
    for (day_start_utc, hours) in [("2026-03-28T23:00:00Z", 23), ("2026-10-24T22:00:00Z", 25)] {
        let start: jiff::Timestamp = day_start_utc.parse().unwrap();
        let start = i64::try_from(start.as_nanosecond()).unwrap();
        let len = i64::from(hours) * 3600 * NANOS_PER_SEC;
        let mut e = Engine::new(EngineConfig::default());
        // A call every 20 minutes across the local day.
        let mut seq = 0;
        let mut t = start;
        while t < start + len {
            seq += 1;
            e.ingest(Event {
                id: EventId { agent_id: "p".into(), seq },
                site: "paris".into(),
                source: SourceKind::Synthetic,
                call_id: format!("c{seq}"),
                leg_id: String::new(),
                time: EventTime::from_source(t),
                kind: EventKind::QueueJoin { queue: "q".into(), caller: None, position: None },
            });
            seq += 1;
            e.ingest(Event {
                id: EventId { agent_id: "p".into(), seq },
                site: "paris".into(),
                source: SourceKind::Synthetic,
                call_id: format!("c{}", seq - 1),
                leg_id: String::new(),
                time: EventTime::from_source(t + 30 * NANOS_PER_SEC),
                kind: EventKind::QueueLeave { queue: "q".into(), reason: LeaveReason::Abandon, reported_wait_ms: None },
            });
            t += 20 * 60 * NANOS_PER_SEC;
        }
        e.refresh(None, true);
        let p = KpiParams {
            interval: Interval::Hour,
            time_zone: "Europe/Paris".into(),
            from: Some(start),
            to: Some(start + len),
            ..KpiParams::default()
        };
        let r = e.report(&p, &[]).unwrap();
        assert_eq!(r.rows.len(), hours as usize, "{day_start_utc}");
        assert!(r.rows.iter().all(|row| row.kpis.entered == 3), "three calls in every local hour");
        let day = KpiParams { interval: Interval::Day, ..p };
        let r = e.report(&day, &[]).unwrap();
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].kpis.entered, u64::from(hours as u32) * 3);
        assert!(r.rows[0].start.contains("T00:00:00+0"), "local midnight: {}", r.rows[0].start);
    }
}
