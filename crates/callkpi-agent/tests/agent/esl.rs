//! ESL source against an in-test FreeSWITCH event socket: login and
//! subscription, the real recorded `CHANNEL_CREATE`, a mod_callcenter call
//! written from `mod_callcenter.c` (as in the feeds crate's tests), a
//! disconnect notice, and a restarted switch.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use callkpi_agent::clock::Clock;
use callkpi_agent::config::{EslSourceConfig, Secret};
use callkpi_agent::metrics::Metrics;
use callkpi_agent::sources::esl::EslSource;
use callkpi_feeds::FeedEvent;
use callkpi_feeds::esl::EslMapper;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{TestSpool, eventually, kind_name, same, spool_config, trace};

const PATIENCE: Duration = Duration::from_secs(20);
/// The recorded switch's `Core-UUID`.
const CORE_A: &str = "ed56dab6-a6fc-11e4-960f-6f83a2e5e50a";
/// The same switch after a restart.
const CORE_B: &str = "0b5e55ed-0000-4000-8000-00000000000b";
const T0_US: i64 = 1_795_356_000_000_000; // 2026-11-22T13:20:00Z
const SUPPORT: &str = "support@default";
const ALICE: &str = "1001@default";

/// The `text/event-plain` frame of the real recording (after its login and
/// disconnect notice), byte for byte.
fn recorded_event() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/freeswitch/eventstream.txt");
    let all = std::fs::read(path).expect("fixture");
    let at = all.windows(16).position(|w| w == b"Content-Length: ").expect("a frame with a body");
    // The first Content-Length is the disconnect notice's; the event's is the next.
    let next = at + 16 + all[at + 16..].windows(16).position(|w| w == b"Content-Length: ").expect("the event");
    all[next..].to_vec()
}

/// Writes an event stream as FreeSWITCH sends it to an `event plain` listener.
struct Fs {
    core: &'static str,
    out: Vec<u8>,
}

impl Fs {
    fn new(core: &'static str) -> Self {
        Self { core, out: Vec::new() }
    }

    /// One `text/event-plain` frame `secs` after T0. Values are written
    /// plain: none of them holds a character FreeSWITCH would escape.
    fn event(&mut self, secs: f64, headers: &[(&str, &str)]) -> &mut Self {
        let ts = (T0_US + (secs * 1e6).round() as i64).to_string();
        let mut body = String::new();
        for (k, v) in headers.iter().copied().chain([("Core-UUID", self.core), ("Event-Date-Timestamp", &ts)]) {
            body.push_str(&format!("{k}: {v}\n"));
        }
        body.push('\n');
        self.out.extend_from_slice(
            format!("Content-Length: {}\nContent-Type: text/event-plain\n\n{body}", body.len()).as_bytes(),
        );
        self
    }

    fn chan(&mut self, secs: f64, name: &str, uuid: &str, extra: &[(&str, &str)]) -> &mut Self {
        let mut h = vec![("Event-Name", name), ("Unique-ID", uuid), ("Channel-Call-UUID", uuid)];
        h.extend_from_slice(extra);
        self.event(secs, &h)
    }

    fn cc(&mut self, secs: f64, action: &str, member: &str, extra: &[(&str, &str)]) -> &mut Self {
        let mut h = vec![
            ("Event-Name", "CUSTOM"),
            ("Event-Subclass", "callcenter::info"),
            ("CC-Queue", SUPPORT),
            ("CC-Action", action),
            ("CC-Member-UUID", member),
            ("CC-Member-Session-UUID", member),
        ];
        h.extend_from_slice(extra);
        self.event(secs, &h)
    }

    /// A caller joins `support` at `t`+1 s, Alice is offered the call, answers
    /// at `t`+9 s and the caller hangs up at `t`+60 s.
    fn queue_call(&mut self, t: f64, caller: &str, leg: &str) -> &mut Self {
        let ccm = [("CC-Member-CID-Number", "0612345678"), ("Unique-ID", caller), ("Channel-Call-UUID", caller)];
        self.chan(
            t,
            "CHANNEL_CREATE",
            caller,
            &[
                ("Call-Direction", "inbound"),
                ("Channel-Name", "sofia/external/0612345678@carrier.example"),
                ("Caller-Caller-ID-Number", "0612345678"),
                ("Caller-Destination-Number", "0155501234"),
            ],
        )
        .cc(t + 1.0, "member-queue-start", caller, &ccm)
        .cc(t + 2.0, "agent-offering", caller, &[("CC-Agent", ALICE), ("CC-Agent-Type", "callback")])
        .chan(
            t + 2.01,
            "CHANNEL_CREATE",
            leg,
            &[
                ("Call-Direction", "outbound"),
                ("Channel-Name", "sofia/internal/1001@10.0.0.2"),
                ("variable_cc_side", "agent"),
                ("variable_cc_agent", ALICE),
                ("variable_cc_queue", SUPPORT),
                ("variable_cc_member_session_uuid", caller),
            ],
        )
        .cc(t + 9.0, "bridge-agent-start", caller, &[("CC-Agent", ALICE), ("CC-Agent-UUID", leg), ("Unique-ID", leg)])
        .event(t + 20.0, &[("Event-Name", "HEARTBEAT")])
        .chan(t + 60.0, "CHANNEL_HANGUP_COMPLETE", caller, &[("Hangup-Cause", "NORMAL_CLEARING")])
        .chan(
            t + 60.2,
            "CHANNEL_HANGUP_COMPLETE",
            leg,
            &[("Hangup-Cause", "NORMAL_CLEARING"), ("variable_sip_hangup_disposition", "send_bye")],
        )
        .cc(
            t + 60.3,
            "bridge-agent-end",
            caller,
            &[("CC-Agent", ALICE), ("CC-Agent-UUID", leg), ("CC-Hangup-Cause", "NORMAL_CLEARING")],
        )
        .cc(t + 60.4, "member-queue-end", caller, &[("CC-Cause", "Terminated")])
    }

    fn bytes(&self) -> Vec<u8> {
        self.out.clone()
    }
}

fn map(mapper: &mut EslMapper, bytes: &[u8]) -> Vec<FeedEvent> {
    let mut out = Vec::new();
    mapper.map_bytes(bytes, &mut out);
    out
}

/// What the fake switch saw.
#[derive(Debug, Default)]
struct Seen {
    logins: u32,
    subscriptions: Vec<String>,
}

/// Reads one command (up to its empty line).
async fn read_command(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 2);
            return Some(text);
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Serves one connection as `mod_event_socket` does: `auth/request`, checks
/// the password and the subscription, then writes `payload` in odd-sized
/// chunks. With `goodbye`, ends with a disconnect notice and closes (the
/// switch stopping); else stays up until the client goes.
async fn serve(mut stream: TcpStream, payload: Vec<u8>, goodbye: bool, seen: Arc<Mutex<Seen>>) {
    stream.write_all(b"Content-Type: auth/request\n\n").await.expect("auth request");
    let mut buf = Vec::new();
    let auth = read_command(&mut stream, &mut buf).await.expect("auth");
    if auth != "auth pw" {
        let _ = stream.write_all(b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n").await;
        return;
    }
    seen.lock().await.logins += 1;
    stream.write_all(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n").await.expect("auth reply");
    let sub = read_command(&mut stream, &mut buf).await.expect("subscription");
    assert!(sub.starts_with("event plain ") && sub.ends_with(" CUSTOM callcenter::info"), "{sub}");
    seen.lock().await.subscriptions.push(sub);
    stream
        .write_all(b"Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n")
        .await
        .expect("subscription reply");
    for chunk in payload.chunks(1237) {
        if stream.write_all(chunk).await.is_err() {
            return;
        }
    }
    if goodbye {
        let notice = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";
        let frame = format!("Content-Length: {}\nContent-Type: text/disconnect-notice\n\n{notice}", notice.len());
        let _ = stream.write_all(frame.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
    // Until the client goes (its `exit`, or its close).
    while read_command(&mut stream, &mut buf).await.is_some() {}
}

fn source(
    addr: SocketAddr,
    password: &str,
    spool: &TestSpool,
    metrics: &Metrics,
) -> (CancellationToken, JoinHandle<()>) {
    let config = EslSourceConfig {
        name: "fs".to_owned(),
        address: addr.to_string(),
        password: Some(Secret::new(password)),
        backoff_initial_ms: 50,
        backoff_max_ms: 300,
        ..EslSourceConfig::default()
    };
    let src = EslSource::new(config, Secret::new(password), spool.sink.clone(), Clock::new(), metrics.source("fs"));
    let stop = CancellationToken::new();
    (stop.clone(), tokio::spawn(src.run(stop)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_events_and_reconnects_to_a_restarted_switch() {
    let _guard = trace();
    // First switch: the recorded CHANNEL_CREATE and one queue call, then goodbye.
    let mut first = recorded_event();
    first.extend(
        Fs::new(CORE_A)
            .queue_call(0.0, "c1a11e40-0000-4000-8000-000000000001", "a9e47000-0000-4000-8000-0000000000a1")
            .bytes(),
    );
    // The restarted switch: another call.
    let second = Fs::new(CORE_B)
        .queue_call(300.0, "c1a11e40-0000-4000-8000-000000000002", "a9e47000-0000-4000-8000-0000000000a2")
        .bytes();
    // The source starts a fresh mapper for the restarted switch.
    let mut expected = map(&mut EslMapper::default(), &first);
    expected.extend(map(&mut EslMapper::default(), &second));
    let mut kinds = BTreeMap::new();
    for e in &expected {
        *kinds.entry(kind_name(&e.kind)).or_insert(0) += 1;
    }
    for kind in ["CallOffered", "QueueJoin", "Ringing", "Answered", "Hangup"] {
        assert!(kinds.get(kind).is_some_and(|n| *n >= 2), "{kind} missing from {kinds:?}");
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server_seen = seen.clone();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        serve(s, first, true, server_seen.clone()).await;
        let (s, _) = listener.accept().await.expect("accept again");
        serve(s, second, false, server_seen).await;
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let spool = TestSpool::open(&spool_config(dir.path()));
    let metrics = Metrics::new();
    let (stop, task) = source(addr, "pw", &spool, &metrics);
    eventually(PATIENCE, "every mapped event", || spool.events().len() >= expected.len()).await;
    let m = metrics.source("fs");
    eventually(PATIENCE, "the second session up", || {
        m.reconnects.get() == 1 && m.connected.get() == 1 && seen.try_lock().is_ok_and(|s| s.subscriptions.len() == 2)
    })
    .await;
    // Up and idle: no further reconnect.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(m.reconnects.get(), 1, "one reconnect after the disconnect notice");
    {
        let s = seen.lock().await;
        assert_eq!(s.logins, 2);
        assert_eq!(s.subscriptions.len(), 2);
    }
    stop.cancel();
    task.await.expect("source ends");
    server.abort();
    let stored = spool.events();
    assert_eq!(stored.len(), expected.len());
    for (i, (s, e)) in stored.iter().zip(&expected).enumerate() {
        assert!(same(s, e), "event {i} differs: stored {s:?}, expected {e:?}");
        assert_eq!(s.source, callkpi_core::event::SourceKind::FreeswitchEsl);
    }
    assert_eq!(m.events.get(), expected.len() as u64);
    assert_eq!(m.spooled.get(), expected.len() as u64);
    assert_eq!(m.malformed.get(), 0);
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_retried_slowly_and_stores_nothing() {
    let _guard = trace();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let attempts = Arc::new(Mutex::new(0u32));
    let counted = attempts.clone();
    let server = tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.expect("accept");
            *counted.lock().await += 1;
            let payload = Fs::new(CORE_A).queue_call(0.0, "c1", "a1").bytes();
            tokio::spawn(serve(s, payload, false, Arc::new(Mutex::new(Seen::default()))));
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = TestSpool::open(&spool_config(dir.path()));
    let metrics = Metrics::new();
    let (stop, task) = source(addr, "wrong", &spool, &metrics);
    eventually(PATIENCE, "a first attempt", || attempts.try_lock().is_ok_and(|n| *n >= 1)).await;
    // Refusals wait the longest backoff (150-300 ms jittered), not the first (50 ms).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let n = *attempts.lock().await;
    assert!((2..=8).contains(&n), "{n} attempts in about 1 s");
    stop.cancel();
    task.await.expect("source ends");
    server.abort();
    assert!(spool.events().is_empty());
    assert_eq!(metrics.source("fs").connected.get(), 0);
    spool.close().await;
}
