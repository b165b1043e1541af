//! The KPI engine following the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use callkpi_core::event::Event;
use callkpi_core::{Engine, EngineConfig, KpiParams, Watermark};
use callkpi_proto::pb;
use tokio_util::sync::CancellationToken;

use crate::store::{AgentRecord, Store};

/// Events read from the store per call while catching up.
const CATCH_UP_CHUNK: usize = 10_000;

/// The KPI engine, kept current with the store.
pub struct KpiFollower {
    pub(super) store: Store,
    pub(super) state: Mutex<FollowerState>,
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
}

impl std::fmt::Debug for KpiFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KpiFollower").finish_non_exhaustive()
    }
}

impl KpiFollower {
    /// A follower with an empty engine; call [`KpiFollower::catch_up`] or run it.
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store,
            state: Mutex::new(FollowerState {
                engine: Engine::new(EngineConfig::default()),
                applied: HashMap::new(),
                last_kpi_time: HashMap::new(),
                undecodable: 0,
            }),
        })
    }

    /// Applies every stored event not yet applied. Blocking (sled reads).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn catch_up(&self) -> Result<u64, crate::store::StoreError> {
        self.catch_up_until(&CancellationToken::new())
    }

    /// [`KpiFollower::catch_up`], stopping between chunks once `stop` is
    /// cancelled (a follower far behind must not hold up a shutdown).
    fn catch_up_until(&self, stop: &CancellationToken) -> Result<u64, crate::store::StoreError> {
        let mut applied_now = 0;
        for agent in self.store.agents()? {
            while !stop.is_cancelled() {
                let after = self.applied(&agent.agent_id);
                let chunk = self.store.events_after(&agent.agent_id, after, CATCH_UP_CHUNK)?;
                let Some(&(last, _)) = chunk.last() else { break };
                let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (_, wire) in chunk {
                    match Event::try_from(wire) {
                        Ok(ev) => {
                            st.last_kpi_time.insert(agent.agent_id.clone(), ev.kpi_time());
                            st.engine.ingest(ev);
                            applied_now += 1;
                        }
                        Err(error) => {
                            st.undecodable += 1;
                            tracing::warn!(agent = %agent.agent_id, %error, "Stored event does not convert; skipped in KPIs.");
                        }
                    }
                }
                st.applied.insert(agent.agent_id.clone(), last);
            }
        }
        Ok(applied_now)
    }

    fn applied(&self, agent: &str) -> u64 {
        let st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        st.applied.get(agent).copied().unwrap_or(0)
    }

    /// Follows the store until `shutdown`: catches up at start and after
    /// every ingest notification.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut rx = self.store.subscribe();
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
                () = shutdown.cancelled() => return,
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

    /// A report as of `now_ns` (aggregator wall clock). Blocking.
    ///
    /// # Errors
    /// When the store cannot be read or the report's zone is unknown.
    pub fn report(&self, params: &KpiParams, now_ns: i64) -> Result<callkpi_core::Report, String> {
        self.catch_up().map_err(|e| e.to_string())?;
        let agents = self.store.agents().map_err(|e| e.to_string())?;
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let watermarks = st.watermarks(&agents);
        st.engine.refresh(Some(now_ns), false);
        st.engine.report(params, &watermarks)
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
        self.catch_up().map_err(|e| e.to_string())?;
        let records = self.store.agents().map_err(|e| e.to_string())?;
        let watermarks = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).watermarks(&records);
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
            ..KpiParams::default()
        };
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        st.engine.refresh(Some(now_ns), false);
        let today = st.engine.report(&params, &watermarks)?;
        let (queues, agents) = st.engine.live();
        drop(st);
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

impl FollowerState {
    /// How far each agent has delivered, for row completeness (see the
    /// module docs): its last contact when it was caught up then, else the
    /// KPI time of its last event the engine holds.
    fn watermarks(&self, agents: &[AgentRecord]) -> Vec<Watermark> {
        agents
            .iter()
            .map(|a| {
                let until = if a.spool_last_seq <= a.hwm {
                    a.last_seen_ns
                } else {
                    self.last_kpi_time.get(&a.agent_id).copied().unwrap_or_else(|| captured_until(a))
                };
                Watermark { agent_id: a.agent_id.clone(), delivered_until: until }
            })
            .collect()
    }
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
