//! The whole agent in process: metrics on port 0, a queue_log source, and a
//! fake aggregator that checks the contract and acks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callkpi_agent::config::{Config, MetricsConfig, QueueLogSourceConfig, UplinkConfig};
use callkpi_feeds::queue_log::{QueueLogConfig, QueueLogMapper};
use callkpi_proto::pb;
use callkpi_proto::pb::agent_message::Msg as AgentMsg;
use callkpi_proto::pb::aggregator_message::Msg as AggMsg;
use callkpi_proto::pb::ingest_server::{Ingest, IngestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::{eventually, fixture, spool_config, trace};

/// What the fake aggregator received.
#[derive(Debug, Default)]
struct Received {
    hellos: Vec<pb::Hello>,
    /// (first_seq, last_seq, events) of each Batch.
    batches: Vec<(u64, u64, usize)>,
    heartbeats: u32,
    tokens: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct FakeAggregator {
    received: Arc<Mutex<Received>>,
}

#[tonic::async_trait]
impl Ingest for FakeAggregator {
    type StreamStream = ReceiverStream<Result<pb::AggregatorMessage, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let token = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let received = self.received.clone();
        tokio::spawn(async move {
            received.lock().await.tokens.push(token);
            let mut next = 1;
            while let Ok(Some(msg)) = inbound.message().await {
                let reply = match msg.msg {
                    Some(AgentMsg::Hello(h)) => {
                        let echo = h.monotonic_ns;
                        received.lock().await.hellos.push(h);
                        AggMsg::Welcome(pb::Welcome {
                            resume_after_seq: next - 1,
                            server_clock_ns: 1_700_000_000_000_000_000,
                            echo_monotonic_ns: echo,
                            max_batch_events: 50,
                            max_batch_bytes: 1 << 20,
                            max_in_flight_batches: 2,
                            heartbeat_interval_ms: 200,
                            server_version: "test".into(),
                            contract_revision: callkpi_proto::CONTRACT_REVISION,
                        })
                    }
                    Some(AgentMsg::Batch(b)) => {
                        assert_eq!(b.first_seq, next, "contiguous ranges");
                        assert!(b.events.len() <= 50);
                        assert_eq!(callkpi_proto::events_crc32c(&b.events), b.crc32c, "CRC");
                        for (e, seq) in b.events.iter().zip(b.first_seq..) {
                            assert_eq!(e.seq, seq);
                            assert_eq!(e.agent_id, "agent-1");
                        }
                        next = b.last_seq + 1;
                        received.lock().await.batches.push((b.first_seq, b.last_seq, b.events.len()));
                        AggMsg::Ack(pb::Ack { up_to_seq: b.last_seq })
                    }
                    Some(AgentMsg::Heartbeat(h)) => {
                        received.lock().await.heartbeats += 1;
                        AggMsg::HeartbeatAck(pb::HeartbeatAck {
                            echo_monotonic_ns: h.monotonic_ns,
                            server_clock_ns: 1_700_000_000_000_000_000,
                        })
                    }
                    None => break,
                };
                if tx.send(Ok(pb::AggregatorMessage { msg: Some(reply) })).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn serve_fake(fake: FakeAggregator, stop: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = IngestServer::new(fake)
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
        .send_compressed(tonic::codec::CompressionEncoding::Zstd);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned()),
    );
    addr
}

async fn scrape(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

fn config(dir: &std::path::Path, url: String, queue_log: &std::path::Path) -> Config {
    Config {
        agent_id: "agent-1".into(),
        site: "paris".into(),
        uplink: UplinkConfig {
            url,
            token: Some(callkpi_agent::config::Secret::new("t0ken")),
            backoff_initial_ms: 50,
            backoff_max_ms: 200,
            ..UplinkConfig::default()
        },
        spool: spool_config(dir),
        metrics: MetricsConfig { listen: "127.0.0.1:0".into() },
        sources: callkpi_agent::config::SourcesConfig {
            queue_log: vec![QueueLogSourceConfig {
                name: "ql".into(),
                path: queue_log.to_owned(),
                poll_interval_ms: 20,
                ..QueueLogSourceConfig::default()
            }],
            ..callkpi_agent::config::SourcesConfig::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_the_queue_log_to_an_aggregator_and_stops_in_order() {
    let _guard = trace();
    let dir = tempfile::tempdir().expect("tempdir");
    let ql = dir.path().join("queue_log");
    std::fs::copy(fixture("queue_log"), &ql).expect("copy fixture");
    let input = std::fs::read(&ql).expect("read");
    let expected = QueueLogMapper::new(QueueLogConfig::default()).map_all(&input).len() as u64;

    let server_stop = CancellationToken::new();
    let fake = FakeAggregator::default();
    let addr = serve_fake(fake.clone(), server_stop.clone()).await;

    let shutdown = CancellationToken::new();
    let agent = callkpi_agent::start(config(dir.path(), format!("http://{addr}"), &ql), shutdown.clone())
        .await
        .expect("starts");
    let spool = agent.spool.clone();
    let metrics_addr = agent.metrics_addr.expect("metrics enabled");
    assert_ne!(metrics_addr.port(), 0);
    eventually(Duration::from_secs(20), "every event acked", || {
        spool.last_seq() == expected && spool.acked_seq() == expected
    })
    .await;
    // Idle: heartbeats flow.
    eventually(Duration::from_secs(5), "a heartbeat", || fake.received.try_lock().is_ok_and(|r| r.heartbeats > 0))
        .await;

    let text = scrape(metrics_addr).await;
    assert!(text.contains("callkpi_source_events_total{source=\"ql\"}"), "{text}");
    assert!(text.contains(&format!("callkpi_uplink_acked_events_total {expected}")), "{text}");
    assert!(text.contains("callkpi_spool_depth_events 0"), "{text}");
    assert!(text.contains("callkpi_uplink_clock_offset_seconds"), "{text}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), agent.wait()).await.expect("stops in time").expect("clean");
    server_stop.cancel();

    let r = fake.received.lock().await;
    assert_eq!(r.hellos[0].agent_id, "agent-1");
    assert_eq!(r.hellos[0].contract_revision, callkpi_proto::CONTRACT_REVISION);
    assert_eq!(r.tokens[0], "Bearer t0ken");
    let total: usize = r.batches.iter().map(|b| b.2).sum();
    assert_eq!(total as u64, expected, "each event sent once");
    assert_eq!(spool.stats().depth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_and_stops_without_an_aggregator() {
    let _guard = trace();
    let dir = tempfile::tempdir().expect("tempdir");
    let ql = dir.path().join("queue_log");
    std::fs::copy(fixture("queue_log"), &ql).expect("copy fixture");
    // A port nobody listens on.
    let free = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let agent = callkpi_agent::start(config(dir.path(), format!("http://{free}"), &ql), shutdown.clone())
        .await
        .expect("starts");
    let spool = agent.spool.clone();
    eventually(Duration::from_secs(10), "events spooled", || spool.last_seq() > 0).await;
    let text = scrape(agent.metrics_addr.expect("metrics")).await;
    assert!(text.contains("callkpi_uplink_connected 0"), "{text}");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), agent.wait()).await.expect("stops in time").expect("clean");
    assert_eq!(spool.acked_seq(), 0, "nothing acked, everything kept");
}
