//! `callkpi agents`: every agent a running aggregator knows
//! (`Reports.ListAgents`): whether it is connected, how late its data is,
//! and when it was last heard from. The first thing to look at when a
//! report says an office is behind.

use std::io::Write;

use anyhow::Context as _;
use callkpi_proto::pb;
use clap::Args;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::json;

use crate::output::Format;
use crate::report::{Connection, connect, status_error};

/// Options of `callkpi agents`.
#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// Where and how to connect.
    #[command(flatten)]
    pub conn: Connection,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Asks the aggregator for its agents.
///
/// # Errors
/// On bad options, a connection failure or a refusal.
pub async fn run(a: &AgentsArgs) -> anyhow::Result<pb::AgentList> {
    let mut client = connect(&a.conn).await?;
    Ok(client.list_agents(pb::AgentQuery::default()).await.map_err(status_error)?.into_inner())
}

/// One agent as JSON (field names as in `reports.proto`).
fn agent_json(a: &pb::AgentInfo) -> serde_json::Value {
    json!({
        "agent_id": a.agent_id,
        "site": a.site,
        "version": a.version,
        "connected": a.connected,
        "connected_since_ns": a.connected_since_ns,
        "last_seen_ns": a.last_seen_ns,
        "acked_seq": a.acked_seq,
        "spool_last_seq": a.spool_last_seq,
        "lag_s": a.lag_s,
        "oldest_unacked_ns": a.oldest_unacked_ns,
        "clock_offset_ms": a.clock_offset_ms,
        "clock_synced": a.clock_synced,
        "spool_bytes": a.spool_bytes,
        "lost_events": a.lost_events,
        "quarantined_events": a.quarantined_events,
    })
}

fn ago(now_ns: i64, then_ns: i64) -> String {
    if then_ns == 0 { "never".into() } else { format!("{:.0} s ago", (now_ns - then_ns).max(0) as f64 / 1e9) }
}

/// Writes the list in `format`.
///
/// # Errors
/// On write errors.
pub fn write(list: &pb::AgentList, format: Format, now_ns: i64, w: &mut dyn Write) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let doc = json!({ "agents": list.agents.iter().map(agent_json).collect::<Vec<_>>() });
            serde_json::to_writer_pretty(&mut *w, &doc)?;
            writeln!(w)?;
        }
        Format::Csv => {
            let mut wr = csv::Writer::from_writer(w);
            wr.write_record(["agent_id", "site", "connected", "lag_s", "last_seen_ns", "acked_seq", "spool_last_seq"])?;
            for a in &list.agents {
                wr.write_record([
                    a.agent_id.clone(),
                    a.site.clone(),
                    a.connected.to_string(),
                    format!("{:.1}", a.lag_s),
                    a.last_seen_ns.to_string(),
                    a.acked_seq.to_string(),
                    a.spool_last_seq.to_string(),
                ])?;
            }
            wr.flush()?;
        }
        Format::Table => {
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header(["agent", "site", "connected", "lag s", "last contact", "acked seq", "clock offset ms"]);
            for a in &list.agents {
                let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
                t.add_row(vec![
                    Cell::new(&a.agent_id),
                    Cell::new(&a.site),
                    Cell::new(if a.connected { "yes" } else { "no" }),
                    right(format!("{:.0}", a.lag_s)),
                    right(ago(now_ns, a.last_seen_ns)),
                    right(a.acked_seq.to_string()),
                    right(a.clock_offset_ms.map_or(String::new(), |o| o.to_string())),
                ]);
            }
            writeln!(w, "{t}")?;
            let n = list.agents.len();
            writeln!(w, "{n} agent{}; lag = age of what an agent has not delivered (0: caught up).", plural(n))?;
        }
    }
    Ok(())
}

/// "s" unless there is exactly one.
pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Runs `agents` and writes its output to stdout.
///
/// # Errors
/// As [`run`], and on write errors.
pub fn main(a: &AgentsArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
    let list = rt.block_on(run(a))?;
    let now = jiff::Timestamp::now().as_nanosecond();
    write(&list, a.format, i64::try_from(now).unwrap_or(i64::MAX), &mut std::io::stdout().lock())
}
