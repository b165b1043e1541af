//! SIP over HEP, live: the real peer of `tests/peers/sip-hep` (Debian's
//! Kamailio proxying 50 sipp calls between sipp callers and sipp agents on
//! loopback) mirrors every SIP message as HEPv3 to a UDP socket this test
//! owns; the datagrams go through `HepPacket` and `SipTracker` as they
//! arrive, and the calls tracked are compared with the ground truth the
//! harness computes from sipp's own logs.
//!
//! Kamailio runs in `core` trace mode here (every datagram in and out,
//! retransmissions included), the committed fixture in `script` mode, so the
//! two tests see different mirroring of the same calls.
//!
//! Needs `kamailio`, `sipp` (Debian `sip-tester`) and `python3`; without
//! them the test writes a SKIPPED line to the terminal and passes, or fails
//! with `CI=true` ([`callkpi_tests::skip`]). It takes about 100 s.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use callkpi_core::event::{EventKind, HangupBy, LeaveReason, NANOS_PER_MS, UnixNanos};
use callkpi_feeds::FeedEvent;
use callkpi_feeds::sip::{AgentEntry, QueueEntry, SipStats, SipTracker, SipTrackerConfig};
use callkpi_tests::{free_port, on_path, repo, skip};
use serde_json::Value;

/// Ring, answer, talk and hold times must match sipp's within this.
const TOLERANCE_MS: i64 = 100;
/// run.sh bounds itself (about 100 s, 180 s at most); this bounds it again.
const HARNESS_DEADLINE: Duration = Duration::from_secs(400);

const TEST: &str = "live_hep_from_kamailio_tells_what_sipp_saw";

/// The harness's agents (kamailio.cfg: 2001 is 127.0.0.3, ...) and its ring group.
fn config() -> SipTrackerConfig {
    SipTrackerConfig {
        agents: (1..=6)
            .map(|n| AgentEntry {
                name: format!("200{n}"),
                address: Some(format!("127.0.0.{}", n + 2).parse().unwrap()),
                extension: None,
            })
            .collect(),
        queues: vec![QueueEntry { name: "group".into(), numbers: vec!["2100".into()], prefixes: vec![] }],
        default_queue: Some("direct".into()),
        ..SipTrackerConfig::default()
    }
}

/// A UDP socket on 127.0.0.1 below the ephemeral range.
fn hep_socket() -> UdpSocket {
    for _ in 0..50 {
        if let Ok(s) = UdpSocket::bind(("127.0.0.1", free_port())) {
            return s;
        }
    }
    panic!("no free UDP port on 127.0.0.1");
}

/// Receives HEP until `stop`, writes each datagram to `raw` (the harness's
/// length-prefixed format, for its own cross-check) and tracks it at once.
fn collect(sock: UdpSocket, raw: &Path, stop: Arc<AtomicBool>) -> (Vec<FeedEvent>, SipStats) {
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut file = std::fs::File::create(raw).unwrap();
    let mut tracker = SipTracker::new(config());
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let d = &buf[..n];
                file.write_all(&u32::try_from(n).unwrap().to_be_bytes()).unwrap();
                file.write_all(d).unwrap();
                file.flush().unwrap();
                tracker.push_datagram(d, None, &mut out);
            }
            Err(_) if stop.load(Ordering::Relaxed) => break,
            Err(_) => {}
        }
    }
    tracker.finish(&mut out);
    (out, *tracker.stats())
}

fn t_ns(v: &Value) -> UnixNanos {
    (v.as_f64().expect("a time") * 1e9).round() as i64
}

fn close(what: &str, call: &str, ours: UnixNanos, theirs: UnixNanos) {
    let d = (ours - theirs) / NANOS_PER_MS;
    assert!(d.abs() <= TOLERANCE_MS, "{call}: {what} differs from sipp's by {d} ms");
}

fn time(e: &FeedEvent) -> UnixNanos {
    e.source_time.expect("HEP time")
}

#[test]
fn live_hep_from_kamailio_tells_what_sipp_saw() {
    let missing: Vec<&str> = ["kamailio", "sipp", "python3"].into_iter().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        let why = format!("{} not installed (apt-get install -y kamailio sip-tester python3)", missing.join(", "));
        skip(TEST, &why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let sock = hep_socket();
    let port = sock.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (raw, stop) = (out.join("hep.raw"), stop.clone());
        std::thread::spawn(move || collect(sock, &raw, stop))
    };

    let log = std::fs::File::create(out.join("run.sh.log")).unwrap();
    let mut harness = Command::new("bash")
        .arg(repo().join("tests/peers/sip-hep/run.sh"))
        .arg(out)
        .env("HEP_PORT", port.to_string())
        .env("HEP_COLLECTOR", "external")
        .env("HEP_MODE", "core")
        .env("NO_TSHARK", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting run.sh");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = harness.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > HARNESS_DEADLINE {
            // run.sh stops what it started on TERM (its trap).
            let _ = Command::new("kill").args(["-TERM", &harness.id().to_string()]).status();
            std::thread::sleep(Duration::from_secs(10));
            let _ = harness.kill();
            let _ = harness.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    stop.store(true, Ordering::Relaxed);
    let (events, stats) = collector.join().expect("collector thread");
    let run_log = std::fs::read_to_string(out.join("run.sh.log")).unwrap_or_default();
    match status {
        Some(s) if s.code() == Some(4) => {
            // Another run (or a system Kamailio) holds the harness's SIP sockets.
            skip(TEST, &format!("the harness's UDP sockets are in use:\n{run_log}"));
            return;
        }
        Some(s) => assert!(s.success(), "run.sh failed ({s}); its log:\n{run_log}"),
        None => panic!("run.sh still running after {HARNESS_DEADLINE:?}; its log:\n{run_log}"),
    }

    let truth: Value = serde_json::from_slice(&std::fs::read(out.join("ground_truth.json")).unwrap()).unwrap();
    let calls = truth["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 56, "the standard mix: 50 calls and 6 transferred legs");
    assert_eq!((stats.hep_errors, stats.sip_errors), (0, 0), "{stats:?}");
    assert!(stats.datagrams >= 885, "core mode mirrors every datagram: {stats:?}");

    let mut legs: BTreeMap<&str, Vec<&FeedEvent>> = BTreeMap::new();
    for e in &events {
        legs.entry(e.leg_id.as_str()).or_default().push(e);
    }
    let known: BTreeSet<&str> = calls.iter().map(|c| c["call_id"].as_str().unwrap()).collect();
    assert_eq!(legs.keys().copied().collect::<BTreeSet<_>>(), known, "every call, and no other");
    let offered = events.iter().filter(|e| matches!(e.kind, EventKind::CallOffered { .. })).count();
    assert_eq!(offered as u64, truth["summary"]["offered"].as_u64().unwrap(), "each inbound call offered once");

    for c in calls {
        let id = c["call_id"].as_str().unwrap();
        let leg = &legs[id];
        let of = |f: &dyn Fn(&EventKind) -> bool| leg.iter().copied().filter(|e| f(&e.kind)).collect::<Vec<_>>();
        let outcome = c["outcome"].as_str().unwrap();
        let rings = of(&|k| matches!(k, EventKind::Ringing { .. }));
        assert_eq!(rings.len() as u64, c["ring_responses"].as_u64().unwrap(), "{id}: phones ringing");
        if let Some(first) = rings.iter().map(|e| time(e)).min() {
            close("first ring", id, first, t_ns(&c["t_first_ring"]));
        }
        let answered = of(&|k| matches!(k, EventKind::Answered { .. }));
        if c["answered"].as_bool().unwrap() {
            assert_eq!(answered.len(), 1, "{id}: answered once");
            let want = format!(
                "200{}",
                c["agent_ip"].as_str().unwrap().rsplit('.').next().unwrap().parse::<u8>().unwrap() - 2
            );
            assert!(matches!(&answered[0].kind, EventKind::Answered { agent, .. } if *agent == want), "{id}");
            close("answer", id, time(answered[0]), t_ns(&c["t_answer"]));
        } else {
            assert!(answered.is_empty(), "{id}: not answered");
        }
        let hangups = of(&|k| matches!(k, EventKind::Hangup { .. }));
        match outcome {
            "answered" => {
                assert_eq!(hangups.len(), 1, "{id}");
                let by = if c["hangup_by"] == "caller" { HangupBy::Caller } else { HangupBy::Agent };
                assert!(matches!(&hangups[0].kind, EventKind::Hangup { by: b, .. } if *b == by), "{id}: who hung up");
                let talk = time(hangups[0]) - time(answered[0]);
                close("talk", id, talk, (c["talk_s"].as_f64().unwrap() * 1e9).round() as i64);
            }
            "transferred" => {
                assert!(hangups.is_empty(), "{id}: the segment ends with the transfer");
                let t = of(&|k| matches!(k, EventKind::Transfer { .. }));
                assert_eq!(t.len(), 1, "{id}");
                close("REFER", id, time(t[0]), t_ns(&c["t_refer"]));
            }
            _ => {
                let leave = of(&|k| matches!(k, EventKind::QueueLeave { .. }));
                assert_eq!(leave.len(), 1, "{id}");
                let want = match outcome {
                    "abandoned" => LeaveReason::Abandon,
                    "no_answer" => LeaveReason::Timeout,
                    "busy" | "unavailable" => LeaveReason::LeaveEmpty,
                    "not_found" => LeaveReason::JoinEmpty,
                    other => panic!("{id}: unexpected outcome {other} (an incomplete sipp call?)"),
                };
                assert!(matches!(&leave[0].kind, EventKind::QueueLeave { reason, .. } if *reason == want), "{id}");
                close("end", id, time(leave[0]), t_ns(&c["t_end"]));
            }
        }
        if !c["hold_s"].is_null() {
            let h = of(&|k| matches!(k, EventKind::Hold { .. }));
            let r = of(&|k| matches!(k, EventKind::Resume { .. }));
            assert_eq!((h.len(), r.len()), (1, 1), "{id}: one hold, one resume");
            close("hold", id, time(h[0]), t_ns(&c["t_hold"]));
            close("resume", id, time(r[0]), t_ns(&c["t_resume"]));
        }
        if c["kind"] == "transfer_leg" {
            let from = c["referred_from"].as_str().unwrap();
            assert!(leg.iter().all(|e| e.call_id == from), "{id}: a leg of {from}");
        }
    }
}
