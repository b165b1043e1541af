//! The agent with a large backlog: its memory while it holds one and keeps
//! capturing, and how fast it drains once the aggregator is back. Real
//! release binaries on loopback, one queue_log source, every setting at its
//! `deploy/agent.toml` default except addresses, paths and the reconnect
//! backoff (100 ms to 1 s instead of 500 ms to 60 s, so the drain starts
//! within a second of the aggregator and its start is not a backoff draw).
//!
//! 1. Reference, RSS idle: the agent with an empty spool and an empty
//!    queue_log, no aggregator, sampled 10 s; then the same process fed
//!    1 000 events/s for 15 s (still an empty spool: no aggregator, but
//!    nothing accumulated yet).
//! 2. Backlog: a queue_log of N events (default 1 000 000; shifted copies
//!    of the run-a recording) is written, and the agent started on it with
//!    no aggregator reachable: it reads, maps and spools everything (the
//!    honest way: the real source and spool writer). Capped at
//!    `BENCH_BACKLOG_SECS` (default 180): whatever is spooled by then is the
//!    backlog, and the bench says so.
//! 3. RSS with the backlog: the agent is restarted on that spool (the
//!    queue_log replaced by an empty one), lines are appended at 1 000
//!    events/s for `BENCH_FEED_SECS` (30) s, and `/proc/<pid>/status`
//!    (VmRSS, VmHWM, RssAnon, RssFile) sampled every `BENCH_SAMPLE_MS`
//!    (1000) ms. Issue 14's targets: VmRSS at most 24 MiB, and flat (the
//!    maximum of the run's second half no higher than that of 1/6 to 1/2 of
//!    it: minutes 30-60 against 10-30 of an hour).
//! 4. Drain: the real aggregator is started on the port the agent targets;
//!    from the agent's `callkpi_uplink_connected` turning 1 to its
//!    `callkpi_spool_depth_events` reaching 0 (every event acked and deleted).
//! 5. Reference for 4, same run: the aggregator's ingest rate from the
//!    `ingest` bench, on a fresh aggregator: 10 direct clients (the figure
//!    of that bench) and 1 direct client (one stream, as the drain is).
//!
//! Every RSS figure is split as `/proc/<pid>/status` reports it: RssAnon
//! (heap, stacks, sled's page cache) and RssFile (pages of the binary and
//! its shared libraries that are mapped in; they depend on how the binary
//! was built, not on the backlog).
//!
//! `cargo bench -p callkpi-tests --bench backlog`; knobs:
//! `BENCH_BACKLOG_EVENTS` (default 1000000), `BENCH_BACKLOG_SECS` (180),
//! `BENCH_BINS_DIR` (prebuilt release binaries, see `common::release_bins`),
//! `BENCH_AGENT_BIN` (the agent executable to measure, default the release
//! build's `callkpi-agent`; e.g. the shipped
//! `target/x86_64-unknown-linux-gnu/dist/callkpi-agent`; the aggregator is
//! always the release build), `BENCH_SPOOL_CACHE_BYTES` (writes
//! `[spool] cache_bytes` into the agent's config; unset: the default),
//! `BENCH_SPOOL_MAX_BYTES` (`[spool] max_bytes`; at the 256 MiB default a
//! 1 M backlog plus 1 000 events/s fills the spool after about 24 minutes,
//! and the queue_log source then pauses, so an hour-long run that should
//! keep writing raises it), `BENCH_FEED_SECS` (30: how long step 3 feeds
//! and samples; 3600 is the hour-long outage of issue 14),
//! `BENCH_BATCH_MAX_EVENTS` and `BENCH_UPLINK_COMPRESSION` (`[uplink]`
//! `batch_max_events` and `compression`, for what limits the drain),
//! `BENCH_SAMPLE_MS` (1000) and `BENCH_MEM_CSV` (a file that receives step
//! 3's samples as they are taken; `docs/plot-agent-memory.sh` plots it).
//! The agent inherits the bench's environment, so `CALLKPI_WORKER_THREADS`
//! or `MALLOC_ARENA_MAX` set for the bench apply to it.

#![allow(clippy::print_stdout, missing_docs)]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use callkpi_tests::{eventually, free_port, http_get, metric};
use common::*;

const AGENT: &str = "agent-a";
const FEED_PER_SEC: u64 = 1000;

fn agent_config(dir: &Path, name: &str, queue_log: &Path, grpc: u16, http: u16) -> PathBuf {
    let cfg = format!(
        r#"agent_id = "{AGENT}"
site = "bench"

[uplink]
url = "http://127.0.0.1:{grpc}"
token = "{token}"
backoff_initial_ms = 100
backoff_max_ms = 1000
{uplink}
[spool]
path = "{spool}"
{cache}
[metrics]
listen = "127.0.0.1:{http}"

[[sources.queue_log]]
name = "ql"
path = "{ql}"
"#,
        token = token_of(AGENT),
        uplink = [("BENCH_BATCH_MAX_EVENTS", "batch_max_events"), ("BENCH_UPLINK_COMPRESSION", "compression")]
            .iter()
            .filter_map(|(var, key)| std::env::var(var).ok().map(|v| format!("{key} = {v}\n")))
            .collect::<String>(),
        spool = dir.join(format!("{name}-spool")).display(),
        cache = [("BENCH_SPOOL_CACHE_BYTES", "cache_bytes"), ("BENCH_SPOOL_MAX_BYTES", "max_bytes")]
            .iter()
            .filter_map(|(var, key)| std::env::var(var).ok().map(|b| format!("{key} = {b}\n")))
            .collect::<String>(),
        ql = queue_log.display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, cfg).expect("agent config");
    path
}

fn start_agent(bin: &Path, dir: &Path, name: &str, cfg: &Path, http: u16) -> Proc {
    let p = Proc::start(bin, &["run", "--config", cfg.to_str().expect("utf-8")], &dir.join(format!("{name}.log")));
    if eventually(Duration::from_secs(60), || agent_metric(http, "callkpi_spool_depth_events")).is_none() {
        panic!("agent did not come up:\n{}", p.log_tail());
    }
    p
}

fn agent_metric(http: u16, name: &str) -> Option<f64> {
    http_get(http, "/metrics").and_then(|t| metric(&t, name))
}

/// One reading of `/proc/<pid>/status`, KiB (threads: a count).
#[derive(Clone, Copy, Default)]
struct Mem {
    rss: u64,
    hwm: u64,
    anon: u64,
    file: u64,
    threads: u64,
}

fn mem(pid: u32) -> Option<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Mem {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
        anon: field("RssAnon:")?,
        file: field("RssFile:")?,
        threads: field("Threads:")?,
    })
}

/// `/proc/<pid>/status` every `every` for `d`, each reading timed from the
/// start; with `csv`, also written there as it is taken (seconds, then
/// VmRSS, RssAnon, RssFile in KiB), so a long run can be watched and
/// plotted (`docs/plot-agent-memory.sh`).
fn sample(pid: u32, d: Duration, every: Duration, csv: Option<&Path>) -> Vec<(f64, Mem)> {
    let mut out = csv.map(|p| {
        let mut f = std::io::BufWriter::new(std::fs::File::create(p).expect("BENCH_MEM_CSV"));
        writeln!(f, "secs,vmrss_kib,rss_anon_kib,rss_file_kib").expect("csv");
        f
    });
    let start = Instant::now();
    let mut v = Vec::new();
    let mut tick = 0u32;
    while start.elapsed() < d {
        if let Some(s) = mem(pid) {
            let t = start.elapsed().as_secs_f64();
            if let Some(f) = out.as_mut() {
                writeln!(f, "{t:.1},{},{},{}", s.rss, s.anon, s.file).and_then(|()| f.flush()).expect("csv");
            }
            v.push((t, s));
        }
        tick += 1;
        std::thread::sleep((start + every * tick).saturating_duration_since(Instant::now()));
    }
    v
}

/// VmRSS max over the span the issue calls "minutes 10 to 30" and over the
/// "last 30 minutes" of an hour, as fractions of the run (1/6 to 1/2, and
/// 1/2 to the end), so a shorter run reports the same shape. Memory that
/// levels off has the second no higher than the first.
fn windows(samples: &[(f64, Mem)], secs: u64) -> (u64, u64) {
    let secs = secs as f64;
    let max_in = |from: f64, to: f64| {
        samples.iter().filter(|(t, _)| *t >= from && *t <= to).map(|(_, m)| m.rss).max().unwrap_or(0)
    };
    (max_in(secs / 6.0, secs / 2.0), max_in(secs / 2.0, secs))
}

/// VmRSS median and max, VmHWM, and the medians of RssAnon and RssFile
/// (KiB), plus the most threads seen.
struct Rss {
    median: f64,
    max: u64,
    hwm: u64,
    anon: f64,
    anon_max: u64,
    file: f64,
    threads: u64,
}

fn summarize(samples: &[(f64, Mem)]) -> Rss {
    let med = |f: fn(&Mem) -> u64| median(&mut samples.iter().map(|(_, s)| f(s) as f64).collect::<Vec<_>>());
    let max = |f: fn(&Mem) -> u64| samples.iter().map(|(_, s)| f(s)).max().unwrap_or(0);
    Rss {
        median: med(|s| s.rss),
        max: max(|s| s.rss),
        hwm: max(|s| s.hwm),
        anon: med(|s| s.anon),
        anon_max: max(|s| s.anon),
        file: med(|s| s.file),
        threads: max(|s| s.threads),
    }
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VmRSS median {} max {}, VmHWM {}; RssAnon median {} max {}, RssFile median {}; {} threads",
            mib(self.median),
            mib(self.max as f64),
            mib(self.hwm as f64),
            mib(self.anon),
            mib(self.anon_max as f64),
            mib(self.file),
            self.threads
        )
    }
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

/// Appends queue_log lines to `path` at `FEED_PER_SEC` events/s
/// (`events_per_line` on average), in 10 steps a second, for `d`. The lines
/// are copies `first_copy..` of the recording, made as they are needed: an
/// hour at 1 000 events/s is 400 MB of text, not worth holding.
fn feeder(
    path: PathBuf,
    fixture: String,
    first_copy: u64,
    events_per_line: f64,
    d: Duration,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).expect("queue_log");
        let mut copy = first_copy;
        let mut pending: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
        let start = Instant::now();
        let mut written = 0usize;
        let mut tick = 0u64;
        while start.elapsed() < d {
            tick += 1;
            let due = ((tick * FEED_PER_SEC / 10) as f64 / events_per_line).round() as usize;
            let mut out = Vec::new();
            while written < due {
                if pending.is_empty() {
                    let text = queue_log_copies(&fixture, copy, copy + 1);
                    copy += 1;
                    pending.extend(text.split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec));
                }
                out.extend(pending.pop_front().expect("a copy has lines"));
                written += 1;
            }
            if !out.is_empty() {
                f.write_all(&out).expect("append");
            }
            let next = start + Duration::from_millis(tick * 100);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        written
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let target = env_or("BENCH_BACKLOG_EVENTS", 1_000_000);
    let build_secs = env_or("BENCH_BACKLOG_SECS", 180);
    let bins = release_bins();
    let agent_bin = std::env::var_os("BENCH_AGENT_BIN").map_or_else(|| bins.join("callkpi-agent"), PathBuf::from);
    assert!(agent_bin.exists(), "BENCH_AGENT_BIN: no {}", agent_bin.display());
    println!(
        "agent binary: {} ({:.1} MB){}",
        agent_bin.display(),
        std::fs::metadata(&agent_bin).map_or(0.0, |m| m.len() as f64 / 1e6),
        [("BENCH_SPOOL_CACHE_BYTES", "cache_bytes"), ("BENCH_SPOOL_MAX_BYTES", "max_bytes")]
            .iter()
            .filter_map(|(var, key)| std::env::var(var).ok().map(|b| format!("; spool {key} {b}")))
            .collect::<String>()
    );
    println!("load average before: {}", loadavg());
    let dir = scratch("callkpi-bench-backlog-");
    let d = dir.path();
    let fixture = fixture_queue_log();
    let one_copy = map_queue_log(&queue_log_copies(&fixture, 0, 1)).len() as u64;
    let lines_per_copy = fixture.lines().count() as f64;
    let events_per_line = one_copy as f64 / lines_per_copy;
    let copies = target.div_ceil(one_copy);
    let grpc = free_port();

    // Fed lines are copies after the backlog's.
    let feed_secs = env_or("BENCH_FEED_SECS", 30);
    let every = Duration::from_millis(env_or("BENCH_SAMPLE_MS", 1000));
    let events_total = |http: u16| agent_metric(http, "callkpi_source_events_total{source=\"ql\"}").unwrap_or(0.0);

    // 1. Reference: idle, empty spool; then 1 000 events/s, still empty.
    let idle_ql = d.join("idle-queue_log");
    std::fs::write(&idle_ql, b"").expect("empty queue_log");
    let http = free_port();
    let cfg = agent_config(d, "idle", &idle_ql, grpc, http);
    let mut agent = start_agent(&agent_bin, d, "idle", &cfg, http);
    std::thread::sleep(Duration::from_secs(2));
    let idle = summarize(&sample(agent.pid(), Duration::from_secs(10), every, None));
    let before = events_total(http);
    let feed = feeder(idle_ql.clone(), fixture.clone(), copies, events_per_line, Duration::from_secs(15));
    let fed_empty = summarize(&sample(agent.pid(), Duration::from_secs(15), every, None));
    feed.join().expect("feeder");
    std::thread::sleep(Duration::from_millis(500));
    let fed_empty_rate = (events_total(http) - before) / 15.0;
    assert_eq!(agent.terminate(Duration::from_secs(30)), Some(0), "idle agent stops:\n{}", agent.log_tail());
    println!("reference: idle, empty spool: {idle}");
    println!("reference: {fed_empty_rate:.0} events/s, empty spool: {fed_empty}");

    // 2. The backlog, spooled by the real agent from a large queue_log.
    let ql = d.join("queue_log");
    let big = queue_log_copies(&fixture, 0, copies);
    let expected = map_queue_log(&big).len() as u64;
    std::fs::write(&ql, &big).expect("queue_log");
    println!(
        "backlog: queue_log of {copies} copies of run-a, {} lines, {:.1} MB, {expected} events",
        big.iter().filter(|b| **b == b'\n').count(),
        big.len() as f64 / 1e6
    );
    drop(big);
    let http = free_port();
    let cfg = agent_config(d, "agent", &ql, grpc, http);
    let started = Instant::now();
    let mut agent = start_agent(&agent_bin, d, "agent-build", &cfg, http);
    let deadline = started + Duration::from_secs(build_secs);
    let mut build_hwm = 0;
    let mut spooled = 0.0;
    while Instant::now() < deadline {
        spooled = agent_metric(http, "callkpi_spool_last_seq").unwrap_or(spooled);
        build_hwm = build_hwm.max(mem(agent.pid()).map_or(0, |s| s.hwm));
        if spooled as u64 >= expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let build = started.elapsed();
    let complete = spooled as u64 >= expected;
    assert_eq!(agent.terminate(Duration::from_secs(60)), Some(0), "agent stops:\n{}", agent.log_tail());
    println!(
        "backlog: {} events spooled in {:.1} s ({}/s from the queue_log){}; builder's VmHWM {}",
        spooled as u64,
        build.as_secs_f64(),
        si(spooled / build.as_secs_f64()),
        if complete { "" } else { " -- NOT the whole file: deadline reached, backlog reduced" },
        mib(build_hwm as f64)
    );
    // The rest of the file must not be read: a new, empty queue_log.
    std::fs::remove_file(&ql).expect("rm queue_log");
    std::fs::write(&ql, b"").expect("empty queue_log");

    // 3. RSS with the backlog, fed 1 000 events/s.
    let mut agent = start_agent(&agent_bin, d, "agent", &cfg, http);
    let backlog = agent_metric(http, "callkpi_spool_depth_events").unwrap_or(0.0) as u64;
    let spool_bytes = agent_metric(http, "callkpi_spool_bytes").unwrap_or(0.0);
    let spool_disk = dir_bytes(&d.join("agent-spool"));
    std::thread::sleep(Duration::from_secs(3));
    let before = events_total(http);
    let feed = feeder(ql.clone(), fixture.clone(), copies, events_per_line, Duration::from_secs(feed_secs));
    let csv = std::env::var_os("BENCH_MEM_CSV").map(PathBuf::from);
    let fed_samples = sample(agent.pid(), Duration::from_secs(feed_secs), every, csv.as_deref());
    let fed = summarize(&fed_samples);
    let (early, late) = windows(&fed_samples, feed_secs);
    feed.join().expect("feeder");
    std::thread::sleep(Duration::from_millis(500));
    let fed_rate = (events_total(http) - before) / feed_secs as f64;
    let spooled_after = agent_metric(http, "callkpi_spool_depth_events").unwrap_or(0.0) as u64;
    println!(
        "with backlog: {backlog} events ({:.0} MB logical, {:.0} MB on disk), {fed_rate:.0} events/s for {feed_secs} s: \
         {fed}; spool now {spooled_after} events",
        spool_bytes / 1e6,
        spool_disk as f64 / 1e6,
    );

    // 4. Drain.
    let mut agg = Aggregator::start(&bins, d, "aggregator", grpc, &[AGENT.to_owned()]);
    let t_agg = Instant::now();
    let connected = eventually(Duration::from_secs(30), || {
        agent_metric(http, "callkpi_uplink_connected").filter(|v| *v == 1.0).map(|_| Instant::now())
    })
    .unwrap_or_else(|| panic!("agent never connected:\n{}", agent.log_tail()));
    let to_drain = spooled_after;
    let mut drain_hwm = 0;
    let mut agg_done = None;
    let drain_deadline = Instant::now() + Duration::from_secs(600);
    let drained = loop {
        drain_hwm = drain_hwm.max(mem(agent.pid()).map_or(0, |s| s.hwm));
        if agg_done.is_none()
            && agg.metric(&format!("callkpi_agent_hwm{{agent=\"{AGENT}\"}}")).is_some_and(|h| h as u64 >= to_drain)
        {
            agg_done = Some(Instant::now());
        }
        if agent_metric(http, "callkpi_spool_depth_events") == Some(0.0) {
            break Instant::now();
        }
        assert!(Instant::now() < drain_deadline, "drain took over 600 s:\n{}", agent.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    };
    let drain = drained - connected;
    let drain_rate = to_drain as f64 / drain.as_secs_f64();
    let agg_time = agg_done.map(|t| (t - connected).as_secs_f64());
    let reconnects = agent_metric(http, "callkpi_uplink_reconnects_total").unwrap_or(f64::NAN);
    let last_seq = agent_metric(http, "callkpi_spool_last_seq").unwrap_or(0.0) as u64;
    assert_eq!(agent.terminate(Duration::from_secs(30)), Some(0), "agent stops:\n{}", agent.log_tail());
    // Retried: right after a large drain the aggregator may be too busy to
    // answer /metrics within http_get's 2 s.
    let hwm = eventually(Duration::from_secs(60), || agg.metric(&format!("callkpi_agent_hwm{{agent=\"{AGENT}\"}}")))
        .unwrap_or(0.0) as u64;
    assert_eq!(hwm, last_seq, "the aggregator holds every event");
    assert_eq!(agg.proc.terminate(Duration::from_secs(30)), Some(0), "aggregator stops:\n{}", agg.proc.log_tail());
    println!(
        "drain: {to_drain} events in {:.1} s after connecting ({:.2} s after the aggregator was up): {}/s; \
         aggregator hwm reached them after {}; agent VmHWM during the drain {}; uplink reconnects so far {reconnects}",
        drain.as_secs_f64(),
        (connected - t_agg).as_secs_f64(),
        si(drain_rate),
        agg_time.map_or_else(|| "-".to_owned(), |t| format!("{t:.1} s")),
        mib(drain_hwm as f64)
    );

    // 5. Reference: direct clients against a fresh aggregator.
    let pool = map_queue_log(&queue_log_copies(&fixture, 0, 20));
    let agents: Vec<String> = (0..11).map(|i| format!("agent-{i:02}")).collect();
    let agg = Aggregator::start(&bins, d, "aggregator-ref", 0, &agents);
    let rt = runtime();
    let warm = vec![(agents[0].clone(), 1, encode_batches(&pool, &agents[0], 1, 5).0)];
    ingest(&rt, agg.grpc, warm);
    let ten: Vec<_> = (1..11).map(|i| (agents[i].clone(), 1, encode_batches(&pool, &agents[i], 1, 50).0)).collect();
    let ten = ingest(&rt, agg.grpc, ten);
    let one = vec![(agents[0].clone(), 5001, encode_batches(&pool, &agents[0], 5001, 200).0)];
    let one = ingest(&rt, agg.grpc, one);
    let mut agg = agg;
    assert_eq!(agg.proc.terminate(Duration::from_secs(30)), Some(0), "aggregator stops");
    println!(
        "reference: direct Ingest clients, fresh aggregator: 10 clients {} events in {:.2} s = {}/s; \
         1 client {} events in {:.2} s = {}/s",
        ten.events,
        ten.elapsed.as_secs_f64(),
        si(ten.rate()),
        one.events,
        one.elapsed.as_secs_f64(),
        si(one.rate())
    );

    println!();
    let cells = |r: &Rss| {
        format!("{} / {}; {} | {} / {}", mib(r.median), mib(r.max as f64), mib(r.hwm as f64), mib(r.anon), mib(r.file))
    };
    println!("| bench | VmRSS median / max; VmHWM | RssAnon / RssFile (medians) | ratio to idle (median) |");
    println!("|---|---|---|---|");
    println!("| agent idle, empty spool | {} | 1 |", cells(&idle));
    println!(
        "| agent, empty spool, {fed_empty_rate:.0} events/s | {} | {:.2} |",
        cells(&fed_empty),
        fed_empty.median / idle.median
    );
    println!(
        "| agent, {backlog}-event backlog, {fed_rate:.0} events/s | {} | {:.2} |",
        cells(&fed),
        fed.median / idle.median
    );
    println!();
    println!("| bench | value | reference | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| drain of {to_drain} events | {}/s ({:.1} s) | 10 direct clients {}/s; 1 direct client {}/s | {:.3}; {:.3} |",
        si(drain_rate),
        drain.as_secs_f64(),
        si(ten.rate()),
        si(one.rate()),
        drain_rate / ten.rate(),
        drain_rate / one.rate()
    );
    println!(
        "target 24 MiB: VmRSS max {} = {:.2} of the target; flat: max of the last half {} vs of 1/6 to 1/2 {} ({})",
        mib(fed.max as f64),
        fed.max as f64 / (24.0 * 1024.0),
        mib(late as f64),
        mib(early as f64),
        if late <= early { "flat" } else { "still rising" }
    );
    println!("load average after: {}", loadavg());
    drop(dir);
}
