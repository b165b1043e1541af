//! `callkpi analyze` on Asterisk inputs, through the binary: Asterisk's own
//! figures from both feeds of the real run-b recording, a queue_log split by
//! rotation, and DB-export CSVs of known and unknown layouts.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(run: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/asterisk").join(run).join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callkpi"))
        .arg("analyze")
        .args(args)
        .args(["--format", "json", "--interval", "all"])
        .output()
        .expect("run callkpi")
}

fn analyze(args: &[&str]) -> Value {
    let out = run(args);
    assert!(out.status.success(), "callkpi analyze failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// The kpis of the row of `queue`.
fn queue_row<'a>(out: &'a Value, queue: &str) -> &'a Value {
    out["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["group"]["queue"] == queue)
        .map(|r| &r["kpis"])
        .unwrap_or_else(|| panic!("no row for {queue}"))
}

/// run-b's support queue: Asterisk printed Completed 6, Abandoned 4 (two
/// abandons, two Queue() timeouts), ServicelevelPerf2 90.0 within 20 s.
#[test]
fn run_b_asterisk_perf2_from_both_feeds() {
    for feed in ["--queue-log", "--ami"] {
        let file = fixture("run-b", if feed == "--ami" { "ami.log" } else { "queue_log" });
        let out = analyze(&[
            feed,
            file.to_str().unwrap(),
            "--by",
            "queue",
            "--sl-threshold",
            "20",
            "--sl-formula",
            "asterisk-perf2",
        ]);
        let k = queue_row(&out, "support");
        assert_eq!(k["asterisk_completed"], 6, "{feed}");
        assert_eq!(k["asterisk_abandoned"], 4, "{feed}");
        assert_eq!(k["service_level_pct"]["20"], 90.0, "{feed}");
        assert_eq!(k["timed_out"], 2, "{feed}: Queue() timeouts are not abandons");
        assert_eq!(out["params"]["sl_formula"], "asterisk-perf2");
    }
}

/// A queue_log rotated in the middle of calls, given as two files: the
/// same figures as the whole file.
#[test]
fn rotated_queue_log_gives_the_same_figures() {
    let whole = std::fs::read_to_string(fixture("run-a", "queue_log")).expect("queue_log");
    let lines: Vec<&str> = whole.lines().collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("queue_log.1"), dir.path().join("queue_log"));
    let mid = lines.len() / 2;
    std::fs::write(&a, lines[..mid].join("\n") + "\n").expect("write");
    std::fs::write(&b, lines[mid..].join("\n") + "\n").expect("write");
    let args = ["--by", "queue"];
    let one = analyze(&[&["--queue-log", fixture("run-a", "queue_log").to_str().unwrap()], &args[..]].concat());
    let two = analyze(&[&["--queue-log", a.to_str().unwrap(), "--queue-log", b.to_str().unwrap()], &args[..]].concat());
    for queue in ["support", "sales"] {
        assert_eq!(queue_row(&one, queue), queue_row(&two, queue), "{queue}");
    }
    assert_eq!(queue_row(&two, "support")["entered"], 40);
}

/// A DB export with a header callkpi does not know is an error naming its
/// columns and the layouts expected; `--csv-columns` reads it.
#[test]
fn csv_with_unknown_header_fails_and_csv_columns_reads_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("export.csv");
    std::fs::write(
        &path,
        "ts,uid,qname,member,action,f1,f2,f3\n\
         1795356000,1.1,support,NONE,ENTERQUEUE,,0612,1\n\
         1795356008,1.1,support,Alice,CONNECT,8,1.2,3\n\
         1795356068,1.1,support,Alice,COMPLETEAGENT,8,60,1\n",
    )
    .expect("write");
    let out = run(&["--queue-log", path.to_str().unwrap()]);
    assert!(!out.status.success(), "an unknown header must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    for want in ["ts, uid, qname, member, action", "queuename", "time_id", "--csv-columns"] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    let out = analyze(&[
        "--queue-log",
        path.to_str().unwrap(),
        "--csv-columns",
        "time=ts,callid=uid,queue=qname,agent=member,verb=action,data=f1;f2;f3",
        "--by",
        "queue",
    ]);
    let k = queue_row(&out, "support");
    assert_eq!((k["entered"].as_u64(), k["answered"].as_u64()), (Some(1), Some(1)));
    assert_eq!(k["asa_s"], 8.0);
    assert_eq!(out["unparsed"], serde_json::json!({}));
    let bad = run(&["--queue-log", path.to_str().unwrap(), "--csv-columns", "time=ts"]);
    assert!(!bad.status.success(), "a spec without verb is refused");
}

/// RINGNOANSWER with ring time 0 (the member's device refused at once) is a
/// missed offer of no ring time; the caller's wait and the answer that
/// follows are untouched.
#[test]
fn ring_no_answer_of_zero_ms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("queue_log");
    std::fs::write(
        &path,
        "1795356000|z1|support|NONE|ENTERQUEUE||0612|1\n\
         1795356000|z1|support|Bob|RINGNOANSWER|0\n\
         1795356010|z1|support|Carla|RINGNOANSWER|10000\n\
         1795356014|z1|support|Alice|CONNECT|14|z1.9|4\n\
         1795356074|z1|support|Alice|COMPLETEAGENT|14|60|1\n",
    )
    .expect("write");
    let out = analyze(&["--queue-log", path.to_str().unwrap(), "--by", "agent"]);
    let row = |agent: &str| {
        out["rows"].as_array().unwrap().iter().find(|r| r["group"]["agent"] == agent).map(|r| &r["kpis"]).unwrap()
    };
    assert_eq!(
        (row("Bob")["missed_offers"].as_u64(), row("Bob")["missed_offer_ring_s"].as_f64()),
        (Some(1), Some(0.0))
    );
    assert_eq!(row("Carla")["missed_offer_ring_s"], 10.0);
    let out = analyze(&["--queue-log", path.to_str().unwrap()]);
    let k = &out["rows"][0]["kpis"];
    assert_eq!((k["answered"].as_u64(), k["asa_s"].as_f64()), (Some(1), Some(14.0)));
}
