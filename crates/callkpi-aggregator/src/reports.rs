//! Reports: the core KPI engine following the store, and the `Reports`
//! gRPC service over it.
//!
//! [`KpiFollower`] replays every stored event into one [`Engine`] at start,
//! then pulls what each agent delivers as the store announces it
//! ([`Store::subscribe`]). The engine is incremental and order-independent,
//! so a batch from an office that was offline for a day simply corrects the
//! intervals it belongs to; nothing is recomputed wholesale.
//!
//! Completeness: an agent has delivered everything up to its last contact
//! when its spool held nothing the store did not (`spool_last_seq <= hwm`);
//! otherwise up to the capture time of the last event stored (moved onto
//! the aggregator's clock with the agent's measured offset). A row is
//! complete when every known agent has delivered past its end.
//!
//! `WatchKpis` pushes a [`pb::LiveSnapshot`] whenever it changes (checked
//! after every ingest and at least every `min_interval_ms`, default 1 s):
//! callers waiting, longest wait, agents by activity, and today's service
//! level and abandonment per queue in the asked time zone. `ListCalls` and
//! `GetCall` answer UNIMPLEMENTED for now.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use callkpi_core::event::Event;
use callkpi_core::{Engine, EngineConfig, KpiParams, Watermark};
use callkpi_proto::pb;
use callkpi_proto::report::{params_from_pb, report_to_pb};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::auth::ReaderAuth;
use crate::store::{AgentRecord, Store};

/// Events read from the store per call while catching up.
const CATCH_UP_CHUNK: usize = 10_000;

/// The KPI engine, kept current with the store.
pub struct KpiFollower {
    store: Store,
    state: Mutex<FollowerState>,
}

struct FollowerState {
    engine: Engine,
    /// Highest seq applied per agent.
    applied: HashMap<String, u64>,
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
                undecodable: 0,
            }),
        })
    }

    /// Applies every stored event not yet applied. Blocking (sled reads).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn catch_up(&self) -> Result<u64, crate::store::StoreError> {
        let mut applied_now = 0;
        for agent in self.store.agents()? {
            loop {
                let after = self.applied(&agent.agent_id);
                let chunk = self.store.events_after(&agent.agent_id, after, CATCH_UP_CHUNK)?;
                let Some(&(last, _)) = chunk.last() else { break };
                let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (_, wire) in chunk {
                    match Event::try_from(wire) {
                        Ok(ev) => {
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
            match tokio::task::spawn_blocking(move || me.catch_up()).await {
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
                    // Lagged or received: either way, catch up from the store.
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
        let watermarks: Vec<Watermark> = agents.iter().map(delivered_until).collect();
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
        let watermarks: Vec<Watermark> = records.iter().map(delivered_until).collect();
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

/// How far an agent is known to have delivered, on the aggregator's clock.
fn delivered_until(a: &AgentRecord) -> Watermark {
    let until = if a.spool_last_seq <= a.hwm {
        a.last_seen_ns
    } else {
        let offset = a.clock_offset_ns.unwrap_or(0);
        a.last_captured_ns.map_or(0, |t| t.saturating_sub(offset))
    };
    Watermark { agent_id: a.agent_id.clone(), delivered_until: until }
}

/// The `Reports` gRPC service.
#[derive(Clone)]
pub struct ReportsService {
    follower: Arc<KpiFollower>,
    readers: ReaderAuth,
    defaults: KpiParams,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for ReportsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportsService").finish_non_exhaustive()
    }
}

impl ReportsService {
    pub(crate) fn new(follower: Arc<KpiFollower>, readers: ReaderAuth, shutdown: CancellationToken) -> Self {
        Self { follower, readers, defaults: KpiParams::default(), shutdown }
    }

    /// The tonic server for this service.
    pub fn into_server(self, max_message_bytes: usize) -> pb::reports_server::ReportsServer<Self> {
        pb::reports_server::ReportsServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    fn reader<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let auth = req.metadata().get("authorization").map(|v| v.as_bytes());
        self.readers.authenticate(auth)
    }
}

type LiveStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::LiveSnapshot, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::reports_server::Reports for ReportsService {
    async fn get_kpis(&self, request: Request<pb::KpiQuery>) -> Result<Response<pb::KpiReport>, Status> {
        let reader = self.reader(&request)?;
        let params = params_from_pb(request.get_ref(), &self.defaults)
            .map_err(|e| Status::invalid_argument(format!("invalid query: {e}")))?;
        let follower = Arc::clone(&self.follower);
        let now = crate::now_ns();
        let report = tokio::task::spawn_blocking(move || follower.report(&params, now))
            .await
            .map_err(|e| Status::internal(format!("report task failed: {e}")))?
            .map_err(Status::invalid_argument)?;
        tracing::debug!(%reader, rows = report.rows.len(), "GetKpis answered.");
        Ok(Response::new(report_to_pb(&report, now)))
    }

    type WatchKpisStream = LiveStream;

    async fn watch_kpis(&self, request: Request<pb::LiveQuery>) -> Result<Response<Self::WatchKpisStream>, Status> {
        let reader = self.reader(&request)?;
        let query = request.into_inner();
        callkpi_core::time::parse_tz(if query.time_zone.is_empty() { "UTC" } else { &query.time_zone })
            .map_err(Status::invalid_argument)?;
        let period = std::time::Duration::from_millis(u64::from(query.min_interval_ms.max(200)).min(60_000));
        let period = if query.min_interval_ms == 0 { std::time::Duration::from_secs(1) } else { period };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let follower = Arc::clone(&self.follower);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut notified = follower.store.subscribe();
            let mut last: Option<pb::LiveSnapshot> = None;
            loop {
                let f = Arc::clone(&follower);
                let q = query.clone();
                let snap = tokio::task::spawn_blocking(move || f.live(&q, crate::now_ns())).await;
                let snap = match snap {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(Status::internal(e))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                };
                // Pushed on change: the same figures are not sent twice.
                let changed = last.as_ref().is_none_or(|l| {
                    let mut a = l.clone();
                    a.at_ns = snap.at_ns;
                    a != snap
                });
                if changed {
                    if tx.send(Ok(snap.clone())).await.is_err() {
                        tracing::debug!(%reader, "WatchKpis client went away.");
                        return;
                    }
                    last = Some(snap);
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return,
                    () = tokio::time::sleep(period) => {}
                    r = notified.recv() => {
                        if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn list_calls(&self, request: Request<pb::CallQuery>) -> Result<Response<pb::CallList>, Status> {
        self.reader(&request)?;
        Err(Status::unimplemented("ListCalls is not implemented yet"))
    }

    async fn get_call(&self, request: Request<pb::CallRef>) -> Result<Response<pb::CallTimeline>, Status> {
        self.reader(&request)?;
        Err(Status::unimplemented("GetCall is not implemented yet"))
    }

    async fn list_agents(&self, request: Request<pb::AgentQuery>) -> Result<Response<pb::AgentList>, Status> {
        self.reader(&request)?;
        let store = self.follower.store.clone();
        let agents = tokio::task::spawn_blocking(move || store.agents())
            .await
            .map_err(|e| Status::internal(format!("store task failed: {e}")))?
            .map_err(|e| Status::internal(format!("store: {e}")))?;
        let now = crate::now_ns();
        let agents = agents
            .into_iter()
            .map(|a| {
                let wm = delivered_until(&a);
                pb::AgentInfo {
                    agent_id: a.agent_id.clone(),
                    site: a.site.clone(),
                    version: a.version.clone(),
                    connected: false,
                    last_seen_ns: a.last_seen_ns,
                    acked_seq: a.hwm,
                    lag_s: (now - wm.delivered_until).max(0) as f64 / 1e9,
                    clock_offset_ms: a.clock_offset_ns.map(|ns| ns / 1_000_000),
                    oldest_unacked_ns: None,
                    clock_synced: a.clock_synced,
                    spool_last_seq: a.spool_last_seq,
                    spool_bytes: 0,
                    lost_events: a.events_lost,
                    quarantined_events: a.events_quarantined,
                    connected_since_ns: None,
                }
            })
            .collect();
        Ok(Response::new(pb::AgentList { agents }))
    }
}
