//! HEP source: the real Kamailio recording (`tests/fixtures/sip-hep/hep.raw`,
//! 885 HEPv3 datagrams) sent to the listener over UDP and over TCP on
//! 127.0.0.1; the stored events must be what the feeds tracker makes of the
//! same file offline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use callkpi_agent::clock::Clock;
use callkpi_agent::config::HepSourceConfig;
use callkpi_agent::metrics::Metrics;
use callkpi_agent::sources::hep::{HepSockets, HepSource};
use callkpi_core::event::{Event, SourceKind};
use callkpi_feeds::FeedEvent;
use callkpi_feeds::hep::capture;
use callkpi_feeds::sip::{AgentEntry, QueueEntry, SipTracker, SipTrackerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{TestSpool, eventually, spool_config, trace};

const PATIENCE: Duration = Duration::from_secs(20);

/// The recording's datagrams, in capture order.
fn datagrams() -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sip-hep/hep.raw");
    let bytes = std::fs::read(path).expect("fixture");
    let all: Vec<Vec<u8>> = capture::datagrams(&bytes).map(|d| d.expect("readable capture").data.to_vec()).collect();
    assert_eq!(all.len(), 885);
    all
}

/// The recording harness's site: agents 2001-2006 at 127.0.0.3-8, the ring
/// group 2100 as a queue, every other inbound call in "direct".
fn site() -> SipTrackerConfig {
    let agents = (1..=6)
        .map(|n| AgentEntry {
            name: format!("200{n}"),
            address: Some(format!("127.0.0.{}", n + 2).parse().expect("address")),
            extension: None,
        })
        .collect();
    SipTrackerConfig {
        agents,
        queues: vec![QueueEntry { name: "group".into(), numbers: vec!["2100".into()], prefixes: vec![] }],
        default_queue: Some("direct".into()),
        ..SipTrackerConfig::default()
    }
}

/// What the tracker makes of `datagrams` offline, and how many it counted
/// malformed; with `finish`, calls still open at the end are finished.
fn offline(datagrams: &[Vec<u8>], config: SipTrackerConfig, finish: bool) -> (Vec<FeedEvent>, u64) {
    let mut tracker = SipTracker::new(config);
    let mut out = Vec::new();
    for d in datagrams {
        tracker.push_datagram(d, None, &mut out);
    }
    if finish {
        tracker.finish(&mut out);
    }
    (out, tracker.unparsed().malformed)
}

type Key = (Option<i64>, String, String);

/// Events grouped by call, each call's events sorted.
fn by_call<'a>(events: impl Iterator<Item = (&'a str, Key)>) -> BTreeMap<String, Vec<Key>> {
    let mut calls: BTreeMap<String, Vec<Key>> = BTreeMap::new();
    for (call, key) in events {
        calls.entry(call.to_owned()).or_default().push(key);
    }
    calls.values_mut().for_each(|v| v.sort());
    calls
}

fn expected_calls(events: &[FeedEvent]) -> BTreeMap<String, Vec<Key>> {
    by_call(events.iter().map(|e| (e.call_id.as_str(), (e.source_time, e.leg_id.clone(), format!("{:?}", e.kind)))))
}

fn stored_calls(events: &[Event]) -> BTreeMap<String, Vec<Key>> {
    assert!(events.iter().all(|e| e.source == SourceKind::SipHep));
    by_call(
        events.iter().map(|e| (e.call_id.as_str(), (e.time.source_time, e.leg_id.clone(), format!("{:?}", e.kind)))),
    )
}

struct Running {
    udp: Option<SocketAddr>,
    tcp: Option<SocketAddr>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

async fn source(config: HepSourceConfig, spool: &TestSpool, metrics: &Metrics) -> Running {
    let sockets = HepSockets::bind(&config).await.expect("binds");
    let (udp, tcp) = (sockets.udp_addr(), sockets.tcp_addr());
    let src = HepSource::new(config, sockets, spool.sink.clone(), Clock::new(), metrics.source("hep"));
    let stop = CancellationToken::new();
    let task = tokio::spawn(src.run(stop.clone()));
    Running { udp, tcp, stop, task }
}

/// Sends `datagrams` to `to`, pausing now and then so the kernel's socket
/// buffer never overflows (UDP would drop, and the test is about mapping).
async fn send_udp(to: SocketAddr, datagrams: &[Vec<u8>]) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    for (i, d) in datagrams.iter().enumerate() {
        socket.send_to(d, to).await.expect("send");
        if i % 16 == 15 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn config(udp: bool, tcp: bool, sip: SipTrackerConfig) -> HepSourceConfig {
    let on = |yes: bool| if yes { "127.0.0.1:0".to_owned() } else { "disabled".to_owned() };
    HepSourceConfig {
        listen_udp: on(udp),
        listen_tcp: on(tcp),
        expire_interval_ms: 100,
        sip,
        ..HepSourceConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recording_over_udp_gives_the_offline_events_and_garbage_is_counted() {
    let _guard = trace();
    let recording = datagrams();
    let garbage: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        b"HEP3".to_vec(),
        // A HEPv3 header whose length says more than the datagram holds.
        b"HEP3\x01\x00\x00\x00\x00\x01\x00\x07\x02".to_vec(),
        vec![0xff; 300],
    ];
    // Garbage first, then the recording, in one stream of datagrams.
    let sent: Vec<Vec<u8>> = garbage.iter().chain(&recording).cloned().collect();
    let (expected, malformed) = offline(&sent, site(), false);
    assert!(malformed >= garbage.len() as u64);
    let expected_calls = expected_calls(&expected);
    assert!(expected_calls.len() >= 40, "{} calls", expected_calls.len());

    let dir = tempfile::tempdir().expect("tempdir");
    let spool = TestSpool::open(&spool_config(dir.path()));
    let metrics = Metrics::new();
    let run = source(config(true, false, site()), &spool, &metrics).await;
    send_udp(run.udp.expect("udp"), &sent).await;
    eventually(PATIENCE, "every event of the recording", || spool.events().len() >= expected.len()).await;
    // Nothing more comes while the recording's last calls linger (32 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop.cancel();
    run.task.await.expect("source ends");
    let stored = spool.events();
    assert_eq!(stored_calls(&stored), expected_calls);
    let m = metrics.source("hep");
    assert_eq!(m.malformed.get(), malformed, "garbage datagrams counted as malformed");
    assert_eq!(m.events.get(), expected.len() as u64);
    assert_eq!(m.spooled.get(), expected.len() as u64);
    assert_eq!(m.read_bytes.get(), sent.iter().map(|d| d.len() as u64).sum::<u64>());
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_queue_rule_inbound_calls_join_a_queue_named_after_the_dialled_number() {
    let _guard = trace();
    let recording = datagrams();
    let (expected, _) = offline(&recording, SipTrackerConfig::default(), false);
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = TestSpool::open(&spool_config(dir.path()));
    let metrics = Metrics::new();
    let run = source(config(true, false, SipTrackerConfig::default()), &spool, &metrics).await;
    send_udp(run.udp.expect("udp"), &recording).await;
    eventually(PATIENCE, "every event of the recording", || spool.events().len() >= expected.len()).await;
    run.stop.cancel();
    run.task.await.expect("source ends");
    let mut joins: BTreeMap<String, u64> = BTreeMap::new();
    for e in spool.events() {
        if let callkpi_core::event::EventKind::QueueJoin { queue, .. } = &e.kind {
            *joins.entry(queue.clone()).or_insert(0) += 1;
        }
    }
    // The recording's 50 inbound calls, by the number dialled (the harness's
    // call mix, tests/fixtures/sip-hep/README.md): none is left out.
    let numbers: Vec<&str> = joins.keys().map(String::as_str).collect();
    assert_eq!(numbers, ["2001", "2002", "2003", "2004", "2005", "2006", "2100", "2999"]);
    assert_eq!(joins.values().sum::<u64>(), 50, "{joins:?}");
    spool.close().await;
}

#[tokio::test]
async fn recv_buffer_bytes_sets_the_udp_socket_buffer_within_the_system_cap() {
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .expect("Linux: /proc/sys/net/core/rmem_max")
        .trim()
        .parse()
        .expect("a number");
    let asked = 96 * 1024;
    let default = HepSockets::bind(&config(true, false, site())).await.expect("binds");
    let sized = HepSockets::bind(&HepSourceConfig { recv_buffer_bytes: asked as u64, ..config(true, false, site()) })
        .await
        .expect("binds");
    // Linux stores twice the size set (bookkeeping), capped at rmem_max.
    assert_eq!(sized.udp_recv_buffer(), Some(2 * asked.min(rmem_max)));
    assert!(default.udp_recv_buffer().is_some_and(|b| b > 0));
    // Above the cap the bind still succeeds, with what the kernel allows.
    let capped = HepSockets::bind(&HepSourceConfig {
        recv_buffer_bytes: (rmem_max + 4096) as u64,
        ..config(true, false, site())
    })
    .await
    .expect("binds even when capped");
    assert_eq!(capped.udp_recv_buffer(), Some(2 * rmem_max));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cut_off_mid_way_are_finished_by_their_timeouts() {
    let _guard = trace();
    let recording = datagrams();
    // Short timeouts, so the test waits seconds, not minutes.
    let sip = SipTrackerConfig { setup_timeout_s: 2, call_timeout_s: 2, linger_s: 1, ..site() };
    // The capture up to a point where an open call's end is implied by its
    // facts (it rang, say): only a timeout can emit that.
    let (cut, finished) = (recording.len() / 3..recording.len())
        .step_by(7)
        .find_map(|n| {
            let (open, _) = offline(&recording[..n], sip.clone(), false);
            let (finished, _) = offline(&recording[..n], sip.clone(), true);
            (finished.len() > open.len()).then_some((&recording[..n], finished))
        })
        .expect("a cut with an implied end");

    let dir = tempfile::tempdir().expect("tempdir");
    let spool = TestSpool::open(&spool_config(dir.path()));
    let metrics = Metrics::new();
    let run = source(config(true, false, sip), &spool, &metrics).await;
    send_udp(run.udp.expect("udp"), cut).await;
    // No packet comes after the cut: only the expiry ticks finish the calls.
    eventually(PATIENCE, "the calls finished by timeouts", || spool.events().len() >= finished.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop.cancel();
    run.task.await.expect("source ends");
    assert_eq!(stored_calls(&spool.events()), expected_calls(&finished));
    spool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recording_over_tcp_and_a_broken_stream() {
    let _guard = trace();
    let recording = datagrams();
    let (expected, _) = offline(&recording, site(), false);

    let dir = tempfile::tempdir().expect("tempdir");
    let spool = TestSpool::open(&spool_config(dir.path()));
    let metrics = Metrics::new();
    let run = source(config(false, true, site()), &spool, &metrics).await;
    assert!(run.udp.is_none());
    let addr = run.tcp.expect("tcp");
    // Packets back to back, written in chunks that split them anywhere.
    let stream: Vec<u8> = recording.concat();
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    for chunk in stream.chunks(1000) {
        conn.write_all(chunk).await.expect("write");
    }
    eventually(PATIENCE, "every event of the recording", || spool.events().len() >= expected.len()).await;
    assert_eq!(stored_calls(&spool.events()), expected_calls(&expected));
    let m = metrics.source("hep");
    assert_eq!(m.malformed.get(), 0);
    // Something else than HEPv3: the listener hangs up and counts it.
    conn.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut rest)).await.expect("closed by the listener");
    assert!(read.is_ok_and(|n| n == 0) || rest.is_empty());
    assert_eq!(m.malformed.get(), 1);
    // A new sender is served again.
    let mut again = TcpStream::connect(addr).await.expect("reconnect");
    again.write_all(&recording[0]).await.expect("write");
    eventually(PATIENCE, "the packet read", || m.read_bytes.get() == (stream.len() + recording[0].len()) as u64).await;
    run.stop.cancel();
    run.task.await.expect("source ends");
    spool.close().await;
}
