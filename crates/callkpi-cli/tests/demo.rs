//! `callkpi demo`, the real binary: the bundled recording, replayed through
//! an in-process agent and aggregator, gives the per-queue figures `callkpi
//! analyze` computes from the same file; and Ctrl-C stops everything and
//! removes the demo's data.
//!
//! Each test gives the child its own `TMPDIR`, so that where the demo keeps
//! its data, and that nothing is left there, can be checked.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_callkpi");

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/asterisk/run-a").join(name)
}

/// A child that is killed if the test fails before it exits.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start(tmp: &Path, args: &[&str]) -> Demo {
        let mut child = Command::new(BIN)
            .arg("demo")
            .args(args)
            .env("TMPDIR", tmp)
            .env("CALLKPI_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting callkpi demo");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Demo { child, lines, seen: Vec::new() }
    }

    /// Reads stdout until a line satisfies `f`, for at most `patience`.
    fn wait_line(&mut self, patience: Duration, f: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            self.seen.push(line.clone());
            if f(&line) {
                return Some(line);
            }
        }
    }

    /// Waits for the exit, at most `patience`; the rest of stdout and stderr.
    fn wait(&mut self, patience: Duration) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + patience;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("callkpi demo did not exit within {patience:?}; output so far:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        // The reader thread ends at EOF; collect what it still has.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status, self.seen.join("\n"), stderr)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The rows of a `callkpi analyze`-style table: queue → every cell but the
/// interval (whose start differs: the demo moves the recording to today).
fn table_rows(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with('┌'));
    let header: Vec<String> =
        lines.nth(1).map(|l| l.trim_matches('│').split('┆').map(|c| c.trim().to_owned()).collect()).unwrap_or_default();
    let queue_col = header.iter().position(|h| h == "queue").unwrap_or_else(|| panic!("no queue column:\n{text}"));
    let mut rows = BTreeMap::new();
    for line in lines.take_while(|l| !l.starts_with('└')) {
        if !line.starts_with('│') {
            continue;
        }
        let cells: Vec<String> = line.trim_matches('│').split('┆').map(|c| c.trim().to_owned()).collect();
        assert_eq!(cells.len(), header.len(), "a row with every column: {line}");
        let figures: Vec<String> =
            header.iter().zip(&cells).filter(|(h, _)| *h != "interval").map(|(h, c)| format!("{h}={c}")).collect();
        rows.insert(cells[queue_col].clone(), figures);
    }
    rows
}

/// Members counted in a plain live line: available + busy + wrap-up + paused.
fn support_members(line: &str) -> u64 {
    let Some(agents) = line.split_once("agents ").map(|(_, a)| a) else { return 0 };
    agents.split_whitespace().filter_map(|w| w.parse::<u64>().ok()).sum()
}

fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).expect("read TMPDIR").map(|e| e.expect("entry").path()).collect()
}

#[test]
fn a_fully_replayed_recording_gives_the_figures_of_analyze() {
    let tmp = tempfile::tempdir().unwrap();
    // 6 minutes of calls at 200x: under 2 s of replay, well within 12 s.
    let mut demo = Demo::start(tmp.path(), &["--seconds", "12", "--speed", "200"]);
    let (status, out, err) = demo.wait(Duration::from_secs(50));
    assert!(status.success(), "exit {status:?}\nstdout:\n{out}\nstderr:\n{err}");
    assert!(!out.contains('\x1b'), "no escape sequences when stdout is not a terminal:\n{out}");
    assert!(out.contains("/wallboard/?token="), "the wallboard URL is given:\n{out}");
    assert!(out.contains("callkpi report --server http://127.0.0.1:"), "the gRPC URL is given:\n{out}");
    assert!(out.contains("support: waiting"), "live figures as plain lines:\n{out}");
    assert!(out.contains("has been replayed"), "the recording was replayed in time:\n{out}");

    let final_part =
        out.split_once("Final KPIs per queue").unwrap_or_else(|| panic!("a final table:\n{out}\nstderr:\n{err}")).1;
    let ours = table_rows(final_part);

    let analyze = Command::new(BIN)
        .args(["analyze", "--ami"])
        .arg(fixture("ami.log"))
        .args(["--by", "queue", "--interval", "all"])
        .output()
        .expect("callkpi analyze");
    assert!(analyze.status.success(), "{}", String::from_utf8_lossy(&analyze.stderr));
    let theirs = table_rows(&String::from_utf8_lossy(&analyze.stdout));

    assert!(theirs.contains_key("support") && theirs.contains_key("sales"), "analyze's rows: {theirs:?}");
    assert_eq!(ours, theirs, "the demo's final table equals analyze's on the same recording");
    assert_eq!(ours.keys().collect::<Vec<_>>(), ["sales", "support"], "no empty '-' group row:\n{final_part}");
    // A row marked incomplete says why.
    if final_part.lines().any(|l| l.starts_with('│') && l.contains(" * ")) {
        assert!(final_part.contains("* = incomplete: "), "incomplete rows give their reason:\n{final_part}");
    }
    assert!(dir_entries(tmp.path()).is_empty(), "the demo's data is removed: {:?}", dir_entries(tmp.path()));
}

#[test]
fn ctrl_c_shuts_down_cleanly_and_removes_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    // The synthetic call centre alone: it would run forever.
    let mut demo = Demo::start(tmp.path(), &["--seed", "7", "--no-recording"]);
    let data = demo
        .wait_line(Duration::from_secs(30), |l| l.trim_start().starts_with("Data:"))
        .expect("the demo says where its data is");
    let data =
        PathBuf::from(data.trim_start().trim_start_matches("Data:").trim().trim_end_matches(" (removed at exit)"));
    assert!(data.starts_with(tmp.path()), "{} is under TMPDIR", data.display());
    // Its members logged in (Alice, Bob and Carla in support), through the agent and the aggregator.
    demo.wait_line(Duration::from_secs(30), |l| l.contains("support: waiting") && support_members(l) == 3)
        .unwrap_or_else(|| panic!("live figures of the synthetic centre arrive:\n{}", demo.seen.join("\n")));
    assert!(data.join("aggregator").is_dir() && data.join("spool").is_dir(), "store and spool live in it");

    let sent = Instant::now();
    let kill = Command::new("kill").args(["-INT", &demo.child.id().to_string()]).status().expect("kill -INT");
    assert!(kill.success());
    let (status, out, err) = demo.wait(Duration::from_secs(40));
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "a clean exit after SIGINT\nstdout:\n{out}\nstderr:\n{err}");
    assert!(took < Duration::from_secs(30), "stopped in {took:?}");
    assert!(out.contains("SIGINT received"), "{out}");
    assert!(out.contains("Final KPIs per queue"), "the final table is printed on the way out:\n{out}");
    assert!(!data.exists(), "{} is removed", data.display());
    assert!(dir_entries(tmp.path()).is_empty(), "nothing is left in TMPDIR: {:?}", dir_entries(tmp.path()));
}

#[test]
fn bad_options_are_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, code) in [(&["--speed", "0.5"][..], 64), (&["--speed", "NaN"][..], 64), (&["--no-recording"][..], 64)] {
        let out = Command::new(BIN).arg("demo").args(args).env("TMPDIR", tmp.path()).output().expect("callkpi demo");
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(dir_entries(tmp.path()).is_empty(), "nothing was created");
}
