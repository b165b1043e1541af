//! `callkpi analyze --esl`: the real FreeSWITCH event-socket recording, and
//! a mod_callcenter call written as FreeSWITCH sends it, through the binary.
//!
//! The recording (tests/fixtures/freeswitch/eventstream.txt) holds a login,
//! a disconnect notice and one `CHANNEL_CREATE`: user 100 calling 101 on the
//! same switch. So analyze reads one event from it and no queue figure.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn recording() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/freeswitch/eventstream.txt")
}

fn analyze(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_callkpi"))
        .arg("analyze")
        .args(args)
        .args(["--format", "json", "--interval", "all"])
        .output()
        .expect("run callkpi");
    assert!(out.status.success(), "callkpi analyze failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[test]
fn the_recording_reads_one_internal_call() {
    let path = recording();
    let out = analyze(&["--esl", path.to_str().unwrap()]);
    let inputs = out["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0]["kind"], "esl");
    assert_eq!(inputs[0]["bytes"].as_u64(), Some(std::fs::metadata(&path).unwrap().len()));
    assert_eq!(inputs[0]["events"].as_u64(), Some(1));
    // Nothing in it is unknown or malformed.
    assert_eq!(out["unparsed"], serde_json::json!({}));
    // No queue was entered and no agent answered: no row counts anything.
    for row in out["rows"].as_array().unwrap() {
        for k in ["entered", "offered", "answered", "abandoned", "handled"] {
            assert_eq!(row["kpis"][k].as_u64(), Some(0), "{k} in {row}");
        }
    }
}

/// One `text/event-plain` frame, values already URL-encoded.
fn frame(headers: &[(&str, &str)]) -> String {
    let mut body: String = headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    body.push('\n');
    format!("Content-Length: {}\nContent-Type: text/event-plain\n\n{body}", body.len())
}

#[test]
fn a_queue_call_gives_its_figures() {
    // 2026-11-22T13:20:00Z + seconds, in microseconds.
    let t = |s: u64| (1_795_356_000_000_000u64 + s * 1_000_000).to_string();
    let cc = |action: &str, s: u64, extra: &[(&str, &str)]| {
        let ts = t(s);
        let mut h = vec![
            ("Event-Name", "CUSTOM"),
            ("Event-Subclass", "callcenter%3A%3Ainfo"),
            ("Event-Date-Timestamp", ts.as_str()),
            ("CC-Queue", "support%40default"),
            ("CC-Action", action),
            ("CC-Member-Session-UUID", "m-1"),
        ];
        h.extend_from_slice(extra);
        frame(&h)
    };
    // Joins at 0 s, Alice answers at 12 s, the bridge ends at 72 s; a
    // second caller gives up after 40 s.
    let alice = [("CC-Agent", "1001%40default"), ("CC-Agent-UUID", "a-1")];
    let mut stream = String::from("Content-Type: auth/request\n\n");
    stream += &cc("member-queue-start", 0, &[("CC-Member-CID-Number", "%2B33612345678")]);
    stream += &cc("agent-offering", 1, &alice);
    stream += &cc("bridge-agent-start", 12, &alice);
    stream += &cc("bridge-agent-end", 72, &alice);
    stream += &frame(&[
        ("Event-Name", "CUSTOM"),
        ("Event-Subclass", "callcenter%3A%3Ainfo"),
        ("Event-Date-Timestamp", &t(100)),
        ("CC-Queue", "support%40default"),
        ("CC-Action", "member-queue-start"),
        ("CC-Member-Session-UUID", "m-2"),
    ]);
    stream += &frame(&[
        ("Event-Name", "CUSTOM"),
        ("Event-Subclass", "callcenter%3A%3Ainfo"),
        ("Event-Date-Timestamp", &t(140)),
        ("CC-Queue", "support%40default"),
        ("CC-Action", "member-queue-end"),
        ("CC-Member-Session-UUID", "m-2"),
        ("CC-Cause", "Cancel"),
        ("CC-Cancel-Reason", "BREAK_OUT"),
        ("Answer-State", "hangup"),
    ]);
    let path = std::env::temp_dir().join(format!("callkpi-esl-{}.txt", std::process::id()));
    std::fs::write(&path, stream).unwrap();
    let out = analyze(&["--esl", path.to_str().unwrap(), "--by", "queue"]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(out["inputs"][0]["events"].as_u64(), Some(6));
    let rows = out["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["group"]["queue"], "support@default");
    let k = &rows[0]["kpis"];
    assert_eq!((k["entered"].as_u64(), k["answered"].as_u64(), k["abandoned"].as_u64()), (Some(2), Some(1), Some(1)));
    assert_eq!(k["asa_s"].as_f64(), Some(12.0));
    assert_eq!(k["talk_s"].as_f64(), Some(60.0));
    assert_eq!(k["abandonment_rate_pct"].as_f64(), Some(50.0));
}

#[test]
fn no_input_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_callkpi")).arg("analyze").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--esl PATH"));
}
