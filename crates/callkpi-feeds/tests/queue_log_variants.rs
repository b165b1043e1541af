//! queue_log inputs that differ from the run-a recording, through the same
//! path as `callkpi analyze --queue-log`: [`QueueLogMapper::map_all`], events
//! numbered in file order as one pseudo agent, the core [`Engine`] closed at
//! the end of input, then a report. Every expected figure is derived by hand
//! from the KPI definitions of DESIGN.md.
//!
//! Formats come from the Asterisk "Queue Logs" reference
//! (asterisk/documentation `docs/Operation/Logging/Queue-Logs.md`), quoted as
//! "Queue Logs" below, and from `apps/app_queue.c` where the page is silent.

mod common;

use std::collections::BTreeMap;

use callkpi_core::event::SourceKind;
use callkpi_core::params::{GroupBy, SlFormula};
use callkpi_core::report::Kpis;
use callkpi_core::time::Interval;
use callkpi_core::{Engine, KpiParams};
use callkpi_feeds::queue_log::{QueueLogConfig, QueueLogMapper};
use common::{at, close};

type Group = BTreeMap<String, Option<String>>;

/// Maps `input` and runs it through the engine as `callkpi analyze` does.
fn engine(input: &[u8]) -> Engine {
    let mut mapper = QueueLogMapper::new(QueueLogConfig::default());
    common::engine(mapper.map_all(input), SourceKind::AsteriskQueueLog)
}

fn rows(input: &[u8], params: &KpiParams) -> Vec<(Group, Kpis, Vec<String>)> {
    let e = engine(input);
    e.report(params, &[]).expect("report").rows.into_iter().map(|r| (r.group, r.kpis, r.flags)).collect()
}

fn params(group_by: &[GroupBy]) -> KpiParams {
    KpiParams { interval: Interval::All, group_by: group_by.to_vec(), ..KpiParams::default() }
}

/// The row of one group value (`None`: the single ungrouped row).
fn row(input: &str, group_by: &[GroupBy], value: Option<&str>) -> Kpis {
    let all = rows(at(input).as_bytes(), &params(group_by));
    pick(all, group_by, value)
}

fn pick(all: Vec<(Group, Kpis, Vec<String>)>, group_by: &[GroupBy], value: Option<&str>) -> Kpis {
    match (group_by.first(), value) {
        (None, _) => {
            assert_eq!(all.len(), 1, "{all:#?}");
            all.into_iter().next().expect("row").1
        }
        (Some(g), v) => {
            all.into_iter()
                .find(|(grp, _, _)| grp.get(g.as_str()).and_then(|x| x.as_deref()) == v)
                .unwrap_or_else(|| panic!("no row for {v:?}"))
                .1
        }
    }
}

// --- ENTERQUEUE with the caller's name (log_cidname) ---

/// "Queue Logs": `ENTERQUEUE(url|callerid|origposition[|calleridname])`; with
/// `log_cidname = yes` in queues.conf the name is appended as a fourth field.
/// The caller number must stay the number, or a repeat caller who entered at
/// another position looks like a new caller and FCR is overstated.
#[test]
fn enterqueue_with_caller_name_keeps_the_number_for_fcr() {
    let log = "\
{T+0}|1795356000.1|support|NONE|ENTERQUEUE||0612345678|1|Jean Dupont
{T+10}|1795356000.1|support|Alice|CONNECT|10|1795356000.2|3
{T+70}|1795356000.1|support|Alice|COMPLETECALLER|10|60|1
{T+600}|1795356600.3|support|NONE|ENTERQUEUE||0612345678|2|Jean Dupont
{T+620}|1795356600.3|support|Bob|CONNECT|20|1795356600.4|4
{T+650}|1795356600.3|support|Bob|COMPLETEAGENT|20|30|2
";
    let k = row(log, &[], None);
    // One caller, two contacts within the 7-day window: one case, and only
    // the last contact of the case counts as resolved.
    assert_eq!(k.cases, 1);
    assert_eq!(k.fcr_contacts, 2);
    close(k.fcr_pct, 50.0);
    close(k.contacts_per_case, 2.0);
    close(k.dmtt_s, 90.0); // (60 + 30) s of talk over one case
    assert_eq!((k.entered, k.answered), (2, 2));
    close(k.asa_s, 15.0);
}

// --- overflow, transfers, missed offers ---

/// A caller times out of `support` (Queue() timeout) and the dialplan sends
/// the same channel to `sales`: the same callid enters a second queue
/// ("Queue Logs": EXITWITHTIMEOUT(position|origposition|waittime)).
#[test]
fn overflow_to_a_second_queue_counts_in_both() {
    let log = "\
{T+0}|c1|support|NONE|ENTERQUEUE||0611111111|1
{T+30}|c1|support|NONE|EXITWITHTIMEOUT|1|1|30
{T+31}|c1|sales|NONE|ENTERQUEUE||0611111111|1
{T+36}|c1|sales|Dmitri|CONNECT|5|c1-m|2
{T+96}|c1|sales|Dmitri|COMPLETEAGENT|5|60|1
";
    let support = row(log, &[GroupBy::Queue], Some("support"));
    assert_eq!((support.entered, support.offered, support.answered, support.abandoned), (1, 1, 0, 0));
    assert_eq!((support.timed_out, support.other_exits), (1, 1));
    close(support.timeout_rate_pct, 100.0);
    assert_eq!(support.asa_s, None);
    let sales = row(log, &[GroupBy::Queue], Some("sales"));
    assert_eq!((sales.entered, sales.answered, sales.handled), (1, 1, 1));
    close(sales.asa_s, 5.0);
    close(sales.aht_s, 60.0);
}

/// The same overflow within one second, as the dialplan usually does it:
/// the second queue's entry shares the first one's exit instant, and
/// same-instant events are replayed entry-first. Each visit must still keep
/// its own outcome.
#[test]
fn overflow_within_the_same_second_keeps_both_visits_apart() {
    let log = "\
{T+0}|c1|support|NONE|ENTERQUEUE||0611111111|1
{T+30}|c1|support|NONE|EXITWITHTIMEOUT|1|1|30
{T+30}|c1|sales|NONE|ENTERQUEUE||0611111111|1
{T+30}|c1|sales|Dmitri|CONNECT|0|c1-m|0
{T+90}|c1|sales|Dmitri|COMPLETEAGENT|0|60|1
";
    let support = row(log, &[GroupBy::Queue], Some("support"));
    assert_eq!((support.entered, support.offered, support.answered, support.abandoned), (1, 1, 0, 0));
    assert_eq!(support.timed_out, 1);
    let sales = row(log, &[GroupBy::Queue], Some("sales"));
    assert_eq!((sales.entered, sales.answered, sales.handled), (1, 1, 1));
    close(sales.asa_s, 0.0);
    close(sales.aht_s, 60.0);
}

/// Several members ring out (RINGNOANSWER, ringtime in **ms**) before a
/// third answers (CONNECT holdtime in s, ringtime in s): the wait includes
/// the ring time, the missed offers are the ringing agents' KPI only.
#[test]
fn ring_no_answer_to_several_agents_before_connect() {
    let log = "\
{T+0}|c1|support|NONE|ENTERQUEUE||0622222222|1
{T+15}|c1|support|Alice|RINGNOANSWER|15000
{T+30}|c1|support|Bob|RINGNOANSWER|14500
{T+34}|c1|support|Carla|CONNECT|34|c1-m|4
{T+94}|c1|support|Carla|COMPLETECALLER|34|60|1
";
    let k = row(log, &[], None);
    assert_eq!((k.entered, k.answered, k.missed_offers), (1, 1, 2));
    close(k.asa_s, 34.0);
    assert!((k.missed_offer_ring_s - 29.5).abs() < 1e-9);
    close(k.service_level_pct["60"], 100.0);
    close(k.service_level_pct["20"], 0.0);
    let alice = row(log, &[GroupBy::Agent], Some("Alice"));
    assert_eq!((alice.missed_offers, alice.handled), (1, 0));
    let carla = row(log, &[GroupBy::Agent], Some("Carla"));
    assert_eq!((carla.missed_offers, carla.handled), (0, 1));
    close(carla.aht_s, 60.0);
}

/// An agent blind-transfers the caller to another queue (Asterisk 12+
/// BLINDTRANSFER(extension|context|holdtime|calltime|origposition)); the
/// caller's channel, hence the callid, enters the second queue.
#[test]
fn blind_transfer_into_another_queue() {
    let log = "\
{T+0}|c1|support|NONE|ENTERQUEUE||0633333333|1
{T+10}|c1|support|Alice|CONNECT|10|c1-a|2
{T+100}|c1|support|Alice|BLINDTRANSFER|700|from-queue|10|90|1
{T+101}|c1|billing|NONE|ENTERQUEUE||0633333333|1
{T+121}|c1|billing|Bob|CONNECT|20|c1-b|3
{T+181}|c1|billing|Bob|COMPLETECALLER|20|60|1
";
    let support = row(log, &[GroupBy::Queue], Some("support"));
    assert_eq!((support.handled, support.transfers, support.transfers_blind), (1, 1, 1));
    close(support.aht_s, 90.0);
    let billing = row(log, &[GroupBy::Queue], Some("billing"));
    assert_eq!((billing.entered, billing.answered, billing.handled), (1, 1, 1));
    close(billing.asa_s, 20.0);
    close(billing.aht_s, 60.0);
    // The case went from Alice to Bob: not resolved at first contact.
    let all = row(log, &[], None);
    assert_eq!(all.fcr_contacts, 1);
    close(all.fcr_pct, 0.0);
}

/// The same blind transfer with the second queue's entry in the transfer's
/// second (the usual case: the transfer is immediate): the entry replays
/// before the transfer, and neither visit nor segment may take the other's.
#[test]
fn blind_transfer_into_another_queue_within_the_same_second() {
    let log = "\
{T+0}|c1|support|NONE|ENTERQUEUE||0633333333|1
{T+10}|c1|support|Alice|CONNECT|10|c1-a|2
{T+100}|c1|support|Alice|BLINDTRANSFER|700|from-queue|10|90|1
{T+100}|c1|billing|NONE|ENTERQUEUE||0633333333|1
{T+120}|c1|billing|Bob|CONNECT|20|c1-b|3
{T+180}|c1|billing|Bob|COMPLETECALLER|20|60|1
";
    let support = row(log, &[GroupBy::Queue], Some("support"));
    assert_eq!((support.handled, support.transfers, support.transfers_blind), (1, 1, 1));
    close(support.aht_s, 90.0);
    let billing = row(log, &[GroupBy::Queue], Some("billing"));
    assert_eq!((billing.entered, billing.answered, billing.handled), (1, 1, 1));
    close(billing.asa_s, 20.0);
    close(billing.aht_s, 60.0);
    let all = row(log, &[], None);
    assert_eq!(all.fcr_contacts, 1);
    close(all.fcr_pct, 0.0);
}

/// Agent or caller hang-up, abandons, short abandons and the other exits
/// ("Queue Logs": EXITEMPTY and EXITWITHKEY are not abandons; DESIGN.md
/// counts them as other exits, and short abandons apart).
#[test]
fn exits_abandons_and_short_abandons() {
    let log = "\
{T+0}|a|q|NONE|ENTERQUEUE||0600000001|1
{T+3}|a|q|NONE|ABANDON|1|1|3
{T+0}|b|q|NONE|ENTERQUEUE||0600000002|2
{T+40}|b|q|NONE|ABANDON|1|2|40
{T+0}|c|q|NONE|ENTERQUEUE||0600000003|3
{T+50}|c|q|NONE|EXITEMPTY|1|3|50
{T+0}|d|q|NONE|ENTERQUEUE||0600000004|4
{T+12}|d|q|NONE|EXITWITHKEY|5|1|4|12
{T+0}|e|q|NONE|ENTERQUEUE||0600000005|5
{T+8}|e|q|Alice|CONNECT|8|e-m|2
{T+68}|e|q|Alice|COMPLETEAGENT|8|60|5
";
    let k = row(log, &[], None);
    assert_eq!((k.entered, k.offered, k.short_abandoned, k.abandoned, k.answered), (5, 4, 1, 1, 1));
    assert_eq!((k.timed_out, k.other_exits), (0, 2));
    close(k.abandonment_rate_pct, 25.0);
    close(k.answer_rate_pct, 25.0);
    close(k.service_level_pct["18"], 25.0);
    close(k.avg_wait_s, (40.0 + 50.0 + 12.0 + 8.0) / 4.0);
    assert_eq!(k.max_wait_s, Some(50));
}

// --- time: interval boundaries and midnight ---

/// A call that enters before midnight and is handled across it: offered
/// where it entered, handled where its handling ended, and the agent's busy
/// time spread over the two days (DESIGN.md).
#[test]
fn a_call_across_midnight_counts_where_it_entered_and_where_it_ended() {
    // 2026-11-22T23:59:30Z; answered 23:59:50 after 20 s; 600 s of talk.
    let t = 1_795_391_970;
    let log = format!(
        "{}|c1|q|NONE|ENTERQUEUE||0644444444|1\n{}|c1|q|Alice|CONNECT|20|c1-m|5\n{}|c1|q|Alice|COMPLETECALLER|20|600|1\n",
        t,
        t + 20,
        t + 620
    );
    let p = KpiParams { interval: Interval::Day, ..KpiParams::default() };
    let e = engine(log.as_bytes());
    let rows = e.report(&p, &[]).expect("report").rows;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[0].start, "2026-11-22T00:00:00+00:00");
    assert_eq!((rows[0].kpis.entered, rows[0].kpis.answered, rows[0].kpis.handled), (1, 1, 0));
    close(rows[0].kpis.asa_s, 20.0);
    assert_eq!(rows[1].start, "2026-11-23T00:00:00+00:00");
    assert_eq!((rows[1].kpis.entered, rows[1].kpis.handled), (0, 1));
    close(rows[1].kpis.aht_s, 600.0);
    // Alice (a static member: logged in from her first event) is logged in
    // 30 s and busy 10 s before midnight, then busy all 590 s after it.
    let p = KpiParams { interval: Interval::Day, group_by: vec![GroupBy::Agent], ..KpiParams::default() };
    let rows = e.report(&p, &[]).expect("report").rows;
    let day = |d: &str| &rows.iter().find(|r| r.start.starts_with(d)).expect("day").kpis;
    assert_eq!(day("2026-11-22").handled, 0);
    assert!((day("2026-11-22").logged_in_s - 30.0).abs() < 1e-9);
    close(day("2026-11-22").occupancy_pct, 100.0 / 3.0);
    assert_eq!(day("2026-11-23").handled, 1);
    close(day("2026-11-23").occupancy_pct, 100.0);
}

// --- files that start or stop mid-call ---

/// A queue_log that starts mid-call (rotated file, or a collector started
/// late): the first lines are the CONNECT/COMPLETE of a call whose
/// ENTERQUEUE is in the previous file, or only the COMPLETE of a call whose
/// CONNECT is there too. COMPLETEAGENT/COMPLETECALLER carry
/// holdtime|calltime|origposition ("Queue Logs"), so the conversation is
/// known. The queue must count each such call once as handled, or their
/// talk time is divided by the other calls only.
#[test]
fn log_starting_mid_call_keeps_queue_aht_consistent() {
    let log = "\
{T+0}|old|support|Bob|CONNECT|12|old-m|3
{T+30}|older|support|Carla|COMPLETEAGENT|40|90|2
{T+200}|old|support|Bob|COMPLETECALLER|12|200|1
{T+10}|new|support|NONE|ENTERQUEUE||0655555555|1
{T+20}|new|support|Alice|CONNECT|10|new-m|2
{T+120}|new|support|Alice|COMPLETEAGENT|10|100|1
";
    let q = row(log, &[GroupBy::Queue], Some("support"));
    // Only the call seen entering is offered; all three were handled here.
    assert_eq!((q.entered, q.answered), (1, 1));
    assert_eq!(q.handled, 3);
    close(q.aht_s, (200.0 + 90.0 + 100.0) / 3.0);
    assert!((q.talk_total_s - 390.0).abs() < 1e-9);
    let bob = row(log, &[GroupBy::Agent], Some("Bob"));
    assert_eq!(bob.handled, 1);
    close(bob.aht_s, 200.0);
    let carla = row(log, &[GroupBy::Agent], Some("Carla"));
    assert_eq!(carla.handled, 1);
    close(carla.aht_s, 90.0);
}

/// Asterisk restarted mid-call: QUEUESTART again ("The queueing system has
/// been started"), and the calls in progress never get their COMPLETE line.
/// Their talk time is unknown: they are flagged, and must not pull the AHT
/// of the calls whose end is known towards zero.
#[test]
fn restart_mid_call_leaves_unknown_ends_out_of_aht() {
    let log = "\
{T+0}|NONE|NONE|NONE|QUEUESTART|
{T+10}|a|support|NONE|ENTERQUEUE||0666666661|1
{T+20}|a|support|Alice|CONNECT|10|a-m|2
{T+80}|a|support|Alice|COMPLETECALLER|10|60|1
{T+100}|b|support|NONE|ENTERQUEUE||0666666662|1
{T+110}|b|support|Bob|CONNECT|10|b-m|2
{T+300}|NONE|NONE|NONE|QUEUESTART|
{T+400}|c|support|NONE|ENTERQUEUE||0666666663|1
{T+405}|c|support|Alice|CONNECT|5|c-m|2
{T+525}|c|support|Alice|COMPLETEAGENT|5|120|1
";
    let all = rows(at(log).as_bytes(), &params(&[]));
    assert_eq!(all.len(), 1);
    let (_, k, flags) = &all[0];
    assert!(flags.contains(&"unknown_end".to_owned()), "{flags:?}");
    assert_eq!((k.entered, k.answered), (3, 3));
    // Handled calls with a known end: a (60 s) and c (120 s).
    assert_eq!(k.handled, 2);
    close(k.aht_s, 90.0);
    let bob = row(log, &[GroupBy::Agent], Some("Bob"));
    assert_eq!(bob.handled, 0);
    assert_eq!(bob.aht_s, None);
}

// --- damaged input ---

/// The same lines twice (a rotated file concatenated with an overlapping
/// copy, or a collector that re-read its file): KPIs must not change.
#[test]
fn duplicated_lines_do_not_change_the_kpis() {
    let once = "\
{T+0}|a|support|NONE|ENTERQUEUE||0677777771|1
{T+12}|a|support|Alice|RINGNOANSWER|12000
{T+20}|a|support|Bob|CONNECT|20|a-m|8
{T+80}|a|support|Bob|COMPLETECALLER|20|60|1
{T+5}|b|support|NONE|ENTERQUEUE||0677777772|2
{T+35}|b|support|NONE|ABANDON|1|2|30
";
    let twice: String = at(once).lines().flat_map(|l| [l, "\n", l, "\n"]).collect();
    let single = rows(at(once).as_bytes(), &params(&[]));
    let doubled = rows(twice.as_bytes(), &params(&[]));
    assert_eq!(single, doubled);
    let k = &single[0].1;
    assert_eq!((k.entered, k.answered, k.abandoned, k.missed_offers, k.handled), (2, 1, 1, 1, 1));
}

/// A queue_log written in ISO-8859-1 (member names from an old Latin-1
/// queues.conf or realtime table): the bytes are not UTF-8, but the line is
/// a record. Dropping it would lose the CONNECT and leave the call open.
#[test]
fn latin1_agent_names_are_read_not_dropped() {
    let mut log = at("{T+0}|a|support|NONE|ENTERQUEUE||0688888888|1\n").into_bytes();
    log.extend_from_slice(at("{T+9}|a|support|Carla Jim").as_bytes());
    log.push(0xe9); // é in ISO-8859-1
    log.extend_from_slice(at("nez|CONNECT|9|a-m|3\n{T+69}|a|support|Carla Jim").as_bytes());
    log.push(0xe9);
    log.extend_from_slice(b"nez|COMPLETEAGENT|9|60|1\n");
    let mut mapper = QueueLogMapper::new(QueueLogConfig::default());
    mapper.map_all(&log);
    assert_eq!(mapper.unparsed().malformed, 0);
    let all = rows(&log, &params(&[GroupBy::Agent]));
    let k = pick(all, &[GroupBy::Agent], Some("Carla Jiménez"));
    assert_eq!(k.handled, 1);
    close(k.aht_s, 60.0);
}

/// Unknown and custom verbs (the QueueLog() application writes any verb the
/// dialplan chooses) are counted, never fatal, and change no KPI.
#[test]
fn custom_and_unknown_verbs_are_counted_and_ignored() {
    let log = at("\
{T+0}|a|support|NONE|ENTERQUEUE||0699999999|1
{T+1}|a|support|NONE|IVRCHOICE|3
{T+2}|a|NONE|NONE|INFO|something
{T+3}|a|support|Alice|PENALTY|5
{T+9}|a|support|Alice|CONNECT|9|a-m|3
{T+69}|a|support|Alice|COMPLETEAGENT|9|60|1
");
    let mut mapper = QueueLogMapper::new(QueueLogConfig::default());
    mapper.map_all(log.as_bytes());
    assert_eq!(mapper.unparsed().by_name.get("IVRCHOICE"), Some(&1));
    assert_eq!(mapper.unparsed().by_name.get("PENALTY"), Some(&1));
    assert_eq!(mapper.unparsed().malformed, 0);
    let k = pick(rows(log.as_bytes(), &params(&[])), &[], None);
    assert_eq!((k.entered, k.answered, k.handled), (1, 1, 1));
}

/// SYSCOMPAT: "A call was answered by an agent, but the call was dropped
/// because the channels were not compatible" (Queue Logs); app_queue then
/// hangs the member up and the caller leaves the queue. The visit ends
/// there, as an exit that is neither an answer nor the caller's abandon.
#[test]
fn syscompat_ends_the_visit() {
    let log = "\
{T+0}|a|support|NONE|ENTERQUEUE||0610101010|1
{T+9}|a|support|Alice|SYSCOMPAT|
";
    let k = row(log, &[], None);
    assert_eq!((k.entered, k.answered, k.abandoned, k.other_exits), (1, 0, 0, 1));
    close(k.avg_wait_s, 9.0);
    let e = engine(at(log).as_bytes());
    let call = e.call("hq", "a").expect("call");
    assert_eq!(call.outcome(5).as_str(), "left_unspecified");
}

/// A realtime-table export (`id` column, datetimes) exported with
/// `ORDER BY time`: lines of the same second may come in any order. A caller
/// that leaves the same second it entered (EXITEMPTY with leavewhenempty, a
/// quick hang-up) must still be one visit with that outcome.
#[test]
fn same_second_lines_out_of_order_in_a_db_export() {
    let csv = "\
id,time,callid,queuename,agent,event,data1,data2,data3,data4,data5
12,2026-11-22 13:20:00,a,support,NONE,EXITEMPTY,1,1,0,,
11,2026-11-22 13:20:00,a,support,NONE,ENTERQUEUE,,0612121212,1,,
14,2026-11-22 13:20:05,b,support,Alice,CONNECT,0,b-m,5,,
13,2026-11-22 13:20:05,b,support,NONE,ENTERQUEUE,,0613131313,1,,
15,2026-11-22 13:21:05,b,support,Alice,COMPLETECALLER,0,60,1,,
";
    let k = pick(rows(csv.as_bytes(), &params(&[])), &[], None);
    assert_eq!((k.entered, k.answered, k.other_exits), (2, 1, 1));
    close(k.asa_s, 0.0);
    close(k.aht_s, 60.0);
    assert_eq!(k.handled, 1);
}

// --- callers whose fate is unknown at the end of the input ---

/// Issue 17: a caller still waiting when the file ends may yet be answered
/// in time, so it is in no service-level denominator; one that has already
/// waited past T is a certain miss and stays in. `offered` counts both.
#[test]
fn callers_still_waiting_are_in_no_sl_denominator_unless_past_t() {
    let log = "\
{T+0}|a|support|NONE|ENTERQUEUE||0611111111|1
{T+0}|b|support|NONE|ENTERQUEUE||0622222222|2
{T+0}|c|support|NONE|ENTERQUEUE||0633333333|3
{T+10}|a|support|Alice|CONNECT|10|a.1|2
{T+12}|b|support|Bob|RINGNOANSWER|12000
{T+25}|c|support|Bob|RINGNOANSWER|10000
{T+40}|c|support|Carla|RINGNOANSWER|15000
{T+40}|a|support|Alice|COMPLETEAGENT|10|30|1
";
    let all = |formula: SlFormula| {
        let p = KpiParams { sl_thresholds_s: vec![20], sl_formula: formula, ..params(&[]) };
        pick(rows(at(log).as_bytes(), &p), &[], None)
    };
    let k = all(SlFormula::Offered);
    assert_eq!((k.offered, k.answered, k.other_exits), (3, 1, 2));
    // b waited 12 s, then nothing: unknown, out. c waited 40 s > 20: a miss.
    close(k.service_level_pct["20"], 50.0);
    close(all(SlFormula::AbandonsPositive).service_level_pct["20"], 50.0);
    close(all(SlFormula::AbandonsIgnored).service_level_pct["20"], 50.0);
    close(all(SlFormula::Answered).service_level_pct["20"], 100.0);
    // With T = 10 both unknown callers had waited past it: both misses.
    let p = KpiParams { sl_thresholds_s: vec![10], ..params(&[]) };
    close(pick(rows(at(log).as_bytes(), &p), &[], None).service_level_pct["10"], 100.0 / 3.0);
    // Asterisk counts neither: they are not completed nor abandoned.
    let k = all(SlFormula::AsteriskPerf2);
    assert_eq!((k.asterisk_completed, k.asterisk_abandoned), (Some(1), Some(0)));
    close(k.service_level_pct["20"], 100.0);
}

// --- rotation ---

/// Issue 17: `callkpi analyze --queue-log queue_log.1 --queue-log queue_log`
/// reads the files as inputs of one stream: a caller who entered before the
/// rotation and left after it is one visit, offered once, in both cases.
#[test]
fn exit_after_rotation_counts_once() {
    let before = at("\
{T+0}|r1|support|NONE|ENTERQUEUE||0611111111|1
{T+1}|r2|support|NONE|ENTERQUEUE||0622222222|2
");
    let after = at("\
{T+30}|r1|support|NONE|ABANDON|1|1|30
{T+12}|r2|support|Bob|CONNECT|11|r2.5|4
{T+50}|r2|support|Bob|COMPLETEAGENT|11|38|2
");
    // One mapper per file, as analyze does.
    let files = [before, after]
        .iter()
        .map(|file| QueueLogMapper::new(QueueLogConfig::default()).map_all(file.as_bytes()))
        .collect();
    let e = common::engine_of_files(files, SourceKind::AsteriskQueueLog);
    let k = pick(
        e.report(&params(&[]), &[]).expect("report").rows.into_iter().map(|r| (r.group, r.kpis, r.flags)).collect(),
        &[],
        None,
    );
    assert_eq!((k.entered, k.offered, k.answered, k.abandoned, k.other_exits), (2, 2, 1, 1, 0));
    close(k.asa_s, 11.0);
}
