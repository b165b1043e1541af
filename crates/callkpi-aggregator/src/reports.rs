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
//! otherwise it is behind, and has delivered up to the KPI time (source
//! time, else capture time) of the last event of it the engine holds. Rows
//! are cut in KPI time, so a backlog is measured in the same time: an
//! office that comes back with a spool of yesterday's calls leaves
//! yesterday's rows incomplete until they arrive, however recently it was
//! captured. (Before the engine holds any event of it: the capture time of
//! its last stored event moved onto the aggregator's clock, or 0.) A row
//! is complete when every known agent has delivered past its end.
//! `ListAgents.lag_s` stays on the wall clock, as `reports.proto` defines it.
//!
//! `WatchKpis` pushes a [`pb::LiveSnapshot`] whenever it changes (checked
//! after every ingest and at least every `min_interval_ms`, default 1 s):
//! callers waiting, longest wait, agents by activity, and today's service
//! level and abandonment per queue in the asked time zone.
//!
//! `ListCalls` and `GetCall` read the calls the engine rebuilt (the records
//! the KPIs count), refreshed as for a report. `ListCalls` pages newest
//! first by keyset: the page token names the last call returned (start
//! time, site, call id) and a digest of the query's filters, so calls that
//! arrive between pages never shift or repeat a page, and a token reused
//! with other filters is refused (INVALID_ARGUMENT). `from_ns`/`to_ns` of 0
//! mean unbounded, as in `KpiQuery`; `caller` is matched after the same
//! normalisation as FCR (digits and a leading `+`; withheld numbers match
//! a withheld query such as "anonymous").

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use callkpi_core::call::CallRecord;
use callkpi_core::engine::normalise_caller;
use callkpi_core::event::Event;
use callkpi_core::{Engine, EngineConfig, KpiParams, Watermark};
use callkpi_proto::calls::{summary_to_pb, timeline_to_pb};
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

// === Calls ===

/// `ListCalls` page size when the query says 0.
pub const DEFAULT_CALLS_PAGE: usize = 100;
/// Largest `ListCalls` page.
pub const MAX_CALLS_PAGE: usize = 1000;

impl KpiFollower {
    /// A page of calls as of `now_ns`; `short_abandon_s` decides short
    /// abandons as for KPIs. Blocking.
    ///
    /// # Errors
    /// INTERNAL when the store cannot be read.
    pub fn list_calls(&self, query: &CallQuery, short_abandon_s: u32, now_ns: i64) -> Result<pb::CallList, Status> {
        self.catch_up().map_err(|e| Status::internal(format!("store: {e}")))?;
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        st.engine.refresh(Some(now_ns), false);
        Ok(query.page(&st.engine, short_abandon_s))
    }

    /// One call's timeline as of `now_ns`. Blocking.
    ///
    /// # Errors
    /// As [`call_timeline`], and INTERNAL when the store cannot be read.
    pub fn call(&self, call: &pb::CallRef, short_abandon_s: u32, now_ns: i64) -> Result<pb::CallTimeline, Status> {
        self.catch_up().map_err(|e| Status::internal(format!("store: {e}")))?;
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        st.engine.refresh(Some(now_ns), false);
        call_timeline(&st.engine, call, short_abandon_s)
    }
}

/// A validated `CallQuery`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallQuery {
    from: i64,
    to: i64,
    queue: Option<String>,
    agent: Option<String>,
    /// The normalised number asked for (`None` inside: a withheld number).
    caller: Option<Option<String>>,
    site: Option<String>,
    limit: usize,
    /// The last call of the previous page: (start, site, call id).
    after: Option<(i64, String, String)>,
    /// Digest of the filters, carried in page tokens.
    digest: String,
}

impl CallQuery {
    /// Checks a wire query: range, page size, page token.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for `from_ns >= to_ns` (both set), or a page token
    /// that is malformed or was issued for other filters.
    pub fn parse(q: &pb::CallQuery) -> Result<Self, Status> {
        let from = if q.from_ns == 0 { i64::MIN } else { q.from_ns };
        let to = if q.to_ns == 0 { i64::MAX } else { q.to_ns };
        if from >= to {
            return Err(Status::invalid_argument(format!(
                "from_ns ({}) must be before to_ns ({})",
                q.from_ns, q.to_ns
            )));
        }
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let limit = match q.limit {
            0 => DEFAULT_CALLS_PAGE,
            n => usize::try_from(n).unwrap_or(MAX_CALLS_PAGE).min(MAX_CALLS_PAGE),
        };
        let digest = filters_digest(q);
        let after = if q.page_token.is_empty() { None } else { Some(parse_page_token(&q.page_token, &digest)?) };
        Ok(Self {
            from,
            to,
            queue: some(&q.queue),
            agent: some(&q.agent),
            caller: (!q.caller.is_empty()).then(|| normalise_caller(&q.caller)),
            site: some(&q.site),
            limit,
            after,
            digest,
        })
    }

    fn matches(&self, r: &CallRecord) -> bool {
        !r.call_id.is_empty()
            && self.site.as_ref().is_none_or(|s| *s == r.site)
            && self.queue.as_ref().is_none_or(|q| r.visited(q))
            && self.agent.as_ref().is_none_or(|a| r.involves_agent(a))
            && self.caller.as_ref().is_none_or(|c| *c == r.caller.as_deref().and_then(normalise_caller))
    }

    /// The page this query asks for, newest first.
    pub fn page(&self, engine: &Engine, short_abandon_s: u32) -> pb::CallList {
        let before = self.after.as_ref().map(|(t, site, id)| (*t, site.as_str(), id.as_str()));
        // One more than a page, to know whether another page follows.
        let found: Vec<&CallRecord> = engine
            .calls_started(self.from, self.to, before)
            .rev()
            .filter(|r| self.matches(r))
            .take(self.limit + 1)
            .collect();
        let more = found.len() > self.limit;
        let calls: Vec<&CallRecord> = found.into_iter().take(self.limit).collect();
        let next_page_token = match calls.last() {
            Some(last) if more => page_token(last, &self.digest),
            _ => String::new(),
        };
        pb::CallList { calls: calls.iter().map(|r| summary_to_pb(r, short_abandon_s)).collect(), next_page_token }
    }
}

/// Hex SHA-256 (first 8 bytes) of the query's filters: what must not
/// change between pages.
fn filters_digest(q: &pb::CallQuery) -> String {
    use prost::Message as _;
    use sha2::Digest as _;
    let filters = pb::CallQuery { limit: 0, page_token: String::new(), ..q.clone() };
    let digest = sha2::Sha256::digest(filters.encode_to_vec());
    hex(&digest[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// `v1.<start ns>.<hex site>.<hex call id>.<filters digest>`.
fn page_token(last: &CallRecord, digest: &str) -> String {
    format!("v1.{}.{}.{}.{digest}", last.first, hex(last.site.as_bytes()), hex(last.call_id.as_bytes()))
}

fn parse_page_token(token: &str, digest: &str) -> Result<(i64, String, String), Status> {
    let bad = || Status::invalid_argument("page_token is not one this server issued");
    let parts: Vec<&str> = token.split('.').collect();
    let [version, start, site, call_id, token_digest] = parts[..] else { return Err(bad()) };
    if version != "v1" {
        return Err(bad());
    }
    if token_digest != digest {
        return Err(Status::invalid_argument("page_token belongs to a query with other filters"));
    }
    let start: i64 = start.parse().map_err(|_| bad())?;
    Ok((start, unhex(site).ok_or_else(bad)?, unhex(call_id).ok_or_else(bad)?))
}

/// One call's timeline from `engine`.
///
/// # Errors
/// INVALID_ARGUMENT for an empty call id; NOT_FOUND for an unknown call;
/// FAILED_PRECONDITION when the call id is known at several sites and the
/// reference names none (the message lists them).
pub fn call_timeline(engine: &Engine, call: &pb::CallRef, short_abandon_s: u32) -> Result<pb::CallTimeline, Status> {
    let id = &call.call_id;
    if id.is_empty() {
        return Err(Status::invalid_argument("CallRef.call_id is empty"));
    }
    let not_found = || match &call.site {
        Some(site) if !site.is_empty() => Status::not_found(format!("no call {id:?} at site {site:?}")),
        _ => Status::not_found(format!("no call {id:?}")),
    };
    let site = match call.site.as_deref().filter(|s| !s.is_empty()) {
        Some(site) => site,
        None => match engine.call_sites(id) {
            [] => return Err(not_found()),
            [one] => one.as_str(),
            many => {
                return Err(Status::failed_precondition(format!(
                    "call {id:?} exists at sites {}: give its site",
                    many.join(", ")
                )));
            }
        },
    };
    let record = engine.call(site, id).ok_or_else(not_found)?;
    let events = engine.call_events(site, id).unwrap_or_default();
    Ok(timeline_to_pb(record, events, short_abandon_s))
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
fn delivered_until(a: &AgentRecord) -> Watermark {
    let until = if a.spool_last_seq <= a.hwm { a.last_seen_ns } else { captured_until(a) };
    Watermark { agent_id: a.agent_id.clone(), delivered_until: until }
}

fn captured_until(a: &AgentRecord) -> i64 {
    let offset = a.clock_offset_ns.unwrap_or(0);
    a.last_captured_ns.map_or(0, |t| t.saturating_sub(offset))
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
        let reader = self.reader(&request)?;
        let query = CallQuery::parse(request.get_ref())?;
        let follower = Arc::clone(&self.follower);
        let short_abandon_s = self.defaults.short_abandon_s;
        let list = tokio::task::spawn_blocking(move || follower.list_calls(&query, short_abandon_s, crate::now_ns()))
            .await
            .map_err(|e| Status::internal(format!("calls task failed: {e}")))??;
        tracing::debug!(%reader, calls = list.calls.len(), "ListCalls answered.");
        Ok(Response::new(list))
    }

    async fn get_call(&self, request: Request<pb::CallRef>) -> Result<Response<pb::CallTimeline>, Status> {
        let reader = self.reader(&request)?;
        let call = request.into_inner();
        let follower = Arc::clone(&self.follower);
        let short_abandon_s = self.defaults.short_abandon_s;
        let timeline = tokio::task::spawn_blocking(move || follower.call(&call, short_abandon_s, crate::now_ns()))
            .await
            .map_err(|e| Status::internal(format!("call task failed: {e}")))??;
        tracing::debug!(%reader, events = timeline.events.len(), "GetCall answered.");
        Ok(Response::new(timeline))
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

#[cfg(test)]
mod tests {
    use callkpi_core::event::{EventId, EventKind, EventTime, LeaveReason, NANOS_PER_SEC, SourceKind};
    use callkpi_proto::calls::call_outcome_from_pb;
    use tonic::Code;

    use super::*;

    const T0: i64 = 1_795_356_000;

    /// 25 calls at paris (one every 10 s, "c00".."c24"), support for even
    /// ones and sales for odd ones, answered by Alice or abandoned
    /// alternately; plus "c03" again at lyon.
    fn engine() -> Engine {
        let mut e = Engine::new(EngineConfig::default());
        let mut seq = 0;
        let mut add = |e: &mut Engine, site: &str, call: &str, s: i64, kind: EventKind| {
            seq += 1;
            e.ingest(Event {
                id: EventId { agent_id: format!("agent-{site}"), seq },
                site: site.into(),
                source: SourceKind::Synthetic,
                call_id: call.into(),
                leg_id: String::new(),
                time: EventTime::from_source((T0 + s) * NANOS_PER_SEC),
                kind,
            });
        };
        for i in 0..25_i64 {
            let (call, queue) = (format!("c{i:02}"), if i % 2 == 0 { "support" } else { "sales" });
            let caller = format!("+33 6 00 00 00 {i:02}");
            let join = EventKind::QueueJoin { queue: queue.into(), caller: Some(caller), position: None };
            add(&mut e, "paris", &call, i * 10, join);
            if i % 4 < 2 {
                let answer = EventKind::Answered {
                    queue: Some(queue.into()),
                    agent: "Alice".into(),
                    reported_wait_ms: None,
                    reported_ring_ms: None,
                };
                add(&mut e, "paris", &call, i * 10 + 3, answer);
                let hangup = EventKind::Hangup {
                    queue: None,
                    agent: Some("Alice".into()),
                    by: callkpi_core::event::HangupBy::Agent,
                    cause: None,
                    reported_talk_ms: None,
                };
                add(&mut e, "paris", &call, i * 10 + 8, hangup);
            } else {
                let leave =
                    EventKind::QueueLeave { queue: queue.into(), reason: LeaveReason::Abandon, reported_wait_ms: None };
                add(&mut e, "paris", &call, i * 10 + 9, leave);
            }
        }
        let join = EventKind::QueueJoin { queue: "support".into(), caller: Some("0472000000".into()), position: None };
        add(&mut e, "lyon", "c03", 35, join);
        e.refresh(None, true);
        e
    }

    fn all_pages(e: &Engine, mut q: pb::CallQuery) -> (Vec<String>, usize) {
        let mut ids = Vec::new();
        let mut pages = 0;
        loop {
            let page = CallQuery::parse(&q).expect("valid query").page(e, 5);
            pages += 1;
            ids.extend(page.calls.iter().map(|c| format!("{}/{}", c.site, c.call_id)));
            if page.next_page_token.is_empty() {
                return (ids, pages);
            }
            assert!(pages < 100, "paging does not end");
            q.page_token = page.next_page_token;
        }
    }

    #[test]
    fn pages_newest_first_cover_every_call_once() {
        let e = engine();
        let (ids, pages) = all_pages(&e, pb::CallQuery { limit: 7, ..Default::default() });
        assert_eq!(ids.len(), 26);
        assert_eq!(pages, 4, "7 + 7 + 7 + 5");
        assert_eq!(ids[0], "paris/c24");
        assert_eq!(ids.last().map(String::as_str), Some("paris/c00"));
        let mut seen = ids.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), ids.len(), "no call twice");
        // lyon's c03 started at 35 s: between paris c03 (30 s) and c04 (40 s).
        let lyon = ids.iter().position(|i| i == "lyon/c03").unwrap();
        assert_eq!((ids[lyon - 1].as_str(), ids[lyon + 1].as_str()), ("paris/c04", "paris/c03"));

        // Default and capped page sizes.
        let page = CallQuery::parse(&pb::CallQuery::default()).unwrap().page(&e, 5);
        assert_eq!(page.calls.len(), 26);
        assert!(page.next_page_token.is_empty());
        assert_eq!(
            CallQuery::parse(&pb::CallQuery { limit: 50_000, ..Default::default() }).unwrap().limit,
            MAX_CALLS_PAGE
        );
    }

    #[test]
    fn filters_and_range() {
        let e = engine();
        let q = |f: fn(&mut pb::CallQuery)| {
            let mut q = pb::CallQuery { limit: 3, ..Default::default() };
            f(&mut q);
            all_pages(&e, q).0
        };
        let sales = q(|q| q.queue = "sales".into());
        assert_eq!(sales.len(), 12);
        assert!(sales.iter().all(|id| id[id.len() - 2..].parse::<u32>().unwrap() % 2 == 1));
        // Alice answered i % 4 in {0, 1}: 0, 1, 4, 5, ..., 24 -> 13 calls.
        assert_eq!(q(|q| q.agent = "Alice".into()).len(), 13);
        assert_eq!(q(|q| q.site = "lyon".into()), ["lyon/c03"]);
        assert_eq!(q(|q| q.caller = "+33600000007".into()), ["paris/c07"]);
        assert_eq!(q(|q| q.caller = "+33 (6) 00-00-00-07".into()), ["paris/c07"], "normalised before matching");
        // [10 s, 40 s): c01, c02, c03 at paris, c03 at lyon.
        let range = q(|q| {
            q.from_ns = (T0 + 10) * NANOS_PER_SEC;
            q.to_ns = (T0 + 40) * NANOS_PER_SEC;
        });
        assert_eq!(range, ["lyon/c03", "paris/c03", "paris/c02", "paris/c01"]);

        // Outcomes follow the calls.
        let page = CallQuery::parse(&pb::CallQuery { site: "paris".into(), limit: 4, ..Default::default() })
            .unwrap()
            .page(&e, 5);
        let outcomes: Vec<_> = page.calls.iter().map(|c| call_outcome_from_pb(c.outcome).unwrap()).collect();
        use callkpi_core::call::CallOutcome::{Abandoned, Answered};
        // c24 (answered), c23, c22 (abandoned), c21 (answered).
        assert_eq!(outcomes, [Answered, Abandoned, Abandoned, Answered]);
    }

    #[test]
    fn bad_queries_and_tokens_are_invalid_arguments() {
        let e = engine();
        let bad = |q: pb::CallQuery| CallQuery::parse(&q).expect_err("invalid").code();
        assert_eq!(bad(pb::CallQuery { from_ns: 10, to_ns: 10, ..Default::default() }), Code::InvalidArgument);
        for token in ["x", "v1.1.2.3", "v2.1.00.00.0000000000000000", "v1.notanumber.00.00.0", "v1.1.zz.00.0"] {
            let q = pb::CallQuery { page_token: token.into(), ..Default::default() };
            assert_eq!(bad(q), Code::InvalidArgument, "{token}");
        }
        // A real token, then other filters with it.
        let first = CallQuery::parse(&pb::CallQuery { limit: 2, ..Default::default() }).unwrap().page(&e, 5);
        assert!(!first.next_page_token.is_empty());
        let other = pb::CallQuery {
            limit: 2,
            queue: "sales".into(),
            page_token: first.next_page_token.clone(),
            ..Default::default()
        };
        let err = CallQuery::parse(&other).expect_err("other filters");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("other filters"), "{}", err.message());
        // Another page size is fine.
        let resized = pb::CallQuery { limit: 10, page_token: first.next_page_token, ..Default::default() };
        let next = CallQuery::parse(&resized).unwrap().page(&e, 5);
        assert_eq!(next.calls.first().map(|c| c.call_id.as_str()), Some("c22"));
    }

    #[test]
    fn get_call_by_id_site_and_ambiguity() {
        let e = engine();
        let get = |id: &str, site: Option<&str>| {
            call_timeline(&e, &pb::CallRef { call_id: id.into(), site: site.map(str::to_owned) }, 5)
        };
        let t = get("c05", None).expect("c05");
        let s = t.summary.as_ref().unwrap();
        assert_eq!((s.site.as_str(), s.first_queue.as_str()), ("paris", "sales"));
        assert_eq!(t.events.len(), 3);
        assert_eq!(t.segments.len(), 1);
        assert_eq!(t.visits.len(), 1);
        assert_eq!(s.agents, ["Alice"]);

        let err = get("c03", None).expect_err("ambiguous");
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("lyon") && err.message().contains("paris"), "{}", err.message());
        assert_eq!(get("c03", Some("lyon")).unwrap().summary.unwrap().site, "lyon");
        assert_eq!(get("c03", Some("paris")).unwrap().events.len(), 2, "join and abandon");

        assert_eq!(get("c99", None).unwrap_err().code(), Code::NotFound);
        assert_eq!(get("c05", Some("lyon")).unwrap_err().code(), Code::NotFound);
        assert_eq!(get("", None).unwrap_err().code(), Code::InvalidArgument);
    }
}
