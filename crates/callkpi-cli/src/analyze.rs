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
use callkpi_core::bounds::{SpanCheck, SpanError};
use callkpi_core::event::{EventId, SourceKind};
use callkpi_core::params::{GroupBy, KpiParams, SlFormula, parse_duration_s};
use callkpi_core::time::Interval;
use callkpi_core::{Engine, EngineConfig, Report};
use callkpi_feeds::ami::{AmiMapper, AmiMapperConfig, RecvIndex, frames};
use callkpi_feeds::esl::EslMapper;
use callkpi_feeds::hep::capture;
use callkpi_feeds::queue_log::{AgentAliases, CsvColumns, QueueLogConfig, QueueLogMapper};
use callkpi_feeds::sip::{AgentEntry, QueueEntry, QueuePlacements, SipTracker, SipTrackerConfig};
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
    /// Where event times come from when a feed has none, and how far apart
    /// they may be.
    #[command(flatten)]
    pub times: TimeArgs,
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
    /// Column layout of DB-export CSV queue_logs, as `csv_columns` in the
    /// agent's config: `asterisk` (Asterisk's realtime table), `queuemetrics`
    /// (QueueMetrics' table), or time=COL,callid=COL,queue=COL,agent=COL,
    /// verb=COL,data=COL;COL;... Without it those two headers are recognised
    /// and any other is refused.
    #[arg(long = "csv-columns", value_name = "LAYOUT", value_parser = parse_csv_columns)]
    pub csv_columns: Option<Box<CsvColumns>>,
}

fn parse_csv_columns(s: &str) -> Result<Box<CsvColumns>, String> {
    s.parse().map(Box::new)
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

/// Event times: receive-time side files, and the span limit.
#[derive(Debug, Clone, Args)]
pub struct TimeArgs {
    /// Receive times of an --ami transcript recorded without `Timestamp:`
    /// headers (manager.conf `timestampevents = no`, the default): one line
    /// per recv(), `epoch<TAB>byte offset<TAB>length`. The first belongs to
    /// the first --ami, and so on. Without one, a timestamp-less transcript
    /// gives counts and the durations its events carry, not time-based KPIs.
    #[arg(long = "ami-recv-index", value_name = "PATH")]
    pub ami_recv_indexes: Vec<PathBuf>,
    /// Longest time the inputs may span, earliest to latest event (e.g.
    /// 400d); beyond it an event is refused by name instead of the analysis
    /// taking memory in proportion (a far-off clock, a missing timestamp).
    #[arg(long = "max-span", value_name = "DURATION", default_value = "400d", value_parser = parse_duration_s)]
    pub max_span: u64,
}

impl Default for TimeArgs {
    fn default() -> Self {
        Self { ami_recv_indexes: Vec::new(), max_span: callkpi_core::bounds::DEFAULT_MAX_SPAN_S }
    }
}

/// `--hep` inputs and the site knowledge SIP does not carry.
#[derive(Debug, Clone, Args)]
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
    /// Queue of inbound --hep calls that no --sip-queues rule places
    /// (unset: see --sip-queue-by-number).
    #[arg(long = "sip-default-queue", value_name = "NAME")]
    pub sip_default_queue: Option<String>,
    /// Inbound --hep calls that no rule and no --sip-default-queue places
    /// join a queue named after the dialled number (To, else Request-URI
    /// user); false: they count for agents only.
    #[arg(long = "sip-queue-by-number", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub sip_queue_by_number: bool,
    /// Request headers linking the two legs of a call through a B2BUA
    /// (X-CID: the other leg's Call-ID; Session-ID: RFC 7989), comma
    /// separated; an empty value links by HEP correlation id only.
    #[arg(long = "sip-link-headers", value_name = "LIST", value_delimiter = ',', default_value = "X-CID,Session-ID")]
    pub sip_link_headers: Vec<String>,
}

impl Default for HepArgs {
    /// What the flags default to: the tracker's own defaults.
    fn default() -> Self {
        let sip = SipTrackerConfig::default();
        Self {
            heps: Vec::new(),
            sip_agents: Vec::new(),
            sip_queues: Vec::new(),
            sip_default_queue: None,
            sip_queue_by_number: sip.queue_by_dialled_number,
            sip_link_headers: sip.link_headers,
        }
    }
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
    /// Answered within T / answered.
    Answered,
    /// (Answered + abandoned within T) / offered.
    AbandonsPositive,
    /// Answered within T / (offered - abandoned within T).
    AbandonsIgnored,
    /// Asterisk's ServicelevelPerf (completed within T / completed); T is
    /// the queue's servicelevel. Adds Asterisk's Completed and Abandoned.
    AsteriskPerf,
    /// Asterisk's ServicelevelPerf2 ((completed + abandoned within T) /
    /// (completed + abandoned), abandoned counting timeouts and
    /// leave-when-empty). Adds Asterisk's Completed and Abandoned.
    AsteriskPerf2,
}

impl From<SlFormulaArg> for SlFormula {
    fn from(v: SlFormulaArg) -> Self {
        match v {
            SlFormulaArg::Offered => SlFormula::Offered,
            SlFormulaArg::Answered => SlFormula::Answered,
            SlFormulaArg::AbandonsPositive => SlFormula::AbandonsPositive,
            SlFormulaArg::AbandonsIgnored => SlFormula::AbandonsIgnored,
            SlFormulaArg::AsteriskPerf => SlFormula::AsteriskPerf,
            SlFormulaArg::AsteriskPerf2 => SlFormula::AsteriskPerf2,
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
    /// `hep` only: how the file's inbound calls were placed in queues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_queue_placements: Option<QueuePlacements>,
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
    if a.times.ami_recv_indexes.len() > a.amis.len() {
        return Err(UsageError(format!(
            "{} --ami-recv-index for {} --ami: each index belongs to the --ami at the same position",
            a.times.ami_recv_indexes.len(),
            a.amis.len()
        ))
        .into());
    }
    let sip = sip_config(&a.hep)?;
    let ql_tz = callkpi_core::time::parse_tz(&a.queue_log_tz).map_err(UsageError)?;
    let mut engine = Engine::new(EngineConfig::default());
    let mut unparsed = Unparsed::default();
    let mut inputs = Vec::new();
    let mut span = SpanCheck::new(a.times.max_span);
    let mut timeless = Vec::new();
    let mut ami_n = 0;
    let n_inputs = a.queue_logs.len() + a.amis.len() + a.esls.len() + a.hep.heps.len();
    let files = a.queue_logs.iter().map(|p| (p, "queue_log")).chain(a.amis.iter().map(|p| (p, "ami")));
    let files = files.chain(a.esls.iter().map(|p| (p, "esl")));
    let files = files.chain(a.hep.heps.iter().map(|p| (p, "hep")));
    for (n, (path, kind)) in files.enumerate() {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {kind} input {}", path.display()))?;
        let mut placements = None;
        let (events, source, file_unparsed) = match kind {
            "queue_log" => {
                let mut m = QueueLogMapper::new(QueueLogConfig {
                    time_zone: ql_tz.clone(),
                    agent_aliases: agent_aliases.clone(),
                    csv_columns: a.queue_log.csv_columns.as_deref().cloned(),
                    ..QueueLogConfig::default()
                });
                let ev = m.map_all(&bytes);
                if let Some(e) = m.csv_header_error() {
                    anyhow::bail!("{}: {e}", path.display());
                }
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
                placements = Some(t.placements().clone());
                (ev, SourceKind::SipHep, t.unparsed().clone())
            }
            "esl" => {
                let mut m = EslMapper::default();
                let mut ev = Vec::new();
                m.map_bytes(&bytes, &mut ev);
                (ev, SourceKind::FreeswitchEsl, m.unparsed().clone())
            }
            _ => {
                let index = a.times.ami_recv_indexes.get(ami_n).map(|p| read_recv_index(p)).transpose()?;
                ami_n += 1;
                let (mut ev, un, exits) = read_ami(&bytes, index.as_ref());
                log_exit_resolution(path, exits);
                if ev.iter().any(|e| e.source_time.is_none()) {
                    // Timestamp-less and no receive times: one instant for
                    // all, so only counts and carried durations mean anything.
                    if n_inputs > 1 {
                        return Err(UsageError(format!(
                            "AMI transcript {} has no Timestamp: headers (timestampevents = no): give its \
                             --ami-recv-index, or analyze it alone for counts only",
                            path.display()
                        ))
                        .into());
                    }
                    timeless.push(path.display().to_string());
                    ev.iter_mut().for_each(|e| e.source_time = None);
                }
                (ev, SourceKind::AsteriskAmi, un)
            }
        };
        if events.is_empty() {
            return Err(anyhow::anyhow!(not_this_format(path, kind, &bytes)));
        }
        merge_unparsed(&mut unparsed, &file_unparsed);
        let agent_id = format!("file:{n}");
        let count = events.len() as u64;
        ingest_checked(&mut engine, &mut span, events, &agent_id, &a.site, source)
            .map_err(|e| UsageError(format!("{kind} input {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), kind, events = count, bytes = bytes.len(), "Input read.");
        if let Some(p) = placements.as_ref().filter(|p| p.by_dialled_number > 0) {
            tracing::warn!(path = %path.display(), placed = p.by_dialled_number, "No queue rule placed some inbound SIP calls: they are in queues named after the dialled number (--sip-queues, --sip-default-queue or --sip-queue-by-number=false change that).");
        }
        inputs.push(InputSummary {
            path: path.display().to_string(),
            kind,
            bytes: bytes.len() as u64,
            events: count,
            sip_queue_placements: placements,
        });
    }
    engine.refresh(None, true);
    // Offline input is complete by definition: no source can be behind.
    let Report { params, mut rows } = engine.report(&params, &[]).map_err(UsageError)?;
    if !timeless.is_empty() {
        tracing::warn!(paths = ?timeless, "AMI transcript without Timestamp: headers (manager.conf timestampevents = no) and no --ami-recv-index: time-based KPIs (presence, pause, hold, wrap-up, occupancy, FCR, intervals) are not computed; counts and the durations events carry (wait, talk, ring) are.");
        rows.iter_mut().for_each(drop_time_based);
    }
    let mut un: BTreeMap<String, u64> = unparsed.by_name.clone();
    if unparsed.malformed > 0 {
        un.insert("malformed".into(), unparsed.malformed);
    }
    Ok(AnalyzeOutput { params, inputs, rows, unparsed: un })
}

/// Says how an AMI input's queue exits were told apart (timeouts and
/// leave-when-empty from abandons), so that a reader comparing with
/// queue_log knows which rule gave the figures.
fn log_exit_resolution(path: &std::path::Path, r: callkpi_feeds::ami::ExitResolution) {
    let rule = if r.varset_seen {
        "QUEUESTATUS (VarSet events received)"
    } else {
        "fallback: no VarSet events (manager user without the dialplan class), \
         a caller with a hang-up request abandoned, one let go alive timed out"
    };
    tracing::info!(
        path = %path.display(),
        by_queuestatus = r.by_queuestatus,
        by_hangup_request = r.by_hangup_request,
        refused = r.refused,
        "AMI queue exits told apart by {rule}."
    );
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
    let mut cfg = SipTrackerConfig {
        default_queue: a.sip_default_queue.clone(),
        queue_by_dialled_number: a.sip_queue_by_number,
        link_headers: a.sip_link_headers.iter().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect(),
        ..SipTrackerConfig::default()
    };
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

/// The flag of rows from an input without event times (see docs/kpis.md).
pub const NO_EVENT_TIMES: &str = "no_event_times";

/// Refuses what a row computes from event times when the input had none:
/// every event then sits at one instant.
fn drop_time_based(row: &mut callkpi_core::Row) {
    let k = &mut row.kpis;
    for v in [
        &mut k.aht_s,
        &mut k.hold_s,
        &mut k.wrap_s,
        &mut k.dmtt_s,
        &mut k.case_age_s,
        &mut k.contacts_per_case,
        &mut k.fcr_pct,
        &mut k.occupancy_pct,
        &mut k.utilisation_pct,
        &mut k.productivity_per_hour,
    ] {
        *v = None;
    }
    (k.logged_in_s, k.paused_s, k.cases, k.fcr_contacts, k.holds) = (0.0, 0.0, 0, 0, 0);
    row.flags.push(NO_EVENT_TIMES.to_owned());
}

fn read_recv_index(path: &std::path::Path) -> anyhow::Result<RecvIndex> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    RecvIndex::parse(&text).map_err(|e| UsageError(format!("--ami-recv-index {}: {e}", path.display())).into())
}

/// Maps an AMI transcript; events without a `Timestamp:` take the receive
/// time of the `recv()` that completed their message, when `index` is given.
fn read_ami(bytes: &[u8], index: Option<&RecvIndex>) -> (Vec<FeedEvent>, Unparsed, callkpi_feeds::ami::ExitResolution) {
    let mut m = AmiMapper::new(AmiMapperConfig::default());
    let mut ev = Vec::new();
    let mut it = frames(bytes);
    while let Some(frame) = it.next() {
        let from = ev.len();
        match frame {
            Ok(frame) => m.map_frame(&frame, &mut ev),
            Err(_) => m.count_malformed(),
        }
        let received = index.and_then(|ix| ix.time_of((it.position() as u64).saturating_sub(1)));
        for e in &mut ev[from..] {
            e.source_time = e.source_time.or(received);
        }
    }
    // Queue exits still waiting for their QUEUESTATUS at the end of the
    // recording are resolved by the fallback rule.
    let from = ev.len();
    m.flush(&mut ev);
    let end = index.and_then(|ix| ix.time_of((bytes.len() as u64).saturating_sub(1)));
    for e in &mut ev[from..] {
        e.source_time = e.source_time.or(end);
    }
    (ev, m.unparsed().clone(), m.exit_resolution())
}

/// [`ingest_all`] behind the [`SpanCheck`]: an event beyond the span limit
/// is refused before the engine allocates for it.
///
/// # Errors
/// The first event that would make the inputs span more than the limit.
pub fn ingest_checked(
    engine: &mut Engine,
    span: &mut SpanCheck,
    events: Vec<FeedEvent>,
    agent_id: &str,
    site: &str,
    source: SourceKind,
) -> Result<(), SpanError> {
    let events = identify(events, agent_id, site, source);
    for e in &events {
        span.check(e)?;
    }
    for e in events {
        engine.ingest(e);
    }
    Ok(())
}

/// Gives feed events their identity: file order numbers them.
fn identify(events: Vec<FeedEvent>, agent_id: &str, site: &str, source: SourceKind) -> Vec<callkpi_core::event::Event> {
    let mut out = Vec::with_capacity(events.len());
    for (i, fe) in events.into_iter().enumerate() {
        // Offline, the capture time is the source time (or the epoch when a
        // feed has none, which then sorts by file order within a call).
        let wall = fe.source_time.unwrap_or(0);
        let time = CaptureTime { wall, monotonic: 0, clock_synced: true };
        let id = EventId { agent_id: agent_id.to_owned(), seq: i as u64 + 1 };
        out.push(fe.into_event(id, site, source, time));
    }
    out
}

/// Gives feed events their identity and files them in the engine.
pub fn ingest_all(engine: &mut Engine, events: Vec<FeedEvent>, agent_id: &str, site: &str, source: SourceKind) {
    for e in identify(events, agent_id, site, source) {
        engine.ingest(e);
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

/// `--hep` with no queue option: the Kamailio recording's inbound calls
/// land in queues named after the number dialled, checked against the
/// harness's ground truth (`calls.csv`, computed from sipp's own logs).
#[cfg(test)]
mod hep_default_queues {
    use std::collections::BTreeMap;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        analyze: AnalyzeArgs,
    }

    fn fixture(name: &str) -> String {
        format!("{}/../../tests/fixtures/sip-hep/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    /// Per dialled number: (calls, answered, abandoned, no answer), from the
    /// ground truth's first legs (a transfer's second leg is the same call).
    fn truth() -> BTreeMap<String, (u64, u64, u64, u64)> {
        let mut r = csv::Reader::from_path(fixture("calls.csv")).expect("calls.csv");
        let h = r.headers().expect("header").clone();
        let col = |name: &str| h.iter().position(|c| c == name).expect(name);
        let (inbound, referred, dialled, outcome) =
            (col("inbound"), col("referred_from"), col("dialled"), col("outcome"));
        let mut out: BTreeMap<String, (u64, u64, u64, u64)> = BTreeMap::new();
        for rec in r.records() {
            let rec = rec.expect("record");
            if &rec[inbound] != "True" || !rec[referred].is_empty() {
                continue;
            }
            let e = out.entry(rec[dialled].to_owned()).or_default();
            e.0 += 1;
            match &rec[outcome] {
                "answered" | "transferred" => e.1 += 1,
                "abandoned" => e.2 += 1,
                "no_answer" => e.3 += 1,
                _ => {}
            }
        }
        out
    }

    fn analyze(extra: &[&str]) -> AnalyzeOutput {
        let hep = fixture("hep.raw");
        let args = [&["analyze", "--hep", hep.as_str(), "--by", "queue", "--interval", "all"], extra].concat();
        run(&Cli::try_parse_from(args).expect("parses").analyze).expect("runs")
    }

    #[test]
    fn inbound_calls_join_a_queue_named_after_the_dialled_number() {
        let truth = truth();
        assert_eq!(truth.values().map(|t| t.0).sum::<u64>(), 50, "the recording's 50 inbound calls");
        let out = analyze(&[]);
        let mut seen = BTreeMap::new();
        for r in &out.rows {
            let q = r.group["queue"].clone().expect("every call is in a queue");
            let k = &r.kpis;
            // Short abandons are not offered (docs/kpis.md), but were calls.
            let row = (k.offered + k.short_abandoned, k.answered, k.abandoned + k.short_abandoned, k.timed_out);
            seen.insert(q, row);
        }
        assert_eq!(seen, truth);
        let p = out.inputs[0].sip_queue_placements.as_ref().expect("hep input says how calls were placed");
        assert_eq!((p.by_dialled_number, p.total()), (50, 50), "{p}");
        let mut table = Vec::new();
        output::write(&out, Format::Table, false, &mut table).expect("table");
        let table = String::from_utf8(table).expect("utf-8");
        assert!(table.contains("50 in a queue named after the dialled number (the default)"), "{table}");
    }

    /// The `--hep`/`--sip-*` flags as parsed from nothing.
    fn off_args() -> HepArgs {
        let parsed = Cli::try_parse_from(["analyze"]).expect("parses").analyze.hep;
        let d = HepArgs::default();
        assert_eq!(
            (&parsed.sip_link_headers, parsed.sip_queue_by_number),
            (&d.sip_link_headers, d.sip_queue_by_number)
        );
        parsed
    }

    #[test]
    fn rules_and_the_switch_place_the_rest_and_are_counted() {
        let out = analyze(&["--sip-queues", "group=2100,support=200*"]);
        let p = out.inputs[0].sip_queue_placements.clone().expect("placements");
        let truth = truth();
        let group = truth["2100"].0;
        let support = truth.iter().filter(|(n, _)| n.starts_with("200")).map(|(_, t)| t.0).sum::<u64>();
        assert_eq!(p.by_rule, BTreeMap::from([("group".to_owned(), group), ("support".to_owned(), support)]));
        // 2999 matches no rule: the default still names a queue after it.
        assert_eq!(p.by_dialled_number, truth["2999"].0);
        let off = analyze(&["--sip-queue-by-number", "false"]);
        let p = off.inputs[0].sip_queue_placements.clone().expect("placements");
        assert_eq!((p.not_queued, p.total()), (50, 50));
        assert!(off.rows.iter().all(|r| r.group["queue"].is_none()), "no queue rows");
        // The flag's default is the tracker's.
        assert_eq!(sip_config(&off_args()).expect("valid").link_headers, SipTrackerConfig::default().link_headers);
        let named = analyze(&["--sip-default-queue", "inbound"]);
        let p = named.inputs[0].sip_queue_placements.clone().expect("placements");
        assert_eq!(p.by_default_queue, 50);
    }
}

/// AMI without `Timestamp:` headers, and the span bound: through `run`, on
/// the bundled Asterisk recording with its Timestamp lines stripped here
/// (the committed fixture keeps them).
#[cfg(test)]
mod ami_times {
    use std::collections::BTreeMap;
    use std::path::Path;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        analyze: AnalyzeArgs,
    }

    fn run_a(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/asterisk/run-a").join(name)
    }

    /// The transcript without its `Timestamp:` lines, as Asterisk sends it
    /// with `timestampevents = no`, and the recording's receive-time index
    /// moved to the shorter file's offsets.
    fn strip_timestamps(dir: &Path) -> (PathBuf, PathBuf) {
        let ami = std::fs::read(run_a("ami.log")).expect("ami.log");
        let mut out = Vec::with_capacity(ami.len());
        // (original offset of a removed line, its length), in order.
        let mut removed: Vec<(u64, u64)> = Vec::new();
        let mut pos = 0u64;
        for line in ami.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b"Timestamp:") {
                removed.push((pos, line.len() as u64));
            } else {
                out.extend_from_slice(line);
            }
            pos += line.len() as u64;
        }
        assert!(removed.len() > 8000, "{} Timestamp lines", removed.len());
        // Where original offset `o` lands: minus every removed byte before it.
        let moved = |o: u64| {
            let gone: u64 = removed.iter().take_while(|(at, _)| *at < o).map(|&(at, len)| len.min(o - at)).sum();
            o - gone
        };
        let index = std::fs::read_to_string(run_a("ami.recv_index.tsv")).expect("index");
        let mut new_index = String::new();
        for line in index.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let (off, len): (u64, u64) = (f[1].parse().expect("offset"), f[2].parse().expect("length"));
            let (a, b) = (moved(off), moved(off + len));
            new_index.push_str(&format!("{}\t{a}\t{}\n", f[0], b - a));
        }
        let (log, tsv) = (dir.join("ami.log"), dir.join("ami.recv_index.tsv"));
        std::fs::write(&log, out).expect("write");
        std::fs::write(&tsv, new_index).expect("write");
        (log, tsv)
    }

    fn analyze(args: &[&str]) -> anyhow::Result<AnalyzeOutput> {
        let base = ["analyze", "--by", "queue", "--interval", "all"];
        run(&Cli::try_parse_from(base.iter().chain(args)).expect("parses").analyze)
    }

    type Figures = (u64, u64, u64, u64, Option<f64>);

    /// Per queue: offered, answered, abandoned, handled, ASA.
    fn counts(out: &AnalyzeOutput) -> BTreeMap<String, Figures> {
        let rows = out.rows.iter().filter_map(|r| Some((r.group["queue"].clone()?, &r.kpis)));
        rows.map(|(q, k)| (q, (k.offered, k.answered, k.abandoned, k.handled, k.asa_s))).collect()
    }

    /// Talk totals agree within `per_call` seconds a handled call.
    fn same_talk(a: &AnalyzeOutput, b: &AnalyzeOutput, per_call: f64) {
        for (r, s) in a.rows.iter().zip(&b.rows) {
            let (x, y) = (r.kpis.talk_total_s, s.kpis.talk_total_s);
            assert!((x - y).abs() <= per_call * s.kpis.handled as f64, "talk {x} vs {y} in {:?}", r.group);
        }
    }

    #[test]
    fn without_timestamps_the_recv_index_gives_the_times_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, tsv) = strip_timestamps(dir.path());
        let (log, tsv) = (log.to_str().expect("utf-8"), tsv.to_str().expect("utf-8"));
        let stamped = analyze(&["--ami", run_a("ami.log").to_str().expect("utf-8")]).expect("runs");
        let received = analyze(&["--ami", log, "--ami-recv-index", tsv]).expect("runs");
        assert_eq!(counts(&received), counts(&stamped));
        assert!(counts(&stamped)["support"].0 > 30, "{:?}", counts(&stamped));
        same_talk(&received, &stamped, 0.01);
        for (r, s) in received.rows.iter().zip(&stamped.rows) {
            assert_eq!(r.start, s.start, "rows start at the recording's time, not 1970");
            assert!(!r.flags.iter().any(|f| f == NO_EVENT_TIMES));
            // Receive times trail Asterisk's stamps by milliseconds.
            let (rl, sl) = (r.kpis.logged_in_s, s.kpis.logged_in_s);
            assert!((rl - sl).abs() <= 0.01 * sl.max(1.0), "logged in {rl} vs {sl}");
            let occ = |k: &callkpi_core::report::Kpis| k.occupancy_pct.unwrap_or(0.0);
            assert!((occ(&r.kpis) - occ(&s.kpis)).abs() < 1.0, "{:?} vs {:?}", r.kpis, s.kpis);
        }
    }

    #[test]
    fn without_timestamps_or_index_counts_are_given_and_time_kpis_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = strip_timestamps(dir.path());
        let log = log.to_str().expect("utf-8");
        let stamped = analyze(&["--ami", run_a("ami.log").to_str().expect("utf-8")]).expect("runs");
        let timeless = analyze(&["--ami", log]).expect("runs, bounded");
        // Counts, waits (HoldTime) and talk (TalkTime) are carried by the events.
        assert_eq!(counts(&timeless), counts(&stamped));
        // Talk is what AgentComplete's TalkTime says, summed per queue.
        let text = std::fs::read_to_string(run_a("ami.log")).expect("ami.log").replace("\r\n", "\n");
        let mut talk: BTreeMap<String, f64> = BTreeMap::new();
        for m in text.split("\n\n").filter(|m| m.starts_with("Event: AgentComplete\n")) {
            let h = |k: &str| m.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix(": ")).expect(k);
            *talk.entry(h("Queue").to_owned()).or_default() += h("TalkTime").parse::<f64>().expect("seconds");
        }
        let got = timeless.rows.iter().filter_map(|r| Some((r.group["queue"].clone()?, r.kpis.talk_total_s)));
        assert_eq!(got.filter(|(_, t)| *t > 0.0).collect::<BTreeMap<_, _>>(), talk);
        let support = timeless.rows.iter().find(|r| r.group["queue"].as_deref() == Some("support")).expect("row");
        assert!(support.flags.iter().any(|f| f == NO_EVENT_TIMES), "{:?}", support.flags);
        assert_eq!((support.kpis.logged_in_s, support.kpis.occupancy_pct, support.kpis.aht_s), (0.0, None, None));
        // Mixed with a timed input it cannot be placed: refused by name.
        let ql = run_a("queue_log");
        let err = analyze(&["--queue-log", ql.to_str().expect("utf-8"), "--ami", log]).expect_err("refused");
        assert!(err.to_string().contains("no Timestamp: headers"), "{err}");
        let err = analyze(&["--queue-log", ql.to_str().expect("utf-8"), "--ami-recv-index", log])
            .expect_err("index without --ami");
        assert!(err.to_string().contains("--ami-recv-index"), "{err}");
    }

    #[test]
    fn an_input_spanning_decades_is_refused_naming_the_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("queue_log");
        // A record stamped 5 s after the epoch (a clock that restarted).
        std::fs::write(
            &path,
            "1795356000|MANAGER|support|PJSIP/1001|ADDMEMBER|\n5|1795356060.1|support|NONE|ENTERQUEUE||0612345678|1\n",
        )
        .expect("write");
        let p = path.to_str().expect("utf-8");
        let err = analyze(&["--queue-log", p]).expect_err("56 years");
        let msg = err.to_string();
        assert!(err.downcast_ref::<UsageError>().is_some(), "exit 64: {msg}");
        assert!(msg.contains("file:0#2 (QueueJoin, call \"1795356060.1\", at 1970-01-01T00:00:05Z)"), "{msg}");
        let default = Cli::try_parse_from(["analyze", "--queue-log", p]).expect("parses").analyze.times;
        assert_eq!(default.max_span, TimeArgs::default().max_span, "--max-span default is the documented one");
        // The limit is the user's to raise.
        analyze(&["--queue-log", p, "--max-span", "25000d"]).expect("within a raised limit");
    }
}
