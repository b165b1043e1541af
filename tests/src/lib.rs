//! Harness for end-to-end tests: builds the real binaries, starts them on
//! loopback with configs in a temporary directory, waits for them with
//! bounded patience, and ends them by PID.
//!
//! Every helper here has a deadline; nothing loops forever, and only
//! processes this harness started are ever signalled.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use callkpi_aggregator::store::Store;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fixture file under tests/fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

/// Builds the agent and aggregator binaries once per test process (a no-op
/// when cargo already built them) and returns the directory holding them.
///
/// # Panics
/// When the build fails: every end-to-end test needs the binaries.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "callkpi-agent",
                "-p",
                "callkpi-aggregator",
                "-p",
                "callkpi-cli",
                "--bins",
            ])
            .current_dir(repo())
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the binaries failed");
        // Test executables live in <target>/<profile>/deps; binaries one level up.
        let exe = std::env::current_exe().expect("test executable path");
        exe.parent().and_then(Path::parent).expect("target profile dir").to_owned()
    })
}

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range.
///
/// A port the kernel hands out for `bind(0)` can be handed out again as the
/// source port of any outgoing connection before the test's server binds it;
/// ports under 32768 never are. A counter keeps the tests of one process
/// apart, the process id keeps processes apart, and each port is checked
/// bindable.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 400) * 30;
    for _ in 0..2_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(base + n % 12_000).unwrap_or(20_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `patience`.
pub fn eventually<T>(patience: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed (SIGKILL) when dropped, unless already reaped.
#[derive(Debug)]
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Its name, for messages.
    pub name: String,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `bin` with `args`, stderr and stdout appended to `log`.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn start(bin: &str, args: &[&str], log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(bin_dir().join(bin))
            .args(args)
            .env("CALLKPI_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        Proc { child, name: bin.to_owned(), log: log.to_owned() }
    }

    /// kill -9: the process gets no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `grace` for a clean exit; returns its exit code.
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let code = eventually(grace, || self.child.try_wait().ok().flatten());
        match code {
            Some(status) => status.code(),
            None => {
                self.kill9();
                None
            }
        }
    }

    /// The process's log so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// GET `path` over plain HTTP/1.1 from 127.0.0.1:`port`; the body, if any.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The value of a Prometheus sample `name{labels}` (or `name` alone) in a text exposition.
pub fn metric(text: &str, name_with_labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name_with_labels).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// A minimal Asterisk Manager Interface server replaying a recorded
/// transcript: banner, `Response: Success` to Login, `Pong` to Ping, then
/// the recorded events. Serves connections one after another until
/// `connections` have been served.
pub fn ami_replay_server(transcript: Vec<u8>, connections: usize) -> (u16, std::thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind AMI server");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        let mut served = 0;
        for stream in listener.incoming().take(connections) {
            let Ok(stream) = stream else { continue };
            served += 1;
            let _ = serve_ami(stream, &transcript);
        }
        served
    });
    (port, handle)
}

fn serve_ami(mut stream: TcpStream, transcript: &[u8]) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"Asterisk Call Manager/11.0.0\r\n")?;
    let mut reader = BufReader::new(stream.try_clone()?);
    // Read the Login action (headers up to a blank line).
    let mut action = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            break;
        }
        action.push_str(&line);
    }
    let id = action.lines().find_map(|l| l.strip_prefix("ActionID: ")).unwrap_or("").trim().to_owned();
    write!(stream, "Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n")?;
    // The transcript without its own banner and login reply.
    let body = transcript.windows(4).position(|w| w == b"\r\n\r\n").map_or(transcript, |i| &transcript[i + 4..]);
    for chunk in body.chunks(16 * 1024) {
        stream.write_all(chunk)?;
    }
    // Answer pings until the client goes away or the read times out.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.starts_with("Action: Ping") {
            stream.write_all(b"Response: Success\r\nPing: Pong\r\n\r\n")?;
        }
    }
}

/// What identifies an event's content regardless of who spooled it and with
/// which sequence number: call id, source time and the event itself.
pub type Signature = (String, Option<i64>, String);

/// Signatures of the events a queue_log file maps to, sorted.
pub fn queue_log_signatures(bytes: &[u8]) -> Vec<Signature> {
    use callkpi_feeds::queue_log::{QueueLogConfig, QueueLogMapper};
    let mut sigs: Vec<Signature> = QueueLogMapper::new(QueueLogConfig::default())
        .map_all(bytes)
        .into_iter()
        .map(|e| (e.call_id, e.source_time, format!("{:?}", e.kind)))
        .collect();
    sigs.sort();
    sigs
}

/// Signatures of stored wire events, sorted.
///
/// # Panics
/// When a stored event does not convert: the store must only hold valid events.
pub fn wire_signatures(events: &[callkpi_proto::pb::Event]) -> Vec<Signature> {
    let mut sigs: Vec<Signature> = events
        .iter()
        .map(|e| {
            let ev = callkpi_core::event::Event::try_from(e.clone()).expect("stored event converts");
            (ev.call_id, ev.time.source_time, format!("{:?}", ev.kind))
        })
        .collect();
    sigs.sort();
    sigs
}

// === a loopback deployment ===

/// A report reader's token.
pub const TOKEN_READER: &str = "token-of-the-ops-reader-42";
/// Agent A's bearer token in [`Setup`]'s aggregator config.
pub const TOKEN_A: &str = "token-of-agent-a-0123456789";
/// Agent B's bearer token.
pub const TOKEN_B: &str = "token-of-agent-b-9876543210";

/// Hex SHA-256, as `token_sha256` takes it.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Where an agent of [`Setup::agent_config_at`] lives and connects.
#[derive(Debug, Clone, Copy)]
pub struct AgentAt<'a> {
    /// Its site.
    pub site: &'a str,
    /// The port its uplink connects to on 127.0.0.1.
    pub uplink: u16,
    /// Its metrics port.
    pub http: u16,
}

/// One aggregator and agents on loopback ports, with their files in a temporary directory.
pub struct Setup {
    /// The directory.
    pub dir: tempfile::TempDir,
    /// Aggregator gRPC port.
    pub grpc: u16,
    /// Aggregator HTTP (metrics) port.
    pub agg_http: u16,
    /// Agent HTTP (metrics) port.
    pub agent_http: u16,
}

impl Setup {
    /// Fresh ports and directory.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Setup {
        Setup { dir: tempfile::tempdir().unwrap(), grpc: free_port(), agg_http: free_port(), agent_http: free_port() }
    }

    /// A path in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the aggregator config (agents A and B, reader token [`TOKEN_READER`]).
    pub fn aggregator_config(&self) -> PathBuf {
        self.aggregator_config_with("")
    }

    /// Writes the aggregator config with `extra` TOML tables appended.
    pub fn aggregator_config_with(&self, extra: &str) -> PathBuf {
        let cfg = format!(
            r#"listen = "127.0.0.1:{grpc}"
metrics_listen = "127.0.0.1:{http}"
store_path = "{store}"
store_cache_bytes = 8388608
heartbeat_interval_ms = 1000

[[agents]]
id = "agent-a"
site = "paris"
token_sha256 = "{a}"

[[agents]]
id = "agent-b"
site = "lyon"
token_sha256 = "{b}"

[[readers]]
name = "ops"
token_sha256 = "{r}"

{extra}"#,
            grpc = self.grpc,
            http = self.agg_http,
            store = self.path("store").display(),
            a = sha256_hex(TOKEN_A),
            b = sha256_hex(TOKEN_B),
            r = sha256_hex(TOKEN_READER),
        );
        let p = self.path("aggregator.toml");
        std::fs::write(&p, cfg).unwrap();
        p
    }

    /// Writes an agent config; `sources` is appended verbatim.
    pub fn agent_config(&self, agent_id: &str, token: &str, spool_max: u64, sources: &str) -> PathBuf {
        let at = AgentAt { site: "paris", uplink: self.grpc, http: self.agent_http };
        self.agent_config_at(agent_id, token, spool_max, sources, at)
    }

    /// Writes an agent config for `at`'s site, uplink port and metrics port
    /// (a second agent, or one that reaches the aggregator through a relay).
    pub fn agent_config_at(
        &self,
        agent_id: &str,
        token: &str,
        spool_max: u64,
        sources: &str,
        at: AgentAt<'_>,
    ) -> PathBuf {
        let cfg = format!(
            r#"agent_id = "{agent_id}"
site = "{site}"

[uplink]
url = "http://127.0.0.1:{grpc}"
token = "{token}"
backoff_initial_ms = 50
backoff_max_ms = 500
heartbeat_interval_ms = 1000
connect_timeout_ms = 1000

[spool]
path = "{spool}"
max_bytes = {spool_max}
reserve_bytes = 4096

[metrics]
listen = "127.0.0.1:{http}"

{sources}"#,
            site = at.site,
            grpc = at.uplink,
            spool = self.path(&format!("spool-{agent_id}")).display(),
            http = at.http,
        );
        let p = self.path(&format!("agent-{agent_id}.toml"));
        std::fs::write(&p, cfg).unwrap();
        p
    }

    /// A `[[sources.queue_log]]` block for `file`.
    pub fn queue_log_source(&self, file: &Path) -> String {
        format!("[[sources.queue_log]]\nname = \"ql\"\npath = \"{}\"\npoll_interval_ms = 20\n", file.display())
    }

    /// Starts the aggregator and waits until it answers.
    pub fn aggregator(&self) -> Proc {
        self.aggregator_with("")
    }

    /// Starts the aggregator with `extra` config tables and waits until it answers.
    pub fn aggregator_with(&self, extra: &str) -> Proc {
        let cfg = self.aggregator_config_with(extra);
        let p = Proc::start(
            "callkpi-aggregator",
            &["run", "--config", cfg.to_str().unwrap()],
            &self.path("aggregator.log"),
        );
        eventually(Duration::from_secs(20), || http_get(self.agg_http, "/healthz"))
            .unwrap_or_else(|| panic!("aggregator did not come up:\n{}", p.log_text()));
        p
    }

    /// Starts an agent.
    pub fn agent(&self, cfg: &Path) -> Proc {
        Proc::start("callkpi-agent", &["run", "--config", cfg.to_str().unwrap()], &self.path("agent.log"))
    }

    /// One aggregator metric.
    pub fn agg_metric(&self, name: &str) -> Option<f64> {
        http_get(self.agg_http, "/metrics").and_then(|t| metric(&t, name))
    }

    /// Waits until the aggregator holds `n` contiguous events of `agent`.
    pub fn wait_for_hwm(&self, agent: &str, n: usize, patience: Duration, logs: &[&Proc]) {
        let name = format!("callkpi_agent_hwm{{agent=\"{agent}\"}}");
        let got = eventually(patience, || self.agg_metric(&name).filter(|v| *v as usize >= n));
        if got.is_none() {
            let text: Vec<String> = logs.iter().map(|p| format!("--- {}\n{}", p.name, tail(&p.log_text()))).collect();
            panic!(
                "aggregator never reached hwm {n} for {agent} (now {:?})\n{}",
                self.agg_metric(&name),
                text.join("\n")
            );
        }
    }

    /// Everything `agent` delivered (the aggregator must be stopped).
    pub fn stored(&self, agent: &str) -> Vec<(u64, callkpi_proto::pb::Event)> {
        let store = Store::open(&self.path("store"), 8 << 20).expect("open the aggregator store");
        store.events_after(agent, 0, usize::MAX).expect("read events")
    }
}

/// The last 40 lines of a log.
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Asserts the store holds exactly the events `expected_input` (a queue_log) maps to, each once.
pub fn assert_exactly(stored: &[(u64, callkpi_proto::pb::Event)], expected_input: &[u8]) {
    let expected = queue_log_signatures(expected_input);
    let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "sequence numbers are contiguous from 1");
    let events: Vec<_> = stored.iter().map(|(_, e)| e.clone()).collect();
    let got = wire_signatures(&events);
    assert_eq!(got.len(), expected.len(), "event count");
    assert_eq!(got, expected, "every event exactly once");
}

/// The recorded queue_log's lines.
pub fn fixture_lines() -> Vec<Vec<u8>> {
    let bytes = std::fs::read(fixture("asterisk/run-a/queue_log")).unwrap();
    bytes.split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
}

/// Whether `tool` is an executable file on the `PATH`.
pub fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .any(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Whether this run is CI's (`CI=true` or `CI=1`, as CI services set it):
/// there every peer must be present and nothing may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Tests skipped so far in this test binary.
static SKIPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Gives up on (part of) `test` because a peer is missing or unusable.
///
/// In CI this panics, so the test fails: a green CI run has run every
/// peer. Elsewhere the skip is written to the process's stderr handle
/// itself, which the test harness does not capture (it captures only the
/// `print!`/`eprint!` macros), so the line reaches the terminal even when
/// the test passes; it carries how many skips this binary has had.
/// Returns that count.
///
/// # Panics
/// When [`in_ci`].
pub fn skip(test: &str, why: &str) -> usize {
    assert!(!in_ci(), "{test}: {why}; CI=true, so a missing peer fails the test instead of skipping it");
    let n = SKIPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let line = format!(
        "\n!!! SKIPPED {test} ({n} skipped in this test binary): {why}\n!!! (with CI=true this fails instead)\n\n"
    );
    // Straight to fd 2: a failed write to stderr has nowhere to be reported.
    let _ = std::io::stderr().write_all(line.as_bytes());
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_found_on_the_path_only_when_executable() {
        assert!(on_path("sh"), "every Debian system has /bin/sh");
        assert!(!on_path("callkpi-no-such-tool"));
        assert!(!on_path("."), "a directory is not a tool");
    }
}
