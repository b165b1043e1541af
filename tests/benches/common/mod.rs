//! Shared by the delivery benches (`ingest`, `backlog`): the release
//! binaries, processes ended by PID, scratch directories on the target disk,
//! queue_log generation, pre-encoded Batches and a direct `Ingest` client.
//!
//! Every wait has a deadline and every loop is bounded.

#![allow(dead_code, unreachable_pub, clippy::print_stdout)]

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callkpi_core::event::{EventId, SourceKind};
use callkpi_feeds::queue_log::{QueueLogConfig, QueueLogMapper};
use callkpi_feeds::{CaptureTime, FeedEvent};
use callkpi_proto::pb;
use callkpi_proto::pb::agent_message::Msg as OutMsg;
use callkpi_proto::pb::aggregator_message::Msg as InMsg;
use callkpi_tests::{eventually, free_port, http_get, metric};
use prost::Message as _;
use prost::bytes::BufMut as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// Events per Batch, the agent's default `batch_max_events`.
pub const BATCH_EVENTS: usize = 1000;

/// An environment knob (`name`), else `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Builds the release binaries (`cargo build --release -p callkpi-agent -p
/// callkpi-aggregator`; a no-op when up to date) and returns their directory.
/// `BENCH_BINS_DIR`, when set, is that directory instead, used as it is: an
/// hour-long run then measures the binaries it started with while the tree
/// is edited and rebuilt.
///
/// # Panics
/// When the build fails.
pub fn release_bins() -> PathBuf {
    if let Some(dir) = std::env::var_os("BENCH_BINS_DIR") {
        let dir = PathBuf::from(dir);
        assert!(dir.join("callkpi-aggregator").exists(), "BENCH_BINS_DIR: no callkpi-aggregator in {}", dir.display());
        return dir;
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "callkpi-agent", "-p", "callkpi-aggregator", "--bins"])
        .current_dir(callkpi_tests::repo())
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building the release binaries failed");
    // The bench executable is <target>/release/deps/<bench>-<hash>.
    let exe = std::env::current_exe().expect("bench executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target profile dir").to_owned();
    assert!(dir.join("callkpi-aggregator").exists(), "no callkpi-aggregator in {}", dir.display());
    dir
}

/// A scratch directory on the target directory's disk (not a tmpfs),
/// removed when dropped.
pub fn scratch(name: &str) -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("target tmpdir");
    tempfile::Builder::new().prefix(name).tempdir_in(base).expect("scratch dir")
}

/// A process this bench started; SIGKILLed by PID when dropped unless it
/// already exited.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// Its name, for messages.
    pub name: String,
    log: PathBuf,
}

impl Proc {
    /// Starts `bin` with `args`, stdout and stderr appended to `log`.
    pub fn start(bin: &Path, args: &[&str], log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(bin)
            .args(args)
            .env("CALLKPI_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let name = bin.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        Proc { child, name, log: log.to_owned() }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (to this PID only), then up to `grace` for an exit; SIGKILL
    /// after that. The exit code, if it exited by itself.
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.code();
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        match eventually(grace, || self.child.try_wait().ok().flatten()) {
            Some(status) => status.code(),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                None
            }
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Bytes of the files under `dir`, recursively (0 for what cannot be read).
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// `VmRSS` and `VmHWM` of `pid`, KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system) `pid` has used, seconds (`/proc/<pid>/stat`,
/// at the usual 100 ticks a second).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// SHA-256 hex of a token, as the aggregator config wants it.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The bearer token of a bench agent.
pub fn token_of(agent_id: &str) -> String {
    format!("bench-token-of-{agent_id}")
}

/// The bearer token of the benches' report reader.
pub const READER_TOKEN: &str = "bench-token-of-the-reader";

/// A real `callkpi-aggregator` on loopback with a fresh store.
pub struct Aggregator {
    /// The process.
    pub proc: Proc,
    /// gRPC port.
    pub grpc: u16,
    /// HTTP (metrics) port.
    pub http: u16,
}

impl Aggregator {
    /// Writes a config (every key at its `deploy/aggregator.toml` default but
    /// the addresses, the store path, the agents and one reader, token
    /// [`READER_TOKEN`]) and starts it; waits for `/healthz`. `grpc`: the
    /// port to listen on, 0 for a free one. The same `dir` and `name` reopen
    /// the same store.
    pub fn start(bins: &Path, dir: &Path, name: &str, grpc: u16, agents: &[String]) -> Aggregator {
        let agg = Aggregator::spawn(bins, dir, name, grpc, agents);
        if eventually(Duration::from_secs(30), || http_get(agg.http, "/healthz")).is_none() {
            panic!("aggregator did not come up:\n{}", agg.proc.log_tail());
        }
        agg
    }

    /// [`Aggregator::start`] without waiting for it to come up.
    pub fn spawn(bins: &Path, dir: &Path, name: &str, grpc: u16, agents: &[String]) -> Aggregator {
        let grpc = if grpc == 0 { free_port() } else { grpc };
        let http = free_port();
        let mut cfg = format!(
            "listen = \"127.0.0.1:{grpc}\"\nmetrics_listen = \"127.0.0.1:{http}\"\nstore_path = \"{}\"\n",
            dir.join(format!("{name}-store")).display()
        );
        for a in agents {
            cfg.push_str(&format!(
                "\n[[agents]]\nid = \"{a}\"\nsite = \"bench\"\ntoken_sha256 = \"{}\"\n",
                sha256_hex(&token_of(a))
            ));
        }
        cfg.push_str(&format!("\n[[readers]]\nname = \"bench\"\ntoken_sha256 = \"{}\"\n", sha256_hex(READER_TOKEN)));
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, cfg).expect("aggregator config");
        let proc = Proc::start(
            &bins.join("callkpi-aggregator"),
            &["run", "--config", path.to_str().expect("utf-8 path")],
            &dir.join(format!("{name}.log")),
        );
        Aggregator { proc, grpc, http }
    }

    /// A metric of its `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        http_get(self.http, "/metrics").and_then(|t| metric(&t, name))
    }
}

// === queue_log ===

/// The recorded queue_log of run-a (176 lines).
pub fn fixture_queue_log() -> String {
    std::fs::read_to_string(callkpi_tests::fixture("asterisk/run-a/queue_log")).expect("run-a queue_log")
}

/// Copies `from..to` of the recording, each shifted in time (and its call
/// ids with it) past the previous, so that every copy is a distinct set of
/// calls: what a busy PBX writes, line for line.
pub fn queue_log_copies(fixture: &str, from: u64, to: u64) -> Vec<u8> {
    let epoch = |l: &str| l.split('|').next().and_then(|e| e.parse::<u64>().ok());
    let first = fixture.lines().find_map(epoch).expect("an epoch");
    let last = fixture.lines().rev().filter_map(epoch).next().expect("an epoch");
    let span = last - first + 60;
    let mut out = Vec::with_capacity(fixture.len() * (to - from) as usize + 1024);
    for k in from..to {
        for line in fixture.lines() {
            let mut fields = line.splitn(3, '|');
            let (Some(e), Some(call), Some(rest)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            let e = e.parse::<u64>().map_or_else(|_| e.to_owned(), |e| (e + k * span).to_string());
            let call = match call.split_once('.') {
                Some((a, b)) if a.parse::<u64>().is_ok() => format!("{}.{b}", a.parse::<u64>().unwrap_or(0) + k * span),
                _ => call.to_owned(),
            };
            let _ = writeln!(out, "{e}|{call}|{rest}");
        }
    }
    out
}

/// What the agent's mapper makes of queue_log bytes.
pub fn map_queue_log(bytes: &[u8]) -> Vec<FeedEvent> {
    QueueLogMapper::new(QueueLogConfig::default()).map_all(bytes)
}

// === Batches ===

/// One pre-encoded `AgentMessage{batch}` and its last seq.
pub struct EncodedBatch {
    /// Its last seq.
    pub last_seq: u64,
    /// Events in it.
    pub events: usize,
    /// The whole `AgentMessage`.
    pub bytes: Vec<u8>,
}

/// `n` Batches of [`BATCH_EVENTS`] events of `agent_id` from seq
/// `first_seq`, events cycling through `pool` as the agent would encode them
/// (queue_log source, capture clocks one ms apart). Returns the Batches and
/// the bytes of the event encodings alone.
pub fn encode_batches(pool: &[FeedEvent], agent_id: &str, first_seq: u64, n: usize) -> (Vec<EncodedBatch>, u64) {
    let mut batches = Vec::with_capacity(n);
    let mut event_bytes = 0u64;
    let mut seq = first_seq;
    for _ in 0..n {
        let mut events = Vec::with_capacity(BATCH_EVENTS);
        for _ in 0..BATCH_EVENTS {
            let fe = pool[(seq as usize - 1) % pool.len()].clone();
            let time = CaptureTime {
                wall: 1_795_356_677_000_000_000 + seq as i64 * 1_000_000,
                monotonic: seq * 1_000_000,
                clock_synced: true,
            };
            let event = fe.into_event(
                EventId { agent_id: agent_id.to_owned(), seq },
                "bench",
                SourceKind::AsteriskQueueLog,
                time,
            );
            let event = pb::Event::from(event);
            event_bytes += event.encoded_len() as u64;
            events.push(event);
            seq += 1;
        }
        batches.push(encode_batch(events));
    }
    (batches, event_bytes)
}

/// One `AgentMessage{batch}` of `events` (non-empty, consecutive seqs), with
/// its CRC, encoded.
pub fn encode_batch(events: Vec<pb::Event>) -> EncodedBatch {
    let crc32c = callkpi_proto::events_crc32c(&events);
    let (first, last, n) = (events[0].seq, events[events.len() - 1].seq, events.len());
    let msg =
        pb::AgentMessage { msg: Some(OutMsg::Batch(pb::Batch { first_seq: first, last_seq: last, events, crc32c })) };
    EncodedBatch { last_seq: last, events: n, bytes: msg.encode_to_vec() }
}

// === the Ingest client ===

/// What the client sends: Hello (prost) or a pre-encoded Batch.
enum Outgoing {
    Message(pb::AgentMessage),
    Encoded(Vec<u8>),
}

#[derive(Clone, Copy, Default)]
struct BenchCodec;
#[derive(Clone, Copy, Default)]
struct OutEncoder;
#[derive(Clone, Copy, Default)]
struct InDecoder;

impl Codec for BenchCodec {
    type Encode = Outgoing;
    type Decode = pb::AggregatorMessage;
    type Encoder = OutEncoder;
    type Decoder = InDecoder;
    fn encoder(&mut self) -> OutEncoder {
        OutEncoder
    }
    fn decoder(&mut self) -> InDecoder {
        InDecoder
    }
}

impl Encoder for OutEncoder {
    type Item = Outgoing;
    type Error = Status;
    fn encode(&mut self, item: Outgoing, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Outgoing::Message(m) => m.encode(buf).map_err(|e| Status::internal(e.to_string())),
            Outgoing::Encoded(bytes) => {
                buf.put_slice(&bytes);
                Ok(())
            }
        }
    }
}

impl Decoder for InDecoder {
    type Item = pb::AggregatorMessage;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<pb::AggregatorMessage>, Status> {
        pb::AggregatorMessage::decode(buf).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

/// One client's timing: from the common start to its last Ack.
pub struct ClientRun {
    /// When it sent its first Batch (after every client was welcomed).
    pub start: Instant,
    /// When its last Ack arrived.
    pub end: Instant,
    /// Events acked.
    pub events: u64,
}

/// One agent's stream: Hello, Welcome (whose resume point must be
/// `first_seq - 1`), then the Batches with at most
/// `Welcome.max_in_flight_batches` unacked, until the last is acked.
async fn client(
    port: u16,
    agent_id: String,
    mut batches: mpsc::Receiver<EncodedBatch>,
    first_seq: u64,
    spool_last_seq: u64,
    start: Arc<tokio::sync::Barrier>,
) -> Result<ClientRun, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| format!("connect: {e}"))?;
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(16 << 20);
    let (tx, rx) = mpsc::channel::<Outgoing>(8);
    let hello = pb::Hello {
        agent_id: agent_id.clone(),
        site: "bench".into(),
        version: "0.0.0-bench".into(),
        wall_clock_ns: 1,
        monotonic_ns: 1,
        clock_synced: true,
        spool_first_seq: first_seq,
        spool_last_seq,
        spool_first_captured_ns: 0,
        spool_bytes: 0,
        contract_revision: callkpi_proto::CONTRACT_REVISION,
    };
    tx.send(Outgoing::Message(pb::AgentMessage { msg: Some(OutMsg::Hello(hello)) }))
        .await
        .map_err(|_| "closed before Hello")?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let auth = format!("Bearer {}", token_of(&agent_id)).parse().map_err(|_| "token header")?;
    request.metadata_mut().insert("authorization", auth);
    grpc.ready().await.map_err(|e| format!("not ready: {e}"))?;
    let mut inbound = grpc
        .streaming(request, PathAndQuery::from_static("/callkpi.v1.Ingest/Stream"), BenchCodec)
        .await
        .map_err(|s| format!("stream: {s}"))?
        .into_inner();
    let patience = Duration::from_secs(60);
    let welcome = match tokio::time::timeout(patience, inbound.message()).await {
        Ok(Ok(Some(pb::AggregatorMessage { msg: Some(InMsg::Welcome(w)) }))) => w,
        other => return Err(format!("{agent_id}: expected Welcome, got {other:?}")),
    };
    if welcome.resume_after_seq != first_seq - 1 {
        return Err(format!("{agent_id}: resume_after_seq {} != {}", welcome.resume_after_seq, first_seq - 1));
    }
    let max_in_flight = welcome.max_in_flight_batches.max(1) as usize;
    let mut events = 0u64;
    start.wait().await;
    let started = Instant::now();
    let mut in_flight: VecDeque<u64> = VecDeque::new();
    let mut open = true;
    loop {
        // Send while the window allows; wait for the producer only when
        // nothing is in flight (otherwise an Ack is what comes next).
        while open && in_flight.len() < max_in_flight {
            let next = if in_flight.is_empty() {
                batches.recv().await
            } else {
                match batches.try_recv() {
                    Ok(b) => Some(b),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(b) = next else {
                open = false;
                break;
            };
            events += b.events as u64;
            in_flight.push_back(b.last_seq);
            tx.send(Outgoing::Encoded(b.bytes)).await.map_err(|_| format!("{agent_id}: stream closed"))?;
        }
        if in_flight.is_empty() {
            if open {
                continue;
            }
            break;
        }
        match tokio::time::timeout(patience, inbound.message()).await {
            Ok(Ok(Some(pb::AggregatorMessage { msg: Some(InMsg::Ack(a)) }))) => {
                while in_flight.front().is_some_and(|&s| s <= a.up_to_seq) {
                    in_flight.pop_front();
                }
            }
            Ok(Ok(Some(pb::AggregatorMessage { msg: Some(InMsg::HeartbeatAck(_)) }))) => {}
            other => return Err(format!("{agent_id}: expected Ack, got {other:?}")),
        }
    }
    let end = Instant::now();
    drop(tx);
    Ok(ClientRun { start: started, end, events })
}

/// Result of one concurrent ingest run.
pub struct IngestRun {
    /// Events acked by all clients.
    pub events: u64,
    /// First Batch sent to last Ack received.
    pub elapsed: Duration,
}

impl IngestRun {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs one client per `(agent_id, first_seq, batches)` concurrently on
/// `rt`; every client is welcomed before any sends a Batch.
pub fn ingest(rt: &tokio::runtime::Runtime, port: u16, work: Vec<(String, u64, Vec<EncodedBatch>)>) -> IngestRun {
    let barrier = Arc::new(tokio::sync::Barrier::new(work.len()));
    let runs: Vec<ClientRun> = rt.block_on(async {
        let tasks: Vec<_> = work
            .into_iter()
            .map(|(agent, first, batches)| {
                let last = batches.last().map_or(first - 1, |b| b.last_seq);
                let (tx, rx) = mpsc::channel(batches.len().max(1));
                for b in batches {
                    tx.try_send(b).expect("room for every Batch");
                }
                tokio::spawn(client(port, agent, rx, first, last, barrier.clone()))
            })
            .collect();
        let mut runs = Vec::new();
        for t in tasks {
            match tokio::time::timeout(Duration::from_secs(600), t).await {
                Ok(Ok(Ok(run))) => runs.push(run),
                Ok(Ok(Err(e))) => panic!("ingest client failed: {e}"),
                Ok(Err(e)) => panic!("ingest client task: {e}"),
                Err(_) => panic!("ingest client took over 600 s"),
            }
        }
        runs
    });
    let start = runs.iter().map(|r| r.start).min().expect("a client");
    let end = runs.iter().map(|r| r.end).max().expect("a client");
    IngestRun { events: runs.iter().map(|r| r.events).sum(), elapsed: end - start }
}

/// One client on `rt` streaming what `batches` yields (seqs from
/// `first_seq`) until the channel closes and all is acked; `spool_last_seq`
/// is what its Hello announces.
pub fn spawn_client(
    rt: &tokio::runtime::Runtime,
    port: u16,
    agent_id: &str,
    first_seq: u64,
    spool_last_seq: u64,
    batches: mpsc::Receiver<EncodedBatch>,
) -> tokio::task::JoinHandle<Result<ClientRun, String>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(1));
    rt.spawn(client(port, agent_id.to_owned(), batches, first_seq, spool_last_seq, barrier))
}

/// A two-worker runtime for the clients (the machine has two cores; the
/// aggregator shares them).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// The median of `v` (sorted in place).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The 1-minute load average, to tell a quiet machine from a busy one.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map_or_else(|_| "?".to_owned(), |s| s.split(' ').take(3).collect::<Vec<_>>().join(" "))
}

/// `1234567.0` as `1.23 M`, `45600.0` as `45.6 k`.
pub fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}
