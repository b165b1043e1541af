//! What a user who gets something wrong sees: exit codes a script can rely
//! on (README's table) and one sentence saying what to do, never a Rust
//! debug dump.

use std::path::PathBuf;
use std::process::{Command, Output};

fn callkpi(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callkpi")).args(args).output().expect("runs callkpi")
}

fn fixture(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(rel);
    p.to_str().expect("utf-8 path").to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_bad_option_value_exits_64() {
    let ql = fixture("asterisk/run-a/queue_log");
    for bad in [
        &["--interval", "5m"][..],
        &["--by", "queues"],
        &["--format", "xml"],
        &["--from", "yesterday"],
        &["--tz", "Mars/Olympus"],
        &["--sl-formula", "best"],
        &["--fcr-window", "a week"],
        &["--no-such-option"],
    ] {
        let o = callkpi(&[&["analyze", "--queue-log", &ql][..], bad].concat());
        assert_eq!(o.status.code(), Some(64), "{bad:?}: {}", stderr(&o));
        assert!(!o.stderr.is_empty() && o.stdout.is_empty(), "{bad:?}: a message on stderr only");
    }
    let o = callkpi(&["analyze", "--queue-log", &ql, "--tz", "Mars/Olympus"]);
    assert!(stderr(&o).contains("\"Mars/Olympus\""), "the bad zone is named: {}", stderr(&o));
    // No input at all, and the other subcommands' options.
    assert_eq!(callkpi(&["analyze"]).status.code(), Some(64));
    assert_eq!(callkpi(&["watch", "--format", "xml"]).status.code(), Some(64));
    assert_eq!(callkpi(&["report", "--interval", "5m"]).status.code(), Some(64));
    // Help is no error.
    let help = callkpi(&["call", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("docs/calls.md"), "call --help points to docs/calls.md");
}

#[test]
fn input_in_the_wrong_format_is_one_sentence_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.log");
    std::fs::write(&empty, "").unwrap();
    let binary = dir.path().join("blob.bin");
    std::fs::write(&binary, [0u8, 1, 2, 3, 0, 255, 254, 0, 9, 9, 9, 0]).unwrap();
    let (ami, ql) = (fixture("asterisk/run-a/ami.log"), fixture("asterisk/run-a/queue_log"));
    let pcap = fixture("sip-hep/hep-first-120.pcap");
    let esl = fixture("freeswitch/eventstream.txt");
    for (args, says) in [
        (["--queue-log", &ami], "is it an AMI transcript? try --ami"),
        (["--ami", &ql], "is it an Asterisk queue_log? try --queue-log"),
        (["--queue-log", &pcap], "is it a packet capture? try --hep"),
        (["--ami", &esl], "is it a FreeSWITCH event-socket stream? try --esl"),
        (["--queue-log", empty.to_str().unwrap()], "is empty"),
        (["--esl", binary.to_str().unwrap()], "is a binary file"),
    ] {
        let o = callkpi(&[&["analyze", "--interval", "all"][..], &args].concat());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("Malformed {") && !err.contains("ParseError"), "no debug dump: {err}");
        assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    }
}

#[test]
fn tables_fit_a_screen_and_end_quietly_in_a_pipe() {
    let (ql, ami) = (fixture("asterisk/run-a/queue_log"), fixture("asterisk/run-a/ami.log"));
    let o = callkpi(&["analyze", "--ami", &ami, "--by", "queue", "--interval", "all"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Through AMI, the agents' login time outside any queue is a row of its own, without a call.
    assert!(!out.contains("│ -"), "no empty group row:\n{out}");
    assert!(out.contains("2 rows (1 without a call not shown: --all-rows)"), "{out}");
    let all = callkpi(&["analyze", "--ami", &ami, "--by", "queue", "--interval", "all", "--all-rows"]);
    assert!(String::from_utf8_lossy(&all.stdout).contains("3 rows."), "--all-rows shows it");
    let one = callkpi(&["analyze", "--queue-log", &ql, "--by", "none", "--interval", "all"]);
    assert!(String::from_utf8_lossy(&one.stdout).contains("1 row."), "one row, not '1 rows'");
    assert!(!one.stdout.contains(&0x1b), "no colour codes off a terminal");

    // `analyze | head -1`: the reader goes away; no error, no panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_callkpi"))
        .args(["analyze", "--queue-log", &ql, "--by", "queue,agent", "--interval", "15m", "--all-rows"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "quiet: {}", stderr(&o));
}

#[test]
fn csv_follows_the_table_and_rounds_as_it_does() {
    let ql = fixture("asterisk/run-a/queue_log");
    let base = ["analyze", "--queue-log", &ql, "--by", "queue", "--interval", "all"];
    let csv = callkpi(&[&base[..], &["--format", "csv"]].concat());
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let expected = ["start", "end", "queue", "complete", "flags", "service_level_pct_18", "service_level_pct_20"];
    assert_eq!(header[..7], expected);
    assert_eq!(header[8..12], ["offered", "answered", "abandoned", "abandonment_rate_pct"], "the table's order");
    let json = callkpi(&[&base[..], &["--format", "json"]].concat());
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let sales = lines.find(|l| l.contains(",sales,")).expect("a sales row");
    let cells: Vec<&str> = sales.split(',').collect();
    let asa_col = header.iter().position(|h| *h == "asa_s").unwrap();
    let row = json["rows"].as_array().unwrap().iter().find(|r| r["group"]["queue"] == "sales").unwrap();
    let asa = row["kpis"]["asa_s"].as_f64().unwrap();
    assert_eq!(cells[asa_col], format!("{asa:.2}"), "rounded as the table");
    assert_ne!(format!("{asa}"), format!("{asa:.2}"), "JSON keeps full precision");
}

#[test]
fn every_kpi_and_flag_name_of_json_and_grpc_is_in_the_docs() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let docs = std::fs::read_to_string(root.join("docs/kpis.md")).unwrap();
    let proto = std::fs::read_to_string(root.join("proto/callkpi/v1/reports.proto")).unwrap();
    let ql = fixture("asterisk/run-a/queue_log");
    let json = callkpi(&["analyze", "--queue-log", &ql, "--interval", "all", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let kpis = json["rows"][0]["kpis"].as_object().expect("kpis").keys().cloned();
    let kpis_message = proto.split("message Kpis {").nth(1).and_then(|m| m.split("\n}").next()).expect("message Kpis");
    let grpc = kpis_message.lines().filter_map(|l| {
        let l = l.trim();
        let decl = l.strip_suffix(';')?.split('=').next()?.trim();
        (!l.starts_with("//")).then(|| decl.rsplit(' ').next().unwrap_or_default().to_owned())
    });
    let flags = proto.split_whitespace().filter(|w| w.starts_with("ROW_FLAG_") && *w != "ROW_FLAG_UNSPECIFIED");
    for name in kpis.chain(grpc).chain(flags.map(str::to_owned)) {
        assert!(docs.contains(&format!("`{name}`")), "docs/kpis.md does not name `{name}`");
    }
}
