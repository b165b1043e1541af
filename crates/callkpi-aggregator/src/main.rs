//! `callkpi-aggregator`: config, tracing, runtime and signals, then the library.

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use callkpi_aggregator::{Aggregator, Config};
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

/// EX_USAGE (sysexits.h): the configuration is unusable.
const EX_USAGE: u8 = 64;

/// The callkpi aggregator: receives call events from agents over gRPC,
/// stores them durably, serves metrics.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain, env = "CALLKPI_LOG_FORMAT", global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve until SIGTERM or SIGINT (a second signal exits at once).
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Longest a graceful shutdown may take, seconds.
        #[arg(long, default_value_t = 10, env = "CALLKPI_SHUTDOWN_GRACE_SECS")]
        shutdown_grace_secs: u64,
    },
    /// Check the configuration (and read the files it names), then exit:
    /// 0 when valid, 64 with the reason otherwise.
    Validate {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Read a bearer token from standard input and print its SHA-256 for
    /// `agents[].token_sha256`.
    HashToken,
}

/// The config file and the keys that flags and the environment override.
#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// Configuration file (TOML).
    #[arg(long, short, env = "CALLKPI_CONFIG")]
    config: PathBuf,
    /// Overrides `listen`.
    #[arg(long, env = "CALLKPI_LISTEN")]
    listen: Option<SocketAddr>,
    /// Overrides `metrics_listen`.
    #[arg(long, env = "CALLKPI_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Overrides `store_path`.
    #[arg(long, env = "CALLKPI_STORE_PATH")]
    store_path: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config, callkpi_aggregator::ConfigError> {
        let mut cfg = Config::load(&self.config)?;
        if let Some(listen) = self.listen {
            cfg.listen = listen;
        }
        if let Some(addr) = self.metrics_listen {
            cfg.metrics_listen = addr;
        }
        if let Some(path) = &self.store_path {
            cfg.store_path = path.clone();
        }
        cfg.validate()?;
        cfg.preflight()?;
        Ok(cfg)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A bad flag is a configuration error too: 64, so that systemd's
            // RestartPreventExitStatus stops instead of restart-looping.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EX_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    init_tracing(cli.log_format);
    match cli.command {
        Command::Validate { config } => match config.load() {
            Ok(cfg) => {
                for warning in cfg.warnings() {
                    let _ = writeln!(std::io::stderr(), "warning: {warning}");
                }
                let _ = writeln!(
                    std::io::stdout(),
                    "{}: valid ({} agents, gRPC {}, metrics {})",
                    config.config.display(),
                    cfg.agents.len(),
                    cfg.listen,
                    cfg.metrics_listen
                );
                ExitCode::SUCCESS
            }
            Err(e) => bad_config(&e),
        },
        Command::HashToken => {
            let mut line = String::new();
            if std::io::stdin().lock().read_line(&mut line).is_err() || line.trim().is_empty() {
                let _ = writeln!(std::io::stderr(), "error: no token on standard input");
                return ExitCode::from(EX_USAGE);
            }
            let _ = writeln!(std::io::stdout(), "{}", callkpi_aggregator::token_sha256_hex(line.trim()));
            ExitCode::SUCCESS
        }
        Command::Run { config, shutdown_grace_secs } => {
            let cfg = match config.load() {
                Ok(cfg) => cfg,
                Err(e) => return bad_config(&e),
            };
            for warning in cfg.warnings() {
                tracing::warn!("{warning}");
            }
            match run(cfg, Duration::from_secs(shutdown_grace_secs)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // Logged once: stderr is where the log goes.
                    tracing::error!(error = callkpi_durable::error_text(e.as_ref()), "Aggregator failed.");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn bad_config(e: &callkpi_aggregator::ConfigError) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "invalid configuration: {}", callkpi_durable::error_text(e));
    ExitCode::from(EX_USAGE)
}

fn run(cfg: Config, grace: Duration) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async move {
        let (listen, metrics_listen) = (cfg.listen, cfg.metrics_listen);
        let aggregator = tokio::task::spawn_blocking(move || Aggregator::open(cfg)).await??.with_shutdown_grace(grace);
        let grpc = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
        let http =
            tokio::net::TcpListener::bind(metrics_listen).await.with_context(|| format!("binding {metrics_listen}"))?;
        let shutdown = CancellationToken::new();
        tokio::spawn(signals(shutdown.clone()));
        aggregator.serve(grpc, http, shutdown).await
    })
}

/// First SIGTERM/SIGINT: graceful shutdown. Second: exit at once.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("Cannot install signal handlers; stop the process with SIGKILL.");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "Shutting down gracefully; a second signal exits at once."),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "Shutting down gracefully; a second signal exits at once."),
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("Second signal: exiting now; unacked batches will be re-sent by agents.");
    std::process::exit(130);
}

fn init_tracing(format: LogFormat) {
    use callkpi_telemetry::LogFormat::{Json, Plain};
    callkpi_telemetry::init_tracing(if matches!(format, LogFormat::Json) { Json } else { Plain }, "info");
}
