//! `callkpi report`: the same report as `callkpi analyze`, asked of a
//! running aggregator over gRPC (`Reports.GetKpis`), printed by the same
//! code in the same formats.

use std::path::PathBuf;

use anyhow::Context as _;
use callkpi_proto::pb;
use callkpi_proto::report::{params_to_pb, report_from_pb};
use clap::Args;

use crate::analyze::{AnalyzeOutput, ReportOptions, UsageError, params};
use crate::output;

/// How to reach and authenticate to an aggregator.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Aggregator gRPC URL, e.g. http://127.0.0.1:7443 (https with TLS).
    #[arg(long, env = "CALLKPI_SERVER", default_value = "http://127.0.0.1:7443")]
    pub server: String,
    /// Reader bearer token (a `[[readers]]` entry of the aggregator).
    #[arg(long, env = "CALLKPI_TOKEN", conflicts_with = "token_file", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the reader bearer token.
    #[arg(long, env = "CALLKPI_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate to verify an https server with.
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

/// A Reports client that sends the reader token with every call.
pub type Client = pb::reports_client::ReportsClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, TokenInterceptor>,
>;

/// Adds `authorization: Bearer <token>` to each request.
#[derive(Clone)]
pub struct TokenInterceptor(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// Connects to the aggregator's Reports service.
///
/// # Errors
/// On bad options (a [`UsageError`]) or a connection failure.
pub async fn connect(c: &Connection) -> anyhow::Result<Client> {
    let token = match (&c.token, &c.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(p)) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the token file {}", p.display()))?
            .trim()
            .to_owned(),
        (None, None) => return Err(UsageError("give a reader token: --token or --token-file".into()).into()),
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(c.server.clone())
        .map_err(|e| UsageError(format!("invalid --server {:?}: {e}", c.server)))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if let Some(ca) = &c.ca {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
        endpoint = endpoint.tls_config(tls).context("configuring TLS")?;
    }
    let channel = endpoint.connect().await.with_context(|| format!("cannot connect to {}", c.server))?;
    let auth =
        format!("Bearer {token}").parse().map_err(|_| UsageError("the token is not valid in a header".into()))?;
    Ok(pb::reports_client::ReportsClient::with_interceptor(channel, TokenInterceptor(auth))
        .max_decoding_message_size(256 * 1024 * 1024))
}

/// Options of `callkpi report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Where and how to connect.
    #[command(flatten)]
    pub conn: Connection,
    /// What to report and how.
    #[command(flatten)]
    pub report: ReportOptions,
}

/// Asks the aggregator and returns the report as `analyze` would.
///
/// # Errors
/// On bad options (a [`UsageError`]), a connection failure, or a refusal.
pub async fn run(a: &ReportArgs) -> anyhow::Result<AnalyzeOutput> {
    let params = params(&a.report)?;
    let mut client = connect(&a.conn).await?;
    let reply =
        client.get_kpis(params_to_pb(&params)).await.map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    let report = report_from_pb(reply.get_ref()).context("the aggregator's report does not convert")?;
    Ok(AnalyzeOutput { params: report.params, inputs: Vec::new(), rows: report.rows, unparsed: Default::default() })
}

/// Runs `report` and writes its output to stdout.
///
/// # Errors
/// As [`run`], and on write errors.
pub fn main(a: &ReportArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
    let out = rt.block_on(run(a))?;
    output::write(&out, a.report.format, &mut std::io::stdout().lock())
}
