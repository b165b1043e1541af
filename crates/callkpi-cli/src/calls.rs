//! `callkpi calls` and `callkpi call`: the calls a running aggregator
//! rebuilt (`Reports.ListCalls`, newest first, paged through for you) and
//! one call's whole timeline (`Reports.GetCall`: every event, queue visit
//! and agent segment), as a table, CSV or JSON.
//!
//! JSON uses the field names of `reports.proto` (instants `*_ns`, summary
//! durations `*_s`, timeline durations `*_ms`), enums as snake_case names,
//! and each event as the core event model's JSON plus `at` (its KPI time,
//! RFC 3339). Tables and CSV show times in `--tz`.

use std::io::Write;

use anyhow::Context as _;
use callkpi_core::event::{AgentState, Event, EventKind};
use callkpi_core::time::parse_tz;
use callkpi_proto::calls::{call_outcome_from_pb, direction_from_pb, hangup_by_from_pb};
use callkpi_proto::pb;
use clap::Args;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::analyze::UsageError;
use crate::output::Format;
use crate::report::{Client, Connection, connect, status_error};

/// Options of `callkpi calls`.
#[derive(Debug, Args)]
pub struct CallsArgs {
    /// Where and how to connect.
    #[command(flatten)]
    pub conn: Connection,
    /// Only calls that started at or after this instant (RFC 3339).
    #[arg(long)]
    pub from: Option<jiff::Timestamp>,
    /// Only calls that started before this instant (RFC 3339).
    #[arg(long)]
    pub to: Option<jiff::Timestamp>,
    /// Only calls that visited this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only calls this agent answered or was offered.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only calls of this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Only calls from this number (compared after normalisation: digits and a leading +).
    #[arg(long)]
    pub caller: Option<String>,
    /// At most this many calls, newest first; 0 = every call in the range.
    #[arg(long, default_value_t = 100)]
    pub limit: u64,
    /// Calls asked per request; the aggregator caps it at 1000.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
    /// IANA time zone of the times in tables and CSV (e.g. Europe/Paris), or UTC.
    #[arg(long = "tz", default_value = "UTC")]
    pub tz: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Options of `callkpi call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Where and how to connect.
    #[command(flatten)]
    pub conn: Connection,
    /// PBX call id (Asterisk Linkedid or queue_log call id, SIP Call-ID, FreeSWITCH call UUID).
    #[arg(value_name = "ID")]
    pub id: String,
    /// Site of the call: needed when two sites' PBXs used the same id.
    #[arg(long)]
    pub site: Option<String>,
    /// IANA time zone of the times in tables and CSV (e.g. Europe/Paris), or UTC.
    #[arg(long = "tz", default_value = "UTC")]
    pub tz: String,
    /// Output format (CSV: the events only).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// What `callkpi calls` found.
#[derive(Debug, Clone, PartialEq)]
pub struct CallsOutput {
    /// Calls, newest first.
    pub calls: Vec<pb::CallSummary>,
    /// Whether `--limit` stopped the listing before the last call.
    pub truncated: bool,
}

fn nanos(t: jiff::Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)
}

fn zone(name: &str) -> anyhow::Result<TimeZone> {
    Ok(parse_tz(name).map_err(UsageError)?)
}

/// Asks the aggregator for calls, page after page, up to `--limit`.
///
/// # Errors
/// On bad options (a [`UsageError`]), a connection failure, or a refusal.
pub async fn list(a: &CallsArgs) -> anyhow::Result<CallsOutput> {
    zone(&a.tz)?;
    let (from_ns, to_ns) = (a.from.map_or(0, nanos), a.to.map_or(0, nanos));
    if from_ns != 0 && to_ns != 0 && from_ns >= to_ns {
        return Err(UsageError("--from must be before --to".into()).into());
    }
    let mut client = connect(&a.conn).await?;
    list_with(&mut client, a, from_ns, to_ns).await
}

async fn list_with(client: &mut Client, a: &CallsArgs, from_ns: i64, to_ns: i64) -> anyhow::Result<CallsOutput> {
    let limit = usize::try_from(a.limit).unwrap_or(usize::MAX);
    let mut calls = Vec::new();
    let mut page_token = String::new();
    loop {
        let left = if limit == 0 { usize::MAX } else { limit - calls.len() };
        let page_size = u32::try_from(left).unwrap_or(u32::MAX).min(a.page_size);
        let query = pb::CallQuery {
            from_ns,
            to_ns,
            queue: a.queue.clone().unwrap_or_default(),
            agent: a.agent.clone().unwrap_or_default(),
            caller: a.caller.clone().unwrap_or_default(),
            limit: page_size,
            page_token,
            site: a.site.clone().unwrap_or_default(),
        };
        let page = client.list_calls(query).await.map_err(status_error)?.into_inner();
        calls.extend(page.calls);
        if page.next_page_token.is_empty() {
            return Ok(CallsOutput { calls, truncated: false });
        }
        if limit != 0 && calls.len() >= limit {
            calls.truncate(limit);
            return Ok(CallsOutput { calls, truncated: true });
        }
        page_token = page.next_page_token;
    }
}

/// Asks the aggregator for one call's timeline.
///
/// # Errors
/// On bad options (a [`UsageError`]), a connection failure, or a refusal
/// (`NotFound`; `FailedPrecondition` when the id needs `--site`).
pub async fn show(a: &CallArgs) -> anyhow::Result<pb::CallTimeline> {
    zone(&a.tz)?;
    if a.id.is_empty() {
        return Err(UsageError("give a call id".into()).into());
    }
    let mut client = connect(&a.conn).await?;
    let call = pb::CallRef { call_id: a.id.clone(), site: a.site.clone() };
    Ok(client.get_call(call).await.map_err(status_error)?.into_inner())
}

/// Runs `calls` and writes its output to stdout.
///
/// # Errors
/// As [`list`], and on write errors.
pub fn list_main(a: &CallsArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
    let out = rt.block_on(list(a))?;
    write_calls(&out, a.format, &zone(&a.tz)?, &mut std::io::stdout().lock())
}

/// Runs `call` and writes its output to stdout.
///
/// # Errors
/// As [`show`], and on write errors.
pub fn show_main(a: &CallArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
    let timeline = rt.block_on(show(a))?;
    write_timeline(&timeline, a.format, &zone(&a.tz)?, &mut std::io::stdout().lock())
}

// === formatting ===

/// `2026-11-22 14:51:27` (with a fraction only when there is one), in `tz`.
fn local(ns: i64, tz: &TimeZone) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(ns)) {
        Ok(ts) => ts.to_zoned_datetime(tz.clone()).strftime("%Y-%m-%d %H:%M:%S%.f").to_string(),
        Err(_) => ns.to_string(),
    }
}

/// RFC 3339 with the zone's offset and any fraction, for JSON.
fn rfc3339(ns: i64, tz: &TimeZone) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(ns)) {
        Ok(ts) => ts.to_zoned_datetime(tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%.f%:z").to_string(),
        Err(_) => ns.to_string(),
    }
}

fn outcome_name(v: i32) -> String {
    call_outcome_from_pb(v).map_or_else(|_| format!("unknown({v})"), |o| o.as_str().to_owned())
}

/// The snake_case serde name of a core enum.
fn snake<T: serde::Serialize>(v: T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// The name of a wire enum value, or `unknown(N)` for one this build does not know.
fn enum_name<T: serde::Serialize>(v: Result<T, callkpi_proto::ConvertError>, raw: i32) -> String {
    v.map_or_else(|_| format!("unknown({raw})"), snake)
}

fn direction_name(v: i32) -> String {
    enum_name(direction_from_pb(v), v)
}

fn secs_text(s: f64) -> String {
    format!("{s:.0}")
}

fn ms_text(ms: u64) -> String {
    if ms.is_multiple_of(1000) { format!("{}", ms / 1000) } else { format!("{:.1}", ms as f64 / 1000.0) }
}

/// A call summary as JSON, field names as in `reports.proto`.
pub fn summary_json(s: &pb::CallSummary) -> Value {
    json!({
        "call_id": s.call_id,
        "site": s.site,
        "caller": s.caller,
        "called": s.called,
        "direction": direction_name(s.direction),
        "first_queue": s.first_queue,
        "outcome": outcome_name(s.outcome),
        "start_ns": s.start_ns,
        "end_ns": s.end_ns,
        "wait_s": s.wait_s,
        "talk_s": s.talk_s,
        "agents": s.agents,
        "transfers": s.transfers,
    })
}

/// Writes a call list in `format`.
///
/// # Errors
/// On write errors.
pub fn write_calls(out: &CallsOutput, format: Format, tz: &TimeZone, w: &mut dyn Write) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let calls: Vec<Value> = out.calls.iter().map(summary_json).collect();
            serde_json::to_writer_pretty(&mut *w, &json!({ "calls": calls, "truncated": out.truncated }))?;
            writeln!(w)?;
        }
        Format::Csv => {
            let mut wr = csv::Writer::from_writer(w);
            wr.write_record([
                "start",
                "end",
                "site",
                "call_id",
                "caller",
                "called",
                "direction",
                "first_queue",
                "outcome",
                "wait_s",
                "talk_s",
                "agents",
                "transfers",
            ])?;
            for s in &out.calls {
                wr.write_record([
                    rfc3339(s.start_ns, tz),
                    s.end_ns.map(|e| rfc3339(e, tz)).unwrap_or_default(),
                    s.site.clone(),
                    s.call_id.clone(),
                    s.caller.clone(),
                    s.called.clone(),
                    direction_name(s.direction),
                    s.first_queue.clone(),
                    outcome_name(s.outcome),
                    s.wait_s.to_string(),
                    s.talk_s.to_string(),
                    s.agents.join(";"),
                    s.transfers.to_string(),
                ])?;
            }
            wr.flush()?;
        }
        Format::Table => {
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header([
                "start", "site", "call id", "caller", "queue", "outcome", "wait s", "talk s", "agents", "xfers",
            ]);
            for s in &out.calls {
                let right = |v: String| Cell::new(v).set_alignment(CellAlignment::Right);
                t.add_row(vec![
                    Cell::new(local(s.start_ns, tz)),
                    Cell::new(&s.site),
                    Cell::new(&s.call_id),
                    Cell::new(&s.caller),
                    Cell::new(&s.first_queue),
                    Cell::new(outcome_name(s.outcome)),
                    right(secs_text(s.wait_s)),
                    right(secs_text(s.talk_s)),
                    Cell::new(s.agents.join(", ")),
                    right(s.transfers.to_string()),
                ]);
            }
            writeln!(w, "{t}")?;
            let more = if out.truncated { "; more in the range: raise --limit (0 = all) or narrow it" } else { "" };
            writeln!(w, "{} calls, newest first{more}. Timeline of one: callkpi call ID.", out.calls.len())?;
        }
    }
    Ok(())
}

/// The event's kind name, queue, agent and a detail line, for tables.
fn event_row(e: &Event) -> (&'static str, String, String, String) {
    let o = |s: &Option<String>| s.clone().unwrap_or_default();
    let ms = |v: &Option<u64>| v.map(ms_text);
    let join = |parts: Vec<Option<String>>| parts.into_iter().flatten().collect::<Vec<_>>().join(", ");
    match &e.kind {
        EventKind::CallOffered { direction, caller, called, trunk } => (
            "call_offered",
            String::new(),
            String::new(),
            join(vec![
                Some(snake(direction)),
                (!caller.is_empty()).then(|| format!("from {caller}")),
                (!called.is_empty()).then(|| format!("to {called}")),
                trunk.as_ref().map(|t| format!("trunk {t}")),
            ]),
        ),
        EventKind::QueueJoin { queue, caller, position } => (
            "queue_join",
            queue.clone(),
            String::new(),
            join(vec![caller.as_ref().map(|c| format!("caller {c}")), position.map(|p| format!("position {p}"))]),
        ),
        EventKind::QueueLeave { queue, reason, reported_wait_ms } => (
            "queue_leave",
            queue.clone(),
            String::new(),
            join(vec![Some(snake(reason)), ms(reported_wait_ms).map(|s| format!("waited {s} s"))]),
        ),
        EventKind::Ringing { queue, agent } => ("ringing", o(queue), agent.clone(), String::new()),
        EventKind::OfferMissed { queue, agent, reason, reported_ring_ms } => (
            "offer_missed",
            o(queue),
            agent.clone(),
            join(vec![Some(snake(reason)), ms(reported_ring_ms).map(|s| format!("rang {s} s"))]),
        ),
        EventKind::Answered { queue, agent, reported_wait_ms, reported_ring_ms } => (
            "answered",
            o(queue),
            agent.clone(),
            join(vec![
                ms(reported_wait_ms).map(|s| format!("waited {s} s")),
                ms(reported_ring_ms).map(|s| format!("rang {s} s")),
            ]),
        ),
        EventKind::Hold { agent } => ("hold", String::new(), o(agent), String::new()),
        EventKind::Resume { agent } => ("resume", String::new(), o(agent), String::new()),
        EventKind::Transfer { kind, queue, agent, target, reported_talk_ms } => (
            "transfer",
            o(queue),
            o(agent),
            join(vec![
                Some(format!("{} to {target}", snake(kind))),
                ms(reported_talk_ms).map(|s| format!("talked {s} s")),
            ]),
        ),
        EventKind::Hangup { queue, agent, by, cause, reported_talk_ms } => (
            "hangup",
            o(queue),
            o(agent),
            join(vec![
                Some(format!("by {}", snake(by))),
                cause.map(|c| format!("cause {c}")),
                ms(reported_talk_ms).map(|s| format!("talked {s} s")),
            ]),
        ),
        EventKind::WrapUpStart { agent, queue } => ("wrap_up_start", o(queue), agent.clone(), String::new()),
        EventKind::WrapUpEnd { agent, queue } => ("wrap_up_end", o(queue), agent.clone(), String::new()),
        EventKind::AgentState { agent, queue, state } => (
            "agent_state",
            o(queue),
            agent.clone(),
            match state {
                AgentState::Login => "login".to_owned(),
                AgentState::Logout => "logout".to_owned(),
                AgentState::Available => "available".to_owned(),
                AgentState::Paused { reason } if reason.is_empty() => "paused".to_owned(),
                AgentState::Paused { reason } => format!("paused: {reason}"),
            },
        ),
        EventKind::QueueStart => ("queue_start", String::new(), String::new(), String::new()),
        EventKind::DialResult { agent, dialled, trunk, outcome, cause } => (
            "dial_result",
            String::new(),
            o(agent),
            join(vec![
                Some(format!("{dialled}: {}", snake(outcome))),
                trunk.as_ref().map(|t| format!("trunk {t}")),
                cause.map(|c| format!("cause {c}")),
            ]),
        ),
        EventKind::SurveyAnswer { metric, score, scale_min, scale_max, queue, agent } => {
            ("survey_answer", o(queue), o(agent), format!("{} {score} on {scale_min}-{scale_max}", snake(metric)))
        }
        EventKind::Disposition { resolved, code, agent } => (
            "disposition",
            String::new(),
            o(agent),
            format!("{} {code}", if *resolved { "resolved" } else { "not resolved" }),
        ),
    }
}

/// The timeline's events in the core model, in the order sent.
///
/// # Errors
/// When an event does not convert (a newer aggregator's event kind).
pub fn timeline_events(t: &pb::CallTimeline) -> anyhow::Result<Vec<Event>> {
    t.events
        .iter()
        .map(|e| Event::try_from(e.clone()).context("the aggregator sent an event this callkpi cannot read"))
        .collect()
}

/// A timeline as JSON (see the module docs).
///
/// # Errors
/// When an event does not convert.
pub fn timeline_json(t: &pb::CallTimeline) -> anyhow::Result<Value> {
    let utc = TimeZone::UTC;
    let events: Vec<Value> = timeline_events(t)?
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("at".into(), Value::String(rfc3339(e.kpi_time(), &utc)));
            }
            v
        })
        .collect();
    let segments: Vec<Value> = t
        .segments
        .iter()
        .map(|s| {
            json!({
                "agent": s.agent,
                "queue": s.queue,
                "start_ns": s.start_ns,
                "end_ns": s.end_ns,
                "talk_ms": s.talk_ms,
                "hold_ms": s.hold_ms,
                "wrap_ms": s.wrap_ms,
                "ring_ms": s.ring_ms,
                "transferred": s.transferred,
                "ended_by": enum_name(hangup_by_from_pb(s.ended_by), s.ended_by),
            })
        })
        .collect();
    let visits: Vec<Value> = t
        .visits
        .iter()
        .map(|v| {
            json!({
                "queue": v.queue,
                "enter_ns": v.enter_ns,
                "exit_ns": v.exit_ns,
                "outcome": outcome_name(v.outcome),
                "wait_ms": v.wait_ms,
            })
        })
        .collect();
    Ok(json!({
        "summary": t.summary.as_ref().map(summary_json),
        "events": events,
        "segments": segments,
        "visits": visits,
    }))
}

/// Writes a timeline in `format`.
///
/// # Errors
/// When an event does not convert, and on write errors.
pub fn write_timeline(t: &pb::CallTimeline, format: Format, tz: &TimeZone, w: &mut dyn Write) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *w, &timeline_json(t)?)?;
            writeln!(w)?;
        }
        Format::Csv => {
            let mut wr = csv::Writer::from_writer(w);
            wr.write_record(["time", "event", "queue", "agent", "detail"])?;
            for e in timeline_events(t)? {
                let (kind, queue, agent, detail) = event_row(&e);
                wr.write_record([rfc3339(e.kpi_time(), tz), kind.to_owned(), queue, agent, detail])?;
            }
            wr.flush()?;
        }
        Format::Table => write_timeline_table(t, tz, w)?,
    }
    Ok(())
}

fn write_timeline_table(t: &pb::CallTimeline, tz: &TimeZone, w: &mut dyn Write) -> anyhow::Result<()> {
    if let Some(s) = &t.summary {
        let end = s.end_ns.map_or_else(|| "in progress".to_owned(), |e| local(e, tz));
        writeln!(w, "Call {} at {}: {}", s.call_id, s.site, outcome_name(s.outcome))?;
        writeln!(
            w,
            "  {} call from {} to {}, {} .. {}",
            direction_name(s.direction),
            if s.caller.is_empty() { "?" } else { &s.caller },
            if s.called.is_empty() { "?" } else { &s.called },
            local(s.start_ns, tz),
            end
        )?;
        writeln!(
            w,
            "  waited {} s, talked {} s, agents: {}, transfers: {}",
            secs_text(s.wait_s),
            secs_text(s.talk_s),
            if s.agents.is_empty() { "none".to_owned() } else { s.agents.join(", ") },
            s.transfers
        )?;
    }
    let mut events = Table::new();
    events.load_preset(UTF8_FULL_CONDENSED);
    events.set_header(["time", "event", "queue", "agent", "detail"]);
    for e in timeline_events(t)? {
        let (kind, queue, agent, detail) = event_row(&e);
        events.add_row([local(e.kpi_time(), tz), kind.to_owned(), queue, agent, detail]);
    }
    writeln!(w, "{events}")?;
    if !t.visits.is_empty() {
        let mut visits = Table::new();
        visits.load_preset(UTF8_FULL_CONDENSED);
        visits.set_header(["queue visit", "entered", "left", "outcome", "wait s"]);
        for v in &t.visits {
            visits.add_row([
                v.queue.clone(),
                local(v.enter_ns, tz),
                v.exit_ns.map_or_else(|| "waiting".to_owned(), |x| local(x, tz)),
                outcome_name(v.outcome),
                ms_text(v.wait_ms),
            ]);
        }
        writeln!(w, "{visits}")?;
    }
    if !t.segments.is_empty() {
        let mut segs = Table::new();
        segs.load_preset(UTF8_FULL_CONDENSED);
        segs.set_header(["agent", "queue", "answered", "ended", "ring s", "talk s", "hold s", "wrap s", "end"]);
        for s in &t.segments {
            let end = if s.transferred {
                "transfer".to_owned()
            } else {
                format!("hang-up by {}", enum_name(hangup_by_from_pb(s.ended_by), s.ended_by))
            };
            segs.add_row([
                s.agent.clone(),
                s.queue.clone(),
                local(s.start_ns, tz),
                s.end_ns.map_or_else(|| "ongoing".to_owned(), |x| local(x, tz)),
                ms_text(s.ring_ms),
                ms_text(s.talk_ms),
                ms_text(s.hold_ms),
                ms_text(s.wrap_ms),
                end,
            ]);
        }
        writeln!(w, "{segs}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use callkpi_core::call::CallRecord;
    use callkpi_core::event::*;
    use callkpi_proto::calls::timeline_to_pb;

    use super::*;

    fn timeline() -> pb::CallTimeline {
        let t0 = 1_795_356_686 * NANOS_PER_SEC;
        let ev = |seq: u64, s: i64, kind: EventKind| Event {
            id: EventId { agent_id: "a".into(), seq },
            site: "paris".into(),
            source: SourceKind::AsteriskQueueLog,
            call_id: "1795356686.1".into(),
            leg_id: String::new(),
            time: EventTime::from_source(t0 + s * NANOS_PER_SEC),
            kind,
        };
        let mut events = vec![
            ev(
                1,
                0,
                EventKind::QueueJoin {
                    queue: "support".into(),
                    caller: Some("O'Brien, Pat".into()),
                    position: Some(1),
                },
            ),
            ev(
                2,
                4,
                EventKind::Answered {
                    queue: Some("support".into()),
                    agent: "Alice Martin".into(),
                    reported_wait_ms: Some(4_000),
                    reported_ring_ms: Some(4_000),
                },
            ),
            ev(
                3,
                30,
                EventKind::Hangup {
                    queue: Some("support".into()),
                    agent: Some("Alice Martin".into()),
                    by: HangupBy::Agent,
                    cause: None,
                    reported_talk_ms: Some(26_000),
                },
            ),
        ];
        let record = CallRecord::build(&mut events, true);
        timeline_to_pb(&record, &events, 5)
    }

    #[test]
    fn timeline_in_every_format() {
        let t = timeline();
        let tz = parse_tz("Europe/Paris").unwrap();
        let mut table = Vec::new();
        write_timeline(&t, Format::Table, &tz, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("Call 1795356686.1 at paris: answered"), "{table}");
        assert!(table.contains("2026-11-22 15:11:26"), "local time in Paris: {table}");
        for needle in ["queue_join", "answered", "hangup", "by agent, talked 26 s", "Alice Martin"] {
            assert!(table.contains(needle), "{needle} in {table}");
        }

        let mut csv_out = Vec::new();
        write_timeline(&t, Format::Csv, &tz, &mut csv_out).unwrap();
        let mut r = csv::Reader::from_reader(&csv_out[..]);
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(&rows[0][1], "queue_join");
        assert_eq!(&rows[0][4], "caller O'Brien, Pat, position 1", "commas survive CSV quoting");
        assert_eq!(&rows[2][0], "2026-11-22T15:11:56+01:00");

        let mut json_out = Vec::new();
        write_timeline(&t, Format::Json, &tz, &mut json_out).unwrap();
        let v: Value = serde_json::from_slice(&json_out).unwrap();
        assert_eq!(v["summary"]["outcome"], "answered");
        assert_eq!(v["summary"]["direction"], "inbound");
        assert_eq!(v["events"].as_array().unwrap().len(), 3);
        assert_eq!(v["events"][1]["kind"]["type"], "answered");
        assert_eq!(v["events"][1]["at"], "2026-11-22T14:11:30+00:00");
        assert_eq!(v["segments"][0]["ended_by"], "agent");
        assert_eq!(v["segments"][0]["talk_ms"], 26_000);
        assert_eq!(v["visits"][0]["outcome"], "answered");
    }

    #[test]
    fn call_list_in_every_format() {
        let s = timeline().summary.unwrap();
        let out = CallsOutput { calls: vec![s.clone(), s], truncated: true };
        let tz = TimeZone::UTC;
        let mut table = Vec::new();
        write_calls(&out, Format::Table, &tz, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("2 calls, newest first; more in the range"), "{table}");
        let mut csv_out = Vec::new();
        write_calls(&out, Format::Csv, &tz, &mut csv_out).unwrap();
        let mut r = csv::Reader::from_reader(&csv_out[..]);
        assert_eq!(r.headers().unwrap().get(8), Some("outcome"));
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!((&rows[0][3], &rows[0][8], &rows[0][11]), ("1795356686.1", "answered", "Alice Martin"));
        let mut json_out = Vec::new();
        write_calls(&out, Format::Json, &tz, &mut json_out).unwrap();
        let v: Value = serde_json::from_slice(&json_out).unwrap();
        assert_eq!(v["truncated"], true);
        assert_eq!(v["calls"][0]["talk_s"], 26.0);
        assert_eq!(v["calls"][0]["caller"], "O'Brien, Pat");
    }
}
