//! `callkpi`: the operator's command line. Thin: parse arguments, set up
//! tracing, run a subcommand of [`callkpi_cli`], map errors to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use callkpi_cli::{agents, analyze, calls, demo, report, spool, watch};

/// Contact-centre KPIs from the telephone system itself.
#[derive(Debug, Parser)]
#[command(name = "callkpi", version, about)]
struct Cli {
    /// Log format on stderr: plain or json. The filter comes from CALLKPI_LOG, else RUST_LOG (default warn).
    #[arg(long, global = true, env = "CALLKPI_LOG_FORMAT", default_value = "plain")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Try it all on this machine: a simulated Asterisk, an agent and an aggregator, in-process, with live KPIs.
    Demo(demo::DemoArgs),
    /// Compute KPIs from queue_log and AMI files, offline, with the engine the aggregator runs.
    Analyze(analyze::AnalyzeArgs),
    /// The same report from a running aggregator (gRPC Reports.GetKpis), same options and formats.
    Report(report::ReportArgs),
    /// Live per-queue figures from a running aggregator (gRPC Reports.WatchKpis), redrawn in place.
    Watch(watch::WatchArgs),
    /// Calls in a range from a running aggregator (gRPC Reports.ListCalls), newest first.
    #[command(after_help = "Every field and outcome: docs/calls.md.")]
    Calls(calls::CallsArgs),
    /// One call's timeline (events, queue visits, agent segments) from a running aggregator (gRPC Reports.GetCall).
    #[command(after_help = "Every field, outcome and event of a timeline: docs/calls.md.")]
    Call(calls::CallArgs),
    /// Every agent the aggregator knows: connected, delivery lag, last contact (gRPC Reports.ListAgents).
    Agents(agents::AgentsArgs),
    /// Inspect an agent's spool directory.
    #[command(subcommand)]
    Spool(spool::SpoolCommand),
}

/// EX_USAGE from sysexits.h: bad option values.
const EX_USAGE: u8 = 64;

fn init_tracing(format: LogFormat) {
    use callkpi_telemetry::LogFormat::{Json, Plain};
    callkpi_telemetry::init_tracing(if matches!(format, LogFormat::Json) { Json } else { Plain }, "warn");
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; every bad option or value is
            // a usage error (64, as for a bad --tz), not clap's own 2.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EX_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    init_tracing(cli.log_format);
    let result = match &cli.command {
        Command::Demo(a) => demo::main(a),
        Command::Analyze(a) => analyze::main(a),
        Command::Report(a) => report::main(a),
        Command::Watch(a) => watch::main(a),
        Command::Calls(a) => calls::list_main(a),
        Command::Call(a) => calls::show_main(a),
        Command::Agents(a) => agents::main(a),
        Command::Spool(spool::SpoolCommand::Status(a)) => spool::status(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `callkpi analyze | head`: the reader has all it wanted.
        Err(e) if callkpi_cli::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("callkpi: {}", callkpi_cli::error_text(&e));
            }
            if e.downcast_ref::<analyze::UsageError>().is_some() { ExitCode::from(EX_USAGE) } else { ExitCode::FAILURE }
        }
    }
}
