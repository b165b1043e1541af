//! mTLS: the client certificate's names bind the stream to an agent.

use std::path::Path;

use callkpi_aggregator::config::{AgentConfig, TlsConfig};
use callkpi_proto::pb::RejectCode;
use callkpi_proto::pb::agent_message::Msg as AgentMsg;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::support::*;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/fixtures/tls").join(name)
}

#[tokio::test]
async fn client_certificate_names_the_agent() {
    let _trace = trace();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.tls =
        Some(TlsConfig { cert: fixture("server.crt"), key: fixture("server.key"), client_ca: Some(fixture("ca.crt")) });
    // Authenticated by its certificate alone (CN=agent-tls).
    cfg.agents.push(AgentConfig { id: "agent-tls".into(), site: None, token_sha256: None, token_file: None });
    let server = TestServer::start(cfg).await;

    let read = |name: &str| std::fs::read(fixture(name)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .domain_name("localhost")
        .identity(Identity::from_pem(read("agent-tls.crt"), read("agent-tls.key")));
    let channel = Endpoint::from_shared(format!("https://{}", server.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS handshake");

    let mut agent = AgentClient::open(channel.clone(), None).await.expect("certificate authenticates");
    assert_eq!(agent.hello("agent-tls").await.resume_after_seq, 0);
    assert_eq!(agent.batch(batch("agent-tls", 1, 1, &[1])).await, 1);
    drop(agent);

    // The certificate does not name agent-a.
    let mut agent = AgentClient::open(channel.clone(), None).await.unwrap();
    agent.send(AgentMsg::Hello(hello(AGENT_A))).await;
    agent.expect_reject(RejectCode::IdentityMismatch, tonic::Code::PermissionDenied).await;

    // A token whose agent the certificate does not name.
    let status = AgentClient::open(channel.clone(), Some(TOKEN_A)).await.err().expect("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    drop((agent, channel));
    server.stop().await;
}
