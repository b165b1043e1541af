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

/// Every queue's row over the whole run.
fn queue_rows(engine: &Engine, thresholds: &[u32], formula: SlFormula) -> BTreeMap<String, Kpis> {
    let params = KpiParams {
        interval: Interval::All,
        group_by: vec![GroupBy::Queue],
        sl_thresholds_s: thresholds.to_vec(),
        sl_formula: formula,
        ..KpiParams::default()
    };
    let report = engine.report(&params, &[]).expect("report");
    report.rows.into_iter().filter_map(|r| Some((r.group.get("queue")?.clone()?, r.kpis))).collect()
}

/// The whole run's row of `queue`, with the queue's own service level. A
/// queue no call reached on this path has no row: Asterisk's zeros.
fn queue_row(engine: &Engine, queue: &str, servicelevel: u32, formula: SlFormula) -> Kpis {
    queue_rows(engine, &[servicelevel], formula).remove(queue).unwrap_or_else(|| Kpis {
        asterisk_completed: Some(0),
        asterisk_abandoned: Some(0),
        service_level_pct: [(servicelevel.to_string(), None)].into(),
        ..Kpis::default()
    })
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

#[test]
fn run_b_queue_log_gives_asterisks_figures() {
    compare("run-b", "queue_log", &queue_log_engine("run-b"));
}

#[test]
fn run_b_ami_gives_asterisks_figures() {
    compare("run-b", "ami", &ami_engine("run-b"));
}

fn truth(run: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(run, "truth.json")).expect("truth.json")
}

/// run-b has every exit of Queue(): the two feeds of one PBX must give the
/// same figures, and the figures queue_log itself holds. The differences
/// that remain are the documented ones: callers refused at the door are
/// only on AMI (Asterisk 22 logs no queue_log line for them), and AMI does
/// not say which key a caller left with (counted in `other_exits` on both).
#[test]
fn run_b_ami_and_queue_log_agree() {
    let truth = truth("run-b");
    let thresholds = [20, 30];
    let ql = queue_rows(&queue_log_engine("run-b"), &thresholds, SlFormula::Offered);
    let ami = queue_rows(&ami_engine("run-b"), &thresholds, SlFormula::Offered);
    let queues = truth["queues"].as_object().expect("queues");
    for (queue, t) in queues {
        let n = |key: &str| t.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0);
        let refused = n("refused_joinempty") + n("refused_full");
        let empty = Kpis::default();
        let (q, a) = (ql.get(queue).unwrap_or(&empty), ami.get(queue).unwrap_or(&empty));
        let ctx = format!("run-b {queue}: queue_log {q:#?} ami {a:#?}");
        // What queue_log says, through callkpi's queue_log path.
        assert_eq!(q.entered, n("entered"), "{ctx}");
        assert_eq!(q.answered, n("answered"), "{ctx}");
        assert_eq!(q.abandoned + q.short_abandoned, n("abandoned"), "{ctx}");
        assert_eq!(q.timed_out, n("exit_with_timeout"), "{ctx}");
        assert_eq!(q.other_exits, n("exit_with_timeout") + n("exit_with_key") + n("exit_empty"), "{ctx}");
        // The AMI path: the same calls, plus the refused ones.
        assert_eq!(a.entered, q.entered + refused, "{ctx}");
        assert_eq!(a.other_exits, q.other_exits + refused, "{ctx}");
        assert_eq!((a.answered, a.abandoned, a.short_abandoned), (q.answered, q.abandoned, q.short_abandoned), "{ctx}");
        assert_eq!(a.timed_out, q.timed_out, "a Queue() timeout is not an abandon on AMI: {ctx}");
        assert_eq!((a.asa_s, a.handled, a.talk_s), (q.asa_s, q.handled, q.talk_s), "{ctx}");
        if refused == 0 {
            assert_eq!(a.service_level_pct, q.service_level_pct, "{ctx}");
        }
    }
    // Every kind of exit is in the recording.
    for key in ["abandoned", "exit_with_timeout", "exit_with_key", "exit_empty", "refused_joinempty", "refused_full"] {
        assert!(queues.values().any(|t| t[key].as_u64().unwrap_or(0) > 0), "run-b has no {key}");
    }
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
