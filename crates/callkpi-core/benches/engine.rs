//! Engine throughput: events per second through correlation and counters,
//! on a synthetic but realistic call mix (65 % answered with some holds,
//! transfers and surveys, 20 % abandoned, 5 % timeouts, ring-no-answers,
//! repeat callers, agents logging in and pausing).

use callkpi_core::event::*;
use callkpi_core::params::GroupBy;
use callkpi_core::time::Interval;
use callkpi_core::{Engine, EngineConfig, KpiParams};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const T0: i64 = 1_795_356_000;
const AGENTS: usize = 40;

/// xorshift: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn call_mix(calls: usize) -> Vec<Event> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seq = 0u64;
    let mut out = Vec::with_capacity(calls * 7);
    let mut ev = |t: i64, call: &str, kind: EventKind, out: &mut Vec<Event>| {
        seq += 1;
        out.push(Event {
            id: EventId { agent_id: "bench".into(), seq },
            site: "hq".into(),
            source: SourceKind::Synthetic,
            call_id: call.to_owned(),
            leg_id: String::new(),
            time: EventTime::from_source(t * NANOS_PER_SEC),
            kind,
        });
    };
    for a in 0..AGENTS {
        let agent = format!("agent{a}");
        ev(T0, "", EventKind::AgentState { agent: agent.clone(), queue: None, state: AgentState::Login }, &mut out);
    }
    for i in 0..calls {
        let call = format!("c{i}");
        let enter = T0 + (i as i64 * 8) + rng.next(8) as i64; // one call every ~8 s
        let queue = ["support", "sales", "billing"][rng.next(3) as usize].to_owned();
        let agent = format!("agent{}", rng.next(AGENTS as u64));
        let caller = format!("06{:08}", rng.next(calls as u64 / 3 + 1));
        ev(
            enter,
            &call,
            EventKind::QueueJoin { queue: queue.clone(), caller: Some(caller), position: Some(1) },
            &mut out,
        );
        let r = rng.next(100);
        if r < 65 {
            let wait = rng.next(90) as i64;
            if rng.next(10) == 0 {
                let miss = EventKind::OfferMissed {
                    queue: Some(queue.clone()),
                    agent: format!("agent{}", rng.next(AGENTS as u64)),
                    reason: MissReason::NoAnswer,
                    reported_ring_ms: Some(15_000),
                };
                ev(enter + wait / 2, &call, miss, &mut out);
            }
            let ans = EventKind::Answered {
                queue: Some(queue.clone()),
                agent: agent.clone(),
                reported_wait_ms: None,
                reported_ring_ms: None,
            };
            ev(enter + wait, &call, ans, &mut out);
            let talk = 30 + rng.next(400) as i64;
            if rng.next(5) == 0 {
                ev(enter + wait + talk / 2, &call, EventKind::Hold { agent: Some(agent.clone()) }, &mut out);
                ev(enter + wait + talk / 2 + 20, &call, EventKind::Resume { agent: Some(agent.clone()) }, &mut out);
            }
            let end = enter + wait + talk;
            let hang = EventKind::Hangup {
                queue: Some(queue.clone()),
                agent: Some(agent.clone()),
                by: HangupBy::Caller,
                cause: Some(16),
                reported_talk_ms: None,
            };
            ev(end, &call, hang, &mut out);
            ev(end, &call, EventKind::WrapUpStart { agent: agent.clone(), queue: Some(queue.clone()) }, &mut out);
            ev(end + 15, &call, EventKind::WrapUpEnd { agent: agent.clone(), queue: Some(queue.clone()) }, &mut out);
            if rng.next(4) == 0 {
                let s = EventKind::SurveyAnswer {
                    metric: SurveyMetric::Csat,
                    score: (1 + rng.next(5)) as f64,
                    scale_min: 1.0,
                    scale_max: 5.0,
                    queue: None,
                    agent: None,
                };
                ev(end + 30, &call, s, &mut out);
            }
        } else if r < 95 {
            let wait = rng.next(120) as i64;
            let leave =
                EventKind::QueueLeave { queue: queue.clone(), reason: LeaveReason::Abandon, reported_wait_ms: None };
            ev(enter + wait, &call, leave, &mut out);
        } else {
            let leave =
                EventKind::QueueLeave { queue: queue.clone(), reason: LeaveReason::Timeout, reported_wait_ms: None };
            ev(enter + 300, &call, leave, &mut out);
        }
    }
    out
}

fn engine(c: &mut Criterion) {
    let events = call_mix(20_000);
    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    g.throughput(Throughput::Elements(events.len() as u64));
    // Reference for ratios: the least any correlator does, grouping events by
    // call and sorting each call's events by time.
    g.bench_function("reference_group_and_sort", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| {
                let mut by_call: std::collections::HashMap<String, Vec<Event>> = std::collections::HashMap::new();
                for ev in evs {
                    by_call.entry(ev.call_id.clone()).or_default().push(ev);
                }
                for v in by_call.values_mut() {
                    v.sort_by_key(|e| (e.kpi_time(), e.id.seq));
                }
                by_call
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("ingest+refresh 20k calls", |b| {
        b.iter_batched(
            || events.clone(),
            |evs| {
                let mut e = Engine::new(EngineConfig::default());
                for ev in evs {
                    e.ingest(ev);
                }
                e.refresh(None, true);
                e
            },
            BatchSize::LargeInput,
        )
    });
    let mut e = Engine::new(EngineConfig::default());
    for ev in events.iter().cloned() {
        e.ingest(ev);
    }
    e.refresh(None, true);
    let p =
        KpiParams { interval: Interval::Min15, group_by: vec![GroupBy::Queue, GroupBy::Agent], ..KpiParams::default() };
    g.throughput(Throughput::Elements(1));
    g.bench_function("report 15m x queue x agent over 20k calls", |b| b.iter(|| e.report(&p, &[]).unwrap()));
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
