//! `callkpi watch`: live per-queue figures from a running aggregator
//! (`Reports.WatchKpis`), redrawn in place on a terminal, or one JSON object
//! per snapshot for scripts.
//!
//! When the aggregator goes away (restart, network), `watch` says so on
//! stderr and reconnects with a doubling backoff (1 s to 30 s); it ends with
//! an error only when retrying cannot help: a bad option, or a token the
//! aggregator refuses. Screen-clearing codes are written to a terminal
//! only: piped, each table is followed by a blank line.

use std::io::{IsTerminal as _, Write};
use std::time::Duration;

use anyhow::Context as _;
use callkpi_proto::pb;
use clap::{Args, ValueEnum};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::json;

use crate::analyze::UsageError;
use crate::report::{Connection, connect, status_error};

/// Options of `callkpi watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Where and how to connect.
    #[command(flatten)]
    pub conn: Connection,
    /// Only these queues (repeatable, any case); all by default.
    #[arg(long = "queue")]
    pub queues: Vec<String>,
    /// Service level thresholds, seconds, comma separated.
    #[arg(long = "sl-threshold", value_delimiter = ',', default_value = "20")]
    pub sl_thresholds: Vec<u32>,
    /// Time zone of "today".
    #[arg(long = "tz", default_value = "UTC")]
    pub tz: String,
    /// Output: a table redrawn in place, or JSON lines.
    #[arg(long, value_enum, default_value_t = WatchFormat::Table)]
    pub format: WatchFormat,
    /// Exit after this many snapshots (0 = until interrupted).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
}

/// `watch` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WatchFormat {
    /// A table, redrawn in place.
    Table,
    /// One JSON object per snapshot.
    Json,
}

/// A snapshot as JSON (field names as in `reports.proto`).
pub fn snapshot_json(s: &pb::LiveSnapshot) -> serde_json::Value {
    json!({
        "at_ns": s.at_ns,
        "queues": s.queues.iter().map(|q| json!({
            "queue": q.queue,
            "calls_waiting": q.calls_waiting,
            "longest_wait_s": q.longest_wait_s,
            "agents_available": q.agents_available,
            "agents_busy": q.agents_busy,
            "agents_paused": q.agents_paused,
            "agents_wrapup": q.agents_wrapup,
            "service_level_today_pct": q.service_level_today_pct.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "abandonment_today_pct": q.abandonment_today_pct,
            "offered_today": q.offered_today,
            "answered_today": q.answered_today,
        })).collect::<Vec<_>>(),
        "behind": s.behind.iter().map(|b| json!({"agent_id": b.agent_id, "lag_s": b.lag_s})).collect::<Vec<_>>(),
    })
}

/// The live table, as drawn by `watch` (and `demo`).
pub(crate) fn table(s: &pb::LiveSnapshot, thresholds: &[u32]) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec!["queue".to_owned(), "waiting".into(), "longest s".into()];
    header.extend(thresholds.iter().map(|th| format!("SL{th}s today %")));
    header.extend(["aband. today %", "offered", "avail", "busy", "wrap", "paused"].map(str::to_owned));
    t.set_header(header);
    for q in &s.queues {
        let mut row =
            vec![Cell::new(&q.queue), Cell::new(q.calls_waiting), Cell::new(format!("{:.0}", q.longest_wait_s))];
        for th in thresholds {
            row.push(Cell::new(q.service_level_today_pct.get(th).map_or(String::new(), |v| format!("{v:.1}"))));
        }
        row.push(Cell::new(q.abandonment_today_pct.map_or(String::new(), |v| format!("{v:.1}"))));
        for n in [
            q.offered_today,
            u64::from(q.agents_available),
            u64::from(q.agents_busy),
            u64::from(q.agents_wrapup),
            u64::from(q.agents_paused),
        ] {
            row.push(Cell::new(n));
        }
        t.add_row(row.into_iter().map(|c| c.set_alignment(CellAlignment::Right)).collect::<Vec<_>>());
    }
    let mut out = t.to_string();
    for b in &s.behind {
        out.push_str(&format!("\n! {} has not delivered for {:.0} s", b.agent_id, b.lag_s));
    }
    out
}

/// Why one connection ended.
enum End {
    /// `--count` snapshots were shown.
    Done,
    /// The stream or connection ended; retrying may help.
    Lost(anyhow::Error),
}

/// Whether an error from the aggregator is final: retrying cannot help.
fn is_final(s: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument | Code::Unimplemented)
}

/// A refusal: `Err` when final, else a lost connection.
fn refused(s: tonic::Status) -> anyhow::Result<End> {
    if is_final(&s) { Err(status_error(s)) } else { Ok(End::Lost(status_error(s))) }
}

/// One connection: snapshots until it ends or `--count` is reached.
async fn stream_once(a: &WatchArgs, seen: &mut u64, tty: bool) -> anyhow::Result<End> {
    let mut client = match connect(&a.conn).await {
        Ok(c) => c,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => return Err(e),
        Err(e) => return Ok(End::Lost(e)),
    };
    // Every queue, then --queue's whatever their case.
    let query = pb::LiveQuery {
        queues: Vec::new(),
        sites: Vec::new(),
        min_interval_ms: 500,
        sl_thresholds_s: a.sl_thresholds.clone(),
        time_zone: a.tz.clone(),
        include_agents: false,
    };
    let mut stream = match client.watch_kpis(query).await {
        Ok(r) => r.into_inner(),
        Err(s) => return refused(s),
    };
    let mut stdout = std::io::stdout().lock();
    loop {
        let mut snap = match stream.message().await {
            Ok(Some(snap)) => snap,
            Ok(None) => return Ok(End::Lost(anyhow::anyhow!("the aggregator ended the stream"))),
            Err(s) => return refused(s),
        };
        let unknown = callkpi_aggregator::reports::select_queues(&mut snap.queues, &a.queues);
        let mut text = table(&snap, &a.sl_thresholds);
        if !unknown.is_empty() {
            text.push_str(&format!("\n! no queue named {} today", unknown.join(", ")));
        }
        match a.format {
            WatchFormat::Json => {
                let mut doc = snapshot_json(&snap);
                doc["unknown_queues"] = json!(unknown);
                writeln!(stdout, "{doc}")?;
            }
            // Home the cursor and clear, then draw: the table redraws in place.
            WatchFormat::Table if tty => writeln!(stdout, "\x1b[H\x1b[2J{text}")?,
            WatchFormat::Table => writeln!(stdout, "{text}\n")?,
        }
        stdout.flush()?;
        *seen += 1;
        if a.count > 0 && *seen >= a.count {
            return Ok(End::Done);
        }
    }
}

/// First wait before reconnecting, and the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// Streams snapshots to stdout, reconnecting when the aggregator goes away.
///
/// # Errors
/// On bad options, a refusal that retrying cannot mend (authentication), or
/// a write error.
pub async fn run(a: &WatchArgs) -> anyhow::Result<()> {
    let tty = std::io::stdout().is_terminal();
    let mut seen = 0;
    let mut backoff = BACKOFF.0;
    loop {
        let before = seen;
        match stream_once(a, &mut seen, tty).await? {
            End::Done => return Ok(()),
            End::Lost(e) => {
                if seen > before {
                    backoff = BACKOFF.0;
                }
                let _ = writeln!(
                    std::io::stderr(),
                    "callkpi watch: {}; reconnecting in {} s...",
                    crate::error_text(&e),
                    backoff.as_secs()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

/// Runs `watch`.
///
/// # Errors
/// As [`run`].
pub fn main(a: &WatchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
    rt.block_on(run(a))
}
