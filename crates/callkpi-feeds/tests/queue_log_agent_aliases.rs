//! Agent aliases: one person under two queue_log names.
//!
//! With `log_membername_as_agent = no` in queues.conf, Asterisk's default,
//! `AddQueueMember(support,PJSIP/1001,,,Alice)` logs `ADDMEMBER` (and
//! `RemoveQueueMember` `REMOVEMEMBER`) under the interface `PJSIP/1001`, while
//! `CONNECT`, `COMPLETE*`, `RINGNOANSWER` and `PAUSE` name the member `Alice`
//! (`apps/app_queue.c`: `aqm_exec` and `rqm_exec` log the member name only
//! when the option is on; `set_queue_member_pause` and `try_calling` always
//! log `mem->membername`). The input below is that default form, run through
//! the same path as `callkpi analyze --queue-log`: mapper, events numbered in
//! file order as one pseudo agent, the core engine closed at the end of
//! input. Expected figures are derived by hand from docs/kpis.md.

mod common;

use std::collections::BTreeMap;

use callkpi_core::KpiParams;
use callkpi_core::event::SourceKind;
use callkpi_core::params::GroupBy;
use callkpi_core::report::Kpis;
use callkpi_core::time::Interval;
use callkpi_feeds::queue_log::{AgentAliases, QueueLogConfig, QueueLogMapper};
use common::{at, close};

/// One hour of a dynamic member: logged in at T+0 and out at T+3600, paused
/// T+600 to T+1200, two calls of 300 s and 180 s of talk, one ring not
/// answered (4 s) before the second.
const DEFAULT_FORM: &str = "\
{T+0}|MANAGER|support|PJSIP/1001|ADDMEMBER|
{T+60}|1795356060.1|support|NONE|ENTERQUEUE||0612345678|1
{T+65}|1795356060.1|support|Alice|CONNECT|5|1795356065.2|3
{T+365}|1795356060.1|support|Alice|COMPLETECALLER|5|300|1
{T+600}|NONE|support|Alice|PAUSE|lunch
{T+1200}|NONE|support|Alice|UNPAUSE|
{T+1500}|1795357500.3|support|NONE|ENTERQUEUE||0698765432|1
{T+1504}|1795357500.3|support|Alice|RINGNOANSWER|4000
{T+1510}|1795357500.3|support|Alice|CONNECT|10|1795357510.4|2
{T+1690}|1795357500.3|support|Alice|COMPLETEAGENT|10|180|1
{T+3600}|MANAGER|support|PJSIP/1001|REMOVEMEMBER|
";

/// Rows grouped by agent over the whole input: agent -> (KPIs, flags).
fn by_agent(input: &str, config: QueueLogConfig) -> BTreeMap<String, (Kpis, Vec<String>)> {
    let mut mapper = QueueLogMapper::new(config);
    let events = mapper.map_all(at(input).as_bytes());
    assert_eq!(mapper.unparsed().malformed, 0);
    let engine = common::engine(events, SourceKind::AsteriskQueueLog);
    let params = KpiParams { interval: Interval::All, group_by: vec![GroupBy::Agent], ..KpiParams::default() };
    engine
        .report(&params, &[])
        .expect("report")
        .rows
        .into_iter()
        .filter_map(|r| Some((r.group.get("agent")?.clone()?, (r.kpis, r.flags))))
        .collect()
}

fn alice_aliases() -> QueueLogConfig {
    let aliases = AgentAliases::new([("PJSIP/1001".to_owned(), "Alice".to_owned())]).expect("valid");
    QueueLogConfig { agent_aliases: aliases, ..QueueLogConfig::default() }
}

/// Without aliases the default form splits the person in two: that is the
/// problem the aliases solve, documented here.
#[test]
fn without_aliases_the_interface_and_the_member_name_are_two_agents() {
    let rows = by_agent(DEFAULT_FORM, QueueLogConfig::default());
    assert_eq!(rows.keys().map(String::as_str).collect::<Vec<_>>(), ["Alice", "PJSIP/1001"]);
    // The interface: logged in the whole hour, never a call.
    let (iface, _) = &rows["PJSIP/1001"];
    assert_eq!(iface.handled, 0);
    assert_eq!(iface.logged_in_s, 3600.0);
    assert_eq!(iface.paused_s, 0.0);
    close(iface.productivity_per_hour, 0.0);
    // The member name: all the calls, and a login callkpi had to infer.
    let (alice, flags) = &rows["Alice"];
    assert_eq!(alice.handled, 2);
    assert_eq!(alice.missed_offers, 1);
    assert!(flags.iter().any(|f| f == "login_inferred"), "{flags:?}");
}

/// With `PJSIP/1001 = Alice`: one agent, logged in from ADDMEMBER to
/// REMOVEMEMBER, and the figures of docs/kpis.md:
/// - logged in 3600 s, paused 600 s (PAUSE at 600, UNPAUSE at 1200);
/// - busy = talk + hold + wrap-up = 300 + 180 + 0 = 480 s;
/// - occupancy = busy / (logged in - paused) = 480 / 3000 = 16 %;
/// - utilisation = busy / logged in = 480 / 3600 = 13.33 %;
/// - productivity = handled / logged-in hours = 2 / 1 = 2 per hour.
#[test]
fn with_the_alias_one_agent_has_the_login_the_calls_and_the_occupancy() {
    let rows = by_agent(DEFAULT_FORM, alice_aliases());
    assert_eq!(rows.keys().map(String::as_str).collect::<Vec<_>>(), ["Alice"]);
    let (k, flags) = &rows["Alice"];
    assert!(!flags.iter().any(|f| f == "login_inferred"), "{flags:?}");
    assert_eq!(k.agents, 1);
    assert_eq!(k.handled, 2);
    assert_eq!(k.logged_in_s, 3600.0);
    assert_eq!(k.paused_s, 600.0);
    assert_eq!(k.talk_total_s, 480.0);
    close(k.occupancy_pct, 480.0 / 3000.0 * 100.0);
    close(k.utilisation_pct, 480.0 / 3600.0 * 100.0);
    close(k.productivity_per_hour, 2.0);
    assert_eq!((k.missed_offers, k.missed_offer_ring_s), (1, 4.0));
}

/// Aliases are exact: an agent whose logged name is not a key keeps it, and
/// the same file with `log_membername_as_agent = yes` (member names
/// everywhere) gives the same row with or without the map.
#[test]
fn aliases_leave_other_names_alone() {
    let membername_form = DEFAULT_FORM.replace("PJSIP/1001", "Alice");
    let plain = by_agent(&membername_form, QueueLogConfig::default());
    let aliased = by_agent(&membername_form, alice_aliases());
    assert_eq!(plain.keys().collect::<Vec<_>>(), ["Alice"]);
    assert_eq!(plain["Alice"].0, aliased["Alice"].0);
    assert_eq!(plain["Alice"].0, by_agent(DEFAULT_FORM, alice_aliases())["Alice"].0);
    // Exact and case-sensitive: a name written `pjsip/1001` (Asterisk logs
    // the interface as given to AddQueueMember) is not aliased.
    let other_case = DEFAULT_FORM.replace("PJSIP/1001", "pjsip/1001");
    let rows = by_agent(&other_case, alice_aliases());
    assert_eq!(rows.keys().map(String::as_str).collect::<Vec<_>>(), ["Alice", "pjsip/1001"]);
}
