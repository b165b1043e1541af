//! Event-to-WatchKpis latency on loopback: the real `callkpi-agent` and
//! `callkpi-aggregator` release binaries, a writer appending Asterisk
//! queue_log lines one at a time at a steady pace, and two `WatchKpis`
//! clients (callkpi-proto's generated client), one asking
//! `min_interval_ms = 50` (the server raises anything under 200 to 200)
//! and one leaving it at 0, the default (1 s).
//!
//! Each sample is one line: an ENTERQUEUE of a new call in queue `latq`
//! (calls waiting 0 -> 1) or the ABANDON of that call (1 -> 0). Latency =
//! from just before the line is written to the arrival of the first
//! snapshot whose `calls_waiting` for `latq` reflects it. Path: the agent's
//! queue_log tail (woken by inotify; `poll_interval_ms`, default 200 ms, is
//! only its fallback), map, sled
//! spool group commit, uplink Batch, the aggregator's store, the follower's
//! refresh, the live snapshot, gRPC.
//!
//! In the same run, per sample, the aggregator's `callkpi_agent_hwm` is
//! polled every ~2 ms: append -> stored at the aggregator (Acked), which
//! splits the latency into delivery and reporting. Reference: a loopback
//! TCP round trip of 64 bytes (Nagle off), median of 2000.
//!
//! `cargo bench -p callkpi-tests --bench watch_latency`; knobs:
//! `BENCH_WATCH_SAMPLES` (default 240), `BENCH_WATCH_PACE_MS` (one line
//! every, default 500), `BENCH_WATCH_POLL_MS` (the agent's queue_log
//! poll_interval_ms; unset: not written, the default as deployed).

#![allow(clippy::print_stdout, missing_docs)]

mod common;

use std::io::{Read as _, Write as _};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use callkpi_proto::pb;
use callkpi_tests::{Setup, TOKEN_A, TOKEN_READER, eventually, http_get, metric};
use common::{Proc, env_or, loadavg, release_bins};

const QUEUE: &str = "latq";

/// A snapshot as one watcher saw it: when it arrived, calls waiting in [`QUEUE`].
type Seen = (Instant, u32);

fn watcher(rt: &tokio::runtime::Runtime, port: u16, min_interval_ms: u32, tx: mpsc::Sender<Seen>) {
    rt.spawn(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect to Reports");
        let mut client = pb::reports_client::ReportsClient::new(channel);
        let mut req = tonic::Request::new(pb::LiveQuery {
            min_interval_ms,
            time_zone: "UTC".into(),
            queues: vec![QUEUE.into()],
            ..Default::default()
        });
        req.metadata_mut().insert("authorization", format!("Bearer {TOKEN_READER}").parse().expect("header"));
        let mut stream = client.watch_kpis(req).await.expect("WatchKpis").into_inner();
        while let Ok(Some(snap)) = stream.message().await {
            let at = Instant::now();
            let waiting = snap.queues.iter().find(|q| q.queue == QUEUE).map_or(0, |q| q.calls_waiting);
            if tx.send((at, waiting)).is_err() {
                return;
            }
        }
    });
}

fn hwm(port: u16) -> Option<f64> {
    http_get(port, "/metrics").and_then(|t| metric(&t, "callkpi_agent_hwm{agent=\"agent-a\"}"))
}

/// Percentile `p` (0-100) of `v`, ms.
fn pct(v: &[Duration], p: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

/// Loopback TCP round trips of 64 bytes: the floor of any request/answer on this machine.
fn tcp_rtts(n: usize) -> Vec<Duration> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; 64];
        for _ in 0..n {
            if s.read_exact(&mut buf).is_err() || s.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [7u8; 64];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&buf).expect("write");
        c.read_exact(&mut buf).expect("read");
        out.push(t.elapsed());
    }
    echo.join().expect("echo thread");
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let samples = env_or("BENCH_WATCH_SAMPLES", 240) as usize;
    let pace = Duration::from_millis(env_or("BENCH_WATCH_PACE_MS", 500));
    let poll_ms = std::env::var("BENCH_WATCH_POLL_MS").ok().and_then(|v| v.parse::<u64>().ok());
    let poll_line = poll_ms.map_or_else(String::new, |ms| format!("poll_interval_ms = {ms}\n"));
    let poll_label = poll_ms.map_or_else(|| "default (200)".to_owned(), |ms| ms.to_string());
    let bins = release_bins();
    println!("load average before: {}", loadavg());
    let setup = Setup::new();
    let ql = setup.path("queue_log");
    std::fs::write(&ql, b"").expect("queue_log");
    let agg_cfg = setup.aggregator_config();
    let mut agg = Proc::start(
        &bins.join("callkpi-aggregator"),
        &["run", "--config", agg_cfg.to_str().expect("utf-8 path")],
        &setup.path("aggregator.log"),
    );
    if eventually(Duration::from_secs(30), || http_get(setup.agg_http, "/healthz")).is_none() {
        panic!("aggregator did not come up:\n{}", agg.log_tail());
    }
    let source = format!("[[sources.queue_log]]\nname = \"ql\"\npath = \"{}\"\n{poll_line}", ql.display());
    let agent_cfg = setup.agent_config("agent-a", TOKEN_A, 64 << 20, &source);
    let mut agent = Proc::start(
        &bins.join("callkpi-agent"),
        &["run", "--config", agent_cfg.to_str().expect("utf-8 path")],
        &setup.path("agent.log"),
    );

    let mut file = std::fs::OpenOptions::new().append(true).open(&ql).expect("queue_log for append");
    let epoch = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Warm-up: the uplink is connected and a first event went through.
    let e = epoch();
    writeln!(file, "{e}|{e}.0|warmup|NONE|ENTERQUEUE||0600000000|1").expect("append");
    writeln!(file, "{e}|{e}.0|warmup|NONE|ABANDON|1|1|0").expect("append");
    if eventually(Duration::from_secs(30), || hwm(setup.agg_http).filter(|h| *h >= 2.0)).is_none() {
        panic!("warm-up events never reached the aggregator:\n{}\n{}", agent.log_tail(), agg.log_tail());
    }

    let rt = common::runtime();
    let (tx_fast, rx_fast) = mpsc::channel();
    let (tx_default, rx_default) = mpsc::channel();
    watcher(&rt, setup.grpc, 50, tx_fast);
    watcher(&rt, setup.grpc, 0, tx_default);
    // Both have their first snapshot before the clock starts.
    for rx in [&rx_fast, &rx_default] {
        rx.recv_timeout(Duration::from_secs(30)).expect("a first snapshot");
    }

    println!(
        "watch_latency: {samples} lines, one every {} ms; agent queue_log poll_interval_ms {poll_label}",
        pace.as_millis()
    );
    let patience = Duration::from_secs(10);
    let (mut fast, mut default, mut stored) = (Vec::new(), Vec::new(), Vec::new());
    let mut missed = 0;
    let mut late_slots = 0;
    let start = Instant::now() + Duration::from_millis(200);
    let mut entered_at = 0;
    for i in 0..samples {
        let slot = start + pace * i as u32;
        let now = Instant::now();
        if slot > now {
            std::thread::sleep(slot - now);
        } else {
            late_slots += 1;
        }
        let before = hwm(setup.agg_http).unwrap_or(0.0);
        let call = format!("1795000000.{}", i / 2);
        let (line, expected) = if i % 2 == 0 {
            entered_at = epoch();
            (format!("{entered_at}|{call}|{QUEUE}|NONE|ENTERQUEUE||06{i:08}|1"), 1)
        } else {
            let e = epoch();
            (format!("{e}|{call}|{QUEUE}|NONE|ABANDON|1|1|{}", e - entered_at), 0)
        };
        // Snapshots from before this line say nothing about it.
        while rx_fast.try_recv().is_ok() {}
        while rx_default.try_recv().is_ok() {}
        let t0 = Instant::now();
        file.write_all(format!("{line}\n").as_bytes()).expect("append");
        let (mut f, mut d, mut s) = (None, None, None);
        while (f.is_none() || d.is_none() || s.is_none()) && t0.elapsed() < patience {
            for (rx, slot) in [(&rx_fast, &mut f), (&rx_default, &mut d)] {
                while let Ok((at, waiting)) = rx.try_recv() {
                    if slot.is_none() && waiting == expected {
                        *slot = Some(at - t0);
                    }
                }
            }
            if s.is_none() && hwm(setup.agg_http).is_some_and(|h| h > before) {
                s = Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        match (f, d, s) {
            (Some(f), Some(d), Some(s)) => {
                fast.push(f);
                default.push(d);
                stored.push(s);
            }
            _ => missed += 1,
        }
    }
    assert_eq!(missed, 0, "lines never reflected within {patience:?}");
    let rtt = tcp_rtts(2000);

    let p50 = |v: &[Duration]| pct(v, 50.0);
    println!();
    println!("| {} samples, poll_interval_ms {poll_label} | p50 ms | p90 ms | p99 ms | max ms |", fast.len());
    println!("|---|---|---|---|---|");
    for (name, v) in [
        ("append -> stored at the aggregator (hwm, polled ~2 ms)", &stored),
        ("append -> WatchKpis snapshot, min_interval_ms 50 (200 effective)", &fast),
        ("append -> WatchKpis snapshot, min_interval_ms default (1 s)", &default),
    ] {
        println!("| {name} | {:.1} | {:.1} | {:.1} | {:.1} |", p50(v), pct(v, 90.0), pct(v, 99.0), pct(v, 100.0));
    }
    println!(
        "| reference: loopback TCP round trip, 64 B (2000) | {:.3} | {:.3} | {:.3} | {:.3} |",
        p50(&rtt),
        pct(&rtt, 90.0),
        pct(&rtt, 99.0),
        pct(&rtt, 100.0)
    );
    println!(
        "snapshot p50 / stored p50: {:.2}; snapshot p50 / TCP RTT p50: {:.0}; slots started late: {late_slots}",
        p50(&fast) / p50(&stored),
        p50(&fast) / p50(&rtt)
    );

    rt.shutdown_timeout(Duration::from_secs(2));
    let code = agent.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0), "agent exits cleanly:\n{}", agent.log_tail());
    let code = agg.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0), "aggregator exits cleanly:\n{}", agg.log_tail());
    println!("load average after: {}", loadavg());
}
