//! Test server and agent client.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use callkpi_aggregator::config::AgentConfig;
use callkpi_aggregator::{Aggregator, Config, Store, token_sha256_hex};
use callkpi_proto::pb;
use callkpi_proto::pb::agent_message::Msg as AgentMsg;
use callkpi_proto::pb::aggregator_message::Msg as ServerMsg;
use callkpi_proto::pb::ingest_client::IngestClient;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

pub(crate) const AGENT_A: &str = "agent-a";
pub(crate) const TOKEN_A: &str = "token-of-agent-a";
pub(crate) const AGENT_B: &str = "agent-b";
pub(crate) const TOKEN_B: &str = "token-of-agent-b";

/// Longest any test step may take.
const PATIENCE: Duration = Duration::from_secs(20);

/// Runs `f`, failing the test if it takes longer than [`PATIENCE`].
pub(crate) async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f).await.expect("test step timed out")
}

/// A per-test tracing subscriber (thread-local, so tests do not share one).
pub(crate) fn trace() -> tracing::subscriber::DefaultGuard {
    tracing::subscriber::set_default(
        tracing_subscriber::fmt().with_test_writer().with_env_filter("callkpi_aggregator=debug").finish(),
    )
}

/// Two token agents, small limits, the store under `dir`.
pub(crate) fn config(dir: &Path) -> Config {
    let agent = |id: &str, token: &str| AgentConfig {
        id: id.into(),
        site: Some("paris".into()),
        token_sha256: Some(token_sha256_hex(token)),
        token_file: None,
    };
    Config {
        store_path: dir.join("store"),
        store_cache_bytes: 4 * 1024 * 1024,
        max_message_bytes: 256 * 1024,
        max_batch_bytes: 64 * 1024,
        max_batch_events: 50,
        agents: vec![agent(AGENT_A, TOKEN_A), agent(AGENT_B, TOKEN_B)],
        ..Config::default()
    }
}

/// An aggregator served in process on 127.0.0.1 ephemeral ports.
pub(crate) struct TestServer {
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) store: Store,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    pub(crate) async fn start(cfg: Config) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let aggregator = bounded(async {
            // A previous server on the same store may still be releasing it.
            loop {
                let cfg = cfg.clone();
                match tokio::task::spawn_blocking(move || Aggregator::open(cfg)).await.unwrap() {
                    Ok(a) => break a,
                    Err(e) if format!("{e:#}").contains("in use") => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(e) => panic!("cannot open the aggregator: {e:#}"),
                }
            }
        })
        .await
        .with_shutdown_grace(Duration::from_secs(5));
        let store = aggregator.store().clone();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(aggregator.serve(grpc, http, shutdown.clone()));
        Self { grpc: grpc_addr, http: http_addr, store, shutdown, handle }
    }

    /// Cancels and waits for a clean exit.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        drop(self.store);
        bounded(self.handle).await.expect("serve task").expect("serve returns Ok");
    }

    pub(crate) async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.grpc)).unwrap().connect().await.expect("connects")
    }

    /// Opens an Ingest stream with `token`.
    pub(crate) async fn connect(&self, token: Option<&str>) -> Result<AgentClient, Status> {
        AgentClient::open(self.channel().await, token).await
    }
}

/// An agent's end of the Ingest stream.
pub(crate) struct AgentClient {
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: Streaming<pb::AggregatorMessage>,
}

impl AgentClient {
    pub(crate) async fn open(channel: Channel, token: Option<&str>) -> Result<Self, Status> {
        let mut client = IngestClient::new(channel)
            .send_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_encoding_message_size(64 * 1024 * 1024);
        let (tx, rx) = mpsc::channel(16);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = token {
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let inbound = bounded(client.stream(request)).await?.into_inner();
        Ok(Self { tx, inbound })
    }

    pub(crate) async fn send(&self, msg: AgentMsg) {
        // The server may already have ended the stream; the next recv says why.
        let _ = self.tx.send(pb::AgentMessage { msg: Some(msg) }).await;
    }

    /// The next message, `Ok(None)` at a clean end, `Err` at a status.
    pub(crate) async fn recv(&mut self) -> Result<Option<ServerMsg>, Status> {
        bounded(self.inbound.message()).await.map(|m| m.map(|m| m.msg.expect("message set")))
    }

    pub(crate) async fn hello(&mut self, agent_id: &str) -> pb::Welcome {
        self.send(AgentMsg::Hello(hello(agent_id))).await;
        match self.recv().await {
            Ok(Some(ServerMsg::Welcome(w))) => w,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Sends a batch and returns the Ack's seq.
    pub(crate) async fn batch(&mut self, batch: pb::Batch) -> u64 {
        self.send(AgentMsg::Batch(batch)).await;
        match self.recv().await {
            Ok(Some(ServerMsg::Ack(ack))) => ack.up_to_seq,
            other => panic!("expected Ack, got {other:?}"),
        }
    }

    /// Expects a Reject then the end of the call with `code`.
    pub(crate) async fn expect_reject(&mut self, code: pb::RejectCode, status: tonic::Code) -> pb::Reject {
        let reject = match self.recv().await {
            Ok(Some(ServerMsg::Reject(r))) => r,
            other => panic!("expected Reject, got {other:?}"),
        };
        assert_eq!(reject.code(), code, "{reject:?}");
        match self.recv().await {
            Err(s) => assert_eq!(s.code(), status, "{s:?}"),
            other => panic!("expected status {status:?}, got {other:?}"),
        }
        reject
    }
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

pub(crate) fn hello(agent_id: &str) -> pb::Hello {
    pb::Hello {
        agent_id: agent_id.into(),
        site: "paris".into(),
        version: "0.1.0".into(),
        wall_clock_ns: now_ns(),
        monotonic_ns: 42,
        clock_synced: true,
        contract_revision: callkpi_proto::CONTRACT_REVISION,
        ..Default::default()
    }
}

pub(crate) fn event(agent_id: &str, seq: u64) -> pb::Event {
    pb::Event {
        agent_id: agent_id.into(),
        seq,
        site: "paris".into(),
        source: pb::SourceKind::AsteriskAmi.into(),
        call_id: format!("1700000000.{seq}"),
        leg_id: format!("1700000000.{seq}"),
        captured_at_ns: now_ns() - 1_000_000_000,
        monotonic_ns: seq,
        source_time_ns: None,
        clock_synced: true,
        kind: Some(pb::event::Kind::CallOffered(pb::event::CallOffered {
            direction: pb::Direction::Inbound.into(),
            caller: "0600000001".into(),
            called: "0140000000".into(),
            trunk: None,
        })),
    }
}

/// A batch of range `first..=last` holding the events `seqs`, with its CRC.
pub(crate) fn batch(agent_id: &str, first: u64, last: u64, seqs: &[u64]) -> pb::Batch {
    batch_of(first, last, seqs.iter().map(|&s| event(agent_id, s)).collect())
}

pub(crate) fn batch_of(first: u64, last: u64, events: Vec<pb::Event>) -> pb::Batch {
    let crc32c = callkpi_proto::events_crc32c(&events);
    pb::Batch { first_seq: first, last_seq: last, events, crc32c }
}
