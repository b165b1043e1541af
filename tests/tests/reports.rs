//! Reports end to end: what `callkpi analyze` computes offline from a
//! recording equals what `callkpi report` reads from an aggregator the same
//! recording was delivered to by a real agent; and readers need credentials.

use std::process::Command;
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

#[test]
fn offline_analysis_and_the_aggregator_give_identical_rows() {
    let s = Setup::new();
    let file = s.path("queue_log");
    std::fs::copy(fixture("asterisk/run-a/queue_log"), &file).unwrap();
    let cfg = s.agent_config("agent-a", TOKEN_A, 64 << 20, &s.queue_log_source(&file));
    let mut agg = s.aggregator();
    let mut agent = s.agent(&cfg);
    let n = queue_log_signatures(&std::fs::read(&file).unwrap()).len();
    s.wait_for_hwm("agent-a", n, Duration::from_secs(30), &[&agent, &agg]);
    // Let a heartbeat tell the aggregator the agent's spool is delivered.
    std::thread::sleep(Duration::from_millis(2500));

    let server = format!("http://127.0.0.1:{}", s.grpc);
    let file_s = file.to_str().unwrap();
    for opts in [
        vec!["--by", "queue", "--interval", "15m", "--tz", "Europe/Paris"],
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
        vec!["--by", "agent", "--interval", "1h", "--fcr-window", "1h", "--fcr-transfer-breaks", "false"],
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
