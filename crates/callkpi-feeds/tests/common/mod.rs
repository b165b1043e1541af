//! Shared by the feeds' end-to-end tests: time templates, and the engine
//! run the way `callkpi analyze` runs it (events numbered in input order,
//! source time as capture time, input closed at the end).

#![allow(dead_code, unreachable_pub)]

use callkpi_core::event::{EventId, SourceKind};
use callkpi_core::{Engine, EngineConfig};
use callkpi_feeds::{CaptureTime, FeedEvent};

/// 2026-11-22T13:20:00Z, a quarter-hour start.
pub const T0: i64 = 1_795_356_000;

/// `{T+n}` in a line is replaced by the epoch `T0 + n`.
pub fn at(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("{T+") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 3..];
        let end = tail.find('}').expect("closing brace");
        let n: i64 = tail[..end].parse().expect("offset");
        out.push_str(&(T0 + n).to_string());
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

/// An engine fed `events` of site "hq" from `source`, refreshed with the
/// input closed.
pub fn engine(events: Vec<FeedEvent>, source: SourceKind) -> Engine {
    engine_of_files(vec![events], source)
}

/// Like [`engine`] for several input files, each its own pseudo agent
/// (`file:0`, `file:1`...), as `callkpi analyze` numbers its inputs.
pub fn engine_of_files(files: Vec<Vec<FeedEvent>>, source: SourceKind) -> Engine {
    let mut e = Engine::new(EngineConfig::default());
    for (n, events) in files.into_iter().enumerate() {
        for (i, fe) in events.into_iter().enumerate() {
            let wall = fe.source_time.unwrap_or(0);
            let id = EventId { agent_id: format!("file:{n}"), seq: i as u64 + 1 };
            let time = CaptureTime { wall, monotonic: 0, clock_synced: true };
            e.ingest(fe.into_event(id, "hq", source, time));
        }
    }
    e.refresh(None, true);
    e
}

/// Asserts that a KPI is present and equal to `b` (to rounding).
pub fn close(a: Option<f64>, b: f64) {
    let a = a.unwrap_or_else(|| panic!("expected {b}, got null"));
    assert!((a - b).abs() < 1e-9, "expected {b}, got {a}");
}
