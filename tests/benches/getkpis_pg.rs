//! GetKpis for 15 min x queue over the whole range of N synthetic calls,
//! against the same KPIs written as SQL in PostgreSQL 15, on the same data,
//! in one run.
//!
//! Our side: the calls' normalised events (join, answer, hold/resume,
//! hang-up, wrap-up; abandons and timeouts; agent logins) go into
//! `callkpi_core::Engine`, the in-process engine that backs the
//! aggregator's `GetKpis` (load = `ingest` of every event + `refresh`);
//! the query is what `GetKpis` does after its auth check: `params_from_pb`
//! of a `KpiQuery`, `Engine::report`, `report_to_pb`. No gRPC, no sled.
//!
//! PostgreSQL side: a throwaway cluster of our own (initdb in a scratch
//! directory, 127.0.0.1 on a free port, `fsync = off`: neither side is
//! measured for durability here), one row per queue visit loaded with
//! `\copy ... csv` through psql, a btree on (entered_at, queue) and one on
//! (left_at, queue) WHERE answered, `ANALYZE`, then one SQL query computing
//! offered, answered, abandoned, short abandons, ASA, SL at 18/20/60 s and
//! AHT per 15 min x queue. Query time is psql's `\timing` (server execution
//! plus sending the rows over loopback; output to /dev/null).
//!
//! Before anything is timed, every row of both results is compared (same
//! (interval, queue) set, same counts, same averages to 1e-9).
//!
//! `cargo bench -p callkpi-tests --bench getkpis_pg -- --calls 1000000`;
//! flags: `--calls N` (default 1 000 000), `--days D` (30), `--agents A`
//! (default calls / 5000, at least 24; each serves 2 of 8 queues on one
//! 8-hour shift a day), `--seed S`, `--reps R` (5), `--max-rss-gib G` (16: the engine
//! load stops when its projected peak passes this, rather than push a
//! shared machine into the OOM killer, and reports how far it got). PostgreSQL: `PG_BIN` (default
//! `/usr/lib/postgresql/15/bin`) and `psql` on PATH; run as root, the
//! server runs as `postgres` through `runuser`.

#![allow(clippy::print_stdout, missing_docs)]

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/synth.rs"]
mod synth;

use std::time::{Duration, Instant};

use callkpi_core::params::GroupBy;
use callkpi_core::time::Interval;
use callkpi_core::{Engine, EngineConfig, KpiParams};
use common::{loadavg, median, rss_kib, scratch};
use pg::*;

const SITE: &str = "hq";

/// `Engine::refresh` (rebuilding every call's record and counters) grows
/// the RSS the ingest left to about this many times (measured: 0.33 to
/// 1.53 GiB at 100 k calls, 1.79 to 7.59 GiB at 500 k); the load stops
/// once ingest RSS times this passes `--max-rss-gib`.
const REFRESH_GROWTH: f64 = 4.6;

struct Args {
    calls: u64,
    days: u64,
    agents: u32,
    seed: u64,
    reps: usize,
    max_rss_gib: f64,
}

fn args() -> Args {
    let mut a = Args { calls: 1_000_000, days: 30, agents: 0, seed: 0x5eed_ca11, reps: 5, max_rss_gib: 16.0 };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = argv.get(i + 1).cloned().unwrap_or_default();
        let num =
            || val.replace('_', "").parse::<f64>().unwrap_or_else(|_| panic!("{}: not a number: {val:?}", argv[i]));
        match argv[i].as_str() {
            "--calls" => a.calls = num() as u64,
            "--days" => a.days = num() as u64,
            "--agents" => a.agents = num() as u32,
            "--seed" => a.seed = num() as u64,
            "--reps" => a.reps = (num() as usize).max(1),
            "--max-rss-gib" => a.max_rss_gib = num(),
            // cargo bench passes --bench; anything else is ignored.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    if a.agents == 0 {
        // About one agent per 5000 calls of the range (200 for 1 M calls over 30 days).
        a.agents = u32::try_from(a.calls / 5000).unwrap_or(u32::MAX);
    }
    a.agents = a.agents.max(synth::MIN_AGENTS);
    a
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let a = args();
    println!(
        "getkpis_pg: {} calls over {} days, {} agents, {} queues, seed {:#x}; load average before: {}",
        a.calls,
        a.days,
        a.agents,
        synth::QUEUES.len(),
        a.seed,
        loadavg()
    );
    let dir = scratch("callkpi-bench-getkpis-pg-");
    let pg_dir = dir.path().join("pg");
    std::fs::create_dir_all(&pg_dir).expect("pg dir");

    // --- PostgreSQL: load ---
    let csv = dir.path().join("queue_visit.csv");
    let t = Instant::now();
    let rows = write_csv(&csv, synth::T0_MS, a.calls, a.days, a.agents, a.seed);
    let csv_bytes = std::fs::metadata(&csv).map(|m| m.len()).unwrap_or(0);
    println!(
        "csv: {rows} rows, {:.0} MB, written in {:.1} s (not timed)",
        csv_bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let pg = Pg::start(&pg_dir);
    println!("postgres: {}", pg.psql("SELECT version()").trim());
    pg.psql(SCHEMA);
    let copy = pg.timed(&format!("\\copy queue_visit FROM '{}' WITH (FORMAT csv)", csv.display()), 1)[0];
    let index = pg.timed(INDEXES.trim().replace('\n', " ").as_str(), 1)[0];
    let analyze = pg.timed("ANALYZE queue_visit;", 1)[0];
    let table = pg.psql("SELECT pg_total_relation_size('queue_visit')").trim().parse::<f64>().unwrap_or(f64::NAN);
    std::fs::remove_file(&csv).expect("rm csv");
    let pg_load = copy + index + analyze;
    println!(
        "postgres load: COPY {:.2} s + indexes {:.2} s + ANALYZE {:.2} s = {:.2} s; table+indexes {:.0} MB",
        copy.as_secs_f64(),
        index.as_secs_f64(),
        analyze.as_secs_f64(),
        pg_load.as_secs_f64(),
        table / 1e6
    );

    // --- the engine: load ---
    let me = std::process::id();
    let base = rss_kib(me).map_or(0, |r| r.0);
    let mut engine = Engine::new(EngineConfig::default());
    let mut seq = 0u64;
    let mut ingest = Duration::ZERO;
    let t = Instant::now();
    for ev in synth::shifts(a.agents, a.days, SITE, &mut seq) {
        engine.ingest(ev);
    }
    ingest += t.elapsed();
    let mut buf = Vec::with_capacity(8 * 10_000);
    let mut loaded = 0u64;
    let mut stopped = None;
    let mut gen_iter = synth::calls(a.calls, a.days, a.agents, a.seed);
    'load: loop {
        buf.clear();
        for _ in 0..10_000 {
            let Some(c) = gen_iter.next() else { break };
            synth::events(&c, SITE, &mut seq, &mut buf);
            loaded += 1;
        }
        if buf.is_empty() {
            break;
        }
        let t = Instant::now();
        for ev in buf.drain(..) {
            engine.ingest(ev);
        }
        ingest += t.elapsed();
        if loaded % 200_000 < 10_000 {
            let rss = rss_kib(me).map_or(0, |r| r.0);
            if gib(rss) * REFRESH_GROWTH > a.max_rss_gib {
                stopped = Some((loaded, rss));
                break 'load;
            }
        }
    }
    let after_ingest = rss_kib(me).map_or(0, |r| r.0);
    if let Some((n, rss)) = stopped {
        println!(
            "engine: STOPPED after {n} of {} calls ({} events): RSS {:.2} GiB, x {REFRESH_GROWTH} for the \
             refresh > --max-rss-gib {}; {:.0} B per call ({:.1} GiB per million calls before refresh); \
             ingest {:.2} s so far",
            a.calls,
            engine.events(),
            gib(rss),
            a.max_rss_gib,
            (rss - base) as f64 * 1024.0 / n as f64,
            gib(rss - base) * 1e6 / n as f64,
            ingest.as_secs_f64()
        );
        drop(engine);
        // The SQL side alone at this size (its query was checked against
        // the engine at the sizes the engine fits).
        let mut pg_t: Vec<f64> =
            pg.timed(KPI_SQL.trim().replace('\n', " ").as_str(), a.reps).iter().map(Duration::as_secs_f64).collect();
        let rows = pg.psql(KPI_SQL).lines().count();
        let first = pg_t[0];
        println!(
            "postgres alone: query median of {} {:.1} ms (first {:.1} ms), {rows} rows",
            a.reps,
            median(&mut pg_t) * 1e3,
            first * 1e3
        );
        drop(pg);
        return;
    }
    let t = Instant::now();
    engine.refresh(None, true);
    let refresh = t.elapsed();
    let (rss, hwm) = rss_kib(me).unwrap_or((0, 0));
    let engine_load = ingest + refresh;
    println!(
        "engine load: ingest {:.2} s ({} events) + refresh {:.2} s = {:.2} s; RSS {:.2} GiB after ingest, \
         {:.2} GiB after refresh, peak {:.2} GiB (process baseline {:.2} GiB); {:.0} B per call",
        ingest.as_secs_f64(),
        engine.events(),
        refresh.as_secs_f64(),
        engine_load.as_secs_f64(),
        gib(after_ingest),
        gib(rss),
        gib(hwm),
        gib(base),
        (rss - base) as f64 * 1024.0 / a.calls as f64
    );

    // --- same numbers on both sides, before timing ---
    let params = KpiParams { interval: Interval::Min15, group_by: vec![GroupBy::Queue], ..KpiParams::default() };
    let query = callkpi_proto::report::params_to_pb(&params);
    let get_kpis = |engine: &Engine| {
        let p = callkpi_proto::report::params_from_pb(&query, &KpiParams::default()).expect("valid query");
        let report = engine.report(&p, &[]).expect("report");
        let pb = callkpi_proto::report::report_to_pb(&report, 0);
        (report, pb)
    };
    let (report, pb) = get_kpis(&engine);
    let ours = engine_rows(&report);
    let theirs = pg_rows(&pg.psql(KPI_SQL));
    assert_eq!(ours.len(), theirs.len(), "(interval, queue) rows with calls: engine vs SQL");
    let mut compared = 0;
    for (k, v) in &theirs {
        let e = ours.get(k).unwrap_or_else(|| panic!("row {k:?} only in SQL"));
        assert!(same(e, v), "row {k:?}: engine {e:?} vs SQL {v:?}");
        compared += 1;
    }
    let offered: u64 = ours.values().map(|f| f.counts[0] + f.counts[3]).sum();
    assert_eq!(offered, a.calls, "every call entered a queue once");
    println!(
        "check: all {compared} (15 min, queue) rows equal on both sides (offered, answered, abandoned, short, \
         timed out, handled, ASA, SL18/20/60, AHT); the GetKpis reply has {} rows ({} with presence only) and {} KB",
        pb.rows.len(),
        report.rows.len() - compared,
        prost::Message::encoded_len(&pb) / 1000
    );

    // --- query timing ---
    let mut ours_t = Vec::new();
    for _ in 0..a.reps {
        let t = Instant::now();
        let (r, pb) = get_kpis(&engine);
        ours_t.push(t.elapsed().as_secs_f64());
        std::hint::black_box((r, pb));
    }
    let mut pg_t: Vec<f64> =
        pg.timed(KPI_SQL.trim().replace('\n', " ").as_str(), a.reps).iter().map(Duration::as_secs_f64).collect();
    let (ours_first, pg_first) = (ours_t[0], pg_t[0]);
    let (q_ours, q_pg) = (median(&mut ours_t), median(&mut pg_t));
    let hwm = rss_kib(me).map_or(0, |r| r.1);
    drop(pg);

    println!();
    println!(
        "| {} calls, 15 min x queue, whole range | callkpi engine (GetKpis path) | PostgreSQL 15 | engine / PG |",
        a.calls
    );
    println!("|---|---|---|---|");
    println!(
        "| load | {:.2} s (ingest {:.2} + refresh {:.2}) | {:.2} s (COPY {:.2} + indexes {:.2} + ANALYZE {:.2}) | {:.2} |",
        engine_load.as_secs_f64(),
        ingest.as_secs_f64(),
        refresh.as_secs_f64(),
        pg_load.as_secs_f64(),
        copy.as_secs_f64(),
        index.as_secs_f64(),
        analyze.as_secs_f64(),
        engine_load.as_secs_f64() / pg_load.as_secs_f64()
    );
    println!(
        "| query, median of {} (first) | {:.1} ms ({:.1}) | {:.1} ms ({:.1}) | {:.3} |",
        a.reps,
        q_ours * 1e3,
        ours_first * 1e3,
        q_pg * 1e3,
        pg_first * 1e3,
        q_ours / q_pg
    );
    println!(
        "| memory | peak RSS {:.2} GiB (bench process) | table + indexes {:.0} MB on disk, shared_buffers 2 GB | |",
        gib(hwm),
        table / 1e6
    );
    println!("load average after: {}", loadavg());
    drop(engine);
    drop(dir);
}
