//! An aggregator that runs for years (issue 12): N synthetic calls through
//! the real `Ingest` service into one real `callkpi-aggregator` release
//! binary on loopback, then what history costs it, in one run:
//!
//! - RSS of the aggregator, sampled from `/proc/<pid>/status` every second
//!   with the calls the follower has applied so far (open + sealed on
//!   /metrics): peak, and RSS at N/10 calls against RSS at N (cost must not
//!   grow with history); past `--max-rss-gib` the aggregator is SIGKILLed
//!   and the bench reports how far it got;
//! - the follower: calls in the open window and calls sealed
//!   (`callkpi_kpi_open_calls`, `callkpi_kpi_calls_sealed` on /metrics)
//!   while ingest runs, and how long after the last Ack it has applied
//!   everything;
//! - `GetKpis` 15 min x queue over the first and the last month, and over
//!   the whole range, over gRPC; the whole range also as SQL in a
//!   throwaway PostgreSQL 15 cluster on the same calls, every row compared
//!   before anything is timed;
//! - `GetCall` on the oldest call;
//! - event to `WatchKpis` snapshot with an empty store (before ingest) and
//!   with N calls stored (after), on the same aggregator: one ENTERQUEUE or
//!   ABANDON of queue `latq` per sample, sent as a one-event Batch by a
//!   second agent, until a snapshot shows it;
//! - restart: SIGTERM, then from spawning the binary again to the first
//!   answered `GetKpis`; store bytes per sled tree (keys + values, read
//!   with sled once the aggregator is down) and on disk.
//!
//! Calls come from `common/synth.rs` (one queue visit each, agent shifts),
//! merged into source-time order as a PBX would write them, as one agent
//! (`synth`) in Batches of 1000 events; every config key is at its
//! `deploy/aggregator.toml` default (sealing horizon 4 h, checkpoint every
//! 10 s) but addresses, store path, agents and a reader.
//!
//! `cargo bench -p callkpi-tests --bench history -- --calls 1000000`; flags
//! (or env `BENCH_CALLS` ...): `--calls N` (100 000), `--days D` (N / 27 400,
//! at least 31: 10 M calls is a year), `--agents A` (calls a day / 165, at
//! least 24), `--seed S`, `--reps R` (5), `--watch-samples S` (60),
//! `--max-rss-gib G` (8), `--no-pg` (skip PostgreSQL). PostgreSQL: `PG_BIN` (default
//! `/usr/lib/postgresql/15/bin`) and `psql` on PATH.

#![allow(clippy::print_stdout, missing_docs)]

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/synth.rs"]
mod synth;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callkpi_core::event::{Event, EventId, EventKind, EventTime, LeaveReason, NANOS_PER_MS, SourceKind};
use callkpi_core::params::GroupBy;
use callkpi_core::time::Interval;
use callkpi_core::{KpiParams, Report};
use callkpi_proto::pb;
use callkpi_tests::eventually;
use common::*;
use tokio::sync::mpsc;

const SYNTH: &str = "synth";
const LIVE: &str = "live";
const LATQ: &str = "latq";
const DAY_MS: i64 = 86_400_000;

/// An RSS sample: seconds since ingest start, calls sent, calls applied by
/// the follower (open + sealed), RSS KiB.
type Sample = (f64, u64, u64, u64);

#[derive(Clone)]
struct Args {
    /// Start of the calls: `days` before [`synth::T0_MS`], so that they
    /// end before the aggregator's clock (nothing comes from the future).
    t0_ms: i64,
    calls: u64,
    days: u64,
    agents: u32,
    seed: u64,
    reps: usize,
    watch_samples: usize,
    max_rss_gib: f64,
    pg: bool,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        let env = format!("BENCH_{}", name.trim_start_matches("--").replace('-', "_").to_uppercase());
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1).cloned())
            .or_else(|| std::env::var(env).ok())
            .map(|v| v.replace('_', "").parse::<f64>().unwrap_or_else(|_| panic!("{name}: not a number: {v:?}")))
    };
    let calls = flag("--calls").map_or(100_000, |v| v as u64);
    let days = flag("--days").map_or((calls / 27_400).max(31), |v| v as u64);
    let agents = flag("--agents").map_or((calls / days / 165) as u32, |v| v as u32).max(synth::MIN_AGENTS);
    Args {
        t0_ms: synth::T0_MS - i64::try_from(days).unwrap_or(0) * DAY_MS,
        calls,
        days,
        agents,
        seed: flag("--seed").map_or(0x5eed_ca11, |v| v as u64),
        reps: flag("--reps").map_or(5, |v| v as usize).max(1),
        watch_samples: flag("--watch-samples").map_or(60, |v| v as usize).max(2),
        max_rss_gib: flag("--max-rss-gib").unwrap_or(8.0),
        pg: !argv.iter().any(|a| a == "--no-pg"),
    }
}

/// An event ordered by source time, then by generation order.
struct Pending(i64, u64, Event);

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1) == (o.0, o.1)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}

/// Generates the calls and shifts of `a` in source-time order (every
/// event of a call is out of the way once calls entering a step later
/// begin), as Batches of agent [`SYNTH`] into `tx`; counts calls sent.
fn produce(a: &Args, tx: &mpsc::Sender<EncodedBatch>, sent_calls: &AtomicU64) -> u64 {
    let mut heap = BinaryHeap::new();
    let mut order = 0u64;
    let mut scratch = 0u64;
    for ev in synth::shifts_from(a.t0_ms, a.agents, a.days, "bench", &mut scratch) {
        order += 1;
        heap.push(Reverse(Pending(ev.time.kpi_time(), order, ev)));
    }
    let step_ms =
        (i64::try_from(a.days.max(1)).unwrap_or(1) * DAY_MS / i64::try_from(a.calls.max(1)).unwrap_or(1)).max(1);
    let mut seq = 0u64;
    let mut batch = Vec::with_capacity(BATCH_EVENTS);
    let mut emit = |ev: Event, batch: &mut Vec<pb::Event>| {
        seq += 1;
        let mut e = pb::Event::from(ev);
        e.agent_id = SYNTH.to_owned();
        e.seq = seq;
        batch.push(e);
        if batch.len() == BATCH_EVENTS {
            tx.blocking_send(encode_batch(std::mem::take(batch))).expect("the ingest client is gone");
        }
    };
    let mut events = Vec::new();
    for (i, call) in synth::calls_from(a.t0_ms, a.calls, a.days, a.agents, a.seed).enumerate() {
        synth::events(&call, "bench", &mut scratch, &mut events);
        for ev in events.drain(..) {
            order += 1;
            heap.push(Reverse(Pending(ev.time.kpi_time(), order, ev)));
        }
        let cutoff = (call.entered_ms - step_ms) * NANOS_PER_MS;
        while heap.peek().is_some_and(|Reverse(p)| p.0 < cutoff) {
            let Some(Reverse(p)) = heap.pop() else { break };
            emit(p.2, &mut batch);
        }
        sent_calls.store(i as u64 + 1, Ordering::Relaxed);
    }
    while let Some(Reverse(p)) = heap.pop() {
        emit(p.2, &mut batch);
    }
    if !batch.is_empty() {
        tx.blocking_send(encode_batch(batch)).expect("the ingest client is gone");
    }
    seq
}

async fn reports(port: u16) -> Result<pb::reports_client::ReportsClient<tonic::transport::Channel>, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(pb::reports_client::ReportsClient::new(channel).max_decoding_message_size(256 << 20))
}

fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {READER_TOKEN}").parse().expect("header"));
    req
}

/// 15 min x queue over `[from_ms, to_ms)`, UTC.
fn kpi_query(from_ms: i64, to_ms: i64) -> pb::KpiQuery {
    let params = KpiParams {
        from: Some(from_ms * NANOS_PER_MS),
        to: Some(to_ms * NANOS_PER_MS),
        interval: Interval::Min15,
        group_by: vec![GroupBy::Queue],
        time_zone: "UTC".into(),
        ..KpiParams::default()
    };
    callkpi_proto::report::params_to_pb(&params)
}

/// `reps` GetKpis of `q` on one channel: each time, and the last reply.
fn time_get_kpis(rt: &tokio::runtime::Runtime, port: u16, q: &pb::KpiQuery, reps: usize) -> (Vec<f64>, pb::KpiReport) {
    rt.block_on(async {
        let mut c = reports(port).await.expect("connect to Reports");
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..reps {
            let t = Instant::now();
            let r = c.get_kpis(authed(q.clone())).await.expect("GetKpis").into_inner();
            times.push(t.elapsed().as_secs_f64());
            last = Some(r);
        }
        (times, last.expect("a reply"))
    })
}

/// The live agent: one-event Batches of [`LIVE`], a `WatchKpis` watcher
/// on [`LATQ`]; per sample, send to the first snapshot showing it.
fn watch_latency(
    rt: &tokio::runtime::Runtime,
    port: u16,
    live_seq: &mut u64,
    call_base: u64,
    samples: usize,
) -> Vec<Duration> {
    let (btx, brx) = mpsc::channel(4);
    let client = spawn_client(rt, port, LIVE, *live_seq + 1, *live_seq, brx);
    let (stx, srx) = std::sync::mpsc::channel::<(Instant, u32)>();
    let watcher = rt.spawn(async move {
        let mut c = reports(port).await.expect("connect to Reports");
        let q = pb::LiveQuery {
            min_interval_ms: 50,
            time_zone: "UTC".into(),
            queues: vec![LATQ.into()],
            ..Default::default()
        };
        let mut stream = c.watch_kpis(authed(q)).await.expect("WatchKpis").into_inner();
        while let Ok(Some(snap)) = stream.message().await {
            let waiting = snap.queues.iter().find(|q| q.queue == LATQ).map_or(0, |q| q.calls_waiting);
            if stx.send((Instant::now(), waiting)).is_err() {
                return;
            }
        }
    });
    srx.recv_timeout(Duration::from_secs(60)).expect("a first snapshot");
    let now_ns =
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
    let mut out = Vec::new();
    for i in 0..samples {
        std::thread::sleep(Duration::from_millis(250));
        let call = format!("w{}", call_base + i as u64 / 2);
        let t = now_ns();
        let (kind, expected) = if i % 2 == 0 {
            (EventKind::QueueJoin { queue: LATQ.into(), caller: Some(format!("07{i:08}")), position: Some(1) }, 1)
        } else {
            (EventKind::QueueLeave { queue: LATQ.into(), reason: LeaveReason::Abandon, reported_wait_ms: None }, 0)
        };
        *live_seq += 1;
        let ev = Event {
            id: EventId { agent_id: LIVE.into(), seq: *live_seq },
            site: "bench".into(),
            source: SourceKind::Synthetic,
            call_id: call,
            leg_id: String::new(),
            time: EventTime::from_source(t),
            kind,
        };
        while srx.try_recv().is_ok() {}
        let t0 = Instant::now();
        btx.blocking_send(encode_batch(vec![pb::Event::from(ev)])).expect("live client");
        let seen = loop {
            match srx.recv_timeout(Duration::from_secs(10)) {
                Ok((at, w)) if w == expected => break at - t0,
                Ok(_) => {}
                Err(e) => panic!("sample {i}: no snapshot with calls_waiting {expected}: {e}"),
            }
        };
        out.push(seen);
    }
    drop(btx);
    rt.block_on(client).expect("live client task").expect("live client");
    watcher.abort();
    out
}

/// Percentile `p` (0-100) of `v`, ms.
fn pct(v: &[Duration], p: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    s.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

/// Bytes of keys and values per tree of the sled store at `dir` (the
/// aggregator must be down: sled locks its directory).
fn tree_bytes(dir: &Path) -> Vec<(String, u64, u64)> {
    let db = sled::Config::new().path(dir).open().expect("open the store with sled");
    let mut out = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).expect("tree");
        let (mut n, mut bytes) = (0u64, 0u64);
        for kv in tree.iter() {
            let (k, v) = kv.expect("read");
            n += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        out.push((String::from_utf8_lossy(&name).into_owned(), n, bytes));
    }
    out
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn report_of(pb: &pb::KpiReport) -> Report {
    callkpi_proto::report::report_from_pb(pb).expect("a valid KpiReport")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let a = args();
    let bins = release_bins();
    println!(
        "history: {} calls over {} days ({} a day), {} agents, seed {:#x}; load average before: {}",
        a.calls,
        a.days,
        a.calls / a.days,
        a.agents,
        a.seed,
        loadavg()
    );
    let dir = scratch("callkpi-bench-history-");
    let agents = vec![SYNTH.to_owned(), LIVE.to_owned()];
    let mut agg = Aggregator::start(&bins, dir.path(), "agg", 0, &agents);
    let store = dir.path().join("agg-store");
    let rt = runtime();
    let mut live_seq = 0u64;

    // --- WatchKpis, empty store ---
    let watch_empty = watch_latency(&rt, agg.grpc, &mut live_seq, 0, a.watch_samples);
    println!("watch, empty store: p50 {:.1} ms, p99 {:.1} ms", pct(&watch_empty, 50.0), pct(&watch_empty, 99.0));
    let rss_empty = rss_kib(agg.proc.pid()).map_or(0, |r| r.0);

    // --- ingest, RSS sampled every second ---
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let over = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let t_ingest = Instant::now();
    let sampler = {
        let (sent, stop, over, samples) = (sent.clone(), stop.clone(), over.clone(), samples.clone());
        let (pid, http, max_kib) = (agg.proc.pid(), agg.http, (a.max_rss_gib * 1024.0 * 1024.0) as u64);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some((rss, _)) = rss_kib(pid) {
                    let text = callkpi_tests::http_get(http, "/metrics").unwrap_or_default();
                    let m = |n: &str| callkpi_tests::metric(&text, n).unwrap_or(0.0) as u64;
                    let applied = m("callkpi_kpi_open_calls") + m("callkpi_kpi_calls_sealed");
                    let s = (t_ingest.elapsed().as_secs_f64(), sent.load(Ordering::Relaxed), applied, rss);
                    samples.lock().expect("samples").push(s);
                    if rss > max_kib {
                        // Rather than push a shared machine into the OOM killer.
                        over.store(true, Ordering::Relaxed);
                        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                        return;
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let stopped = |samples: &Mutex<Vec<Sample>>| {
        let samples = samples.lock().expect("samples");
        println!(
            "STOPPED: aggregator RSS passed --max-rss-gib {}; it was SIGKILLed. RSS by calls applied:",
            a.max_rss_gib
        );
        let step = (samples.len() / 20).max(1);
        for s in samples.iter().step_by(step).chain(samples.last()) {
            println!("  {:>6.0} s: {} calls sent, {} applied, RSS {:.0} MiB", s.0, s.1, s.2, mib(s.3));
        }
    };
    let (tx, rx) = mpsc::channel(16);
    let client = spawn_client(&rt, agg.grpc, SYNTH, 1, u64::MAX >> 1, rx);
    let producer = {
        let sent = sent.clone();
        let a2 = a.clone();
        std::thread::spawn(move || produce(&a2, &tx, &sent))
    };
    let metrics = |agg: &Aggregator| {
        let m = http_get_metrics(agg);
        (m("callkpi_kpi_open_calls"), m("callkpi_kpi_calls_sealed"), m("callkpi_agent_hwm{agent=\"synth\"}"))
    };
    let mut last_print = Instant::now();
    while !client.is_finished() && !over.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(500));
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            let (open, sealed, hwm) = metrics(&agg);
            println!(
                "  {:>6.0} s: {} calls sent, {} events stored, open {open}, sealed {sealed}, RSS {:.0} MiB",
                t_ingest.elapsed().as_secs_f64(),
                sent.load(Ordering::Relaxed),
                hwm,
                rss_kib(agg.proc.pid()).map_or(0.0, |r| mib(r.0))
            );
        }
    }
    if over.load(Ordering::Relaxed) {
        stopped(&samples);
        return;
    }
    let events = producer.join().expect("producer");
    let run = rt.block_on(client).expect("ingest task").expect("ingest client");
    let ingest_s = t_ingest.elapsed().as_secs_f64();
    assert_eq!(run.events, events, "every event sent was acked");
    let (open_at_ack, sealed_at_ack, _) = metrics(&agg);
    // The follower has applied everything once every call is open or sealed.
    let caught_up = eventually(Duration::from_secs(3600), || {
        std::thread::sleep(Duration::from_millis(250));
        let (open, sealed, _) = metrics(&agg);
        (open + sealed >= a.calls as f64 || over.load(Ordering::Relaxed)).then_some(())
    });
    if over.load(Ordering::Relaxed) {
        stopped(&samples);
        return;
    }
    assert!(caught_up.is_some(), "the follower never applied all {} calls", a.calls);
    let follower_s = t_ingest.elapsed().as_secs_f64();
    // A checkpoint (every 10 s) has written what the follower sealed.
    std::thread::sleep(Duration::from_secs(12));
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let (open_end, sealed_end, _) = metrics(&agg);
    let (rss_end, hwm_end) = rss_kib(agg.proc.pid()).unwrap_or((0, 0));
    let samples = samples.lock().expect("samples").clone();
    let rss_at = |calls: u64| samples.iter().find(|s| s.2 >= calls).map_or(0, |s| s.3);
    let tenth = a.calls / 10;
    let peak_sampled = samples.iter().map(|s| s.3).max().unwrap_or(0);
    println!(
        "ingest: {events} events ({:.2} per call) acked in {ingest_s:.1} s ({}/s); follower applied all {:.1} s \
         after the start ({}/s); at the last Ack: open {open_at_ack}, sealed {sealed_at_ack}",
        events as f64 / a.calls as f64,
        si(events as f64 / ingest_s),
        follower_s,
        si(events as f64 / follower_s)
    );
    println!(
        "RSS: empty {:.0} MiB; at {tenth} calls applied {:.0} MiB; at {} calls applied {:.0} MiB; after catching up {:.0} MiB \
         (open {open_end}, sealed {sealed_end}); peak sampled {:.0} MiB, VmHWM {:.0} MiB",
        mib(rss_empty),
        mib(rss_at(tenth)),
        a.calls,
        mib(rss_at(a.calls)),
        mib(rss_end),
        mib(peak_sampled),
        mib(hwm_end)
    );

    // --- GetKpis ---
    let end_ms = synth::T0_MS + DAY_MS;
    let month = 30 * DAY_MS;
    let first_month = kpi_query(a.t0_ms, a.t0_ms + month);
    let last_month = kpi_query(end_ms - DAY_MS - month, end_ms - DAY_MS);
    let whole = kpi_query(a.t0_ms - DAY_MS, end_ms);
    let (mut t_first, r_first) = time_get_kpis(&rt, agg.grpc, &first_month, a.reps);
    let (mut t_last, _) = time_get_kpis(&rt, agg.grpc, &last_month, a.reps);
    let (mut t_whole, r_whole) = time_get_kpis(&rt, agg.grpc, &whole, a.reps);
    let ours = pg::engine_rows(&report_of(&r_whole));
    let offered: u64 = ours.values().map(|f| f.counts[0] + f.counts[3]).sum();
    assert_eq!(offered, a.calls, "whole-range GetKpis: every call entered a queue once");
    let month_rows = r_first.rows.len();
    let (q_first, q_last, q_whole) = (median(&mut t_first), median(&mut t_last), median(&mut t_whole));
    println!(
        "GetKpis 15 min x queue, median of {}: first month {:.1} ms ({month_rows} rows), last month {:.1} ms, \
         whole range {:.1} ms ({} rows)",
        a.reps,
        q_first * 1e3,
        q_last * 1e3,
        q_whole * 1e3,
        r_whole.rows.len()
    );

    // --- GetCall, oldest call ---
    let t_call: Vec<f64> = rt.block_on(async {
        let mut c = reports(agg.grpc).await.expect("connect to Reports");
        let mut v = Vec::new();
        for _ in 0..a.reps {
            let t = Instant::now();
            let tl = c
                .get_call(authed(pb::CallRef { call_id: "c0".into(), site: Some("bench".into()) }))
                .await
                .expect("GetCall c0")
                .into_inner();
            v.push(t.elapsed().as_secs_f64());
            assert!(tl.events.len() >= 2, "the oldest call comes back with its events: {tl:?}");
        }
        v
    });
    let call_first = t_call[0];
    let q_call = median(&mut t_call.clone());
    println!("GetCall c0 (oldest): first {:.2} ms, median of {} {:.2} ms", call_first * 1e3, a.reps, q_call * 1e3);

    // --- WatchKpis, N calls stored ---
    let watch_full = watch_latency(&rt, agg.grpc, &mut live_seq, 1_000_000, a.watch_samples);
    println!(
        "watch, {} calls stored: p50 {:.1} ms, p99 {:.1} ms",
        a.calls,
        pct(&watch_full, 50.0),
        pct(&watch_full, 99.0)
    );

    // --- restart ---
    let code = agg.proc.terminate(Duration::from_secs(60));
    assert_eq!(code, Some(0), "aggregator exits cleanly:\n{}", agg.proc.log_tail());
    let disk = dir_bytes(&store);
    let trees = tree_bytes(&store);
    let grpc = agg.grpc;
    drop(agg);
    let t = Instant::now();
    let agg = Aggregator::spawn(&bins, dir.path(), "agg", grpc, &agents);
    let answered = eventually(Duration::from_secs(300), || {
        rt.block_on(async {
            let mut c = reports(grpc).await.ok()?;
            c.get_kpis(authed(first_month.clone())).await.ok().map(tonic::Response::into_inner)
        })
    });
    let restart = t.elapsed().as_secs_f64();
    let after = answered.expect("GetKpis answered after restart");
    assert_eq!(after.rows, r_first.rows, "the first month reads the same after restart");
    let rss_restart = rss_kib(agg.proc.pid()).map_or(0, |r| r.0);
    println!("restart to first answered GetKpis: {restart:.2} s; RSS then {:.0} MiB", mib(rss_restart));
    println!("store on disk: {:.1} MB; per tree (keys + values):", disk as f64 / 1e6);
    for (name, n, bytes) in &trees {
        println!(
            "  {name}: {n} entries, {:.1} MB ({:.0} B per call)",
            *bytes as f64 / 1e6,
            *bytes as f64 / a.calls as f64
        );
    }

    // --- PostgreSQL, whole range ---
    let mut pg_line = String::from("| GetKpis whole range vs PostgreSQL 15 | skipped (--no-pg) | | |");
    if a.pg {
        let pg_dir = dir.path().join("pg");
        std::fs::create_dir_all(&pg_dir).expect("pg dir");
        let csv = dir.path().join("queue_visit.csv");
        pg::write_csv(&csv, a.t0_ms, a.calls, a.days, a.agents, a.seed);
        let pg = pg::Pg::start(&pg_dir);
        pg.psql(pg::SCHEMA);
        pg.psql(&format!("\\copy queue_visit FROM '{}' WITH (FORMAT csv)", csv.display()));
        std::fs::remove_file(&csv).expect("rm csv");
        pg.psql(pg::INDEXES);
        pg.psql("ANALYZE queue_visit;");
        let theirs = pg::pg_rows(&pg.psql(pg::KPI_SQL));
        assert_eq!(ours.len(), theirs.len(), "(interval, queue) rows with calls: aggregator vs SQL");
        for (k, v) in &theirs {
            let e = ours.get(k).unwrap_or_else(|| panic!("row {k:?} only in SQL"));
            assert!(pg::same(e, v), "row {k:?}: aggregator {e:?} vs SQL {v:?}");
        }
        println!("check: all {} (15 min, queue) rows of the whole range equal in GetKpis and SQL", theirs.len());
        let mut t_pg: Vec<f64> = pg
            .timed(pg::KPI_SQL.trim().replace('\n', " ").as_str(), a.reps)
            .iter()
            .map(Duration::as_secs_f64)
            .collect();
        let q_pg = median(&mut t_pg);
        pg_line = format!(
            "| GetKpis whole range vs PostgreSQL 15 (median of {}) | {:.1} ms vs {:.1} ms | PG / ours {:.1} | >= 10 |",
            a.reps,
            q_whole * 1e3,
            q_pg * 1e3,
            q_pg / q_whole
        );
    }

    println!();
    println!("| {} calls, {} days | measured | ratio | target |", a.calls, a.days);
    println!("|---|---|---|---|");
    println!(
        "| peak RSS (sampled 1/s; VmHWM) | {:.0} MiB; {:.0} MiB | {:.2} of 1 GiB | <= 1 |",
        mib(peak_sampled),
        mib(hwm_end),
        mib(hwm_end) / 1024.0
    );
    println!(
        "| RSS at N vs at N/10 calls applied | {:.0} vs {:.0} MiB | {:.3} | <= 1.10 |",
        mib(rss_at(a.calls)),
        mib(rss_at(tenth)),
        rss_at(a.calls) as f64 / rss_at(tenth).max(1) as f64
    );
    println!(
        "| ingest; follower applied all | {}/s; {}/s | follower / ingest {:.2} | keeps up: 1 |",
        si(events as f64 / ingest_s),
        si(events as f64 / follower_s),
        ingest_s / follower_s
    );
    println!(
        "| GetKpis 15 min x queue, first month | {:.1} ms | {:.3} of 50 ms | <= 1 |",
        q_first * 1e3,
        q_first / 0.05
    );
    println!("| GetKpis 15 min x queue, last month | {:.1} ms | {:.3} of 50 ms | <= 1 |", q_last * 1e3, q_last / 0.05);
    println!("| GetKpis 15 min x queue, whole range | {:.1} ms | {:.3} of 1 s | <= 1 |", q_whole * 1e3, q_whole);
    println!("{pg_line}");
    println!("| restart to first answered GetKpis | {restart:.2} s | {:.3} of 10 s | <= 1 |", restart / 10.0);
    println!(
        "| event -> WatchKpis p99, N stored vs empty | {:.1} vs {:.1} ms | {:.2} | <= 1.2 |",
        pct(&watch_full, 99.0),
        pct(&watch_empty, 99.0),
        pct(&watch_full, 99.0) / pct(&watch_empty, 99.0)
    );
    println!("| GetCall oldest call (median) | {:.2} ms | {:.3} of 50 ms | <= 1 |", q_call * 1e3, q_call / 0.05);
    println!("| store on disk | {:.1} MB | {:.0} B per call | |", disk as f64 / 1e6, disk as f64 / a.calls as f64);
    println!("load average after: {}", loadavg());
    let mut agg = agg;
    let code = agg.proc.terminate(Duration::from_secs(60));
    assert_eq!(code, Some(0), "aggregator exits cleanly after restart:\n{}", agg.proc.log_tail());
    drop(dir);
}

/// A reader of one /metrics scrape: a metric, 0 when absent.
fn http_get_metrics(agg: &Aggregator) -> impl Fn(&str) -> f64 {
    let text = callkpi_tests::http_get(agg.http, "/metrics").unwrap_or_default();
    move |name| callkpi_tests::metric(&text, name).unwrap_or(0.0)
}
