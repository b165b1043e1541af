//! The wallboard and the live per-queue gauges, end to end: a real agent
//! delivers the real Asterisk recording (tests/fixtures/asterisk/run-a) to a
//! real aggregator, and what a real browser (Debian's `chromium`, headless)
//! shows, what the JSON endpoint and the event stream say, what `/metrics`
//! exports and what `GetKpis` reports for today are the same figures.
//!
//! The recording is days old and the live figures are "today's", so its
//! queue_log is replayed shifted in time: every line moves by the same
//! number of seconds so that the last one was a minute ago. Durations,
//! order and outcomes are untouched.
//!
//! The browser is driven over the DevTools protocol (`--remote-debugging-pipe`):
//! it opens the page with a reader token in the URL, the test waits until
//! the page shows a board, then reads the DOM, pushes a change through the
//! queue_log and waits for the page to show it. Without `chromium` on the
//! PATH (or `CALLKPI_CHROMIUM` naming a binary), the browser checks are
//! skipped with a loud message; everything else runs.
//! `CALLKPI_WALLBOARD_SCREENSHOT=docs/wallboard.png` (relative to the
//! repository) also saves the 1920x1080 screenshot there.

// A skipped browser check must be seen in the test output.
#![allow(clippy::print_stderr)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use callkpi_core::time::{Interval, interval_start, parse_tz, rfc3339};
use callkpi_tests::*;
use serde_json::Value;

/// Per-queue figures compared everywhere.
const FIELDS: [&str; 8] = [
    "calls_waiting",
    "offered_today",
    "answered_today",
    "agents_available",
    "agents_busy",
    "agents_wrapup",
    "agents_paused",
    "longest_wait_s",
];

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The recording's queue_log with every epoch moved so that the last line is `end`.
fn shifted_queue_log(end: u64) -> Vec<u8> {
    let lines = fixture_lines();
    let epoch = |l: &[u8]| -> u64 {
        let text = std::str::from_utf8(l).expect("UTF-8 queue_log");
        text.split('|').next().and_then(|e| e.trim().parse().ok()).expect("queue_log lines start with an epoch")
    };
    let last = lines.iter().map(|l| epoch(l)).max().expect("a non-empty recording");
    let offset = end - last;
    let mut out = Vec::new();
    for l in &lines {
        let text = std::str::from_utf8(l).unwrap();
        let (e, rest) = text.split_once('|').unwrap();
        out.extend_from_slice(format!("{}|{rest}", e.trim().parse::<u64>().unwrap() + offset).as_bytes());
    }
    out
}

/// A zone where the whole shifted recording (and some margin) falls within today.
fn zone_with_room(now_ns: i64, span_s: i64) -> &'static str {
    ["Europe/Paris", "Asia/Tokyo", "America/New_York"]
        .into_iter()
        .find(|tz| {
            let z = parse_tz(tz).unwrap();
            now_ns - interval_start(now_ns, Interval::Day, &z) > (span_s + 900) * 1_000_000_000
        })
        .expect("Paris and Tokyo are 7 or 8 hours apart: one of them is past 00:30")
}

/// A running deployment that has delivered the shifted recording.
struct Delivered {
    s: Setup,
    agg: Proc,
    agent: Proc,
    tz: &'static str,
    queue_log: PathBuf,
}

impl Delivered {
    fn start() -> Delivered {
        let now = now_s();
        let window = truth()["window"]["seconds"].as_i64().expect("truth window");
        let tz = zone_with_room(i64::try_from(now).unwrap() * 1_000_000_000, window + 60);
        let s = Setup::new();
        let queue_log = s.path("queue_log");
        std::fs::write(&queue_log, shifted_queue_log(now - 60)).unwrap();
        let cfg = s.agent_config("agent-a", TOKEN_A, 64 << 20, &s.queue_log_source(&queue_log));
        let agg = s.aggregator_with(&format!("[live]\ntime_zone = \"{tz}\"\nsl_thresholds_s = [20, 60]\n"));
        let agent = s.agent(&cfg);
        let n = queue_log_signatures(&std::fs::read(&queue_log).unwrap()).len();
        s.wait_for_hwm("agent-a", n, Duration::from_secs(30), &[&agent, &agg]);
        let d = Delivered { s, agg, agent, tz, queue_log };
        // The engine follows the store asynchronously: wait for the last calls.
        let answered = |b: &Value| {
            b["queues"].as_array().map(|qs| qs.iter().map(|q| q["answered_today"].as_u64().unwrap_or(0)).sum::<u64>())
        };
        let total: u64 = ["support", "sales"].iter().map(|q| truth()["queues"][q]["answered"].as_u64().unwrap()).sum();
        let got = eventually(Duration::from_secs(20), || d.board("").filter(|b| answered(b) == Some(total)));
        assert!(
            got.is_some(),
            "the board never showed {total} answered calls: {:?}\n{}",
            d.board(""),
            tail(&d.agg.log_text())
        );
        d
    }

    /// The JSON board, with `extra` query parameters.
    fn board(&self, extra: &str) -> Option<Value> {
        let (status, body) = request(self.s.agg_http, &format!("/wallboard/api/live?token={TOKEN_READER}{extra}"), &[]);
        (status == 200).then(|| serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}")))
    }

    fn stop(mut self) {
        self.agent.terminate(Duration::from_secs(15));
        assert_eq!(
            self.agg.terminate(Duration::from_secs(15)),
            Some(0),
            "the aggregator stops cleanly with a wallboard open"
        );
    }
}

fn truth() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("asterisk/run-a/truth.json")).unwrap()).unwrap()
}

/// GET `path` on loopback: the status and the body.
fn request(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("a response");
    let (head, body) = buf.split_once("\r\n\r\n").expect("a header block");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status code");
    (status, body.to_owned())
}

fn queue<'a>(board: &'a Value, name: &str) -> &'a Value {
    board["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["queue"] == name))
        .unwrap_or_else(|| panic!("queue {name} on the board: {board}"))
}

/// `GetKpis` rows by queue for today in `tz`, through `callkpi report`.
fn get_kpis_today(d: &Delivered) -> Value {
    let now = i64::try_from(now_s()).unwrap() * 1_000_000_000;
    let zone = parse_tz(d.tz).unwrap();
    let midnight = rfc3339(interval_start(now, Interval::Day, &zone), &zone);
    let server = format!("http://127.0.0.1:{}", d.s.grpc);
    let out = Command::new(bin_dir().join("callkpi"))
        .args(["report", "--server", &server, "--token", TOKEN_READER, "--format", "json"])
        .args(["--by", "queue", "--interval", "all", "--from", &midnight, "--tz", d.tz, "--sl-threshold", "20,60"])
        .output()
        .expect("running callkpi report");
    assert!(out.status.success(), "callkpi report: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn assert_close(what: &str, a: Option<f64>, b: Option<f64>, tolerance: f64) {
    match (a, b) {
        (Some(x), Some(y)) => assert!((x - y).abs() <= tolerance, "{what}: {x} vs {y}"),
        (None, None) => {}
        _ => panic!("{what}: {a:?} vs {b:?}"),
    }
}

// === the browser ===

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CALLKPI_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("chromium")).find(|p| p.is_file())
}

/// Headless chromium driven over the DevTools protocol on a pipe.
///
/// `--dump-dom` with `--virtual-time-budget` cannot be used: virtual time
/// stands still while a fetch is pending, and the page's event stream is a
/// fetch that never ends. Driving the browser also lets the test watch a
/// pushed change arrive in the page.
struct Browser {
    child: Child,
    commands: ChildStdin,
    replies: mpsc::Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(bin: &Path) -> Browser {
        use std::os::unix::process::CommandExt as _;
        let profile = tempfile::tempdir().unwrap();
        let log = profile.path().join("chromium.log");
        // The protocol runs on fds 3 (commands in) and 4 (replies out): the
        // shell wires them to our pipes, and chromium's own stdout to the log.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<&0 4>&1 1>&2 0</dev/null")
            .arg(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            // Its own process group, so that a hung browser and its helpers
            // can be ended together, and nothing else.
            .process_group(0)
            .spawn()
            .expect("starting chromium");
        let commands = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 64 * 1024];
            while let Ok(n) = out.read(&mut chunk) {
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|b| *b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    let v: Value = serde_json::from_slice(&msg[..end]).expect("a DevTools message");
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Browser { child, commands, replies, next_id: 0, session: None, log, _profile: profile }
    }

    /// Sends one command (to the page once attached) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = Value::String(s.clone());
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).expect("writing to chromium");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self.replies.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "chromium did not answer {method}:\n{}",
                    tail(&std::fs::read_to_string(&self.log).unwrap_or_default())
                )
            });
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Opens `url` in a fresh page of `width` x `height` CSS pixels.
    fn open(&mut self, url: &str, width: u32, height: u32) {
        let target = self.call("Target.createTarget", serde_json::json!({"url": "about:blank"}));
        let attached =
            self.call("Target.attachToTarget", serde_json::json!({"targetId": target["targetId"], "flatten": true}));
        self.session = Some(attached["sessionId"].as_str().expect("a session").to_owned());
        self.call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        self.call("Page.navigate", serde_json::json!({"url": url}));
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call("Runtime.evaluate", serde_json::json!({"expression": expression, "returnByValue": true}));
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it equals `want`, for at most `patience`.
    fn wait_for(&mut self, expression: &str, want: &Value, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if &self.eval(expression) == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// A PNG of the page.
    fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call("Page.captureScreenshot", serde_json::json!({"format": "png"}));
        base64_decode(r["data"].as_str().expect("base64 PNG data"))
    }

    fn close(mut self) {
        self.session = None;
        self.next_id += 1;
        let msg = format!("{{\"id\":{},\"method\":\"Browser.close\"}}\0", self.next_id);
        let _ = self.commands.write_all(msg.as_bytes());
        if eventually(Duration::from_secs(20), || self.child.try_wait().ok().flatten()).is_none() {
            self.kill();
        }
    }

    fn kill(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Decodes base64 with coreutils' `base64 -d`.
fn base64_decode(text: &str) -> Vec<u8> {
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("coreutils base64");
    let mut stdin = child.stdin.take().unwrap();
    let text = text.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("base64 -d");
    writer.join().unwrap().expect("feeding base64 -d");
    assert!(out.status.success(), "base64 -d failed");
    out.stdout
}

/// The inner text of the element carrying `data-field="<field>"` inside `html`.
fn field<'a>(html: &'a str, field: &str) -> Option<&'a str> {
    let at = html.find(&format!("data-field=\"{field}\""))?;
    let rest = &html[at..];
    let open = rest.find('>')? + 1;
    let close = rest[open..].find('<')? + open;
    Some(&rest[open..close])
}

/// The `data-status` of the tile holding `field`, if any.
fn tile_status<'a>(html: &'a str, field: &str) -> Option<&'a str> {
    let at = html.find(&format!("data-field=\"{field}\""))?;
    let tile = &html[html[..at].rfind("<div class=\"tile\"")?..at];
    let s = tile.find("data-status=\"")? + "data-status=\"".len();
    Some(&tile[s..s + tile[s..].find('"')?])
}

/// The `<section>` of `queue` in the dumped DOM.
fn section<'a>(dom: &'a str, queue: &str) -> &'a str {
    let start =
        dom.find(&format!("data-queue=\"{queue}\"")).unwrap_or_else(|| panic!("queue {queue} in the DOM:\n{dom}"));
    let end = dom[start..].find("</section>").expect("a closed section") + start;
    &dom[start..end]
}

fn percent(text: &str) -> Option<f64> {
    text.strip_suffix('%').and_then(|v| v.parse().ok())
}

fn seconds(text: &str) -> f64 {
    text.split(':').fold(0.0, |acc, part| acc * 60.0 + part.parse::<f64>().expect("m:ss"))
}

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    (bytes.len() > 24 && &bytes[..8] == b"\x89PNG\r\n\x1a\n" && &bytes[12..16] == b"IHDR").then(|| {
        (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()))
    })
}

#[test]
fn a_browser_shows_the_figures_of_the_json_endpoint_and_get_kpis() {
    let d = Delivered::start();
    let board = d.board(&format!("&tz={}", d.tz)).expect("the board");
    assert_eq!(board["time_zone"], d.tz);
    assert_eq!(
        d.board("").map(|b| b["queues"].clone()),
        Some(board["queues"].clone()),
        "[live].time_zone is the default"
    );

    // The board's "today" is GetKpis over today, and the recording's truth.
    let report = get_kpis_today(&d);
    let truth = truth();
    for name in ["support", "sales"] {
        let q = queue(&board, name);
        let row = report["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["group"]["queue"] == name))
            .unwrap_or_else(|| panic!("a GetKpis row for {name}: {report}"));
        let k = &row["kpis"];
        assert_eq!(q["answered_today"], truth["queues"][name]["answered"], "{name}: answered, as recorded");
        assert_eq!(q["offered_today"], k["offered"], "{name}: offered");
        assert_eq!(q["answered_today"], k["answered"], "{name}: answered");
        assert_close(
            &format!("{name}: abandonment"),
            q["abandonment_today_pct"].as_f64(),
            k["abandonment_rate_pct"].as_f64(),
            1e-9,
        );
        for t in ["20", "60"] {
            assert_close(
                &format!("{name}: SL {t} s"),
                q["service_levels_today_pct"][t].as_f64(),
                k["service_level_pct"][t].as_f64(),
                1e-9,
            );
        }
        assert_eq!(
            q["service_level_today_pct"], q["service_levels_today_pct"]["20"],
            "the first threshold is the headline"
        );
        assert!(q["offered_today"].as_u64().unwrap() > 0, "{name}: the recording is today");
    }
    // Agent B is configured and never delivered: the banner says so.
    let behind = board["behind"].as_array().expect("behind");
    assert!(
        behind.iter().any(|b| b["agent_id"] == "agent-b" && b["never_delivered"] == true && b["site"] == "lyon"),
        "{board}"
    );
    assert!(!behind.iter().any(|b| b["agent_id"] == "agent-a"), "agent A delivered everything: {board}");

    let Some(bin) = chromium() else {
        d.stop();
        skip(
            "the browser part of the wallboard test",
            "no `chromium` on the PATH (apt-get install -y chromium, or set CALLKPI_CHROMIUM)",
        );
        return;
    };
    let url = format!("http://127.0.0.1:{}/wallboard?token={TOKEN_READER}&tz={}", d.s.agg_http, d.tz);
    let mut browser = Browser::launch(&bin);
    browser.open(&url, 1920, 1080);
    let live =
        browser.wait_for("document.getElementById('status')?.dataset.state", &"live".into(), Duration::from_secs(30));
    assert!(live, "the page never showed a board: {:?}", browser.eval("document.body?.innerText"));
    let dom = browser.eval("document.documentElement.outerHTML");
    let dom = dom.as_str().expect("the DOM");
    let after = d.board(&format!("&tz={}", d.tz)).expect("the board");
    for name in ["support", "sales"] {
        let html = section(dom, name);
        let json = queue(&after, name);
        for f in FIELDS {
            let text = field(html, f).unwrap_or_else(|| panic!("{name}: {f} in the DOM:\n{html}"));
            let shown = if f == "longest_wait_s" { seconds(text) } else { text.parse().expect("a number") };
            let expected = json[f].as_f64().unwrap();
            let tolerance = if f == "longest_wait_s" { 1.0 } else { 0.0 };
            assert!((shown - expected).abs() <= tolerance, "{name}: {f} shows {text:?}, JSON says {expected}");
        }
        for (f, status) in
            [("service_level_today_pct", "service_level_status"), ("abandonment_today_pct", "abandonment_status")]
        {
            let text = field(html, f).unwrap();
            // One decimal on screen.
            assert_close(&format!("{name}: {f}"), percent(text), json[f].as_f64(), 0.05 + 1e-9);
            assert_eq!(tile_status(html, f), json[status].as_str(), "{name}: colour of {f}");
        }
        let sl60 = field(html, "service_level_60_today_pct").expect("the second threshold");
        assert_close(
            &format!("{name}: SL 60"),
            percent(sl60),
            json["service_levels_today_pct"]["60"].as_f64(),
            0.05 + 1e-9,
        );
    }
    assert!(dom.contains("data-agent=\"agent-b\""), "the banner names agent B:\n{dom}");

    // A caller enters support now: the server pushes it and the page shows it.
    let mut f = std::fs::OpenOptions::new().append(true).open(&d.queue_log).unwrap();
    writeln!(f, "{}|live-1|support|NONE|ENTERQUEUE||0611223344|1", now_s()).unwrap();
    let waiting = "document.querySelector('[data-queue=\"support\"] [data-field=\"calls_waiting\"]')?.textContent";
    assert!(
        browser.wait_for(waiting, &"1".into(), Duration::from_secs(15)),
        "the pushed caller never showed: {:?}",
        browser.eval(waiting)
    );
    let status = "document.querySelector('[data-queue=\"support\"] [data-field=\"calls_waiting\"]').parentElement.dataset.status";
    assert_eq!(browser.eval(status), "amber", "a waiting caller is highlighted");

    // The picture for the docs.
    let png = browser.screenshot();
    assert_eq!(png_size(&png), Some((1920, 1080)), "a 1920x1080 PNG");
    std::fs::write(d.s.path("wallboard.png"), &png).unwrap();
    if let Some(dest) = std::env::var_os("CALLKPI_WALLBOARD_SCREENSHOT") {
        let dest = repo().join(dest);
        std::fs::write(&dest, &png).unwrap_or_else(|e| panic!("saving {}: {e}", dest.display()));
        eprintln!("wallboard screenshot saved to {}", dest.display());
    }
    browser.close();
    d.stop();
}

// === metrics, events, access ===

/// Reads Server-Sent Events from `port` until `done` accepts a board, for at most `patience`.
fn watch_events(port: u16, path: &str, patience: Duration, mut done: impl FnMut(&Value) -> bool) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    // HTTP/1.0: the stream is the body up to the close, no chunking.
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let deadline = Instant::now() + patience;
    let mut line = String::new();
    let mut event = String::new();
    while Instant::now() < deadline {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => panic!("reading events: {e}"),
        }
        let l = line.trim_end();
        if let Some(name) = l.strip_prefix("event: ") {
            event = name.to_owned();
        } else if let Some(data) = l.strip_prefix("data: ") {
            assert_eq!(event, "board", "only board events");
            let board: Value = serde_json::from_str(data).expect("a JSON board");
            if done(&board) {
                return Some(board);
            }
        }
    }
    None
}

/// Every `expr` of a Grafana dashboard's targets.
fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            m.values().for_each(|v| collect_exprs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn metrics_and_events_carry_the_live_figures_and_readers_need_a_token() {
    let d = Delivered::start();
    let port = d.s.agg_http;
    let board = d.board("").expect("the board");
    // ?queues= matches whatever the case, and names what matches nothing.
    let some = d.board("&queues=SUPPORT,Billing").expect("a board of some queues");
    assert_eq!(some["queues"].as_array().map(|q| q.len()), Some(1), "{some}");
    assert_eq!(some["queues"][0], *queue(&board, "support"), "SUPPORT is support");
    assert_eq!(some["unknown_queues"], serde_json::json!(["Billing"]));
    let text = http_get(port, "/metrics").expect("metrics");
    let truth = truth();
    for name in ["support", "sales"] {
        let q = queue(&board, name);
        let m = |series: &str| metric(&text, &format!("{series}{{queue=\"{name}\"}}"));
        assert_eq!(
            m("callkpi_queue_answered_today"),
            truth["queues"][name]["answered"].as_f64(),
            "{name}: answered, as recorded"
        );
        assert_eq!(m("callkpi_queue_offered_today"), q["offered_today"].as_f64(), "{name}: offered");
        assert_eq!(m("callkpi_queue_waiting"), q["calls_waiting"].as_f64(), "{name}: waiting");
        assert_close(
            &format!("{name}: longest wait"),
            m("callkpi_queue_longest_wait_seconds"),
            q["longest_wait_s"].as_f64(),
            1.0,
        );
        assert_close(
            &format!("{name}: abandonment"),
            m("callkpi_queue_abandon_today_ratio"),
            q["abandonment_today_pct"].as_f64().map(|p| p / 100.0),
            1e-9,
        );
        for t in ["20", "60"] {
            let sl = metric(
                &text,
                &format!("callkpi_queue_service_level_today_ratio{{queue=\"{name}\",threshold=\"{t}\"}}"),
            );
            assert_close(
                &format!("{name}: SL {t}"),
                sl,
                q["service_levels_today_pct"][t].as_f64().map(|p| p / 100.0),
                1e-9,
            );
        }
        for (state, field) in [
            ("available", "agents_available"),
            ("busy", "agents_busy"),
            ("wrapup", "agents_wrapup"),
            ("paused", "agents_paused"),
        ] {
            let n = metric(&text, &format!("callkpi_queue_agents{{queue=\"{name}\",state=\"{state}\"}}"));
            assert_eq!(n, q[field].as_f64(), "{name}: agents {state}");
        }
    }
    assert!(text.contains("# UNIT callkpi_queue_service_level_today_ratio ratio"), "OpenMetrics unit");

    // Every metric the Grafana dashboard queries exists.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("deploy/grafana/callkpi.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > 5, "the dashboard has queries");
    for expr in &exprs {
        for name in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("callkpi_"))
        {
            assert!(text.lines().any(|l| l.starts_with(name)), "the dashboard queries {name}, which /metrics lacks");
        }
    }

    // Access: the reader token, in the query or the header; nothing else.
    for path in ["/wallboard/", "/wallboard/api/live", "/wallboard/events"] {
        assert_eq!(request(port, path, &[]).0, 401, "{path} without a token");
        assert_eq!(request(port, &format!("{path}?token=wrong"), &[]).0, 401, "{path} with a wrong token");
        assert_eq!(request(port, &format!("{path}?token={TOKEN_A}"), &[]).0, 401, "{path} with an agent's token");
    }
    let bearer = format!("Bearer {TOKEN_READER}");
    assert_eq!(request(port, "/wallboard/api/live", &[("Authorization", &bearer)]).0, 200, "a bearer header");
    assert_eq!(request(port, &format!("/wallboard/?token={TOKEN_READER}"), &[]).0, 200, "the page");
    assert_eq!(request(port, "/wallboard/wallboard.js", &[]).0, 200, "the script holds no data");
    assert_eq!(
        request(port, &format!("/wallboard/api/live?token={TOKEN_READER}&tz=Mars/Olympus"), &[]).0,
        400,
        "an unknown zone"
    );

    // The event stream starts with the current board, then pushes a change.
    let path = format!("/wallboard/events?token={TOKEN_READER}");
    let first = watch_events(port, &path, Duration::from_secs(10), |_| true).expect("a first board");
    assert_eq!(first["queues"], d.board("").unwrap()["queues"], "the first event is the current board");
    let reader = {
        let path = path.clone();
        std::thread::spawn(move || {
            watch_events(port, &path, Duration::from_secs(20), |b| {
                b["queues"]
                    .as_array()
                    .is_some_and(|qs| qs.iter().any(|q| q["queue"] == "support" && q["calls_waiting"] == 1))
            })
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut f = std::fs::OpenOptions::new().append(true).open(&d.queue_log).unwrap();
    writeln!(f, "{}|live-1|support|NONE|ENTERQUEUE||0611223344|1", now_s()).unwrap();
    let pushed = reader.join().unwrap();
    assert!(pushed.is_some(), "a caller entering support is pushed\n{}", tail(&d.agg.log_text()));
    let latency = started.elapsed();
    assert!(latency < Duration::from_secs(10), "pushed in {latency:?}");
    let text = http_get(port, "/metrics").expect("metrics");
    assert_eq!(metric(&text, "callkpi_queue_waiting{queue=\"support\"}"), Some(1.0), "the gauge follows");
    d.stop();
}
