//! AMI source against an in-test server replaying the real recording.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callkpi_agent::clock::Clock;
use callkpi_agent::config::{AmiSourceConfig, Secret};
use callkpi_agent::metrics::Metrics;
use callkpi_agent::sources::ami::AmiSource;
use callkpi_feeds::FeedEvent;
use callkpi_feeds::ami::{AmiMapper, AmiMapperConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{TestSpool, eventually, fixture, kind_name, same, spool_config, trace};

const PATIENCE: Duration = Duration::from_secs(20);
const BANNER: &[u8] = b"Asterisk Call Manager/11.0.0\r\n";

/// The recording after its banner line.
fn transcript() -> Vec<u8> {
    let all = std::fs::read(fixture("ami.log")).expect("fixture");
    assert!(all.starts_with(BANNER));
    all[BANNER.len()..].to_vec()
}

fn expected(transcript: &[u8]) -> Vec<FeedEvent> {
    let mut out = Vec::new();
    AmiMapper::new(AmiMapperConfig::default()).map_bytes(transcript, &mut out);
    out
}

/// Reads one action (up to the empty line) and returns its headers.
async fn read_action(
    stream: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> Option<BTreeMap<String, String>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(
                text.lines().filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            );
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What the fake Asterisk saw.
#[derive(Debug, Default)]
struct Seen {
    logins: u32,
    pings: u32,
    actions: Vec<String>,
}

/// Serves one connection: banner, Login → Success, Ping → Pong, then
/// `payload` in odd-sized chunks; closes after it when `close` is set, else
/// stays up until the client goes.
async fn serve(stream: TcpStream, payload: Vec<u8>, close: bool, seen: Arc<Mutex<Seen>>) {
    let (mut rd, wr) = stream.into_split();
    let wr = Arc::new(Mutex::new(wr));
    wr.lock().await.write_all(BANNER).await.expect("banner");
    let mut buf = Vec::new();
    let login = read_action(&mut rd, &mut buf).await.expect("login");
    assert_eq!(login.get("Action").map(String::as_str), Some("Login"));
    assert_eq!(login.get("Username").map(String::as_str), Some("callkpi"));
    assert_eq!(login.get("Secret").map(String::as_str), Some("pw"));
    assert_eq!(login.get("Events").map(String::as_str), Some("on"));
    let id = login.get("ActionID").cloned().unwrap_or_default();
    seen.lock().await.logins += 1;
    let reply = format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n");
    wr.lock().await.write_all(reply.as_bytes()).await.expect("login reply");
    // Answer pings concurrently.
    let pong_wr = wr.clone();
    let pong_seen = seen.clone();
    let answering = tokio::spawn(async move {
        while let Some(action) = read_action(&mut rd, &mut buf).await {
            let name = action.get("Action").cloned().unwrap_or_default();
            pong_seen.lock().await.actions.push(name.clone());
            if name == "Ping" {
                pong_seen.lock().await.pings += 1;
                let id = action.get("ActionID").cloned().unwrap_or_default();
                let pong = format!(
                    "Response: Success\r\nActionID: {id}\r\nPing: Pong\r\nTimestamp: 1795356680.000000\r\n\r\n"
                );
                if pong_wr.lock().await.write_all(pong.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    });
    for chunk in payload.chunks(7919) {
        if wr.lock().await.write_all(chunk).await.is_err() {
            return;
        }
    }
    if close {
        // A graceful close: FIN, then keep reading until the client goes, so
        // no unread action makes the kernel answer with a RST (which would
        // discard what the client has not read yet).
        let _ = wr.lock().await.shutdown().await;
    }
    let _ = answering.await;
}

fn source(addr: SocketAddr, spool: &TestSpool, metrics: &Metrics, ping_ms: u64) -> (CancellationToken, JoinHandle<()>) {
    let config = AmiSourceConfig {
        name: "ami".to_owned(),
        address: addr.to_string(),
        username: "callkpi".to_owned(),
        secret: Some(Secret::new("pw")),
        ping_interval_ms: ping_ms,
        backoff_initial_ms: 50,
        backoff_max_ms: 200,
        ..AmiSourceConfig::default()
    };
    let src = AmiSource::new(config, Secret::new("pw"), spool.sink.clone(), Clock::new(), metrics.source("ami"));
    let stop = CancellationToken::new();
    (stop.clone(), tokio::spawn(src.run(stop)))
}

fn check(spool: &TestSpool, expected: &[FeedEvent]) {
    let stored = spool.events();
    assert_eq!(stored.len(), expected.len());
    for (i, (s, e)) in stored.iter().zip(expected).enumerate() {
        assert!(same(s, e), "event {i} differs: stored {s:?}, expected {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_the_recording_and_reconnects_after_asterisk_shutdown() {
    let _guard = trace();
    let transcript = transcript();
    let expected = expected(&transcript);
    let mut kinds = BTreeMap::new();
    for e in &expected {
        *kinds.entry(kind_name(&e.kind)).or_insert(0) += 1;
    }
    assert_eq!(kinds.get("QueueJoin"), Some(&51), "{kinds:?}");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server_seen = seen.clone();
    let server = tokio::spawn(async move {
        // First connection: the whole recording, which ends with Event: Shutdown.
        let (s, _) = listener.accept().await.expect("accept");
        tokio::spawn(serve(s, transcript, false, server_seen.clone()));
        // Second: the restarted Asterisk, idle but answering pings.
        let (s, _) = listener.accept().await.expect("accept again");
        serve(s, Vec::new(), false, server_seen).await;
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let spool = TestSpool::open(&spool_config(dir.path()));
    let metrics = Metrics::new();
    let (stop, task) = source(addr, &spool, &metrics, 100);
    eventually(PATIENCE, "every mapped event", || spool.events().len() >= expected.len()).await;
    eventually(PATIENCE, "a second login", || seen.try_lock().is_ok_and(|s| s.logins == 2)).await;
    // Idle with pings answered: the connection stays up.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let m = metrics.source("ami");
    assert_eq!(m.reconnects.get(), 1, "one reconnect after the Shutdown event");
    assert_eq!(m.connected.get(), 1);
    {
        let s = seen.lock().await;
        assert_eq!(s.logins, 2, "no reconnect while pings are answered");
        assert!(s.pings >= 3, "pings sent: {}", s.pings);
        assert!(s.actions.iter().any(|a| a == "QueueStatus"));
    }
    stop.cancel();
    task.await.expect("source ends");
    server.abort();
    check(&spool, &expected);
    assert_eq!(m.events.get(), expected.len() as u64);
    assert_eq!(m.spooled.get(), expected.len() as u64);
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_server_closes_the_socket() {
    let _guard = trace();
    let transcript = transcript();
    let expected = expected(&transcript);
    // Split at a message boundary near the middle.
    let mid = transcript.len() / 2;
    let cut = mid + transcript[mid..].windows(4).position(|w| w == b"\r\n\r\n").expect("boundary") + 4;
    let (first, second) = (transcript[..cut].to_vec(), transcript[cut..].to_vec());

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
    let (stop, task) = source(addr, &spool, &metrics, 5_000);
    eventually(PATIENCE, "every mapped event", || spool.events().len() >= expected.len()).await;
    stop.cancel();
    task.await.expect("source ends");
    server.abort();
    assert!(metrics.source("ami").reconnects.get() >= 1);
    check(&spool, &expected);
    spool.close().await;
}

/// manager.conf `timestampevents = no` (Asterisk's default): no event has a
/// `Timestamp:`, so the source stamps each with the time it read it, and
/// the engine uses that (`EventTime::kpi_time`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_timestamps_events_carry_the_capture_time() {
    let _guard = trace();
    let stamped = transcript();
    let mut transcript = Vec::with_capacity(stamped.len());
    for line in stamped.split_inclusive(|&b| b == b'\n').filter(|l| !l.starts_with(b"Timestamp:")) {
        transcript.extend_from_slice(line);
    }
    let expected = expected(&transcript);
    assert_eq!(expected.len(), self::expected(&stamped).len(), "the same events, timestamps aside");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        serve(s, transcript, false, seen).await;
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = TestSpool::open(&spool_config(dir.path()));
    let metrics = Metrics::new();
    let before = jiff::Timestamp::now().as_nanosecond();
    let (stop, task) = source(addr, &spool, &metrics, 5_000);
    eventually(PATIENCE, "every mapped event", || spool.events().len() >= expected.len()).await;
    let after = jiff::Timestamp::now().as_nanosecond();
    stop.cancel();
    task.await.expect("source ends");
    server.abort();
    check(&spool, &expected);
    let stored = spool.events();
    // QueueMember replies still say when members logged in (LoginTime).
    let timeless: Vec<_> = stored.iter().filter(|e| e.time.source_time.is_none()).collect();
    assert!(timeless.len() * 10 > stored.len() * 9, "{} of {}", timeless.len(), stored.len());
    for e in timeless {
        let t = i128::from(e.time.kpi_time());
        assert!((before..=after).contains(&t), "{e:?} not stamped while the test ran");
    }
    spool.close().await;
}
