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
//! `ListAgents.lag_s` stays on the wall clock, as `reports.proto` defines it:
//! the delivery lag of the `liveness` module, 0 while an agent is connected
//! and caught up.
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

mod follower;
mod paging;

use follower::delivered_until;
pub use follower::{FollowerConfig, KpiFollower, ReportError};
#[cfg(test)]
use paging::call_timeline;
pub use paging::{CallQuery, DEFAULT_CALLS_PAGE, MAX_CALLS_PAGE};

use std::pin::Pin;
use std::sync::Arc;

use callkpi_core::call::CallRecord;
use callkpi_core::engine::normalise_caller;
use callkpi_core::{Engine, KpiParams};
use callkpi_proto::calls::{summary_to_pb, timeline_to_pb};
use callkpi_proto::pb;
use callkpi_proto::report::{params_from_pb, report_to_pb};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::auth::ReaderAuth;
use crate::liveness::{Liveness, Presence, liveness};
use crate::store::AgentRecord;

/// The `Reports` gRPC service.
#[derive(Clone)]
pub struct ReportsService {
    follower: Arc<KpiFollower>,
    readers: ReaderAuth,
    defaults: KpiParams,
    shutdown: CancellationToken,
    presence: Arc<Presence>,
}

impl std::fmt::Debug for ReportsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportsService").finish_non_exhaustive()
    }
}

impl ReportsService {
    pub(crate) fn new(follower: Arc<KpiFollower>, readers: ReaderAuth, shutdown: CancellationToken) -> Self {
        // A query that leaves the FCR window unset gets the default, within
        // what the engine keeps callers for.
        let mut defaults = KpiParams::default();
        if let Some(max) = follower.fcr_max_window_s() {
            defaults.fcr_window_s = defaults.fcr_window_s.min(max);
        }
        Self { follower, readers, defaults, shutdown, presence: Arc::default() }
    }

    /// Shares the Ingest service's view of which agents are connected.
    #[must_use]
    pub(crate) fn with_presence(mut self, presence: Arc<Presence>) -> Self {
        self.presence = presence;
        self
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
            .map_err(|e| Status::internal(format!("report task failed: {e}")))??;
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
                let connected_since_ns = self.presence.since(&a.agent_id);
                let live = agent_liveness(&a, connected_since_ns.is_some(), now);
                pb::AgentInfo {
                    agent_id: a.agent_id.clone(),
                    site: a.site.clone(),
                    version: a.version.clone(),
                    connected: connected_since_ns.is_some(),
                    last_seen_ns: a.last_seen_ns,
                    acked_seq: a.hwm,
                    lag_s: live.delivery_lag_s,
                    clock_offset_ms: a.clock_offset_ns.map(|ns| ns / 1_000_000),
                    oldest_unacked_ns: live.oldest_unacked_ns,
                    clock_synced: a.clock_synced,
                    spool_last_seq: a.spool_last_seq,
                    spool_bytes: a.spool_bytes,
                    lost_events: a.events_lost,
                    quarantined_events: a.events_quarantined,
                    connected_since_ns,
                }
            })
            .collect();
        Ok(Response::new(pb::AgentList { agents }))
    }
}

/// Keeps the queues named in `wanted`, whatever their case (all when
/// `wanted` is empty: people type "Support" for "support"). Returns the
/// wanted names that match no queue, to say so rather than show nothing.
pub fn select_queues(queues: &mut Vec<pb::QueueLive>, wanted: &[String]) -> Vec<String> {
    if wanted.is_empty() {
        return Vec::new();
    }
    queues.retain(|q| wanted.iter().any(|w| w.eq_ignore_ascii_case(&q.queue)));
    let mut unknown: Vec<String> =
        wanted.iter().filter(|w| !queues.iter().any(|q| w.eq_ignore_ascii_case(&q.queue))).cloned().collect();
    unknown.sort();
    unknown.dedup();
    unknown
}

/// [`liveness`] with the reports' own watermark of `a`.
pub(crate) fn agent_liveness(a: &AgentRecord, connected: bool, now_ns: i64) -> Liveness {
    liveness(a, connected, delivered_until(a).delivered_until, now_ns)
}

#[cfg(test)]
mod select_tests {
    use super::*;

    #[test]
    fn queues_are_matched_whatever_their_case_and_unknown_names_are_returned() {
        let q = |name: &str| pb::QueueLive { queue: name.into(), ..Default::default() };
        let mut queues = vec![q("support"), q("sales"), q("VIP")];
        let unknown = select_queues(&mut queues, &["Support".into(), "vip".into(), "billing".into()]);
        assert_eq!(queues.iter().map(|q| q.queue.as_str()).collect::<Vec<_>>(), ["support", "VIP"]);
        assert_eq!(unknown, ["billing"]);
        let mut all = vec![q("support")];
        assert!(select_queues(&mut all, &[]).is_empty() && all.len() == 1);
    }
}

#[cfg(test)]
mod tests {
    use callkpi_core::event::{EventId, EventKind, EventTime, LeaveReason, NANOS_PER_SEC, SourceKind};
    use callkpi_proto::calls::call_outcome_from_pb;
    use tonic::Code;

    use super::*;
    use callkpi_core::EngineConfig;
    use callkpi_core::event::Event;

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
            let page = CallQuery::parse(&q).expect("valid query").page(e, None, 5).unwrap();
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
        let page = CallQuery::parse(&pb::CallQuery::default()).unwrap().page(&e, None, 5).unwrap();
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
            .page(&e, None, 5)
            .unwrap();
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
        let first =
            CallQuery::parse(&pb::CallQuery { limit: 2, ..Default::default() }).unwrap().page(&e, None, 5).unwrap();
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
        let next = CallQuery::parse(&resized).unwrap().page(&e, None, 5).unwrap();
        assert_eq!(next.calls.first().map(|c| c.call_id.as_str()), Some("c22"));
    }

    #[test]
    fn get_call_by_id_site_and_ambiguity() {
        let e = engine();
        let get = |id: &str, site: Option<&str>| {
            call_timeline(&e, None, &pb::CallRef { call_id: id.into(), site: site.map(str::to_owned) }, 5)
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
