//! The incremental KPI engine: events in, primitive counters kept current.
//!
//! The engine keeps every call's events, every agent's presence changes and
//! every caller's contacts. [`Engine::ingest`] only files an event and marks
//! what it touches as dirty; [`Engine::refresh`] rebuilds each dirty call,
//! agent and caller from scratch and swaps its old contribution to the
//! counters for the new one. So:
//! - the result does not depend on the order in which events arrive;
//! - a late event (an office that was offline for a day) corrects the
//!   intervals it belongs to;
//! - an event delivered twice (same [`EventId`](crate::event::EventId)) is counted once.
//!
//! "Now" is an argument: the engine's clock is the latest KPI time seen, or
//! what the caller passes to [`Engine::refresh`]. A call with nothing open is
//! final; one still open past `unknown_end_timeout`, or whose last event is
//! older than a later queue start of its site (Asterisk's QUEUESTART: the
//! PBX restarted and the call's end will never be logged), is closed as
//! "unknown end".

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use crate::agent::{self, StateChange};
use crate::call::CallRecord;
use crate::counters::{CaseCell, CaseKey, CounterSet, FineKey};
use crate::event::{Event, EventId, EventKind, NANOS_PER_MS, NANOS_PER_SEC, UnixNanos};
use crate::params::KpiParams;
use crate::report::{self, Report, Watermark};
use crate::time::bucket_of;

/// Engine settings that are not report parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// A call with an open visit or segment and no event for this long is
    /// closed as "unknown end", ns. Default 4 h.
    pub unknown_end_timeout: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { unknown_end_timeout: 4 * 3600 * NANOS_PER_SEC }
    }
}

type CallKey = (String, String);
type AgentKey = (String, String);
type CallerKey = (String, String);

#[derive(Debug, Default)]
struct CallState {
    events: Vec<Event>,
    contribution: CounterSet,
    record: Option<CallRecord>,
    /// Caller index entry: (caller key, contact start).
    contact: Option<(CallerKey, UnixNanos)>,
}

#[derive(Debug, Default)]
struct AgentLog {
    changes: Vec<StateChange>,
    /// Ids of `changes`: a scan of `changes` per event made a long-lived
    /// agent's history quadratic (45 % of the aggregator's CPU at 3.4 M events).
    ids: HashSet<EventId>,
    contribution: CounterSet,
}

#[derive(Debug, Clone)]
struct Contact {
    end: UnixNanos,
    handled: bool,
    transferred: bool,
    disposition: Option<bool>,
    treatment_ms: u64,
    queue: Option<String>,
    agent: Option<String>,
    did: Option<String>,
}

#[derive(Debug, Default)]
struct CallerLog {
    /// Contacts by (start, call id).
    contacts: BTreeMap<(UnixNanos, String), Contact>,
    contribution: CounterSet,
}

/// The KPI engine. See the module documentation.
#[derive(Debug, Default)]
pub struct Engine {
    cfg: EngineConfig,
    calls: HashMap<CallKey, CallState>,
    /// Sites each PBX call id was seen at (a call id alone may be ambiguous).
    call_sites: HashMap<String, Vec<String>>,
    /// Rebuilt calls by (first event time, site, call id), for range queries.
    calls_by_start: BTreeSet<(UnixNanos, String, String)>,
    agents: HashMap<AgentKey, AgentLog>,
    callers: HashMap<CallerKey, CallerLog>,
    /// Queues each agent was seen working in, per call (for inferred logins).
    agent_queues: HashMap<AgentKey, BTreeMap<String, usize>>,
    queue_start: HashMap<String, UnixNanos>,
    /// Every queue start per (site, collecting agent): a call whose last
    /// event is before one of them ended in that restart. Keyed by the
    /// collecting agent too, because one site may have several PBXes, and
    /// one PBX restarting ends none of the other's calls.
    restarts: HashMap<String, HashMap<String, BTreeSet<UnixNanos>>>,
    store: CounterSet,
    clock: Option<UnixNanos>,
    first: Option<UnixNanos>,
    /// Latest KPI time seen per site: presence (logged-in time) is counted
    /// up to it, so a site's figures depend on its data, not on when they
    /// are computed.
    site_clock: HashMap<String, UnixNanos>,
    dirty_calls: HashSet<CallKey>,
    dirty_agents: HashSet<AgentKey>,
    dirty_callers: HashSet<CallerKey>,
    open_calls: HashSet<CallKey>,
    duplicates: u64,
    events: u64,
    /// Input is over: set by a refresh that closed everything.
    sealed: bool,
    /// Clock of the last refresh.
    last_refresh: Option<UnixNanos>,
}

impl Engine {
    /// An empty engine.
    pub fn new(cfg: EngineConfig) -> Self {
        Self { cfg, ..Self::default() }
    }

    /// Files one event. Cheap: the work happens in [`Engine::refresh`].
    /// Returns false when the event was already known (a duplicate).
    pub fn ingest(&mut self, ev: Event) -> bool {
        let t = ev.kpi_time();
        match self.site_clock.get_mut(&ev.site) {
            Some(c) => *c = (*c).max(t),
            None => {
                self.site_clock.insert(ev.site.clone(), t);
            }
        }
        let site = ev.site.clone();
        match &ev.kind {
            EventKind::AgentState { agent, queue, state } => {
                let key = (site, agent.clone());
                let log = self.agents.entry(key.clone()).or_default();
                if !log.ids.insert(ev.id.clone()) {
                    self.duplicates += 1;
                    return false;
                }
                log.changes.push(StateChange { at: t, id: ev.id, queue: queue.clone(), state: state.clone() });
                self.dirty_agents.insert(key);
            }
            EventKind::QueueStart => {
                // A queue start later than a call's last event means Asterisk
                // (or app_queue) restarted under it: the call's end will never
                // be logged, so it is closed now rather than after the timeout.
                let by_agent = self.restarts.entry(site.clone()).or_default();
                if by_agent.entry(ev.id.agent_id.clone()).or_default().insert(t) {
                    let ended = self.open_calls.iter().filter(|k| k.0 == site).cloned();
                    self.dirty_calls.extend(ended.collect::<Vec<_>>());
                }
                let e = self.queue_start.entry(site).or_insert(t);
                *e = (*e).min(t);
                // Inferred logins start here: every agent of the site may change.
                let site = &ev.site;
                self.dirty_agents.extend(self.agents.keys().filter(|k| &k.0 == site).cloned());
                self.dirty_agents.extend(self.agent_queues.keys().filter(|k| &k.0 == site).cloned());
            }
            _ => {
                let key = (site, ev.call_id.clone());
                let st = match self.calls.entry(key.clone()) {
                    Entry::Occupied(o) => o.into_mut(),
                    Entry::Vacant(v) => {
                        self.call_sites.entry(key.1.clone()).or_default().push(key.0.clone());
                        v.insert(CallState::default())
                    }
                };
                if st.events.iter().any(|e| e.id == ev.id) {
                    self.duplicates += 1;
                    return false;
                }
                st.events.push(ev);
                self.dirty_calls.insert(key);
            }
        }
        self.events += 1;
        self.clock = Some(self.clock.map_or(t, |c| c.max(t)));
        self.first = Some(self.first.map_or(t, |c| c.min(t)));
        true
    }

    /// Events accepted so far (duplicates excluded).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Duplicates ignored so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The engine's clock: the latest KPI time seen.
    pub fn clock(&self) -> Option<UnixNanos> {
        self.clock
    }

    /// The earliest KPI time seen.
    pub fn first_time(&self) -> Option<UnixNanos> {
        self.first
    }

    /// Brings the counters up to date as of `now` (at least the latest event
    /// time). With `close_all`, every open call is closed: offline input has
    /// ended and nothing more will come.
    pub fn refresh(&mut self, now: Option<UnixNanos>, close_all: bool) {
        let now = match (now, self.clock) {
            (Some(n), Some(c)) => n.max(c),
            (n, c) => n.or(c).unwrap_or(0),
        };
        // Open calls whose timeout has passed, or all of them at end of input.
        let expired: Vec<CallKey> = self
            .open_calls
            .iter()
            .filter(|k| {
                close_all
                    || self
                        .calls
                        .get(*k)
                        .and_then(|c| c.record.as_ref())
                        .is_some_and(|r| now - r.last >= self.cfg.unknown_end_timeout)
            })
            .cloned()
            .collect();
        self.dirty_calls.extend(expired);

        self.sealed = close_all;
        let dirty: Vec<CallKey> = self.dirty_calls.drain().collect();
        for key in dirty {
            self.rebuild_call(&key, now, close_all);
        }
        let callers: Vec<CallerKey> = self.dirty_callers.drain().collect();
        for key in callers {
            self.rebuild_caller(&key);
        }
        // Logged-in spans that are still open grow with the clock, so every
        // agent is rebuilt when the clock moved; otherwise only changed ones.
        let mut agents: HashSet<AgentKey> = self.dirty_agents.drain().collect();
        if self.last_refresh != Some(now) {
            agents.extend(self.agents.keys().cloned());
            agents.extend(self.agent_queues.keys().cloned());
            self.last_refresh = Some(now);
        }
        for key in agents {
            self.rebuild_agent(&key, now);
        }
    }

    fn rebuild_call(&mut self, key: &CallKey, now: UnixNanos, close_all: bool) {
        let Some(st) = self.calls.get_mut(key) else { return };
        let last = st.events.iter().map(Event::kpi_time).max().unwrap_or(now);
        let restarted = self.restarts.get(&key.0).is_some_and(|by_agent| {
            st.events.iter().any(|e| {
                by_agent
                    .get(&e.id.agent_id)
                    .is_some_and(|r| r.range((Bound::Excluded(last), Bound::Unbounded)).next().is_some())
            })
        });
        let closed = close_all || restarted || now - last >= self.cfg.unknown_end_timeout;
        let rec = CallRecord::build(&mut st.events, closed);
        // Re-indexed only when the start moved (a late, earlier event).
        let old_first = st.record.as_ref().map(|r| r.first);
        if old_first != Some(rec.first) {
            if let Some(first) = old_first {
                self.calls_by_start.remove(&(first, key.0.clone(), key.1.clone()));
            }
            self.calls_by_start.insert((rec.first, key.0.clone(), key.1.clone()));
        }
        let contribution = rec.contribution();
        self.store.add(&st.contribution, -1);
        self.store.add(&contribution, 1);
        st.contribution = contribution;
        if rec.open {
            self.open_calls.insert(key.clone());
        } else {
            self.open_calls.remove(key);
        }

        // Queues agents were seen in, for inferred static membership.
        let old_q = st.record.as_ref().map(agent_queue_pairs).unwrap_or_default();
        let new_q = agent_queue_pairs(&rec);
        for (a, q) in old_q.difference(&new_q) {
            let k = (key.0.clone(), a.clone());
            if let Some(m) = self.agent_queues.get_mut(&k)
                && let Some(n) = m.get_mut(q)
            {
                *n -= 1;
                if *n == 0 {
                    m.remove(q);
                }
            }
            self.dirty_agents.insert(k);
        }
        for (a, q) in new_q.difference(&old_q) {
            let k = (key.0.clone(), a.clone());
            *self.agent_queues.entry(k.clone()).or_default().entry(q.clone()).or_insert(0) += 1;
            self.dirty_agents.insert(k);
        }

        // Caller index for FCR and cases.
        let contact = contact_of(&rec);
        let old = st.contact.take();
        if let Some((ck, start)) = &old {
            if let Some(log) = self.callers.get_mut(ck) {
                log.contacts.remove(&(*start, key.1.clone()));
            }
            self.dirty_callers.insert(ck.clone());
        }
        if let Some((ck, start, c)) = contact {
            self.callers.entry(ck.clone()).or_default().contacts.insert((start, key.1.clone()), c);
            self.dirty_callers.insert(ck.clone());
            st.contact = Some((ck, start));
        }
        st.record = Some(rec);
    }

    fn rebuild_caller(&mut self, key: &CallerKey) {
        let Some(log) = self.callers.get_mut(key) else { return };
        let mut set = CounterSet::default();
        let starts: Vec<UnixNanos> = log.contacts.keys().map(|(s, _)| *s).collect();
        for (i, ((start, _), c)) in log.contacts.iter().enumerate() {
            let fine = FineKey {
                bucket: bucket_of(*start),
                site: key.0.clone(),
                queue: c.queue.clone(),
                agent: c.agent.clone(),
                did: c.did.clone(),
                trunk: None,
            };
            if key.1.starts_with(WITHHELD) {
                set.cell(fine).withheld_contacts += 1;
                continue;
            }
            let gap = |a: UnixNanos, b: UnixNanos| u64::try_from((b - a).max(0) / NANOS_PER_MS).unwrap_or(0);
            let prev = i.checked_sub(1).map(|j| gap(starts[j], *start));
            let next = starts.get(i + 1).map(|n| gap(*start, *n));
            let ck = CaseKey {
                prev_gap_s: prev.map_or(CaseCell::NONE, |ms| ms.div_ceil(1000)),
                next_gap_s: next.map_or(CaseCell::NONE, |ms| ms.div_ceil(1000)),
                handled: c.handled,
                transferred: c.transferred,
                disposition: c.disposition,
            };
            let cell = set.cell(fine).cases.entry(ck).or_default();
            cell.contacts += 1;
            cell.treatment_ms += i64::try_from(c.treatment_ms).unwrap_or(i64::MAX);
            cell.duration_ms += (c.end - start).max(0) / NANOS_PER_MS;
            cell.prev_gap_ms += i64::try_from(prev.unwrap_or(0)).unwrap_or(i64::MAX);
        }
        self.store.add(&log.contribution, -1);
        self.store.add(&set, 1);
        log.contribution = set;
        if log.contacts.is_empty() {
            self.callers.remove(key);
        }
    }

    fn rebuild_agent(&mut self, key: &AgentKey, now: UnixNanos) {
        let queues: BTreeSet<String> =
            self.agent_queues.get(key).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        let from = self.queue_start.get(&key.0).copied().or(self.first).unwrap_or(now);
        let log = self.agents.entry(key.clone()).or_default();
        // Presence runs to the site's latest event (at most `now`): data, not
        // the wall clock, decides it, so offline and live agree.
        let until = self.site_clock.get(&key.0).copied().unwrap_or(now).min(now);
        let set = agent::contribution(&key.0, &key.1, &mut log.changes, &queues, from, until);
        self.store.add(&log.contribution, -1);
        self.store.add(&set, 1);
        log.contribution = set;
    }

    /// The counters, as of the last [`Engine::refresh`].
    pub fn counters(&self) -> &CounterSet {
        &self.store
    }

    /// The rebuilt record of a call, as of the last refresh.
    pub fn call(&self, site: &str, call_id: &str) -> Option<&CallRecord> {
        self.calls.get(&(site.to_owned(), call_id.to_owned())).and_then(|c| c.record.as_ref())
    }

    /// Every call record, as of the last refresh (unordered).
    pub fn calls(&self) -> impl Iterator<Item = &CallRecord> {
        self.calls.values().filter_map(|c| c.record.as_ref())
    }

    /// The events of a call, sorted by KPI time then event id, as of the
    /// last refresh (events filed since are appended unsorted).
    pub fn call_events(&self, site: &str, call_id: &str) -> Option<&[Event]> {
        self.calls.get(&(site.to_owned(), call_id.to_owned())).map(|c| c.events.as_slice())
    }

    /// The sites at which a PBX call id was seen, in order of first sight:
    /// two PBXs may well number calls alike.
    pub fn call_sites(&self, call_id: &str) -> &[String] {
        self.call_sites.get(call_id).map_or(&[], Vec::as_slice)
    }

    /// Calls whose first event is at or after `from` and before `to`, in
    /// ascending (first event time, site, call id) order, newest last;
    /// with `before`, only those that sort strictly before that
    /// (time, site, call id) key, for paging backwards. As of the last refresh.
    pub fn calls_started(
        &self,
        from: UnixNanos,
        to: UnixNanos,
        before: Option<(UnixNanos, &str, &str)>,
    ) -> impl DoubleEndedIterator<Item = &CallRecord> {
        use std::ops::Bound;
        let end_key = (to, String::new(), String::new());
        let upper = match before {
            Some((t, site, id)) if (t, site, id) < (to, "", "") => Bound::Excluded((t, site.to_owned(), id.to_owned())),
            _ => Bound::Excluded(end_key),
        };
        let lower = Bound::Included((from, String::new(), String::new()));
        // An empty or inverted range yields nothing rather than panicking.
        let valid = match (&lower, &upper) {
            (Bound::Included(l), Bound::Excluded(u)) => l < u,
            _ => true,
        };
        let range = if valid { Some(self.calls_by_start.range((lower, upper))) } else { None };
        range
            .into_iter()
            .flatten()
            .filter_map(|(_, site, id)| self.calls.get(&(site.clone(), id.clone())).and_then(|c| c.record.as_ref()))
    }

    /// Builds report rows from the counters (call [`Engine::refresh`] first).
    ///
    /// # Errors
    /// When the report's time zone is unknown.
    pub fn report(&self, params: &KpiParams, watermarks: &[Watermark]) -> Result<Report, String> {
        // "Now" is what the last refresh was told (the wall clock, live), and
        // at least the latest event time (offline).
        let now = self.clock.unwrap_or(0).max(self.last_refresh.unwrap_or(i64::MIN));
        report::build(&self.store, params, now, self.first.unwrap_or(now), self.sealed, watermarks)
    }

    /// Live view as of the last refresh: callers waiting per queue and what
    /// each agent is doing.
    pub fn live(&self) -> (Vec<crate::live::LiveQueue>, Vec<crate::live::LiveAgent>) {
        let now = self.clock.unwrap_or(0).max(self.last_refresh.unwrap_or(i64::MIN));
        let open = self.open_calls.iter().filter_map(|k| self.calls.get(k)).filter_map(|c| c.record.as_ref());
        let mut keys: BTreeSet<&AgentKey> = self.agents.keys().collect();
        keys.extend(self.agent_queues.keys());
        let agents = keys.into_iter().map(|k| {
            let changes = self.agents.get(k).map_or(&[][..], |l| l.changes.as_slice());
            let inferred = self.agent_queues.get(k).map(|m| m.keys().cloned().collect()).unwrap_or_default();
            (k.0.as_str(), k.1.as_str(), changes, inferred)
        });
        crate::live::build(open, agents, now)
    }

    /// Number of calls still open.
    pub fn open_calls(&self) -> usize {
        self.open_calls.len()
    }
}

/// Caller-key prefix of contacts whose number was withheld.
const WITHHELD: &str = "withheld:";

fn agent_queue_pairs(r: &CallRecord) -> BTreeSet<(String, String)> {
    let segs = r.segments.iter().filter_map(|s| s.queue.clone().map(|q| (s.agent.clone(), q)));
    let missed = r.missed.iter().filter_map(|m| m.queue.clone().map(|q| (m.agent.clone(), q)));
    segs.chain(missed).collect()
}

/// Normalises a calling number for repeat-caller matching: digits and a
/// leading `+` are kept, everything else dropped. Withheld or empty numbers
/// give `None` (they are excluded from FCR).
pub fn normalise_caller(raw: &str) -> Option<String> {
    let t = raw.trim();
    let lower = t.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "" | "anonymous" | "unknown" | "private" | "restricted" | "withheld" | "unavailable" | "<unknown>"
    ) {
        return None;
    }
    let mut out = String::with_capacity(t.len());
    for (i, ch) in t.chars().enumerate() {
        if ch.is_ascii_digit() || (ch == '+' && i == 0) {
            out.push(ch);
        }
    }
    if out.chars().filter(char::is_ascii_digit).count() < 2 { None } else { Some(out) }
}

fn contact_of(r: &CallRecord) -> Option<(CallerKey, UnixNanos, Contact)> {
    // Only inbound contacts: something entered a queue or reached an agent
    // without being an outbound dial.
    if !r.dials.is_empty() || (r.visits.is_empty() && r.segments.is_empty()) || r.open {
        return None;
    }
    let (queue, agent) = r.home();
    let number = r.caller.as_deref().and_then(normalise_caller);
    let contact = Contact {
        end: r.contact_end(),
        handled: r.handled(),
        transferred: r.transferred_between_agents(),
        disposition: r.disposition,
        treatment_ms: r.treatment_ms(),
        queue,
        agent,
        did: r.did.clone(),
    };
    // Withheld numbers get a caller key of their own per call, so they never
    // look like repeats, and are counted apart from cases.
    let number = number.unwrap_or_else(|| format!("{WITHHELD}{}", r.call_id));
    Some(((r.site.clone(), number), r.contact_start(), contact))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_numbers_normalise() {
        assert_eq!(normalise_caller("+44 20 7870-7214"), Some("+442078707214".into()));
        assert_eq!(normalise_caller("anonymous"), None);
        assert_eq!(normalise_caller(""), None);
        assert_eq!(normalise_caller("0339902473"), Some("0339902473".into()));
    }
}
