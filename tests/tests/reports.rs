//! Reports end to end: what `callkpi analyze` computes offline from a
//! recording equals what `callkpi report` reads from an aggregator the same
//! recording was delivered to by a real agent; readers need credentials;
//! `callkpi calls`/`callkpi call` list the recording's calls and timelines
//! as its ground truth says; and rows an offline office has not delivered
//! stay incomplete, naming it and how far behind it is, until it does.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callkpi_tests::*;
use serde_json::Value;

fn callkpi(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin_dir().join("callkpi")).args(args).output().expect("running callkpi");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rows of a JSON report, as values, without the `fcr_provisional` flag:
/// whether the FCR window has closed depends on "now", which is the end of
/// the input offline and the wall clock live (days after the recording).
fn rows(json: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
    let mut rows = v["rows"].as_array().expect("rows").clone();
    for r in &mut rows {
        if let Some(flags) = r["flags"].as_array_mut() {
            flags.retain(|f| f != "fcr_provisional");
        }
    }
    rows
}

/// Delivers run-a's queue_log through a real agent to an aggregator with
/// `kpi` settings, then holds `callkpi report` against `callkpi analyze`.
fn deliver_run_a(s: &Setup, kpi: &str) -> (Proc, Proc, std::path::PathBuf) {
    let file = s.path("queue_log");
    std::fs::copy(fixture("asterisk/run-a/queue_log"), &file).unwrap();
    let cfg = s.agent_config("agent-a", TOKEN_A, 64 << 20, &s.queue_log_source(&file));
    let agg = s.aggregator_with(kpi);
    let agent = s.agent(&cfg);
    let n = queue_log_signatures(&std::fs::read(&file).unwrap()).len();
    s.wait_for_hwm("agent-a", n, Duration::from_secs(30), &[&agent, &agg]);
    // Let a heartbeat tell the aggregator the agent's spool is delivered.
    std::thread::sleep(Duration::from_millis(2500));
    (agg, agent, file)
}

fn assert_report_equals_analyze(s: &Setup, agg: &Proc, file: &std::path::Path) {
    let server = format!("http://127.0.0.1:{}", s.grpc);
    let file_s = file.to_str().unwrap();
    for opts in [
        // `report` defaults to today: both are given the recording's day.
        vec!["--by", "queue", "--interval", "15m", "--tz", "Europe/Paris", "--from", "2026-11-22T00:00:00+01:00"],
        // "all" without --to runs to now: bound it so both see the same range.
        vec![
            "--by",
            "queue,agent",
            "--interval",
            "all",
            "--from",
            "2026-11-22T14:00:00Z",
            "--to",
            "2026-11-22T15:00:00Z",
            "--sl-threshold",
            "20,30",
            "--short-abandon",
            "0",
        ],
        vec![
            "--by",
            "agent",
            "--interval",
            "1h",
            "--fcr-window",
            "1h",
            "--fcr-transfer-breaks",
            "false",
            "--from",
            "2026-11-22T00:00:00Z",
        ],
    ] {
        let mut offline = vec!["analyze", "--queue-log", file_s, "--site", "paris", "--format", "json"];
        offline.extend(&opts);
        let (code, out, err) = callkpi(&offline);
        assert_eq!(code, 0, "analyze failed: {err}");
        let mut live = vec!["report", "--server", &server, "--token", TOKEN_READER, "--format", "json"];
        live.extend(&opts);
        let (code, live_out, err) = callkpi(&live);
        assert_eq!(code, 0, "report failed: {err}\n{}", tail(&agg.log_text()));
        let (a, b) = (rows(&out), rows(&live_out));
        assert!(!a.is_empty(), "{opts:?}: no rows");
        assert_eq!(a.len(), b.len(), "{opts:?}: row count");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "{opts:?}: rows differ");
        }
    }
}

fn kpi_metric(s: &Setup, name: &str) -> f64 {
    let text = http_get(s.agg_http, "/metrics").expect("metrics");
    metric(&text, name).unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn offline_analysis_and_the_aggregator_give_identical_rows() {
    let s = Setup::new();
    let (mut agg, mut agent, file) = deliver_run_a(&s, "");
    assert_report_equals_analyze(&s, &agg, &file);
    agent.terminate(Duration::from_secs(15));
    agg.terminate(Duration::from_secs(15));
}

/// With a zero horizon every finished call is sealed into the rollups as
/// soon as it ends; the figures are the same, and stay the same when the
/// aggregator restarts from its checkpoint instead of replaying the store.
#[test]
fn every_call_sealed_and_a_restart_give_the_same_rows() {
    let s = Setup::new();
    let kpi = "[kpi]\nseal_horizon_s = 0\ncheckpoint_interval_ms = 100\n";
    let (mut agg, mut agent, file) = deliver_run_a(&s, kpi);
    // run-a has 49 calls; those still talking at the end of the recording stay open.
    let sealed = eventually(Duration::from_secs(20), || {
        let n = kpi_metric(&s, "callkpi_kpi_calls_sealed");
        (n >= 40.0).then_some(n)
    });
    assert!(sealed.is_some(), "calls were not sealed: {}", kpi_metric(&s, "callkpi_kpi_calls_sealed"));
    assert!(kpi_metric(&s, "callkpi_kpi_open_calls") <= 9.0);
    assert_report_equals_analyze(&s, &agg, &file);

    agg.terminate(Duration::from_secs(15));
    let agg = s.aggregator_with(kpi);
    assert!(agg.log_text().contains("resumed from its checkpoint"), "{}", tail(&agg.log_text()));
    // Nothing was replayed into memory: the open window is what it was.
    assert!(kpi_metric(&s, "callkpi_kpi_open_calls") <= 9.0);
    assert_report_equals_analyze(&s, &agg, &file);
    let mut agg = agg;
    agent.terminate(Duration::from_secs(15));
    agg.terminate(Duration::from_secs(15));
}

/// Retention deletes the raw events and the call index of a recording
/// older than its window: the KPIs still come from the rollups, unchanged,
/// and asking for a removed call says why it is gone.
#[test]
fn retention_removes_raw_events_and_calls_but_not_the_kpis() {
    let s = Setup::new();
    // run-a is from 2026-11-22: more than 10 days before any run of this test.
    let kpi = "[kpi]\nseal_horizon_s = 0\nunknown_end_timeout_s = 60\ncheckpoint_interval_ms = 100\n\n\
               [retention]\nraw_events_days = 10\ncalls_days = 10\ninterval_s = 1\n";
    let (mut agg, mut agent, file) = deliver_run_a(&s, kpi);
    let deleted = eventually(Duration::from_secs(30), || {
        let text = http_get(s.agg_http, "/metrics")?;
        let events = metric(&text, "callkpi_retention_events_deleted_total")?;
        let calls = metric(&text, "callkpi_retention_calls_deleted_total")?;
        (events >= 170.0 && calls >= 49.0).then_some((events, calls))
    });
    assert!(deleted.is_some(), "retention did not run:\n{}", tail(&agg.log_text()));
    assert_report_equals_analyze(&s, &agg, &file);

    let server = format!("http://127.0.0.1:{}", s.grpc);
    let conn = ["--server", server.as_str(), "--token", TOKEN_READER];
    let mut list = vec!["calls"];
    list.extend(conn);
    list.extend(["--format", "json"]);
    let (code, out, err) = callkpi(&list);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["calls"].as_array().map(Vec::len), Some(0), "{out}");
    let call_id = truth()["calls"][0]["callid"].as_str().unwrap().to_owned();
    let mut one = vec!["call", call_id.as_str()];
    one.extend(conn);
    let (code, _, err) = callkpi(&one);
    assert_ne!(code, 0);
    assert!(err.contains("removed by retention"), "{err}");
    agent.terminate(Duration::from_secs(15));
    agg.terminate(Duration::from_secs(15));
}

#[test]
fn nothing_sealed_gives_the_same_rows() {
    let s = Setup::new();
    let (mut agg, mut agent, file) =
        deliver_run_a(&s, "[kpi]\nseal_horizon_s = 315360000\n\n[retention]\nraw_events_days = 0\n");
    assert_report_equals_analyze(&s, &agg, &file);
    assert_eq!(kpi_metric(&s, "callkpi_kpi_calls_sealed"), 0.0);
    agent.terminate(Duration::from_secs(15));
    agg.terminate(Duration::from_secs(15));
}

#[test]
fn readers_need_their_own_credentials() {
    let s = Setup::new();
    let mut agg = s.aggregator();
    let server = format!("http://127.0.0.1:{}", s.grpc);
    for token in ["wrong-token", TOKEN_A] {
        let (code, _, err) = callkpi(&["report", "--server", &server, "--token", token, "--format", "json"]);
        assert_ne!(code, 0, "token {token:?} must be refused");
        assert!(err.contains("Unauthenticated") || err.contains("unauthenticated"), "{err}");
    }
    let (code, out, err) = callkpi(&["report", "--server", &server, "--token", TOKEN_READER, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(rows(&out).is_empty(), "an empty aggregator has no rows");
    agg.terminate(Duration::from_secs(15));
}

#[test]
fn watch_kpis_pushes_a_change_within_seconds() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use std::sync::mpsc;

    let s = Setup::new();
    let file = s.path("queue_log");
    std::fs::write(&file, b"").unwrap();
    let cfg = s.agent_config("agent-a", TOKEN_A, 64 << 20, &s.queue_log_source(&file));
    let mut agg = s.aggregator();
    let mut agent = s.agent(&cfg);
    let server = format!("http://127.0.0.1:{}", s.grpc);
    let mut watch = Command::new(bin_dir().join("callkpi"))
        .args(["watch", "--server", &server, "--token", TOKEN_READER, "--format", "json", "--count", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("callkpi watch");
    let (tx, rx) = mpsc::channel::<Value>();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(serde_json::from_str(&line).expect("a JSON snapshot")).is_err() {
                return;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("a first snapshot");
    let queue = |snap: &Value| snap["queues"].as_array().unwrap().iter().find(|q| q["queue"] == "support").cloned();
    assert!(queue(&first).is_none_or(|q| q["calls_waiting"] == 0), "{first}");

    // A caller enters the support queue now.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
    writeln!(f, "{now}|live-1|support|NONE|ENTERQUEUE||0611223344|1").unwrap();
    let started = std::time::Instant::now();
    let second = rx.recv_timeout(Duration::from_secs(10)).expect("a snapshot after the caller entered");
    let latency = started.elapsed();
    let q = queue(&second).unwrap_or_else(|| panic!("support appears: {second}"));
    assert_eq!(q["calls_waiting"], 1, "{second}");

    // An agent answers: nobody waits, one answered today.
    writeln!(f, "{}|live-1|support|Alice|CONNECT|2|live-1.2|1", now + 2).unwrap();
    let third = rx.recv_timeout(Duration::from_secs(10)).expect("a snapshot after the answer");
    let q = queue(&third).unwrap();
    assert_eq!(q["calls_waiting"], 0, "{third}");
    assert_eq!(q["answered_today"], 1, "{third}");
    assert_eq!(q["agents_busy"], 1, "{third}");
    assert!(latency < Duration::from_secs(10), "change pushed in {latency:?}");
    let status = watch.wait().unwrap();
    assert!(status.success(), "watch exits after --count snapshots");
    agent.terminate(Duration::from_secs(15));
    agg.terminate(Duration::from_secs(15));
}

// === calls ===

/// The recording's ground truth.
fn truth() -> Value {
    let text = std::fs::read_to_string(fixture("asterisk/run-a/truth.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// What a queue_log outcome says about a queue visit, with the aggregator's
/// default short-abandon threshold (5 s).
fn visit_outcome(leg: &Value) -> &'static str {
    match leg["outcome"].as_str().unwrap() {
        "ABANDON" if leg["wait"].as_u64().unwrap() <= 5 => "short_abandoned",
        "ABANDON" => "abandoned",
        "EXITWITHTIMEOUT" => "timeout",
        "COMPLETEAGENT" | "COMPLETECALLER" | "BLINDTRANSFER" | "ATTENDEDTRANSFER" => "answered",
        other => panic!("outcome {other} not in run-a's truth"),
    }
}

#[test]
fn calls_and_timelines_of_the_recording_match_its_truth() {
    calls_and_timelines_match_truth("");
}

/// The same, from the sealed-call index and the raw events read back.
#[test]
fn sealed_calls_and_timelines_match_the_truth() {
    calls_and_timelines_match_truth("[kpi]\nseal_horizon_s = 0\ncheckpoint_interval_ms = 100\n");
}

fn calls_and_timelines_match_truth(kpi: &str) {
    let s = Setup::new();
    let file = s.path("queue_log");
    std::fs::copy(fixture("asterisk/run-a/queue_log"), &file).unwrap();
    let input = std::fs::read(&file).unwrap();
    let cfg = s.agent_config("agent-a", TOKEN_A, 64 << 20, &s.queue_log_source(&file));
    let mut agg = s.aggregator_with(kpi);
    let mut agent = s.agent(&cfg);
    s.wait_for_hwm("agent-a", queue_log_signatures(&input).len(), Duration::from_secs(30), &[&agent, &agg]);
    if !kpi.is_empty() {
        let sealed =
            eventually(Duration::from_secs(20), || (kpi_metric(&s, "callkpi_kpi_calls_sealed") >= 40.0).then_some(()));
        assert!(sealed.is_some(), "calls were not sealed");
    }
    let server = format!("http://127.0.0.1:{}", s.grpc);
    let conn = ["--server", server.as_str(), "--token", TOKEN_READER];
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args[..1].to_vec();
        all.extend(conn);
        all.extend(&args[1..]);
        let (code, out, err) = callkpi(&all);
        assert_eq!(code, 0, "callkpi {args:?} failed: {err}\n{}", tail(&agg.log_text()));
        out
    };

    let truth = truth();
    let calls = truth["calls"].as_array().unwrap();
    let ids: std::collections::BTreeSet<&str> = calls.iter().map(|c| c["callid"].as_str().unwrap()).collect();

    // Every call, in pages of 7, newest first, each once.
    let listed = json(&run(&["calls", "--limit", "0", "--page-size", "7", "--format", "json"]));
    assert_eq!(listed["truncated"], false);
    let listed = listed["calls"].as_array().unwrap().clone();
    assert_eq!(listed.len(), ids.len(), "one call per distinct call id of the truth");
    let got: std::collections::BTreeSet<&str> = listed.iter().map(|c| c["call_id"].as_str().unwrap()).collect();
    assert_eq!(got, ids);
    let starts: Vec<i64> = listed.iter().map(|c| c["start_ns"].as_i64().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert!(listed.iter().all(|c| c["site"] == "paris"));

    // --limit stops early and says so; filters.
    let first = json(&run(&["calls", "--limit", "5", "--page-size", "2", "--format", "json"]));
    assert_eq!(first["truncated"], true);
    assert_eq!(first["calls"].as_array().unwrap()[..], listed[..5]);
    let in_sales = json(&run(&["calls", "--queue", "sales", "--limit", "0", "--format", "json"]));
    let want_sales =
        calls.iter().filter(|c| c["legs"].as_array().unwrap().iter().any(|l| l["queue"] == "sales")).count();
    assert_eq!(in_sales["calls"].as_array().unwrap().len(), want_sales);
    // Alice's calls: those she answered or rang for, by the queue_log itself.
    let text = String::from_utf8_lossy(&input);
    let alice: std::collections::BTreeSet<&str> = text
        .lines()
        .map(|l| l.split('|').collect::<Vec<_>>())
        .filter(|f| {
            f.len() > 4 && f[3] == "Alice Martin" && ["CONNECT", "RINGNOANSWER", "RINGCANCELED"].contains(&f[4])
        })
        .map(|f| f[1])
        .collect();
    let by_alice = json(&run(&["calls", "--agent", "Alice Martin", "--limit", "0", "--format", "json"]));
    let got: std::collections::BTreeSet<&str> =
        by_alice["calls"].as_array().unwrap().iter().map(|c| c["call_id"].as_str().unwrap()).collect();
    assert_eq!(got, alice);
    let csv = run(&["calls", "--limit", "0", "--format", "csv"]);
    assert_eq!(csv.lines().count(), ids.len() + 1, "a header and one line per call");

    // Each call's timeline against the truth and the queue_log lines of that call.
    let sigs = queue_log_signatures(&input);
    for c in calls {
        let id = c["callid"].as_str().unwrap();
        let legs = c["legs"].as_array().unwrap();
        let t = json(&run(&["call", id, "--format", "json"]));
        let sum = &t["summary"];
        assert_eq!(sum["call_id"], id);
        assert_eq!(sum["caller"], c["caller_num"], "{id}");
        assert_eq!(sum["first_queue"], legs[0]["queue"], "{id}");
        assert_eq!(sum["outcome"], visit_outcome(legs.last().unwrap()), "{id}");
        let waited: u64 = legs.iter().map(|l| l["wait"].as_u64().unwrap()).sum();
        assert_eq!(sum["wait_s"].as_f64(), Some(waited as f64), "{id}");
        let talked: u64 = legs.iter().filter_map(|l| l["talk"].as_u64()).sum();
        assert_eq!(sum["talk_s"].as_f64(), Some(talked as f64), "{id}");
        let mut agents: Vec<&str> = legs.iter().filter_map(|l| l["agent"].as_str()).collect();
        agents.dedup();
        assert_eq!(sum["agents"], serde_json::json!(agents), "{id}");
        let transfers = legs.iter().filter(|l| l["outcome"].as_str().unwrap().ends_with("TRANSFER")).count();
        assert_eq!(sum["transfers"], transfers, "{id}");

        // Queue visits, one per leg, in order.
        let visits = t["visits"].as_array().unwrap();
        assert_eq!(visits.len(), legs.len(), "{id}");
        for (v, l) in visits.iter().zip(legs) {
            assert_eq!(v["queue"], l["queue"], "{id}");
            assert_eq!(v["enter_ns"].as_i64(), Some(l["enter_ts"].as_i64().unwrap() * 1_000_000_000), "{id}");
            assert_eq!(v["outcome"], visit_outcome(l), "{id}");
            assert_eq!(v["wait_ms"].as_u64(), Some(l["wait"].as_u64().unwrap() * 1000), "{id}");
        }
        // Agent segments, one per answered leg.
        let answered: Vec<&Value> = legs.iter().filter(|l| l["agent"].is_string()).collect();
        let segments = t["segments"].as_array().unwrap();
        assert_eq!(segments.len(), answered.len(), "{id}");
        for (seg, l) in segments.iter().zip(answered) {
            assert_eq!((&seg["agent"], &seg["queue"]), (&l["agent"], &l["queue"]), "{id}");
            assert_eq!(seg["talk_ms"].as_u64(), Some(l["talk"].as_u64().unwrap() * 1000), "{id}");
            assert_eq!(seg["ring_ms"].as_u64(), Some(l["ring_seconds"].as_u64().unwrap() * 1000), "{id}");
            let outcome = l["outcome"].as_str().unwrap();
            assert_eq!(seg["transferred"], outcome.ends_with("TRANSFER"), "{id}");
            let by = match outcome {
                "COMPLETEAGENT" => "agent",
                "COMPLETECALLER" => "caller",
                _ => "unknown",
            };
            assert_eq!(seg["ended_by"], by, "{id}");
        }
        // Every event of the call, in time order: exactly what its queue_log lines map to.
        let events: Vec<callkpi_core::event::Event> = t["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| serde_json::from_value(e.clone()).unwrap_or_else(|err| panic!("{id}: event {e}: {err}")))
            .collect();
        assert!(events.windows(2).all(|w| w[0].kpi_time() <= w[1].kpi_time()), "{id}: events in time order");
        let mut got: Vec<Signature> =
            events.iter().map(|e| (e.call_id.clone(), e.time.source_time, format!("{:?}", e.kind))).collect();
        got.sort();
        let want: Vec<Signature> = sigs.iter().filter(|(call, _, _)| call == id).cloned().collect();
        assert_eq!(got, want, "{id}: the call's events");
    }

    // The table names the call and its events; unknown ids are NOT_FOUND.
    let some = calls[2]["callid"].as_str().unwrap();
    let table = run(&["call", some, "--tz", "Europe/Paris"]);
    assert!(table.contains(&format!("Call {some} at paris")), "{table}");
    assert!(table.contains("queue_join") && table.contains("answered"), "{table}");
    let (code, _, err) = callkpi(&["call", "no-such-call", "--server", &server, "--token", TOKEN_READER]);
    assert_eq!(code, 1);
    assert!(err.contains("NotFound"), "{err}");
    agent.terminate(Duration::from_secs(15));
    agg.terminate(Duration::from_secs(15));
}

// === completeness ===

/// What the relay standing for an office's WAN link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkMode {
    /// Bytes flow both ways.
    Up,
    /// Connections are accepted and dropped at once.
    Down,
    /// The office's bytes reach the aggregator, nothing comes back: the
    /// agent's Hello (with its spool range) is heard, its Welcome never
    /// arrives, so its backlog stays in its spool.
    HalfOpen,
}

/// A TCP relay on 127.0.0.1 in front of the aggregator, for one agent.
/// Changing its mode cuts every connection it carries.
struct Link {
    port: u16,
    /// The mode and the sockets of the connections made in it, under one
    /// lock so that no connection outlives a mode change.
    state: Arc<Mutex<(LinkMode, Vec<TcpStream>)>>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Link {
    fn start(target: u16) -> Link {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the relay");
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new((LinkMode::Up, Vec::new())));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stopped) = (Arc::clone(&state), Arc::clone(&stop));
        let accept = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let Ok((office, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let mut guard = st.lock().unwrap();
                let (mode, conns) = &mut *guard;
                if *mode == LinkMode::Down {
                    continue;
                }
                let Ok(central) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                office.set_nonblocking(false).unwrap();
                conns.push(office.try_clone().unwrap());
                conns.push(central.try_clone().unwrap());
                let (up, down) = (office.try_clone().unwrap(), central.try_clone().unwrap());
                let answers = *mode == LinkMode::Up;
                std::thread::spawn(move || pump(up, central, true));
                std::thread::spawn(move || pump(down, office, answers));
            }
        });
        Link { port, state, stop, accept: Some(accept) }
    }

    fn set(&self, mode: LinkMode) {
        let mut guard = self.state.lock().unwrap();
        guard.0 = mode;
        for s in guard.1.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.set(LinkMode::Down);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Copies `from` to `to` (or reads and drops when not `forward`) until either ends.
fn pump(mut from: TcpStream, mut to: TcpStream, forward: bool) {
    use std::io::{Read, Write};
    let mut buf = [0_u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if forward => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Ok(_) => {}
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// `secs` since the epoch as the report's RFC 3339 in UTC.
fn utc(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .expect("a time within jiff's range")
        .strftime("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}

/// queue_log lines of a call answered by `agent` after `wait` s, talking `talk` s.
fn answered_call(id: &str, queue: &str, agent: &str, at: i64, wait: i64, talk: i64) -> String {
    format!(
        "{at}|{id}|{queue}|NONE|ENTERQUEUE||0600000000|1\n\
         {c}|{id}|{queue}|{agent}|CONNECT|{wait}|{id}.9|2\n\
         {e}|{id}|{queue}|{agent}|COMPLETEAGENT|{wait}|{talk}|1\n",
        c = at + wait,
        e = at + wait + talk,
    )
}

fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn an_office_offline_across_two_intervals_leaves_them_incomplete_until_it_delivers() {
    let s = Setup::new();
    let link = Link::start(s.grpc);
    // Three quarter hours two hours ago: I0 = [base - 15 min, base), I1, I2.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let base = now / 900 * 900 - 7200;
    let (i0, i1, i2) = (utc(base - 900), utc(base), utc(base + 900));

    // Paris (agent A, direct) has a call in I1 and one in I2. Lyon (agent B,
    // behind the relay) has a call in I0 whose last event is exactly at the
    // start of I1.
    let (paris_log, lyon_log) = (s.path("paris.queue_log"), s.path("lyon.queue_log"));
    let paris_calls = answered_call("700.1", "support", "Paul Paris", base + 60, 10, 60)
        + &answered_call("700.2", "support", "Paul Paris", base + 960, 10, 60);
    std::fs::write(&paris_log, &paris_calls).unwrap();
    std::fs::write(
        &lyon_log,
        format!(
            "{}|800.0|support|NONE|ENTERQUEUE||0700000000|1\n{base}|800.0|support|NONE|ABANDON|1|1|60\n",
            base - 60
        ),
    )
    .unwrap();
    let cfg_a = s.agent_config("agent-a", TOKEN_A, 64 << 20, &s.queue_log_source(&paris_log));
    let lyon_http = free_port();
    let at = AgentAt { site: "lyon", uplink: link.port, http: lyon_http };
    let cfg_b = s.agent_config_at("agent-b", TOKEN_B, 64 << 20, &s.queue_log_source(&lyon_log), at);
    let mut agg = s.aggregator();
    let mut agent_a = s.agent(&cfg_a);
    let start_b =
        || Proc::start("callkpi-agent", &["run", "--config", cfg_b.to_str().unwrap()], &s.path("agent-b.log"));
    let mut agent_b = start_b();
    s.wait_for_hwm("agent-a", 6, Duration::from_secs(30), &[&agent_a, &agg]);
    s.wait_for_hwm("agent-b", 2, Duration::from_secs(30), &[&agent_b, &agg]);

    let server = format!("http://127.0.0.1:{}", s.grpc);
    let (from, to) = (i0.clone(), utc(base + 1800));
    let report = |by: &str| {
        let args = [
            "report",
            "--server",
            &server,
            "--token",
            TOKEN_READER,
            "--format",
            "json",
            "--interval",
            "15m",
            "--by",
            by,
            "--from",
            &from,
            "--to",
            &to,
        ];
        let (code, out, err) = callkpi(&args);
        assert_eq!(code, 0, "report failed: {err}\n{}", tail(&agg.log_text()));
        rows(&out)
    };
    let row = |rows: &[Value], start: &str, site: Option<&str>| -> Option<Value> {
        rows.iter().find(|r| r["start"] == start && site.is_none_or(|s| r["group"]["site"] == s)).cloned()
    };
    let all_complete =
        |rows: &[Value]| rows.iter().all(|r| r["complete"] == true && r["behind"] == serde_json::json!([]));

    // Both offices delivered and said so in a heartbeat: every row complete.
    let by_site = eventually(Duration::from_secs(15), || Some(report("site")).filter(|r| all_complete(r)))
        .unwrap_or_else(|| panic!("rows never complete: {:#?}", report("site")));
    assert_eq!(row(&by_site, &i0, Some("lyon")).unwrap()["kpis"]["abandoned"], 1, "{by_site:#?}");
    for start in [&i1, &i2] {
        assert_eq!(row(&by_site, start, Some("paris")).unwrap()["kpis"]["offered"], 1, "{by_site:#?}");
        assert!(row(&by_site, start, Some("lyon")).is_none(), "{by_site:#?}");
    }

    // Lyon's link goes down; it keeps capturing two calls, in I1 and I2,
    // one with the same PBX call id as a Paris call.
    link.set(LinkMode::Down);
    append(
        &lyon_log,
        &(answered_call("700.1", "support", "Lola Lyon", base + 120, 5, 75)
            + &answered_call("800.2", "sales", "Lola Lyon", base + 1020, 5, 75)),
    );
    let spooled = eventually(Duration::from_secs(15), || {
        http_get(lyon_http, "/metrics").and_then(|t| metric(&t, "callkpi_spool_last_seq")).filter(|v| *v == 8.0)
    });
    assert!(spooled.is_some(), "lyon did not spool its calls:\n{}", tail(&agent_b.log_text()));
    // Nobody knows yet: lyon was caught up when last heard of.
    assert!(all_complete(&report("site")), "{:#?}", report("site"));

    // The office restarts (killed by PID) behind a half-open link: its Hello,
    // with 6 events the aggregator lacks, gets through; nothing else does.
    link.set(LinkMode::HalfOpen);
    agent_b.kill9();
    agent_b = start_b();
    let behind = eventually(Duration::from_secs(20), || {
        let r = report("site");
        row(&r, &i1, Some("paris")).filter(|x| x["complete"] == false).map(|_| r)
    })
    .unwrap_or_else(|| panic!("lyon never seen behind: {:#?}\n{}", report("site"), tail(&agent_b.log_text())));
    let lag = |r: &Value| r["behind"].clone();
    // I0 is whole (lyon delivered up to the start of I1); I1 and I2 lack lyon,
    // by the whole interval past its last delivered event.
    assert!(row(&behind, &i0, Some("lyon")).is_some());
    for r0 in behind.iter().filter(|r| r["start"] == i0) {
        assert_eq!((r0["complete"].clone(), lag(r0)), (Value::Bool(true), serde_json::json!([])), "{r0:#}");
    }
    for (start, secs) in [(&i1, 900.0), (&i2, 1800.0)] {
        let r = row(&behind, start, Some("paris")).unwrap();
        assert_eq!(r["complete"], false, "{r:#}");
        assert_eq!(lag(&r), serde_json::json!([{"agent_id": "agent-b", "lag_s": secs}]), "{r:#}");
        assert!(row(&behind, start, Some("lyon")).is_none(), "lyon's calls are not there yet");
    }
    let totals = report("none");
    for start in [&i1, &i2] {
        let r = row(&totals, start, None).unwrap();
        assert_eq!((r["complete"].clone(), r["kpis"]["offered"].clone()), (Value::Bool(false), serde_json::json!(1)));
    }

    // The link comes back: lyon delivers, the rows are complete and corrected.
    link.set(LinkMode::Up);
    s.wait_for_hwm("agent-b", 8, Duration::from_secs(30), &[&agent_b, &agg]);
    let delivered = |r: &[Value]| [&i1, &i2].iter().all(|start| row(r, start, Some("lyon")).is_some());
    let after =
        eventually(Duration::from_secs(15), || Some(report("site")).filter(|r| delivered(r) && all_complete(r)))
            .unwrap_or_else(|| panic!("rows never complete again: {:#?}", report("site")));
    for start in [&i1, &i2] {
        let lyon = row(&after, start, Some("lyon")).unwrap_or_else(|| panic!("no lyon row at {start}: {after:#?}"));
        assert_eq!(
            (lyon["kpis"]["offered"].clone(), lyon["kpis"]["answered"].clone()),
            (serde_json::json!(1), serde_json::json!(1))
        );
        let paris = row(&after, start, Some("paris")).unwrap();
        assert_eq!(paris["kpis"], row(&behind, start, Some("paris")).unwrap()["kpis"], "paris unchanged");
    }
    let totals = report("none");
    for start in [&i1, &i2] {
        let r = row(&totals, start, None).unwrap();
        assert_eq!((r["complete"].clone(), r["kpis"]["offered"].clone()), (Value::Bool(true), serde_json::json!(2)));
    }

    // The same PBX call id at two sites: the timeline needs the site.
    let (code, _, err) = callkpi(&["call", "700.1", "--server", &server, "--token", TOKEN_READER]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("FailedPrecondition") && err.contains("lyon") && err.contains("paris"), "{err}");
    let (code, out, err) =
        callkpi(&["call", "700.1", "--site", "lyon", "--server", &server, "--token", TOKEN_READER, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let t = json(&out);
    assert_eq!(
        (t["summary"]["site"].clone(), t["summary"]["agents"].clone()),
        (serde_json::json!("lyon"), serde_json::json!(["Lola Lyon"]))
    );
    let (code, out, err) =
        callkpi(&["calls", "--site", "lyon", "--server", &server, "--token", TOKEN_READER, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<Value> = json(&out)["calls"].as_array().unwrap().iter().map(|c| c["call_id"].clone()).collect();
    assert_eq!(ids, [serde_json::json!("800.2"), serde_json::json!("700.1"), serde_json::json!("800.0")]);

    agent_b.terminate(Duration::from_secs(15));
    agent_a.terminate(Duration::from_secs(15));
    agg.terminate(Duration::from_secs(15));
}
