//! Primitive, additive counters per quarter hour x site x queue x agent x DID x trunk.
//!
//! Everything here is a sum, so counters of two event sets merge by addition
//! and a call's old contribution is removed by subtracting it when late events
//! change what the call looks like. Every KPI and every formula variant is a
//! pure function of these sums ([`crate::report`]).
//!
//! Durations that KPIs compare with a threshold chosen at query time (waits
//! for service level and short abandons, gaps between a caller's contacts for
//! FCR) are kept as sparse histograms keyed by whole seconds, rounded up, with
//! the exact millisecond sum in each bucket: "within T s" for an integer T is
//! exact, and averages stay exact too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::UnixNanos;

/// Identity of a counter cell. `None` means "not applicable" (a call that no
/// agent answered has no agent), not "all".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FineKey {
    /// UTC quarter hour ([`crate::time::bucket_of`]).
    pub bucket: UnixNanos,
    /// Site of the capturing agent.
    pub site: String,
    /// Queue.
    pub queue: Option<String>,
    /// Agent (queue member name).
    pub agent: Option<String>,
    /// Called number of an inbound call.
    pub did: Option<String>,
    /// Trunk of an outbound call.
    pub trunk: Option<String>,
}

/// A count and an exact sum of milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountSum {
    /// How many.
    pub n: i64,
    /// Sum of their durations, ms.
    pub ms: i64,
}

impl CountSum {
    fn add(&mut self, o: CountSum, sign: i64) {
        self.n += sign * o.n;
        self.ms += sign * o.ms;
    }
}

/// Sparse histogram of durations by whole seconds rounded up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hist(pub BTreeMap<u64, CountSum>);

impl Hist {
    /// The bucket a duration falls in: `ceil(ms / 1000)`, so `d <= T s` iff `bucket <= T`.
    pub fn bucket(ms: u64) -> u64 {
        ms.div_ceil(1000)
    }

    /// Records one duration.
    pub fn record(&mut self, ms: u64) {
        self.record_in(Self::bucket(ms), ms);
    }

    /// Records one value in an explicit bucket (for "infinite" gaps).
    pub fn record_in(&mut self, bucket: u64, ms: u64) {
        let c = self.0.entry(bucket).or_default();
        c.n += 1;
        c.ms += i64::try_from(ms).unwrap_or(i64::MAX);
    }

    fn add(&mut self, o: &Hist, sign: i64) {
        for (k, v) in &o.0 {
            let e = self.0.entry(*k).or_default();
            e.add(*v, sign);
            if e.n == 0 && e.ms == 0 {
                self.0.remove(k);
            }
        }
    }

    /// Totals over all buckets.
    pub fn total(&self) -> CountSum {
        let mut t = CountSum::default();
        for v in self.0.values() {
            t.add(*v, 1);
        }
        t
    }

    /// Totals over buckets `<= secs` (durations within `secs` seconds).
    pub fn within(&self, secs: u64) -> CountSum {
        let mut t = CountSum::default();
        for v in self.0.range(..=secs).map(|(_, v)| v) {
            t.add(*v, 1);
        }
        t
    }

    /// Highest non-empty bucket, in seconds.
    pub fn max_secs(&self) -> Option<u64> {
        self.0.iter().rev().find(|(_, v)| v.n > 0).map(|(k, _)| *k)
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }
}

/// Facts about contacts from one caller number, for FCR and case KPIs.
///
/// A contact's gaps to the caller's previous and next contact (queue entry to
/// queue entry, seconds rounded up; [`CaseCell::NONE`] when there is none)
/// decide, for a window W chosen at query time, whether it opens a case
/// (previous gap > W) and whether it is the last contact of its case
/// (next gap > W).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CaseKey {
    /// Seconds since the caller's previous contact, or [`CaseCell::NONE`].
    pub prev_gap_s: u64,
    /// Seconds until the caller's next contact, or [`CaseCell::NONE`].
    pub next_gap_s: u64,
    /// An agent answered this contact.
    pub handled: bool,
    /// The call was transferred from one agent to another.
    pub transferred: bool,
    /// Explicit disposition: `Some(true)` resolved, `Some(false)` not resolved.
    pub disposition: Option<bool>,
}

/// Sums for contacts sharing a [`CaseKey`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseCell {
    /// Contacts.
    pub contacts: i64,
    /// Treatment time (talk + hold + wrap-up of every agent segment), ms.
    pub treatment_ms: i64,
    /// Contact duration (queue entry to last segment end), ms.
    pub duration_ms: i64,
    /// Sum of previous gaps, ms (for case age).
    pub prev_gap_ms: i64,
}

impl CaseCell {
    /// Marker for "no previous/next contact".
    pub const NONE: u64 = u64::MAX;
}

/// All primitive counters of one cell. Field docs say what one unit is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    // --- queue visits, counted where the caller entered the queue ---
    /// Queue entries (including callers refused as full / join-empty).
    #[serde(skip_serializing_if = "is_zero")]
    pub entered: i64,
    /// Waits of answered visits (entry to answer, ring time included).
    #[serde(skip_serializing_if = "Hist::is_zero")]
    pub answered_wait: Hist,
    /// Waits of abandoned visits (short ones included; the threshold is a query parameter).
    #[serde(skip_serializing_if = "Hist::is_zero")]
    pub abandoned_wait: Hist,
    /// Waits of visits that left otherwise (timeout, key, empty, full, ...),
    /// and of visits whose end is unknown.
    #[serde(skip_serializing_if = "Hist::is_zero")]
    pub other_wait: Hist,
    /// Waits of visits the queue let go alive: timeout and leave-when-empty
    /// exits (a subset of `other_wait`). Asterisk counts them as abandoned.
    #[serde(skip_serializing_if = "Hist::is_zero")]
    pub let_go_wait: Hist,
    /// Waits, up to the last event seen, of visits whose outcome is unknown
    /// (still waiting at the end of the input, or closed by the engine's
    /// timeout; a subset of `other_wait`). Service level leaves out those
    /// that had not yet waited past the threshold: they might still have
    /// been answered in time.
    #[serde(skip_serializing_if = "Hist::is_zero")]
    pub unknown_wait: Hist,
    /// Exits on timeout.
    #[serde(skip_serializing_if = "is_zero")]
    pub timed_out: i64,
    /// Exits with a key.
    #[serde(skip_serializing_if = "is_zero")]
    pub exit_with_key: i64,
    /// Exits because the queue emptied.
    #[serde(skip_serializing_if = "is_zero")]
    pub leave_empty: i64,
    /// Refused: queue full.
    #[serde(skip_serializing_if = "is_zero")]
    pub full: i64,
    /// Refused: no agents at join.
    #[serde(skip_serializing_if = "is_zero")]
    pub join_empty: i64,
    /// Transferred away before answer.
    #[serde(skip_serializing_if = "is_zero")]
    pub transferred_unanswered: i64,
    /// Left without the source saying why.
    #[serde(skip_serializing_if = "is_zero")]
    pub left_unspecified: i64,
    /// Closed by the engine's timeout: no exit event ever arrived.
    #[serde(skip_serializing_if = "is_zero")]
    pub unknown_end: i64,

    // --- handling, counted where the handling ended ---
    /// Answered visits whose handling ended (a call counted once per queue),
    /// plus segments answered from a queue whose entry was not seen (input
    /// starting mid-call). A visit whose only conversations were closed by
    /// timeout is not counted: its handle time is unknown.
    #[serde(skip_serializing_if = "is_zero")]
    pub handled_visits: i64,
    /// Agent segments that ended with a hang-up or a transfer (one per agent
    /// per conversation); those closed by timeout are `segments_unknown_end`.
    #[serde(skip_serializing_if = "is_zero")]
    pub handled_segments: i64,
    /// Segments for which after-call work was reported.
    #[serde(skip_serializing_if = "is_zero")]
    pub wrap_segments: i64,
    /// Talk time (hold excluded), ms.
    #[serde(skip_serializing_if = "is_zero")]
    pub talk_ms: i64,
    /// Customer hold time, ms.
    #[serde(skip_serializing_if = "is_zero")]
    pub hold_ms: i64,
    /// After-call work, ms.
    #[serde(skip_serializing_if = "is_zero")]
    pub wrap_ms: i64,
    /// Hold episodes.
    #[serde(skip_serializing_if = "is_zero")]
    pub holds: i64,
    /// Transfers made by agents.
    #[serde(skip_serializing_if = "is_zero")]
    pub transfers: i64,
    /// Of which blind.
    #[serde(skip_serializing_if = "is_zero")]
    pub transfers_blind: i64,
    /// Segments whose end was never seen (closed by timeout): not handled
    /// calls, and their talk, hold and wrap-up are not in the sums above.
    #[serde(skip_serializing_if = "is_zero")]
    pub segments_unknown_end: i64,

    // --- agent time, spread over the quarter hours it covers ---
    /// Busy time (talk + hold + wrap-up) in this quarter hour, ms.
    #[serde(skip_serializing_if = "is_zero")]
    pub busy_ms: i64,
    /// Logged-in time as a member of this cell's queue, ms (cells with a queue).
    #[serde(skip_serializing_if = "is_zero")]
    pub member_logged_in_ms: i64,
    /// Paused time as a member of this cell's queue, ms.
    #[serde(skip_serializing_if = "is_zero")]
    pub member_paused_ms: i64,
    /// Logged-in time in at least one queue, ms (cells without a queue).
    #[serde(skip_serializing_if = "is_zero")]
    pub presence_logged_in_ms: i64,
    /// Time paused in every queue the agent was logged into, ms.
    #[serde(skip_serializing_if = "is_zero")]
    pub presence_paused_ms: i64,
    /// Logged-in time that was inferred (static member, no login event), ms.
    #[serde(skip_serializing_if = "is_zero")]
    pub inferred_logged_in_ms: i64,

    // --- offers to agents ---
    /// Offers not answered by the agent (ring no answer, reject).
    #[serde(skip_serializing_if = "is_zero")]
    pub missed_offers: i64,
    /// Ring time of missed offers, ms.
    #[serde(skip_serializing_if = "is_zero")]
    pub missed_ring_ms: i64,
    /// Rings cancelled because the caller left or another agent answered.
    #[serde(skip_serializing_if = "is_zero")]
    pub ring_canceled: i64,

    // --- outbound ---
    /// Outbound attempts with a final result.
    #[serde(skip_serializing_if = "is_zero")]
    pub out_attempts: i64,
    /// Answered by the called party.
    #[serde(skip_serializing_if = "is_zero")]
    pub out_connected: i64,
    /// Busy.
    #[serde(skip_serializing_if = "is_zero")]
    pub out_busy: i64,
    /// Not answered.
    #[serde(skip_serializing_if = "is_zero")]
    pub out_no_answer: i64,
    /// Failed in the network.
    #[serde(skip_serializing_if = "is_zero")]
    pub out_failed: i64,
    /// Congestion.
    #[serde(skip_serializing_if = "is_zero")]
    pub out_congestion: i64,
    /// Unavailable / invalid number.
    #[serde(skip_serializing_if = "is_zero")]
    pub out_unavailable: i64,
    /// Abandoned by the agent before connect.
    #[serde(skip_serializing_if = "is_zero")]
    pub out_agent_abandoned: i64,

    // --- surveys ---
    /// CSAT answers.
    #[serde(skip_serializing_if = "is_zero")]
    pub csat_n: i64,
    /// CSAT answers in the top two points of a five-point scale (normalised >= 0.75).
    #[serde(skip_serializing_if = "is_zero")]
    pub csat_satisfied: i64,
    /// NPS answers.
    #[serde(skip_serializing_if = "is_zero")]
    pub nps_n: i64,
    /// NPS 9-10.
    #[serde(skip_serializing_if = "is_zero")]
    pub nps_promoters: i64,
    /// NPS 0-6.
    #[serde(skip_serializing_if = "is_zero")]
    pub nps_detractors: i64,
    /// CES answers.
    #[serde(skip_serializing_if = "is_zero")]
    pub ces_n: i64,
    /// Sum of CES scores mapped onto 1-7, in thousandths.
    #[serde(skip_serializing_if = "is_zero")]
    pub ces_sum_milli: i64,

    // --- contacts, for FCR and cases (counted where the contact entered) ---
    /// Contacts by their case facts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cases: BTreeMap<CaseKey, CaseCell>,
    /// Contacts whose caller number was withheld (excluded from FCR).
    #[serde(skip_serializing_if = "is_zero")]
    pub withheld_contacts: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

macro_rules! add_fields {
    ($self:ident, $o:ident, $sign:ident, $($f:ident),* $(,)?) => {
        $( $self.$f += $sign * $o.$f; )*
    };
}

impl Counters {
    /// Adds `o` times `sign` (+1 to add, -1 to remove a contribution).
    pub fn add(&mut self, o: &Counters, sign: i64) {
        add_fields!(
            self,
            o,
            sign,
            entered,
            timed_out,
            exit_with_key,
            leave_empty,
            full,
            join_empty,
            transferred_unanswered,
            left_unspecified,
            unknown_end,
            handled_visits,
            handled_segments,
            wrap_segments,
            talk_ms,
            hold_ms,
            wrap_ms,
            holds,
            transfers,
            transfers_blind,
            segments_unknown_end,
            busy_ms,
            member_logged_in_ms,
            member_paused_ms,
            presence_logged_in_ms,
            presence_paused_ms,
            inferred_logged_in_ms,
            missed_offers,
            missed_ring_ms,
            ring_canceled,
            out_attempts,
            out_connected,
            out_busy,
            out_no_answer,
            out_failed,
            out_congestion,
            out_unavailable,
            out_agent_abandoned,
            csat_n,
            csat_satisfied,
            nps_n,
            nps_promoters,
            nps_detractors,
            ces_n,
            ces_sum_milli,
            withheld_contacts,
        );
        self.answered_wait.add(&o.answered_wait, sign);
        self.abandoned_wait.add(&o.abandoned_wait, sign);
        self.other_wait.add(&o.other_wait, sign);
        self.let_go_wait.add(&o.let_go_wait, sign);
        self.unknown_wait.add(&o.unknown_wait, sign);
        for (k, v) in &o.cases {
            let e = self.cases.entry(*k).or_default();
            e.contacts += sign * v.contacts;
            e.treatment_ms += sign * v.treatment_ms;
            e.duration_ms += sign * v.duration_ms;
            e.prev_gap_ms += sign * v.prev_gap_ms;
            if *e == CaseCell::default() {
                self.cases.remove(k);
            }
        }
    }

    /// True when every counter is zero (the cell can be dropped).
    pub fn is_zero(&self) -> bool {
        self.answered_wait.is_zero()
            && self.abandoned_wait.is_zero()
            && self.other_wait.is_zero()
            && self.let_go_wait.is_zero()
            && self.unknown_wait.is_zero()
            && self.cases.is_empty()
            && *self
                == Counters {
                    answered_wait: Hist::default(),
                    abandoned_wait: Hist::default(),
                    other_wait: Hist::default(),
                    let_go_wait: Hist::default(),
                    unknown_wait: Hist::default(),
                    cases: BTreeMap::new(),
                    ..Counters::default()
                }
    }
}

/// A set of cells: one call's, one agent's or one caller's contribution, or a whole store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSet(pub BTreeMap<FineKey, Counters>);

impl CounterSet {
    /// The cell for `key`, created empty.
    pub fn cell(&mut self, key: FineKey) -> &mut Counters {
        self.0.entry(key).or_default()
    }

    /// Adds `o` times `sign`, dropping cells that become zero.
    pub fn add(&mut self, o: &CounterSet, sign: i64) {
        for (k, v) in &o.0 {
            let e = self.0.entry(k.clone()).or_default();
            e.add(v, sign);
            if e.is_zero() {
                self.0.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_within_is_inclusive_of_whole_seconds() {
        let mut h = Hist::default();
        for ms in [0, 1, 1000, 1001, 20_000, 20_001] {
            h.record(ms);
        }
        assert_eq!(h.within(0).n, 1);
        assert_eq!(h.within(1).n, 3);
        assert_eq!(h.within(20).n, 5);
        assert_eq!(h.within(21).n, 6);
        assert_eq!(h.total().ms, 42_003);
        assert_eq!(h.max_secs(), Some(21));
    }

    #[test]
    fn add_then_subtract_is_empty() {
        let mut a = Counters { entered: 3, talk_ms: 500, ..Default::default() };
        a.answered_wait.record(12_000);
        a.cases.insert(CaseKey::default(), CaseCell { contacts: 1, ..Default::default() });
        let mut set = CounterSet::default();
        let key = FineKey { bucket: 0, site: "s".into(), queue: None, agent: None, did: None, trunk: None };
        let mut one = CounterSet::default();
        *one.cell(key) = a;
        set.add(&one, 1);
        assert_eq!(set.0.len(), 1);
        set.add(&one, -1);
        assert!(set.0.is_empty());
    }
}
