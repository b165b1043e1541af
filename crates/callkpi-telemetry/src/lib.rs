//! The tracing set-up shared by `callkpi-agent`, `callkpi-aggregator` and
//! `callkpi`: one filter rule and one JSON shape, so a log pipeline reads
//! the three binaries' lines alike.
//!
//! - **Filter**: `CALLKPI_LOG`, else `RUST_LOG`, in `EnvFilter` syntax
//!   (`info,callkpi_agent=debug`); unset or invalid, the binary's default
//!   level.
//! - **Plain**: tracing-subscriber's human-readable lines.
//! - **JSON**: one object per line, on stderr:
//!   `{"timestamp":"2026-12-07T03:20:00.123456Z","level":"INFO","message":"...",
//!   <the event's fields>,"target":"callkpi_agent::uplink","span":{"name":...,<its fields>}}`.
//!   The event's fields are at the top level (not under `fields`), and the
//!   innermost span (a source's `kind`/`name`, an uplink's agent) is under
//!   `span`; the span list is left out, as it repeats the same fields.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields};
use tracing_subscriber::fmt::{MakeWriter, SubscriberBuilder};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line (see the crate docs for its shape).
    Json,
}

/// The filter from `CALLKPI_LOG`, else `RUST_LOG`, else `default_level`
/// (also used when the variable does not parse).
pub fn env_filter(default_level: &str) -> EnvFilter {
    filter_from(std::env::var("CALLKPI_LOG").ok().or_else(|| std::env::var("RUST_LOG").ok()), default_level)
}

fn filter_from(spec: Option<String>, default_level: &str) -> EnvFilter {
    spec.and_then(|f| EnvFilter::try_new(f).ok()).unwrap_or_else(|| EnvFilter::new(default_level))
}

/// The JSON subscriber builder: the one shape of the three binaries.
fn json_builder<W>(filter: EnvFilter, writer: W) -> SubscriberBuilder<JsonFields, Format<Json>, EnvFilter, W>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
}

/// Installs the global subscriber writing to stderr in `format`, filtered
/// by [`env_filter`]`(default_level)`. Does nothing when one is already
/// installed (a test harness, a second call).
pub fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = env_filter(default_level);
    let _ = match format {
        LogFormat::Plain => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => json_builder(filter, std::io::stderr).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_have_the_documented_shape() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = json_builder(EnvFilter::new("info"), move || writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("source", kind = "queue_log", name = "ql");
            let _entered = span.enter();
            tracing::info!(offset = 42_u64, "Queue_log reading from offset.");
            tracing::debug!("filtered out");
        });
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "one line per event, debug filtered: {text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON object");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "Queue_log reading from offset.");
        assert_eq!(v["offset"], 42, "event fields at the top level");
        assert_eq!(v["span"]["name"], "source");
        assert_eq!(v["span"]["kind"], "queue_log");
        assert!(v.get("spans").is_none(), "no span list");
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "RFC 3339 UTC timestamp");
        assert!(v["target"].as_str().is_some_and(|t| t.starts_with("callkpi_telemetry")));
    }

    #[test]
    fn an_invalid_or_missing_filter_falls_back_to_the_default_level() {
        assert_eq!(filter_from(None, "warn").to_string(), "warn");
        assert_eq!(filter_from(Some("info,[=bad".to_owned()), "warn").to_string(), "warn");
        assert_eq!(filter_from(Some("debug".to_owned()), "warn").to_string(), "debug");
    }
}
