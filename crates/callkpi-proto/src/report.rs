//! KPI reports between the core engine's types and the wire (`reports.proto`).
//!
//! The aggregator answers `GetKpis` with [`report_to_pb`]; `callkpi report`
//! turns the answer back into the core [`Report`] with [`report_from_pb`] and
//! prints it through the same code as `callkpi analyze`, so both commands
//! give the same JSON for the same data.
//!
//! Wire conventions: `0` in `KpiQuery.from_ns`/`to_ns` means "unbounded";
//! count KPIs are always present (0 is a real zero), ratios are absent when
//! their denominator is zero; a group dimension that does not apply (a call
//! no agent answered has no agent) is absent from `KpiRow.group`.

use std::collections::{BTreeMap, BTreeSet};

use callkpi_core::params::{GroupBy, KpiParams, SlFormula};
use callkpi_core::report::{Behind, Kpis, Report, Row};
use callkpi_core::time::{Interval, parse_tz, rfc3339};

use crate::ConvertError;
use crate::pb;

// === params ===

/// The wire query of core parameters.
pub fn params_to_pb(p: &KpiParams) -> pb::KpiQuery {
    pb::KpiQuery {
        from_ns: p.from.unwrap_or(0),
        to_ns: p.to.unwrap_or(0),
        interval: match p.interval {
            Interval::Min15 => pb::Interval::Minutes15,
            Interval::Min30 => pb::Interval::Minutes30,
            Interval::Hour => pb::Interval::Hour,
            Interval::Day => pb::Interval::Day,
            Interval::All => pb::Interval::All,
        } as i32,
        group_by: p.group_by.iter().map(|g| group_to_pb(*g) as i32).collect(),
        time_zone: p.time_zone.clone(),
        sl_thresholds_s: p.sl_thresholds_s.clone(),
        sl_formula: match p.sl_formula {
            SlFormula::Offered => pb::SlFormula::Offered,
            SlFormula::Answered => pb::SlFormula::Answered,
            SlFormula::AbandonsPositive => pb::SlFormula::AbandonsPositive,
            SlFormula::AbandonsIgnored => pb::SlFormula::AbandonsIgnored,
            SlFormula::AsteriskPerf => pb::SlFormula::AsteriskPerf,
            SlFormula::AsteriskPerf2 => pb::SlFormula::AsteriskPerf2,
        } as i32,
        short_abandon_s: Some(p.short_abandon_s),
        fcr_window_s: Some(u32::try_from(p.fcr_window_s).unwrap_or(u32::MAX)),
        fcr_transfer_breaks: Some(p.fcr_transfer_breaks),
        filters: None,
    }
}

fn group_to_pb(g: GroupBy) -> pb::GroupBy {
    match g {
        GroupBy::Queue => pb::GroupBy::Queue,
        GroupBy::Agent => pb::GroupBy::Agent,
        GroupBy::Site => pb::GroupBy::Site,
        GroupBy::Did => pb::GroupBy::Did,
        GroupBy::Trunk => pb::GroupBy::Trunk,
    }
}

/// Core parameters of a wire query; unset options take `defaults`.
///
/// # Errors
/// On an unknown enum value or an unknown time zone.
pub fn params_from_pb(q: &pb::KpiQuery, defaults: &KpiParams) -> Result<KpiParams, ConvertError> {
    let interval = match pb::Interval::try_from(q.interval) {
        Ok(pb::Interval::Unspecified) => defaults.interval,
        Ok(pb::Interval::Minutes15) => Interval::Min15,
        Ok(pb::Interval::Minutes30) => Interval::Min30,
        Ok(pb::Interval::Hour) => Interval::Hour,
        Ok(pb::Interval::Day) => Interval::Day,
        Ok(pb::Interval::All) => Interval::All,
        Err(_) => return Err(ConvertError::UnknownEnumValue { field: "KpiQuery.interval", value: q.interval }),
    };
    let mut group_by = Vec::new();
    for g in &q.group_by {
        let g = match pb::GroupBy::try_from(*g) {
            Ok(pb::GroupBy::Queue) => GroupBy::Queue,
            Ok(pb::GroupBy::Agent) => GroupBy::Agent,
            Ok(pb::GroupBy::Site) => GroupBy::Site,
            Ok(pb::GroupBy::Did) => GroupBy::Did,
            Ok(pb::GroupBy::Trunk) => GroupBy::Trunk,
            Ok(pb::GroupBy::Unspecified) => return Err(ConvertError::Unspecified { field: "KpiQuery.group_by" }),
            Err(_) => return Err(ConvertError::UnknownEnumValue { field: "KpiQuery.group_by", value: *g }),
        };
        if !group_by.contains(&g) {
            group_by.push(g);
        }
    }
    let sl_formula = match pb::SlFormula::try_from(q.sl_formula) {
        Ok(pb::SlFormula::Unspecified) => defaults.sl_formula,
        Ok(pb::SlFormula::Offered) => SlFormula::Offered,
        Ok(pb::SlFormula::Answered) => SlFormula::Answered,
        Ok(pb::SlFormula::AbandonsPositive) => SlFormula::AbandonsPositive,
        Ok(pb::SlFormula::AbandonsIgnored) => SlFormula::AbandonsIgnored,
        Ok(pb::SlFormula::AsteriskPerf) => SlFormula::AsteriskPerf,
        Ok(pb::SlFormula::AsteriskPerf2) => SlFormula::AsteriskPerf2,
        Err(_) => return Err(ConvertError::UnknownEnumValue { field: "KpiQuery.sl_formula", value: q.sl_formula }),
    };
    let time_zone = if q.time_zone.is_empty() { defaults.time_zone.clone() } else { q.time_zone.clone() };
    parse_tz(&time_zone).map_err(|_| ConvertError::Invalid { field: "KpiQuery.time_zone" })?;
    Ok(KpiParams {
        from: (q.from_ns != 0).then_some(q.from_ns),
        to: (q.to_ns != 0).then_some(q.to_ns),
        interval,
        group_by,
        time_zone,
        sl_thresholds_s: if q.sl_thresholds_s.is_empty() {
            defaults.sl_thresholds_s.clone()
        } else {
            q.sl_thresholds_s.clone()
        },
        sl_formula,
        short_abandon_s: q.short_abandon_s.unwrap_or(defaults.short_abandon_s),
        fcr_window_s: q.fcr_window_s.map_or(defaults.fcr_window_s, u64::from),
        fcr_transfer_breaks: q.fcr_transfer_breaks.unwrap_or(defaults.fcr_transfer_breaks),
    })
}

// === flags ===

const FLAGS: &[(&str, pb::RowFlag)] = &[
    ("aht_talk_only", pb::RowFlag::TalkOnlyAht),
    ("fcr_provisional", pb::RowFlag::FcrProvisional),
    ("unknown_end", pb::RowFlag::UnknownEnd),
    ("interval_in_progress", pb::RowFlag::PartialInterval),
    ("login_inferred", pb::RowFlag::LoginInferred),
    ("occupancy_capped", pb::RowFlag::OccupancyCapped),
    ("withheld_excluded_from_fcr", pb::RowFlag::WithheldExcludedFromFcr),
];

fn flag_to_pb(f: &str) -> Option<pb::RowFlag> {
    FLAGS.iter().find(|(name, _)| *name == f).map(|(_, v)| *v)
}

fn flag_from_pb(v: i32) -> Option<&'static str> {
    FLAGS.iter().find(|(_, f)| *f as i32 == v).map(|(name, _)| *name)
}

// === kpis ===

fn kpis_to_pb(k: &Kpis) -> pb::Kpis {
    pb::Kpis {
        offered: Some(k.offered),
        entered: Some(k.entered),
        answered: Some(k.answered),
        abandoned: Some(k.abandoned),
        short_abandoned: Some(k.short_abandoned),
        timed_out: Some(k.timed_out),
        other_exits: Some(k.other_exits),
        abandonment_rate_pct: k.abandonment_rate_pct,
        answer_rate_pct: k.answer_rate_pct,
        asa_s: k.asa_s,
        avg_wait_s: k.avg_wait_s,
        max_wait_s: k.max_wait_s.map(|v| v as f64),
        service_level_pct: k
            .service_level_pct
            .iter()
            .filter_map(|(t, v)| Some((t.parse::<u32>().ok()?, (*v)?)))
            .collect(),
        timeout_rate_pct: k.timeout_rate_pct,
        asterisk_completed: k.asterisk_completed,
        asterisk_abandoned: k.asterisk_abandoned,
        handled: Some(k.handled),
        aht_s: k.aht_s,
        talk_s: k.talk_s,
        hold_s: k.hold_s,
        wrap_s: k.wrap_s,
        talk_total_s: Some(k.talk_total_s),
        transfers: Some(k.transfers),
        transfers_blind: Some(k.transfers_blind),
        hold_count: Some(k.holds),
        transfer_rate_pct: None,
        hold_rate_pct: None,
        dmtt_s: k.dmtt_s,
        case_age_s: k.case_age_s,
        cases: Some(k.cases),
        fcr_pct: k.fcr_pct,
        fcr_contacts: Some(k.fcr_contacts),
        interactions_per_case: k.contacts_per_case,
        missed_offers: Some(k.missed_offers),
        missed_offer_ring_s: Some(k.missed_offer_ring_s),
        occupancy_pct: k.occupancy_pct,
        utilisation_pct: k.utilisation_pct,
        logged_in_s: Some(k.logged_in_s),
        paused_s: Some(k.paused_s),
        available_s: None,
        productivity_per_hour: k.productivity_per_hour,
        agents: Some(k.agents),
        handled_per_agent: k.handled_per_agent,
        outbound_attempts: Some(k.outbound_attempts),
        outbound_connected: Some(k.outbound_connected),
        outbound_unreached: Some(k.outbound_unreached),
        outbound_agent_abandoned: Some(k.outbound_agent_abandoned),
        outbound_asr_pct: k.asr_pct,
        outbound_ner_pct: k.ner_pct,
        csat_pct: k.csat_pct,
        nps: k.nps,
        ces: k.ces,
        surveys: Some(k.surveys),
    }
}

fn kpis_from_pb(k: &pb::Kpis, thresholds: &[u32]) -> Kpis {
    let n = |v: Option<u64>| v.unwrap_or(0);
    let f = |v: Option<f64>| v.unwrap_or(0.0);
    Kpis {
        offered: n(k.offered),
        entered: n(k.entered),
        answered: n(k.answered),
        abandoned: n(k.abandoned),
        short_abandoned: n(k.short_abandoned),
        timed_out: n(k.timed_out),
        other_exits: n(k.other_exits),
        abandonment_rate_pct: k.abandonment_rate_pct,
        timeout_rate_pct: k.timeout_rate_pct,
        answer_rate_pct: k.answer_rate_pct,
        asa_s: k.asa_s,
        avg_wait_s: k.avg_wait_s,
        max_wait_s: k.max_wait_s.map(|v| v as u64),
        // Every requested threshold is a key; absent on the wire = null.
        service_level_pct: thresholds.iter().map(|t| (t.to_string(), k.service_level_pct.get(t).copied())).collect(),
        asterisk_completed: k.asterisk_completed,
        asterisk_abandoned: k.asterisk_abandoned,
        handled: n(k.handled),
        aht_s: k.aht_s,
        talk_s: k.talk_s,
        hold_s: k.hold_s,
        wrap_s: k.wrap_s,
        talk_total_s: f(k.talk_total_s),
        cases: n(k.cases),
        dmtt_s: k.dmtt_s,
        case_age_s: k.case_age_s,
        contacts_per_case: k.interactions_per_case,
        fcr_pct: k.fcr_pct,
        fcr_contacts: n(k.fcr_contacts),
        transfers: n(k.transfers),
        transfers_blind: n(k.transfers_blind),
        holds: n(k.hold_count),
        missed_offers: n(k.missed_offers),
        missed_offer_ring_s: f(k.missed_offer_ring_s),
        occupancy_pct: k.occupancy_pct,
        utilisation_pct: k.utilisation_pct,
        logged_in_s: f(k.logged_in_s),
        paused_s: f(k.paused_s),
        productivity_per_hour: k.productivity_per_hour,
        agents: n(k.agents),
        handled_per_agent: k.handled_per_agent,
        outbound_attempts: n(k.outbound_attempts),
        outbound_connected: n(k.outbound_connected),
        outbound_unreached: n(k.outbound_unreached),
        outbound_agent_abandoned: n(k.outbound_agent_abandoned),
        asr_pct: k.outbound_asr_pct,
        ner_pct: k.outbound_ner_pct,
        csat_pct: k.csat_pct,
        nps: k.nps,
        ces: k.ces,
        surveys: n(k.surveys),
    }
}

// === report ===

/// The wire report of a core report, stamped `generated_at_ns`.
pub fn report_to_pb(r: &Report, generated_at_ns: i64) -> pb::KpiReport {
    pb::KpiReport {
        params: Some(params_to_pb(&r.params)),
        rows: r
            .rows
            .iter()
            .map(|row| pb::KpiRow {
                start_ns: row.start_ns,
                end_ns: row.end_ns,
                group: row.group.iter().filter_map(|(k, v)| Some((k.clone(), v.clone()?))).collect(),
                complete: row.complete,
                behind: row
                    .behind
                    .iter()
                    .map(|b| pb::AgentLag { agent_id: b.agent_id.clone(), lag_s: b.lag_s })
                    .collect(),
                flags: row.flags.iter().filter_map(|f| flag_to_pb(f)).map(|f| f as i32).collect(),
                kpis: Some(kpis_to_pb(&row.kpis)),
            })
            .collect(),
        unparsed: Default::default(),
        generated_at_ns,
    }
}

/// The core report of a wire report (for printing it like `callkpi analyze`).
///
/// # Errors
/// When the echoed parameters are missing or invalid.
pub fn report_from_pb(r: &pb::KpiReport) -> Result<Report, ConvertError> {
    let q = r.params.as_ref().ok_or(ConvertError::Missing { field: "KpiReport.params" })?;
    let params = params_from_pb(q, &KpiParams::default())?;
    let tz = parse_tz(&params.time_zone).map_err(|_| ConvertError::Invalid { field: "KpiQuery.time_zone" })?;
    let dims: BTreeSet<&str> = params.group_by.iter().map(|g| g.as_str()).collect();
    let rows = r
        .rows
        .iter()
        .map(|row| Row {
            start: rfc3339(row.start_ns, &tz),
            end: rfc3339(row.end_ns, &tz),
            start_ns: row.start_ns,
            end_ns: row.end_ns,
            group: dims.iter().map(|d| ((*d).to_owned(), row.group.get(*d).cloned())).collect::<BTreeMap<_, _>>(),
            complete: row.complete,
            behind: row.behind.iter().map(|b| Behind { agent_id: b.agent_id.clone(), lag_s: b.lag_s }).collect(),
            flags: row.flags.iter().filter_map(|f| flag_from_pb(*f)).map(str::to_owned).collect(),
            kpis: kpis_from_pb(&row.kpis.clone().unwrap_or_default(), &params.sl_thresholds_s),
        })
        .collect();
    Ok(Report { params, rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use callkpi_core::event::*;
    use callkpi_core::{Engine, EngineConfig, Watermark};
    use prost::Message as _;

    fn engine() -> Engine {
        let mut e = Engine::new(EngineConfig::default());
        let t0 = 1_795_356_000 * NANOS_PER_SEC;
        let mut seq = 0;
        let mut add = |e: &mut Engine, s: i64, call: &str, kind: EventKind| {
            seq += 1;
            e.ingest(Event {
                id: EventId { agent_id: "a".into(), seq },
                site: "hq".into(),
                source: SourceKind::Synthetic,
                call_id: call.into(),
                leg_id: String::new(),
                time: EventTime::from_source(t0 + s * NANOS_PER_SEC),
                kind,
            });
        };
        add(&mut e, 0, "c1", EventKind::QueueJoin { queue: "q".into(), caller: Some("0611".into()), position: None });
        let answered = EventKind::Answered {
            queue: Some("q".into()),
            agent: "A".into(),
            reported_wait_ms: None,
            reported_ring_ms: None,
        };
        add(&mut e, 12, "c1", answered);
        let hangup = EventKind::Hangup {
            queue: None,
            agent: Some("A".into()),
            by: HangupBy::Agent,
            cause: None,
            reported_talk_ms: None,
        };
        add(&mut e, 100, "c1", hangup);
        add(
            &mut e,
            1000,
            "c2",
            EventKind::QueueJoin { queue: "q".into(), caller: Some("0612".into()), position: None },
        );
        add(
            &mut e,
            1003,
            "c2",
            EventKind::QueueLeave { queue: "q".into(), reason: LeaveReason::Abandon, reported_wait_ms: None },
        );
        let survey = EventKind::SurveyAnswer {
            metric: SurveyMetric::Csat,
            score: 4.0,
            scale_min: 1.0,
            scale_max: 5.0,
            queue: None,
            agent: None,
        };
        add(&mut e, 130, "c1", survey);
        e.refresh(None, false);
        e
    }

    #[test]
    fn reports_round_trip_through_the_wire_bytes() {
        let e = engine();
        for (interval, by, tz) in [
            (Interval::Min15, vec![GroupBy::Queue, GroupBy::Agent], "Europe/Paris"),
            (Interval::All, vec![], "UTC"),
            (Interval::Hour, vec![GroupBy::Agent], "America/New_York"),
        ] {
            let params = KpiParams {
                interval,
                group_by: by,
                time_zone: tz.into(),
                sl_thresholds_s: vec![5, 20],
                ..KpiParams::default()
            };
            let wm = [Watermark { agent_id: "a".into(), delivered_until: 1_795_356_500 * NANOS_PER_SEC }];
            let report = e.report(&params, &wm).unwrap();
            assert!(!report.rows.is_empty());
            assert!(report.rows.iter().any(|r| !r.flags.is_empty()), "flags are exercised");
            let bytes = report_to_pb(&report, 7).encode_to_vec();
            let back = report_from_pb(&pb::KpiReport::decode(&bytes[..]).unwrap()).unwrap();
            assert_eq!(back, report);
        }
    }

    #[test]
    fn unset_query_options_take_the_defaults() {
        let defaults = KpiParams { short_abandon_s: 9, ..KpiParams::default() };
        let p = params_from_pb(&pb::KpiQuery::default(), &defaults).unwrap();
        assert_eq!(p, defaults);
        let bad = pb::KpiQuery { time_zone: "Mars/Olympus".into(), ..Default::default() };
        assert!(matches!(params_from_pb(&bad, &defaults), Err(ConvertError::Invalid { .. })));
        let bad = pb::KpiQuery { interval: 99, ..Default::default() };
        assert!(matches!(params_from_pb(&bad, &defaults), Err(ConvertError::UnknownEnumValue { .. })));
    }
}
