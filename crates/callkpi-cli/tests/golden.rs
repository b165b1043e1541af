//! Golden test: `callkpi analyze` on a real Asterisk 22 recording reproduces
//! the hand-computed `truth.json`, from queue_log alone and from AMI alone.
//!
//! truth.json's definitions differ from our defaults in four places, so the
//! matching variants are selected: no short-abandon threshold, service level
//! per queue threshold (20 s support, 30 s sales), an FCR window of 3600 s,
//! and transfers not breaking FCR. Every expected value is read from
//! truth.json (or computed from its per-call list), never written here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use callkpi_cli::analyze::{AnalyzeArgs, AnalyzeOutput, Groups, ReportOptions, SlFormulaArg, run};
use callkpi_cli::output::Format;
use callkpi_core::params::GroupBy;
use callkpi_core::report::Kpis;
use callkpi_core::time::Interval;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/asterisk/run-a").join(name)
}

fn truth() -> Value {
    serde_json::from_slice(&std::fs::read(fixture("truth.json")).unwrap()).unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Feed {
    QueueLog,
    Ami,
}

fn analyze(feed: Feed, by: Vec<GroupBy>, formula: SlFormulaArg) -> AnalyzeOutput {
    let (queue_logs, amis) = match feed {
        Feed::QueueLog => (vec![fixture("queue_log")], vec![]),
        Feed::Ami => (vec![], vec![fixture("ami.log")]),
    };
    let args = AnalyzeArgs {
        queue_logs,
        amis,
        esls: vec![],
        hep: Default::default(),
        report: ReportOptions {
            interval: Interval::All,
            by: Groups(by),
            tz: "UTC".into(),
            format: Format::Json,
            sl_thresholds: vec![20, 30],
            sl_formula: formula,
            short_abandon: 0,
            fcr_window: 3600,
            fcr_transfer_breaks: false,
            from: None,
            to: None,
            all_rows: false,
        },
        site: "run-a".into(),
        queue_log_tz: "UTC".into(),
        queue_log: Default::default(),
        times: Default::default(),
    };
    run(&args).unwrap()
}

fn by_group(out: &AnalyzeOutput, dims: &[&str]) -> BTreeMap<String, Kpis> {
    out.rows
        .iter()
        .map(|r| {
            let key: Vec<String> = dims.iter().map(|d| r.group[*d].clone().unwrap_or_default()).collect();
            (key.join("/"), r.kpis.clone())
        })
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn within(label: &str, ours: Option<f64>, truth: f64, tol: f64) {
    let ours = ours.unwrap_or_else(|| panic!("{label}: ours is null, truth {truth}"));
    assert!((ours - truth).abs() <= tol, "{label}: ours {ours}, truth {truth}");
}

fn check_queues(feed: Feed) {
    let t = truth();
    let offered = by_group(&analyze(feed, vec![GroupBy::Queue], SlFormulaArg::Offered), &["queue"]);
    let answered = by_group(&analyze(feed, vec![GroupBy::Queue], SlFormulaArg::Answered), &["queue"]);
    let perf2 = by_group(&analyze(feed, vec![GroupBy::Queue], SlFormulaArg::AbandonsPositive), &["queue"]);
    for (queue, q) in t["queues"].as_object().unwrap() {
        let label = |k: &str| format!("{feed:?} {queue} {k}");
        let k = &offered[queue];
        assert_eq!(k.entered, u(&q["entered"]), "{}", label("entered"));
        assert_eq!(k.answered, u(&q["answered"]), "{}", label("answered"));
        assert_eq!(k.abandoned, u(&q["abandoned"]), "{}", label("abandoned"));
        assert_eq!(k.timed_out, u(&q["exit_with_timeout"]), "{}", label("timed out"));
        let others =
            u(&q["exit_empty"]) + u(&q["exit_with_key"]) + u(&q["full_not_joined"]) + u(&q["joinempty_not_joined"]);
        assert_eq!(k.other_exits - k.timed_out, others, "{}", label("other exits"));
        assert_eq!(k.handled, u(&q["answered"]), "{}", label("handled"));
        assert_eq!(
            k.transfers,
            u(&q["blind_transfers_out"]) + u(&q["attended_transfers_out"]),
            "{}",
            label("transfers")
        );
        assert_eq!(k.transfers_blind, u(&q["blind_transfers_out"]), "{}", label("blind transfers"));
        assert_eq!(k.missed_offers, u(&q["ring_no_answer_events"]), "{}", label("missed offers"));
        assert_eq!(k.surveys, u(&q["surveys"]), "{}", label("surveys"));
        within(&label("ASA"), k.asa_s, f(&q["avg_wait_answered_s"]), 1.0);
        // Talk here is talk + hold: truth's calltime covers the whole conversation.
        let talk_and_hold = k.talk_s.zip(k.hold_s).map(|(a, b)| a + b);
        within(&label("avg talk"), talk_and_hold, f(&q["avg_talk_s"]), 1.0);
        within(&label("abandon rate"), k.abandonment_rate_pct, f(&q["abandon_rate"]) * 100.0, 0.01);
        let sl = q["servicelevel_s"].as_u64().unwrap().to_string();
        within(
            &label("SL incl. abandoned"),
            k.service_level_pct[&sl],
            f(&q["service_level_incl_abandoned"]) * 100.0,
            0.01,
        );
        within(
            &label("SL answered only"),
            answered[queue].service_level_pct[&sl],
            f(&q["service_level_answered_only"]) * 100.0,
            0.01,
        );
        within(
            &label("SL perf2"),
            perf2[queue].service_level_pct[&sl],
            f(&q["service_level_asterisk_perf2_style"]) * 100.0,
            0.01,
        );
    }
    // CSAT from the per-call survey scores in truth.json (1-5, satisfied = 4-5).
    let mut per_queue: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for c in t["calls"].as_array().unwrap() {
        if let Some(s) = c.get("survey") {
            let e = per_queue.entry(s["queue"].as_str().unwrap().to_owned()).or_default();
            e.0 += 1;
            e.1 += u64::from(u(&s["score"]) >= 4);
        }
    }
    for (queue, (n, sat)) in per_queue {
        within(&format!("{feed:?} {queue} CSAT"), offered[&queue].csat_pct, sat as f64 * 100.0 / n as f64, 1e-9);
    }
}

fn check_agents(feed: Feed) {
    let t = truth();
    let agents = by_group(&analyze(feed, vec![GroupBy::Agent], SlFormulaArg::Offered), &["agent"]);
    let per_queue =
        by_group(&analyze(feed, vec![GroupBy::Queue, GroupBy::Agent], SlFormulaArg::Offered), &["queue", "agent"]);
    for (name, a) in t["agents"].as_object().unwrap() {
        let label = |k: &str| format!("{feed:?} {name} {k}");
        let k = &agents[name];
        assert_eq!(k.answered, u(&a["connects"]), "{}", label("connects"));
        assert_eq!(k.handled, u(&a["connects"]), "{}", label("handled segments"));
        assert_eq!(k.missed_offers, u(&a["ring_no_answer"]), "{}", label("ring no answer"));
        within(
            &label("ring no answer time"),
            Some(k.missed_offer_ring_s),
            f(&a["ring_no_answer_ms_total"]) / 1000.0,
            1e-9,
        );
        let talk = k.talk_total_s + k.hold_s.unwrap_or(0.0) * k.handled as f64;
        within(&label("talk seconds"), Some(talk), f(&a["talk_seconds"]), 1.0);
        assert_eq!(k.transfers, u(&a["transfers_out"]), "{}", label("transfers"));
        if matches!(feed, Feed::QueueLog) {
            // Logged-in time runs to the end of the input; the AMI transcript
            // goes on after queue_log's last line, so only queue_log matches truth's window.
            for (queue, secs) in a["logged_in_seconds_by_queue"].as_object().unwrap() {
                let cell = &per_queue[&format!("{queue}/{name}")];
                within(&label(&format!("logged in {queue}")), Some(cell.logged_in_s), f(secs), 1.0);
            }
        }
        for (queue, secs) in a["paused_seconds_by_queue"].as_object().unwrap() {
            let cell = &per_queue[&format!("{queue}/{name}")];
            within(&label(&format!("paused {queue}")), Some(cell.paused_s), f(secs), 1.0);
        }
    }
}

fn check_totals(feed: Feed) {
    let t = truth();
    let out = analyze(feed, vec![], SlFormulaArg::Offered);
    assert_eq!(out.rows.len(), 1);
    let k = &out.rows[0].kpis;
    let fcr = &t["first_call_resolution"];
    assert_eq!(k.fcr_contacts, u(&fcr["answered_calls"]), "{feed:?} FCR contacts");
    within(&format!("{feed:?} FCR"), k.fcr_pct, f(&fcr["fcr"]) * 100.0, 0.01);
    let verbs = &t["queue_log_verb_counts"];
    assert_eq!(k.surveys, u(&verbs["SURVEY"]));
    if matches!(feed, Feed::Ami) {
        let dials = t["outbound_agent_calls_from_ami"].as_array().unwrap();
        let connected = dials.iter().filter(|d| d["dialstatus"] == "ANSWER").count() as u64;
        assert_eq!(k.outbound_attempts, dials.len() as u64);
        assert_eq!(k.outbound_connected, connected);
        assert_eq!(k.outbound_unreached, dials.len() as u64 - connected);
    }
    assert!(!out.unparsed.contains_key("malformed"), "{feed:?}: {:?}", out.unparsed);
}

#[test]
fn queue_log_queues_match_truth() {
    check_queues(Feed::QueueLog);
}

#[test]
fn ami_queues_match_truth() {
    check_queues(Feed::Ami);
}

#[test]
fn queue_log_agents_match_truth() {
    check_agents(Feed::QueueLog);
}

#[test]
fn ami_agents_match_truth() {
    check_agents(Feed::Ami);
}

#[test]
fn queue_log_totals_match_truth() {
    check_totals(Feed::QueueLog);
}

#[test]
fn ami_totals_match_truth() {
    check_totals(Feed::Ami);
}

#[test]
fn queue_log_and_ami_agree_on_counts() {
    let a = analyze(Feed::QueueLog, vec![GroupBy::Queue], SlFormulaArg::Offered);
    let b = analyze(Feed::Ami, vec![GroupBy::Queue], SlFormulaArg::Offered);
    let (a, b) = (by_group(&a, &["queue"]), by_group(&b, &["queue"]));
    // AMI also sees the agents' outbound calls, which belong to no queue ("").
    let named = |m: &BTreeMap<String, Kpis>| m.keys().filter(|q| !q.is_empty()).cloned().collect::<Vec<_>>();
    assert_eq!(named(&a), named(&b));
    assert_eq!(b[""].outbound_attempts, 2);
    for (q, ka) in a.iter().filter(|(q, _)| !q.is_empty()) {
        let kb = &b[q];
        assert_eq!(
            (ka.entered, ka.answered, ka.abandoned, ka.handled),
            (kb.entered, kb.answered, kb.abandoned, kb.handled),
            "{q}"
        );
        assert_eq!(ka.service_level_pct, kb.service_level_pct, "{q}");
    }
}
