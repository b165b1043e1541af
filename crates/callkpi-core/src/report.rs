//! Report rows: counters summed per interval and group, and every KPI as a
//! pure function of those sums and the [`KpiParams`].
//!
//! The JSON shape of [`Report`] is a contract: `callkpi analyze --format json`
//! and the aggregator's `GetKpis` produce the same rows. `docs/kpis.md` gives
//! every definition; keep the two in step.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::counters::{CaseCell, CounterSet, Counters, FineKey};
use crate::event::{NANOS_PER_SEC, UnixNanos};
use crate::params::{GroupBy, KpiParams, SlFormula};
use crate::time::{Interval, interval_end, interval_start, rfc3339};

/// How far one data source has delivered, for completeness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// Agent (or input file) id.
    pub agent_id: String,
    /// Everything up to this time has been delivered.
    pub delivered_until: UnixNanos,
}

/// An agent that has not delivered up to a row's end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Behind {
    /// Agent id.
    pub agent_id: String,
    /// How far behind the row's end (or now, if sooner) it is, seconds.
    pub lag_s: f64,
}

/// The KPIs of one row. `None` (JSON `null`) where a denominator is zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Kpis {
    /// Queue entries minus short abandons.
    pub offered: u64,
    /// Queue entries, short abandons included.
    pub entered: u64,
    /// Answered by an agent.
    pub answered: u64,
    /// Abandoned after the short-abandon threshold.
    pub abandoned: u64,
    /// Abandoned within the short-abandon threshold.
    pub short_abandoned: u64,
    /// Left on timeout.
    pub timed_out: u64,
    /// Every exit that is neither answer nor abandon (timeouts included).
    pub other_exits: u64,
    /// abandoned / offered x 100.
    pub abandonment_rate_pct: Option<f64>,
    /// timed_out / offered x 100.
    pub timeout_rate_pct: Option<f64>,
    /// answered / offered x 100.
    pub answer_rate_pct: Option<f64>,
    /// Average wait of answered calls, s.
    pub asa_s: Option<f64>,
    /// Average wait of all calls that left the queue (short abandons excluded), s.
    pub avg_wait_s: Option<f64>,
    /// Longest wait of any call, whole seconds rounded up.
    pub max_wait_s: Option<u64>,
    /// Service level per threshold (seconds), in the chosen formula.
    pub service_level_pct: BTreeMap<String, Option<f64>>,
    /// Asterisk's `Completed` (calls answered from the queue), with the
    /// `asterisk-perf`/`asterisk-perf2` formulas only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asterisk_completed: Option<u64>,
    /// Asterisk's `Abandoned`: abandons (short ones included), timeouts and
    /// leave-when-empty exits, with the `asterisk-perf*` formulas only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asterisk_abandoned: Option<u64>,
    /// Handled calls: agent segments when grouped by agent, queue visits otherwise.
    pub handled: u64,
    /// (talk + hold + wrap) / handled, s.
    pub aht_s: Option<f64>,
    /// Talk / handled, s.
    pub talk_s: Option<f64>,
    /// Hold / handled, s.
    pub hold_s: Option<f64>,
    /// Wrap-up / handled, s.
    pub wrap_s: Option<f64>,
    /// Total talk, s.
    pub talk_total_s: f64,
    /// Cases opened (first contact of a caller within the FCR window).
    pub cases: u64,
    /// Treatment time of contacts / cases, s.
    pub dmtt_s: Option<f64>,
    /// Average case age (first contact start to last contact end), s.
    pub case_age_s: Option<f64>,
    /// Contacts per case.
    pub contacts_per_case: Option<f64>,
    /// Handled contacts resolved at first contact / handled contacts x 100.
    pub fcr_pct: Option<f64>,
    /// Handled contacts counted for FCR (withheld numbers excluded).
    pub fcr_contacts: u64,
    /// Transfers by agents.
    pub transfers: u64,
    /// Of which blind (the rest attended).
    pub transfers_blind: u64,
    /// Hold episodes.
    pub holds: u64,
    /// Offers an agent let ring out or rejected.
    pub missed_offers: u64,
    /// Ring time of those offers, s.
    pub missed_offer_ring_s: f64,
    /// busy / (logged in - paused) x 100, capped at 100.
    pub occupancy_pct: Option<f64>,
    /// busy / logged in x 100, capped at 100.
    pub utilisation_pct: Option<f64>,
    /// Logged-in time, s.
    pub logged_in_s: f64,
    /// Paused time, s.
    pub paused_s: f64,
    /// Handled per logged-in hour.
    pub productivity_per_hour: Option<f64>,
    /// Distinct agents logged in or handling.
    pub agents: u64,
    /// Handled / agents.
    pub handled_per_agent: Option<f64>,
    /// Outbound attempts with a final result.
    pub outbound_attempts: u64,
    /// Outbound answered by the called party.
    pub outbound_connected: u64,
    /// Outbound busy, no answer, failed, congestion or unavailable.
    pub outbound_unreached: u64,
    /// Outbound abandoned by the agent before connect.
    pub outbound_agent_abandoned: u64,
    /// Answer-seizure ratio: connected / attempts x 100.
    pub asr_pct: Option<f64>,
    /// Network effectiveness: (connected + busy + no answer) / (attempts - agent abandoned) x 100.
    pub ner_pct: Option<f64>,
    /// % of CSAT answers in the top two points of five.
    pub csat_pct: Option<f64>,
    /// % promoters - % detractors.
    pub nps: Option<f64>,
    /// Mean effort score on 1-7.
    pub ces: Option<f64>,
    /// Survey answers.
    pub surveys: u64,
}

/// One report row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Interval start, RFC 3339 in the report's zone.
    pub start: String,
    /// Interval end (exclusive).
    pub end: String,
    /// Interval start, ns (not serialised: the RFC 3339 form is the contract).
    #[serde(skip)]
    pub start_ns: UnixNanos,
    /// Interval end, ns.
    #[serde(skip)]
    pub end_ns: UnixNanos,
    /// Group values by dimension name; `null` where not applicable.
    pub group: BTreeMap<String, Option<String>>,
    /// Whether every source has delivered past the row's end.
    pub complete: bool,
    /// Sources that have not.
    pub behind: Vec<Behind>,
    /// Caveats: see docs/kpis.md.
    pub flags: Vec<String>,
    /// The figures.
    pub kpis: Kpis,
}

/// A whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Parameters used.
    pub params: KpiParams,
    /// Rows, by start then group.
    pub rows: Vec<Row>,
}

type GroupKey = Vec<Option<String>>;

fn project(k: &FineKey, by: &[GroupBy]) -> GroupKey {
    by.iter()
        .map(|g| match g {
            GroupBy::Queue => k.queue.clone(),
            GroupBy::Agent => k.agent.clone(),
            GroupBy::Site => Some(k.site.clone()),
            GroupBy::Did => k.did.clone(),
            GroupBy::Trunk => k.trunk.clone(),
        })
        .collect()
}

/// Builds the report rows for `params` from a counter store.
///
/// `now` is the engine's clock; `watermarks` say how far each source has
/// delivered. `sealed` says the input is over (offline analysis): no
/// interval is then still in progress. Rows are produced for every
/// (interval, group) with data.
///
/// # Errors
/// When the time zone is unknown.
pub fn build(
    stores: &[&CounterSet],
    params: &KpiParams,
    now: UnixNanos,
    first: UnixNanos,
    sealed: bool,
    watermarks: &[Watermark],
) -> Result<Report, String> {
    let tz = crate::time::parse_tz(&params.time_zone)?;
    let from = params.from.unwrap_or(first);
    let to = params.to.unwrap_or(now.saturating_add(1));
    let mut rows: BTreeMap<(UnixNanos, GroupKey), (Counters, BTreeSet<String>)> = BTreeMap::new();
    let by_queue = params.group_by.contains(&GroupBy::Queue);
    // A bucket belongs to the range if it overlaps it; buckets are quarter
    // hours, so ranges should start and end on one. Cells are ordered by
    // bucket first: only the range's are visited.
    let lowest = FineKey {
        bucket: from.saturating_sub(crate::time::BUCKET_NS).saturating_add(1),
        site: String::new(),
        queue: None,
        agent: None,
        did: None,
        trunk: None,
    };
    let cells = stores.iter().flat_map(|s| s.0.range(lowest.clone()..).take_while(|(k, _)| k.bucket < to));
    for (k, c) in cells {
        let start = if params.interval == Interval::All {
            from
        } else {
            interval_start(k.bucket.max(from), params.interval, &tz)
        };
        let e = rows.entry((start, project(k, &params.group_by))).or_default();
        e.0.add(c, 1);
        if let Some(a) = &k.agent {
            let logged = if by_queue { c.member_logged_in_ms } else { c.presence_logged_in_ms };
            if logged > 0 || c.handled_segments > 0 {
                e.1.insert(a.clone());
            }
        }
    }
    let mut out = Vec::new();
    for ((start, gk), (c, agents)) in rows {
        let end = if params.interval == Interval::All { to } else { interval_end(start, params.interval, &tz) };
        let (kpis, mut flags) = kpis(&c, params, &agents);
        if is_empty(&kpis) {
            continue;
        }
        // A source is behind when it has not delivered up to the row's end
        // (or up to now, for the interval in progress).
        let due = end.min(now);
        let behind: Vec<Behind> = watermarks
            .iter()
            .filter(|w| w.delivered_until < due)
            .map(|w| Behind {
                agent_id: w.agent_id.clone(),
                lag_s: (due - w.delivered_until) as f64 / NANOS_PER_SEC as f64,
            })
            .collect();
        let in_progress = !sealed && end > now;
        if in_progress {
            flags.push("interval_in_progress".into());
        }
        if kpis.fcr_contacts > 0 || kpis.cases > 0 {
            let window_end = end
                .saturating_add(i64::try_from(params.fcr_window_s).unwrap_or(i64::MAX / NANOS_PER_SEC) * NANOS_PER_SEC);
            if window_end > now {
                flags.push("fcr_provisional".into());
            }
        }
        let group = params.group_by.iter().map(|g| g.as_str().to_owned()).zip(gk).collect();
        out.push(Row {
            start: rfc3339(start, &tz),
            end: if end == i64::MAX { rfc3339(now, &tz) } else { rfc3339(end, &tz) },
            start_ns: start,
            end_ns: end,
            group,
            complete: behind.is_empty() && !in_progress,
            behind,
            flags,
            kpis,
        });
    }
    Ok(Report { params: params.clone(), rows: out })
}

fn is_empty(k: &Kpis) -> bool {
    k.entered == 0
        && k.handled == 0
        && k.logged_in_s == 0.0
        && k.missed_offers == 0
        && k.outbound_attempts == 0
        && k.surveys == 0
        && k.transfers == 0
        && k.cases == 0
        && k.fcr_contacts == 0
}

fn pct(n: i64, d: i64) -> Option<f64> {
    (d > 0).then(|| n as f64 * 100.0 / d as f64)
}

fn avg_s(ms: i64, d: i64) -> Option<f64> {
    (d > 0).then(|| ms as f64 / 1000.0 / d as f64)
}

fn u(n: i64) -> u64 {
    u64::try_from(n.max(0)).unwrap_or(0)
}

/// Computes the KPIs of one row's counters, and its flags.
pub fn kpis(c: &Counters, p: &KpiParams, agents: &BTreeSet<String>) -> (Kpis, Vec<String>) {
    let mut flags = Vec::new();
    let by_agent = p.group_by.contains(&GroupBy::Agent);
    let by_queue = p.group_by.contains(&GroupBy::Queue);
    let s = u64::from(p.short_abandon_s);

    let ab_all = c.abandoned_wait.total();
    let short = if s > 0 { c.abandoned_wait.within(s) } else { Default::default() };
    let abandoned = ab_all.n - short.n;
    let answered = c.answered_wait.total();
    let other = c.other_wait.total();
    let offered = c.entered - short.n;
    let other_exits = c.timed_out
        + c.exit_with_key
        + c.leave_empty
        + c.full
        + c.join_empty
        + c.transferred_unanswered
        + c.left_unspecified
        + c.unknown_end;

    // Asterisk's own counters: every abandon (it knows no short abandon)
    // plus the callers the queue let go (timeout, leave-when-empty).
    let pbx_abandoned = ab_all.n + c.let_go_wait.total().n;
    let mut sl = BTreeMap::new();
    for &t in &p.sl_thresholds_s {
        let t64 = u64::from(t);
        let ans_in = c.answered_wait.within(t64).n;
        let ab_in = if t64 > s { c.abandoned_wait.within(t64).n - short.n } else { 0 };
        // Visits whose outcome is unknown are in no denominator, unless they
        // had already waited past T: those are certain misses.
        let sl_offered = offered - c.unknown_wait.within(t64).n;
        let v = match p.sl_formula {
            SlFormula::Offered => pct(ans_in, sl_offered),
            SlFormula::Answered | SlFormula::AsteriskPerf => pct(ans_in, answered.n),
            SlFormula::AbandonsPositive => pct(ans_in + ab_in, sl_offered),
            SlFormula::AbandonsIgnored => pct(ans_in, sl_offered - ab_in),
            SlFormula::AsteriskPerf2 => {
                let pbx_ab_in = c.abandoned_wait.within(t64).n + c.let_go_wait.within(t64).n;
                pct(ans_in + pbx_ab_in, answered.n + pbx_abandoned)
            }
        };
        sl.insert(t.to_string(), v);
    }

    let handled = if by_agent { c.handled_segments } else { c.handled_visits };
    let handle_ms = c.talk_ms + c.hold_ms + c.wrap_ms;
    if handled > 0 && c.wrap_segments == 0 {
        flags.push("aht_talk_only".into());
    }
    if c.unknown_end > 0 || c.segments_unknown_end > 0 {
        flags.push("unknown_end".into());
    }

    let (logged, paused) = if by_queue {
        (c.member_logged_in_ms, c.member_paused_ms)
    } else {
        (c.presence_logged_in_ms, c.presence_paused_ms)
    };
    if c.inferred_logged_in_ms > 0 {
        flags.push("login_inferred".into());
    }
    let available = logged - paused;
    let occ = pct(c.busy_ms, available);
    let util = pct(c.busy_ms, logged);
    if occ.is_some_and(|v| v > 100.0) || util.is_some_and(|v| v > 100.0) {
        flags.push("occupancy_capped".into());
    }
    let agents_n = i64::try_from(agents.len()).unwrap_or(i64::MAX);

    // FCR and cases for the window.
    let w = p.fcr_window_s;
    let (mut cases, mut contacts, mut treat, mut age, mut fcr_n, mut fcr_ok) = (0i64, 0i64, 0i64, 0i64, 0i64, 0i64);
    for (k, v) in &c.cases {
        let opens = k.prev_gap_s == CaseCell::NONE || k.prev_gap_s > w;
        let closes = k.next_gap_s == CaseCell::NONE || k.next_gap_s > w;
        contacts += v.contacts;
        treat += v.treatment_ms;
        if opens {
            cases += v.contacts;
        } else {
            age += v.prev_gap_ms;
        }
        if closes {
            age += v.duration_ms;
        }
        if k.handled {
            fcr_n += v.contacts;
            let resolved = match k.disposition {
                Some(explicit) => explicit,
                None => closes && !(p.fcr_transfer_breaks && k.transferred),
            };
            if resolved {
                fcr_ok += v.contacts;
            }
        }
    }
    if c.withheld_contacts > 0 {
        flags.push("withheld_excluded_from_fcr".into());
    }

    let reached = c.out_busy + c.out_no_answer + c.out_failed + c.out_congestion + c.out_unavailable;
    let surveys = c.csat_n + c.nps_n + c.ces_n;
    let k = Kpis {
        offered: u(offered),
        entered: u(c.entered),
        answered: u(answered.n),
        abandoned: u(abandoned),
        short_abandoned: u(short.n),
        timed_out: u(c.timed_out),
        other_exits: u(other_exits),
        abandonment_rate_pct: pct(abandoned, offered),
        timeout_rate_pct: pct(c.timed_out, offered),
        answer_rate_pct: pct(answered.n, offered),
        asa_s: avg_s(answered.ms, answered.n),
        avg_wait_s: avg_s(answered.ms + ab_all.ms - short.ms + other.ms, answered.n + abandoned + other.n),
        max_wait_s: [c.answered_wait.max_secs(), c.abandoned_wait.max_secs(), c.other_wait.max_secs()]
            .into_iter()
            .flatten()
            .max(),
        service_level_pct: sl,
        asterisk_completed: p.sl_formula.is_asterisk().then(|| u(answered.n)),
        asterisk_abandoned: p.sl_formula.is_asterisk().then(|| u(pbx_abandoned)),
        handled: u(handled),
        aht_s: avg_s(handle_ms, handled),
        talk_s: avg_s(c.talk_ms, handled),
        hold_s: avg_s(c.hold_ms, handled),
        wrap_s: avg_s(c.wrap_ms, handled),
        talk_total_s: c.talk_ms as f64 / 1000.0,
        cases: u(cases),
        dmtt_s: avg_s(treat, cases),
        case_age_s: avg_s(age, cases),
        contacts_per_case: (cases > 0).then(|| contacts as f64 / cases as f64),
        fcr_pct: pct(fcr_ok, fcr_n),
        fcr_contacts: u(fcr_n),
        transfers: u(c.transfers),
        transfers_blind: u(c.transfers_blind),
        holds: u(c.holds),
        missed_offers: u(c.missed_offers),
        missed_offer_ring_s: c.missed_ring_ms as f64 / 1000.0,
        occupancy_pct: occ.map(|v| v.min(100.0)),
        utilisation_pct: util.map(|v| v.min(100.0)),
        logged_in_s: logged as f64 / 1000.0,
        paused_s: paused as f64 / 1000.0,
        productivity_per_hour: (logged > 0).then(|| handled as f64 / (logged as f64 / 3_600_000.0)),
        agents: u(agents_n),
        handled_per_agent: (agents_n > 0).then(|| handled as f64 / agents_n as f64),
        outbound_attempts: u(c.out_attempts),
        outbound_connected: u(c.out_connected),
        outbound_unreached: u(reached),
        outbound_agent_abandoned: u(c.out_agent_abandoned),
        asr_pct: pct(c.out_connected, c.out_attempts),
        ner_pct: pct(c.out_connected + c.out_busy + c.out_no_answer, c.out_attempts - c.out_agent_abandoned),
        csat_pct: pct(c.csat_satisfied, c.csat_n),
        nps: (c.nps_n > 0).then(|| (c.nps_promoters - c.nps_detractors) as f64 * 100.0 / c.nps_n as f64),
        ces: (c.ces_n > 0).then(|| c.ces_sum_milli as f64 / 1000.0 / c.ces_n as f64),
        surveys: u(surveys),
    };
    (k, flags)
}
