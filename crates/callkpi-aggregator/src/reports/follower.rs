//! The KPI engine following the store.
//!
//! The engine holds the open window only (see `callkpi_core::engine`,
//! "Sealing"). What it seals goes to the store's KPI tree at each
//! checkpoint ([`KpiStore::checkpoint`]): rollups, the sealed-call index
//! and a snapshot of the open window with the follower's position, in one
//! atomic batch. A restart loads that snapshot and applies what was stored
//! after it; it never replays the history. A late event for a sealed call
//! reopens it from its stored events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use callkpi_core::counters::CounterSet;
use callkpi_core::engine::{ReportView, SealConfig};
use callkpi_core::event::{Event, EventKind};
use callkpi_core::live::{LiveAgent, LiveQueue};
use callkpi_core::{Engine, EngineConfig, KpiParams, Watermark};
use callkpi_proto::pb;
use tokio_util::sync::CancellationToken;

use crate::kpi_store::{KpiStore, Snapshot, SnapshotRef};
use crate::store::{AgentRecord, Store, StoreError};

/// Events read from the store per call while catching up.
const CATCH_UP_CHUNK: usize = 10_000;

/// Sealed calls that make a checkpoint due whatever its interval: what a
/// checkpoint writes in one batch, and what waits for it in memory, stays
/// bounded while a backlog is applied.
const CHECKPOINT_CALLS: usize = 2_000;

/// How the follower seals and checkpoints (`[kpi]` in aggregator.toml).
#[derive(Debug, Clone, PartialEq)]
pub struct FollowerConfig {
    /// Sealing; `None` keeps every call in memory (tests comparing the two).
    pub seal: Option<SealConfig>,
    /// Unknown-end timeout of calls, ns.
    pub unknown_end_timeout: i64,
    /// Longest time between checkpoints.
    pub checkpoint_every: Duration,
}

impl Default for FollowerConfig {
    fn default() -> Self {
        Self {
            seal: Some(SealConfig::default()),
            unknown_end_timeout: EngineConfig::default().unknown_end_timeout,
            checkpoint_every: Duration::from_secs(10),
        }
    }
}

impl FollowerConfig {
    fn engine(&self) -> EngineConfig {
        EngineConfig { unknown_end_timeout: self.unknown_end_timeout, seal: self.seal.clone() }
    }
}

/// The KPI engine, kept current with the store.
pub struct KpiFollower {
    pub(super) store: Store,
    pub(super) kpi: KpiStore,
    cfg: FollowerConfig,
    pub(super) state: Mutex<FollowerState>,
    /// What reports read, refreshed once per catch-up or tick: they never
    /// wait for the engine.
    published: RwLock<Arc<Published>>,
}

/// An immutable view of the engine after a refresh.
pub(super) struct Published {
    /// Rollup generation it goes with ([`KpiStore::generation`]).
    generation: u64,
    view: ReportView,
    /// Sealed but not yet written, plus the open window.
    cells: CounterSet,
    live: (Vec<LiveQueue>, Vec<LiveAgent>),
    last_kpi_time: HashMap<String, i64>,
}

/// Why a report failed, with the gRPC status it maps to.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The store cannot be read: UNAVAILABLE.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The query cannot be answered as asked (zone, FCR window): INVALID_ARGUMENT.
    #[error("{0}")]
    Query(String),
}

impl From<ReportError> for tonic::Status {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Store(_) => tonic::Status::unavailable(e.to_string()),
            ReportError::Query(m) => tonic::Status::invalid_argument(m),
        }
    }
}

pub(super) struct FollowerState {
    pub(super) engine: Engine,
    /// Highest seq applied per agent.
    applied: HashMap<String, u64>,
    /// KPI time of the highest-seq event applied per agent: how far a
    /// behind agent has delivered, in the time rows are cut in.
    last_kpi_time: HashMap<String, i64>,
    /// Stored events that do not convert to the core model.
    undecodable: u64,
    /// When the last checkpoint was written.
    checkpointed: Instant,
    /// Totals since start, for metrics and logs.
    pub(super) sealed_total: u64,
    pub(super) reopened_total: u64,
    /// Late events for sealed calls whose raw events retention removed.
    pub(super) late_beyond_retention: u64,
    /// `applied` as of the last checkpoint: what a restart will not replay,
    /// so the only raw events retention may delete.
    durable_applied: HashMap<String, u64>,
}

impl std::fmt::Debug for KpiFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KpiFollower").finish_non_exhaustive()
    }
}

/// Whether an event belongs to a call (the others are agent and queue events).
fn is_call_event(ev: &Event) -> bool {
    !matches!(ev.kind, EventKind::AgentState { .. } | EventKind::QueueStart)
}

impl KpiFollower {
    /// A follower with the default settings; call [`KpiFollower::catch_up`] or run it.
    pub fn new(store: Store) -> Arc<Self> {
        Self::with_config(store, FollowerConfig::default())
    }

    /// A follower that resumes from the store's last KPI checkpoint, if
    /// any (else from an empty engine, applying every stored event).
    pub fn with_config(store: Store, cfg: FollowerConfig) -> Arc<Self> {
        let kpi = KpiStore::new(store.clone());
        let started = Instant::now();
        let snapshot = match kpi.load(cfg.engine()) {
            Ok(s) => s,
            Err(error) => {
                tracing::error!(%error, "KPI checkpoint unreadable; rebuilding from the raw events.");
                None
            }
        };
        let state = match snapshot {
            Some(s) => {
                let w = s.engine.window();
                tracing::info!(
                    calls = w.calls,
                    agents = w.agents,
                    contacts = w.contacts,
                    ms = started.elapsed().as_millis() as u64,
                    "KPI engine resumed from its checkpoint."
                );
                FollowerState::from_snapshot(s)
            }
            None => {
                // Rollups without a snapshot would be counted twice by a
                // replay: start them again from the raw events.
                if !kpi.is_empty().unwrap_or(true)
                    && let Err(error) = kpi.clear()
                {
                    tracing::error!(%error, "Cannot clear the KPI rollups.");
                }
                FollowerState::from_snapshot(Snapshot::empty(Engine::new(cfg.engine())))
            }
        };
        let published = RwLock::new(Arc::new(Published::of(&state, kpi.generation())));
        Arc::new(Self { store, kpi, cfg, state: Mutex::new(state), published })
    }

    /// Applies every stored event not yet applied. Blocking (sled reads).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn catch_up(&self) -> Result<u64, StoreError> {
        self.catch_up_until(&CancellationToken::new())
    }

    /// [`KpiFollower::catch_up`], stopping between chunks once `stop` is
    /// cancelled (a follower far behind must not hold up a shutdown).
    fn catch_up_until(&self, stop: &CancellationToken) -> Result<u64, StoreError> {
        let mut applied_now = 0;
        for agent in self.store.agents()? {
            while !stop.is_cancelled() {
                let after = self.applied(&agent.agent_id);
                let chunk = self.store.events_after(&agent.agent_id, after, CATCH_UP_CHUNK)?;
                let Some(&(last, _)) = chunk.last() else { break };
                let mut st = self.lock();
                // Another caller may have applied this chunk meanwhile.
                let done = st.applied.get(&agent.agent_id).copied().unwrap_or(0);
                let mut applied_here = 0;
                for (seq, wire) in chunk {
                    if seq <= done {
                        continue;
                    }
                    match Event::try_from(wire) {
                        Ok(ev) => {
                            st.last_kpi_time.insert(agent.agent_id.clone(), ev.kpi_time());
                            if self.file(&mut st, ev)? {
                                applied_here += 1;
                            }
                        }
                        Err(error) => {
                            st.undecodable += 1;
                            tracing::warn!(agent = %agent.agent_id, %error, "Stored event does not convert; skipped in KPIs.");
                        }
                    }
                }
                let e = st.applied.entry(agent.agent_id.clone()).or_insert(0);
                *e = (*e).max(last);
                // Seal as the chunk moves the data clocks, and write what was
                // sealed before it piles up: a backlog of a day (or a restart
                // after an upgrade) must not hold every call it covers.
                // Published before the lock is let go: a reader that waited
                // for this chunk never sees the view from before it.
                let now = crate::now_ns();
                if applied_here > 0 {
                    self.publish(&mut st, now);
                    applied_now += applied_here;
                }
                let full = st.engine.pending_calls() >= CHECKPOINT_CALLS;
                self.checkpoint_if_due(&mut st, now, full)?;
            }
        }
        Ok(applied_now)
    }

    /// Refreshes the engine and publishes what reports read.
    fn publish(&self, st: &mut FollowerState, now_ns: i64) {
        st.engine.refresh(Some(now_ns), false);
        let p = Arc::new(Published::of(st, self.kpi.generation()));
        *self.published.write().unwrap_or_else(std::sync::PoisonError::into_inner) = p;
    }

    fn published(&self) -> Arc<Published> {
        Arc::clone(&self.published.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Files one event; a late one for a sealed call first reopens the call
    /// from its stored events. False when it was already counted.
    fn file(&self, st: &mut FollowerState, ev: Event) -> Result<bool, StoreError> {
        if self.cfg.seal.is_some()
            && is_call_event(&ev)
            && !st.engine.has_call(&ev.site, &ev.call_id)
            && let Some((_, entry)) = self.kpi.sealed_call(&ev.site, &ev.call_id)?
        {
            if entry.events.iter().any(|(a, s)| *a == ev.id.agent_id && *s == ev.id.seq) {
                return Ok(false);
            }
            let events = self.kpi.events_of(&entry)?;
            if events.len() < entry.events.len() {
                // Its raw events are gone: it cannot be rebuilt, so its sealed
                // contribution stands and this event is not applied.
                st.late_beyond_retention += 1;
                tracing::warn!(site = %ev.site, call = %ev.call_id, "Late event for a call whose raw events retention removed; not applied.");
                return Ok(false);
            }
            tracing::debug!(site = %ev.site, call = %ev.call_id, events = events.len(), "Late event reopens a sealed call.");
            st.engine.unseal(events, entry.evicted);
        }
        Ok(st.engine.ingest(ev))
    }

    /// Refreshes, seals and writes a checkpoint when one is due (or `force`).
    fn checkpoint_if_due(&self, st: &mut FollowerState, now_ns: i64, force: bool) -> Result<(), StoreError> {
        if self.cfg.seal.is_none() || !(force || st.checkpointed.elapsed() >= self.cfg.checkpoint_every) {
            return Ok(());
        }
        st.engine.refresh(Some(now_ns), false);
        let sealed = st.engine.take_sealed();
        let snapshot = SnapshotRef::new(&st.engine, &st.applied, &st.last_kpi_time, st.undecodable);
        let written = self.kpi.checkpoint(sealed, &snapshot)?;
        st.checkpointed = Instant::now();
        st.durable_applied = st.applied.clone();
        // Readers must not add the written cells twice: publish at once.
        self.publish(st, now_ns);
        st.sealed_total += written.calls_sealed as u64;
        st.reopened_total += written.calls_reopened as u64;
        if written.calls_sealed > 0 || written.calls_reopened > 0 {
            tracing::debug!(
                sealed = written.calls_sealed,
                reopened = written.calls_reopened,
                cells = written.cells,
                "KPI checkpoint written."
            );
        }
        Ok(())
    }

    /// Writes a checkpoint now (shutdown, tests). Blocking.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let mut st = self.lock();
        self.checkpoint_if_due(&mut st, crate::now_ns(), true)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, FollowerState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn applied(&self, agent: &str) -> u64 {
        self.lock().applied.get(agent).copied().unwrap_or(0)
    }

    /// Follows the store until `shutdown`: catches up at start and after
    /// every ingest notification, and checkpoints at least every
    /// `checkpoint_every`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut rx = self.store.subscribe();
        let mut tick = tokio::time::interval(self.cfg.checkpoint_every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let me = Arc::clone(&self);
            let stop = shutdown.clone();
            match tokio::task::spawn_blocking(move || me.catch_up_until(&stop)).await {
                Ok(Ok(n)) if n > 0 => tracing::debug!(events = n, "KPI engine caught up with the store."),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::error!(%error, "KPI engine cannot read the store."),
                Err(error) => tracing::error!(%error, "KPI catch-up task failed."),
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    let me = Arc::clone(&self);
                    match tokio::task::spawn_blocking(move || me.checkpoint()).await {
                        Ok(Ok(())) => tracing::info!("KPI checkpoint written at shutdown."),
                        Ok(Err(error)) => tracing::error!(%error, "KPI checkpoint at shutdown failed."),
                        Err(error) => tracing::error!(%error, "KPI checkpoint task failed."),
                    }
                    return;
                }
                _ = tick.tick() => {
                    let me = Arc::clone(&self);
                    let due = tokio::task::spawn_blocking(move || {
                        let mut st = me.lock();
                        let now = crate::now_ns();
                        me.publish(&mut st, now);
                        me.checkpoint_if_due(&mut st, now, false)
                    });
                    if let Ok(Err(error)) = due.await {
                        tracing::error!(%error, "KPI checkpoint failed.");
                    }
                }
                r = rx.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                        return;
                    }
                    // Lagged or received: either way, catch up from the store,
                    // once for every notification already queued.
                    use tokio::sync::broadcast::error::TryRecvError;
                    while !matches!(rx.try_recv(), Err(TryRecvError::Empty | TryRecvError::Closed)) {}
                }
            }
        }
    }

    /// A report over the last published view (at most a tick old, and
    /// refreshed first when the store holds events not yet applied): the
    /// rollups of its range, what was sealed since the last checkpoint,
    /// and the open window. Blocking; it never waits for the engine.
    ///
    /// # Errors
    /// UNAVAILABLE-kind when the store cannot be read; a query error when
    /// the zone is unknown or the FCR window too long.
    pub fn report(&self, params: &KpiParams, _now_ns: i64) -> Result<callkpi_core::Report, ReportError> {
        self.catch_up()?;
        let agents = self.store.agents()?;
        let from = params.from.unwrap_or(i64::MIN);
        for attempt in 0..50 {
            let p = self.published();
            let to = params.to.unwrap_or(p.view.now.saturating_add(1));
            let before = self.kpi.generation();
            if before != p.generation {
                // A checkpoint is being written, or its view is about to be published.
                std::thread::sleep(Duration::from_millis(if attempt < 10 { 1 } else { 10 }));
                continue;
            }
            let rollups = self.kpi.rollups(from, to)?;
            if self.kpi.generation() != before {
                continue;
            }
            let watermarks = watermarks(&agents, &p.last_kpi_time);
            return p.view.report(&[&rollups, &p.cells], params, &watermarks).map_err(ReportError::Query);
        }
        // Checkpoints keep coming: answer under the engine's lock.
        let st = self.lock();
        let p = Published::of(&st, self.kpi.generation());
        let to = params.to.unwrap_or(p.view.now.saturating_add(1));
        let rollups = self.kpi.rollups(from, to)?;
        let watermarks = watermarks(&agents, &st.last_kpi_time);
        p.view.report(&[&rollups, &p.cells], params, &watermarks).map_err(ReportError::Query)
    }

    /// The largest FCR window a report may ask for, seconds, when sealing.
    pub fn fcr_max_window_s(&self) -> Option<u64> {
        self.cfg.seal.as_ref().map(|s| u64::try_from(s.fcr_max_window / 1_000_000_000).unwrap_or(0))
    }

    /// Highest seq of `agent` a restart will not replay (applied as of the
    /// last checkpoint): raw events up to it may be deleted.
    pub(crate) fn durable_applied(&self, agent: &str) -> u64 {
        self.lock().durable_applied.get(agent).copied().unwrap_or(0)
    }

    /// The KPI part of the store.
    pub(crate) fn kpi(&self) -> &KpiStore {
        &self.kpi
    }

    /// Late events not applied because their call's raw events were deleted.
    pub fn late_beyond_retention(&self) -> u64 {
        self.lock().late_beyond_retention
    }

    /// Size of the open window and sealing totals.
    pub fn window(&self) -> (callkpi_core::engine::Window, u64, u64) {
        let st = self.lock();
        (st.engine.window(), st.sealed_total, st.reopened_total)
    }
}

impl Published {
    fn of(st: &FollowerState, generation: u64) -> Self {
        let mut cells = st.engine.counters().clone();
        cells.add(st.engine.pending_delta(), 1);
        Self {
            generation,
            view: st.engine.report_view(),
            cells,
            live: st.engine.live(),
            last_kpi_time: st.last_kpi_time.clone(),
        }
    }
}

impl FollowerState {
    fn from_snapshot(s: Snapshot) -> Self {
        Self {
            engine: s.engine,
            durable_applied: s.applied.clone(),
            applied: s.applied,
            last_kpi_time: s.last_kpi_time,
            undecodable: s.undecodable,
            checkpointed: Instant::now(),
            sealed_total: 0,
            reopened_total: 0,
            late_beyond_retention: 0,
        }
    }
}

impl KpiFollower {
    /// The live snapshot as of `now_ns`. Blocking.
    ///
    /// # Errors
    /// When the store cannot be read or the zone is unknown.
    pub fn live(&self, q: &pb::LiveQuery, now_ns: i64) -> Result<pb::LiveSnapshot, String> {
        use callkpi_core::live::Activity;
        use callkpi_core::params::GroupBy;
        use callkpi_core::time::{Interval, interval_start, parse_tz};
        let time_zone = if q.time_zone.is_empty() { "UTC".to_owned() } else { q.time_zone.clone() };
        let tz = parse_tz(&time_zone)?;
        let thresholds = if q.sl_thresholds_s.is_empty() { vec![20] } else { q.sl_thresholds_s.clone() };
        let params = KpiParams {
            from: Some(interval_start(now_ns, Interval::Day, &tz)),
            to: Some(now_ns.saturating_add(1)),
            interval: Interval::All,
            group_by: vec![GroupBy::Queue],
            time_zone,
            sl_thresholds_s: thresholds,
            fcr_window_s: KpiParams::default().fcr_window_s.min(self.fcr_max_window_s().unwrap_or(u64::MAX)),
            ..KpiParams::default()
        };
        // The report catches up first; the live view and the lags then
        // come from the view it was answered from, or a newer one.
        let today = self.report(&params, now_ns).map_err(|e| e.to_string())?;
        let published = self.published();
        let records = self.store.agents().map_err(|e| e.to_string())?;
        let watermarks = watermarks(&records, &published.last_kpi_time);
        let (queues, agents) = published.live.clone();
        let wanted = |queue: &str| q.queues.is_empty() || q.queues.iter().any(|w| w == queue);
        let mut out: std::collections::BTreeMap<String, pb::QueueLive> = queues
            .into_iter()
            .filter(|lq| wanted(&lq.queue))
            .map(|lq| {
                let live = pb::QueueLive {
                    queue: lq.queue.clone(),
                    calls_waiting: lq.waiting,
                    longest_wait_s: lq.longest_wait_ns as f64 / 1e9,
                    agents_available: lq.available,
                    agents_busy: lq.busy,
                    agents_paused: lq.paused,
                    agents_wrapup: lq.wrap_up,
                    ..Default::default()
                };
                (lq.queue, live)
            })
            .collect();
        for row in today.rows {
            let Some(Some(queue)) = row.group.get("queue").cloned() else { continue };
            if !wanted(&queue) {
                continue;
            }
            let e = out.entry(queue.clone()).or_insert_with(|| pb::QueueLive { queue, ..Default::default() });
            e.service_level_today_pct =
                row.kpis.service_level_pct.iter().filter_map(|(t, v)| Some((t.parse().ok()?, (*v)?))).collect();
            e.abandonment_today_pct = row.kpis.abandonment_rate_pct;
            e.offered_today = row.kpis.offered;
            e.answered_today = row.kpis.answered;
        }
        let agents = if q.include_agents {
            agents
                .into_iter()
                .filter(|a| q.sites.is_empty() || q.sites.contains(&a.site))
                .map(|a| {
                    let (activity, call_id, pause_reason) = match a.activity {
                        Activity::LoggedOut => (pb::AgentActivity::LoggedOut, None, String::new()),
                        Activity::Available => (pb::AgentActivity::Available, None, String::new()),
                        Activity::Talking { call_id } => (pb::AgentActivity::Talking, Some(call_id), String::new()),
                        Activity::WrapUp => (pb::AgentActivity::WrapUp, None, String::new()),
                        Activity::Paused { reason } => (pb::AgentActivity::Paused, None, reason),
                    };
                    pb::AgentLive {
                        agent: a.agent,
                        site: a.site,
                        activity: activity as i32,
                        since_ns: 0,
                        pause_reason,
                        queue: a.queues.into_iter().next(),
                        call_id,
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let behind = watermarks
            .iter()
            .filter(|w| w.delivered_until < now_ns - 60 * 1_000_000_000)
            .map(|w| pb::AgentLag { agent_id: w.agent_id.clone(), lag_s: (now_ns - w.delivered_until) as f64 / 1e9 })
            .collect();
        Ok(pb::LiveSnapshot { at_ns: now_ns, queues: out.into_values().collect(), behind, agents })
    }
}

/// How far each agent has delivered, for row completeness (see the
/// module docs): its last contact when it was caught up then, else the KPI
/// time of its last event the engine holds.
fn watermarks(agents: &[AgentRecord], last_kpi_time: &HashMap<String, i64>) -> Vec<Watermark> {
    agents
        .iter()
        .map(|a| {
            let until = if a.spool_last_seq <= a.hwm {
                a.last_seen_ns
            } else {
                last_kpi_time.get(&a.agent_id).copied().unwrap_or_else(|| captured_until(a))
            };
            Watermark { agent_id: a.agent_id.clone(), delivered_until: until }
        })
        .collect()
}

/// How far an agent has delivered on the aggregator's wall clock: its last
/// contact when it was caught up then, else the capture time of its last
/// stored event moved onto the aggregator's clock (`ListAgents.lag_s`).
pub(super) fn delivered_until(a: &AgentRecord) -> Watermark {
    let until = if a.spool_last_seq <= a.hwm { a.last_seen_ns } else { captured_until(a) };
    Watermark { agent_id: a.agent_id.clone(), delivered_until: until }
}

fn captured_until(a: &AgentRecord) -> i64 {
    let offset = a.clock_offset_ns.unwrap_or(0);
    a.last_captured_ns.map_or(0, |t| t.saturating_sub(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_the_engine_cannot_answer_is_invalid_argument_not_a_store_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), 1 << 20).unwrap();
        let follower = KpiFollower::new(store);
        let ok = KpiParams::default();
        assert!(follower.report(&ok, crate::now_ns()).is_ok());
        // Callers are kept 7 days: a 30-day FCR window cannot be answered.
        let long = KpiParams { fcr_window_s: 30 * 24 * 3600, ..KpiParams::default() };
        let err = follower.report(&long, crate::now_ns()).unwrap_err();
        assert!(matches!(err, ReportError::Query(_)), "{err:?}");
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("fcr_max_window"), "{}", status.message());
        let store_err = ReportError::Store(StoreError::KpiState { what: "x".into(), reason: "y".into() });
        assert_eq!(tonic::Status::from(store_err).code(), tonic::Code::Unavailable);
    }
}
