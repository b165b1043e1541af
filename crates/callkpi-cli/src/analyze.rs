//! `callkpi analyze`: offline analysis of PBX log files through the same KPI
//! engine the aggregator runs.
//!
//! Each input file is a pseudo agent (`file:N`), its events numbered in file
//! order, so the engine's de-duplication and ordering rules apply unchanged.
//! When all files are read, the engine closes every call still open ("unknown
//! end") and the report is built with the input treated as complete.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use callkpi_core::event::{EventId, SourceKind};
use callkpi_core::params::{GroupBy, KpiParams, SlFormula, parse_duration_s};
use callkpi_core::time::Interval;
use callkpi_core::{Engine, EngineConfig, Report};
use callkpi_feeds::ami::{AmiMapper, AmiMapperConfig};
use callkpi_feeds::esl::EslMapper;
use callkpi_feeds::hep::capture;
use callkpi_feeds::queue_log::{AgentAliases, QueueLogConfig, QueueLogMapper};
use callkpi_feeds::sip::{AgentEntry, QueueEntry, SipTracker, SipTrackerConfig};
use callkpi_feeds::{CaptureTime, FeedEvent, Unparsed};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::output::{self, Format};

/// Options of `callkpi analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Asterisk queue_log file (pipe-separated, or the DB-export CSV); repeatable.
    #[arg(long = "queue-log", value_name = "PATH")]
    pub queue_logs: Vec<PathBuf>,
    /// Raw Asterisk Manager Interface transcript (what a TCP client received); repeatable.
    #[arg(long = "ami", value_name = "PATH")]
    pub amis: Vec<PathBuf>,
    /// Raw FreeSWITCH event-socket stream (what an `event plain` listener received); repeatable.
    #[arg(long = "esl", value_name = "PATH")]
    pub esls: Vec<PathBuf>,
    /// HEP (SIP) captures and how to read them.
    #[command(flatten)]
    pub hep: HepArgs,
    /// What to report and how.
    #[command(flatten)]
    pub report: ReportOptions,
    /// Site name given to the events of these files.
    #[arg(long, default_value = "default")]
    pub site: String,
    /// Time zone of datetimes in a CSV queue_log export that carry no offset.
    #[arg(long = "queue-log-tz", default_value = "UTC")]
    pub queue_log_tz: String,
    /// How queue_log agent names are read.
    #[command(flatten)]
    pub queue_log: QueueLogOptions,
}

/// queue_log options beyond the time zone, as the agent's
/// `[[sources.queue_log]]` has them.
#[derive(Debug, Clone, Default, Args)]
pub struct QueueLogOptions {
    /// Report the queue_log agent LOGGED as REPORTED (exact, case-sensitive),
    /// as `agent_aliases` in the agent's config; repeatable. For
    /// `log_membername_as_agent = no` (Asterisk's default), where ADDMEMBER
    /// and REMOVEMEMBER name the interface: --agent-alias PJSIP/1001=Alice.
    #[arg(long = "agent-alias", value_name = "LOGGED=REPORTED", value_parser = parse_agent_alias)]
    pub agent_aliases: Vec<(String, String)>,
}

impl QueueLogOptions {
    /// The checked alias map.
    ///
    /// # Errors
    /// [`UsageError`] on a logged name given twice, an empty or `NONE` name,
    /// or a chain.
    pub fn aliases(&self) -> Result<AgentAliases, UsageError> {
        let mut seen = BTreeMap::new();
        for (logged, reported) in &self.agent_aliases {
            if let Some(other) = seen.insert(logged, reported)
                && other != reported
            {
                return Err(UsageError(format!("--agent-alias {logged:?} given twice ({other:?} and {reported:?})")));
            }
        }
        AgentAliases::new(self.agent_aliases.iter().cloned()).map_err(|e| UsageError(format!("--agent-alias: {e}")))
    }
}

/// `LOGGED=REPORTED`, split at the first `=`.
fn parse_agent_alias(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((logged, reported)) => Ok((logged.to_owned(), reported.to_owned())),
        None => Err(format!("{s:?} is not LOGGED=REPORTED")),
    }
}

/// `--hep` inputs and the site knowledge SIP does not carry.
#[derive(Debug, Clone, Default, Args)]
pub struct HepArgs {
    /// HEP capture of SIP mirrored by a proxy or SBC: pcap, pcapng, or raw
    /// datagrams each prefixed by a big-endian u32 length; repeatable.
    #[arg(long = "hep", value_name = "PATH")]
    pub heps: Vec<PathBuf>,
    /// Agent phones of --hep captures, comma separated: NAME=IP or NAME=CIDR
    /// (the phone's address), NAME@EXTENSION, a bare EXTENSION, PREFIX*, or
    /// a bare CIDR. Without any, every phone that rings is an agent named by
    /// the extension it was rung at.
    #[arg(long = "sip-agents", value_name = "LIST", value_delimiter = ',')]
    pub sip_agents: Vec<String>,
    /// Queues of --hep captures, comma separated: NAME=NUMBER (the dialled
    /// number, To or Request-URI user) or NAME=PREFIX*.
    #[arg(long = "sip-queues", value_name = "LIST", value_delimiter = ',')]
    pub sip_queues: Vec<String>,
    /// Queue of inbound --hep calls that no --sip-queues rule places (none:
    /// such calls count for agents only).
    #[arg(long = "sip-default-queue", value_name = "NAME")]
    pub sip_default_queue: Option<String>,
}

/// Report options shared by `analyze` and `report`: the same names, values
/// and defaults, so both give the same rows for the same data.
#[derive(Debug, Clone, Args)]
pub struct ReportOptions {
    /// Row interval: 15m, 30m, 1h, 1d or all.
    #[arg(long, default_value = "15m", value_parser = parse_interval)]
    pub interval: Interval,
    /// Grouping, comma separated: queue, agent, site, did, trunk, or none.
    #[arg(long = "by", default_value = "none", value_parser = parse_group)]
    pub by: Groups,
    /// IANA time zone intervals are aligned to (e.g. Europe/Paris), or UTC.
    #[arg(long = "tz", default_value = "UTC")]
    pub tz: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Service level thresholds in seconds, comma separated; all are computed.
    #[arg(long = "sl-threshold", value_delimiter = ',', default_value = "18,20,60")]
    pub sl_thresholds: Vec<u32>,
    /// Service level formula family.
    #[arg(long = "sl-formula", value_enum, default_value_t = SlFormulaArg::Offered)]
    pub sl_formula: SlFormulaArg,
    /// Abandons within this many seconds are short abandons (0 disables).
    #[arg(long = "short-abandon", value_name = "SECONDS", default_value_t = 5)]
    pub short_abandon: u32,
    /// FCR window: a new call from the same number within it means not
    /// resolved (e.g. 24h, 48h, 7d, or seconds).
    #[arg(long = "fcr-window", value_name = "DURATION", default_value = "7d", value_parser = parse_duration_s)]
    pub fcr_window: u64,
    /// Whether a transfer to another agent means not resolved at first contact.
    #[arg(long = "fcr-transfer-breaks", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub fcr_transfer_breaks: bool,
    /// Only rows from this instant (RFC 3339). `report` without it: from
    /// midnight today in --tz (1970-01-01T00:00:00Z for everything).
    #[arg(long)]
    pub from: Option<jiff::Timestamp>,
    /// Only rows before this instant (RFC 3339).
    #[arg(long)]
    pub to: Option<jiff::Timestamp>,
    /// Table form: also print rows without a call (an agent logged in and
    /// idle, a group with nothing offered); CSV and JSON have them all.
    #[arg(long)]
    pub all_rows: bool,
}

/// `--sl-formula` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlFormulaArg {
    /// Answered within T / offered.
    Offered,
    /// Answered within T / answered (Asterisk ServicelevelPerf).
    Answered,
    /// (Answered + abandoned within T) / offered (Asterisk ServicelevelPerf2).
    AbandonsPositive,
    /// Answered within T / (offered - abandoned within T).
    AbandonsIgnored,
}

impl From<SlFormulaArg> for SlFormula {
    fn from(v: SlFormulaArg) -> Self {
        match v {
            SlFormulaArg::Offered => SlFormula::Offered,
            SlFormulaArg::Answered => SlFormula::Answered,
            SlFormulaArg::AbandonsPositive => SlFormula::AbandonsPositive,
            SlFormulaArg::AbandonsIgnored => SlFormula::AbandonsIgnored,
        }
    }
}

fn parse_interval(s: &str) -> Result<Interval, String> {
    s.parse()
}

/// A `--by` list (clap treats a bare `Vec` as repeated values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups(pub Vec<GroupBy>);

fn parse_group(s: &str) -> Result<Groups, String> {
    GroupBy::parse_list(s).map(Groups)
}

/// The JSON document of `callkpi analyze --format json`.
#[derive(Debug, Serialize)]
pub struct AnalyzeOutput {
    /// Every parameter used.
    pub params: KpiParams,
    /// Input files and what was read from them.
    pub inputs: Vec<InputSummary>,
    /// Report rows.
    pub rows: Vec<callkpi_core::Row>,
    /// Verbs or events not mapped, by name; `malformed` for unreadable records.
    pub unparsed: BTreeMap<String, u64>,
}

/// What was read from one file.
#[derive(Debug, Serialize)]
pub struct InputSummary {
    /// Path as given.
    pub path: String,
    /// `queue_log`, `ami`, `esl` or `hep`.
    pub kind: &'static str,
    /// Bytes read.
    pub bytes: u64,
    /// Events produced.
    pub events: u64,
}

/// The usage error class: bad option values (exit 64).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn nanos(t: jiff::Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)
}

/// Builds the report parameters from the options.
///
/// # Errors
/// [`UsageError`] when a value is invalid (unknown time zone, no threshold).
pub fn params(a: &ReportOptions) -> Result<KpiParams, UsageError> {
    callkpi_core::time::parse_tz(&a.tz).map_err(UsageError)?;
    if a.sl_thresholds.is_empty() {
        return Err(UsageError("--sl-threshold needs at least one value".into()));
    }
    Ok(KpiParams {
        from: a.from.map(nanos),
        to: a.to.map(nanos),
        interval: a.interval,
        group_by: a.by.0.clone(),
        time_zone: a.tz.clone(),
        sl_thresholds_s: a.sl_thresholds.clone(),
        sl_formula: a.sl_formula.into(),
        short_abandon_s: a.short_abandon,
        fcr_window_s: a.fcr_window,
        fcr_transfer_breaks: a.fcr_transfer_breaks,
    })
}

/// Reads the inputs, runs the engine and returns the report.
///
/// # Errors
/// When no input is given, a file cannot be read, or an option is invalid.
pub fn run(a: &AnalyzeArgs) -> anyhow::Result<AnalyzeOutput> {
    let params = params(&a.report)?;
    let agent_aliases = a.queue_log.aliases()?;
    if a.queue_logs.is_empty() && a.amis.is_empty() && a.esls.is_empty() && a.hep.heps.is_empty() {
        return Err(UsageError(
            "give at least one input: --queue-log PATH, --ami PATH, --esl PATH or --hep PATH".into(),
        )
        .into());
    }
    let sip = sip_config(&a.hep)?;
    let ql_tz = callkpi_core::time::parse_tz(&a.queue_log_tz).map_err(UsageError)?;
    let mut engine = Engine::new(EngineConfig::default());
    let mut unparsed = Unparsed::default();
    let mut inputs = Vec::new();
    let files = a.queue_logs.iter().map(|p| (p, "queue_log")).chain(a.amis.iter().map(|p| (p, "ami")));
    let files = files.chain(a.esls.iter().map(|p| (p, "esl")));
    let files = files.chain(a.hep.heps.iter().map(|p| (p, "hep")));
    for (n, (path, kind)) in files.enumerate() {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {kind} input {}", path.display()))?;
        let (events, source, file_unparsed) = match kind {
            "queue_log" => {
                let mut m = QueueLogMapper::new(QueueLogConfig {
                    time_zone: ql_tz.clone(),
                    agent_aliases: agent_aliases.clone(),
                    ..QueueLogConfig::default()
                });
                let ev = m.map_all(&bytes);
                // A file with no record at all is refused below, in one sentence.
                if let Some(bad) = m.last_malformed()
                    && !ev.is_empty()
                {
                    tracing::warn!(
                        path = %path.display(),
                        last_at_byte = bad.at,
                        last_error = %bad.error,
                        count = m.unparsed().malformed,
                        "Skipped malformed queue_log records."
                    );
                }
                (ev, SourceKind::AsteriskQueueLog, m.unparsed().clone())
            }
            "hep" => {
                let mut t = SipTracker::new(sip.clone());
                let mut ev = Vec::new();
                for d in capture::datagrams(&bytes) {
                    match d {
                        Ok(d) => t.push_datagram(d.data, d.time, &mut ev),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "Capture file damaged: read up to there.");
                            break;
                        }
                    }
                }
                t.finish(&mut ev);
                (ev, SourceKind::SipHep, t.unparsed().clone())
            }
            "esl" => {
                let mut m = EslMapper::default();
                let mut ev = Vec::new();
                m.map_bytes(&bytes, &mut ev);
                (ev, SourceKind::FreeswitchEsl, m.unparsed().clone())
            }
            _ => {
                let mut m = AmiMapper::new(AmiMapperConfig::default());
                let mut ev = Vec::new();
                m.map_bytes(&bytes, &mut ev);
                (ev, SourceKind::AsteriskAmi, m.unparsed().clone())
            }
        };
        if events.is_empty() {
            return Err(anyhow::anyhow!(not_this_format(path, kind, &bytes)));
        }
        merge_unparsed(&mut unparsed, &file_unparsed);
        let agent_id = format!("file:{n}");
        let count = events.len() as u64;
        ingest_all(&mut engine, events, &agent_id, &a.site, source);
        tracing::info!(path = %path.display(), kind, events = count, bytes = bytes.len(), "Input read.");
        inputs.push(InputSummary { path: path.display().to_string(), kind, bytes: bytes.len() as u64, events: count });
    }
    engine.refresh(None, true);
    // Offline input is complete by definition: no source can be behind.
    let Report { params, rows } = engine.report(&params, &[]).map_err(UsageError)?;
    let mut un: BTreeMap<String, u64> = unparsed.by_name.clone();
    if unparsed.malformed > 0 {
        un.insert("malformed".into(), unparsed.malformed);
    }
    Ok(AnalyzeOutput { params, inputs, rows, unparsed: un })
}

/// What a file that gave no event of `kind` seems to be, as one sentence
/// naming the option that reads it.
fn not_this_format(path: &std::path::Path, kind: &str, bytes: &[u8]) -> String {
    let name = match kind {
        "queue_log" => "queue_log record",
        "ami" => "AMI event",
        "esl" => "FreeSWITCH event",
        _ => "SIP call",
    };
    let path = path.display();
    if bytes.is_empty() {
        return format!("{path} is empty: no {name} to read");
    }
    let head = &bytes[..bytes.len().min(64 * 1024)];
    let text = String::from_utf8_lossy(head);
    let first = text.lines().next().unwrap_or_default();
    let magic = head.get(..4).unwrap_or_default();
    let guess = if [&[0xd4, 0xc3, 0xb2, 0xa1][..], &[0xa1, 0xb2, 0xc3, 0xd4], &[0x0a, 0x0d, 0x0d, 0x0a], b"HEP3"]
        .contains(&magic)
    {
        Some(("a packet capture", "--hep"))
    } else if text.contains("Asterisk Call Manager") || text.contains("\nEvent: ") || text.starts_with("Event: ") {
        Some(("an AMI transcript", "--ami"))
    } else if text.contains("Event-Name: ") {
        Some(("a FreeSWITCH event-socket stream", "--esl"))
    } else if first.split('|').count() >= 5 && first.split('|').next().is_some_and(|t| t.parse::<f64>().is_ok()) {
        Some(("an Asterisk queue_log", "--queue-log"))
    } else {
        None
    };
    match guess {
        Some((what, option)) => format!("no {name} found in {path}: is it {what}? try {option}"),
        None if head.contains(&0) => format!("{path} is a binary file: no {name} found in it"),
        None => format!("no {name} found in {path}"),
    }
}

/// The SIP tracker configuration from the `--sip-*` flags.
///
/// # Errors
/// [`UsageError`] on an entry that is not of a documented form.
pub fn sip_config(a: &HepArgs) -> Result<SipTrackerConfig, UsageError> {
    let mut cfg = SipTrackerConfig { default_queue: a.sip_default_queue.clone(), ..SipTrackerConfig::default() };
    for item in a.sip_agents.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let bad = |why: String| UsageError(format!("--sip-agents {item:?}: {why}"));
        if let Some((name, addr)) = item.split_once('=') {
            let address = Some(addr.parse().map_err(bad)?);
            cfg.agents.push(AgentEntry { name: name.trim().to_owned(), address, extension: None });
        } else if let Some((name, ext)) = item.split_once('@') {
            cfg.agents.push(AgentEntry {
                name: name.trim().to_owned(),
                address: None,
                extension: Some(ext.trim().to_owned()),
            });
        } else if let Some(prefix) = item.strip_suffix('*') {
            cfg.agent_prefixes.push(prefix.to_owned());
        } else if item.contains('/') {
            cfg.agent_networks.push(item.parse().map_err(bad)?);
        } else {
            cfg.agent_extensions.push(item.to_owned());
        }
    }
    for item in a.sip_queues.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let Some((name, number)) = item.split_once('=') else {
            return Err(UsageError(format!("--sip-queues {item:?}: expected NAME=NUMBER or NAME=PREFIX*")));
        };
        let (name, number) = (name.trim(), number.trim());
        let i = match cfg.queues.iter().position(|q| q.name == name) {
            Some(i) => i,
            None => {
                cfg.queues.push(QueueEntry { name: name.to_owned(), numbers: Vec::new(), prefixes: Vec::new() });
                cfg.queues.len() - 1
            }
        };
        match number.strip_suffix('*') {
            Some(prefix) => cfg.queues[i].prefixes.push(prefix.to_owned()),
            None => cfg.queues[i].numbers.push(number.to_owned()),
        }
    }
    cfg.validate().map_err(|e| UsageError(format!("SIP configuration: {e}")))?;
    Ok(cfg)
}

fn merge_unparsed(into: &mut Unparsed, from: &Unparsed) {
    for (k, v) in &from.by_name {
        *into.by_name.entry(k.clone()).or_insert(0) += v;
    }
    into.malformed += from.malformed;
}

/// Gives feed events their identity and files them in the engine.
pub fn ingest_all(engine: &mut Engine, events: Vec<FeedEvent>, agent_id: &str, site: &str, source: SourceKind) {
    for (i, fe) in events.into_iter().enumerate() {
        // Offline, the capture time is the source time (or the epoch when a
        // feed has none, which then sorts by file order within a call).
        let wall = fe.source_time.unwrap_or(0);
        let time = CaptureTime { wall, monotonic: 0, clock_synced: true };
        let id = EventId { agent_id: agent_id.to_owned(), seq: i as u64 + 1 };
        engine.ingest(fe.into_event(id, site, source, time));
    }
}

/// Runs `analyze` and writes its output to stdout.
///
/// # Errors
/// As [`run`], and on write errors.
pub fn main(a: &AnalyzeArgs) -> anyhow::Result<()> {
    let out = run(a)?;
    output::write(&out, a.report.format, a.report.all_rows, &mut std::io::stdout().lock())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        analyze: AnalyzeArgs,
    }

    fn parse(args: &[&str]) -> Result<AnalyzeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("analyze").chain(args.iter().copied())).map(|c| c.analyze)
    }

    /// The default `log_membername_as_agent = no` form: login under the
    /// interface, the call under the member name.
    const LOG: &str = "\
1795356000|MANAGER|support|PJSIP/1001|ADDMEMBER|
1795356060|1795356060.1|support|NONE|ENTERQUEUE||0612345678|1
1795356065|1795356060.1|support|Alice|CONNECT|5|1795356065.2|3
1795356365|1795356060.1|support|Alice|COMPLETECALLER|5|300|1
1795359600|MANAGER|support|PJSIP/1001|REMOVEMEMBER|
";

    fn agents(c: &AnalyzeArgs) -> BTreeMap<String, (u64, f64)> {
        let out = run(c).expect("runs");
        let rows = out.rows.into_iter();
        rows.filter_map(|r| Some((r.group.get("agent")?.clone()?, (r.kpis.handled, r.kpis.logged_in_s)))).collect()
    }

    #[test]
    fn agent_alias_flags_reach_the_queue_log_mapper() {
        let path = std::env::temp_dir().join(format!("callkpi-analyze-alias-{}.log", std::process::id()));
        std::fs::write(&path, LOG).expect("write");
        let file = path.to_str().expect("utf-8 path");
        let base = ["--queue-log", file, "--by", "agent", "--interval", "all"];
        let plain = agents(&parse(&base).expect("parses"));
        let with = [&base[..], &["--agent-alias", "PJSIP/1001=Alice", "--agent-alias", "PJSIP/1002=Bob"]].concat();
        let aliased = agents(&parse(&with).expect("parses"));
        std::fs::remove_file(&path).ok();
        assert_eq!(plain.len(), 2, "{plain:?}");
        assert_eq!(plain["PJSIP/1001"], (0, 3600.0));
        assert_eq!(aliased.len(), 1, "{aliased:?}");
        assert_eq!(aliased["Alice"], (1, 3600.0));
    }

    #[test]
    fn bad_agent_aliases_are_usage_errors() {
        assert!(parse(&["--queue-log", "x", "--agent-alias", "PJSIP/1001"]).is_err(), "no '='");
        let aliases = |args: &[&str]| parse(args).expect("parses").queue_log.aliases();
        let err = aliases(&["--agent-alias", "PJSIP/1001=Alice", "--agent-alias", "Alice=Alice Martin"]).unwrap_err();
        assert!(err.0.contains("itself aliased"), "{err}");
        let err = aliases(&["--agent-alias", "PJSIP/1001=Alice", "--agent-alias", "PJSIP/1001=Bob"]).unwrap_err();
        assert!(err.0.contains("given twice"), "{err}");
        assert!(aliases(&["--agent-alias", "=Alice"]).is_err());
        assert!(aliases(&["--agent-alias", "PJSIP/1001="]).is_err());
        // The same pair twice is harmless; `=` after the first is in the name.
        let ok = aliases(&["--agent-alias", "A=B", "--agent-alias", "A=B", "--agent-alias", "C=D=E"]).expect("valid");
        assert_eq!((ok.len(), ok.resolve("C")), (2, "D=E"));
    }
}
