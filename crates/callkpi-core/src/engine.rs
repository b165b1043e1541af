//! The incremental KPI engine: events in, primitive counters kept current.
//!
//! The engine keeps the open window: the events of calls that may still
//! change, every agent's presence changes since its last folded boundary,
//! and the contacts of each caller inside the largest FCR window.
//! [`Engine::ingest`] only files an event and marks what it touches as
//! dirty; [`Engine::refresh`] rebuilds each dirty call, agent and caller
//! from scratch and swaps its old contribution to the counters for the new
//! one. So:
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
//!
//! # Sealing
//! With [`SealConfig`], what can no longer change leaves memory, so that the
//! engine's size follows the open window, never the history:
//! - A closed call is sealed once every source that delivered its events
//!   (and the engine's clock) is `horizon` past its last event. Its
//!   contribution moves from the live counters to the rollups, and the call
//!   (record and events) is handed to the host ([`Engine::take_sealed`]),
//!   which keeps it in its store. A late event for a sealed call is handled
//!   by the host giving the call's stored events back ([`Engine::unseal`]):
//!   the old contribution is taken out of the rollups and the call is
//!   rebuilt with the new event, so "sealed, then late" equals "never
//!   sealed".
//! - Agents' presence is folded at the quarter hour `horizon` behind their
//!   sources' data ([`crate::agent::fold`]): the time before it is final.
//! - A caller's contact is kept while it can still decide a repeat: until
//!   its site's data is `fcr_max_window + horizon` past it. Gaps between
//!   contacts longer than `fcr_max_window` count as "no previous/next
//!   contact" (they open a new case under any window a report may ask),
//!   so dropping old contacts changes nothing.
//!
//! Exact for late data that arrives within `horizon` of its source's own
//! data clock (an office that was offline delivers in its own order, so its
//! backlog is not late in this sense). Beyond that, and documented in
//! docs/kpis.md: a state change older than its agent's folded boundary
//! applies from the boundary; an (agent, queue) pair first seen after a
//! fold is inferred from the boundary, not from the queue start; and a
//! contact dropped from its caller's window keeps its case facts.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

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
    /// Sealing of what can no longer change; `None` keeps everything in
    /// memory (offline analysis of a file).
    pub seal: Option<SealConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { unknown_end_timeout: 4 * 3600 * NANOS_PER_SEC, seal: None }
    }
}

/// How the engine seals (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct SealConfig {
    /// How far every source's data must be past a closed call's last event
    /// (and past an agent's fold boundary) before it is final, ns.
    pub horizon: i64,
    /// The largest FCR window a report may ask for, ns: caller contacts are
    /// kept this long (plus the horizon), and longer gaps count as none.
    pub fcr_max_window: i64,
    /// Keep the sealed contributions in memory too, so that
    /// [`Engine::report`] covers them (tests, small offline runs). A host
    /// with its own rollup store leaves this off and reads
    /// [`Engine::take_sealed`].
    pub rollups_in_memory: bool,
}

impl Default for SealConfig {
    fn default() -> Self {
        Self {
            horizon: 4 * 3600 * NANOS_PER_SEC,
            fcr_max_window: 7 * 24 * 3600 * NANOS_PER_SEC,
            rollups_in_memory: false,
        }
    }
}

/// What a refresh sealed, for the host to store: the calls that left
/// memory and the change to the rollups (sealed contributions added,
/// unsealed ones subtracted).
#[derive(Debug, Default)]
pub struct Sealed {
    /// Calls sealed, with every event they were rebuilt from.
    pub calls: Vec<SealedCall>,
    /// Calls taken back into the open window by [`Engine::unseal`]: (site,
    /// call id, first event time of the record they were sealed as).
    pub unsealed: Vec<(String, String, UnixNanos)>,
    /// To add to the rollups.
    pub delta: CounterSet,
    /// Contacts of sealed calls that left their caller's window, with the
    /// neighbours their case cell was computed against: the host keeps
    /// them with the call and gives them back to [`Engine::unseal`].
    pub evicted: Vec<EvictedContact>,
}

/// Start of a contact's previous and next contact from the same caller,
/// as its case cell was computed.
pub type Neighbours = (Option<UnixNanos>, Option<UnixNanos>);

/// A contact that left its caller's window ([`Sealed::evicted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictedContact {
    /// Site of the call.
    pub site: String,
    /// PBX call id.
    pub call_id: String,
    /// Its neighbours when it left.
    pub neighbours: Neighbours,
}

/// One sealed call.
#[derive(Debug)]
pub struct SealedCall {
    /// Its final record (closed).
    pub record: CallRecord,
    /// The events it was rebuilt from, sorted.
    pub events: Vec<Event>,
}

type CallKey = (String, String);
type AgentKey = (String, String);
type CallerKey = (String, String);

#[derive(Debug, Default, Serialize, Deserialize)]
struct CallState {
    events: Vec<Event>,
    contribution: CounterSet,
    record: Option<CallRecord>,
    /// Caller index entry: (caller key, contact start).
    contact: Option<(CallerKey, UnixNanos)>,
    /// Unsealed after its contact left the caller's window: the contact's
    /// case cell is kept with the call, against the neighbours it had then
    /// (previous and next contact start), and the caller index is not
    /// touched. `None` inside: the neighbours are unknown, so the case
    /// facts stay as they were sealed.
    frozen: Option<Option<Neighbours>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AgentLog {
    changes: Vec<StateChange>,
    /// Ids of `changes`: a scan of `changes` per event made a long-lived
    /// agent's history quadratic (45 % of the aggregator's CPU at 3.4 M events).
    ids: HashSet<EventId>,
    contribution: CounterSet,
    /// Presence folded so far: `changes` are all at or after `base.at`.
    base: Option<agent::Base>,
    /// Collecting agents that delivered its changes (their data clocks
    /// decide when presence is final).
    sources: BTreeSet<String>,
    /// Highest seq folded per collecting agent: a change at or below it,
    /// before the boundary, was seen already.
    folded_seq: HashMap<String, u64>,
    /// The end of presence `contribution` was built to: unchanged, and
    /// nothing else changed, the agent need not be rebuilt.
    built_until: Option<UnixNanos>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Default, Serialize, Deserialize)]
struct CallerLog {
    /// Contacts by (start, call id).
    contacts: BTreeMap<(UnixNanos, String), Contact>,
    contribution: CounterSet,
    /// Start of the latest contact dropped from the window (the previous
    /// contact of the first one kept).
    evicted: Option<UnixNanos>,
}

/// The KPI engine. See the module documentation.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Engine {
    /// Not part of a snapshot: the host's settings apply on restore.
    #[serde(skip)]
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
    input_ended: bool,
    /// Clock of the last refresh.
    last_refresh: Option<UnixNanos>,
    /// Latest KPI time delivered by each collecting agent (its data clock).
    source_clock: HashMap<String, UnixNanos>,
    /// Sealed since the last [`Engine::take_sealed`] (a snapshot is taken
    /// right after one, so it is empty then).
    #[serde(skip)]
    pending: Sealed,
    /// Calls sealed since the last take, by key: a late event for one of
    /// them takes it back without the host.
    #[serde(skip)]
    pending_calls: HashMap<CallKey, SealedCall>,
    /// Sealed contributions, with [`SealConfig::rollups_in_memory`].
    rollups: CounterSet,
    /// State changes filed before their agent's folded boundary.
    late_presence: u64,
}

impl Engine {
    /// An empty engine.
    pub fn new(cfg: EngineConfig) -> Self {
        Self { cfg, ..Self::default() }
    }

    /// An engine restored from a serde snapshot of the open window, under
    /// the host's current settings. Take the snapshot right after
    /// [`Engine::take_sealed`]: what is sealed but not yet taken is not in it.
    pub fn restored(mut self, cfg: EngineConfig) -> Self {
        self.cfg = cfg;
        self
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
        match self.source_clock.get_mut(&ev.id.agent_id) {
            Some(c) => *c = (*c).max(t),
            None => {
                self.source_clock.insert(ev.id.agent_id.clone(), t);
            }
        }
        let site = ev.site.clone();
        match &ev.kind {
            EventKind::AgentState { agent, queue, state } => {
                let key = (site, agent.clone());
                let log = self.agents.entry(key.clone()).or_default();
                let refolded = log.base.as_ref().is_some_and(|b| t < b.at)
                    && log.folded_seq.get(&ev.id.agent_id).is_some_and(|m| ev.id.seq <= *m);
                // A change delivered again after it was folded is known by its
                // seq: a collector's sequence only grows, so nothing below the
                // highest folded one is new.
                if refolded || !log.ids.insert(ev.id.clone()) {
                    self.duplicates += 1;
                    return false;
                }
                // Before the folded boundary, the change can only apply from it.
                let at = match &log.base {
                    Some(b) if t < b.at => {
                        self.late_presence += 1;
                        b.at
                    }
                    _ => t,
                };
                if !log.sources.contains(&ev.id.agent_id) {
                    log.sources.insert(ev.id.agent_id.clone());
                }
                log.changes.push(StateChange { at, id: ev.id, queue: queue.clone(), state: state.clone() });
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
                if let Some(sealed) = self.pending_calls.remove(&key) {
                    // Sealed since the host last took what was sealed: back it comes.
                    let pos = self.pending.evicted.iter().position(|c| c.site == key.0 && c.call_id == key.1);
                    let evicted = pos.map(|i| self.pending.evicted.swap_remove(i).neighbours);
                    self.unseal(sealed.events, evicted);
                }
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
        if self.first.is_some_and(|f| t < f) {
            // Inferred logins of sites without a queue start begin at the
            // first event: an earlier one moves them all.
            self.dirty_agents.extend(self.agents.keys().cloned());
            self.dirty_agents.extend(self.agent_queues.keys().cloned());
        }
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

        self.input_ended = close_all;
        let dirty: Vec<CallKey> = self.dirty_calls.drain().collect();
        for key in dirty {
            self.rebuild_call(&key, now, close_all);
        }
        let callers: Vec<CallerKey> = self.dirty_callers.drain().collect();
        for key in callers {
            self.rebuild_caller(&key);
        }
        // Logged-in spans that are still open grow with their site's clock,
        // so an agent is rebuilt when that moved; otherwise only changed ones.
        let mut agents: HashSet<AgentKey> = self.dirty_agents.drain().collect();
        if self.last_refresh != Some(now) {
            let moved = |k: &AgentKey, log: Option<&AgentLog>| {
                let until = self.site_clock.get(&k.0).copied().unwrap_or(now).min(now);
                log.is_none_or(|l| l.built_until != Some(until))
            };
            agents.extend(self.agents.iter().filter(|(k, l)| moved(k, Some(l))).map(|(k, _)| k.clone()));
            agents.extend(self.agent_queues.keys().filter(|k| moved(k, self.agents.get(*k))).cloned());
            self.last_refresh = Some(now);
        }
        for key in agents {
            self.rebuild_agent(&key, now);
        }
        if let Some(seal) = self.cfg.seal.clone() {
            self.seal_calls(now, &seal);
            self.evict_contacts(now, &seal);
            self.fold_agents(now, &seal);
        }
    }

    /// Moves closed calls whose sources are all `horizon` past them out of memory.
    fn seal_calls(&mut self, now: UnixNanos, cfg: &SealConfig) {
        let h = cfg.horizon;
        let clocks = &self.source_clock;
        let ready: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(_, st)| {
                st.record.as_ref().is_some_and(|r| {
                    !r.open
                        && now.saturating_sub(r.last) >= h
                        && st
                            .events
                            .iter()
                            .all(|e| clocks.get(&e.id.agent_id).is_some_and(|c| c.saturating_sub(r.last) >= h))
                })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in ready {
            let Some(mut st) = self.calls.remove(&key) else { continue };
            let Some(record) = st.record.take() else { continue };
            self.store.add(&st.contribution, -1);
            self.add_sealed(&st.contribution, 1);
            self.calls_by_start.remove(&(record.first, key.0.clone(), key.1.clone()));
            if let Some(sites) = self.call_sites.get_mut(&key.1) {
                sites.retain(|s| s != &key.0);
                if sites.is_empty() {
                    self.call_sites.remove(&key.1);
                }
            }
            self.open_calls.remove(&key);
            // Its contact stays in the caller's window; the call itself is the host's now.
            self.pending_calls.insert(key, SealedCall { record, events: std::mem::take(&mut st.events) });
        }
    }

    /// Drops contacts that can no longer decide a repeat: their cells are final.
    fn evict_contacts(&mut self, now: UnixNanos, cfg: &SealConfig) {
        let max_window = Some(cfg.fcr_max_window);
        // A call still open joins its caller's contacts when it closes: the
        // contacts it may follow stay until then.
        let mut open_start: HashMap<&str, UnixNanos> = HashMap::new();
        for key in &self.open_calls {
            if let Some(r) = self.calls.get(key).and_then(|c| c.record.as_ref()) {
                let e = open_start.entry(key.0.as_str()).or_insert(i64::MAX);
                *e = (*e).min(r.contact_start());
            }
        }
        let mut emptied = Vec::new();
        let mut sealed = CounterSet::default();
        for (ck, log) in &mut self.callers {
            let clock = self.site_clock.get(&ck.0).copied().unwrap_or(now).min(now);
            let cutoff = clock
                .saturating_sub(cfg.horizon)
                .min(open_start.get(ck.0.as_str()).copied().unwrap_or(i64::MAX))
                .saturating_sub(cfg.fcr_max_window);
            loop {
                let mut it = log.contacts.iter();
                let Some(((start, call_id), c)) = it.next() else { break };
                // A contact whose call is still in memory may yet move.
                if *start >= cutoff || self.calls.contains_key(&(ck.0.clone(), call_id.clone())) {
                    break;
                }
                let next = it.next().map(|((n, _), _)| *n);
                let cell = contact_cell(ck, *start, c, log.evicted, next, max_window);
                self.pending.evicted.push(EvictedContact {
                    site: ck.0.clone(),
                    call_id: call_id.clone(),
                    neighbours: (log.evicted, next),
                });
                log.contribution.add(&cell, -1);
                self.store.add(&cell, -1);
                sealed.add(&cell, 1);
                let start = *start;
                let call_id = call_id.clone();
                log.evicted = Some(start);
                log.contacts.remove(&(start, call_id));
            }
            // Any contact still to come starts after cutoff + window: too
            // far from the dropped ones to be their repeat.
            if log.contacts.is_empty() && log.evicted.is_none_or(|e| e < cutoff) {
                emptied.push(ck.clone());
            }
        }
        for ck in emptied {
            self.callers.remove(&ck);
        }
        self.add_sealed(&sealed, 1);
    }

    /// Folds each agent's presence at the quarter hour `horizon` behind its sources.
    fn fold_agents(&mut self, now: UnixNanos, cfg: &SealConfig) {
        let keys: Vec<AgentKey> = self.agents.keys().cloned().collect();
        for key in keys {
            let Some(log) = self.agents.get(&key) else { continue };
            let site_clock = self.site_clock.get(&key.0).copied().unwrap_or(now).min(now);
            let clock = log.sources.iter().filter_map(|a| self.source_clock.get(a).copied()).fold(site_clock, i64::min);
            let at = bucket_of(clock.saturating_sub(cfg.horizon));
            if log.base.as_ref().is_some_and(|b| b.at >= at) {
                continue;
            }
            let queues: BTreeSet<String> =
                self.agent_queues.get(&key).map(|m| m.keys().cloned().collect()).unwrap_or_default();
            let from = self.queue_start.get(&key.0).copied().or(self.first).unwrap_or(now);
            if log.base.is_none() && log.changes.iter().all(|c| c.at >= at) && (queues.is_empty() || from >= at) {
                // Nothing before the boundary yet.
                continue;
            }
            let Some(log) = self.agents.get_mut(&key) else { continue };
            let before = log.changes.len();
            let (pre, base) = agent::fold(&key.0, &key.1, log.base.as_ref(), &mut log.changes, &queues, from, at);
            // The folded changes' ids are no longer needed for de-duplication:
            // a re-delivered one is recognised by its seq (see `ingest`).
            if log.changes.len() < before {
                let kept: HashSet<&EventId> = log.changes.iter().map(|c| &c.id).collect();
                for id in log.ids.iter().filter(|id| !kept.contains(id)) {
                    let m = log.folded_seq.entry(id.agent_id.clone()).or_insert(0);
                    *m = (*m).max(id.seq);
                }
                log.ids.retain(|id| kept.contains(id));
            }
            log.base = Some(base);
            log.contribution.add(&pre, -1);
            self.store.add(&pre, -1);
            self.add_sealed(&pre, 1);
            self.rebuild_agent(&key, now);
        }
    }

    fn add_sealed(&mut self, set: &CounterSet, sign: i64) {
        if set.0.is_empty() {
            return;
        }
        self.pending.delta.add(set, sign);
        if self.cfg.seal.as_ref().is_some_and(|s| s.rollups_in_memory) {
            self.rollups.add(set, sign);
        }
    }

    /// What was sealed (and unsealed) since the last call: the host stores
    /// the calls and adds the delta to its rollups.
    pub fn take_sealed(&mut self) -> Sealed {
        let mut s = std::mem::take(&mut self.pending);
        s.calls = self.pending_calls.drain().map(|(_, c)| c).collect();
        s.calls.sort_by(|a, b| {
            (a.record.first, &a.record.site, &a.record.call_id).cmp(&(
                b.record.first,
                &b.record.site,
                &b.record.call_id,
            ))
        });
        s
    }

    /// Contributions sealed (or unsealed) since the last
    /// [`Engine::take_sealed`]: a host that reads its rollups from a store
    /// adds these until it has written them.
    pub fn pending_delta(&self) -> &CounterSet {
        &self.pending.delta
    }

    /// Sealed contributions kept in memory ([`SealConfig::rollups_in_memory`]).
    pub fn rollups(&self) -> &CounterSet {
        &self.rollups
    }

    /// Calls sealed and not yet taken by [`Engine::take_sealed`].
    pub fn pending_calls(&self) -> usize {
        self.pending_calls.len()
    }

    /// Whether the engine holds a call: in the open window, or sealed but
    /// not yet taken by [`Engine::take_sealed`] (a late event for it needs
    /// nothing from the host).
    pub fn has_call(&self, site: &str, call_id: &str) -> bool {
        let key = (site.to_owned(), call_id.to_owned());
        self.calls.contains_key(&key) || self.pending_calls.contains_key(&key)
    }

    /// Takes a sealed call back into the open window, from every event it
    /// was sealed with, before a late event of it is filed: its sealed
    /// contribution leaves the rollups (see [`Sealed::delta`]) and the
    /// next refresh rebuilds it. `evicted` gives back what
    /// [`Sealed::evicted`] said of its contact, if it left its caller's
    /// window. Returns false when `events` is empty or the call is already
    /// open.
    pub fn unseal(&mut self, mut events: Vec<Event>, evicted: Option<Neighbours>) -> bool {
        let Some(first) = events.first() else { return false };
        let key = (first.site.clone(), first.call_id.clone());
        if self.calls.contains_key(&key) {
            return false;
        }
        // Sealed calls were closed: rebuilt closed, they give what was sealed.
        let rec = CallRecord::build(&mut events, true);
        let mut contribution = rec.contribution();
        let contact = contact_of(&rec);
        let in_window = contact.as_ref().is_some_and(|(ck, start, _)| {
            self.callers.get(ck).is_some_and(|l| l.contacts.contains_key(&(*start, key.1.clone())))
        });
        let frozen = if in_window || contact.is_none() {
            None
        } else {
            // Its case cell is in the rollups: it leaves with the call.
            if let (Some(n), Some((ck, start, c))) = (evicted, contact.as_ref()) {
                let max_window = self.cfg.seal.as_ref().map(|s| s.fcr_max_window);
                contribution.add(&contact_cell(ck, *start, c, n.0, n.1, max_window), 1);
            }
            Some(evicted)
        };
        self.add_sealed(&contribution, -1);
        self.store.add(&contribution, 1);
        self.calls_by_start.insert((rec.first, key.0.clone(), key.1.clone()));
        self.call_sites.entry(key.1.clone()).or_default().push(key.0.clone());
        self.pending.unsealed.push((key.0.clone(), key.1.clone(), rec.first));
        let st = CallState {
            events,
            contribution,
            record: Some(rec),
            contact: if frozen.is_some() { None } else { contact.map(|(ck, start, _)| (ck, start)) },
            frozen,
        };
        self.calls.insert(key.clone(), st);
        self.dirty_calls.insert(key);
        true
    }

    /// Size of the open window, for metrics and tests.
    pub fn window(&self) -> Window {
        Window {
            calls: self.calls.len(),
            events: self.calls.values().map(|c| c.events.len()).sum(),
            agents: self.agents.len(),
            agent_changes: self.agents.values().map(|a| a.changes.len()).sum(),
            callers: self.callers.len(),
            contacts: self.callers.values().map(|c| c.contacts.len()).sum(),
            cells: self.store.0.len(),
            late_presence: self.late_presence,
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

        // Caller index for FCR and cases; a frozen contact's cell goes with the call.
        if let Some(frozen) = st.frozen {
            if let (Some(n), Some((ck, start, c))) = (frozen, contact_of(&rec)) {
                let max_window = self.cfg.seal.as_ref().map(|s| s.fcr_max_window);
                let cell = contact_cell(&ck, start, &c, n.0, n.1, max_window);
                self.store.add(&cell, 1);
                st.contribution.add(&cell, 1);
            }
            st.record = Some(rec);
            return;
        }
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
        let max_window = self.cfg.seal.as_ref().map(|s| s.fcr_max_window);
        let Some(log) = self.callers.get_mut(key) else { return };
        let mut set = CounterSet::default();
        let starts: Vec<UnixNanos> = log.contacts.keys().map(|(s, _)| *s).collect();
        for (i, ((start, _), c)) in log.contacts.iter().enumerate() {
            let prev = i.checked_sub(1).map(|j| starts[j]).or(log.evicted);
            let next = starts.get(i + 1).copied();
            set.add(&contact_cell(key, *start, c, prev, next, max_window), 1);
        }
        self.store.add(&log.contribution, -1);
        self.store.add(&set, 1);
        log.contribution = set;
        // An emptied log still holds the start of its last dropped contact
        // (the previous contact of whatever comes next): eviction removes it.
        if log.contacts.is_empty() && log.evicted.is_none() {
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
        let set = agent::contribution(&key.0, &key.1, log.base.as_ref(), &mut log.changes, &queues, from, until);
        log.built_until = Some(until);
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
        let sets: Vec<&CounterSet> = if self.cfg.seal.as_ref().is_some_and(|s| s.rollups_in_memory) {
            vec![&self.rollups, &self.store]
        } else {
            vec![&self.store]
        };
        self.report_with(&sets, params, watermarks)
    }

    /// Builds report rows from `sets` (rollups the host read for the
    /// report's range, and [`Engine::counters`]), with this engine's clock.
    ///
    /// # Errors
    /// When the report's time zone is unknown, or its FCR window is longer
    /// than the engine keeps callers for.
    pub fn report_with(
        &self,
        sets: &[&CounterSet],
        params: &KpiParams,
        watermarks: &[Watermark],
    ) -> Result<Report, String> {
        self.report_view().report(sets, params, watermarks)
    }

    /// What reports need of the engine besides counters (its clock, the
    /// start of its data, whether input ended, the largest FCR window), as
    /// of the last refresh: a host publishes it with a copy of the
    /// counters, and answers reports without holding the engine.
    pub fn report_view(&self) -> ReportView {
        // "Now" is what the last refresh was told (the wall clock, live), and
        // at least the latest event time (offline).
        let now = self.clock.unwrap_or(0).max(self.last_refresh.unwrap_or(i64::MIN));
        ReportView {
            now,
            first: self.first.unwrap_or(now),
            input_ended: self.input_ended,
            fcr_max_window_s: self
                .cfg
                .seal
                .as_ref()
                .map(|s| u64::try_from(s.fcr_max_window / NANOS_PER_SEC).unwrap_or(0)),
        }
    }

    /// Live view as of the last refresh: callers waiting per queue and what
    /// each agent is doing.
    pub fn live(&self) -> (Vec<crate::live::LiveQueue>, Vec<crate::live::LiveAgent>) {
        let now = self.clock.unwrap_or(0).max(self.last_refresh.unwrap_or(i64::MIN));
        let open = self.open_calls.iter().filter_map(|k| self.calls.get(k)).filter_map(|c| c.record.as_ref());
        let mut keys: BTreeSet<&AgentKey> = self.agents.keys().collect();
        keys.extend(self.agent_queues.keys());
        let agents = keys.into_iter().map(|k| {
            let log = self.agents.get(k);
            let changes = log.map_or(&[][..], |l| l.changes.as_slice());
            let base = log.and_then(|l| l.base.as_ref());
            let inferred = self.agent_queues.get(k).map(|m| m.keys().cloned().collect()).unwrap_or_default();
            (k.0.as_str(), k.1.as_str(), base, changes, inferred)
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

/// The engine's clock and bounds as of a refresh ([`Engine::report_view`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportView {
    /// "Now" of the refresh.
    pub now: UnixNanos,
    /// Earliest KPI time seen (a report without `from` starts there).
    pub first: UnixNanos,
    /// Offline input has ended (nothing is in progress).
    pub input_ended: bool,
    /// Largest FCR window a report may ask for, seconds, when sealing.
    pub fcr_max_window_s: Option<u64>,
}

impl ReportView {
    /// Report rows from `sets` (see [`Engine::report_with`]).
    ///
    /// # Errors
    /// When the report's time zone is unknown, or its FCR window is longer
    /// than the engine keeps callers for.
    pub fn report(&self, sets: &[&CounterSet], params: &KpiParams, watermarks: &[Watermark]) -> Result<Report, String> {
        if let Some(max_s) = self.fcr_max_window_s
            && params.fcr_window_s > max_s
        {
            return Err(format!(
                "FCR window of {} s is longer than the {} s this engine keeps callers for (fcr_max_window)",
                params.fcr_window_s, max_s
            ));
        }
        report::build(sets, params, self.now, self.first, self.input_ended, watermarks)
    }
}

/// Size of the engine's open window ([`Engine::window`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Calls in memory.
    pub calls: usize,
    /// Their events.
    pub events: usize,
    /// Agents with a presence log.
    pub agents: usize,
    /// Presence changes since their agents' folded boundaries.
    pub agent_changes: usize,
    /// Callers with contacts in the window.
    pub callers: usize,
    /// Their contacts.
    pub contacts: usize,
    /// Live counter cells (the open window's contribution).
    pub cells: usize,
    /// State changes filed before their agent's folded boundary (applied from it).
    pub late_presence: u64,
}

/// One contact's case cell: its gaps to the caller's previous and next
/// contacts decide, for the window a report asks, whether it opens or
/// closes a case. Gaps longer than `max_window` count as none: no report
/// may ask for a longer window, so they open and close cases alike, and
/// contacts that far apart need not be kept together.
fn contact_cell(
    key: &CallerKey,
    start: UnixNanos,
    c: &Contact,
    prev: Option<UnixNanos>,
    next: Option<UnixNanos>,
    max_window: Option<i64>,
) -> CounterSet {
    let mut set = CounterSet::default();
    let fine = FineKey {
        bucket: bucket_of(start),
        site: key.0.clone(),
        queue: c.queue.clone(),
        agent: c.agent.clone(),
        did: c.did.clone(),
        trunk: None,
    };
    if key.1.starts_with(WITHHELD) {
        set.cell(fine).withheld_contacts += 1;
        return set;
    }
    let gap = |a: UnixNanos, b: UnixNanos| {
        let ns = (b - a).max(0);
        if max_window.is_some_and(|w| ns > w) {
            return None;
        }
        Some(u64::try_from(ns / NANOS_PER_MS).unwrap_or(0))
    };
    let prev = prev.and_then(|p| gap(p, start));
    let next = next.and_then(|n| gap(start, n));
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
    set
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
