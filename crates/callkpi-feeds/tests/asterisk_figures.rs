//! callkpi's `asterisk-perf` and `asterisk-perf2` service-level formulas
//! against what a real Asterisk printed for the same calls.
//!
//! Each recording under `tests/fixtures/asterisk/run-*` holds, in its
//! `truth.json`, the `QueueParams` Asterisk answered to the `QueueStatus`
//! sent at the end of the run (`asterisk_reported_at_end`): `Completed`,
//! `Abandoned`, `ServiceLevel` (the queue's T) and `ServicelevelPerf` /
//! `ServicelevelPerf2`, printed by app_queue with `%2.1f`. Both the
//! queue_log and the AMI path of the recording, run through the engine as
//! `callkpi analyze` runs them, must give exactly those figures.

mod common;

use std::collections::BTreeMap;

use callkpi_core::event::SourceKind;
use callkpi_core::params::{GroupBy, SlFormula};
use callkpi_core::report::Kpis;
use callkpi_core::time::Interval;
use callkpi_core::{Engine, KpiParams};
use callkpi_feeds::ami::{AmiMapper, AmiMapperConfig};
use callkpi_feeds::queue_log::{QueueLogConfig, QueueLogMapper};

fn fixture(run: &str, name: &str) -> Vec<u8> {
    let path = format!("{}/../../tests/fixtures/asterisk/{run}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `asterisk_reported_at_end`: queue → QueueParams header → value.
fn reported(run: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let truth: serde_json::Value = serde_json::from_slice(&fixture(run, "truth.json")).expect("truth.json");
    let end = truth["asterisk_reported_at_end"].as_object().expect("asterisk_reported_at_end");
    end.iter()
        .map(|(q, params)| {
            let params = params.as_object().expect("queue params");
            let params = params.iter().map(|(k, v)| (k.clone(), v.as_str().expect("string").to_owned())).collect();
            (q.clone(), params)
        })
        .collect()
}

fn queue_log_engine(run: &str) -> Engine {
    let mut m = QueueLogMapper::new(QueueLogConfig::default());
    common::engine(m.map_all(&fixture(run, "queue_log")), SourceKind::AsteriskQueueLog)
}

fn ami_engine(run: &str) -> Engine {
    let mut m = AmiMapper::new(AmiMapperConfig::default());
    let mut events = Vec::new();
    m.map_bytes(&fixture(run, "ami.log"), &mut events);
    common::engine(events, SourceKind::AsteriskAmi)
}

/// The whole run's row of `queue`, with the queue's own service level.
fn queue_row(engine: &Engine, queue: &str, servicelevel: u32, formula: SlFormula) -> Kpis {
    let params = KpiParams {
        interval: Interval::All,
        group_by: vec![GroupBy::Queue],
        sl_thresholds_s: vec![servicelevel],
        sl_formula: formula,
        ..KpiParams::default()
    };
    let report = engine.report(&params, &[]).expect("report");
    report
        .rows
        .into_iter()
        .find(|r| r.group.get("queue").and_then(|q| q.as_deref()) == Some(queue))
        .unwrap_or_else(|| panic!("no row for queue {queue}"))
        .kpis
}

/// A percentage as app_queue prints it (`%2.1f`); no denominator prints 0.0.
fn printed(v: Option<f64>) -> String {
    format!("{:.1}", v.unwrap_or(0.0))
}

/// The figures callkpi gives, side by side with Asterisk's, per queue.
fn compare(run: &str, path: &str, engine: &Engine) {
    for (queue, at_end) in reported(run) {
        let t: u32 = at_end["ServiceLevel"].parse().expect("ServiceLevel");
        let perf = queue_row(engine, &queue, t, SlFormula::AsteriskPerf);
        let perf2 = queue_row(engine, &queue, t, SlFormula::AsteriskPerf2);
        let got = [
            ("Completed", perf.asterisk_completed.map(|v| v.to_string()).unwrap_or_default()),
            ("Abandoned", perf.asterisk_abandoned.map(|v| v.to_string()).unwrap_or_default()),
            ("ServicelevelPerf", printed(perf.service_level_pct[&t.to_string()])),
            ("ServicelevelPerf2", printed(perf2.service_level_pct[&t.to_string()])),
        ];
        for (name, value) in got {
            assert_eq!(value, at_end[name], "{run} {path} {queue} {name}: callkpi {value}, Asterisk {}", at_end[name]);
        }
        assert_eq!(perf2.asterisk_abandoned, perf.asterisk_abandoned);
    }
}

#[test]
fn run_a_queue_log_gives_asterisks_figures() {
    compare("run-a", "queue_log", &queue_log_engine("run-a"));
}

#[test]
fn run_a_ami_gives_asterisks_figures() {
    compare("run-a", "ami", &ami_engine("run-a"));
}

/// The Asterisk counters appear only with the Asterisk formulas.
#[test]
fn asterisk_counters_only_with_asterisk_formulas() {
    let e = queue_log_engine("run-a");
    let k = queue_row(&e, "support", 20, SlFormula::Offered);
    assert_eq!((k.asterisk_completed, k.asterisk_abandoned), (None, None));
    let json = serde_json::to_value(&k).expect("json");
    assert!(json.get("asterisk_completed").is_none(), "not in the JSON either");
}
