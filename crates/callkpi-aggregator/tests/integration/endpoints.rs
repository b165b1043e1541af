//! Health, reflection, metrics.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_stream::StreamExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::*;

/// A plain HTTP/1.1 GET over loopback: status code and body.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    bounded(async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8(response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
        let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status code");
        (code, body.to_owned())
    })
    .await
}

#[tokio::test]
async fn health_reports_ingest_serving() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["callkpi.v1.Ingest", ""] {
        let response = bounded(health.check(HealthCheckRequest { service: service.into() })).await.unwrap();
        assert_eq!(response.into_inner().status(), ServingStatus::Serving, "{service:?}");
    }
    drop(health);
    server.stop().await;
}

#[tokio::test]
async fn reflection_lists_and_describes_the_services() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let requests =
        [MessageRequest::ListServices(String::new()), MessageRequest::FileContainingSymbol("callkpi.v1.Ingest".into())]
            .map(|m| ServerReflectionRequest { host: String::new(), message_request: Some(m) });
    let mut responses =
        bounded(reflection.server_reflection_info(tokio_stream::iter(requests))).await.unwrap().into_inner();

    let listed = bounded(responses.next()).await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else { panic!("{listed:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["callkpi.v1.Ingest", "callkpi.v1.Reports", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    let file = bounded(responses.next()).await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(fds)) = file.message_response else { panic!("{file:?}") };
    assert!(!fds.file_descriptor_proto.is_empty());
    drop((responses, reflection));
    server.stop().await;
}

#[tokio::test]
async fn metrics_and_healthz_are_served() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;

    let (code, body) = get(server.http, "/healthz").await;
    assert_eq!((code, body.trim()), (200, "ok"));

    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    agent.hello(AGENT_A).await;
    assert_eq!(agent.batch(batch(AGENT_A, 1, 3, &[1, 2])).await, 3);
    let _ = server.connect(Some("wrong")).await;

    let (code, metrics) = get(server.http, "/metrics").await;
    assert_eq!(code, 200);
    for needle in [
        "callkpi_ingest_batches_received_total{agent=\"agent-a\"} 1",
        "callkpi_ingest_batches_stored_total{agent=\"agent-a\"} 1",
        "callkpi_ingest_events_received_total{agent=\"agent-a\"} 2",
        "callkpi_ingest_events_stored_total{agent=\"agent-a\"} 2",
        "callkpi_ingest_events_lost_total{agent=\"agent-a\"} 1",
        "callkpi_ingest_events_duplicate_total{agent=\"agent-b\"} 0",
        "callkpi_ingest_auth_failures_total{code=\"unauthenticated\"} 1",
        "callkpi_ingest_ack_latency_seconds_count 1",
        "callkpi_agent_hwm{agent=\"agent-a\"} 3",
        "callkpi_agent_connected{agent=\"agent-a\"} 1",
        "callkpi_agents_connected 1",
        // Connected, and its Batch reached its spool's last seq: caught up.
        "callkpi_agent_delivery_lag_seconds{agent=\"agent-a\"} 0.0",
        "callkpi_agent_since_contact_seconds{agent=\"agent-a\"}",
        "callkpi_agent_since_event_seconds{agent=\"agent-a\"}",
        "callkpi_agent_clock_offset_seconds{agent=\"agent-a\"}",
        "callkpi_store_size_bytes",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from:\n{metrics}");
    }

    let mut bad = batch(AGENT_A, 4, 4, &[4]);
    bad.crc32c ^= 1;
    agent.send(callkpi_proto::pb::agent_message::Msg::Batch(bad)).await;
    agent.expect_reject(callkpi_proto::pb::RejectCode::ChecksumMismatch, tonic::Code::Unavailable).await;
    let metrics = get(server.http, "/metrics").await.1;
    assert!(metrics.contains("callkpi_ingest_rejects_total{reason=\"checksum_mismatch\"} 1"), "{metrics}");
    assert!(metrics.contains("callkpi_agents_connected 0"), "{metrics}");
    assert_eq!(get(server.http, "/nope").await.0, 404);
    server.stop().await;
}
