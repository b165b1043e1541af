//! Report output as a terminal table, CSV or JSON.
//!
//! JSON is the contract (see docs/kpis.md), at full precision. CSV has one
//! line per row with every KPI as a column (`service_level_pct_<T>` per
//! threshold): first the table's columns in the table's order, then the
//! others, with fractions rounded to 2 decimals as the table shows them. The table
//! shows the figures a supervisor reads first; use CSV or JSON for the rest.
//! It leaves out rows without a call (an idle agent logged in, a group with
//! nothing to show) unless asked, and says why a row is incomplete.

use std::io::Write;

use clap::ValueEnum;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

use crate::analyze::AnalyzeOutput;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned table for a terminal.
    Table,
    /// CSV with a header line.
    Csv,
    /// The JSON document described in docs/kpis.md.
    Json,
}

/// Writes `out` in `format`; `all_rows` keeps the table's rows without a
/// call (CSV and JSON always have every row).
///
/// # Errors
/// On write or serialisation errors.
pub fn write(out: &AnalyzeOutput, format: Format, all_rows: bool, w: &mut dyn Write) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *w, out)?;
            writeln!(w)?;
        }
        Format::Csv => write_csv(out, w)?,
        Format::Table => write_table(out, all_rows, w)?,
    }
    Ok(())
}

/// Whether a row has nothing the table shows: no call offered, answered,
/// handled or missed (only login time, say).
fn no_call(k: &callkpi_core::report::Kpis) -> bool {
    k.entered == 0 && k.offered == 0 && k.answered == 0 && k.abandoned == 0 && k.handled == 0 && k.missed_offers == 0
}

/// Why rows are incomplete, each reason once, for the table's footnote.
fn incomplete_reasons(rows: &[&callkpi_core::Row]) -> Vec<String> {
    let mut behind: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    let (mut in_progress, mut fcr_open) = (0, 0);
    for r in rows {
        for b in &r.behind {
            let lag = behind.entry(b.agent_id.as_str()).or_insert(0.0);
            *lag = lag.max(b.lag_s);
        }
        in_progress += usize::from(r.flags.iter().any(|f| f == "interval_in_progress"));
        fcr_open += usize::from(r.flags.iter().any(|f| f == "fcr_provisional"));
    }
    let mut out: Vec<String> = behind
        .into_iter()
        .map(|(agent, lag)| format!("{agent} has not delivered everything (up to {lag:.0} s behind)"))
        .collect();
    if in_progress > 0 {
        out.push(format!("interval in progress ({in_progress} row{})", crate::agents::plural(in_progress)));
    }
    if fcr_open > 0 {
        out.push(format!(
            "FCR window still open, FCR % may change ({fcr_open} row{})",
            crate::agents::plural(fcr_open)
        ));
    }
    out
}

/// Flattens a row's KPIs into (column, value) pairs in a stable order.
fn flat_kpis(kpis: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    if let Value::Object(m) = kpis {
        for (k, v) in m {
            match v {
                Value::Object(inner) => {
                    for (t, x) in inner {
                        out.push((format!("{k}_{t}"), x.clone()));
                    }
                }
                other => out.push((k.clone(), other.clone())),
            }
        }
    }
    out
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn write_csv(out: &AnalyzeOutput, w: &mut dyn Write) -> anyhow::Result<()> {
    let mut wr = csv::Writer::from_writer(w);
    let dims: Vec<&str> = out.params.group_by.iter().map(|g| g.as_str()).collect();
    let mut header_done = false;
    for row in &out.rows {
        let kpis = table_order(flat_kpis(&serde_json::to_value(&row.kpis)?));
        if !header_done {
            let mut h: Vec<String> = vec!["start".into(), "end".into()];
            h.extend(dims.iter().map(|d| (*d).to_owned()));
            h.extend(["complete".into(), "flags".into()]);
            h.extend(kpis.iter().map(|(k, _)| k.clone()));
            wr.write_record(&h)?;
            header_done = true;
        }
        let mut rec: Vec<String> = vec![row.start.clone(), row.end.clone()];
        rec.extend(dims.iter().map(|d| row.group.get(*d).cloned().flatten().unwrap_or_default()));
        rec.push(row.complete.to_string());
        rec.push(row.flags.join(" "));
        rec.extend(kpis.iter().map(|(_, v)| cell_text(v)));
        wr.write_record(&rec)?;
    }
    wr.flush()?;
    Ok(())
}

/// The flattened KPIs with the table's columns first, in its order.
fn table_order(mut kpis: Vec<(String, Value)>) -> Vec<(String, Value)> {
    let rank = |k: &str| {
        if k.starts_with("service_level_pct_") {
            0
        } else {
            TABLE_KPIS.iter().position(|(name, _)| *name == k).map_or(TABLE_KPIS.len() + 1, |i| i + 1)
        }
    };
    // Stable: thresholds and the other KPIs keep their own order.
    kpis.sort_by_key(|(k, _)| rank(k));
    kpis
}

const TABLE_KPIS: &[(&str, &str)] = &[
    ("offered", "offered"),
    ("answered", "answered"),
    ("abandoned", "aband."),
    ("abandonment_rate_pct", "aband.%"),
    ("asa_s", "ASA s"),
    ("max_wait_s", "max wait"),
    ("handled", "handled"),
    ("aht_s", "AHT s"),
    ("fcr_pct", "FCR %"),
    ("transfers", "xfers"),
    ("missed_offers", "missed"),
    ("occupancy_pct", "occ. %"),
    ("csat_pct", "CSAT %"),
];

fn write_table(out: &AnalyzeOutput, all_rows: bool, w: &mut dyn Write) -> anyhow::Result<()> {
    let rows: Vec<&callkpi_core::Row> = out.rows.iter().filter(|r| all_rows || !no_call(&r.kpis)).collect();
    let hidden = out.rows.len() - rows.len();
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    let dims: Vec<&str> = out.params.group_by.iter().map(|g| g.as_str()).collect();
    let mut header: Vec<String> = vec!["interval".into()];
    header.extend(dims.iter().map(|d| (*d).to_owned()));
    for th in &out.params.sl_thresholds_s {
        header.push(format!("SL{th}s %"));
    }
    header.extend(TABLE_KPIS.iter().map(|(_, h)| (*h).to_owned()));
    t.set_header(header);
    for row in &rows {
        let kpis = serde_json::to_value(&row.kpis)?;
        let mut cells: Vec<Cell> =
            vec![Cell::new(if row.complete { row.start.clone() } else { format!("{} *", row.start) })];
        cells
            .extend(dims.iter().map(|d| Cell::new(row.group.get(*d).cloned().flatten().unwrap_or_else(|| "-".into()))));
        for th in &out.params.sl_thresholds_s {
            let v = kpis["service_level_pct"].get(th.to_string()).cloned().unwrap_or(Value::Null);
            cells.push(Cell::new(cell_text(&v)).set_alignment(CellAlignment::Right));
        }
        for (k, _) in TABLE_KPIS {
            cells.push(Cell::new(cell_text(&kpis[*k])).set_alignment(CellAlignment::Right));
        }
        t.add_row(cells);
    }
    writeln!(w, "{t}")?;
    let n = rows.len();
    write!(w, "{n} row{}", crate::agents::plural(n))?;
    if hidden > 0 {
        write!(w, " ({hidden} without a call not shown: --all-rows)")?;
    }
    writeln!(
        w,
        ". SL formula {:?}, short abandon <= {} s, FCR window {} s. Full figures: --format json or csv.",
        out.params.sl_formula, out.params.short_abandon_s, out.params.fcr_window_s
    )?;
    for i in &out.inputs {
        if let Some(p) = &i.sip_queue_placements {
            writeln!(w, "SIP queues of {}: {p}.", i.path)?;
        }
    }
    let reasons = incomplete_reasons(&rows);
    if !reasons.is_empty() {
        let marked = if rows.iter().any(|r| !r.complete) { "* = incomplete: " } else { "Note: " };
        writeln!(w, "{marked}{}.", reasons.join("; "))?;
    }
    if !out.unparsed.is_empty() {
        let list: Vec<String> = out.unparsed.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(w, "Not mapped: {}", list.join(", "))?;
    }
    Ok(())
}
