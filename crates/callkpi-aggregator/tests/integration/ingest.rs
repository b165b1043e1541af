//! The Ingest contract, end to end over loopback.

use callkpi_aggregator::store::{BatchToStore, EventToStore};
use callkpi_proto::pb;
use callkpi_proto::pb::RejectCode;
use callkpi_proto::pb::agent_message::Msg as AgentMsg;
use callkpi_proto::pb::aggregator_message::Msg as ServerMsg;
use prost::Message as _;

use crate::support::*;

#[tokio::test]
async fn handshake_batches_heartbeats_and_acks() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut live = server.store.subscribe();

    let mut agent = server.connect(Some(TOKEN_A)).await.expect("authenticated");
    let welcome = agent.hello(AGENT_A).await;
    assert_eq!(welcome.resume_after_seq, 0);
    assert_eq!(welcome.echo_monotonic_ns, 42);
    assert_eq!((welcome.max_batch_events, welcome.max_batch_bytes), (50, 64 * 1024));
    assert_eq!(welcome.contract_revision, callkpi_proto::CONTRACT_REVISION);
    assert!(welcome.max_in_flight_batches >= 1 && welcome.heartbeat_interval_ms >= 100);
    assert!((welcome.server_clock_ns - now_ns()).abs() < 10_000_000_000);

    assert_eq!(agent.batch(batch(AGENT_A, 1, 3, &[1, 2, 3])).await, 3);
    let notified = bounded(live.recv()).await.unwrap();
    assert_eq!((&*notified.agent_id, notified.up_to_seq), (AGENT_A, 3));
    // Seq 6 was dropped by the agent's spool: declared absent, acked.
    assert_eq!(agent.batch(batch(AGENT_A, 4, 6, &[4, 5])).await, 6);
    // A whole range lost: no events at all.
    assert_eq!(agent.batch(batch(AGENT_A, 7, 8, &[])).await, 8);

    agent
        .send(AgentMsg::Heartbeat(pb::Heartbeat {
            monotonic_ns: 77,
            wall_clock_ns: now_ns(),
            clock_synced: true,
            clock_offset_ns: Some(-1_500_000),
            rtt_ns: Some(400_000),
            ..Default::default()
        }))
        .await;
    match agent.recv().await {
        Ok(Some(ServerMsg::HeartbeatAck(ack))) => assert_eq!(ack.echo_monotonic_ns, 77),
        other => panic!("expected HeartbeatAck, got {other:?}"),
    }

    let held: Vec<u64> = server.store.events_after(AGENT_A, 0, 100).unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(held, [1, 2, 3, 4, 5]);
    let records = server.store.agents().unwrap();
    let record = records.iter().find(|r| r.agent_id == AGENT_A).expect("record");
    assert_eq!((record.hwm, record.events_stored, record.events_lost), (8, 5, 3));
    assert_eq!((record.site.as_str(), record.version.as_str()), ("paris", "0.1.0"));
    assert_eq!((record.clock_offset_ns, record.clock_rtt_ns), (Some(-1_500_000), Some(400_000)));
    assert!(record.last_captured_ns.is_some());

    drop(agent);
    server.stop().await;
}

#[tokio::test]
async fn resent_batch_is_acked_again_without_duplicate() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;

    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    assert_eq!(agent.hello(AGENT_A).await.resume_after_seq, 0);
    let sent = batch(AGENT_A, 1, 3, &[1, 2, 3]);

    // Another stream of the same agent (one this stream superseded, say)
    // stored the same batch after this stream's Welcome.
    let events = sent
        .events
        .iter()
        .map(|e| EventToStore {
            seq: e.seq,
            bytes: e.encode_to_vec(),
            captured_at_ns: e.captured_at_ns,
            interpretable: true,
        })
        .collect();
    server.store.ingest(AGENT_A, BatchToStore { first_seq: 1, last_seq: 3, events }).await.unwrap();

    // This stream's first batch (1..=3, after its Welcome of 0) is the same:
    // acked again, nothing stored twice.
    assert_eq!(agent.batch(sent.clone()).await, 3);
    assert_eq!(server.store.events_after(AGENT_A, 0, 100).unwrap().len(), 3);
    let record = server.store.agent(AGENT_A).unwrap().unwrap();
    assert_eq!((record.hwm, record.events_stored), (3, 3));
    let metrics = crate::endpoints::get(server.http, "/metrics").await.1;
    assert!(metrics.contains("callkpi_ingest_events_duplicate_total{agent=\"agent-a\"} 3"), "{metrics}");

    // Different bytes under a held seq: refused, never silently acked.
    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    assert_eq!(agent.hello(AGENT_A).await.resume_after_seq, 3);
    let mut renumbered = event(AGENT_A, 3);
    renumbered.call_id = "another call".into();
    agent.send(AgentMsg::Batch(batch_of(4, 4, vec![event(AGENT_A, 4)]))).await;
    assert!(matches!(agent.recv().await, Ok(Some(ServerMsg::Ack(pb::Ack { up_to_seq: 4 })))));
    drop(agent);
    let err = conflicting_ingest(&server.store, renumbered).await;
    assert!(err.contains("different content"), "{err}");

    server.stop().await;
}

async fn conflicting_ingest(store: &callkpi_aggregator::Store, event: pb::Event) -> String {
    let e = EventToStore { seq: event.seq, bytes: event.encode_to_vec(), captured_at_ns: 0, interpretable: true };
    store
        .ingest(AGENT_A, BatchToStore { first_seq: event.seq, last_seq: event.seq, events: vec![e] })
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test]
async fn reconnect_resumes_from_the_high_water_mark() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;

    let mut first = server.connect(Some(TOKEN_A)).await.unwrap();
    first.hello(AGENT_A).await;
    assert_eq!(first.batch(batch(AGENT_A, 1, 4, &[1, 2, 3, 4])).await, 4);
    drop(first);

    let mut second = server.connect(Some(TOKEN_A)).await.unwrap();
    assert_eq!(second.hello(AGENT_A).await.resume_after_seq, 4);
    assert_eq!(second.batch(batch(AGENT_A, 5, 5, &[5])).await, 5);
    // Starting anywhere but resume_after_seq + 1 breaks the contract.
    second.send(AgentMsg::Batch(batch(AGENT_A, 7, 7, &[7]))).await;
    let reject = second.expect_reject(RejectCode::ProtocolViolation, tonic::Code::FailedPrecondition).await;
    assert!(reject.reason.contains("expected 6") && !reject.retryable, "{reject:?}");
    assert_eq!(server.store.agent(AGENT_A).unwrap().unwrap().hwm, 5);

    // Agent B is independent.
    let mut b = server.connect(Some(TOKEN_B)).await.unwrap();
    assert_eq!(b.hello(AGENT_B).await.resume_after_seq, 0);
    drop(b);
    server.stop().await;
}

#[tokio::test]
async fn restart_on_the_same_store_resumes_at_the_stored_hwm() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    agent.hello(AGENT_A).await;
    assert_eq!(agent.batch(batch(AGENT_A, 1, 10, &[1, 2, 3, 5, 8, 10])).await, 10);
    drop(agent);
    server.stop().await;

    let server = TestServer::start(config(dir.path())).await;
    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    assert_eq!(agent.hello(AGENT_A).await.resume_after_seq, 10);
    assert_eq!(
        server.store.events_after(AGENT_A, 4, 10).unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [5, 8, 10]
    );
    drop(agent);
    server.stop().await;
}

#[tokio::test]
async fn missing_or_unknown_token_is_unauthenticated() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    for token in [None, Some("not-a-token"), Some("")] {
        let status = server.connect(token).await.err().expect("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{token:?}: {status:?}");
    }
    assert!(server.store.agents().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn hello_as_another_agent_is_permission_denied_and_stores_nothing() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;

    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    agent.send(AgentMsg::Hello(hello(AGENT_B))).await;
    agent.send(AgentMsg::Batch(batch(AGENT_B, 1, 1, &[1]))).await;
    let reject = agent.expect_reject(RejectCode::IdentityMismatch, tonic::Code::PermissionDenied).await;
    assert!(!reject.retryable);
    assert!(reject.reason.contains(AGENT_B) && reject.reason.contains(AGENT_A), "{reject:?}");

    assert!(server.store.agents().unwrap().is_empty());
    assert!(server.store.events_after(AGENT_B, 0, 10).unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn crc_mismatch_is_rejected_and_retryable() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    agent.hello(AGENT_A).await;
    let mut bad = batch(AGENT_A, 1, 2, &[1, 2]);
    bad.crc32c ^= 1;
    agent.send(AgentMsg::Batch(bad)).await;
    let reject = agent.expect_reject(RejectCode::ChecksumMismatch, tonic::Code::Unavailable).await;
    assert!(reject.retryable);
    assert!(server.store.events_after(AGENT_A, 0, 10).unwrap().is_empty());
    assert_eq!(server.store.agent(AGENT_A).unwrap().unwrap().hwm, 0);
    server.stop().await;
}

#[tokio::test]
async fn oversized_messages_and_batches_are_refused() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;

    // Above max_message_bytes (256 KiB): tonic refuses it before decoding
    // (OUT_OF_RANGE), or while decompressing it (RESOURCE_EXHAUSTED; this
    // client sends zstd).
    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    agent.hello(AGENT_A).await;
    let mut huge = event(AGENT_A, 1);
    huge.call_id = "x".repeat(300 * 1024);
    agent.send(AgentMsg::Batch(batch_of(1, 1, vec![huge]))).await;
    let status = agent.recv().await.expect_err("refused");
    assert!(matches!(status.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted), "{status:?}");

    // Above max_batch_bytes (64 KiB) but within the message cap: Reject.
    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    agent.hello(AGENT_A).await;
    let mut big = event(AGENT_A, 1);
    big.call_id = "x".repeat(100 * 1024);
    agent.send(AgentMsg::Batch(batch_of(1, 1, vec![big]))).await;
    let reject = agent.expect_reject(RejectCode::BatchTooLarge, tonic::Code::Unavailable).await;
    assert!(reject.reason.contains("max_batch_bytes"), "{reject:?}");

    // More events than max_batch_events (50).
    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    agent.hello(AGENT_A).await;
    let seqs: Vec<u64> = (1..=51).collect();
    agent.send(AgentMsg::Batch(batch(AGENT_A, 1, 51, &seqs))).await;
    let reject = agent.expect_reject(RejectCode::BatchTooLarge, tonic::Code::Unavailable).await;
    assert!(reject.reason.contains("max_batch_events"), "{reject:?}");

    assert_eq!(server.store.agent(AGENT_A).unwrap().unwrap().hwm, 0);
    server.stop().await;
}

#[tokio::test]
async fn messages_out_of_order_are_protocol_violations() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;

    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    agent.send(AgentMsg::Batch(batch(AGENT_A, 1, 1, &[1]))).await;
    agent.expect_reject(RejectCode::ProtocolViolation, tonic::Code::FailedPrecondition).await;

    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    agent.hello(AGENT_A).await;
    agent.send(AgentMsg::Hello(hello(AGENT_A))).await;
    agent.expect_reject(RejectCode::ProtocolViolation, tonic::Code::FailedPrecondition).await;

    // An event of another agent inside a batch.
    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    agent.hello(AGENT_A).await;
    agent.send(AgentMsg::Batch(batch_of(1, 2, vec![event(AGENT_A, 1), event(AGENT_B, 2)]))).await;
    let reject = agent.expect_reject(RejectCode::ProtocolViolation, tonic::Code::FailedPrecondition).await;
    assert!(reject.reason.contains("agent_id"), "{reject:?}");

    // An unset contract revision.
    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    agent.send(AgentMsg::Hello(pb::Hello { contract_revision: 0, ..hello(AGENT_A) })).await;
    agent.expect_reject(RejectCode::UnsupportedVersion, tonic::Code::FailedPrecondition).await;

    assert_eq!(server.store.agent(AGENT_A).unwrap().map_or(0, |r| r.hwm), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_new_stream_supersedes_the_old_one() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;

    let mut old = server.connect(Some(TOKEN_A)).await.unwrap();
    old.hello(AGENT_A).await;
    assert_eq!(old.batch(batch(AGENT_A, 1, 1, &[1])).await, 1);
    let mut new = server.connect(Some(TOKEN_A)).await.unwrap();
    assert_eq!(new.hello(AGENT_A).await.resume_after_seq, 1);
    let reject = old.expect_reject(RejectCode::Superseded, tonic::Code::Unavailable).await;
    assert!(reject.retryable);
    assert_eq!(new.batch(batch(AGENT_A, 2, 2, &[2])).await, 2);
    drop(new);
    server.stop().await;
}

#[tokio::test]
async fn uninterpretable_events_are_quarantined_and_acked() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    agent.hello(AGENT_A).await;
    let mut newer = event(AGENT_A, 2);
    newer.source = 99; // an enum value from a newer agent
    assert_eq!(agent.batch(batch_of(1, 3, vec![event(AGENT_A, 1), newer, event(AGENT_A, 3)])).await, 3);
    let held: Vec<u64> = server.store.events_after(AGENT_A, 0, 10).unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(held, [1, 3]);
    let quarantined = server.store.quarantined_after(AGENT_A, 0, 10).unwrap();
    assert_eq!((quarantined.len(), quarantined[0].1.source), (1, 99));
    drop(agent);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_streams_with_shutting_down() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(config(dir.path())).await;
    let mut agent = server.connect(Some(TOKEN_A)).await.unwrap();
    agent.hello(AGENT_A).await;
    assert_eq!(agent.batch(batch(AGENT_A, 1, 2, &[1, 2])).await, 2);
    let store = server.store.clone();
    let stopping = tokio::spawn(server.stop());
    let reject = agent.expect_reject(RejectCode::ShuttingDown, tonic::Code::Unavailable).await;
    assert!(reject.retryable);
    drop(agent);
    bounded(stopping).await.unwrap();
    assert_eq!(store.agent(AGENT_A).unwrap().unwrap().hwm, 2);
}
