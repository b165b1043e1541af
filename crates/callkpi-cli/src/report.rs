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
    /// Name the aggregator's certificate must carry, when it is not the
    /// --server host (an IP address, a tunnel), like the agent's `domain`.
    #[arg(long, value_name = "NAME")]
    pub tls_domain: Option<String>,
}

/// A refusal from the aggregator as one sentence, with a hint for the
/// mistakes an admin makes first.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    let hint = match s.code() {
        tonic::Code::Unauthenticated => " (give a reader token of the aggregator's [[readers]])",
        tonic::Code::PermissionDenied => " (this token may not read reports)",
        tonic::Code::Unavailable if s.message().contains("connect") => " (is the aggregator running at --server?)",
        // Some other HTTP server: a web server, or an older aggregator's HTTP port.
        tonic::Code::Unimplemented | tonic::Code::Unknown | tonic::Code::Internal
            if s.message().contains("grpc-status header missing") =>
        {
            " (is --server an HTTP port? the aggregator's gRPC is on its `listen` address, 7443 by default)"
        }
        _ => "",
    };
    anyhow::anyhow!("{:?}: {}{hint}", s.code(), s.message())
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
        .connect_timeout(std::time::Duration::from_secs(5))
        // An aggregator that vanishes without closing (power, network) is
        // noticed by `watch` within 20 s instead of never.
        .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        .keep_alive_timeout(std::time::Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let https = c.server.starts_with("https://");
    match &c.ca {
        Some(ca) => {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            let mut tls =
                tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
            if let Some(domain) = &c.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint.tls_config(tls).context("configuring TLS")?;
        }
        None if https => {
            return Err(UsageError(format!(
                "{} is https: pass --ca with the PEM certificate of the CA that signed the aggregator's",
                c.server
            ))
            .into());
        }
        None => {}
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
    let mut params = params(&a.report)?;
    // An aggregator holds months: without --from, today is what fits a screen.
    if params.from.is_none() {
        params.from = Some(start_of_today(&a.report.tz)?);
    }
    let mut client = connect(&a.conn).await?;
    let reply = client.get_kpis(params_to_pb(&params)).await.map_err(status_error)?;
    let report = report_from_pb(reply.get_ref()).context("the aggregator's report does not convert")?;
    Ok(AnalyzeOutput { params: report.params, inputs: Vec::new(), rows: report.rows, unparsed: Default::default() })
}

/// Midnight today in `tz`, Unix ns.
///
/// # Errors
/// [`UsageError`] on an unknown zone.
pub fn start_of_today(tz: &str) -> Result<i64, UsageError> {
    let zone = callkpi_core::time::parse_tz(tz).map_err(UsageError)?;
    let now = i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX);
    Ok(callkpi_core::time::interval_start(now, callkpi_core::time::Interval::Day, &zone))
}

/// Runs `report` and writes its output to stdout.
///
/// # Errors
/// As [`run`], and on write errors.
pub fn main(a: &ReportArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
    let out = rt.block_on(run(a))?;
    output::write(&out, a.report.format, a.report.all_rows, &mut std::io::stdout().lock())
}
